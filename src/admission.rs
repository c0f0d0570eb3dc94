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
//! The window is a fixed table of 64-bit fingerprints, one slot per hash, that never
//! allocates after it is made (the TinyLFU "doorkeeper" idea, without counting).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fingerprints of recently seen keys.
pub(crate) struct SecondSight {
    slots: Box<[AtomicU64]>,
    /// Random per process: which keys share a slot cannot be chosen from outside.
    hasher: std::collections::hash_map::RandomState,
}

impl SecondSight {
    /// A window of about `slots` keys (rounded up to a power of two).
    pub fn new(slots: usize) -> SecondSight {
        let slots = slots.clamp(64, 1 << 26).next_power_of_two();
        SecondSight {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
        }
    }

    /// Records a sight of `key`; true when it was seen recently (its fingerprint still in
    /// its slot). Never blocks: concurrent sights of colliding keys at worst forget one.
    pub fn seen_again(&self, key: &str) -> bool {
        // Never 0, the value of an empty slot.
        let fingerprint = self.hasher.hash_one(key) | 1;
        let slot = &self.slots[(fingerprint >> 1) as usize & (self.slots.len() - 1)];
        slot.swap(fingerprint, Ordering::Relaxed) == fingerprint
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
    fn a_long_scan_of_new_keys_is_rarely_admitted_and_takes_no_memory() {
        let seen = SecondSight::new(1024);
        let slots = seen.slots.len();
        // 10 times the window, round robin twice: each key's fingerprint is overwritten
        // by the about 10,000 keys seen between its two sights, nearly always.
        let keys: Vec<String> = (0..10 * slots).map(|i| format!("key-{i}")).collect();
        for k in &keys {
            assert!(!seen.seen_again(k), "first sight of {k}");
        }
        let admitted = keys.iter().filter(|k| seen.seen_again(k)).count();
        assert!(
            admitted < keys.len() / 100,
            "{admitted} of {} admitted",
            keys.len()
        );
        assert_eq!(seen.slots.len(), slots);
        // Keys that come back within the window are admitted.
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
}
