//! Every metric the crate records: its name, its labels and the one function that records
//! it. With the cargo feature `metrics` they go through the `metrics` facade to whatever
//! recorder the app installed; without it every function here is an empty inline one, so
//! call sites stay one line without a `#[cfg]` and compile to nothing.
//!
//! Label values are `&'static str` chosen from short fixed lists (never a user id, a token
//! or a path), so every metric has a bounded number of series. The table in the crate docs
//! lists them; [`NAMES`] is what `tests` check it against.
//!
//! The hot paths (a cached session, a cached bearer token) record through handles obtained
//! once and kept in a `static`, not a registry lookup per call: the recorder must therefore
//! be installed before the app serves its first request, as every exporter's guide does.

// Without `metrics` nothing reads the names or labels; without `redis` nothing calls the
// Redis functions.
#![cfg_attr(not(feature = "metrics"), allow(unused_variables, dead_code))]
#![cfg_attr(all(feature = "metrics", not(feature = "redis")), allow(dead_code))]

/// Sign-ins started (`GET /logto/sign-in`).
pub(crate) const SIGN_INS_STARTED: &str = "logto_sign_ins_started_total";
/// Sign-ins completed: a session was created.
pub(crate) const SIGN_INS_COMPLETED: &str = "logto_sign_ins_completed_total";
/// Sign-in callbacks refused, by `reason`.
pub(crate) const SIGN_INS_FAILED: &str = "logto_sign_ins_failed_total";
/// Sign-outs of a signed-in session.
pub(crate) const SIGN_OUTS: &str = "logto_sign_outs_total";
/// Back-channel logouts, by `outcome` (`accepted`, `refused`) and `reason`.
pub(crate) const BACKCHANNEL_LOGOUTS: &str = "logto_backchannel_logouts_total";
/// Calls to Logto, by `endpoint` and `outcome`.
pub(crate) const PROVIDER_REQUESTS: &str = "logto_provider_requests_total";
/// Latency of calls to Logto, seconds, by `endpoint`.
pub(crate) const PROVIDER_DURATION: &str = "logto_provider_request_duration_seconds";
/// Refresh-token grants sent to Logto.
pub(crate) const REFRESH_GRANTS: &str = "logto_refresh_grants_total";
/// Requests that used another request's refresh instead of sending one, by `via`.
pub(crate) const REFRESH_JOINED: &str = "logto_refresh_joined_total";
/// Refreshes taken over after the instance sending them vanished, by `outcome`.
pub(crate) const REFRESH_TAKEN_OVER: &str = "logto_refresh_taken_over_total";
/// Decoded-session cache lookups, by `result` (`hit`, `miss`).
pub(crate) const SESSION_CACHE: &str = "logto_session_cache_lookups_total";
/// Sessions admitted to the decoded-session cache.
pub(crate) const SESSION_CACHE_ADMISSIONS: &str = "logto_session_cache_admissions_total";
/// Sessions refused, by `reason`.
pub(crate) const SESSIONS_REFUSED: &str = "logto_sessions_refused_total";
/// Bearer-token guard outcomes, by `outcome`.
pub(crate) const BEARER_VERIFICATIONS: &str = "logto_bearer_verifications_total";
/// Bearer tokens found in the verified-token cache.
pub(crate) const BEARER_CACHE_HITS: &str = "logto_bearer_cache_hits_total";
/// Refetches of Logto's signing keys for an unknown key id.
pub(crate) const JWKS_REFETCHES: &str = "logto_jwks_refetches_total";
/// Redis operations, by `kind` and `outcome` (`ok`, `error`, `timeout`).
pub(crate) const REDIS_OPERATIONS: &str = "logto_redis_operations_total";
/// Latency of Redis operations, seconds, by `kind`.
pub(crate) const REDIS_DURATION: &str = "logto_redis_operation_duration_seconds";
/// 1 while the last Redis operation succeeded, else 0.
pub(crate) const REDIS_CONNECTED: &str = "logto_redis_connected";
/// 1 while the pub/sub subscription is up and the ended sessions loaded, else 0.
pub(crate) const REDIS_SUBSCRIBED: &str = "logto_redis_subscribed";
/// Announcements received on the Redis channel.
pub(crate) const REDIS_ANNOUNCEMENTS: &str = "logto_redis_announcements_received_total";
/// Announcements and shared records ignored: unsigned, forged, or out of bounds.
pub(crate) const REDIS_IGNORED: &str = "logto_redis_announcements_ignored_total";
/// Records of ended sessions held in memory.
pub(crate) const ENDED_RECORDS: &str = "logto_ended_records";
/// Records of ended sessions dropped for room.
pub(crate) const ENDED_DROPPED: &str = "logto_ended_records_dropped_total";
/// Log lines left out by the rate limit, by `event`.
pub(crate) const LOG_SUPPRESSED: &str = "logto_log_lines_suppressed_total";

