//! The request side of the Redis session store (`session_store = "redis"`), and the moves
//! between the two stores. The Redis side (keys, sealing, the per-instance cache kept
//! current through pub/sub) is in `store/redis/sessions.rs`.
//!
//! With the Redis store a browser holds one private cookie, `logto_sid`
//! (`__Host-logto_sid` on https), with a random id of 32 bytes; the session is found in
//! this instance's cache (no round trip), else in Redis. An id Redis does not know means
//! signed out (its cookie is removed); Redis unreachable means 503 for a session this
//! instance has not cached (the cookie is kept).
//!
//! Moves: with `session_store = "redis"`, a browser still carrying a cookie session is read
//! once and moved into Redis (a new id cookie, the session cookies removed). With
//! `session_store = "cookie"`, a `logto_sid` cookie is read from Redis once (when
//! `redis_url` is set) and moved into session cookies; without Redis it is removed, and the
//! user signs in again.

use std::sync::Arc;

use rocket::http::CookieJar;
use rocket::request::Request;

use crate::session::{self, CookieNames, Session};
#[cfg(feature = "redis")]
use crate::store::SaveError;
#[cfg(feature = "redis")]
use crate::util::log_limit::{limited, LogLimit};
#[cfg(feature = "redis")]
use crate::util::telemetry::{self, SessionRefusal};
use crate::web::context::RequestSession;
#[cfg(feature = "redis")]
use crate::web::session_cookies;
use crate::web::state::LogtoState;

/// The log lines of refused session ids (anyone can send one).
#[cfg(feature = "redis")]
static SID_REFUSED: LogLimit = LogLimit::new("session_refused");

/// Longest user agent kept with a session, in characters.
const USER_AGENT_CHARS: usize = 200;

/// Which stored session a request carries.
#[derive(Clone)]
pub(crate) struct Stored {
    /// The keyed hash of its id: its name in Redis, and its admin handle.
    pub hash: String,
    /// The user agent kept with it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub user_agent: Option<Arc<str>>,
}

/// The request's `User-Agent`, cut to 200 characters.
pub(crate) fn user_agent(request: &Request<'_>) -> Option<String> {
    request
        .headers()
        .get_one("User-Agent")
        .map(|agent| agent.chars().take(USER_AGENT_CHARS).collect())
}

/// Whether the request carries a session id cookie.
pub(crate) fn has_sid(jar: &CookieJar<'_>, state: &LogtoState) -> bool {
    jar.get(CookieNames::of(&state.config).sid).is_some()
}

/// Removes the session id cookie, if the browser sent one.
fn forget_sid(jar: &CookieJar<'_>, state: &LogtoState) {
    let name = CookieNames::of(&state.config).sid;
    if jar.get(name).is_some() {
        jar.remove(session::removal(name, &state.config));
    }
}

/// Signed out, the session id cookie removed (and noted for the answer).
fn signed_out_removing(jar: &CookieJar<'_>, state: &LogtoState) -> RequestSession {
    forget_sid(jar, state);
    let out = RequestSession::with_store(None, None, None, false);
    out.note_written(jar, state);
    out
}

#[cfg(feature = "redis")]
fn restamp_after(config: &crate::config::LogtoConfig) -> i64 {
    (config.session_inactivity.as_secs() as i64 / 10).clamp(60, 3600)
}

/// The error of a guard when the session could not be read (Redis unreachable).
pub(crate) fn unavailable_error() -> crate::error::LogtoError {
    crate::error::LogtoError::unavailable(
        "Your session cannot be read right now; try again in a moment.",
    )
    .retry_after(1)
}

