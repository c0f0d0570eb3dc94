//! The guide's sample app, in Rocket: `cargo run --example sample`.
//!
//! Configured by `Rocket.toml` (`[default.logto]`) and the `LOGTO_*` variables; the
//! README's demo command starts a local Logto-like provider that matches it. Its sign-in
//! hook keeps the app's own users in SQLite (`[default.databases.sample_users]`, a file
//! under `target/`), through `rocket_db_pools`.

use std::collections::BTreeMap;

use rocket::fairing::AdHoc;
use rocket::http::uri::Absolute;
use rocket::http::ContentType;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{Redirect, Responder};
use rocket::serde::json::{json, Json, Value};
use rocket::{get, launch, post, routes, Build, Rocket, State};
use rocket_db_pools::sqlx::{self, Row};
use rocket_db_pools::Database;
use rocket_dyn_templates::{context, Template};
use rocket_logto::{
    AccessToken, AppToken, AuthenticatedUser, FetchedUserInfo, IdTokenClaims, Logto, LogtoError,
    ManagementApi, RecentSignIn, Resource, ResourceToken, SessionStoreKind, Sessions,
    SignInDecision, SignInRefusal, SignedIn, UserInfo,
};

/// This app's own copy of the API of `examples/api`, mounted at `/api`.
#[path = "../api/routes.rs"]
mod api;

/// Where that copy is, as a URL: `<base_url>/api`.
struct ApiBase(String);

/// Sign-in, token, API call: the signed-in user's token for the shopping API
/// (`ResourceToken`), sent as a bearer token to the API, which answers the token's verified
/// claims (or its RFC 6750 refusal).
#[get("/call-api")]
async fn call_api(
    token: ResourceToken<Shopping>,
    api: &State<ApiBase>,
) -> Result<Json<Value>, LogtoError> {
    let response = reqwest::Client::new()
        .get(format!("{}/whoami", api.0))
        .bearer_auth(token.secret())
        .send()
        .await
        .map_err(|e| LogtoError::bad_gateway(format!("The API could not be reached: {e}")))?;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.map_err(|e| {
        LogtoError::bad_gateway(format!("The API answered {status} without JSON: {e}"))
    })?;
    Ok(Json(json!({ "status": status, "answer": answer })))
}

/// The shopping API of the guide.
struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// Where the crate's routes are (`/logto`, or `/app/logto` with `base_url` under `/app`),
/// for the links of the templates.
struct Links {
    logto: String,
}

/// Signed in: the user's profile, their organizations with a switcher that fetches the
/// chosen organization's token (`/?org=<id>`), and the shopping API token.
/// `AuthenticatedUser` forwards when nobody is signed in, so the next rank serves the
/// visitor.
#[get("/?<org>")]
async fn home(user: AuthenticatedUser<'_>, org: Option<&str>, links: &State<Links>) -> Template {
    let shopping = user.access_token(Shopping::INDICATOR).await;
    let org_token = match org {
        Some(id) => Some(user.organization_token(id).await),
        None => None,
    };
    Template::render(
        "index",
        context! {
            user: user.claims(),
            logto: &links.logto,
            shopping: shopping.as_ref().ok().map(TokenSummary::of),
            shopping_error: shopping.as_ref().err().map(LogtoError::message),
            org_id: org,
            org_token: org_token.as_ref().and_then(|t| t.as_ref().ok()).map(TokenSummary::of),
            org_error: org_token.as_ref().and_then(|t| t.as_ref().err()).map(LogtoError::message),
        },
    )
}

/// What the home page shows of an access token (never the token itself).
#[derive(serde::Serialize)]
struct TokenSummary {
    audience: serde_json::Value,
    scopes: Vec<String>,
    expires_in_minutes: i64,
}

impl TokenSummary {
    fn of(token: &AccessToken) -> TokenSummary {
        let left = token.expires_at() - rocket::time::OffsetDateTime::now_utc();
        TokenSummary {
            audience: token.claims().get("aud").cloned().unwrap_or_default(),
            scopes: token.scopes().map(str::to_string).collect(),
            expires_in_minutes: left.whole_minutes().max(0),
        }
    }
}

