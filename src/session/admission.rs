//! Which decoded sessions earn a place in the decoded-session cache: those whose cookies
//! come back.
//!
//! A cache entry is worth its cost only when the same cookies are sent again before the
//! entry is evicted. Cookies seen once in a long stream (many users each making one
//! request, a crawler replaying old cookies, a cache sized below the active users) would
//! otherwise each evict a live entry and pay for an insertion that never serves a hit:
//! in the benchmark with more distinct sessions than cache entries, inserting cost more
//! than decoding (4.5 µs of a 25 µs request). So a session is cached at the second sight
//! of its cookies within a recent window; the first sight only leaves a fingerprint. A
//! browser's first two requests both decode (a few µs each), the rest hit.
//!
//! The window is a fixed table of fingerprints, one slot per hash, that never allocates
//! after it is made (the TinyLFU "doorkeeper" idea, without counting). Each slot also
//! holds when its key was first seen, counted in first sights: a key comes back within the
//! window when fewer than the window's size of other new keys came in between. Measured
//! in keys rather than by chance (a slot overwritten or not), a stream of more distinct
//! cookies than the window, round robin, is never admitted: those insertions would only
//! evict one another before any of them is read.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Fingerprints of recently seen keys, with when each was seen.
pub(crate) struct SecondSight {
    /// Per slot: the key's fingerprint (high 32 bits) and its first sight (low 32 bits).
    slots: Box<[AtomicU64]>,
    /// First sights so far (wrapping): the window's clock.
    sights: AtomicU32,
    /// Random per process: which keys share a slot cannot be chosen from outside.
    hasher: std::collections::hash_map::RandomState,
}

impl SecondSight {
    /// A window of about `keys` keys (rounded up to a power of two), in as many slots.
    pub fn new(keys: usize) -> SecondSight {
        let slots = keys.clamp(64, 1 << 26).next_power_of_two();
        SecondSight {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            sights: AtomicU32::new(0),
            hasher: Default::default(),
        }
    }

    /// Records a sight of `key`; true when it was first seen less than the window's size
    /// of new keys ago (and its slot still holds it). Never blocks: concurrent sights of
    /// keys sharing a slot at worst forget one.
    pub fn seen_again(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        // The slot from the low bits, the fingerprint from the high ones (never 0, the
        // fingerprint of an empty slot).
        let slot = &self.slots[hash as usize & (self.slots.len() - 1)];
        let fingerprint = (hash >> 32) as u32 | 1;
        let held = slot.load(Ordering::Relaxed);
        let now = self.sights.load(Ordering::Relaxed);
        // The window is at most 2^26 keys: far from the counter's wrap.
        if (held >> 32) as u32 == fingerprint
            && now.wrapping_sub(held as u32) < self.slots.len() as u32
        {
            return true;
        }
        let first_sight = self.sights.fetch_add(1, Ordering::Relaxed);
        slot.store(
            (u64::from(fingerprint) << 32) | u64::from(first_sight),
            Ordering::Relaxed,
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::SecondSight;

    #[test]
    fn a_key_is_admitted_at_its_second_sight() {
        let seen = SecondSight::new(1024);
        assert!(!seen.seen_again("a"));
        assert!(seen.seen_again("a"));
        assert!(seen.seen_again("a"));
        assert!(!seen.seen_again("b"));
    }

    #[test]
    fn a_scan_longer_than_the_window_is_never_admitted_and_takes_no_memory() {
        let seen = SecondSight::new(1024);
        let slots = seen.slots.len();
        // Round robin over a quarter more keys than the window, three times: each key
        // comes back after more new keys than the window holds.
        let keys: Vec<String> = (0..slots + slots / 4).map(|i| format!("key-{i}")).collect();
        for round in 0..3 {
            for k in &keys {
                assert!(!seen.seen_again(k), "round {round}: {k} admitted");
            }
        }
        assert_eq!(seen.slots.len(), slots);
        // Keys that come back within the window are admitted (unless two shared a slot).
        let recent: Vec<String> = (0..slots / 8).map(|i| format!("recent-{i}")).collect();
        for k in &recent {
            seen.seen_again(k);
        }
        let admitted = recent.iter().filter(|k| seen.seen_again(k)).count();
        assert!(
            admitted > recent.len() * 3 / 4,
            "{admitted} of {}",
            recent.len()
        );
    }

    #[test]
    fn the_window_counts_new_keys() {
        use std::hash::BuildHasher;
        let seen = SecondSight::new(1024);
        let slots = seen.slots.len();
        let slot_of = |k: &str| seen.hasher.hash_one(k) as usize & (slots - 1);
        // Other keys that never share the user's slot: only their number decides.
        let others: Vec<String> = (0..)
            .map(|i| format!("other-{i}"))
            .filter(|k| slot_of(k) != slot_of("user"))
            .take(2 * slots)
            .collect();
        assert!(!seen.seen_again("user"));
        for k in &others[..slots - 2] {
            assert!(!seen.seen_again(k));
        }
        assert!(
            seen.seen_again("user"),
            "back after fewer new keys than the window"
        );
        let sights = seen.sights.load(std::sync::atomic::Ordering::Relaxed);
        assert!(seen.seen_again("user"), "and again");
        assert_eq!(
            seen.sights.load(std::sync::atomic::Ordering::Relaxed),
            sights,
            "a key seen again is not a new one"
        );
        for k in &others[slots - 2..] {
            seen.seen_again(k);
        }
        assert!(
            !seen.seen_again("user"),
            "back after more new keys than the window"
        );
        assert!(seen.seen_again("user"), "that sight counts as a first one");
    }
}