/// Loads the request's session with `session_store = "redis"`.
#[cfg(feature = "redis")]
pub(crate) async fn load(request: &Request<'_>, state: &LogtoState) -> RequestSession {
    use crate::store::Fetch;
    use crate::tokens::logout::SessionCheck;

    let jar = request.cookies();
    let config = &state.config;
    let names = CookieNames::of(config);
    let Some(redis) = state.sessions.redis_store() else {
        return RequestSession::with_store(None, None, None, false);
    };
    let id = match jar.get_private(names.sid) {
        Some(cookie) => cookie.value().to_string(),
        None => {
            if jar.get(names.sid).is_some() {
                telemetry::session_refused(SessionRefusal::Unreadable);
                limited!(
                    SID_REFUSED,
                    info,
                    "logto: event=session_refused reason=unreadable: session id cookie refused (undecryptable); treating the request as signed out"
                );
                return signed_out_removing(jar, state);
            }
            if jar.get(names.session()).is_some() {
                return move_to_redis(request, state).await;
            }
            return RequestSession::with_store(None, None, None, false);
        }
    };
    let hash = redis.session_hash(&id);
    let cached = match redis.cached_session(&hash) {
        Some(cached) => cached,
        None => match redis.fetch_session(&hash).await {
            Fetch::Found(cached) => cached,
            Fetch::Unknown => {
                telemetry::session_refused(SessionRefusal::Unknown);
                limited!(
                    SID_REFUSED,
                    info,
                    "logto: event=session_refused reason=unknown: a session id unknown to Redis (expired, ended or flushed); treating the request as signed out"
                );
                return signed_out_removing(jar, state);
            }
            Fetch::Down => return RequestSession::with_store(None, None, None, true),
        },
    };
    let now = crate::util::clock::now();
    let live = session::check_lifetimes(&cached.session, config, now).is_ok();
    let check = state
        .logouts
        .check(&cached.claims, cached.session.created_at_ms);
    if !live || check == SessionCheck::Ended {
        let reason = if live {
            SessionRefusal::Ended
        } else {
            SessionRefusal::TooOld
        };
        telemetry::session_refused(reason);
        log::info!(
            "logto: event=session_refused reason={}: session ended or expired; treating the request as signed out",
            reason.label()
        );
        let _ = redis.delete_session(&hash).await;
        return signed_out_removing(jar, state);
    }
    if check == SessionCheck::Unverifiable {
        return RequestSession::with_store(None, None, None, false);
    }
    let stored = Stored {
        hash,
        user_agent: cached.user_agent.clone(),
    };
    let mut s = cached.session.clone();
    if now - s.seen_at > restamp_after(config) {
        // Rolling inactivity, in Redis now and then: no cookie is written.
        Arc::make_mut(&mut s).seen_at = now;
        if let Ok(Some(saved)) = redis
            .save_session(
                &stored.hash,
                s.clone(),
                stored.user_agent.clone(),
                Some(cached.version),
            )
            .await
        {
            s = saved.session.clone();
        }
    }
    RequestSession::with_store(Some(s), Some(cached.claims.clone()), Some(stored), false)
}

#[cfg(not(feature = "redis"))]
pub(crate) async fn load(_: &Request<'_>, _: &LogtoState) -> RequestSession {
    RequestSession::with_store(None, None, None, false)
}

