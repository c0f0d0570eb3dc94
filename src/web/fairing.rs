//! The `Logto` fairing: reads the configuration at ignition, builds the shared state,
//! mounts the auth routes, and makes sure the session cookies a request changed reach the
//! browser whatever answers it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Cookie;
use rocket::request::Request;
use rocket::response::Response;
use rocket::{Build, Catcher, Orbit, Rocket};

use crate::config::{LogtoConfig, LogtoEnv, LOGTO_ENV_NAME};
use crate::error::LogtoError;
use crate::oidc::provider::Provider;
use crate::session::cache::DecodedSessions;
use crate::store::{Ended, Store};
use crate::tokens::logout::Logouts;
use crate::tokens::refresh::RefreshCoordinator;
use crate::web::context::{RequestSession, SessionCookie};
use crate::web::hooks::{ErrorPage, SignInFuture, SignInHook, SignedIn};
use crate::web::sessions_admin::Sessions;
use crate::web::state::LogtoState;
use crate::web::transaction::SpentStates;
use crate::web::user_tokens::DecodedTokens;

/// How long the refresh coordinator remembers a refresh token's outcome: long enough for
/// requests sent with a rotated-out cookie to arrive, short enough to stay small.
const REFRESH_MEMORY: Duration = Duration::from_secs(120);

/// The fairing. Attach it once: `rocket::build().attach(Logto::fairing())`.
#[derive(Default)]
pub struct Logto {
    on_sign_in: Option<SignInHook>,
    error_page: Option<ErrorPage>,
    /// The API guards trust the `testing` feature's key (debug builds only).
    #[cfg(any(feature = "testing", doc))]
    trust_test_key: bool,
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
    #[must_use = "a fairing does nothing until it is attached: `rocket.attach(Logto::fairing())`"]
    pub fn fairing() -> Logto {
        Logto::default()
    }

    /// Runs `hook` after every successful sign-in, once the ID token is verified and before
    /// the session starts: to create or update the app's own user record, to refuse the
    /// user, or to choose where the browser lands.
    ///
    /// The hook gets [`SignedIn`] and the callback's request, so it reaches what a handler
    /// reaches: managed state (`request.rocket().state::<T>()`), a `rocket_db_pools`
    /// database (`Db::fetch(request.rocket())`), any request guard (`request.guard::<G>()`).
    /// It returns a boxed future that may borrow the request (`Box::pin(async move {..})`,
    /// as Rocket's [`AdHoc`](rocket::fairing::AdHoc) fairings do), with:
    ///
    /// - `Ok(`[`SignInDecision::Continue`](crate::SignInDecision::Continue)`)`: go on to the return path;
    /// - `Ok(`[`SignInDecision::RedirectTo`](crate::SignInDecision::RedirectTo)`)`: land there instead;
    /// - `Err(`[`SignInRefusal`](crate::SignInRefusal)`)`: the user gets 403 with your
    ///   message, no session starts and the refresh token is revoked. The browser is never
    ///   sent back to sign-in, so a refusal cannot loop.
    ///
    /// One hook per fairing: setting another replaces the first, with a warning in the log.
    ///
    /// ```
    /// use rocket_logto::{Logto, SignInDecision, SignInRefusal, SignedIn};
    ///
    /// /// The app's own record of who signed in, in managed state.
    /// #[derive(Default)]
    /// struct Visits(std::sync::atomic::AtomicU64);
    ///
    /// let fairing = Logto::fairing().on_sign_in(|user: SignedIn, request| {
    ///     Box::pin(async move {
    ///         if user.claims.email_verified == Some(false) {
    ///             return Err(SignInRefusal::new("Verify your email address first."));
    ///         }
    ///         if let Some(visits) = request.rocket().state::<Visits>() {
    ///             visits.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         }
    ///         Ok(SignInDecision::Continue)
    ///     })
    /// });
    /// let rocket = rocket::build().manage(Visits::default()).attach(fairing);
    /// ```
    #[must_use = "the builder returns the fairing with the hook: attach the returned value"]
    pub fn on_sign_in<F>(mut self, hook: F) -> Logto
    where
        F: for<'r> Fn(SignedIn, &'r Request<'_>) -> SignInFuture<'r> + Send + Sync + 'static,
    {
        if self.on_sign_in.is_some() {
            log::warn!(
                "logto: `on_sign_in` was set twice on one fairing; the second hook replaces the first"
            );
        }
        self.on_sign_in = Some(Arc::new(hook));
        self
    }

