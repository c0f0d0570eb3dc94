//! A rate limit for log lines that anyone can cause (a forged logout token, a bad cookie, a
//! bad bearer token): a flood of such requests must not flood the log. Each event gets a
//! few lines per minute; the rest are counted (`logto_log_lines_suppressed_total`) and the
//! next line that gets through says how many were left out.
//!
//! Hand-written rather than a rate-limiting crate: it is two atomics per event and no
//! clock of its own, where the crates (governor, ...) bring a clock and their own types for
//! what is a counter per minute.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lines of one event let through per window.
const LINES_PER_WINDOW: u64 = 10;
/// The window, seconds.
const WINDOW_SECS: i64 = 60;

/// The limit of one event's lines (a `static` per event).
pub(crate) struct LogLimit {
    event: &'static str,
    /// The current window's start (Unix seconds) and the lines seen in it.
    window: AtomicI64,
    seen: AtomicU64,
    /// Lines left out since the last one let through.
    suppressed: AtomicU64,
}

/// Whether a line may be written, and how many were left out before it.
pub(crate) enum Verdict {
    /// Write it; `n` lines of this event were left out since the last one written.
    Write(u64),
    /// Leave it out (counted).
    Suppress,
}

impl LogLimit {
    /// The limit of `event` (its name is the `event` label of the suppressed-lines metric).
    pub const fn new(event: &'static str) -> LogLimit {
        LogLimit {
            event,
            window: AtomicI64::new(i64::MIN),
            seen: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether the next line of this event may be written now.
    pub fn check(&self) -> Verdict {
        self.check_at(crate::util::clock::now())
    }

    fn check_at(&self, now: i64) -> Verdict {
        let window = self.window.load(Ordering::Relaxed);
        if now.saturating_sub(window) >= WINDOW_SECS
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.seen.store(0, Ordering::Relaxed);
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) < LINES_PER_WINDOW {
            Verdict::Write(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            crate::util::telemetry::log_suppressed(self.event);
            Verdict::Suppress
        }
    }
}

/// Logs at `$level` through `$limit` (a `static LogLimit`): the line, with
/// ` suppressed=N` appended when lines of the event were left out before it.
macro_rules! limited {
    ($limit:expr, $level:ident, $($arg:tt)+) => {
        match $limit.check() {
            $crate::util::log_limit::Verdict::Write(0) => log::$level!($($arg)+),
            $crate::util::log_limit::Verdict::Write(n) => {
                log::$level!("{} suppressed={n}", format_args!($($arg)+))
            }
            $crate::util::log_limit::Verdict::Suppress => {}
        }
    };
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use super::*;

    fn written(v: Verdict) -> Option<u64> {
        match v {
            Verdict::Write(n) => Some(n),
            Verdict::Suppress => None,
        }
    }

    #[test]
    fn a_flood_gets_a_few_lines_a_minute_and_the_next_window_says_how_many_were_left_out() {
        let limit = LogLimit::new("test");
        let flood: Vec<Option<u64>> = (0..1000).map(|_| written(limit.check_at(100))).collect();
        assert_eq!(flood.iter().filter(|v| v.is_some()).count(), 10);
        assert!(flood[..10].iter().all(|v| *v == Some(0)));
        // Still the same window a little later.
        assert_eq!(written(limit.check_at(159)), None);
        // The next window: the first line carries the count left out.
        assert_eq!(written(limit.check_at(160)), Some(991));
        assert_eq!(written(limit.check_at(160)), Some(0));
    }
}
