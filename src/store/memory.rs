//! The in-process half of the store: the ended sessions as bounded maps. Without Redis they
//! are the whole truth; with Redis they are each instance's mirror of the shared list, so
//! that checking a request never leaves the process.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::util::bounded::ExpiringMap;
use crate::util::telemetry;

/// Least time between two warnings that records were dropped for room.
const WARN_EVERY_MS: i64 = 60_000;

/// What an ended-session record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndedKind {
    /// A Logto session (`sid` of a back-channel logout): every app session in it.
    Sid,
    /// A user (`sub` of a back-channel logout without `sid`): their sessions started before.
    Sub,
    /// One session of this app, ended by its sign-out (`/logto/sign-out`).
    Session,
}

impl EndedKind {
    /// Its tag in key names, members and messages.
    pub fn tag(self) -> &'static str {
        match self {
            EndedKind::Sid => "sid",
            EndedKind::Sub => "sub",
            EndedKind::Session => "ses",
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn from_tag(tag: &str) -> Option<EndedKind> {
        match tag {
            "sid" => Some(EndedKind::Sid),
            "sub" => Some(EndedKind::Sub),
            "ses" => Some(EndedKind::Session),
            _ => None,
        }
    }
}

/// One ended record. `ident` is the `sid`, the `sub` or the session's identity as the
/// store names them (with Redis: keyed hashes, never the values); `at_ms` is when the
/// logout happened (for a session: when it started, which bounds how long it can live).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndedRecord {
    pub kind: EndedKind,
    pub ident: String,
    pub at_ms: i64,
}

impl EndedRecord {
    /// `<tag>:<ident>:<at_ms>`, as the shared list holds it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn member(&self) -> String {
        format!("{}:{}:{}", self.kind.tag(), self.ident, self.at_ms)
    }

    /// Reads a member; `None` for anything else (a foreign or damaged entry is ignored).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn parse(member: &str) -> Option<EndedRecord> {
        let mut parts = member.splitn(3, ':');
        let kind = EndedKind::from_tag(parts.next()?)?;
        let ident = parts.next()?;
        let at_ms = parts.next()?.parse().ok()?;
        if ident.is_empty() || ident.len() > 128 {
            return None;
        }
        Some(EndedRecord {
            kind,
            ident: ident.to_string(),
            at_ms,
        })
    }
}

/// Ended sessions, bounded and kept for the session lifetime.
///
/// A record is never forgotten silently: when a map is full, the live record that makes
/// room raises [`Ended::floor_ms`], and every session started at or before the floor is
/// refused from then on. That record may have been any sign-out or logout that reached
/// back that far, so nothing older can be told apart from it. Enough sign-outs within a
/// session lifetime to fill `spent_state_entries` thus sign out the oldest sessions, never
/// revive an ended one (a warning says to raise the bound).
pub(crate) struct Ended {
    sids: ExpiringMap<i64>,
    subs: ExpiringMap<i64>,
    sessions: ExpiringMap<i64>,
    /// Set by the first record: until then, no request pays for a lookup.
    any: AtomicBool,
    /// Sessions started at or before this time (ms) are refused: the latest time a record
    /// dropped for room could have covered. `i64::MIN` while none was dropped.
    floor_ms: AtomicI64,
    /// Records dropped for room, and when that was last logged (ms).
    dropped: AtomicU64,
    warned_at_ms: AtomicI64,
}

