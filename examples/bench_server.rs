//! The Rocket side of the benchmark (`bench/run`), and its helpers. Not an example to copy:
//! it is the server under test and the tools that prepare and measure it.
//!
//! ```text
//! bench_server serve    # the Rocket app under test (env below)
//! bench_server prepare  --app URL --provider URL --recorder URL --out DIR  # sign alice in
//! bench_server storm    --app URL --cookie-file F [--n 100]  # N concurrent requests on one session
//! bench_server micro    --dir DIR [--iters N]                 # per-request work, ns/op, in process
//! bench_server collect  --app URL --cookie-file F --n N --out F2  # N distinct cookies of one session
//! bench_server tokens   --provider URL --n N --out F          # N distinct machine-to-machine tokens
//! bench_server forge    --cookie-file F --n N --out F2         # N distinct cookies of one session, in process
//! bench_server fake-provider --port P [--alg ES384|ES256]      # a fast OpenID provider (sign-in rows)
//! bench_server signins  --app URL --session-cookie NAME --expect-location L
//!                       [--redirect-status 303] [--conns 16 --warmup 2 --duration 10]
//!                       [--pids name=PID,...] [--clk-tck 100]
//!                                                              # full sign-ins per second
//! bench_server free-port
//! ```
//!
//! `serve` reads `BENCH_PORT`, `BENCH_ENDPOINT` (the provider), `BENCH_BASE_URL`, and optionally
//! `BENCH_PLAIN_BODY` (a file: the body the plain route answers, so that it sends the same bytes as
//! the claims routes without a guard) and `BENCH_SESSION_INACTIVITY` (seconds).
//!
//! Routes: `/plain` (no guard), `/user` (`LogtoUser`, claims as JSON), `/me` (`AuthenticatedUser`,
//! claims as JSON), `/shopping` (`ResourceToken<Shopping>`, the token as JSON), `/orgs` (every
//! organization token of the user, for `bench/scale`), `/api/shopping`
//! (`BearerToken<Shopping>`, then the plain route's bytes), `/baseline/shopping` (the same bytes
//! after a check of the bearer token on every request with the `jsonwebtoken` crate, as Logto's
//! "Protect your API" page does it: no cache), and the bench-only `/__bench/decrypt` (decrypts
//! the session cookies with Rocket's `CookieJar::get_private` and nothing else: the decryption
//! share of a guard, for `micro`). `BENCH_BEARER_CACHE` sets `bearer_cache_entries`,
//! `BENCH_SESSION_CACHE` `session_cache_entries`; with `BENCH_COUNT_REQUESTS` set the server counts
//! the requests it serves and answers the count at `/__bench/requests`. For `bench/scale`:
//! `BENCH_REDIS_TIMEOUT_MS` (`redis_timeout_ms`), `BENCH_REDIS_CLUSTER` (`redis_cluster = true`)
//! and `BENCH_REDIS_SENTINEL_MASTER` (`redis_sentinel_master`).
//!
//! Nothing here depends on how rocket_logto encodes its session: `prepare` learns the tokens the
//! app holds from `bench/token_recorder.mjs`, the proxy the app reached the provider through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::figment::Figment;
use rocket::http::{Accept, Cookie, CookieJar, Status};
use rocket::response::content::RawJson;
use rocket::serde::json::{json, Json, Value};
use rocket::{get, routes, Build, Rocket, State};
use rocket_logto::{
    AuthenticatedUser, BearerToken, IdTokenClaims, Logto, LogtoUser, Resource, ResourceToken,
};

#[path = "../tests/support/real_provider.rs"]
#[allow(unused_imports)]
mod real_provider;

/// A fixed key: the cookies made by `prepare` must open in every `serve` and in `micro`.
const SECRET_KEY: &str =
    "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBXdPB7oU1oSyeJB8uuBQBNsCGmFhvR4y6OcxmnLdhYwcjFFY7i7OoA==";
const SHOPPING: &str = "https://shopping.example.com/api";
const STORE: &str = "https://store.example.com/api";
const APP_ID: &str = "sample-app";
const APP_SECRET: &str = "sample-secret";
/// The session cookies (see src/session/mod.rs): `logto_session`, `logto_session_1`, ...
const SESSION_COOKIE: &str = "logto_session";
const MAX_CHUNKS: usize = 8;

struct Shopping;
impl Resource for Shopping {
    const INDICATOR: &'static str = SHOPPING;
}

struct PlainBody(String);

#[get("/plain")]
fn plain(body: &State<PlainBody>) -> RawJson<&str> {
    RawJson(body.0.as_str())
}

#[get("/user")]
fn user(user: LogtoUser) -> Json<Option<IdTokenClaims>> {
    Json(user.claims().cloned())
}

#[get("/me")]
fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
    Json(user.claims())
}

/// The plain route's bytes, behind `AuthenticatedUser`: the difference to `/plain` is the
/// guard alone, without the claims' JSON serialisation that `/me` adds.
#[get("/me/guard")]
fn me_guard<'r>(user: AuthenticatedUser, body: &'r State<PlainBody>) -> RawJson<&'r str> {
    std::hint::black_box(user.claims().sub.as_str());
    RawJson(body.0.as_str())
}

#[get("/shopping")]
fn shopping(token: ResourceToken<Shopping>) -> Json<serde_json::Value> {
    // The token itself too: the refresh storm counts distinct tokens.
    let mut json = serde_json::json!(&*token);
    json["access_token"] = token.secret().into();
    Json(json)
}

/// Every organization token of the user (for `bench/scale`'s organization pages).
#[get("/orgs")]
async fn orgs(
    user: AuthenticatedUser<'_>,
) -> Result<Json<serde_json::Value>, rocket_logto::LogtoError> {
    let tokens = user.organization_tokens().await?;
    let mut json = serde_json::Map::new();
    for (id, token) in tokens.iter() {
        json.insert(
            id.clone(),
            serde_json::json!({ "access_token": token.secret() }),
        );
    }
    Ok(Json(json.into()))
}

/// The plain route's bytes, behind the guard: the difference to `/plain` is the guard.
#[get("/api/shopping")]
fn api_shopping(token: BearerToken<Shopping>, body: &State<PlainBody>) -> RawJson<&str> {
    std::hint::black_box(token.sub());
    RawJson(body.0.as_str())
}

/// The baseline: Logto's keys fetched once at launch, and every request's token checked with
/// `jsonwebtoken` (signature, `exp`, `nbf`, `iss`, `aud`), then its scopes, as Logto's
/// API-protection page does: no cache.
struct Baseline {
    issuer: String,
    keys: Vec<(String, jsonwebtoken::Algorithm, jsonwebtoken::DecodingKey)>,
}

