//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): Logto posts a signed
//! logout token when a user's session ends there, and from then on this app refuses the
//! session cookies of that Logto session (`sid`) or, without a `sid`, every session of
//! that user (`sub`) started before the logout.
//!
//! Cookie sessions live in browsers, so the refusal list lives in memory: bounded, kept
//! for the session lifetime, per process (see "Running several instances" in the docs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::bounded::ExpiringMap;
use crate::claims::IdTokenClaims;
use crate::jwt::{self, JwtError, Kind};
use crate::provider::{Discovery, Provider};
use crate::session::now_ms;

/// The `events` member that makes a JWT a logout token.
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";
/// How long a logout token's `jti` is remembered to refuse replays.
const JTI_MEMORY: Duration = Duration::from_secs(600);

/// Logouts received, and the logout tokens already used.
pub(crate) struct Logouts {
    /// `sid` -> when it was logged out.
    sids: ExpiringMap<i64>,
    /// `sub` -> when all of the user's sessions were logged out.
    subs: ExpiringMap<i64>,
    jtis: ExpiringMap<()>,
    /// Set by the first logout: until then, no request pays for a lookup.
    any: AtomicBool,
}

impl Logouts {
    pub fn new(session_lifetime: Duration, capacity: usize) -> Logouts {
        Logouts {
            sids: ExpiringMap::new(session_lifetime, capacity),
            subs: ExpiringMap::new(session_lifetime, capacity),
            jtis: ExpiringMap::new(JTI_MEMORY, capacity),
            any: AtomicBool::new(false),
        }
    }

    /// Whether a session with these claims, started at `created_at_ms`, was logged out.
    pub fn ended(&self, claims: &IdTokenClaims, created_at_ms: i64) -> bool {
        // Most apps never receive a logout: one cheap check before any lookup.
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let by_sid = claims
            .sid
            .as_deref()
            .is_some_and(|sid| self.sids.get(sid).is_some());
        // Only sessions started before the logout; a sign-in after it must work.
        let by_sub = self
            .subs
            .get(&claims.sub)
            .is_some_and(|at| created_at_ms < at);
        by_sid || by_sub
    }

    fn record(&self, logout: &LogoutToken) {
        self.any.store(true, Ordering::Relaxed);
        match (&logout.sid, &logout.sub) {
            (Some(sid), _) => self.sids.insert(sid, now_ms()),
            (None, Some(sub)) => self.subs.insert(sub, now_ms()),
            (None, None) => {}
        }
    }
}

/// The parts of a verified logout token this crate acts on.
pub(crate) struct LogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
}

/// Verifies a logout token (see [`jwt::Kind::Logout`]: signature with the discovered keys
/// and algorithms, `iss`, `aud`, `iat`, `exp`, the back-channel event, `sub` or `sid`, no
/// `nonce`, a `jti`), refuses a `jti` already used, and records the logout. The error says
/// what failed, for the 400 answer.
pub(crate) async fn accept(
    raw: &str,
    provider: &Provider,
    discovery: &Discovery,
    logouts: &Logouts,
) -> Result<LogoutToken, String> {
    let expected = provider.expected(discovery);
    let claims = jwt::verify(raw, Kind::Logout, &expected, &discovery.jwks)
        .await
        .map_err(|e| match e {
            JwtError::Rejected(why) => why,
            JwtError::Keys(e) => e.message().to_string(),
        })?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let logout = LogoutToken {
        sub: text("sub"),
        sid: text("sid"),
    };
    let jti = text("jti").ok_or("it has no token id (jti)")?;
    if !logouts.jtis.insert_new(&jti, ()) {
        return Err("it was already used (jti)".into());
    }
    logouts.record(&logout);
    Ok(logout)
}
