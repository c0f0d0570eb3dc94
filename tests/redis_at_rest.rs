//! Issue 11, "Nothing secret in Redis in the clear": after a sign-in, a refresh, a sign-out
//! and a back-channel logout, every key and value Redis holds is read: no token and no claim
//! appears, keys carry hashes, every key has a TTL. Then the stored values are tampered
//! with (flipped bytes): an instance that reads them refuses them, sends nothing to Logto
//! and signs that copy of the session out, where it followed the rotation before.
//!
//! In-process instances (Rocket's local client) with the fake provider, on a Redis of their
//! own. Needs `redis-server` (scripts/setup).

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/redis_server.rs"]
mod redis_server;

use app::*;
use fake_flow::*;
use fake_provider::{default_profile, FakeProvider, TokenStatus};
use redis::AsyncCommands;
use redis_server::RedisServer;
use rocket::http::{Accept, ContentType, Cookie, Status};
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};

/// The longest a change may take to show before a test fails: the polls end as soon as it
/// does, so this is a ceiling for a busy shared runner, not a bound the crate promises.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

fn redis_table(fp: &FakeProvider, redis: &RedisServer) -> Value {
    let mut logto = table(fp);
    merge(&mut logto, &json!({ "redis_url": redis.url() }));
    logto
}

/// The cookies a tracked client holds now.
fn cookies_of(client: &Client) -> Vec<Cookie<'static>> {
    client
        .cookies()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

