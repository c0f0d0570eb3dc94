//! The `Sessions` admin API: end a user's sessions from the app's own code (a ban, a
//! password change), and with the Redis session store list them and end one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rocket::form::{self, FromFormField, ValueField};
use rocket::request::FromParam;
use time::OffsetDateTime;

use crate::config::SessionStoreKind;
use crate::error::LogtoError;
use crate::store::{Ended, EndedKind, EndedRecord, Ident, Store};
use crate::util::clock::now_ms;

/// The sessions of the app's users, on every instance. The fairing puts one in Rocket's
/// managed state: take `&State<Sessions>` in a route, or `rocket.state::<Sessions>()` in a
/// background task. Cheap to clone.
///
/// - [`end_all`](Sessions::end_all) works with both session stores: cookie sessions end
///   through the list of ended sessions (shared by every instance with `redis_url`), Redis
///   sessions are deleted.
/// - [`list`](Sessions::list) and [`end`](Sessions::end) need `session_store = "redis"`:
///   cookie sessions live in browsers, where nobody can list them.
///
/// ```
/// use rocket::{post, State};
/// use rocket_logto::{LogtoError, Sessions};
///
/// /// An admin bans a user: every session of theirs ends, on every instance.
/// #[post("/admin/users/<sub>/ban")]
/// async fn ban(sub: &str, sessions: &State<Sessions>) -> Result<&'static str, LogtoError> {
///     sessions.end_all(sub).await?;
///     Ok("banned")
/// }
/// ```
///
/// From a background task, once Rocket has ignited:
///
/// ```no_run
/// # async fn run(rocket: rocket::Rocket<rocket::Orbit>) -> Result<(), rocket_logto::LogtoError> {
/// let sessions = rocket.state::<rocket_logto::Sessions>().expect("the Logto fairing").clone();
/// sessions.end_all("user_id_whose_password_changed").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    kind: SessionStoreKind,
    store: Store,
    ended: Arc<Ended>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("store", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

/// One session of a user in the Redis session store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Names the session for [`Sessions::end`]; compare it with
    /// [`AuthenticatedUser::session_handle`](crate::AuthenticatedUser::session_handle) to
    /// mark "this session".
    pub handle: SessionHandle,
    /// When the user signed in.
    pub created: OffsetDateTime,
    /// When the session was last used, to within a tenth of the inactivity lifetime
    /// (at most an hour): it is written again that often, not on every request.
    pub last_seen: OffsetDateTime,
    /// The browser's `User-Agent` at sign-in (200 characters at most).
    pub user_agent: Option<String>,
}

/// An opaque name of one session of the Redis session store: a keyed hash of its id,
/// never the id itself (it cannot be used as a cookie). Parse it back from a form field, a
/// path segment or a string; its text is 43 base64url characters.
///
/// ```
/// use rocket_logto::SessionHandle;
///
/// assert!("not a handle".parse::<SessionHandle>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionHandle(String);

/// A text that is no [`SessionHandle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSessionHandle {
    _private: (),
}

impl fmt::Display for InvalidSessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a session handle (expected 43 base64url characters)")
    }
}

impl std::error::Error for InvalidSessionHandle {}

impl SessionHandle {
    /// Its text, as it was given out.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_hash(hash: String) -> SessionHandle {
        SessionHandle(hash)
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({})", self.0)
    }
}

impl FromStr for SessionHandle {
    type Err = InvalidSessionHandle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(SessionHandle(s.to_string()))
        } else {
            Err(InvalidSessionHandle { _private: () })
        }
    }
}

impl<'a> FromParam<'a> for SessionHandle {
    type Error = InvalidSessionHandle;
    fn from_param(param: &'a str) -> Result<Self, Self::Error> {
        param.parse()
    }
}

#[rocket::async_trait]
impl<'v> FromFormField<'v> for SessionHandle {
    fn from_value(field: ValueField<'v>) -> form::Result<'v, Self> {
        field
            .value
            .parse()
            .map_err(|e: InvalidSessionHandle| form::Error::validation(e.to_string()).into())
    }
}

impl serde::Serialize for SessionHandle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn needs_redis_store(what: &str) -> LogtoError {
    LogtoError::Config(format!(
        "Sessions::{what} needs session_store = \"redis\": cookie sessions live in the browsers, \
         where they cannot be listed or ended one by one (Sessions::end_all works with both stores)"
    ))
}

#[cfg(feature = "redis")]
fn unavailable() -> LogtoError {
    LogtoError::unavailable("The session store cannot be reached; try again in a moment.")
        .retry_after(1)
}

impl Sessions {
    pub(crate) fn new(kind: SessionStoreKind, store: Store, ended: Arc<Ended>) -> Sessions {
        Sessions {
            inner: Arc::new(Inner { kind, store, ended }),
        }
    }

    /// Which store keeps the sessions (`session_store`).
    pub fn store_kind(&self) -> SessionStoreKind {
        self.inner.kind
    }