/// The signed-in user's sessions (with the Redis session store), this one marked, and
/// "sign out other sessions"; with the cookie store, only "sign out everywhere".
#[get("/sessions")]
async fn sessions_page(
    user: AuthenticatedUser<'_>,
    sessions: &State<Sessions>,
    links: &State<Links>,
) -> Template {
    let listed = sessions.store_kind() == SessionStoreKind::Redis;
    let (list, error) = match listed {
        true => match sessions.list(user.id()).await {
            Ok(list) => (list, None),
            Err(e) => (Vec::new(), Some(e.message().to_string())),
        },
        false => (Vec::new(), None),
    };
    let current = user.session_handle();
    let when = |t: time::OffsetDateTime| {
        format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    };
    let rows: Vec<Value> = list
        .iter()
        .map(|s| {
            json!({
                "created": when(s.created),
                "last_seen": when(s.last_seen),
                "user_agent": s.user_agent,
                "current": Some(&s.handle) == current.as_ref(),
            })
        })
        .collect();
    Template::render(
        "sessions",
        context! { user: user.claims(), logto: &links.logto, listed, sessions: rows, error },
    )
}

/// A form post from a page of this app: the browser says so (`Sec-Fetch-Site`), or its
/// `Origin` is the app's. Another site cannot make the user end their sessions.
struct SameOrigin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameOrigin {
    type Error = ();
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ()> {
        let ours = Logto::config(request.rocket())
            .and_then(|c| Absolute::parse(c.base_url()).ok())
            .and_then(|url| Some(format!("{}://{}", url.scheme(), url.authority()?)))
            .unwrap_or_default();
        let headers = request.headers();
        let same = match headers.get_one("Sec-Fetch-Site") {
            Some(site) => matches!(site, "same-origin" | "none"),
            None => headers.get_one("Origin").is_none_or(|o| o == ours),
        };
        match same {
            true => Outcome::Success(SameOrigin),
            false => Outcome::Error((rocket::http::Status::Forbidden, ())),
        }
    }
}

/// Ends every other session of the signed-in user (Redis session store).
#[post("/sessions/sign-out-others")]
async fn sign_out_others(
    _same: SameOrigin,
    user: AuthenticatedUser<'_>,
    sessions: &State<Sessions>,
) -> Result<Redirect, LogtoError> {
    let current = user.session_handle();
    for s in sessions.list(user.id()).await? {
        if Some(&s.handle) != current.as_ref() {
            sessions.end(&s.handle).await?;
        }
    }
    Ok(Redirect::to("/sessions"))
}

/// Ends every session of the signed-in user, this one included, in either store.
#[post("/sessions/sign-out-everywhere")]
async fn sign_out_everywhere(
    _same: SameOrigin,
    user: AuthenticatedUser<'_>,
    sessions: &State<Sessions>,
) -> Result<Redirect, LogtoError> {
    sessions.end_all(user.id()).await?;
    Ok(Redirect::to("/"))
}

/// Logto's endpoint, where its Management API is (`<endpoint>/api`).
struct LogtoEndpoint(String);

/// One role, as Logto's Management API lists a user's roles.
#[derive(serde::Deserialize, serde::Serialize)]
struct Role {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// The admin page: the signed-in user's roles, read through Logto's Management API
/// (`GET /api/users/{id}/roles`) with the app's own token (`AppToken<ManagementApi>`,
/// client credentials of the machine-to-machine app in Rocket.toml).
#[get("/admin/roles")]
async fn admin_roles(
    user: AuthenticatedUser<'_>,
    token: AppToken<ManagementApi>,
    endpoint: &State<LogtoEndpoint>,
) -> Result<Template, LogtoError> {
    let url = format!("{}/api/users/{}/roles", endpoint.0, user.id());
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token.secret())
        .send()
        .await
        .map_err(|e| {
            LogtoError::bad_gateway(format!("The Management API could not be reached: {e}"))
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(LogtoError::bad_gateway(format!(
            "The Management API answered {status}"
        )));
    }
    let roles: Vec<Role> = response.json().await.map_err(|e| {
        LogtoError::bad_gateway(format!(
            "The Management API's roles are not the JSON expected: {e}"
        ))
    })?;
    Ok(Template::render(
        "admin",
        context! { user: user.claims(), roles: roles },
    ))
}

/// How recent a sign-in the sensitive page needs: 5 minutes.
const SENSITIVE_MAX_AGE: u64 = 300;

/// A page behind a step-up: a sign-in older than 5 minutes is sent to Logto again (with
/// `max_age`), which asks for the password, and comes back here.
#[get("/sensitive")]
fn sensitive(user: RecentSignIn<'_, { SENSITIVE_MAX_AGE }>) -> Template {
    let now = rocket::time::OffsetDateTime::now_utc().unix_timestamp();
    Template::render(
        "sensitive",
        context! {
            max_age: SENSITIVE_MAX_AGE,
            max_age_minutes: SENSITIVE_MAX_AGE / 60,
            signed_in_ago: (now - user.auth_time()).max(0),
        },
    )
}

/// Signed out: "Sign In" and "Sign Up" buttons.
#[get("/", rank = 2)]
fn public_home(links: &State<Links>) -> Template {
    Template::render("index", context! { logto: &links.logto })
}

/// The stylesheet, served by the app itself (no CDN).
#[get("/static/app.css")]
fn stylesheet() -> (ContentType, &'static str) {
    (ContentType::CSS, include_str!("static/app.css"))
}

/// The claims as JSON; signed-out browsers are sent to sign-in (the crate's 401 catcher).
#[get("/me")]
fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
    Json(user.claims())
}