    /// Renders the crate's error pages with the app's own responder, e.g. a template: the
    /// pages of the crate's catchers ([`Logto::catchers`]), of its routes (a failed
    /// sign-in) and of a [`LogtoError`] a handler returns. Returning `Err` falls back to
    /// the built-in page. The status and the `Cache-Control`, `Referrer-Policy` and
    /// `Retry-After` headers stay the error's; clients that ask for JSON get the JSON body;
    /// a browser that is not signed in is redirected to sign-in rather than shown a page.
    ///
    /// It never touches the answers of the app's own catchers or handlers.
    ///
    /// ```
    /// use rocket::response::{content::RawHtml, Responder};
    /// use rocket_logto::Logto;
    ///
    /// let fairing = Logto::fairing().error_page(|error, request| {
    ///     RawHtml(format!("<h1>Oops</h1><p>{}</p>", rocket::http::RawStr::new(error.message()).html_escape()))
    ///         .respond_to(request)
    /// });
    /// ```
    #[must_use = "the builder returns the fairing with the error page: attach the returned value"]
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

    /// The crate's catchers, for the app to register: 400, 401, 403, 500, 502 and 503.
    ///
    /// - **401**: a browser's `GET` (it accepts HTML and does not prefer JSON) is redirected
    ///   (303) to `<base path>/<routes_prefix>/sign-in?return_to=<this page>`; other clients
    ///   get 401 with the error as JSON or HTML. When a crate guard failed with
    ///   [`LogtoError::SignInAgain`], the page says why and links to sign-in instead.
    /// - **the others**: the [`LogtoError`] a crate guard failed with in this request, when
    ///   it has the catcher's status; otherwise a generic page for the status. HTML or JSON
    ///   by `Accept`, with `Retry-After` when Logto sent one, rendered by
    ///   [`error_page`](Logto::error_page) when set.
    ///
    /// Without them, Rocket's default catchers (or the app's) answer: a signed-out browser
    /// on a route that needs a signed-in user then gets a plain 401 page, not the redirect.
    /// Register the ones you want, under the base your routes use; a catcher of the app for
    /// the same status and base collides with the crate's, so leave that status out:
    ///
    /// ```no_run
    /// use rocket::{catch, catchers, launch};
    /// use rocket_logto::Logto;
    ///
    /// #[catch(403)]
    /// fn forbidden() -> &'static str {
    ///     "Not for you."
    /// }
    ///
    /// #[launch]
    /// fn rocket() -> _ {
    ///     let logto_catchers = Logto::catchers().into_iter().filter(|c| c.code != Some(403));
    ///     rocket::build()
    ///         .attach(Logto::fairing())
    ///         .register("/", logto_catchers.collect::<Vec<_>>())
    ///         .register("/", catchers![forbidden])
    /// }
    /// ```
    pub fn catchers() -> Vec<Catcher> {
        crate::web::catchers::catchers()
    }

