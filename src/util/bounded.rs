//! `ExpiringMap`: the one shape of everything this crate keeps in memory (spent `state`
//! values, refresh outcomes, rotations, back-channel logouts, decoded sessions): entries
//! live for a fixed time and their number is capped, the oldest going first, so memory
//! stays flat whatever the traffic.
//!
//! The bound is exact: every key has exactly one place in the eviction order, however
//! often it is overwritten, so the map and its order together never hold more than
//! `capacity` entries. (Lazily skipping stale positions instead lets a client that makes
//! the app rewrite one key grow the order without limit.) No crate already in the
//! dependency tree keeps insertion order with O(1)/O(log n) moves; a `HashMap` plus a
//! `BTreeMap` from insertion number to key does, in a few lines.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where expiring memory reads the time. Unit tests move a manual clock instead of
/// sleeping; the app always uses the system's monotonic clock.
#[derive(Clone)]
pub(crate) enum Clock {
    /// `Instant::now()`.
    System,
    /// A time the test sets.
    #[cfg(test)]
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(at) => *at.lock().unwrap(),
        }
    }

    /// A clock that stands still until [`Clock::advance`].
    #[cfg(test)]
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(Mutex::new(Instant::now())))
    }

    /// Moves a manual clock forward.
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(at) = self {
            *at.lock().unwrap() += by;
        }
    }
}

/// A map from strings to `V` whose entries expire `ttl` after they were last written,
/// holding at most `capacity`.
pub(crate) struct ExpiringMap<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    capacity: usize,
    clock: Clock,
}

struct Slot<V> {
    /// Position in `Inner::order`.
    seq: u64,
    written: Instant,
    value: V,
}

struct Inner<V> {
    map: HashMap<Arc<str>, Slot<V>>,
    /// Keys by write number: the first is the least recently written (so also the first
    /// to expire, the TTL being the same for all). Always exactly the keys of `map`.
    order: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
}

impl<V> Inner<V> {
    /// Removes `key`, handing back its shared name for reuse.
    fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let (name, slot) = self.map.remove_entry(key)?;
        self.order.remove(&slot.seq);
        Some(name)
    }

    /// Drops expired entries, then the oldest until one more fits, handing each live one
    /// it drops to `evicted`.
    fn make_room(
        &mut self,
        now: Instant,
        ttl: Duration,
        capacity: usize,
        evicted: &mut impl FnMut(V),
    ) {
        while let Some((_, key)) = self.order.first_key_value() {
            let live = self
                .map
                .get(key)
                .is_some_and(|slot| now.saturating_duration_since(slot.written) < ttl);
            if live && self.map.len() < capacity {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                if let Some(slot) = self.map.remove(&key) {
                    if live {
                        evicted(slot.value);
                    }
                }
            }
        }
    }
}

impl<V: Clone> ExpiringMap<V> {
    /// An empty map on the system clock.
    pub fn new(ttl: Duration, capacity: usize) -> ExpiringMap<V> {
        Self::with_clock(ttl, capacity, Clock::System)
    }