/// The userinfo answer, with `custom_data` and `organization_data`.
#[get("/userinfo")]
fn userinfo(info: FetchedUserInfo) -> Json<UserInfo> {
    Json(info.into_inner())
}

/// A token as the guide's `getAccessToken` gives it: the token itself (`secret`, which
/// `AccessToken`'s own serialisation leaves out) with what it grants.
fn token_json(token: &AccessToken) -> serde_json::Value {
    let mut json = serde_json::json!(token);
    json["access_token"] = token.secret().into();
    json
}

/// A token for the shopping API (the guide's `getAccessToken`).
#[get("/fetch-access-token")]
fn fetch_access_token(token: ResourceToken<Shopping>) -> Json<serde_json::Value> {
    Json(token_json(&token))
}

/// Tokens of every organization of the user (the guide's `organizationTokens`).
#[get("/fetch-organization-token")]
async fn fetch_organization_token(
    user: AuthenticatedUser<'_>,
) -> Result<Json<BTreeMap<String, serde_json::Value>>, LogtoError> {
    let tokens = user.organization_tokens().await?;
    Ok(Json(
        tokens
            .iter()
            .map(|(id, token)| (id.clone(), token_json(token)))
            .collect(),
    ))
}

/// The app's own user records (`[default.databases.sample_users]` in Rocket.toml): created
/// at the first sign-in, updated at each one, by the sign-in hook.
#[derive(Database)]
#[database("sample_users")]
struct Users(sqlx::SqlitePool);

/// The users table, created at launch once the pool exists.
const USERS_TABLE: &str = "CREATE TABLE IF NOT EXISTS users (
    sub TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    email TEXT,
    sign_ins INTEGER NOT NULL
)";

/// After each sign-in: the user's record, created or brought up to date; the number of their
/// sign-ins so far.
async fn record_sign_in(users: &Users, user: &SignedIn) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO users (sub, name, email, sign_ins) VALUES (?, ?, ?, 1)
         ON CONFLICT (sub) DO UPDATE
         SET name = excluded.name, email = excluded.email, sign_ins = sign_ins + 1
         RETURNING sign_ins",
    )
    .bind(&user.claims.sub)
    .bind(&user.claims.name)
    .bind(&user.claims.email)
    .fetch_one(&**users)
    .await?;
    row.try_get(0)
}

#[launch]
fn rocket() -> _ {
    app(Logto::fairing())
}

/// Built with `--features metrics`: the crate's metrics (and any the app records) as
/// Prometheus text at `/metrics`, rendered from the recorder's handle by a Rocket route
/// (no listener of the exporter's own).
#[cfg(feature = "metrics")]
mod prometheus {
    use std::sync::OnceLock;
    use std::time::Duration;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
    use rocket::fairing::AdHoc;
    use rocket::get;
    use rocket::http::ContentType;