struct BearerHeader<'r>(&'r str);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for BearerHeader<'r> {
    type Error = ();
    async fn from_request(request: &'r rocket::Request<'_>) -> rocket::request::Outcome<Self, ()> {
        match request
            .headers()
            .get_one("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            Some(token) => rocket::request::Outcome::Success(BearerHeader(token)),
            None => rocket::request::Outcome::Error((Status::Unauthorized, ())),
        }
    }
}

#[get("/baseline/shopping")]
fn baseline_shopping<'r>(
    token: BearerHeader<'_>,
    baseline: &State<Baseline>,
    body: &'r State<PlainBody>,
) -> Result<RawJson<&'r str>, Status> {
    let header = jsonwebtoken::decode_header(token.0).map_err(|_| Status::Unauthorized)?;
    let (_, alg, key) = baseline
        .keys
        .iter()
        .find(|(kid, alg, _)| Some(kid) == header.kid.as_ref() && *alg == header.alg)
        .ok_or(Status::Unauthorized)?;
    let mut validation = jsonwebtoken::Validation::new(*alg);
    validation.set_issuer(&[&baseline.issuer]);
    validation.set_audience(&[SHOPPING]);
    validation.validate_nbf = true;
    validation.leeway = 60;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token.0, key, &validation)
        .map_err(|_| Status::Unauthorized)?;
    let scopes = data
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !scopes.split(' ').any(|s| s == "shopping:read") {
        return Err(Status::Forbidden);
    }
    std::hint::black_box(data.claims);
    Ok(RawJson(body.0.as_str()))
}

/// Fetches Logto's keys for the baseline at launch.
async fn baseline_keys(endpoint: &str) -> Baseline {
    let issuer = format!("{endpoint}/oidc");
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{issuer}/jwks"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| die(&format!("baseline: the provider's JWKS: {e}")))
        .json()
        .await
        .unwrap_or_else(|e| die(&format!("baseline: the provider's JWKS: {e}")));
    let keys = jwks
        .keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = match jwk.common.key_algorithm? {
                jsonwebtoken::jwk::KeyAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
                jsonwebtoken::jwk::KeyAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
                _ => return None,
            };
            Some((kid, alg, jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?))
        })
        .collect();
    Baseline { issuer, keys }
}

fn chunk_name(i: usize) -> String {
    if i == 0 {
        SESSION_COOKIE.to_string()
    } else {
        format!("{SESSION_COOKIE}_{i}")
    }
}

#[get("/__bench/decrypt")]
fn decrypt<'r>(jar: &CookieJar<'_>, body: &'r State<PlainBody>) -> RawJson<&'r str> {
    // The crate seals its session as bytes, not text: `get_private` decrypts and
    // authenticates each chunk, then answers `None` (not UTF-8), the same work either way.
    for i in 0..MAX_CHUNKS {
        if std::hint::black_box(jar.get_private(&chunk_name(i))).is_none() {
            break;
        }
    }
    RawJson(body.0.as_str())
}

/// Requests served so far (with BENCH_COUNT_REQUESTS).
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[get("/__bench/requests")]
fn served() -> String {
    SERVED
        .load(std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn rocket_app(
    port: u16,
    endpoint: &str,
    base_url: &str,
    plain_body: String,
    inactivity: Option<u64>,
    baseline: Option<Baseline>,
) -> Rocket<Build> {
    let mut logto = json!({
        "endpoint": endpoint,
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        "base_url": base_url,
        "scopes": ["email", "custom_data", "urn:logto:scope:organizations", "urn:logto:scope:organization_roles",
                   "shopping:read", "shopping:write", "store:read"],
        "resources": [SHOPPING, STORE],
    });
    if let Some(secs) = inactivity {
        logto["session_inactivity_secs"] = json!(secs);
    }
    if let Some(entries) = env("BENCH_BEARER_CACHE").and_then(|s| s.parse::<u64>().ok()) {
        logto["bearer_cache_entries"] = json!(entries);
    }
    if let Some(entries) = env("BENCH_SESSION_CACHE").and_then(|s| s.parse::<u64>().ok()) {
        logto["session_cache_entries"] = json!(entries);
    }
    // bench/scale: the Redis timeout, and Redis Cluster or Sentinel.
    if let Some(ms) = env("BENCH_REDIS_TIMEOUT_MS").and_then(|s| s.parse::<u64>().ok()) {
        logto["redis_timeout_ms"] = json!(ms);
    }
    if env("BENCH_REDIS_CLUSTER").is_some() {
        logto["redis_cluster"] = json!(true);
    }
    if let Some(master) = env("BENCH_REDIS_SENTINEL_MASTER") {
        logto["redis_sentinel_master"] = json!(master);
    }
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("address", "127.0.0.1"))
        .merge(("port", port))
        .merge(("secret_key", SECRET_KEY))
        // bench/scale sets BENCH_LOG_LEVEL=critical: the crate's warnings, not every request.
        .merge((
            "log_level",
            env("BENCH_LOG_LEVEL").unwrap_or_else(|| "off".into()),
        ))
        .merge(("cli_colors", false))
        .merge(("logto", logto))
        // bench/run sets LOGTO_REDIS_URL and LOGTO_SESSION_STORE for its Redis rows.
        .merge(rocket_logto::LogtoEnv::new());
    let mut rocket = rocket::custom(figment);
    // BENCH_COUNT_REQUESTS=1: count the requests served, read at `/__bench/requests` (for the
    // memory rows, which must know when every session had been seen once).
    if env("BENCH_COUNT_REQUESTS").is_some() {
        rocket = rocket
            .attach(rocket::fairing::AdHoc::on_request("count", |_, _| {
                Box::pin(async {
                    SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })
            }))
            .mount("/", routes![served]);
    }
    let rocket = rocket
        .attach(Logto::fairing())
        .manage(PlainBody(plain_body))
        .mount(
            "/",
            routes![
                plain,
                user,
                me,
                me_guard,
                shopping,
                orgs,
                api_shopping,
                decrypt
            ],
        );
    match baseline {
        Some(baseline) => rocket
            .manage(baseline)
            .mount("/", routes![baseline_shopping]),
        None => rocket,
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn need(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| die(&format!("missing {name}")))
}

fn die(msg: &str) -> ! {
    eprintln!("bench_server: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some("prepare") => runtime().block_on(prepare(&args)),
        Some("storm") => runtime().block_on(storm(&args)),
        Some("micro") => micro(&args),
        Some("collect") => runtime().block_on(collect(&args)),
        Some("tokens") => runtime().block_on(tokens(&args)),
        Some("forge") => forge(&args),
        Some("fake-provider") => fake_provider(&args),
        Some("signins") => runtime().block_on(signins(&args)),
        Some("free-port") => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            println!("{}", l.local_addr().expect("addr").port());
        }
        _ => die("usage: bench_server serve|prepare|storm|micro|collect|tokens|forge|fake-provider|signins|free-port (see the file's header)"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Built with the `metrics` feature (`BENCH_FEATURES=redis,metrics bench/run`): the crate
/// records into a Prometheus recorder, installed before the app serves, as an app would, to
/// measure what recording costs the hot paths. Without the feature: nothing.
fn install_recorder() {
    #[cfg(feature = "metrics")]
    {
        let _handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|e| die(&format!("Prometheus recorder: {e}")));
        eprintln!("bench_server: recording metrics (Prometheus recorder installed)");
    }
}

fn serve() {
    let port: u16 = env("BENCH_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| die("BENCH_PORT"));
    let endpoint = env("BENCH_ENDPOINT").unwrap_or_else(|| die("BENCH_ENDPOINT"));
    let base_url = env("BENCH_BASE_URL").unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
    let plain_body = env("BENCH_PLAIN_BODY")
        .map(|f| std::fs::read_to_string(&f).unwrap_or_else(|e| die(&format!("{f}: {e}"))))
        .unwrap_or_else(|| "{}".into());
    let inactivity = env("BENCH_SESSION_INACTIVITY").and_then(|s| s.parse().ok());
    install_recorder();
    let launched = rocket::execute(async {
        let baseline = baseline_keys(&endpoint).await;
        rocket_app(
            port,
            &endpoint,
            &base_url,
            plain_body,
            inactivity,
            Some(baseline),
        )
        .launch()
        .await
    });
    if let Err(e) = launched {
        die(&format!("rocket: {e}"));
    }
}

// ---------------------------------------------------------------------------------------
// prepare: sign alice in through the app and the provider's login form.

/// An app client that keeps the app's cookies like a browser.
fn app_client() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    (client, jar)
}

/// Signs alice in through `app` and returns the app client and its jar.
async fn sign_in(
    app: &str,
    browser: &real_provider::ProviderBrowser,
) -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let (client, jar) = app_client();
    let r = client
        .get(format!("{app}/logto/sign-in"))
        .send()
        .await
        .expect("GET /logto/sign-in");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::SEE_OTHER,
        "sign-in: {:?}",
        r.text().await
    );
    let authorize = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let callback = browser.sign_in(&authorize, "alice", "alice-password").await;
    let r = client.get(&callback).send().await.expect("GET callback");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::SEE_OTHER,
        "callback: {:?}",
        r.text().await
    );
    (client, jar)
}

