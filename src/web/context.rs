//! Per-request state: the session read once from the cookies, and what the guards need
//! to refresh tokens and write them back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use rocket::http::{Cookie, CookieJar};
use rocket::request::Request;
use tokio::sync::Mutex;

use crate::claims::IdTokenClaims;
use crate::config::SessionStoreKind;
use crate::error::LogtoError;
use crate::session::{self, CookieNames, LoadError, Session};
use crate::tokens::logout::SessionCheck;
use crate::util::log_limit::{limited, LogLimit};
use crate::util::telemetry::{self, SessionRefusal};
use crate::web::fairing::rocket_cookie_key;
use crate::web::redis_session::{self, Stored};
use crate::web::session_cookies;
use crate::web::state::LogtoState;

/// Why a session ended by a sign-out or a logout is refused (also told apart in metrics).
const ENDED: &str = "ended by a sign-out or a logout";
/// The log lines of refused session cookies.
static COOKIE_REFUSED: LogLimit = LogLimit::new("session_refused");

/// The session of this request, read from the cookies once (`Request::local_cache`).
pub(crate) struct RequestSession {
    /// Shared with the decoded-session cache; copied only when a guard changes it.
    pub session: Mutex<Option<Arc<Session>>>,
    /// Claims of the session as loaded: reading them needs no lock.
    claims: Option<Arc<IdTokenClaims>>,
    /// Set when the session ended during this request (refresh token refused, sign-out):
    /// a guard of a later, ranked route must then see nobody signed in.
    ended: AtomicBool,
    /// The session cookies as this request last set them, once it wrote or removed any.
    /// Rocket drops a request's cookie changes when a catcher answers, so the response
    /// fairing puts these back: a rotated refresh token must reach the browser whatever
    /// the status.
    written: SyncMutex<Option<Vec<SessionCookie>>>,
    /// With the Redis session store: which stored session this is.
    pub stored: Option<Stored>,
    /// The session could not be read now (Redis unreachable): 503, the cookie kept.
    pub unavailable: bool,
}