impl Ended {
    pub fn new(lifetime: Duration, capacity: usize) -> Ended {
        Ended {
            sids: ExpiringMap::new(lifetime, capacity),
            subs: ExpiringMap::new(lifetime, capacity),
            sessions: ExpiringMap::new(lifetime, capacity),
            any: AtomicBool::new(false),
            floor_ms: AtomicI64::new(i64::MIN),
            dropped: AtomicU64::new(0),
            warned_at_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn map(&self, kind: EndedKind) -> &ExpiringMap<i64> {
        match kind {
            EndedKind::Sid => &self.sids,
            EndedKind::Sub => &self.subs,
            EndedKind::Session => &self.sessions,
        }
    }

    /// Adds a record (for a user, the latest logout counts).
    pub fn insert(&self, record: &EndedRecord) {
        let map = self.map(record.kind);
        let at = match map.get(&record.ident) {
            Some(earlier) => earlier.max(record.at_ms),
            None => record.at_ms,
        };
        let mut dropped: Option<i64> = None;
        map.insert_evicting(&record.ident, at, |at| {
            dropped = Some(dropped.map_or(at, |d| d.max(at)))
        });
        if let Some(at) = dropped {
            self.raise_floor(record.kind, at);
        }
        self.any.store(true, Ordering::Relaxed);
        telemetry::ended_records(self.sids.len() + self.subs.len() + self.sessions.len());
    }

    /// A live record of `kind` ended at `at_ms` was dropped for room.
    fn raise_floor(&self, kind: EndedKind, at_ms: i64) {
        self.floor_ms.fetch_max(at_ms, Ordering::AcqRel);
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        telemetry::ended_dropped();
        let now = crate::util::clock::now_ms();
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .warned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "logto: event=ended_records_full dropped={dropped}: the list of ended sessions is full (spent_state_entries); {dropped} \
                 record(s) made room so far, the latest a {} record: sessions started before \
                 its time are refused from now on (their users sign in again). Raise \
                 spent_state_entries above the sign-outs and logouts of one session lifetime",
                kind.tag()
            );
        }
    }

    /// Sessions started at or before this time (ms) are refused (see the type's docs);
    /// `None` while no record was dropped.
    pub fn floor_ms(&self) -> Option<i64> {
        let floor = self.floor_ms.load(Ordering::Acquire);
        (floor != i64::MIN).then_some(floor)
    }

    /// Records dropped for room since launch.
    #[allow(dead_code)] // read by tests; the metrics count as they go
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether nothing was ever recorded (the common case: no lookup at all).
    pub fn none(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// When `ident` of `kind` ended, if it did. `ident` is only computed when records of that
    /// kind exist: with Redis it is a keyed hash.
    pub fn ended_at(&self, kind: EndedKind, ident: impl FnOnce() -> String) -> Option<i64> {
        let map = self.map(kind);
        if map.is_empty() {
            return None;
        }
        map.get(&ident())
    }

    /// Every live record (to write back to a Redis that lost them).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn snapshot(&self) -> Vec<EndedRecord> {
        [EndedKind::Sid, EndedKind::Sub, EndedKind::Session]
            .into_iter()
            .flat_map(|kind| {
                self.map(kind)
                    .snapshot()
                    .into_iter()
                    .map(move |(ident, at_ms)| EndedRecord { kind, ident, at_ms })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_garbage_is_ignored() {
        let r = EndedRecord {
            kind: EndedKind::Session,
            ident: "abc_-9".into(),
            at_ms: 1_700_000_000_000,
        };
        assert_eq!(EndedRecord::parse(&r.member()), Some(r));
        for bad in ["", "xyz:a:1", "sid::1", "sid:a:", "sid:a:b", "sub"] {
            assert_eq!(EndedRecord::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_latest_logout_of_a_user_counts_and_lookups_skip_empty_kinds() {
        let ended = Ended::new(Duration::from_secs(60), 10);
        assert!(ended.none());
        let record = |at_ms| EndedRecord {
            kind: EndedKind::Sub,
            ident: "u".into(),
            at_ms,
        };
        ended.insert(&record(20));
        ended.insert(&record(10));
        assert!(!ended.none());
        assert_eq!(ended.ended_at(EndedKind::Sub, || "u".into()), Some(20));
        assert_eq!(
            ended.ended_at(EndedKind::Sid, || panic!("no sid records: not computed")),
            None
        );
        assert_eq!(ended.snapshot(), vec![record(20)]);
    }

    #[test]
    fn a_record_dropped_for_room_raises_the_floor_instead_of_being_forgotten() {
        let ended = Ended::new(Duration::from_secs(60), 3);
        let session = |n: i64| EndedRecord {
            kind: EndedKind::Session,
            ident: format!("s{n}"),
            at_ms: 1_000 + n,
        };
        for n in 0..3 {
            ended.insert(&session(n));
        }
        assert_eq!(ended.floor_ms(), None);
        for n in 3..11 {
            ended.insert(&session(n));
        }
        assert_eq!(ended.dropped(), 8);
        // s0..s7 made room: the floor covers the latest of them.
        assert_eq!(ended.floor_ms(), Some(1_007));
        assert_eq!(ended.ended_at(EndedKind::Session, || "s0".into()), None);
    }
}