async fn get_ok(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| die(&format!("{url}: {e}")));
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        die(&format!("{url}: {status} {body}"));
    }
    body
}

async fn provider_ttl(provider: &str, secs: u64) {
    let r = reqwest::Client::new()
        .post(format!("{provider}/__test/access-token-ttl"))
        .json(&json!({ "seconds": secs }))
        .send()
        .await
        .expect("access-token-ttl");
    assert!(r.status().is_success(), "access-token-ttl: {}", r.status());
}

fn cookie_header(jar: &reqwest::cookie::Jar, app: &str) -> String {
    use reqwest::cookie::CookieStore;
    let url: url::Url = app.parse().expect("app URL");
    jar.cookies(&url)
        .map(|h| h.to_str().expect("ascii").to_string())
        .unwrap_or_default()
}

/// The tokens the app holds after one sign-in and one refresh for the shopping API, from the
/// token-endpoint answers the recorder saw, in the names @logto/express is seeded with
/// (bench/express/server.mjs): what the code exchange gave, updated by each later refresh.
async fn session_tokens(recorder: &str) -> Value {
    let recorded: Vec<Value> = reqwest::get(format!("{recorder}/__recorded"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| die(&format!("token recorder: {e}")))
        .json()
        .await
        .unwrap_or_else(|e| die(&format!("token recorder: {e}")));
    let start = recorded
        .iter()
        .rposition(|r| r["grant_type"] == "authorization_code")
        .unwrap_or_else(|| die("the recorder saw no code exchange: is HTTP_PROXY honoured?"));
    let expires = |r: &Value| {
        r["at"].as_i64().unwrap_or(0) + r["answer"]["expires_in"].as_i64().unwrap_or(3600)
    };
    let code = &recorded[start];
    let mut tokens = json!({
        "idToken": code["answer"]["id_token"],
        "refreshToken": code["answer"]["refresh_token"],
        "userinfoToken": { "token": code["answer"]["access_token"], "expiresAt": expires(code) },
        "resources": {},
    });
    for r in &recorded[start + 1..] {
        let answer = &r["answer"];
        if answer["refresh_token"].is_string() {
            tokens["refreshToken"] = answer["refresh_token"].clone();
        }
        if answer["id_token"].is_string() {
            tokens["idToken"] = answer["id_token"].clone();
        }
        if let Some(resource) = r["resource"].as_str() {
            tokens["resources"][resource] =
                json!({ "token": answer["access_token"], "expiresAt": expires(r) });
        }
    }
    if !tokens["resources"][SHOPPING]["token"].is_string() {
        die("the recorder saw no shopping token");
    }
    tokens
}

/// Writes in `--out`: `cookie` (the Cookie header of a signed-in browser whose shopping token
/// is cached and valid for an hour), `tokens.json` (that session's tokens, for @logto/express),
/// `me.json` (the `/me` body, for the plain route), and `storm_cookie` (another session whose
/// cached shopping token has 30 s left: within the 60 s refresh margin, so it must be refreshed).
async fn prepare(args: &[String]) {
    let app = need(args, "--app");
    let provider = need(args, "--provider");
    let recorder = need(args, "--recorder");
    let out = std::path::PathBuf::from(need(args, "--out"));
    let browser = real_provider::ProviderBrowser::new();

    provider_ttl(&provider, 3600).await;
    let (client, jar) = sign_in(&app, &browser).await;
    get_ok(&client, &format!("{app}/shopping")).await; // caches the shopping token (one refresh)
    let cookie = cookie_header(&jar, &app);
    let me = get_ok(&client, &format!("{app}/me")).await;
    let tokens = session_tokens(&recorder).await;

    provider_ttl(&provider, 30).await;
    let (storm_client, storm_jar) = sign_in(&app, &browser).await;
    get_ok(&storm_client, &format!("{app}/shopping")).await; // a token with 30 s to live
    provider_ttl(&provider, 3600).await;
    let storm_cookie = cookie_header(&storm_jar, &app);

    std::fs::write(out.join("cookie"), &cookie).expect("write cookie");
    std::fs::write(out.join("storm_cookie"), &storm_cookie).expect("write storm_cookie");
    std::fs::write(out.join("me.json"), &me).expect("write me.json");
    std::fs::write(
        out.join("tokens.json"),
        serde_json::to_string_pretty(&tokens).unwrap(),
    )
    .expect("write tokens.json");
    let len = |s: &Value| s.as_str().map_or(0, str::len);
    eprintln!(
        "prepare: signed in; Cookie header {} bytes; ID token {} B, refresh token {} B, shopping token {} B, userinfo token {} B",
        cookie.len(),
        len(&tokens["idToken"]),
        len(&tokens["refreshToken"]),
        len(&tokens["resources"][SHOPPING]["token"]),
        len(&tokens["userinfoToken"]["token"])
    );
}

// ---------------------------------------------------------------------------------------
// storm: N concurrent requests on one session whose access token must be refreshed.

async fn storm(args: &[String]) {
    let app = need(args, "--app");
    let cookie = std::fs::read_to_string(need(args, "--cookie-file")).expect("cookie file");
    let n: usize = arg(args, "--n").and_then(|s| s.parse().ok()).unwrap_or(100);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    // Open N connections first, so the storm measures requests, not TCP handshakes.
    let warm: Vec<_> = (0..n)
        .map(|_| {
            let c = client.clone();
            let u = format!("{app}/plain");
            tokio::spawn(async move { c.get(u).send().await.map(|r| r.status()) })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, cookie, barrier) = (
                client.clone(),
                format!("{app}/shopping"),
                cookie.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let r = client
                    .get(url)
                    .header("Cookie", cookie)
                    .header("Accept", "application/json")
                    .send()
                    .await;
                let (status, set_cookie, body) = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let set_cookie = r.headers().get_all("set-cookie").iter().count();
                        (status, set_cookie, r.text().await.unwrap_or_default())
                    }
                    Err(_) => (0, 0, String::new()),
                };
                (start.elapsed(), status, set_cookie, body)
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut tokens = std::collections::BTreeSet::new();
    let mut with_cookies = 0;
    for t in tasks {
        let (elapsed, status, set_cookie, body) = t.await.expect("task");
        times.push(elapsed);
        *statuses.entry(status).or_default() += 1;
        if set_cookie > 0 {
            with_cookies += 1;
        }
        if let Some(tok) = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_string))
        {
            tokens.insert(tok);
        }
    }
    times.sort();
    let pct = |p: f64| {
        times[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1].as_secs_f64() * 1e3
    };
    let statuses: Vec<String> = statuses.iter().map(|(s, c)| format!("{s}x{c}")).collect();
    // One line for bench/run: key=value pairs.
    println!(
        "storm n={n} min_ms={:.2} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} statuses={} distinct_tokens={} responses_with_set_cookie={with_cookies}",
        times[0].as_secs_f64() * 1e3,
        pct(50.0),
        pct(99.0),
        times[n - 1].as_secs_f64() * 1e3,
        statuses.join(","),
        tokens.len()
    );
}

