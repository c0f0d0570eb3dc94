//! The `Logto` fairing: reads the configuration at ignition, builds the shared state,
//! mounts the auth routes, and turns guard failures into the right response.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{Cookie, Method, Status};
use rocket::request::Request;
use rocket::response::Response;
use rocket::{Build, Rocket};

use crate::config::LogtoConfig;
use crate::context::{DecodedSessions, GuardFailure, RequestSession};
use crate::error::{wants_html, wants_json, LogtoError};
use crate::hooks::{ErrorPage, SignInDecision, SignInHook, SignedIn};
use crate::logout::Logouts;
use crate::provider::Provider;
use crate::refresh::RefreshCoordinator;
use crate::store::{Ended, Store};
use crate::tokens::DecodedTokens;
use crate::transaction::SpentStates;

/// How long the refresh coordinator remembers a refresh token's outcome: long enough for
/// requests sent with a rotated-out cookie to arrive, short enough to stay small.
const REFRESH_MEMORY: Duration = Duration::from_secs(120);

/// What the fairing shares with the routes and guards.
pub(crate) struct LogtoState {
    pub config: LogtoConfig,
    pub provider: Provider,
    pub refresh: RefreshCoordinator,
    pub spent: SpentStates,
    pub logouts: Logouts,
    pub decoded: DecodedSessions,
    pub decoded_tokens: DecodedTokens,
    pub on_sign_in: Option<SignInHook>,
    pub error_page: Option<ErrorPage>,
}

/// The fairing. Attach it once: `rocket::build().attach(Logto::fairing())`.
#[derive(Default)]
pub struct Logto {
    on_sign_in: Option<SignInHook>,
    error_page: Option<ErrorPage>,
}

impl std::fmt::Debug for Logto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logto")
            .field("on_sign_in", &self.on_sign_in.is_some())
            .field("error_page", &self.error_page.is_some())
            .finish()
    }
}

impl Logto {
    /// The fairing that reads `[default.logto]` and mounts the auth routes.
    pub fn fairing() -> Logto {
        Logto::default()
    }

    /// Runs `hook` after every successful sign-in, before the session is created: to
    /// create the app's own user record, to refuse the user (return `Err`: the page shows
    /// your error, no session starts and the refresh token is revoked), or to choose
    /// where the browser lands ([`SignInDecision::RedirectTo`](crate::SignInDecision::RedirectTo)).
    ///
    /// ```
    /// use rocket_logto::{Logto, LogtoError, SignInDecision, SignedIn};
    ///
    /// let fairing = Logto::fairing().on_sign_in(|user: SignedIn| async move {
    ///     if user.claims.email_verified == Some(false) {
    ///         return Err(LogtoError::Forbidden("Verify your email address first.".into()));
    ///     }
    ///     Ok(SignInDecision::Continue)
    /// });
    /// ```
    pub fn on_sign_in<F, Fut>(mut self, hook: F) -> Logto
    where
        F: Fn(SignedIn) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<SignInDecision, LogtoError>> + Send + 'static,
    {
        self.on_sign_in = Some(crate::hooks::sign_in_hook(hook));
        self
    }

    /// Renders the library's error pages (failed sign-in, 401/403/502/503 of the guards)
    /// with the app's own responder, e.g. a template. Returning `Err` falls back to the
    /// built-in page. The status is always the error's.
    ///
    /// ```
    /// use rocket::response::{content::RawHtml, Responder};
    /// use rocket_logto::Logto;
    ///
    /// let fairing = Logto::fairing().error_page(|error, request| {
    ///     RawHtml(format!("<h1>Oops</h1><p>{}</p>", rocket_logto::html_escape(error.message())))
    ///         .respond_to(request)
    /// });
    /// ```
    pub fn error_page<F>(mut self, render: F) -> Logto
    where
        F: for<'r> Fn(&LogtoError, &'r Request<'_>) -> rocket::response::Result<'static>
            + Send
            + Sync
            + 'static,
    {
        self.error_page = Some(std::sync::Arc::new(render));
        self
    }

    /// The configuration the fairing loaded, once Rocket has ignited.
    pub fn config<P: rocket::Phase>(rocket: &Rocket<P>) -> Option<&LogtoConfig> {
        rocket.state::<LogtoState>().map(|s| &s.config)
    }
}