    /// The Redis store, whenever `redis_url` is set (whatever `session_store` says).
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self) -> Option<&Arc<crate::store::RedisStore>> {
        self.inner.store.redis()
    }

    /// The Redis store when it keeps the sessions (`session_store = "redis"`).
    #[cfg(feature = "redis")]
    pub(crate) fn redis_store(&self) -> Option<&Arc<crate::store::RedisStore>> {
        match self.inner.kind {
            SessionStoreKind::Redis => self.redis(),
            _ => None,
        }
    }

    /// Ends every session of the user `sub` started until now, on every instance, in
    /// either store; sessions started afterwards (the user signs in again) are not
    /// affected. With the Redis session store, an error means Redis could not be reached
    /// (503): the cookie-side record is made anyway, so those sessions end too.
    ///
    /// # Errors
    ///
    /// [`LogtoError::Unavailable`] (503) when the Redis session store cannot be reached.
    pub async fn end_all(&self, sub: &str) -> Result<(), LogtoError> {
        let record = EndedRecord {
            kind: EndedKind::Sub,
            ident: self.inner.store.ident(Ident::Sub(sub)),
            at_ms: now_ms(),
        };
        self.inner.ended.insert(&record);
        self.inner.store.share_ended(vec![record]).await;
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis_store() {
            let ended = redis
                .end_user_sessions(sub)
                .await
                .map_err(|_| unavailable())?;
            log::info!(
                "logto: ended every session of user {} ({ended} in Redis)",
                crate::util::logsafe::for_log(sub)
            );
            return Ok(());
        }
        log::info!(
            "logto: ended every session of user {}",
            crate::util::logsafe::for_log(sub)
        );
        Ok(())
    }

    /// The sessions of the user `sub`, oldest first. Needs `session_store = "redis"`.
    ///
    /// # Errors
    ///
    /// [`LogtoError::Config`] (500) with the cookie session store, where sessions cannot
    /// be listed; [`LogtoError::Unavailable`] (503) when Redis cannot be reached.
    pub async fn list(&self, sub: &str) -> Result<Vec<SessionInfo>, LogtoError> {
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis_store() {
            let listed = redis.list_sessions(sub).await.map_err(|_| unavailable())?;
            let at = |s: i64| {
                OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
            };
            return Ok(listed
                .into_iter()
                .map(|l| SessionInfo {
                    handle: SessionHandle(l.hash),
                    created: at(l.created_at_ms.div_euclid(1000)),
                    last_seen: at(l.seen_at),
                    user_agent: l.user_agent,
                })
                .collect());
        }
        let _ = sub;
        Err(needs_redis_store("list"))
    }

    /// Ends one session, on every instance; whether it still existed. Needs
    /// `session_store = "redis"`. The handle may come from a form: check that it is one of
    /// [`list`](Sessions::list)'s for the signed-in user before ending it on their behalf.
    ///
    /// # Errors
    ///
    /// As [`list`](Sessions::list): 500 with the cookie session store, 503 when Redis
    /// cannot be reached.
    pub async fn end(&self, handle: &SessionHandle) -> Result<bool, LogtoError> {
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis_store() {
            let (deleted, held) = redis
                .remove_session(&handle.0)
                .await
                .map_err(|_| unavailable())?;
            if let Some((sub, created_at_ms)) = held {
                // Also recorded as ended, like a sign-out: instances still on the cookie
                // store (while an app switches) refuse the cookies it was moved from.
                let record = EndedRecord {
                    kind: EndedKind::Session,
                    ident: self.inner.store.ident(Ident::Session {
                        sub: &sub,
                        created_at_ms,
                    }),
                    at_ms: created_at_ms,
                };
                self.inner.ended.insert(&record);
                self.inner.store.share_ended(vec![record]).await;
            }
            return Ok(deleted);
        }
        let _ = handle;
        Err(needs_redis_store("end"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_parse_only_from_their_own_text() {
        let good = "A".repeat(43);
        assert_eq!(good.parse::<SessionHandle>().unwrap().as_str(), good);
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &format!("{}/", "A".repeat(42)),
            &"é".repeat(21),
        ] {
            assert!(bad.parse::<SessionHandle>().is_err(), "{bad}");
        }
    }

    #[rocket::async_test]
    async fn the_cookie_store_refuses_listing_with_a_clear_message() {
        let sessions = Sessions::new(
            SessionStoreKind::Cookie,
            Store::Local,
            Arc::new(Ended::new(std::time::Duration::from_secs(60), 10)),
        );
        let e = sessions.list("u").await.unwrap_err();
        assert!(e.to_string().contains("session_store = \"redis\""), "{e}");
        let h = "A".repeat(43).parse().unwrap();
        assert!(sessions.end(&h).await.is_err());
        sessions.end_all("u").await.unwrap();
    }
}