// ---------------------------------------------------------------------------------------
// collect: many distinct cookies of one session, for a row where no two requests carry the
// same cookie (so that nothing can be reused from an earlier request). `--app` must be a
// server whose `session_inactivity_secs` makes this session due for its rolling re-stamp: each
// answer then carries the session encrypted anew.

async fn collect(args: &[String]) {
    let app = need(args, "--app");
    let cookie = std::fs::read_to_string(need(args, "--cookie-file")).expect("cookie file");
    let n: usize = arg(args, "--n")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let out = need(args, "--out");
    let client = reqwest::Client::new();
    let mut lines = std::collections::BTreeSet::new();
    for _ in 0..n {
        let r = client
            .get(format!("{app}/me"))
            .header("Cookie", &cookie)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| die(&format!("collect: {e}")));
        if !r.status().is_success() {
            die(&format!("collect: {}", r.status()));
        }
        // `name=value` of each Set-Cookie, as a browser sends them back.
        let mut pairs: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|h| h.to_str().ok())
            .filter_map(|h| h.split(';').next())
            .filter(|kv| kv.starts_with(SESSION_COOKIE) && !kv.ends_with('='))
            .map(str::to_string)
            .collect();
        if pairs.is_empty() {
            die("collect: the answer did not re-write the session (is the server's inactivity set?)");
        }
        pairs.sort();
        lines.insert(pairs.join("; "));
    }
    if lines.len() < n {
        die(&format!(
            "collect: only {} distinct cookies out of {n}",
            lines.len()
        ));
    }
    let text: Vec<String> = lines.into_iter().collect();
    std::fs::write(&out, text.join("\n") + "\n").expect("write");
    eprintln!("collect: {n} distinct session cookies");
}

// ---------------------------------------------------------------------------------------
// tokens: distinct valid access tokens for the shopping API, as many clients would send them:
// machine-to-machine tokens of the provider's client-credentials app (each has its own `jti`).

async fn tokens(args: &[String]) {
    let provider = need(args, "--provider");
    let n: usize = arg(args, "--n")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let out = need(args, "--out");
    let client = reqwest::Client::new();
    let mut set = tokio::task::JoinSet::new();
    let mut tokens = std::collections::BTreeSet::new();
    for i in 0..n {
        let (client, url) = (client.clone(), format!("{provider}/oidc/token"));
        set.spawn(async move {
            let answer: Value = client
                .post(url)
                .basic_auth("m2m-app", Some("m2m-secret"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", SHOPPING),
                    ("scope", "shopping:read"),
                ])
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .unwrap_or_else(|e| die(&format!("tokens: {e}")))
                .json()
                .await
                .unwrap_or_else(|e| die(&format!("tokens: {e}")));
            answer["access_token"]
                .as_str()
                .unwrap_or_else(|| die("tokens: no access_token"))
                .to_string()
        });
        if i % 16 == 15 {
            while let Some(token) = set.join_next().await {
                tokens.insert(token.expect("task"));
            }
        }
    }
    while let Some(token) = set.join_next().await {
        tokens.insert(token.expect("task"));
    }
    if tokens.len() < n {
        die(&format!(
            "tokens: only {} distinct tokens out of {n}",
            tokens.len()
        ));
    }
    let lines: Vec<String> = tokens.into_iter().map(|t| format!("Bearer {t}")).collect();
    std::fs::write(&out, lines.join("\n") + "\n").expect("write");
    eprintln!("tokens: {n} distinct machine-to-machine tokens");
}

// ---------------------------------------------------------------------------------------
// micro: the per-request work, in process (Rocket's local blocking client, no HTTP).

fn parse_cookie_header(header: &str) -> Vec<Cookie<'static>> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            Cookie::new(k.to_string(), v)
        })
        .collect()
}

/// A named operation to time.
type Bench<'a> = (String, Box<dyn FnMut() + 'a>);

