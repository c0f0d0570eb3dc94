//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): Logto posts a signed
//! logout token when a user's session ends there, and from then on this app refuses the
//! session cookies of that Logto session (`sid`) or, without a `sid`, every session of
//! that user (`sub`) started before the logout. A sign-out through `/logto/sign-out` ends
//! its own session the same way, so that a copy of its cookies taken before no longer works.
//!
//! Cookie sessions live in browsers, so the refusal list lives in memory: bounded, kept
//! for the session lifetime. With Redis it is shared by every instance, and each instance
//! checks requests against its own mirror of it (see "Running several instances" in the
//! docs).

use std::sync::Arc;
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
use crate::store::{Ended, EndedKind, EndedRecord, Ident, Store};

/// The `events` member that makes a JWT a logout token.
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";
/// How long a logout token's `jti` is remembered to refuse replays.
const JTI_MEMORY: Duration = Duration::from_secs(600);

/// Whether a session may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    Live,
    /// Signed out, or logged out by Logto.
    Ended,
    /// The list of ended sessions cannot be kept current (Redis unreachable) and the app
    /// asked to refuse sessions meanwhile (`redis_fail_closed`).
    Unverifiable,
}

/// Sessions ended, and the logout tokens already used.
pub(crate) struct Logouts {
    /// Ended sessions (with Redis: this instance's mirror of the shared list).
    ended: Arc<Ended>,
    jtis: ExpiringMap<()>,
    store: Store,
}

impl Logouts {
    /// Records ended sessions in `ended` (shared with `store`'s mirror), bounded by `capacity`.
    pub fn new(ended: Arc<Ended>, store: Store, capacity: usize) -> Logouts {
        Logouts {
            ended,
            jtis: ExpiringMap::new(JTI_MEMORY, capacity),
            store,
        }
    }

    /// Whether a session with these claims, started at `created_at_ms`, may be used: an
    /// in-memory lookup, no round trip.
    pub fn check(&self, claims: &IdTokenClaims, created_at_ms: i64) -> SessionCheck {
        if self.store.refuse_unchecked_sessions() {
            return SessionCheck::Unverifiable;
        }
        // Most apps never end a session: one cheap check before any lookup.
        if self.ended.none() {
            return SessionCheck::Live;
        }
        let store = &self.store;
        let by_sid = || {
            claims.sid.as_deref().is_some_and(|sid| {
                self.ended
                    .ended_at(EndedKind::Sid, || store.ident(Ident::Sid(sid)))
                    .is_some()
            })
        };
        // Only sessions started before the logout; a sign-in after it must work.
        let by_sub = || {
            self.ended
                .ended_at(EndedKind::Sub, || store.ident(Ident::Sub(&claims.sub)))
                .is_some_and(|at| created_at_ms < at)
        };
        let by_session = || {
            self.ended
                .ended_at(EndedKind::Session, || {
                    store.ident(Ident::Session {
                        sub: &claims.sub,
                        created_at_ms,
                    })
                })
                .is_some()
        };
        if by_sid() || by_sub() || by_session() {
            SessionCheck::Ended
        } else {
            SessionCheck::Live
        }
    }

    /// Ends the session of `claims` started at `created_at_ms` (its sign-out): every copy of
    /// its cookies is refused from now on, on every instance.
    pub async fn end_session(&self, claims: &IdTokenClaims, created_at_ms: i64) {
        let record = EndedRecord {
            kind: EndedKind::Session,
            ident: self.store.ident(Ident::Session {
                sub: &claims.sub,
                created_at_ms,
            }),
            at_ms: created_at_ms,
        };
        self.ended.insert(&record);
        self.store.share_ended(vec![record]).await;
    }

    /// Uses the logout token `jti` (once across instances) and records its logout.
    async fn record(&self, jti: &str, logout: &LogoutToken) -> Result<(), String> {
        const REPLAYED: &str = "it was already used (jti)";
        if !self.jtis.insert_new(jti, ()) {
            return Err(REPLAYED.into());
        }
        match self.store.first_use_of_jti(jti).await {
            Some(true) => {}
            Some(false) => return Err(REPLAYED.into()),
            None => log::warn!(
                "logto: the logout token's jti could not be checked with the other instances \
                 (Redis unreachable); accepted on this instance's memory"
            ),
        }
        let (kind, ident) = match (&logout.sid, &logout.sub) {
            (Some(sid), _) => (EndedKind::Sid, self.store.ident(Ident::Sid(sid))),
            (None, Some(sub)) => (EndedKind::Sub, self.store.ident(Ident::Sub(sub))),
            (None, None) => return Ok(()),
        };
        let record = EndedRecord {
            kind,
            ident,
            at_ms: now_ms(),
        };
        self.ended.insert(&record);
        self.store.share_ended(vec![record]).await;
        Ok(())
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
    for attempt in 0..2 {
        let jwks = discovery.jwks();
        let candidates: Vec<_> = jwks
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid)
            .collect();
        verified = candidates.iter().any(|key| {
            key.verify_signature(&alg, message.as_bytes(), &signature)
                .is_ok()
        });
        if verified || !candidates.is_empty() || attempt == 1 {
            break;
        }
        if !provider
            .refetch_jwks(discovery, kid.map(str::to_string))
            .await
            .map_err(|e| e.message().to_string())?
        {
            break;
        }
    }
    if !verified {
        return Err("its signature is invalid".into());
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
    logouts.record(&jti, &logout).await?;
    Ok(logout)
}