    /// Liveness and readiness routes for load balancers and Kubernetes probes, for the app
    /// to mount where it likes (opt-in: nothing is mounted by the fairing):
    ///
    /// - **`GET <base>/live`**: 200 `{"status":"live"}` whenever the process serves.
    /// - **`GET <base>/ready`**: 200 when Logto's discovery document and signing keys are
    ///   loaded and fresh (refreshed within two hours), and, with `redis_url`, Redis answers a
    ///   `PING` and the pub/sub subscription is up; else 503. The JSON body names each check
    ///   and its state, e.g.
    ///   `{"status":"not_ready","checks":{"discovery":"ok","jwks":"ok","redis":"down","redis_subscription":"down"}}`.
    ///   States: `ok`; discovery `stale`, `unreachable` or `loading`; jwks `empty` or
    ///   `not_loaded`; redis and redis_subscription `down`. A probe waits at most half a
    ///   second for a discovery fetch (and Redis for its `timeout_ms`).
    ///
    /// Both answer `Cache-Control: no-store` and nothing secret.
    ///
    /// ```no_run
    /// use rocket::launch;
    /// use rocket_logto::Logto;
    ///
    /// #[launch]
    /// fn rocket() -> _ {
    ///     rocket::build()
    ///         .attach(Logto::fairing())
    ///         .mount("/health", Logto::health_routes()) // /health/live, /health/ready
    /// }
    /// ```
    pub fn health_routes() -> Vec<rocket::Route> {
        crate::web::health::routes()
    }