/// Every metric name, for the test that holds the documentation to them.
#[cfg(test)]
const NAMES: [&str; 25] = [
    SIGN_INS_STARTED,
    SIGN_INS_COMPLETED,
    SIGN_INS_FAILED,
    SIGN_OUTS,
    BACKCHANNEL_LOGOUTS,
    PROVIDER_REQUESTS,
    PROVIDER_DURATION,
    REFRESH_GRANTS,
    REFRESH_JOINED,
    REFRESH_TAKEN_OVER,
    SESSION_CACHE,
    SESSION_CACHE_ADMISSIONS,
    SESSIONS_REFUSED,
    BEARER_VERIFICATIONS,
    BEARER_CACHE_HITS,
    JWKS_REFETCHES,
    REDIS_OPERATIONS,
    REDIS_DURATION,
    REDIS_CONNECTED,
    REDIS_SUBSCRIBED,
    REDIS_ANNOUNCEMENTS,
    REDIS_IGNORED,
    ENDED_RECORDS,
    ENDED_DROPPED,
    LOG_SUPPRESSED,
];

/// Logto's endpoints, the `endpoint` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Token,
    Userinfo,
    Revocation,
    Introspection,
    Discovery,
    Jwks,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Userinfo => "userinfo",
            Endpoint::Revocation => "revocation",
            Endpoint::Introspection => "introspection",
            Endpoint::Discovery => "discovery",
            Endpoint::Jwks => "jwks",
        }
    }
}

/// When a timed operation started; nothing at all without the feature.
#[derive(Clone, Copy)]
pub(crate) struct Started(#[cfg(feature = "metrics")] std::time::Instant);

/// Starts timing an operation whose latency is recorded.
#[inline]
pub(crate) fn start() -> Started {
    Started(
        #[cfg(feature = "metrics")]
        std::time::Instant::now(),
    )
}

impl Started {
    #[cfg(feature = "metrics")]
    fn seconds(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A handle registered once, on first use, with the recorder installed by then.
#[cfg(feature = "metrics")]
macro_rules! once {
    ($kind:ident, $name:expr $(, $k:literal => $v:expr)*) => {{
        static HANDLE: std::sync::OnceLock<metrics::$kind> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| {
            let handle: metrics::$kind = once!(@register $kind, $name $(, $k => $v)*);
            handle
        })
    }};
    (@register Counter, $name:expr $(, $k:literal => $v:expr)*) => { metrics::counter!($name $(, $k => $v)*) };
    (@register Gauge, $name:expr $(, $k:literal => $v:expr)*) => { metrics::gauge!($name $(, $k => $v)*) };
}

/// Increments a counter that has a label from a short fixed list (cold paths: a lookup).
#[inline]
fn count(name: &'static str, labels: &[(&'static str, &'static str)]) {
    #[cfg(feature = "metrics")]
    {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::from_static_parts(k, v))
            .collect();
        metrics::counter!(name, labels).increment(1);
    }
}

/// Describes every metric to the recorder (its help text and unit); called at ignition.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(SIGN_INS_STARTED, "Sign-ins started");
        describe_counter!(
            SIGN_INS_COMPLETED,
            "Sign-ins completed (a session was created)"
        );
        describe_counter!(SIGN_INS_FAILED, "Sign-in callbacks refused, by reason");
        describe_counter!(SIGN_OUTS, "Sign-outs of a signed-in session");
        describe_counter!(
            BACKCHANNEL_LOGOUTS,
            "Back-channel logouts, by outcome and reason"
        );
        describe_counter!(PROVIDER_REQUESTS, "Calls to Logto, by endpoint and outcome");
        describe_histogram!(
            PROVIDER_DURATION,
            Unit::Seconds,
            "Latency of calls to Logto, by endpoint"
        );
        describe_counter!(REFRESH_GRANTS, "Refresh-token grants sent to Logto");
        describe_counter!(
            REFRESH_JOINED,
            "Requests that used a refresh made for another request, by via"
        );
        describe_counter!(
            REFRESH_TAKEN_OVER,
            "Refreshes taken over after the instance sending them vanished, by outcome"
        );
        describe_counter!(SESSION_CACHE, "Decoded-session cache lookups, by result");
        describe_counter!(
            SESSION_CACHE_ADMISSIONS,
            "Sessions admitted to the decoded-session cache"
        );
        describe_counter!(SESSIONS_REFUSED, "Sessions refused, by reason");
        describe_counter!(BEARER_VERIFICATIONS, "Bearer-token guards, by outcome");
        describe_counter!(BEARER_CACHE_HITS, "Bearer tokens found already verified");
        describe_counter!(JWKS_REFETCHES, "Refetches of Logto's signing keys");
        describe_counter!(REDIS_OPERATIONS, "Redis operations, by kind and outcome");
        describe_histogram!(
            REDIS_DURATION,
            Unit::Seconds,
            "Latency of Redis operations, by kind"
        );
        describe_gauge!(REDIS_CONNECTED, "1 while Redis answers, else 0");
        describe_gauge!(
            REDIS_SUBSCRIBED,
            "1 while the Redis subscription is up, else 0"
        );
        describe_counter!(REDIS_ANNOUNCEMENTS, "Announcements received from Redis");
        describe_counter!(
            REDIS_IGNORED,
            "Announcements and shared records from Redis ignored (unsigned or out of bounds)"
        );
        describe_gauge!(ENDED_RECORDS, "Records of ended sessions held in memory");
        describe_counter!(ENDED_DROPPED, "Records of ended sessions dropped for room");
        describe_counter!(
            LOG_SUPPRESSED,
            "Log lines left out by the rate limit, by event"
        );
    }
}