/// A cookie session, with `session_store = "redis"`: read as always, then moved into Redis
/// under a new id (its cookies removed). Served from the cookies if Redis cannot take it.
#[cfg(feature = "redis")]
async fn move_to_redis(request: &Request<'_>, state: &LogtoState) -> RequestSession {
    use crate::store::{Fetch, Move};
    let jar = request.cookies();
    let config = &state.config;
    let loaded = RequestSession::load(jar, state);
    let Some(redis) = state.sessions.redis_store() else {
        return loaded;
    };
    if loaded.claims().is_none() {
        return loaded;
    }
    let Some((s, claims)) = loaded.into_loaded() else {
        return RequestSession::with_store(None, None, None, false);
    };
    // Named after the exact cookie value moved (a keyed hash, as unpredictable as a random
    // id to whoever lacks `secret_key`), so that the same cookies sent again are recognised:
    // within `rotation_grace_secs` of the move (the browser's parallel requests) they join
    // the session; later, or once it ended, they are refused. A session moves in once.
    let first = jar
        .get(CookieNames::of(config).session())
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let id = redis.moved_session_id(&first);
    let hash = redis.session_hash(&id);
    let refuse = || {
        log::info!(
            "logto: the cookies of a session moved into Redis earlier (or ended since); treating the request as signed out"
        );
        session_cookies::clear(jar, config);
        let out = RequestSession::with_store(None, None, None, false);
        out.note_written(jar, state);
        out
    };
    match redis.may_move(&hash).await {
        Ok(Move::New) => {}
        // A parallel request of the same browser, just after the move: the same session.
        Ok(Move::Join) => {
            let cached = match redis.cached_session(&hash) {
                Some(cached) => cached,
                None => match redis.fetch_session(&hash).await {
                    Fetch::Found(cached) => cached,
                    Fetch::Unknown => return refuse(),
                    Fetch::Down => {
                        return RequestSession::with_store(Some(s), Some(claims), None, false)
                    }
                },
            };
            session_cookies::clear(jar, config);
            jar.add_private(session::sid_cookie(id, config));
            let joined = RequestSession::with_store(
                Some(cached.session.clone()),
                Some(cached.claims.clone()),
                Some(Stored {
                    hash,
                    user_agent: cached.user_agent.clone(),
                }),
                false,
            );
            joined.note_written(jar, state);
            return joined;
        }
        // Moved longer ago than the grace, or ended since: old copies are worth nothing.
        Ok(Move::Refuse) => return refuse(),
        Err(_) => return RequestSession::with_store(Some(s), Some(claims), None, false),
    }
    let agent: Option<Arc<str>> = user_agent(request).map(Arc::from);
    match redis
        .save_session(&hash, s.clone(), agent.clone(), None)
        .await
    {
        Ok(_) => {
            session_cookies::clear(jar, config);
            jar.add_private(session::sid_cookie(id, config));
            log::info!("logto: a cookie session was moved into Redis (session_store = \"redis\")");
            let moved = RequestSession::with_store(
                Some(s),
                Some(claims),
                Some(Stored {
                    hash,
                    user_agent: agent,
                }),
                false,
            );
            moved.note_written(jar, state);
            moved
        }
        Err(_) => RequestSession::with_store(Some(s), Some(claims), None, false),
    }
}

/// A session id cookie, with `session_store = "cookie"`: with `redis_url`, the session is
/// read from Redis once and moved into cookies; otherwise the cookie is removed.
pub(crate) async fn move_to_cookies(request: &Request<'_>, state: &LogtoState) -> RequestSession {
    let jar = request.cookies();
    #[cfg(feature = "redis")]
    if let Some(redis) = state.sessions.redis() {
        use crate::store::Fetch;
        use crate::tokens::logout::SessionCheck;
        let config = &state.config;
        if let Some(id) = jar.get_private(CookieNames::of(config).sid) {
            let hash = redis.session_hash(id.value());
            let found = match redis.cached_session(&hash) {
                Some(cached) => Some(cached),
                None => match redis.fetch_session(&hash).await {
                    Fetch::Found(cached) => Some(cached),
                    Fetch::Unknown => None,
                    Fetch::Down => return RequestSession::with_store(None, None, None, true),
                },
            };
            if let Some(cached) = found {
                let live =
                    session::check_lifetimes(&cached.session, config, crate::util::clock::now())
                        .is_ok()
                        && state
                            .logouts
                            .check(&cached.claims, cached.session.created_at_ms)
                            == SessionCheck::Live;
                let mut s = (*cached.session).clone();
                let written = live
                    && (session_cookies::store(jar, &s, config, state.decoded.cipher()).is_ok()
                        || {
                            s.tokens.clear();
                            s.user_info = None;
                            session_cookies::store(jar, &s, config, state.decoded.cipher()).is_ok()
                        });
                let _ = redis.delete_session(&hash).await;
                if written {
                    forget_sid(jar, state);
                    log::info!(
                        "logto: a Redis session was moved into cookies (session_store = \"cookie\")"
                    );
                    let moved = RequestSession::with_store(
                        Some(Arc::new(s)),
                        Some(cached.claims.clone()),
                        None,
                        false,
                    );
                    moved.note_written(jar, state);
                    return moved;
                }
            }
        }
    }
    log::info!("logto: a session id cookie of the Redis session store is removed (session_store = \"cookie\")");
    signed_out_removing(jar, state)
}

