//! `ExpiringMap`: the one shape of everything this crate keeps in memory (spent `state`
//! values, refresh outcomes, rotations, back-channel logouts): entries live for a fixed
//! time and their number is capped, the oldest going first, so memory stays flat whatever
//! the traffic.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A map from strings to `V` whose entries expire after `ttl`, holding at most `capacity`.
pub(crate) struct ExpiringMap<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    capacity: usize,
}

struct Inner<V> {
    map: HashMap<String, (Instant, V)>,
    /// Insertion order; an entry overwritten later leaves a stale position, skipped on
    /// eviction because its instant no longer matches.
    order: VecDeque<(Instant, String)>,
}

impl<V: Clone> ExpiringMap<V> {
    pub fn new(ttl: Duration, capacity: usize) -> ExpiringMap<V> {
        ExpiringMap {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that
        // matters (worst case: an entry too many), so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn evict(&self, inner: &mut Inner<V>, room_for: usize) {
        while let Some((at, _)) = inner.order.front() {
            if at.elapsed() < self.ttl && inner.map.len() + room_for <= self.capacity {
                break;
            }
            let (at, key) = inner.order.pop_front().expect("front exists");
            if inner.map.get(&key).is_some_and(|(t, _)| *t == at) {
                inner.map.remove(&key);
            }
        }
    }

    fn live<'a>(&self, inner: &'a Inner<V>, key: &str) -> Option<&'a V> {
        inner
            .map
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v)
    }

    /// The value of `key`, unless absent or expired.
    pub fn get(&self, key: &str) -> Option<V> {
        let inner = self.lock();
        self.live(&inner, key).cloned()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&self, key: &str, value: V) {
        let mut inner = self.lock();
        self.evict(&mut inner, 1);
        let now = Instant::now();
        inner.map.insert(key.to_string(), (now, value));
        inner.order.push_back((now, key.to_string()));
    }

    /// Sets `key` to `value` unless it holds a live value; false if it did.
    pub fn insert_new(&self, key: &str, value: V) -> bool {
        if self.live(&self.lock(), key).is_some() {
            return false;
        }
        self.insert(key, value);
        true
    }

    /// The live value of `key`, or `make()` stored under it.
    pub fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> V {
        let mut inner = self.lock();
        if let Some(v) = self.live(&inner, key) {
            return v.clone();
        }
        self.evict(&mut inner, 1);
        let value = make();
        let now = Instant::now();
        inner.map.insert(key.to_string(), (now, value.clone()));
        inner.order.push_back((now, key.to_string()));
        value
    }

    /// Entries held (live or not yet evicted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
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
}