/// A sign-in started.
#[inline]
pub(crate) fn sign_in_started() {
    #[cfg(feature = "metrics")]
    once!(Counter, SIGN_INS_STARTED).increment(1);
}

/// A sign-in completed.
#[inline]
pub(crate) fn sign_in_completed() {
    #[cfg(feature = "metrics")]
    once!(Counter, SIGN_INS_COMPLETED).increment(1);
}

/// Why a sign-in callback was refused, the `reason` label of [`SIGN_INS_FAILED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignInFailure {
    /// A parameter missing or repeated.
    BadAnswer,
    /// Unknown, used or expired `state` (no transaction cookie).
    State,
    /// Logto answered with `error=` (the user cancelled, or Logto refused).
    ProviderError,
    /// `iss` missing or of another issuer.
    Issuer,
    /// Logto could not be reached (discovery, the code exchange).
    Unavailable,
    /// Logto refused the code.
    Code,
    /// The ID token failed its checks.
    IdToken,
    /// The app's sign-in hook refused the user.
    App,
    /// The session could not be stored.
    Session,
}

impl SignInFailure {
    pub(crate) fn label(self) -> &'static str {
        match self {
            SignInFailure::BadAnswer => "bad_answer",
            SignInFailure::State => "state",
            SignInFailure::ProviderError => "provider_error",
            SignInFailure::Issuer => "issuer",
            SignInFailure::Unavailable => "unavailable",
            SignInFailure::Code => "code",
            SignInFailure::IdToken => "id_token",
            SignInFailure::App => "app_refused",
            SignInFailure::Session => "session",
        }
    }
}

/// A sign-in callback was refused.
#[inline]
pub(crate) fn sign_in_failed(reason: SignInFailure) {
    count(SIGN_INS_FAILED, &[("reason", reason.label())]);
}

/// A signed-in session was signed out.
#[inline]
pub(crate) fn sign_out() {
    #[cfg(feature = "metrics")]
    once!(Counter, SIGN_OUTS).increment(1);
}

