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

use serde_json::Value;

use crate::claims::IdTokenClaims;
use crate::oidc::jwt::{self, JwtError, Kind};
use crate::oidc::provider::{Discovery, Provider};
use crate::store::{Ended, EndedKind, EndedRecord, Ident, Store};
use crate::util::bounded::ExpiringMap;
use crate::util::clock::now_ms;

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
        // Older than a record the bounded list had to drop: it may have been this one.
        if self
            .ended
            .floor_ms()
            .is_some_and(|floor| created_at_ms <= floor)
        {
            return SessionCheck::Ended;
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
            JwtError::Keys(e) => e.detail().to_string(),
        })?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let logout = LogoutToken {
        sub: text("sub"),
        sid: text("sid"),
    };
    let jti = text("jti").ok_or("it has no token id (jti)")?;
    logouts.record(&jti, &logout).await?;
    Ok(logout)
}