/// Times named operations in interleaved batches (round robin, so that a noisy moment hits
/// them all alike); returns (median, min) ns/op of each.
fn time_all(iters: u32, benches: &mut [Bench<'_>]) -> Vec<(f64, f64)> {
    const BATCHES: u32 = 9;
    let per_batch = (iters / BATCHES).max(1);
    for (_, f) in benches.iter_mut() {
        for _ in 0..(iters / 10).max(100) {
            f();
        }
    }
    let mut samples = vec![Vec::new(); benches.len()];
    for _ in 0..BATCHES {
        for (i, (_, f)) in benches.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / per_batch as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (s[s.len() / 2], s[0])
        })
        .collect()
}

fn jwt_payload(jwt: &str) -> Vec<u8> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap_or_else(|| die("not a JWT"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|_| die("bad JWT payload"))
}

fn micro(args: &[String]) {
    use rocket::local::blocking::Client;
    use std::hint::black_box;
    install_recorder();
    let dir = std::path::PathBuf::from(need(args, "--dir"));
    let cookie_file = dir.join("cookie");
    let header = std::fs::read_to_string(&cookie_file).expect("DIR/cookie (written by prepare)");
    let tokens: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokens.json")).expect("DIR/tokens.json"),
    )
    .expect("tokens JSON");
    let iters: u32 = arg(args, "--iters")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let cookies = parse_cookie_header(&header);
    let endpoint = "http://127.0.0.1:9"; // never called: every token used below is cached
    let me_body = std::fs::read_to_string(dir.join("me.json")).unwrap_or_else(|_| "{}".into());
    let app = |inactivity| {
        Client::untracked(rocket_app(
            0,
            endpoint,
            "http://127.0.0.1:8000",
            me_body.clone(),
            inactivity,
            None,
        ))
        .expect("rocket")
    };
    let client = app(None);

    // Writing the session back: with `session_inactivity_secs` set so that this session is due
    // for its rolling re-stamp, every request re-serialises, re-encrypts and re-sets it: the
    // same `session::store` that ends a refresh. `prepare` wrote the session (its `seen_at`) just
    // before the cookie file; the crate re-stamps after clamp(inactivity / 10, 60, 3600) s.
    let age = std::fs::metadata(&cookie_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_secs());
    if age < 62 {
        eprintln!(
            "micro: waiting {} s for the session to be due for a re-stamp",
            62 - age
        );
        std::thread::sleep(Duration::from_secs(62 - age));
    }
    let inactivity = 10 * (age.max(62) / 2).max(60);
    let restamp = app(Some(inactivity));

    let request = |client: &Client, path: &str, expect_set_cookie: bool| {
        let r = client
            .get(path.to_string())
            .header(Accept::JSON)
            .cookies(cookies.clone())
            .dispatch();
        assert_eq!(r.status(), Status::Ok, "{path}");
        if expect_set_cookie {
            assert!(
                r.headers().get("Set-Cookie").next().is_some(),
                "{path}: the session was not written back"
            );
        }
        black_box(r.into_bytes());
    };
    let id_token = tokens["idToken"]
        .as_str()
        .unwrap_or_else(|| die("no idToken"));
    let shopping_token = tokens["resources"][SHOPPING]["token"]
        .as_str()
        .unwrap_or_else(|| die("no shopping token"));
    let claims_json = jwt_payload(id_token);
    let claims_value: IdTokenClaims = serde_json::from_slice(&claims_json).expect("claims");

    // The distinct cookies of the session (`collect`), when bench/run left them in DIR: each
    // request takes the next, so that none is in the decoded-session cache (the cold path).
    let distinct: Vec<Vec<Cookie<'static>>> = std::fs::read_to_string(dir.join("cookies"))
        .map(|text| {
            text.lines()
                .filter(|l| !l.is_empty())
                .map(parse_cookie_header)
                .collect()
        })
        .unwrap_or_default();
    let next = std::cell::Cell::new(0usize);
    let cold = |client: &Client| {
        let i = next.get();
        next.set((i + 1) % distinct.len());
        let r = client
            .get("/me")
            .header(Accept::JSON)
            .cookies(distinct[i].clone())
            .dispatch();
        assert_eq!(r.status(), Status::Ok, "/me, distinct cookie {i}");
        black_box(r.into_bytes());
    };

    let (c, r) = (&client, &restamp);
    let mut requests: Vec<Bench<'_>> = vec![
        (
            "request, plain route (same cookies, same body: the baseline)".into(),
            Box::new(move || request(c, "/plain", false)),
        ),
        (
            "request, decrypting the session cookie(s) only (CookieJar::get_private)".into(),
            Box::new(move || request(c, "/__bench/decrypt", false)),
        ),
        (
            "request, LogtoUser -> claims as JSON".into(),
            Box::new(move || request(c, "/user", false)),
        ),
        (
            "request, AuthenticatedUser -> claims as JSON".into(),
            Box::new(move || request(c, "/me", false)),
        ),
        (
            "request, ResourceToken<R>, cached token -> token as JSON".into(),
            Box::new(move || request(c, "/shopping", false)),
        ),
        (
            "request, AuthenticatedUser + session written back (Set-Cookie)".into(),
            Box::new(move || request(r, "/me", true)),
        ),
    ];
    if !distinct.is_empty() {
        requests.push((
            format!(
                "request, AuthenticatedUser, the next of {} distinct cookies (cold)",
                distinct.len()
            ),
            Box::new(move || cold(c)),
        ));
    }
    // BENCH_MICRO_ONLY=<words>: only the request rows whose name contains them (for a profiler).
    if let Some(only) = env("BENCH_MICRO_ONLY") {
        requests.retain(|(name, _)| name.contains(&only));
        let times = time_all(iters, &mut requests);
        for ((name, _), (median, min)) in requests.iter().zip(times) {
            println!("{name:<76} {median:>10.0} {min:>10.0}");
        }
        return;
    }
    let request_times = time_all(iters, &mut requests);
    let mut parts: Vec<Bench<'_>> = vec![
        (
            "base64url-decode the ID token's payload".into(),
            Box::new(|| {
                black_box(jwt_payload(black_box(id_token)));
            }),
        ),
        (
            "deserialise IdTokenClaims from it (serde_json)".into(),
            Box::new(|| {
                black_box(
                    serde_json::from_slice::<IdTokenClaims>(black_box(&claims_json))
                        .expect("claims"),
                );
            }),
        ),
        (
            "clone the IdTokenClaims (what the LogtoUser route answers)".into(),
            Box::new(|| {
                black_box(black_box(&claims_value).clone());
            }),
        ),
        (
            "serialise the claims to JSON (the claims routes' body)".into(),
            Box::new(|| {
                black_box(serde_json::to_vec(black_box(&claims_value)).expect("ser"));
            }),
        ),
        (
            "decode a cached access token's claims to a JSON Value (AccessToken::new)".into(),
            Box::new(|| {
                black_box(
                    serde_json::from_slice::<Value>(&jwt_payload(black_box(shopping_token)))
                        .expect("claims"),
                );
            }),
        ),
    ];
    // What recording costs (built with `metrics`, the Prometheus recorder installed): the
    // hot paths keep a handle; a lookup per call is what they avoid.
    #[cfg(feature = "metrics")]
    {
        let kept = metrics::counter!("bench_kept_total");
        parts.push((
            "metrics: increment a counter through a kept handle (the hot paths)".into(),
            Box::new(move || kept.increment(1)),
        ));
        parts.push((
            "metrics: look a labelled counter up, then increment it".into(),
            Box::new(|| metrics::counter!("bench_lookup_total", "outcome" => "ok").increment(1)),
        ));
    }
    let part_times = time_all(iters * 5, &mut parts);

    println!("{:<76} {:>10} {:>10}", "operation (ns/op)", "median", "min");
    for ((name, _), (median, min)) in requests
        .iter()
        .chain(parts.iter())
        .zip(request_times.iter().chain(part_times.iter()))
    {
        println!("{name:<76} {median:>10.0} {min:>10.0}");
    }
    let m = |i: usize| request_times[i].0;
    println!();
    println!("derived, from the medians (difference to the plain route):");
    println!(
        "  decrypting the session cookie(s):                    {:>8.0} ns",
        m(1) - m(0)
    );
    println!(
        "  LogtoUser guard + claims clone and body:             {:>8.0} ns",
        m(2) - m(0)
    );
    println!(
        "  AuthenticatedUser guard + claims body (borrowed):   {:>8.0} ns",
        m(3) - m(0)
    );
    println!(
        "  ResourceToken guard (cached token) + token body:     {:>8.0} ns",
        m(4) - m(0)
    );
    println!(
        "  writing the session back (vs AuthenticatedUser):     {:>8.0} ns",
        m(5) - m(3)
    );
    if request_times.len() > 6 {
        println!(
            "  a session not in the cache (vs AuthenticatedUser):   {:>8.0} ns",
            m(6) - m(3)
        );
    }
}