/// One session cookie as a request left it.
#[derive(Clone)]
pub(crate) enum SessionCookie {
    /// Set to this value (plaintext: Rocket encrypts private cookies on the way out).
    Set(Cookie<'static>),
    /// Set to this value, sealed by the crate (`session::store` with the cipher).
    Sealed(Cookie<'static>),
    /// Removed (the browser sent it).
    Removed(&'static str),
}

impl RequestSession {
    /// The session of `request`, loading it on first use: from the cookies, or with
    /// `session_store = "redis"` from this instance's cache or Redis (see `session_store`).
    pub async fn of<'r>(request: &'r Request<'_>, state: &LogtoState) -> &'r RequestSession {
        request
            .local_cache(SessionSlot::default)
            .0
            .get_or_init(|| async {
                state
                    .decoded
                    .init_cipher(|| rocket_cookie_key(request.rocket().config()));
                if state.config.session_store == SessionStoreKind::Redis {
                    return redis_session::load(request, state).await;
                }
                let loaded = RequestSession::load(request.cookies(), state);
                if loaded.claims.is_none() && redis_session::has_sid(request.cookies(), state) {
                    return redis_session::move_to_cookies(request, state).await;
                }
                loaded
            })
            .await
    }

    /// The session of `request` if something in it read the session (without reading it).
    pub fn if_read<'r>(request: &'r Request<'_>) -> Option<&'r RequestSession> {
        request.local_cache(SessionSlot::default).0.get()
    }

    fn new(session: Option<Arc<Session>>, claims: Option<Arc<IdTokenClaims>>) -> RequestSession {
        RequestSession::with_store(session, claims, None, false)
    }

    pub(crate) fn with_store(
        session: Option<Arc<Session>>,
        claims: Option<Arc<IdTokenClaims>>,
        stored: Option<Stored>,
        unavailable: bool,
    ) -> RequestSession {
        RequestSession {
            session: Mutex::new(session),
            claims,
            ended: AtomicBool::new(false),
            written: SyncMutex::new(None),
            stored,
            unavailable,
        }
    }

    /// The session and claims as loaded (for a move between stores).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn into_loaded(self) -> Option<(Arc<Session>, Arc<IdTokenClaims>)> {
        Some((self.session.into_inner()?, self.claims?))
    }

    pub(crate) fn load(jar: &CookieJar<'_>, state: &LogtoState) -> RequestSession {
        let config = &state.config;
        let now = crate::util::clock::now();
        let loaded = state
            .decoded
            .get_or_decode(
                CookieNames::of(config),
                |name| jar.get(name).map(|c| c.value()),
                |cipher| session_cookies::read(jar, CookieNames::of(config), cipher),
            )
            .and_then(|(s, claims, legacy)| {
                session::check_lifetimes(&s, config, now)?;
                match state.logouts.check(&claims, s.created_at_ms) {
                    SessionCheck::Live => {}
                    SessionCheck::Ended => return Err(LoadError::Invalid(ENDED)),
                    SessionCheck::Unverifiable => return Err(LoadError::Unverifiable),
                }
                Ok((s, claims, legacy))
            });
        match loaded {
            Ok((mut s, claims, legacy)) => {
                // Rolling inactivity: re-stamp now and then rather than on every request,
                // so most requests write no cookie. A cookie of the earlier format is
                // written again at once, in the current one.
                let restamp_after =
                    (config.session_inactivity.as_secs() as i64 / 10).clamp(60, 3600);
                let restamped = (legacy || now - s.seen_at > restamp_after) && {
                    Arc::make_mut(&mut s).seen_at = now;
                    session_cookies::store(jar, &s, config, state.decoded.cipher()).is_ok()
                };
                let loaded = RequestSession::new(Some(s), Some(claims));
                if restamped {
                    loaded.note_written(jar, state);
                }
                loaded
            }
            Err(e) => {
                let signed_out = RequestSession::new(None, None);
                if let LoadError::Invalid(why) = e {
                    let reason = match why {
                        ENDED => SessionRefusal::Ended,
                        "expired" => SessionRefusal::TooOld,
                        _ => SessionRefusal::Unreadable,
                    };
                    telemetry::session_refused(reason);
                    // Anyone can send a bad cookie: rate-limited.
                    limited!(
                        COOKIE_REFUSED,
                        info,
                        "logto: event=session_refused reason={}: session cookie refused ({why}); treating the request as signed out",
                        reason.label()
                    );
                    session_cookies::clear(jar, config);
                    signed_out.note_written(jar, state);
                }
                signed_out
            }
        }
    }

    /// The signed-in user's claims; `None` when nobody is signed in, or when the session
    /// ended during this request.
    pub fn claims(&self) -> Option<&Arc<IdTokenClaims>> {
        if self.ended.load(Ordering::Acquire) {
            return None;
        }
        self.claims.as_ref()
    }

    /// Ends the session: no state left in this request, every session cookie removed
    /// (and with the Redis session store, the stored session deleted).
    pub async fn sign_out(
        &self,
        current: &mut Option<Arc<Session>>,
        jar: &CookieJar<'_>,
        state: &LogtoState,
    ) {
        let config = &state.config;
        *current = None;
        self.ended.store(true, Ordering::Release);
        session_cookies::clear(jar, config);
        match &self.stored {
            Some(stored) => redis_session::delete(state, jar, stored).await,
            // Not loaded (Redis unreachable, or refused): its id cookie goes all the same.
            None => redis_session::forget(state, jar).await,
        }
        self.note_written(jar, state);
    }

    /// Stores `session` after a change (a refresh): in the cookies, or in Redis in place.
    pub async fn save(
        &self,
        jar: &CookieJar<'_>,
        session: &Session,
        state: &LogtoState,
    ) -> Result<(), session::TooLarge> {
        if let Some(stored) = &self.stored {
            return redis_session::save(state, stored, session).await;
        }
        session_cookies::store(jar, session, &state.config, state.decoded.cipher())?;
        self.note_written(jar, state);
        Ok(())
    }

    /// Records the session cookies as `jar` now has them, after a write or a removal.
    ///
    /// Session chunks were sealed by the crate when the cipher is known: this request read
    /// the session first (`RequestSession::of`, which reads the cipher before anything
    /// else), so the cipher `session::store` used is the one seen here.
    pub fn note_written(&self, jar: &CookieJar<'_>, state: &LogtoState) {
        let names = CookieNames::of(&state.config);
        let sealed = state.decoded.cipher().is_some();
        let chunks = names.chunks.iter().map(|name| (name, sealed));
        let cookies = chunks
            .chain(std::iter::once((&names.sid, false)))
            .filter_map(|(&name, sealed)| match jar.get_pending(name) {
                Some(cookie) if sealed => Some(SessionCookie::Sealed(cookie)),
                Some(cookie) => Some(SessionCookie::Set(cookie)),
                None => jar.get(name).map(|_| SessionCookie::Removed(name)),
            })
            .collect();
        *self.written.lock().expect("written lock") = Some(cookies);
    }

    /// The session cookies this request set or removed, if it changed any.
    pub fn written(&self) -> Option<Vec<SessionCookie>> {
        self.written.lock().expect("written lock").clone()
    }
}

/// The session of this request, once a guard read it: one `local_cache` slot serves both
/// the guards and the response fairing's question whether any guard looked.
#[derive(Default)]
struct SessionSlot(tokio::sync::OnceCell<RequestSession>);

/// A guard's failure, kept for the crate's catchers: Rocket hands a failing guard's
/// request to a catcher, which knows only the status. The catcher for that status shows
/// this error's message (or, for 401, redirects a browser to sign-in).
#[derive(Default)]
pub(crate) struct GuardFailure(SyncMutex<Option<LogtoError>>);

pub(crate) fn record_failure(request: &Request<'_>, error: &LogtoError) {
    let slot = request.local_cache(GuardFailure::default);
    *slot.0.lock().expect("guard failure lock") = Some(error.clone());
}

/// The failure a crate guard recorded in this request, if any.
pub(crate) fn recorded_failure(request: &Request<'_>) -> Option<LogtoError> {
    request
        .local_cache(GuardFailure::default)
        .0
        .lock()
        .expect("guard failure lock")
        .clone()
}

/// What methods of [`crate::AuthenticatedUser`] need after the guard ran.
#[derive(Clone, Copy)]
pub(crate) struct RequestContext<'r> {
    pub state: &'r LogtoState,
    pub session: &'r RequestSession,
    pub jar: &'r CookieJar<'r>,
}
