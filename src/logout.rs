//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): Logto posts a signed
//! logout token when a user's session ends there, and from then on this app refuses the
//! session cookies of that Logto session (`sid`) or, without a `sid`, every session of
//! that user (`sub`) started before the logout.
//!
//! Cookie sessions live in browsers, so the refusal list lives in memory: bounded, kept
//! for the session lifetime, per process (see "Running several instances" in the docs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::CoreJwsSigningAlgorithm;
use openidconnect::JsonWebKey;
use serde_json::Value;

use crate::bounded::ExpiringMap;
use crate::claims::IdTokenClaims;
use crate::config::LogtoConfig;
use crate::provider::{Discovery, Provider};
use crate::session::{now, now_ms};

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

fn segment(part: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "it is not a well-formed JWT".to_string())
}

/// Verifies a logout token (signature with the discovered keys and algorithms, `iss`,
/// `aud`, `iat`, `exp`, the back-channel event, `sub` or `sid`, no `nonce`, unused `jti`)
/// and records the logout. The error says what failed, for the 400 answer.
pub(crate) async fn accept(
    raw: &str,
    provider: &Provider,
    discovery: &Discovery,
    config: &LogtoConfig,
    logouts: &Logouts,
) -> Result<LogoutToken, String> {
    let parts: Vec<&str> = raw.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("it is not a well-formed JWT".into());
    };
    let header: Value =
        serde_json::from_slice(&segment(header)?).map_err(|_| "its header is not JSON")?;
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .cloned()
        .and_then(|alg| serde_json::from_value(alg).ok())
        .ok_or("its algorithm is unknown")?;
    if !discovery.algs.contains(&alg) {
        return Err("its signing algorithm is not one Logto advertises".into());
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let message = format!("{}.{}", parts[0], parts[1]);
    let signature = segment(signature)?;
    let mut verified = false;
    let mut candidates_seen = false;
    for attempt in 0..2 {
        let jwks = discovery.jwks.keys();
        let candidates: Vec<_> = jwks
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid)
            .collect();
        candidates_seen = !candidates.is_empty();
        verified = candidates.iter().any(|key| {
            key.verify_signature(&alg, message.as_bytes(), &signature)
                .is_ok()
        });
        if verified || !candidates.is_empty() || attempt == 1 {
            break;
        }
        discovery
            .jwks
            .refetch()
            .await
            .map_err(|e| e.message().to_string())?;
    }
    if !verified {
        return Err(if candidates_seen {
            "its signature is invalid".into()
        } else {
            "no key of Logto's matches its key id".into()
        });
    }

    let claims: Value =
        serde_json::from_slice(&segment(payload)?).map_err(|_| "its claims are not JSON")?;
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer()) {
        return Err("its issuer (iss) is not the configured Logto".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == config.app_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&config.app_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("it is not meant for this app (aud)".into());
    }
    let skew = config.clock_skew.as_secs() as i64;
    let now = now();
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now + skew => {}
        Some(_) => return Err("it is issued in the future".into()),
        None => return Err("it has no issue time (iat)".into()),
    }
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now - skew => {}
        Some(_) => return Err("it has expired".into()),
        None => return Err("it has no expiry (exp)".into()),
    }
    let is_logout = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !is_logout {
        return Err("it is not a back-channel logout event".into());
    }
    if claims.get("nonce").is_some() {
        return Err("it carries a nonce, which logout tokens must not".into());
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let logout = LogoutToken {
        sub: text("sub"),
        sid: text("sid"),
    };
    if logout.sub.is_none() && logout.sid.is_none() {
        return Err("it names neither a user (sub) nor a session (sid)".into());
    }
    let jti = text("jti").ok_or("it has no token id (jti)")?;
    if !logouts.jtis.insert_new(&jti, ()) {
        return Err("it was already used (jti)".into());
    }
    logouts.record(&logout);
    Ok(logout)
}