// ---------------------------------------------------------------------------------------
// forge: many distinct cookies of one signed-in session, fast. Each is the same session
// plaintext sealed again by Rocket's private-cookie encryption (AES-256-GCM, a fresh nonce
// each time) with this file's fixed key: to the server each is a cookie it never saw. The
// session's encoding stays the crate's business: only the sealing is redone here.

fn forge(args: &[String]) {
    use base64::Engine;
    let header = std::fs::read_to_string(need(args, "--cookie-file")).expect("cookie file");
    let n: usize = arg(args, "--n")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let out = need(args, "--out");
    let master = base64::engine::general_purpose::STANDARD
        .decode(SECRET_KEY)
        .expect("SECRET_KEY");
    let key = cookie::Key::from(&master);
    // Rocket's private-cookie format (AES-256-GCM under the key's encryption half, the
    // cookie's name as associated data, nonce and tag around the ciphertext, standard
    // base64), with ring: the crate seals its session as bytes, which the cookie crate's
    // private jar (text only) cannot open.
    let aead = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key.encryption()).expect("key"),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let cookies = parse_cookie_header(&header);
    // The session chunks, opened once; other cookies (if any) are kept as they are.
    let mut sealed: Vec<(String, Vec<u8>)> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for c in cookies {
        if c.name().starts_with(SESSION_COOKIE) {
            let name = c.name().to_string();
            let opened = b64.decode(c.value()).ok().and_then(|mut bytes| {
                let nonce = ring::aead::Nonce::try_assume_unique_for_key(bytes.get(..12)?).ok()?;
                let aad = ring::aead::Aad::from(name.as_bytes());
                let plain = aead.open_within(nonce, aad, &mut bytes, 12..).ok()?;
                Some(plain.to_vec())
            });
            let plain = opened
                .unwrap_or_else(|| die(&format!("forge: {name} does not open with the bench key")));
            sealed.push((name, plain));
        } else {
            others.push(format!("{}={}", c.name(), c.value()));
        }
    }
    if sealed.is_empty() {
        die("forge: no session cookie in the cookie file");
    }
    let rng = ring::rand::SystemRandom::new();
    let mut text = String::with_capacity(n * (header.len() + 64));
    for _ in 0..n {
        let mut parts: Vec<String> = Vec::with_capacity(sealed.len() + others.len());
        for (name, plain) in &sealed {
            let mut nonce = [0u8; 12];
            ring::rand::SecureRandom::fill(&rng, &mut nonce).expect("random nonce");
            let mut bytes = nonce.to_vec();
            bytes.extend_from_slice(plain);
            let tag = aead
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(name.as_bytes()),
                    &mut bytes[12..],
                )
                .expect("seal");
            bytes.extend_from_slice(tag.as_ref());
            let c = cookie::Cookie::new(name.clone(), b64.encode(&bytes));
            parts.push(c.encoded().to_string());
        }
        parts.extend(others.iter().cloned());
        text.push_str(&parts.join("; "));
        text.push('\n');
    }
    std::fs::write(&out, text).expect("write");
    eprintln!("forge: {n} distinct cookies of the session");
}

// ---------------------------------------------------------------------------------------
// fake-provider: a small OpenID provider fast enough not to limit the sign-in rows. Its
// authorize endpoint signs nobody in through a form: it answers at once with a redirect to
// `redirect_uri` carrying a fresh code bound to the request (client, redirect URI, PKCE
// challenge, nonce); the token endpoint checks all of them and the client's secret (when it
// sends one), spends the code, and answers a freshly signed ID token for a new user each time.

/// What an authorization code was issued for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    issued: Instant,
}

struct FakeIdp {
    issuer: String,
    /// `base64url(header) + "."`: the same for every token.
    jwt_header: String,
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    discovery: String,
    jwks: String,
    grants: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
    users: std::sync::atomic::AtomicU64,
    /// Requests answered: authorize, token, jwks, discovery.
    counts: [std::sync::atomic::AtomicU64; 4],
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_token(rng: &ring::rand::SystemRandom) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).expect("random");
    b64url(&bytes)
}

