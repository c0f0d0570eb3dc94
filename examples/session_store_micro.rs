//! Per-request cost of `AuthenticatedUser` with the cookie session store and with the Redis
//! session store (issue 12), in process (Rocket's local client, no network): 30 interleaved
//! batches of 2000 requests per store, the fastest batch of each kept, so that other processes
//! on the machine disturb it little. The same signed-in session for both: its cookies as
//! `bench/run` made them, and for the Redis store the id cookie it gets when its first request
//! moves it into Redis. Run by `bench/session_store.sh`, which passes:
//!
//! `SECRET` (bench_server's `secret_key`), `REDIS_URL`, `COOKIE_FILE` (the `Cookie` header of
//! the session), `BASE` (the `base_url` it was made with: its scheme picks the cookie names).
use std::time::{Duration, Instant};

use rocket::figment::Figment;
use rocket::http::{Accept, Status};
use rocket::local::asynchronous::Client;
use rocket::serde::json::Json;
use rocket::{get, routes};
use rocket_logto::{AuthenticatedUser, IdTokenClaims, Logto};

#[get("/me")]
fn me(user: AuthenticatedUser) -> Json<IdTokenClaims> {
    Json(user.claims().clone())
}

async fn client(secret: &str, redis: &str, store: &str) -> Client {
    let logto = serde_json::json!({
        "endpoint": "http://127.0.0.1:9", "app_id": "sample-app", "app_secret": "sample-secret",
        "base_url": std::env::var("BASE").unwrap_or_else(|_| "http://127.0.0.1:8000".into()), "redis_url": redis, "session_store": store,
        "scopes": ["email", "custom_data", "urn:logto:scope:organizations", "urn:logto:scope:organization_roles",
                   "shopping:read", "shopping:write", "store:read"],
        "resources": ["https://shopping.example.com/api", "https://store.example.com/api"],
    });
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("secret_key", secret))
        .merge(("log_level", "off"))
        .merge(("logto", logto));
    Client::untracked(
        rocket::custom(figment)
            .attach(Logto::fairing())
            .mount("/", routes![me]),
    )
    .await
    .unwrap()
}

async fn batch(client: &Client, cookie: &str, n: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let r = client
            .get("/me")
            .cookies(parse(cookie))
            .header(Accept::JSON)
            .dispatch()
            .await;
        assert_eq!(r.status(), Status::Ok);
        let _ = r.into_bytes().await;
    }
    start.elapsed() / n
}

fn parse(header: &str) -> Vec<rocket::http::Cookie<'static>> {
    rocket::http::Cookie::split_parse_encoded(header.to_string())
        .filter_map(Result::ok)
        .collect()
}

#[rocket::main]
async fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is needed"));
    let secret = var("SECRET");
    let redis = var("REDIS_URL");
    let cookie = std::fs::read_to_string(var("COOKIE_FILE")).expect("the cookie file");
    let cookie = cookie.trim().to_string();
    let cookie_client = client(&secret, &redis, "cookie").await;
    let redis_client = client(&secret, &redis, "redis").await;
    let moved = redis_client
        .get("/me")
        .cookies(parse(&cookie))
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(moved.status(), Status::Ok);
    let sid = moved
        .headers()
        .get("Set-Cookie")
        .find(|c| c.starts_with("logto_sid="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    println!(
        "cookie header: cookie store {} bytes, Redis store {} bytes",
        cookie.len(),
        sid.len()
    );
    let (mut best_c, mut best_r) = (Duration::MAX, Duration::MAX);
    for _ in 0..30 {
        best_c = best_c.min(batch(&cookie_client, &cookie, 2000).await);
        best_r = best_r.min(batch(&redis_client, &sid, 2000).await);
    }
    println!(
        "AuthenticatedUser /me, in process, fastest of 30 batches of 2000: cookie store {:?}/request, Redis store {:?}/request; Redis store at {:.2}x the cookie store's requests/s",
        best_c, best_r, best_c.as_secs_f64() / best_r.as_secs_f64()
    );
}