    /// The recorder, installed once per process (before the app serves: the crate keeps
    /// handles to its hot-path metrics from their first use).
    pub fn handle() -> &'static PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE.get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    rocket::warn!("sample: no Prometheus recorder installed: {e}");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
    }

    /// Drains the histograms now and then, which the exporter's own listener would do.
    pub fn upkeep() -> AdHoc {
        AdHoc::on_liftoff("Prometheus upkeep", |_| {
            Box::pin(async {
                rocket::tokio::spawn(async {
                    let mut every = rocket::tokio::time::interval(Duration::from_secs(5));
                    loop {
                        every.tick().await;
                        handle().run_upkeep();
                    }
                });
            })
        })
    }

    #[get("/metrics")]
    pub fn metrics() -> (ContentType, String) {
        (
            ContentType::new("text", "plain").with_params(("version", "0.0.4")),
            handle().render(),
        )
    }
}

/// The app with the `logto` fairing to use: `Logto::fairing()`, or in the route tests
/// `Logto::fairing().trust_test_key()` (test mode, for the API routes' bearer tokens).
fn app(logto: Logto) -> Rocket<Build> {
    let logto = logto
        // After each sign-in: create or update the app's own record of the user, in the
        // database the request reaches (a pool exists only once Rocket has ignited).
        .on_sign_in(|signed_in: SignedIn, request| {
            Box::pin(async move {
                let unavailable =
                    || SignInRefusal::new("Your account could not be saved; try signing in again.");
                let users = Users::fetch(request.rocket()).ok_or_else(unavailable)?;
                match record_sign_in(users, &signed_in).await {
                    Ok(1) => rocket::info!("sample: first sign-in of {}", signed_in.claims.sub),
                    Ok(_) => {}
                    Err(e) => {
                        rocket::error!(
                            "sample: the users table refused {}: {e}",
                            signed_in.claims.sub
                        );
                        return Err(unavailable());
                    }
                }
                Ok(SignInDecision::Continue)
            })
        })
        // The crate's error pages, in this app's own template.
        .error_page(|error, request| {
            let logto = Logto::config(request.rocket()).map(|c| c.routes_base());
            Template::render(
                "error",
                context! {
                    status: error.status().code,
                    reason: error.status().reason_lossy(),
                    message: error.message(),
                    logto,
                },
            )
            .respond_to(request)
        });
    #[cfg(feature = "metrics")]
    prometheus::handle();
    let rocket = rocket::build();
    #[cfg(feature = "metrics")]
    let rocket = rocket
        .attach(prometheus::upkeep())
        .mount("/", routes![prometheus::metrics]);
    rocket
        .attach(Template::fairing())
        .attach(Users::init())
        .attach(AdHoc::try_on_ignite("Users table", |rocket| async move {
            let Some(users) = Users::fetch(&rocket) else {
                return Err(rocket);
            };
            match sqlx::query(USERS_TABLE).execute(&**users).await {
                Ok(_) => Ok(rocket),
                Err(e) => {
                    rocket::error!("sample: the users table could not be created: {e}");
                    Err(rocket)
                }
            }
        }))
        .attach(logto)
        // After the Logto fairing has read its configuration.
        .attach(AdHoc::on_ignite("Links", |rocket| async move {
            let logto = Logto::config(&rocket).map(|c| c.routes_base());
            rocket.manage(Links {
                logto: logto.unwrap_or_default(),
            })
        }))
        .attach(AdHoc::on_ignite("Logto endpoint", |rocket| async move {
            let endpoint = Logto::config(&rocket)
                .map(|c| c.endpoint().trim_end_matches('/').to_string())
                .unwrap_or_default();
            rocket.manage(LogtoEndpoint(endpoint))
        }))
        .attach(AdHoc::on_ignite("API base", |rocket| async move {
            let base = Logto::config(&rocket)
                .map(|c| format!("{}/api", c.base_url().trim_end_matches('/')))
                .unwrap_or_default();
            rocket.manage(ApiBase(base))
        }))
        .mount("/api", api::routes())
        // The crate's catchers: 401 sends browsers to sign-in, the others show its pages.
        .register("/", Logto::catchers())
        // For load balancers and Kubernetes probes: /health/live, /health/ready.
        .mount("/health", Logto::health_routes())
        .mount(
            "/",
            routes![
                home,
                public_home,
                stylesheet,
                me,
                userinfo,
                fetch_access_token,
                fetch_organization_token,
                call_api,
                sessions_page,
                sign_out_others,
                sign_out_everywhere,
                sensitive,
                admin_roles
            ],
        )
}