#[rocket::async_trait]
impl Fairing for Logto {
    fn info(&self) -> Info {
        Info {
            name: "Logto",
            kind: Kind::Ignite | Kind::Response | Kind::Singleton,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        let config = match LogtoConfig::from_figment(rocket.figment()) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return Err(rocket);
            }
        };
        let provider = match Provider::new(&config) {
            Ok(provider) => provider,
            Err(e) => {
                log::error!("logto: {e}");
                return Err(rocket);
            }
        };
        log::info!(
            "logto: endpoint {}, app {}, redirect URI {} (register it in Logto)",
            config.endpoint,
            config.app_id,
            config.redirect_uri()
        );
        let base = format!("/{}", config.routes_prefix);
        let (refresh_entries, spent_entries) =
            (config.refresh_cache_entries, config.spent_state_entries);
        let session_lifetime = config.session_lifetime;
        let rotation_grace = config.rotation_grace;
        let session_cache_entries = config.session_cache_entries;
        // Where refreshes and ended sessions are shared: in process, or Redis.
        let ended = Arc::new(Ended::new(session_lifetime, spent_entries));
        let store = match Store::start(&config, rocket.figment(), ended.clone()).await {
            Ok(store) => store,
            Err(e) => {
                log::error!("{e}");
                return Err(rocket);
            }
        };
        log::info!("logto: refreshes and sign-outs {}", store.describe());
        let state = LogtoState {
            config,
            provider,
            refresh: RefreshCoordinator::with_store(
                REFRESH_MEMORY,
                refresh_entries,
                rotation_grace,
                session_lifetime,
                store.clone(),
            ),
            spent: SpentStates::new(spent_entries),
            logouts: Logouts::new(ended, store, spent_entries),
            decoded: DecodedSessions::new(session_cache_entries),
            decoded_tokens: DecodedTokens::new(session_cache_entries),
            on_sign_in: self.on_sign_in.clone(),
            error_page: self.error_page.clone(),
        };
        Ok(rocket.manage(state).mount(base, crate::routes::routes()))
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        let Some(state) = request.rocket().state::<LogtoState>() else {
            return;
        };
        let failure = request
            .local_cache(GuardFailure::default)
            .0
            .lock()
            .expect("guard failure lock")
            .take();
        if let Some(error) = failure.filter(|e| e.status() == response.status()) {
            let replacement = if error == LogtoError::Unauthenticated
                && request.method() == Method::Get
                && wants_html(request)
                && !wants_json(request)
            {
                sign_in_redirect(request, &state.config)
            } else {
                crate::error::render_for(&error, request)
            };
            response.merge(replacement);
        }
        // A page made from the session is the user's own: no shared cache may keep it, and
        // the browser must not show a stale copy (signed out, or another user's) on Back.
        if RequestSession::was_read(request) && !response.headers().contains("Cache-Control") {
            response.set_raw_header("Cache-Control", "private, no-store");
        }
        // An error answer loses the cookie changes a guard made (Rocket only keeps the
        // catcher's), so removals of a broken or ended session are re-added here.
        if response.status().code >= 400 {
            if let Some(cleared) = cleared_cookies(request, state) {
                let existing: Vec<String> = response
                    .headers()
                    .get("Set-Cookie")
                    .map(str::to_string)
                    .collect();
                for name in cleared {
                    if !existing.iter().any(|h| h.starts_with(&format!("{name}="))) {
                        let mut removal = Cookie::build(name).path("/").build();
                        removal.make_removal();
                        response.adjoin_header(removal);
                    }
                }
            }
        }
    }
}

fn cleared_cookies(request: &Request<'_>, state: &LogtoState) -> Option<Vec<String>> {
    // Only look if a guard already loaded the session in this request: an error answer
    // elsewhere (a 404, say) must not cost a session lookup.
    if !RequestSession::was_read(request) {
        return None;
    }
    let session = RequestSession::of(request, state);
    let cleared = session.cleared.lock().expect("cleared lock").clone();
    (!cleared.is_empty()).then_some(cleared)
}

/// 303 to sign-in, coming back to this page afterwards.
fn sign_in_redirect(request: &Request<'_>, config: &LogtoConfig) -> Response<'static> {
    let here = request.uri().to_string();
    let mut location = format!("/{}/sign-in", config.routes_prefix);
    if crate::redirect::ReturnPath::parse(&here).is_ok() {
        location.push_str("?return_to=");
        location.extend(url::form_urlencoded::byte_serialize(here.as_bytes()));
    }
    Response::build()
        .status(Status::SeeOther)
        .raw_header("Location", location)
        .raw_header("Cache-Control", "no-store")
        .sized_body(0, std::io::Cursor::new(Vec::new()))
        .finalize()
}
