//! Issue 23, health and readiness (`Logto::health_routes`), against the real provider and a
//! real `redis-server`: ready after start; 503 naming `redis` while Redis is stopped; ready
//! again once it is back, without a restart; 503 naming `discovery` when Logto is down before
//! the first discovery. State changes are waited for by polling, with a ceiling that only
//! matters when something is broken.

#[path = "support/app.rs"]
mod app;
#[path = "support/real_provider.rs"]
mod real_provider;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use app::{logto_table, merge, rocket_with, SECRET_KEY};
use real_provider::{ProviderOptions, RealProvider};
use redis_server::RedisServer;
use rocket::http::Status;
use rocket::local::asynchronous::Client;
use rocket_logto::Logto;
use serde_json::{json, Value};

/// The ceiling of every wait for a state change.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

async fn client(logto: Value) -> Client {
    let rocket = rocket_with(logto, SECRET_KEY).mount("/health", Logto::health_routes());
    Client::untracked(rocket).await.expect("valid rocket")
}

async fn ready(client: &Client) -> (Status, Value) {
    let response = client.get("/health/ready").dispatch().await;
    let status = response.status();
    assert_eq!(
        response.headers().get_one("Cache-Control"),
        Some("no-store")
    );
    let body = response.into_string().await.unwrap_or_default();
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, json)
}

/// Polls readiness until `done` holds for its answer; fails with the last answer after
/// [`WAIT`].
async fn wait_for(client: &Client, what: &str, done: impl Fn(Status, &Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = ready(client).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never became {what}: last {status} {body}"
        );
        tokio::time::sleep(POLL).await; // polling for the state change, bounded
    }
}

#[rocket::async_test]
async fn ready_with_logto_and_redis_then_503_naming_redis_while_it_is_stopped_then_ready_again() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let mut redis = RedisServer::start().await;
    let mut logto = logto_table(
        &provider.endpoint,
        &provider.options.app_id,
        &provider.options.app_secret,
    );
    merge(
        &mut logto,
        &json!({ "redis_url": redis.url(), "redis_timeout_ms": 300 }),
    );
    let client = client(logto).await;

    // Liveness does not depend on anything.
    let live = client.get("/health/live").dispatch().await;
    assert_eq!(live.status(), Status::Ok);

    let body = wait_for(&client, "ready", |s, _| s == Status::Ok).await;
    assert_eq!(
        body,
        json!({ "status": "ready", "checks": {
            "discovery": "ok", "jwks": "ok", "redis": "ok", "redis_subscription": "ok" } })
    );

    redis.stop().await;
    let body = wait_for(&client, "503 naming redis", |s, b| {
        s == Status::ServiceUnavailable && b["checks"]["redis"] == "down"
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["discovery"], "ok", "{body}");
    let live = client.get("/health/live").dispatch().await;
    assert_eq!(live.status(), Status::Ok, "alive while Redis is down");

    redis.restart().await;
    let body = wait_for(&client, "ready again", |s, _| s == Status::Ok).await;
    assert_eq!(body["checks"]["redis_subscription"], "ok");

    // Nothing secret in the answer: no URL, password or endpoint.
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains(&provider.options.app_secret));
}

#[rocket::async_test]
async fn not_ready_naming_discovery_while_logto_is_down_before_the_first_discovery() {
    // The real provider, stopped before the app starts: its port then refuses connections.
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let (endpoint, options) = (provider.endpoint.clone(), provider.options.clone());
    drop(provider);
    let address = endpoint.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(&address).is_ok() {
        assert!(Instant::now() < deadline, "the provider did not stop");
        tokio::time::sleep(POLL).await; // polling for the process to be gone, bounded
    }
    let logto = logto_table(&endpoint, &options.app_id, &options.app_secret);
    let client = client(logto).await;

    let body = wait_for(&client, "503 naming discovery", |s, b| {
        s == Status::ServiceUnavailable && b["checks"]["discovery"] == "unreachable"
    })
    .await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["jwks"], "not_loaded");
    assert!(
        body["checks"].get("redis").is_none(),
        "no Redis check without redis_url: {body}"
    );
    let live = client.get("/health/live").dispatch().await;
    assert_eq!(live.status(), Status::Ok);
}