/// The sample's route tests: written only with `rocket_logto::testing`, no provider.
#[cfg(all(test, feature = "testing"))]
mod tests {
    use rocket::http::{ContentType, Status};
    use rocket::local::asynchronous::Client;
    use rocket_logto::testing::{BearerRequest, SignedInRequest, TestToken, TestUser};
    use rocket_logto::Logto;

    use super::Shopping;

    async fn client() -> Client {
        Client::untracked(super::rocket()).await.unwrap()
    }

    fn alice() -> TestUser {
        TestUser::new("user_alice")
            .claim("name", "Alice Example")
            .claim("email", "alice@example.com")
            .resource_token::<Shopping>(&["shopping:read"])
            .organization_token("org_acme", &["read:reports"])
    }

    #[rocket::async_test]
    async fn the_api_answers_a_token_of_its_resource_and_refuses_others() {
        let client = Client::untracked(super::app(Logto::fairing().trust_test_key()))
            .await
            .unwrap();
        let token = TestToken::for_resource::<super::api::Shopping>().user("user_alice");
        let response = client.get("/api/whoami").bearer(&token).dispatch().await;
        assert_eq!(response.status(), Status::Ok);
        let claims: serde_json::Value =
            serde_json::from_str(&response.into_string().await.unwrap()).unwrap();
        assert_eq!(claims["sub"], "user_alice");
        let response = client.get("/api/whoami").dispatch().await;
        assert_eq!(response.status(), Status::Unauthorized);
        let other = TestToken::for_organization("org_acme");
        let response = client.get("/api/whoami").bearer(&other).dispatch().await;
        assert_eq!(response.status(), Status::Unauthorized);
    }

