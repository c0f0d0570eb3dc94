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
//! bench_server free-port
//! ```
//!
//! `serve` reads `BENCH_PORT`, `BENCH_ENDPOINT` (the provider), `BENCH_BASE_URL`, and optionally
//! `BENCH_PLAIN_BODY` (a file: the body the plain route answers, so that it sends the same bytes as
//! the claims routes without a guard) and `BENCH_SESSION_INACTIVITY` (seconds).
//!
//! Routes: `/plain` (no guard), `/user` (`LogtoUser`, claims as JSON), `/me` (`AuthenticatedUser`,
//! claims as JSON), `/shopping` (`ResourceToken<Shopping>`, the token as JSON), `/api/shopping`
//! (`BearerToken<Shopping>`, then the plain route's bytes), `/baseline/shopping` (the same bytes
//! after a check of the bearer token on every request with the `jsonwebtoken` crate, as Logto's
//! "Protect your API" page does it: no cache), and the bench-only `/__bench/decrypt` (decrypts
//! the session cookies with Rocket's `CookieJar::get_private` and nothing else: the decryption
//! share of a guard, for `micro`). `BENCH_BEARER_CACHE` sets `bearer_cache_entries`.
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
    AccessToken, AuthenticatedUser, BearerToken, IdTokenClaims, Logto, LogtoUser, Resource,
    ResourceToken,
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
/// The session cookies (see src/session.rs): `logto_session`, `logto_session_1`, ...
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
fn me(user: AuthenticatedUser) -> Json<IdTokenClaims> {
    Json(user.claims().clone())
}

#[get("/shopping")]
fn shopping(token: ResourceToken<Shopping>) -> Json<AccessToken> {
    Json(token.token().clone())
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
    for i in 0..MAX_CHUNKS {
        if std::hint::black_box(jar.get_private(&chunk_name(i))).is_none() {
            break;
        }
    }
    RawJson(body.0.as_str())
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
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("address", "127.0.0.1"))
        .merge(("port", port))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"))
        .merge(("cli_colors", false))
        .merge(("logto", logto));
    let rocket = rocket::custom(figment)
        .attach(Logto::fairing())
        .manage(PlainBody(plain_body))
        .mount(
            "/",
            routes![plain, user, me, shopping, api_shopping, decrypt],
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
        Some("free-port") => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            println!("{}", l.local_addr().expect("addr").port());
        }
        _ => die("usage: bench_server serve|prepare|storm|micro|free-port (see the file's header)"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
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
            "clone the IdTokenClaims (what the claims routes answer)".into(),
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
        "  AuthenticatedUser guard + claims clone and body:     {:>8.0} ns",
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
}
