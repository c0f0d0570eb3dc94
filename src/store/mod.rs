//! What must outlive one request and be the same for every instance of the app: refresh
//! coordination (one refresh per refresh token, rotations, tokens never to be sent again)
//! and ended sessions (sign-outs, back-channel logouts and their `jti`s).
//!
//! One small interface, [`Store`], with two implementations chosen at ignite:
//! - **in process** (the default): nothing is shared; the bounded maps of `refresh` and
//!   [`Ended`] are the whole truth;
//! - **Redis** (`redis_url`, cargo feature `redis`): the same maps stay as each instance's
//!   cache and mirror, and Redis makes them common (see `redis.rs`).
//!
//! `refresh` and `logout` call it; guards and routes never see which one runs. With the
//! cookie session store the cookie stays the source of truth: nothing here is the only
//! copy of a session. With `session_store = "redis"` the sessions themselves live in Redis
//! too (`redis/sessions.rs`, reached through the Redis store; `crate::web::redis_session` for the
//! request side).

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod seal;

use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "redis")]
pub(crate) use self::redis::{Fetch, Move, RedisStore, SaveError};
pub(crate) use memory::{Ended, EndedKind, EndedRecord};

use crate::config::LogtoConfig;

/// What a request needs a token for.
pub(crate) type Target = (Option<String>, Option<String>);

/// The result of a refresh, as a request should store it.
#[derive(Clone)]
pub(crate) struct Refreshed {
    /// The refresh token to keep (the successor if Logto rotated it).
    pub refresh_token: String,
    /// A new raw ID token, when a refresh along the chain returned one (already verified).
    pub id_token: Option<String>,
    pub access_token: String,
    pub expires_at: i64,
    /// When Logto answered: a forced refresh accepts only answers newer than its request.
    pub made_at: Instant,
}

/// The refresh token that replaced a rotated-out one, and the ID token that came with it.
#[derive(Clone)]
pub(crate) struct Successor {
    pub refresh_token: String,
    pub id_token: Option<String>,
}

/// The store of one app (cheap to clone: both refresh and logout hold it).
#[derive(Clone)]
pub(crate) enum Store {
    /// Nothing shared beyond this process.
    Local,
    /// Shared through Redis.
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisStore>),
}

/// What a refresh with a token this process knows nothing about should do.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Begin {
    /// Send it to Logto now; report the outcome with [`Store::finish_refresh`].
    Proceed(Lease),
    /// The instance that held the lease to send it vanished before telling the outcome, and
    /// its lease ran out; the caller now holds the lease. Logto may or may not have used
    /// the token up: ask it (introspection) before sending, and report as for `Proceed`
    /// (`Finish::Doubt` when Logto cannot say).
    Doubt(Lease),
    /// Another instance already refreshed it for this target: its result, and the token
    /// that replaced it if Logto rotated it.
    Shared {
        result: Refreshed,
        successor: Option<Successor>,
    },
    /// Another instance saw Logto rotate it: follow the rotation.
    Rotated(Successor),
    /// Never to be sent again: rotated out longer than the grace ago, possibly spent by a
    /// failed refresh, or its records were tampered with.
    Spent,
    /// The store cannot be reached within its timeout: send nothing.
    Unavailable,
}

/// The right to send one refresh token to Logto (with Redis, a lease in Redis).
pub(crate) struct Lease(#[cfg_attr(not(feature = "redis"), allow(dead_code))] Option<String>);

/// How a refresh ended, for the other instances.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Finish<'a> {
    /// Logto answered; `successor` when it replaced the refresh token.
    Refreshed {
        result: &'a Refreshed,
        successor: Option<&'a Successor>,
    },
    /// The token may have been spent (refused, or an answer lost): never send it again.
    Spent,
    /// The token is intact (no answer, a server error, or refused for this target only).
    Free,
    /// Taken over after a vanished holder, and Logto could not say whether the token is
    /// still good: release the lease and leave the doubt for the next caller.
    Doubt,
}