    /// **Test mode**: the API guards ([`BearerToken`](crate::BearerToken) and the
    /// organization guards) trust the `testing` feature's key instead of Logto's, so that an
    /// app's route tests can send tokens made with
    /// [`TestToken`](crate::testing::TestToken), without Logto.
    ///
    /// Only in debug builds: a release build with it stops at launch with an error. No
    /// configuration key switches it on. See [why this is safe](crate::testing#why-this-is-safe-to-ship).
    /// Needs the cargo feature `testing`.
    ///
    /// "Debug build" means one with `debug_assertions`, and a release profile can turn them
    /// on (`debug-assertions = true` in `[profile.release]`): such a build launches in test
    /// mode. So whenever the test key is trusted, the launch logs a warning (`logto: TEST
    /// MODE: ...`, at `warn`) that a production log must never show; and keep the `testing`
    /// feature in `[dev-dependencies]`, where no production build carries this method.
    ///
    /// ```
    /// use rocket_logto::Logto;
    ///
    /// // In a test of the app:
    /// let rocket = rocket::custom(rocket_logto::testing::figment())
    ///     .attach(Logto::fairing().trust_test_key());
    /// ```
    #[cfg(any(feature = "testing", doc))]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    #[must_use = "the builder returns the fairing in test mode: attach the returned value"]
    pub fn trust_test_key(mut self) -> Logto {
        self.trust_test_key = true;
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
            kind: Kind::Ignite | Kind::Liftoff | Kind::Response | Kind::Singleton,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        crate::util::telemetry::describe();
        let config = match LogtoConfig::from_figment(&config_figment(rocket.figment())) {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e}");
                return Err(rocket);
            }
        };
        let provider = match Provider::new(&config) {
            Ok(provider) => Arc::new(provider),
            Err(e) => {
                log::error!("logto: {e}");
                return Err(rocket);
            }
        };
        #[cfg(any(feature = "testing", doc))]
        let test_keys = match self.trust_test_key {
            false => None,
            true => match crate::testing::test_mode_refusal(crate::testing::debug_build()) {
                Some(why) => {
                    log::error!("logto: {why}");
                    return Err(rocket);
                }
                None => {
                    // Also in a release profile that turned `debug_assertions` on, which
                    // the gate above lets through: the log is what tells an operator.
                    log::warn!(
                        "logto: TEST MODE: the API guards trust the `testing` feature's test key, not \
                         Logto's keys (`Logto::fairing().trust_test_key()`, allowed because this build \
                         has debug_assertions); anyone can make tokens this app accepts, so this must \
                         never run in production"
                    );
                    Some(crate::testing::test_jwks())
                }
            },
        };
        #[cfg(not(any(feature = "testing", doc)))]
        let test_keys = None;
        let api = crate::web::bearer::ApiState::new(config.bearer_cache_entries, test_keys);
        if config.is_api_only() {
            log::info!(
                "logto: endpoint {}, an API only (no app_id): no sign-in routes; API resources {:?}",
                config.endpoint,
                config.resources
            );
        } else {
            log::info!(
                "logto: endpoint {}, app {}, redirect URI {} (register it in Logto)",
                config.endpoint,
                config.app_id,
                config.redirect_uri()
            );
        }
        // Rocket serves the app under the path of `base_url` (a proxy forwards `/app/...`
        // unchanged), so the auth routes live there too.
        let base = config.routes_base();
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
        let session_store = config.session_store;
        if session_store == crate::config::SessionStoreKind::Redis {
            log::info!("logto: sessions are kept in Redis (session_store = \"redis\")");
        }
        let sessions = Sessions::new(session_store, store.clone(), ended.clone());
        let app_tokens = crate::web::app_tokens::AppTokens::new(
            crate::tokens::client_credentials::ClientCredentials::new(
                provider.clone(),
                store.clone(),
                config.m2m.clone(),
                config.token_refresh_margin.as_secs(),
            ),
            &config.management_api_resource,
        );
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
            logouts: Logouts::new(ended, store.clone(), spent_entries),
            store,
            sessions: sessions.clone(),
            decoded: DecodedSessions::new(session_cache_entries),
            decoded_tokens: DecodedTokens::new(session_cache_entries),
            on_sign_in: self.on_sign_in.clone(),
            error_page: self.error_page.clone(),
            cookie_key: OnceLock::new(),
        };
        let api_only = state.config.is_api_only();
        let rocket = rocket
            .manage(state)
            .manage(api)
            .manage(sessions)
            .manage(app_tokens);
        if api_only {
            return Ok(rocket);
        }
        Ok(rocket.mount(base, crate::web::routes::routes()))
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        // Before the first request, so that a sign-in seals its session as guards do.
        if let Some(state) = rocket.state::<LogtoState>() {
            state
                .decoded
                .init_cipher(|| rocket_cookie_key(rocket.config()));
        }
        let covered = rocket
            .catchers()
            .any(|c| c.code.is_none() || c.code == Some(401));
        let api_only = rocket
            .state::<LogtoState>()
            .is_some_and(|s| s.config.is_api_only());
        if !covered && api_only {
            log::warn!(
                "logto: no catcher for 401 is registered, so the API guards' refusals get Rocket's plain 401 page, without RFC 6750's WWW-Authenticate; register the crate's with `.register(\"/\", Logto::catchers())`"
            );
        } else if !covered {
            log::warn!(
                "logto: no catcher for 401 is registered, so a signed-out browser on a route that needs a signed-in user gets Rocket's plain 401 page; register the crate's with `.register(\"/\", Logto::catchers())` to send it to sign-in"
            );
        }
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        // Only look when a guard loaded the session in this request: other answers (a
        // plain route, a 404) cost no session lookup.
        let Some(session) = RequestSession::if_read(request) else {
            return;
        };
        let Some(state) = request.rocket().state::<LogtoState>() else {
            return;
        };
        // A page made from the session is the user's own: no shared cache may keep it, and
        // the browser must not show a stale copy (signed out, or another user's) on Back.
        if !response.headers().contains("Cache-Control") {
            response.set_raw_header("Cache-Control", "private, no-store");
        }
        restore_session_cookies(request, response, state, session);
    }
}

/// The figment the `logto` table is read from: Rocket's, with [`LogtoEnv`] on top when it is
/// Rocket's default figment (`rocket::build()`), so that the `LOGTO_*` variables work there
/// with nothing to write. A figment of the app's own (`rocket::custom`, the `testing`
/// helpers) is read as it is, as Rocket and its other extensions read theirs.
fn config_figment(figment: &Figment) -> Figment {
    let has_env = figment.metadata().any(|m| m.name == LOGTO_ENV_NAME);
    let set = LogtoEnv::new().set_names();
    if !has_env && is_rockets_default(figment) {
        if !set.is_empty() {
            log::info!("logto: {} read from the environment", set.join(", "));
        }
        return figment.clone().merge(LogtoEnv::new());
    }
    if !has_env && !set.is_empty() {
        // The names only, never a value. Said once at launch: a developer who exported
        // them expects them to count.
        log::warn!(
            "logto: {} set in the environment but not read: this Rocket runs on a figment of its own \
             (rocket::custom), which gets the LOGTO_* variables only by merging rocket_logto::LogtoEnv",
            set.join(", ")
        );
    }
    figment.clone()
}