impl FakeIdp {
    fn new(port: u16, alg: &str) -> FakeIdp {
        use ring::signature::{EcdsaKeyPair, KeyPair};
        let (signing, crv, coord) = match alg {
            "ES384" => (
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                "P-384",
                48,
            ),
            "ES256" => (
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                "P-256",
                32,
            ),
            other => die(&format!("fake-provider: --alg {other}: ES384 or ES256")),
        };
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("key");
        let point = key.public_key().as_ref(); // 0x04 || x || y
        let kid = format!("bench-{}", alg.to_ascii_lowercase());
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": crv, "kid": kid, "use": "sig", "alg": alg,
            "x": b64url(&point[1..1 + coord]), "y": b64url(&point[1 + coord..]),
        }]})
        .to_string();
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}/oidc");
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "userinfo_endpoint": format!("{issuer}/me"),
            "jwks_uri": format!("{issuer}/jwks"),
            "end_session_endpoint": format!("{issuer}/session/end"),
            "revocation_endpoint": format!("{issuer}/token/revocation"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": true,
        })
        .to_string();
        let jwt_header = b64url(
            json!({ "alg": alg, "typ": "JWT", "kid": kid })
                .to_string()
                .as_bytes(),
        ) + ".";
        FakeIdp {
            issuer,
            jwt_header,
            key,
            rng,
            discovery,
            jwks,
            grants: Default::default(),
            users: Default::default(),
            counts: Default::default(),
        }
    }

    fn count(&self, i: usize) {
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn sign(&self, claims: &Value) -> String {
        let mut jwt = self.jwt_header.clone();
        jwt.push_str(&b64url(claims.to_string().as_bytes()));
        let signature = self.key.sign(&self.rng, jwt.as_bytes()).expect("sign");
        jwt.push('.');
        jwt.push_str(&b64url(signature.as_ref()));
        jwt
    }
}

/// The raw `Authorization` header, if any.
struct AuthorizationHeader<'r>(Option<&'r str>);

#[rocket::async_trait]
impl<'r> rocket::request::FromRequest<'r> for AuthorizationHeader<'r> {
    type Error = ();
    async fn from_request(request: &'r rocket::Request<'_>) -> rocket::request::Outcome<Self, ()> {
        rocket::request::Outcome::Success(AuthorizationHeader(
            request.headers().get_one("Authorization"),
        ))
    }
}

#[get("/oidc/.well-known/openid-configuration")]
fn fake_discovery(idp: &State<FakeIdp>) -> RawJson<String> {
    idp.count(3);
    RawJson(idp.discovery.clone())
}

#[get("/oidc/jwks")]
fn fake_jwks(idp: &State<FakeIdp>) -> RawJson<String> {
    idp.count(2);
    RawJson(idp.jwks.clone())
}

#[get("/oidc/auth")]
fn fake_authorize(
    uri: &rocket::http::uri::Origin<'_>,
    idp: &State<FakeIdp>,
) -> Result<rocket::response::Redirect, (Status, String)> {
    idp.count(0);
    let query = uri.query().map(|q| q.as_str()).unwrap_or("");
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| params.get(k).cloned();
    let bad = |why: &str| (Status::BadRequest, format!("authorize: {why}"));
    if get("response_type").as_deref() != Some("code") {
        return Err(bad("response_type must be code"));
    }
    if get("code_challenge_method").as_deref() != Some("S256") {
        return Err(bad("PKCE S256 is required"));
    }
    let grant = Grant {
        client_id: get("client_id").ok_or_else(|| bad("no client_id"))?,
        redirect_uri: get("redirect_uri").ok_or_else(|| bad("no redirect_uri"))?,
        challenge: get("code_challenge").ok_or_else(|| bad("no code_challenge"))?,
        nonce: get("nonce"),
        issued: Instant::now(),
    };
    let state = get("state").ok_or_else(|| bad("no state"))?;
    let mut target = url::Url::parse(&grant.redirect_uri).map_err(|_| bad("bad redirect_uri"))?;
    let code = random_token(&idp.rng);
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state)
        .append_pair("iss", &idp.issuer);
    {
        let mut grants = idp.grants.lock().expect("grants");
        if grants.len() > 100_000 {
            grants.retain(|_, g| g.issued.elapsed() < Duration::from_secs(60));
        }
        grants.insert(code, grant);
    }
    Ok(rocket::response::Redirect::to(target.to_string()))
}

#[rocket::post("/oidc/token", data = "<body>")]
fn fake_token(
    body: String,
    auth: AuthorizationHeader<'_>,
    idp: &State<FakeIdp>,
) -> Result<RawJson<String>, (Status, RawJson<String>)> {
    use base64::Engine;
    use sha2::Digest;
    idp.count(1);
    let refuse = |error: &str, why: &str| {
        (
            Status::BadRequest,
            RawJson(json!({ "error": error, "error_description": why }).to_string()),
        )
    };
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("authorization_code") {
        return Err(refuse("unsupported_grant_type", "only authorization_code"));
    }
    // client_secret_basic: the secret must be right; without it, client_id in the body.
    let client_id = match auth.0.and_then(|h| h.strip_prefix("Basic ")) {
        Some(basic) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| refuse("invalid_client", "bad Basic credentials"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| refuse("invalid_client", "bad Basic credentials"))?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if decode(secret) != APP_SECRET {
                return Err(refuse("invalid_client", "wrong client secret"));
            }
            decode(id)
        }
        None => get("client_id")
            .ok_or_else(|| refuse("invalid_client", "no client"))?
            .to_string(),
    };
    let code = get("code").ok_or_else(|| refuse("invalid_request", "no code"))?;
    let grant = idp
        .grants
        .lock()
        .expect("grants")
        .remove(code)
        .ok_or_else(|| refuse("invalid_grant", "unknown or used code"))?;
    if grant.issued.elapsed() > Duration::from_secs(60) {
        return Err(refuse("invalid_grant", "expired code"));
    }
    if grant.client_id != client_id || get("client_id").is_some_and(|c| c != client_id) {
        return Err(refuse("invalid_grant", "code of another client"));
    }
    if get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(refuse("invalid_grant", "redirect_uri differs"));
    }
    let verifier = get("code_verifier").ok_or_else(|| refuse("invalid_grant", "no verifier"))?;
    if b64url(&sha2::Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return Err(refuse("invalid_grant", "PKCE verifier does not match"));
    }
    let user = idp.users.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Claims of the size and shape Logto sends for a user with a name, username and email.
    let mut claims = json!({
        "sub": format!("user_{user:08}"),
        "name": format!("Bench User {user}"),
        "picture": null,
        "username": format!("bench{user}"),
        "email": format!("bench{user}@example.com"),
        "email_verified": true,
        "created_at": now * 1000,
        "updated_at": now * 1000,
        "iat": now,
        "exp": now + 3600,
        "iss": idp.issuer,
        "aud": grant.client_id,
    });
    if let Some(nonce) = grant.nonce {
        claims["nonce"] = json!(nonce);
    }
    let id_token = idp.sign(&claims);
    Ok(RawJson(
        json!({
            "access_token": random_token(&idp.rng),
            "expires_in": 3600,
            "id_token": id_token,
            "refresh_token": random_token(&idp.rng),
            "scope": "openid offline_access profile email",
            "token_type": "Bearer",
        })
        .to_string(),
    ))
}