/// A back-channel logout: accepted (`Ok`), or refused with a `reason`.
#[inline]
pub(crate) fn backchannel_logout(refused: Option<&'static str>) {
    match refused {
        None => count(
            BACKCHANNEL_LOGOUTS,
            &[("outcome", "accepted"), ("reason", "none")],
        ),
        Some(reason) => count(
            BACKCHANNEL_LOGOUTS,
            &[("outcome", "refused"), ("reason", reason)],
        ),
    }
}

/// A call to Logto ended with `outcome` (`ok`, or a failure's label) after `started`.
#[inline]
pub(crate) fn provider_call(endpoint: Endpoint, outcome: &'static str, started: Started) {
    count(
        PROVIDER_REQUESTS,
        &[("endpoint", endpoint.label()), ("outcome", outcome)],
    );
    #[cfg(feature = "metrics")]
    metrics::histogram!(PROVIDER_DURATION, "endpoint" => endpoint.label())
        .record(started.seconds());
}

/// A refresh-token grant is sent to Logto.
#[inline]
pub(crate) fn refresh_grant() {
    #[cfg(feature = "metrics")]
    once!(Counter, REFRESH_GRANTS).increment(1);
}

/// Where a request found the refresh it used instead of sending its own, the `via` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Another request of this process (single flight).
    Process,
    /// Another instance, through the Redis lease.
    Redis,
}

/// A request used a refresh made for another request.
#[inline]
pub(crate) fn refresh_joined(via: Joined) {
    #[cfg(feature = "metrics")]
    match via {
        Joined::Process => once!(Counter, REFRESH_JOINED, "via" => "process").increment(1),
        Joined::Redis => once!(Counter, REFRESH_JOINED, "via" => "redis").increment(1),
    }
}

/// What became of a refresh taken over after the instance sending it vanished, the
/// `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TakeOver {
    /// Logto still took the token: it was sent again, the session goes on.
    Resent,
    /// Logto had used it up (or cannot be asked): the session ended.
    Ended,
    /// Logto could not be asked now: 503, the next request asks again.
    Undecided,
}

/// A refresh was taken over after the instance sending it vanished.
#[inline]
pub(crate) fn refresh_taken_over(outcome: TakeOver) {
    #[cfg(feature = "metrics")]
    match outcome {
        TakeOver::Resent => once!(Counter, REFRESH_TAKEN_OVER, "outcome" => "resent").increment(1),
        TakeOver::Ended => once!(Counter, REFRESH_TAKEN_OVER, "outcome" => "ended").increment(1),
        TakeOver::Undecided => {
            once!(Counter, REFRESH_TAKEN_OVER, "outcome" => "undecided").increment(1)
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A decoded-session cache lookup: `hit` or miss.
#[inline]
pub(crate) fn session_cache(hit: bool) {
    #[cfg(feature = "metrics")]
    match hit {
        true => once!(Counter, SESSION_CACHE, "result" => "hit").increment(1),
        false => once!(Counter, SESSION_CACHE, "result" => "miss").increment(1),
    }
}

/// A session was admitted to the decoded-session cache.
#[inline]
pub(crate) fn session_cache_admitted() {
    #[cfg(feature = "metrics")]
    once!(Counter, SESSION_CACHE_ADMISSIONS).increment(1);
}

/// Why a session was refused, the `reason` label of [`SESSIONS_REFUSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    /// Ended by a sign-out or a back-channel logout.
    Ended,
    /// Its refresh token was rotated out (an old copy of the cookie) or spent.
    Rotated,
    /// Past its lifetime or inactivity limit.
    TooOld,
    /// Unreadable: tampered, truncated, or sealed under another key.
    Unreadable,
    /// A session id the Redis session store does not know (expired, ended, flushed).
    Unknown,
}

impl SessionRefusal {
    /// The label (also the log line's `reason`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            SessionRefusal::Ended => "ended",
            SessionRefusal::Rotated => "rotated",
            SessionRefusal::TooOld => "too_old",
            SessionRefusal::Unreadable => "unreadable",
            SessionRefusal::Unknown => "unknown",
        }
    }
}

/// A session was refused: the request is treated as signed out.
#[inline]
pub(crate) fn session_refused(reason: SessionRefusal) {
    count(SESSIONS_REFUSED, &[("reason", reason.label())]);
}

/// The outcome of a bearer-token guard, the `outcome` label of [`BEARER_VERIFICATIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bearer {
    Ok,
    Missing,
    Invalid,
    InsufficientScope,
    Unavailable,
    Config,
}