    #[rocket::async_test]
    async fn signed_out_visitors_get_sign_in_and_sign_up() {
        let client = client().await;
        let page = client.get("/").dispatch().await;
        assert_eq!(page.status(), Status::Ok);
        let html = page.into_string().await.unwrap();
        assert!(
            html.contains(r#"id="sign-in""#) && html.contains("logto/sign-up\""),
            "{html}"
        );
    }

    #[rocket::async_test]
    async fn the_sensitive_page_needs_a_recent_sign_in() {
        use rocket::http::Accept;
        let client = client().await;
        let now = rocket::time::OffsetDateTime::now_utc().unix_timestamp();
        let recent = alice().claim("auth_time", now - 60);
        let page = client
            .get("/sensitive")
            .signed_in_as(&recent)
            .dispatch()
            .await;
        assert_eq!(page.status(), Status::Ok);
        assert!(page.into_string().await.unwrap().contains("signed-in-ago"));
        // Older than 5 minutes, or not known: to sign-in with `max_age`, and back here.
        for user in [alice().claim("auth_time", now - 600), alice()] {
            let page = client
                .get("/sensitive")
                .header(Accept::HTML)
                .signed_in_as(&user)
                .dispatch()
                .await;
            assert_eq!(page.status(), Status::SeeOther);
            assert_eq!(
                page.headers().get_one("Location"),
                Some("/logto/sign-in?return_to=%2Fsensitive&max_age=300")
            );
        }
    }

    #[rocket::async_test]
    async fn the_home_page_shows_the_user_and_their_tokens() {
        let client = client().await;
        let page = client.get("/").signed_in_as(&alice()).dispatch().await;
        assert_eq!(page.status(), Status::Ok);
        let html = page.into_string().await.unwrap();
        assert!(html.contains("Hello user_alice,"), "{html}");
        assert!(html.contains("Alice Example") && html.contains("shopping:read"));
        assert!(html.contains(r#"<option value="org_acme""#));

        let page = client
            .get("/?org=org_acme")
            .signed_in_as(&alice())
            .dispatch()
            .await;
        let html = page.into_string().await.unwrap();
        assert!(html.contains("urn:logto:organization:org_acme"), "{html}");
    }

    #[rocket::async_test]
    async fn the_json_routes_answer_for_the_signed_in_user() {
        let client = client().await;
        let me = client.get("/me").signed_in_as(&alice()).dispatch().await;
        assert_eq!(me.status(), Status::Ok);
        assert!(me
            .into_string()
            .await
            .unwrap()
            .contains("alice@example.com"));
        let token = client
            .get("/fetch-access-token")
            .signed_in_as(&alice())
            .dispatch()
            .await;
        assert_eq!(token.status(), Status::Ok);
        assert!(token
            .into_string()
            .await
            .unwrap()
            .contains("https://shopping.example.com/api"));
    }

    #[rocket::async_test]
    async fn the_sessions_page_offers_sign_out_everywhere_with_the_cookie_store() {
        let client = client().await;
        let page = client
            .get("/sessions")
            .signed_in_as(&alice())
            .dispatch()
            .await;
        assert_eq!(page.status(), Status::Ok);
        let html = page.into_string().await.unwrap();
        assert!(html.contains(r#"id="cookie-store""#), "{html}");
        assert!(html.contains(r#"id="sign-out-everywhere""#), "{html}");
        // A post from another site is refused; one from the app ends the sessions.
        let foreign = client
            .post("/sessions/sign-out-everywhere")
            .header(rocket::http::Header::new("Sec-Fetch-Site", "cross-site"))
            .signed_in_as(&alice())
            .dispatch()
            .await;
        assert_eq!(foreign.status(), Status::Forbidden);
        let ours = client
            .post("/sessions/sign-out-everywhere")
            .header(rocket::http::Header::new("Sec-Fetch-Site", "same-origin"))
            .signed_in_as(&alice())
            .dispatch()
            .await;
        assert_eq!(ours.status(), Status::SeeOther);
    }

    /// With `session_store = "redis"`, against a `redis-server` on PATH (as the crate's Redis
    /// tests; scripts/setup installs it). The test helpers' cookie sessions move into Redis at
    /// their first request.
    #[cfg(feature = "redis")]
    #[rocket::async_test]
    async fn the_sessions_page_lists_redis_sessions_and_signs_out_the_others() {
        use rocket::http::{Cookie, Header};

        struct Server(std::process::Child);
        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _redis = Server(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH"),
        );
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            // A ceiling for a broken redis-server, not for a busy runner.
            assert!(started.elapsed() < std::time::Duration::from_secs(120));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let rocket = super::app(Logto::fairing());
        let figment = rocket
            .figment()
            .clone()
            .merge(("logto.redis_url", format!("redis://127.0.0.1:{port}")))
            .merge(("logto.session_store", "redis"));
        let client = Client::untracked(rocket.configure(figment)).await.unwrap();
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        // Two browsers of alice, started in different milliseconds.
        let mut browsers: Vec<Cookie<'static>> = Vec::new();
        for _ in 0..2 {
            let before = now_ms();
            let page = client
                .get("/sessions")
                .signed_in_as(&alice())
                .dispatch()
                .await;
            assert_eq!(page.status(), Status::Ok);
            let sid = page
                .cookies()
                .get("logto_sid")
                .expect("moved into Redis")
                .clone();
            browsers.push(sid.into_owned());
            while now_ms() <= before + 1 {
                tokio::task::yield_now().await;
            }
        }
        let page = client
            .get("/sessions")
            .cookie(browsers[0].clone())
            .dispatch()
            .await;
        let html = page.into_string().await.unwrap();
        assert_eq!(
            html.matches("<tr").count(),
            3,
            "a header and two sessions: {html}"
        );
        assert!(html.contains(r#"id="this-session""#) && html.contains(r#"id="sign-out-others""#));

        let done = client
            .post("/sessions/sign-out-others")
            .header(Header::new("Sec-Fetch-Site", "same-origin"))
            .cookie(browsers[0].clone())
            .dispatch()
            .await;
        assert_eq!(done.status(), Status::SeeOther);
        let mine = client
            .get("/me")
            .cookie(browsers[0].clone())
            .dispatch()
            .await;
        assert_eq!(mine.status(), Status::Ok);
        let other = client
            .get("/me")
            .cookie(browsers[1].clone())
            .dispatch()
            .await;
        assert_eq!(other.status(), Status::Unauthorized);
        let page = client
            .get("/sessions")
            .cookie(browsers[0].clone())
            .dispatch()
            .await;
        let html = page.into_string().await.unwrap();
        assert!(html.contains("This is your only session."), "{html}");
    }

    #[rocket::async_test]
    async fn the_stylesheet_is_served_by_the_app() {
        let client = client().await;
        let css = client.get("/static/app.css").dispatch().await;
        assert_eq!(css.content_type(), Some(ContentType::CSS));
        assert!(css
            .into_string()
            .await
            .unwrap()
            .contains("prefers-color-scheme: dark"));
    }
}