    /// An empty map reading the time from `clock`.
    pub fn with_clock(ttl: Duration, capacity: usize, clock: Clock) -> ExpiringMap<V> {
        ExpiringMap {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                next_seq: 0,
            }),
            ttl,
            capacity: capacity.max(1),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // Every method leaves `map` and `order` consistent before anything that could
        // panic (`make` of `get_or_insert_with` runs before the first change), so a
        // poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live<'a>(&self, inner: &'a Inner<V>, key: &str, now: Instant) -> Option<&'a V> {
        inner
            .map
            .get(key)
            .filter(|slot| now.saturating_duration_since(slot.written) < self.ttl)
            .map(|slot| &slot.value)
    }

    /// Writes under a lock already held: one position per key, room made first.
    fn write(&self, inner: &mut Inner<V>, key: &str, value: V, now: Instant) {
        self.write_evicting(inner, key, value, now, &mut |_| {});
    }

    fn write_evicting(
        &self,
        inner: &mut Inner<V>,
        key: &str,
        value: V,
        now: Instant,
        evicted: &mut impl FnMut(V),
    ) {
        let key = inner.remove(key).unwrap_or_else(|| Arc::from(key));
        inner.make_room(now, self.ttl, self.capacity, evicted);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.insert(seq, key.clone());
        inner.map.insert(
            key,
            Slot {
                seq,
                written: now,
                value,
            },
        );
    }

    /// The value of `key`, unless absent or expired.
    pub fn get(&self, key: &str) -> Option<V> {
        let inner = self.lock();
        self.live(&inner, key, self.clock.now()).cloned()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&self, key: &str, value: V) {
        let mut inner = self.lock();
        let now = self.clock.now();
        self.write(&mut inner, key, value, now);
    }

    /// [`Self::insert`], handing every live entry dropped to make room to `evicted`: for
    /// records that must not be forgotten silently (the caller falls back on something).
    pub fn insert_evicting(&self, key: &str, value: V, mut evicted: impl FnMut(V)) {
        let mut inner = self.lock();
        let now = self.clock.now();
        self.write_evicting(&mut inner, key, value, now, &mut evicted);
    }

    /// Sets `key` to `value` unless it holds a live value; false if it did. One lock for
    /// the check and the write: of concurrent callers with the same key, one wins.
    pub fn insert_new(&self, key: &str, value: V) -> bool {
        let mut inner = self.lock();
        let now = self.clock.now();
        if self.live(&inner, key, now).is_some() {
            return false;
        }
        self.write(&mut inner, key, value, now);
        true
    }

    /// The live value of `key`, or `make()` stored under it.
    pub fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> V {
        let mut inner = self.lock();
        let now = self.clock.now();
        if let Some(v) = self.live(&inner, key, now) {
            return v.clone();
        }
        let value = make();
        self.write(&mut inner, key, value.clone(), now);
        value
    }

    /// Whether no entry is held (live or not yet evicted): lets a caller skip computing a
    /// key it would look up in vain.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }

    /// Every live entry, oldest first.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn snapshot(&self) -> Vec<(String, V)> {
        let inner = self.lock();
        let now = self.clock.now();
        inner
            .order
            .values()
            .filter_map(|key| {
                self.live(&inner, key, now)
                    .map(|v| (key.to_string(), v.clone()))
            })
            .collect()
    }

    /// Drops `key`, if held.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Drops every entry.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
    }

    /// Entries held (live or not yet evicted).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Positions held in the eviction order.
    #[cfg(test)]
    pub fn queue_len(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_never_exceeded_and_the_oldest_go_first() {
        let m = ExpiringMap::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            m.insert(&format!("k{i}"), i);
        }
        assert!(m.len() <= 100);
        assert_eq!(m.get("k9999"), Some(9999));
        assert_eq!(m.get("k0"), None);
    }

    #[test]
    fn live_entries_dropped_for_room_are_reported_and_expired_ones_are_not() {
        let clock = Clock::manual();
        let m = ExpiringMap::with_clock(Duration::from_secs(10), 2, clock.clone());
        let mut dropped = Vec::new();
        m.insert_evicting("a", 1, |v| dropped.push(v));
        m.insert_evicting("b", 2, |v| dropped.push(v));
        assert!(dropped.is_empty());
        m.insert_evicting("c", 3, |v| dropped.push(v));
        assert_eq!(dropped, vec![1], "the oldest live entry made room");
        clock.advance(Duration::from_secs(11));
        m.insert_evicting("d", 4, |v| dropped.push(v));
        assert_eq!(dropped, vec![1], "expired entries go without a report");
    }

    #[test]
    fn entries_expire() {
        let m = ExpiringMap::new(Duration::ZERO, 100);
        m.insert("a", 1);
        assert_eq!(m.get("a"), None);
        assert!(
            m.insert_new("a", 2),
            "an expired entry does not block a new one"
        );
    }

    #[test]
    fn insert_new_refuses_a_live_key_and_overwrites_keep_the_bound() {
        let m = ExpiringMap::new(Duration::from_secs(60), 3);
        assert!(m.insert_new("a", 1));
        assert!(!m.insert_new("a", 2));
        for _ in 0..10 {
            m.insert("b", 3);
        }
        assert!(m.len() <= 3);
        assert_eq!(m.get("b"), Some(3));
    }

    #[test]
    fn overwrite_churn_keeps_the_queue_within_capacity() {
        let m = ExpiringMap::new(Duration::from_secs(60), 100);
        for i in 0..1_000_000 {
            m.insert("one", i);
        }
        assert_eq!(m.get("one"), Some(999_999));
        assert_eq!(m.len(), 1);
        assert!(m.queue_len() <= 100, "queue of {}", m.queue_len());

        let m = ExpiringMap::new(Duration::from_secs(60), 100);
        for i in 0..100 {
            m.insert(&format!("filler{i}"), i);
        }
        for i in 0..1_000_000 {
            m.insert(["a", "b", "c"][i % 3], i);
        }
        assert_eq!(m.get("a"), Some(999_999));
        assert_eq!(m.get("c"), Some(999_998));
        assert!(m.len() <= 100);
        assert!(m.queue_len() <= 100, "queue of {}", m.queue_len());
        assert_eq!(m.queue_len(), m.len(), "one position per key");
        // The three new keys pushed out the three oldest; churning them costs no one else.
        assert_eq!(m.get("filler2"), None);
        assert_eq!(m.get("filler3"), Some(3));
        assert_eq!(m.len(), 100);
    }

    #[test]
    fn entries_live_for_ttl_after_their_last_write() {
        let clock = Clock::manual();
        let m = ExpiringMap::with_clock(Duration::from_secs(10), 100, clock.clone());
        m.insert("a", 1);
        m.insert("b", 1);
        clock.advance(Duration::from_secs(6));
        m.insert("a", 2);
        clock.advance(Duration::from_secs(5));
        assert_eq!(m.get("b"), None, "11 s after its write");
        assert_eq!(m.get("a"), Some(2), "5 s after its overwrite");
        assert!(!m.insert_new("a", 3));
        assert!(m.insert_new("b", 3), "an expired key is free again");
        clock.advance(Duration::from_secs(10));
        m.insert("c", 1);
        assert_eq!(
            (m.len(), m.queue_len()),
            (1, 1),
            "expired entries are dropped on write"
        );
    }

    #[test]
    fn insert_new_has_exactly_one_winner_per_key_under_contention() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        const THREADS: usize = 8;
        const KEYS: usize = 50_000;
        let m = Arc::new(ExpiringMap::new(Duration::from_secs(60), KEYS));
        let wins: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (m, wins, start) = (m.clone(), wins.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for k in 0..KEYS {
                        if m.insert_new(&format!("jti-{k}"), t) {
                            wins[k].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let doubles = wins
            .iter()
            .filter(|w| w.load(Ordering::SeqCst) != 1)
            .count();
        assert_eq!(doubles, 0, "keys without exactly one winner");
    }
}