/// Whether `figment` is made of exactly the providers of Rocket's default figment
/// ([`rocket::Config::figment`], what `rocket::build()` runs on): the same sources, in the
/// same order, and nothing merged since. Rocket has no marker for its default figment, and
/// comparing the providers' names and sources is what tells it from one an app assembled.
fn is_rockets_default(figment: &Figment) -> bool {
    let sources = |f: &Figment| {
        f.metadata()
            .map(|m| {
                (
                    m.name.to_string(),
                    m.source.as_ref().map(ToString::to_string),
                )
            })
            .collect::<Vec<_>>()
    };
    // Wrapped as `rocket::custom` wraps the provider it is given.
    sources(figment) == sources(&Figment::from(rocket::Config::figment()))
}

/// Puts back the session cookies this request set or removed when the response lacks
/// them. Rocket drops a request's cookie changes when a catcher answers (a guard failed
/// after refreshing, say), and a rotated refresh token that never reaches the browser is
/// later sent again, which makes Logto revoke the grant.
fn restore_session_cookies(
    request: &Request<'_>,
    response: &mut Response<'_>,
    state: &LogtoState,
    session: &RequestSession,
) {
    let Some(written) = session.written() else {
        return;
    };
    let sent: Vec<String> = response
        .headers()
        .get("Set-Cookie")
        .filter_map(|line| {
            line.split_once('=')
                .map(|(name, _)| name.trim().to_string())
        })
        .collect();
    for cookie in written {
        let name = match &cookie {
            SessionCookie::Set(c) | SessionCookie::Sealed(c) => c.name(),
            SessionCookie::Removed(name) => name,
        };
        if sent.iter().any(|s| s == name) {
            continue;
        }
        match cookie {
            SessionCookie::Set(plain) => match encrypt(request, state, plain) {
                Some(sealed) => response.adjoin_header(sealed),
                None => log::warn!(
                    "logto: the session cookies changed in this request could not be put back into its error answer"
                ),
            },
            SessionCookie::Sealed(sealed) => response.adjoin_header(sealed),
            SessionCookie::Removed(name) => {
                let mut removal = Cookie::build(name)
                    .path("/")
                    .secure(state.config.secure_cookies())
                    .build();
                removal.make_removal();
                response.adjoin_header(removal);
            }
        }
    }
}

/// `cookie` as Rocket sends a private cookie: its value encrypted and authenticated under
/// the app's `secret_key`, with the name as associated data.
fn encrypt(
    request: &Request<'_>,
    state: &LogtoState,
    cookie: Cookie<'static>,
) -> Option<Cookie<'static>> {
    let key = state
        .cookie_key
        .get_or_init(|| rocket_cookie_key(request.rocket().config()))
        .as_ref()?;
    let name = cookie.name().to_string();
    let mut jar = cookie::CookieJar::new();
    jar.private_mut(key).add(cookie);
    jar.get(&name).cloned()
}

/// The key of Rocket's private cookies. The launched configuration carries it, generated
/// or configured, as a figment provider (Rocket's own way to hand it on).
pub(crate) fn rocket_cookie_key(config: &rocket::Config) -> Option<cookie::Key> {
    let master: Vec<u8> = rocket::figment::Figment::from(config)
        .extract_inner("secret_key")
        .ok()?;
    cookie::Key::try_from(master.as_slice()).ok()
}