/// Starts the session of a sign-in with `session_store = "redis"`: always under a new id
/// (session fixation), the browser's previous session deleted. A session too large for the
/// store (a userinfo answer over its limit) is written without its user info, as the
/// cookie store does: written whole, it would not read back.
#[cfg(feature = "redis")]
pub(crate) async fn start(
    state: &LogtoState,
    jar: &CookieJar<'_>,
    s: &Session,
    user_agent: Option<String>,
) -> Result<(), crate::error::LogtoError> {
    let config = &state.config;
    let Some(redis) = state.sessions.redis_store() else {
        return Err(crate::error::LogtoError::Config(
            "session_store = \"redis\" without Redis".into(),
        ));
    };
    if let Some(old) = jar.get_private(CookieNames::of(config).sid) {
        let _ = redis.delete_session(&redis.session_hash(old.value())).await;
    }
    let id = session::random_token(32);
    let hash = redis.session_hash(&id);
    let agent: Option<Arc<str>> = user_agent.map(Arc::from);
    let mut s = Arc::new(s.clone());
    loop {
        match redis
            .save_session(&hash, s.clone(), agent.clone(), None)
            .await
        {
            Ok(_) => break,
            Err(SaveError::TooLarge(_)) if s.user_info.is_some() => {
                log::warn!(
                    "logto: the user info of a signing-in user does not fit in the Redis session store; it is left out and fetched on demand"
                );
                Arc::make_mut(&mut s).user_info = None;
            }
            Err(SaveError::TooLarge(bytes)) => {
                return Err(crate::error::LogtoError::Config(format!(
                    "The session ({bytes} bytes) does not fit in the Redis session store."
                )))
            }
            Err(SaveError::Down) => return Err(unavailable_error()),
        }
    }
    jar.add_private(session::sid_cookie(id, config));
    Ok(())
}

#[cfg(not(feature = "redis"))]
pub(crate) async fn start(
    _: &LogtoState,
    _: &CookieJar<'_>,
    _: &Session,
    _: Option<String>,
) -> Result<(), crate::error::LogtoError> {
    Err(crate::error::LogtoError::Config(
        "session_store = \"redis\" needs the `redis` feature".into(),
    ))
}

/// Writes a changed session (a refresh) to Redis in place. `TooLarge` (and nothing
/// written) when it would not read back: the caller leaves something out and tries again.
pub(crate) async fn save(
    state: &LogtoState,
    stored: &Stored,
    s: &Session,
) -> Result<(), session::TooLarge> {
    #[cfg(feature = "redis")]
    if let Some(redis) = state.sessions.redis_store() {
        match redis
            .save_session(
                &stored.hash,
                Arc::new(s.clone()),
                stored.user_agent.clone(),
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(SaveError::TooLarge(bytes)) => return Err(session::TooLarge(bytes)),
            Err(SaveError::Down) => log::warn!(
                "logto: a changed session could not be written to Redis; the next request reads the previous version"
            ),
        }
        return Ok(());
    }
    let _ = (state, stored, s);
    Ok(())
}

/// Removes the session id cookie the request carries, if any, and deletes its session from
/// Redis when it can (a sign-out whose session could not be loaded).
pub(crate) async fn forget(state: &LogtoState, jar: &CookieJar<'_>) {
    if !has_sid(jar, state) {
        return;
    }
    #[cfg(feature = "redis")]
    if let (Some(redis), Some(id)) = (
        state.sessions.redis(),
        jar.get_private(CookieNames::of(&state.config).sid),
    ) {
        let _ = redis.delete_session(&redis.session_hash(id.value())).await;
    }
    forget_sid(jar, state);
}

/// Deletes a stored session (a sign-out) and removes its cookie.
pub(crate) async fn delete(state: &LogtoState, jar: &CookieJar<'_>, stored: &Stored) {
    forget_sid(jar, state);
    #[cfg(feature = "redis")]
    if let Some(redis) = state.sessions.redis() {
        if redis.delete_session(&stored.hash).await.is_err() {
            log::warn!(
                "logto: a signed-out session could not be deleted from Redis now; it stays refused through the list of ended sessions"
            );
        }
        return;
    }
    let _ = stored;
}