#[get("/__fake/stats")]
fn fake_stats(idp: &State<FakeIdp>) -> Value {
    let n = |i: usize| idp.counts[i].load(std::sync::atomic::Ordering::Relaxed);
    json!({ "authorize": n(0), "token": n(1), "jwks": n(2), "discovery": n(3) })
}

fn fake_provider(args: &[String]) {
    let port: u16 = need(args, "--port")
        .parse()
        .unwrap_or_else(|_| die("--port"));
    let alg = arg(args, "--alg").unwrap_or_else(|| "ES384".into());
    let idp = FakeIdp::new(port, &alg);
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("address", "127.0.0.1"))
        .merge(("port", port))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"))
        .merge(("cli_colors", false));
    let launched = rocket::execute(
        rocket::custom(figment)
            .manage(idp)
            .mount(
                "/",
                routes![
                    fake_discovery,
                    fake_jwks,
                    fake_authorize,
                    fake_token,
                    fake_stats
                ],
            )
            .attach(rocket::fairing::AdHoc::on_liftoff("ready", move |_| {
                Box::pin(async move {
                    println!("BENCH_FAKE_PROVIDER_READY http://127.0.0.1:{port}");
                })
            }))
            .launch(),
    );
    if let Err(e) = launched {
        die(&format!("fake-provider: {e}"));
    }
}

// ---------------------------------------------------------------------------------------
// signins: N concurrent browsers, each signing in again and again through an app (Rocket's
// or @logto/express's) and the provider: GET /logto/sign-in (a redirect that sets the
// transaction cookie), the provider's authorize URL (a redirect back with a code), the
// callback with that cookie (code exchange and ID-token check in the app). A sign-in counts
// when the callback redirects to the expected place and sets the session cookie; any other
// answer is an error, and errors fail the run.

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `name=value` of each Set-Cookie that sets a value (not a removal).
fn set_cookie_pairs(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .filter_map(|h| h.split(';').next())
        .filter(|kv| kv.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .map(str::to_string)
        .collect()
}

/// The Location of a redirect of the app (`status`: 303 for rocket_logto, 302 for Express's
/// `res.redirect`) or of the provider (`None`: 302 or 303).
fn redirect_target(
    r: &reqwest::Response,
    step: &str,
    status: Option<u16>,
) -> Result<String, String> {
    let code = r.status().as_u16();
    if status.map_or(!matches!(code, 302 | 303), |s| s != code) {
        return Err(format!("{step}: {} instead of a redirect", r.status()));
    }
    r.headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| format!("{step}: a redirect without Location"))
}

async fn one_sign_in(
    client: &reqwest::Client,
    app: &str,
    session_cookie: &str,
    expect_location: &str,
    status: Option<u16>,
) -> Result<(), String> {
    let fail = |step: &str, e: reqwest::Error| format!("{step}: {e}");
    let r = client
        .get(format!("{app}/logto/sign-in"))
        .send()
        .await
        .map_err(|e| fail("sign-in", e))?;
    let authorize = redirect_target(&r, "sign-in", status)?;
    let cookies = set_cookie_pairs(&r);
    r.bytes().await.map_err(|e| fail("sign-in", e))?;
    if cookies.is_empty() {
        return Err("sign-in: no transaction cookie was set".into());
    }
    let r = client
        .get(&authorize)
        .send()
        .await
        .map_err(|e| fail("authorize", e))?;
    let callback = redirect_target(&r, "authorize", None)?;
    r.bytes().await.map_err(|e| fail("authorize", e))?;
    let r = client
        .get(&callback)
        .header("Cookie", cookies.join("; "))
        .send()
        .await
        .map_err(|e| fail("callback", e))?;
    let landed = redirect_target(&r, "callback", status);
    let session = set_cookie_pairs(&r)
        .iter()
        .any(|kv| kv.starts_with(&format!("{session_cookie}=")));
    let body = r.text().await.unwrap_or_default();
    let landed =
        landed.map_err(|e| format!("{e}: {}", body.chars().take(300).collect::<String>()))?;
    if landed != expect_location {
        return Err(format!(
            "callback: redirected to {landed}, not {expect_location}"
        ));
    }
    if !session {
        return Err(format!("callback: no {session_cookie} cookie was set"));
    }
    Ok(())
}

async fn signins(args: &[String]) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let app = need(args, "--app");
    let conns: usize = arg(args, "--conns")
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let warmup: f64 = arg(args, "--warmup")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let duration: f64 = arg(args, "--duration")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let session_cookie = need(args, "--session-cookie");
    let expect_location = need(args, "--expect-location");
    // --redirect-status 303: the app's two redirects must have it (else any of 302, 303).
    let status: Option<u16> = arg(args, "--redirect-status").and_then(|s| s.parse().ok());
    // --pids app=123,provider=456: CPU time of these processes over the measured window.
    let pids: Vec<(String, String)> = arg(args, "--pids")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(std::iter::once(("driver".to_string(), "self".to_string())))
        .collect();
    let clk_tck: f64 = arg(args, "--clk-tck")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(conns * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (client, app, cookie, expect) = (
                client.clone(),
                app.clone(),
                session_cookie.clone(),
                expect_location.clone(),
            );
            let (stop, errors, first_error) = (stop.clone(), errors.clone(), first_error.clone());
            tokio::spawn(async move {
                let mut done: Vec<(Instant, Duration)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    match one_sign_in(&client, &app, &cookie, &expect, status).await {
                        Ok(()) => done.push((Instant::now(), start.elapsed())),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().expect("error").get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let cpu = || -> Vec<Option<u64>> { pids.iter().map(|(_, pid)| cpu_ticks(pid)).collect() };
    let (cpu0, t0) = (cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    let (cpu1, t1) = (cpu(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        for (end, took) in t.await.expect("task") {
            if end >= t0 && end <= t1 {
                latencies.push(took);
            }
        }
    }
    let secs = (t1 - t0).as_secs_f64();
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((p / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let cpu_shares: Vec<String> = pids
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|((name, _), (a, b))| match (a, b) {
            (Some(a), Some(b)) => format!("cpu_{name}={:.3}", (b - a) as f64 / clk_tck / secs),
            _ => format!("cpu_{name}=nan"),
        })
        .collect();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "SIGNIN_RESULT signins={n} rate={:.1} p50_ms={:.2} p99_ms={:.2} errors={errors} conns={conns} {}",
        n as f64 / secs,
        pct(50.0),
        pct(99.0),
        cpu_shares.join(" ")
    );
    if errors > 0 || n == 0 {
        die(&format!(
            "signins: {errors} failed sign-ins; first: {}",
            first_error
                .lock()
                .expect("error")
                .clone()
                .unwrap_or_else(|| "none completed".into())
        ));
    }
}