/// The (cached) identity of a value in the ended-session records.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Ident<'a> {
    Sid(&'a str),
    Sub(&'a str),
    /// A session of this app: its user and when it started.
    Session {
        sub: &'a str,
        created_at_ms: i64,
    },
    Jti(&'a str),
}

impl Store {
    /// The store `config` asks for. With `redis_url`: Redis, whose connection is made in the
    /// background (Redis being down at launch does not stop the launch); `ended` becomes
    /// the mirror of the shared list.
    pub async fn start(
        config: &LogtoConfig,
        figment: &rocket::figment::Figment,
        ended: Arc<Ended>,
    ) -> Result<Store, String> {
        let Some(settings) = &config.redis else {
            return Ok(Store::Local);
        };
        check_support(true, cfg!(feature = "redis"))?;
        #[cfg(feature = "redis")]
        {
            let secret = seal::secret_key_material(figment)?;
            let store = redis::RedisStore::start(config, settings, &secret, ended)?;
            Ok(Store::Redis(store))
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (figment, ended, settings);
            unreachable!("check_support refuses redis_url without the feature")
        }
    }

    /// The Redis store, when there is one.
    #[cfg(feature = "redis")]
    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        match self {
            Store::Local => None,
            Store::Redis(r) => Some(r),
        }
    }

    /// Redis as a readiness probe sees it: `None` without Redis; else whether it answers a
    /// `PING` within its timeout, and whether the subscription is up (and the ended
    /// sessions loaded).
    pub async fn redis_health(&self) -> Option<(bool, bool)> {
        match self {
            Store::Local => None,
            #[cfg(feature = "redis")]
            Store::Redis(r) => Some((r.ping().await, r.subscribed())),
        }
    }

    /// A short description for the launch log (never the password).
    pub fn describe(&self) -> String {
        match self {
            Store::Local => "kept in this process".into(),
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.describe(),
        }
    }

    /// How `value` is named in the records: as is in process; with Redis, a keyed hash.
    pub fn ident(&self, value: Ident<'_>) -> String {
        match self {
            Store::Local => match value {
                Ident::Sid(v) | Ident::Sub(v) | Ident::Jti(v) => v.to_string(),
                Ident::Session { sub, created_at_ms } => format!("{sub}\u{0}{created_at_ms}"),
            },
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.ident(value),
        }
    }

    /// Whether sessions must be refused now: the list of ended sessions cannot be kept
    /// current (Redis unreachable) and the app chose `redis_fail_closed`.
    pub fn refuse_unchecked_sessions(&self) -> bool {
        match self {
            Store::Local => false,
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.refuse_unchecked_sessions(),
        }
    }

    /// Asks the other instances about `token` before it is sent to Logto: in process there
    /// are none, so go ahead.
    pub async fn begin_refresh(
        &self,
        token: &str,
        target: &Target,
        fresh_after: i64,
        made_after: Option<Instant>,
    ) -> Begin {
        match self {
            Store::Local => {
                let _ = (token, target, fresh_after, made_after);
                Begin::Proceed(Lease(None))
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => {
                r.begin_refresh(token, target, fresh_after, made_after)
                    .await
            }
        }
    }

    /// Tells the other instances how the refresh of `token` ended, and releases its lease.
    pub async fn finish_refresh(
        &self,
        lease: Lease,
        token: &str,
        target: &Target,
        finish: Finish<'_>,
    ) {
        match self {
            Store::Local => {
                let _ = (lease, token, target, finish);
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.finish_refresh(lease, token, target, finish).await,
        }
    }

    /// The token that replaced `token`, when another instance saw it rotate within the
    /// grace (in process: never, the caller's maps already know).
    pub async fn successor(&self, token: &str) -> Option<Successor> {
        match self {
            Store::Local => {
                let _ = token;
                None
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.successor(token).await,
        }
    }

    /// Whether the logout token `jti` is used for the first time by any instance (the
    /// caller checked this process already). `None`: the store cannot tell now.
    pub async fn first_use_of_jti(&self, jti: &str) -> Option<bool> {
        match self {
            Store::Local => {
                let _ = jti;
                Some(true)
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.first_use_of_jti(jti).await,
        }
    }

    /// Shares ended sessions (already in this process's [`Ended`]) with the other
    /// instances; kept and sent later if Redis cannot take them now.
    pub async fn share_ended(&self, records: Vec<EndedRecord>) {
        match self {
            Store::Local => {
                let _ = records;
            }
            #[cfg(feature = "redis")]
            Store::Redis(r) => r.share_ended(records).await,
        }
    }
}

/// Refuses a configured `redis_url` in a build without the `redis` feature (`enabled` is
/// `cfg!(feature = "redis")`; a parameter so that both builds' answers are tested).
pub(crate) fn check_support(redis_configured: bool, enabled: bool) -> Result<(), String> {
    if redis_configured && !enabled {
        return Err(
            "logto config: `redis_url` (or LOGTO_REDIS_URL) is set, but rocket_logto was \
                    built without its `redis` feature: add features = [\"redis\"] to its line in \
                    Cargo.toml, or remove redis_url to keep everything in process"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_the_feature_refuses_a_configured_redis_url() {
        let e = check_support(true, false).unwrap_err();
        assert!(
            e.contains("`redis_url`") && e.contains("features = [\"redis\"]"),
            "{e}"
        );
        assert!(check_support(false, false).is_ok());
        assert!(check_support(true, true).is_ok());
    }

    #[test]
    fn in_process_idents_tell_sessions_apart() {
        let store = Store::Local;
        let a = store.ident(Ident::Session {
            sub: "u",
            created_at_ms: 1,
        });
        let b = store.ident(Ident::Session {
            sub: "u",
            created_at_ms: 2,
        });
        assert_ne!(a, b);
        assert_eq!(store.ident(Ident::Sid("s")), "s");
    }
}
