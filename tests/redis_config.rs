//! Issue 11, the Redis settings at launch: a malformed `redis_url` refuses to launch with a
//! message naming the key; an unreachable Redis or a wrong password does not stop the launch
//! (sign-in and claims work, refreshes answer 503 and recover once Redis is right); the
//! password never reaches a log line, whatever fails. Its own test binary: it installs a
//! capturing logger (every target, the Redis client's included) before Rocket can.
//! (A build without the `redis` feature refusing `redis_url`:
//! `src/store/mod.rs::a_build_without_the_feature_refuses_a_configured_redis_url`.)

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::{Mutex, Once};

use app::*;
use fake_flow::*;
use fake_provider::FakeProvider;
use redis_server::RedisServer;
use rocket::http::Status;
use rocket::local::asynchronous::Client;
use serde_json::json;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap()
            .push(format!("[{}] {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("first logger");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn lines_with(word: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(word))
        .cloned()
        .collect()
}

fn assert_never_logged(secret: &str) {
    let leaked = lines_with(secret);
    assert!(
        leaked.is_empty(),
        "the password reached the log: {leaked:#?}"
    );
}

/// A free loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[rocket::async_test]
async fn a_malformed_redis_url_refuses_to_launch_naming_the_key() {
    capture_logs();
    let fp = FakeProvider::start().await;
    for url in [
        "",
        "http://:pw-malformed-1@127.0.0.1:6379",
        "redis://:pw-malformed-2@127.0.0.1:6379/notadb",
        "redis://:pw-malformed-3@",
    ] {
        let mut logto = table(&fp);
        merge(&mut logto, &json!({ "redis_url": url }));
        match Client::untracked(rocket_with(logto, SECRET_KEY)).await {
            Ok(_) => panic!("{url:?} launched"),
            // Looking at the kind marks Rocket's error handled (else it panics when dropped).
            Err(e) => assert!(
                matches!(e.kind(), rocket::error::ErrorKind::FailedFairings(_)),
                "{url:?}: {e}"
            ),
        }
        let named = lines_with("`redis_url`");
        assert!(!named.is_empty(), "no message names redis_url");
    }
    for n in 1..=3 {
        assert_never_logged(&format!("pw-malformed-{n}"));
    }
}

#[rocket::async_test]
async fn an_unreachable_redis_does_not_stop_the_launch_and_its_password_is_never_logged() {
    capture_logs();
    let fp = FakeProvider::start().await;
    let password = "pw-unreachable-7f3a";
    let mut logto = table(&fp);
    merge(
        &mut logto,
        &json!({
            "redis_url": format!("redis://app:{password}@127.0.0.1:{}", closed_port()),
            "redis_timeout_ms": 300,
        }),
    );
    // Launches although Redis is down; signing in needs no Redis.
    let client = signed_in(&fp, logto, "user-1").await;
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    assert_eq!(fp.count("/token"), 1, "only the sign-in's code exchange");
    assert!(
        !lines_with("app:***@127.0.0.1").is_empty(),
        "the URL is shown with its password masked: {:#?}",
        lines_with("redis")
    );
    assert_never_logged(password);
}

#[rocket::async_test]
async fn a_wrong_redis_password_is_reported_without_the_password_and_the_right_one_works() {
    capture_logs();
    let redis = RedisServer::start_with(&["--requirepass", "pw-right-91c2"]).await;
    let fp = FakeProvider::start().await;
    let url = |password: &str| format!("redis://:{password}@127.0.0.1:{}", redis.port);

    let mut wrong = table(&fp);
    merge(
        &mut wrong,
        &json!({ "redis_url": url("pw-wrong-5e1d"), "redis_timeout_ms": 300 }),
    );
    let client = signed_in(&fp, wrong, "user-1").await;
    let (status, _) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::ServiceUnavailable);
    assert!(
        !lines_with("Redis failed").is_empty() || !lines_with("Redis did not answer").is_empty(),
        "the failure is logged: {:#?}",
        lines_with("Redis")
    );

    let mut right = table(&fp);
    merge(&mut right, &json!({ "redis_url": url("pw-right-91c2") }));
    let client = signed_in(&fp, right, "user-1").await;
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{body}");

    assert_never_logged("pw-wrong-5e1d");
    assert_never_logged("pw-right-91c2");
}