/// A bearer-token guard finished.
#[inline]
pub(crate) fn bearer_verification(outcome: Bearer) {
    #[cfg(feature = "metrics")]
    match outcome {
        // The hot path: a handle, not a lookup.
        Bearer::Ok => once!(Counter, BEARER_VERIFICATIONS, "outcome" => "ok").increment(1),
        Bearer::Missing => count(BEARER_VERIFICATIONS, &[("outcome", "missing")]),
        Bearer::Invalid => count(BEARER_VERIFICATIONS, &[("outcome", "invalid")]),
        Bearer::InsufficientScope => {
            count(BEARER_VERIFICATIONS, &[("outcome", "insufficient_scope")])
        }
        Bearer::Unavailable => count(BEARER_VERIFICATIONS, &[("outcome", "unavailable")]),
        Bearer::Config => count(BEARER_VERIFICATIONS, &[("outcome", "config")]),
    }
}

/// A bearer token was found in the verified-token cache.
#[inline]
pub(crate) fn bearer_cache_hit() {
    #[cfg(feature = "metrics")]
    once!(Counter, BEARER_CACHE_HITS).increment(1);
}

/// Logto's signing keys are fetched again (an unknown key id).
#[inline]
pub(crate) fn jwks_refetch() {
    #[cfg(feature = "metrics")]
    once!(Counter, JWKS_REFETCHES).increment(1);
}

/// How a Redis operation ended, the `outcome` label of [`REDIS_OPERATIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RedisOutcome {
    Ok,
    Error,
    Timeout,
}

/// A Redis operation of `kind` (a short fixed name) ended.
#[inline]
pub(crate) fn redis_operation(kind: &'static str, outcome: RedisOutcome, started: Started) {
    #[cfg(feature = "metrics")]
    {
        let label = match outcome {
            RedisOutcome::Ok => "ok",
            RedisOutcome::Error => "error",
            RedisOutcome::Timeout => "timeout",
        };
        count(REDIS_OPERATIONS, &[("kind", kind), ("outcome", label)]);
        metrics::histogram!(REDIS_DURATION, "kind" => kind).record(started.seconds());
        redis_connected(outcome == RedisOutcome::Ok);
    }
}

/// Whether Redis answers, as the last operation found.
#[inline]
pub(crate) fn redis_connected(up: bool) {
    #[cfg(feature = "metrics")]
    once!(Gauge, REDIS_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// Whether the Redis subscription is up (and the ended sessions loaded).
#[inline]
pub(crate) fn redis_subscribed(up: bool) {
    #[cfg(feature = "metrics")]
    once!(Gauge, REDIS_SUBSCRIBED).set(if up { 1.0 } else { 0.0 });
}

/// An announcement arrived on the Redis channel.
#[inline]
pub(crate) fn redis_announcement() {
    #[cfg(feature = "metrics")]
    once!(Counter, REDIS_ANNOUNCEMENTS).increment(1);
}

/// An announcement or a shared record from Redis was ignored.
#[inline]
pub(crate) fn redis_ignored() {
    #[cfg(feature = "metrics")]
    once!(Counter, REDIS_IGNORED).increment(1);
}

/// The records of ended sessions held now.
#[inline]
pub(crate) fn ended_records(held: usize) {
    #[cfg(feature = "metrics")]
    once!(Gauge, ENDED_RECORDS).set(held as f64);
}

/// A record of an ended session was dropped for room.
#[inline]
pub(crate) fn ended_dropped() {
    #[cfg(feature = "metrics")]
    once!(Counter, ENDED_DROPPED).increment(1);
}

/// A log line of `event` was left out by the rate limit.
#[inline]
pub(crate) fn log_suppressed(event: &'static str) {
    count(LOG_SUPPRESSED, &[("event", event)]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_in_the_tables_of_the_crate_docs_and_the_readme() {
        let docs = include_str!("../lib.rs");
        let readme = include_str!("../../README.md");
        for name in super::NAMES {
            let row = format!("| `{name}` |");
            assert!(
                docs.contains(&row),
                "{name} is missing from the crate docs' table"
            );
            assert!(
                readme.contains(&row),
                "{name} is missing from the README's table"
            );
        }
    }
}
