//! Per-request state: the session read once from the cookies, and what the guards need
//! to refresh tokens and write them back.

use std::sync::{Arc, Mutex as SyncMutex};

use rocket::http::CookieJar;
use rocket::request::Request;
use tokio::sync::Mutex;

use crate::claims::IdTokenClaims;
use crate::error::LogtoError;
use crate::fairing::LogtoState;
use crate::provider::decode_jwt_payload;
use crate::session::{self, LoadError, Session};

/// The session of this request, read from the cookies once (`Request::local_cache`).
pub(crate) struct RequestSession {
    pub session: Mutex<Option<Session>>,
    /// Claims of the session as loaded: reading them needs no lock.
    pub claims: Option<Arc<IdTokenClaims>>,
    /// Session cookie names this request asked the browser to delete.
    pub cleared: SyncMutex<Vec<String>>,
}

impl RequestSession {
    /// The session of `request`, loading it on first use.
    pub fn of<'r>(request: &'r Request<'_>, state: &LogtoState) -> &'r RequestSession {
        request.local_cache(|| {
            request
                .local_cache(SessionRead::default)
                .0
                .store(true, std::sync::atomic::Ordering::Relaxed);
            RequestSession::load(request.cookies(), state)
        })
    }

    /// Whether something in this request read the session (without reading it).
    pub fn was_read(request: &Request<'_>) -> bool {
        request
            .local_cache(SessionRead::default)
            .0
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn load(jar: &CookieJar<'_>, state: &LogtoState) -> RequestSession {
        let config = &state.config;
        let loaded = session::load(jar, config).and_then(|s| {
            let claims: IdTokenClaims = decode_jwt_payload(&s.id_token)
                .map_err(|_| LoadError::Invalid("unreadable ID token"))?;
            if state.logouts.ended(&claims, s.created_at_ms) {
                return Err(LoadError::Invalid("ended by a back-channel logout"));
            }
            Ok((s, claims))
        });
        match loaded {
            Ok((mut s, claims)) => {
                // Rolling inactivity: re-stamp now and then rather than on every request,
                // so most requests write no cookie.
                let now = session::now();
                let restamp_after =
                    (config.session_inactivity.as_secs() as i64 / 10).clamp(60, 3600);
                if now - s.seen_at > restamp_after {
                    s.seen_at = now;
                    let _ = session::store(jar, &s, config);
                }
                RequestSession {
                    session: Mutex::new(Some(s)),
                    claims: Some(Arc::new(claims)),
                    cleared: SyncMutex::new(Vec::new()),
                }
            }
            Err(e) => {
                let cleared = session::present_session_cookies(jar);
                if let LoadError::Invalid(why) = e {
                    log::info!(
                        "logto: session cookie refused ({why}); treating the request as signed out"
                    );
                    session::clear(jar);
                }
                RequestSession {
                    session: Mutex::new(None),
                    claims: None,
                    cleared: SyncMutex::new(cleared),
                }
            }
        }
    }

    /// Ends the session: no state left in this request, every session cookie removed.
    pub fn sign_out(&self, current: &mut Option<Session>, jar: &CookieJar<'_>) {
        *current = None;
        self.cleared
            .lock()
            .expect("cleared lock")
            .extend(session::present_session_cookies(jar));
        session::clear(jar);
    }
}

/// Set once a guard read the session of this request.
#[derive(Default)]
struct SessionRead(std::sync::atomic::AtomicBool);

/// A guard's failure, kept for the response fairing: Rocket hands a failing guard's
/// request to a catcher, which knows only the status. The fairing turns it into the
/// right page (or a redirect to sign-in).
#[derive(Default)]
pub(crate) struct GuardFailure(pub SyncMutex<Option<LogtoError>>);

pub(crate) fn record_failure(request: &Request<'_>, error: &LogtoError) {
    let slot = request.local_cache(GuardFailure::default);
    *slot.0.lock().expect("guard failure lock") = Some(error.clone());
}

/// What methods of [`crate::AuthenticatedUser`] need after the guard ran.
#[derive(Clone, Copy)]
pub(crate) struct RequestContext<'r> {
    pub state: &'r LogtoState,
    pub session: &'r RequestSession,
    pub jar: &'r CookieJar<'r>,
}