async fn shopping_with(client: &Client, cookies: &[Cookie<'static>]) -> (Status, Value) {
    let response = client
        .get("/shopping")
        .header(Accept::JSON)
        .cookies(cookies.to_vec())
        .dispatch()
        .await;
    let status = response.status();
    (status, response.into_json().await.unwrap_or(Value::Null))
}

/// Every key with its type, TTL and contents (string values as bytes; set and sorted-set
/// members one per entry).
async fn dump(redis: &RedisServer) -> Vec<(String, String, i64, Vec<Vec<u8>>)> {
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        let ttl: i64 = c.pttl(&key).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![c.get(&key).await.unwrap()],
            "zset" => c.zrange(&key, 0, -1).await.unwrap(),
            "set" => c.smembers(&key).await.unwrap(),
            other => panic!("unexpected {other} key {key}"),
        };
        out.push((key, kind, ttl, values));
    }
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// The longest run of bytes that could be text of a token (base64url and JWT characters).
fn longest_token_like_run(bytes: &[u8]) -> usize {
    bytes
        .split(|b| !(b.is_ascii_alphanumeric() || b"-_.".contains(b)))
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

#[rocket::async_test]
async fn redis_holds_no_token_and_no_claim_and_tampered_values_are_refused() {
    let redis = RedisServer::start().await;
    let fp = FakeProvider::start().await;
    let logto = redis_table(&fp, &redis);

    // Instance A: a sign-in, then a token for the shopping API, which the session does not
    // hold yet: a refresh (Logto rotates the refresh token).
    let a = signed_in(&fp, logto.clone(), "user-1").await;
    let before = cookies_of(&a);
    let (status, token) = get_json(&a, "/shopping").await;
    assert_eq!(status, Status::Ok, "{token}");
    let access_token = token["access_token"].as_str().unwrap().to_string();
    let token_requests = fp.count("/token");
    // Another user signs in and out (an ended session), a third is logged out by Logto.
    let d = signed_in(&fp, logto.clone(), "user-2").await;
    assert_eq!(
        d.get("/logto/sign-out").dispatch().await.status(),
        Status::SeeOther
    );
    let logout = fp.sign_jwt(
        json!({}),
        fp.logout_token_claims(Some("user-3"), Some("sid-of-user-3")),
    );
    let jti = fake_provider::jwt_claims(&logout)["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let posted = a
        .post("/logto/backchannel-logout")
        .header(ContentType::Form)
        .body(format!("logout_token={logout}"))
        .dispatch()
        .await;
    assert_eq!(posted.status(), Status::Ok);

    // Everything Redis holds.
    let stored = dump(&redis).await;
    let mut secrets: Vec<String> = fp.issued_tokens();
    secrets.push(access_token.clone());
    secrets.extend(access_token.split('.').map(str::to_string));
    secrets.push(logout.clone());
    secrets.push(jti);
    for user in ["user-1", "user-2", "user-3"] {
        for value in default_profile(user).values() {
            if let Some(text) = value.as_str() {
                secrets.push(text.to_string());
            }
        }
        secrets.push(user.to_string());
    }
    secrets.push("sid-of-user-3".into());
    let kinds: Vec<&str> = stored
        .iter()
        .map(|(key, ..)| {
            key.strip_prefix("rocket_logto:")
                .unwrap()
                .split([':', '{'])
                .next()
                .unwrap()
        })
        .collect();
    println!("Redis after sign-in, refresh, sign-out, back-channel logout: {kinds:?}");
    for expected in ["res", "rot", "spent", "ended", "jti"] {
        assert!(kinds.contains(&expected), "no {expected} key in {kinds:?}");
    }
    for (key, kind, ttl, values) in &stored {
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
        assert!(key.starts_with("rocket_logto:"), "{key}");
        for secret in &secrets {
            assert!(!contains(key.as_bytes(), secret), "{key} holds {secret:?}");
            for value in values {
                assert!(!contains(value, secret), "{key} ({kind}) holds {secret:?}");
            }
        }
        for value in values {
            // Hashes (43 characters) in names and members; otherwise nothing token-like.
            assert!(
                longest_token_like_run(value) <= 43,
                "{key} holds {} token-like bytes: {:?}",
                longest_token_like_run(value),
                String::from_utf8_lossy(value)
            );
        }
        if key.contains(":res:") || key.contains(":rot:") {
            let value = &values[0];
            let sealed = value.iter().position(|&b| b == 1).unwrap();
            assert!(
                value.len() - sealed > 1 + 12 + 16,
                "{key} is not a sealed value"
            );
        }
    }

    // Another instance, told nothing but Redis: follows the rotation, sends nothing.
    let b = untracked(logto.clone()).await;
    let (status, replay) = shopping_with(&b, &before).await;
    assert_eq!(status, Status::Ok, "{replay}");
    assert_eq!(replay["access_token"], access_token.as_str());
    assert_eq!(
        fp.count("/token"),
        token_requests + 1,
        "only user-2's sign-in"
    );

    // Flip one byte of every sealed value, in place (same TTL).
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut flipped = 0;
    for (key, _, ttl, values) in &stored {
        if key.contains(":res:") || key.contains(":rot:") {
            let mut value = values[0].clone();
            let last = value.len() - 1;
            value[last] ^= 0x20;
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(*ttl)
                .query_async(&mut c)
                .await
                .unwrap();
            flipped += 1;
        }
    }
    assert!(flipped >= 2);
    // A third instance reads them: refused, nothing sent, that copy of the session ends.
    let c3 = untracked(logto.clone()).await;
    let response = c3
        .get("/shopping")
        .header(Accept::JSON)
        .cookies(before.clone())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    assert!(
        set_cookies(&response)
            .iter()
            .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")),
        "the copy is signed out"
    );
    assert_eq!(
        fp.count("/token"),
        token_requests + 1,
        "nothing sent to Logto"
    );
    // The browser holding the current cookies is untouched.
    let current: Vec<String> = fp
        .issued_tokens()
        .into_iter()
        .filter(|t| fp.refresh_token_status(t) == TokenStatus::RotatedOut)
        .collect();
    assert_eq!(current.len(), 1, "one rotation, no revocation");
    let (status, _) = get_json(&a, "/shopping").await;
    assert_eq!(status, Status::Ok);
}

/// Watches every command Redis receives (`redis-cli monitor`), to count round trips.
struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    marker: redis::aio::MultiplexedConnection,
    _child: tokio::process::Child,
}

impl Monitor {
    async fn start(redis: &RedisServer) -> Monitor {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli monitor");
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let mut reader = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let marker = redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut monitor = Monitor {
            lines,
            marker,
            _child: child,
        };
        monitor.mark("start").await;
        monitor
    }

    /// Sends a marker command and waits until the monitor saw it.
    async fn mark(&mut self, label: &str) {
        let word = format!("mark:{label}");
        let started = std::time::Instant::now();
        loop {
            let _: String = redis::cmd("ECHO")
                .arg(&word)
                .query_async(&mut self.marker)
                .await
                .unwrap();
            let seen = |lines: &Vec<String>| lines.iter().any(|l| l.contains(&word));
            for _ in 0..50 {
                if seen(&self.lines.lock().unwrap()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(started.elapsed().as_secs() < 10, "monitor never saw {word}");
        }
    }

    /// Round trips (commands sent by the app, not run inside its scripts) between two marks.
    fn between(&self, from: &str, to: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let start = lines
            .iter()
            .position(|l| l.contains(&format!("mark:{from}\"")))
            .unwrap();
        let end = lines
            .iter()
            .position(|l| l.contains(&format!("mark:{to}\"")))
            .unwrap();
        lines[start + 1..end]
            .iter()
            .filter(|l| !l.contains(" lua]"))
            .filter(|l| !l.contains("\"ECHO\"") && !l.contains("\"echo\""))
            .filter(|l| !l.to_ascii_lowercase().contains("\"ping\""))
            .map(|l| l.split('"').nth(1).unwrap_or_default().to_ascii_uppercase())
            .collect()
    }
}

#[rocket::async_test]
async fn redis_round_trips_per_sign_in_refresh_and_sign_out() {
    let redis = RedisServer::start().await;
    let fp = FakeProvider::start().await;
    let logto = redis_table(&fp, &redis);
    // A first round loads the scripts into Redis (a script's first use costs one more trip).
    let warm = signed_in(&fp, logto.clone(), "user-0").await;
    assert_eq!(get_json(&warm, "/shopping").await.0, Status::Ok);
    warm.get("/logto/sign-out").dispatch().await;
    let a = client(logto.clone()).await;
    let b = untracked(logto.clone()).await;
    let mut monitor = Monitor::start(&redis).await;

    monitor.mark("sign-in").await;
    assert_eq!(sign_in(&a, &fp, "user-1").await.0, Status::SeeOther);
    let before = cookies_of(&a);
    monitor.mark("refresh").await;
    assert_eq!(get_json(&a, "/shopping").await.0, Status::Ok);
    monitor.mark("other-instance").await;
    assert_eq!(shopping_with(&b, &before).await.0, Status::Ok);
    monitor.mark("requests").await;
    for _ in 0..50 {
        assert_eq!(get_json(&a, "/me").await.0, Status::Ok);
        assert_eq!(get_json(&a, "/shopping").await.0, Status::Ok);
        assert_eq!(shopping_with(&b, &before).await.0, Status::Ok);
    }
    monitor.mark("sign-out").await;
    assert_eq!(
        a.get("/logto/sign-out").dispatch().await.status(),
        Status::SeeOther
    );
    monitor.mark("back-channel").await;
    let logout = fp.sign_jwt(json!({}), fp.logout_token_claims(Some("user-3"), None));
    let posted = b
        .post("/logto/backchannel-logout")
        .header(ContentType::Form)
        .body(format!("logout_token={logout}"))
        .dispatch()
        .await;
    assert_eq!(posted.status(), Status::Ok);
    monitor.mark("end").await;

    let phases = [
        ("sign-in", "refresh", 0),
        ("refresh", "other-instance", 2),
        ("other-instance", "requests", 2),
        ("requests", "sign-out", 0),
        ("sign-out", "back-channel", 1),
        ("back-channel", "end", 2),
    ];
    for (from, to, expected) in phases {
        let trips = monitor.between(from, to);
        println!("Redis round trips, {from}: {} {trips:?}", trips.len());
        assert_eq!(trips.len(), expected, "{from}: {trips:?}");
    }
}

#[rocket::async_test]
async fn with_redis_down_a_due_refresh_serves_the_cached_token_while_it_is_valid() {
    let mut redis = RedisServer::start().await;
    let fp = FakeProvider::start().await;
    // Tokens live 30 s, under the 60 s refresh margin: every use asks for a refresh.
    fp.set(|b| b.access_token_ttl = 30);
    let mut logto = redis_table(&fp, &redis);
    merge(&mut logto, &json!({ "redis_timeout_ms": 300 }));
    let a = signed_in(&fp, logto, "user-1").await;
    let (status, first) = get_json(&a, "/shopping").await;
    assert_eq!(status, Status::Ok);
    let token_requests = fp.count("/token");
    redis.stop().await;
    // Due for a refresh, Redis down: the cached token, still valid, is served; nothing sent.
    let response = a.get("/shopping").header(Accept::JSON).dispatch().await;
    assert_eq!(response.status(), Status::Ok);
    assert!(
        set_cookies(&response).is_empty(),
        "the session is unchanged"
    );
    let again: Value = response.into_json().await.unwrap();
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(fp.count("/token"), token_requests);
}

#[rocket::async_test]
async fn redis_fail_closed_refuses_sessions_while_redis_is_down_and_keeps_their_cookies() {
    let mut redis = RedisServer::start().await;
    let fp = FakeProvider::start().await;
    let mut logto = redis_table(&fp, &redis);
    merge(
        &mut logto,
        &json!({ "redis_fail_closed": true, "redis_timeout_ms": 300 }),
    );
    let a = signed_in(&fp, logto, "user-1").await;
    let poll = |want: Status| {
        let a = &a;
        async move {
            let started = std::time::Instant::now();
            loop {
                let response = a.get("/me").header(Accept::JSON).dispatch().await;
                if response.status() == want {
                    return set_cookies(&response);
                }
                assert!(started.elapsed() < SETTLE, "never {want}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    poll(Status::Ok).await;
    redis.stop().await;
    let cookies = poll(Status::Unauthorized).await;
    assert!(cookies.is_empty(), "the cookies are kept: {cookies:?}");
    redis.restart().await;
    poll(Status::Ok).await;
}
