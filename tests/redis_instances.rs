//! Issue 11, "Many instances, one Redis": three instances of the app, each a process of its
//! own with the same `secret_key`, behind a round-robin front, sharing one Redis, against
//! the real Logto-like provider (rotation on every refresh, reuse revokes the grant).
//!
//! - sign-in starts on one instance and its callback lands on another;
//! - 30 concurrent requests of one session needing a refresh, spread over the instances,
//!   make exactly one refresh call and the grant stays valid;
//! - the pre-rotation cookies replayed on each instance make no call and revoke nothing;
//! - a sign-out on one instance: the old cookies get 401 on every instance;
//! - a back-channel logout posted to one instance: 401 on every instance within 1 s, and its
//!   `jti` is refused by the others;
//! - Redis hanging, then stopped: claims routes answer, refresh routes answer 503 with
//!   `Retry-After` within the timeout and send nothing; restarted: everything recovers with
//!   exactly one refresh, and a sign-out made during the outage reaches every instance;
//! - an instance killed while it holds the lease of a refresh: after the lease, another
//!   instance asks Logto (introspection) whether the token is still good; if Logto never
//!   handled the request, or kept the token (as it does for a confidential app until 70% of
//!   the token's lifetime), that instance completes the refresh; if Logto rotated it, the
//!   session ends and the token is never resent. The grant stays valid in every case.
//!
//! Needs `redis-server` (scripts/setup) and `npm ci --prefix tests/provider`. Figures are
//! printed (`cargo test --all-features --test redis_instances -- --nocapture`).

#[path = "support/app.rs"]
mod app;
#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/instances.rs"]
mod instances;
#[path = "support/real_provider.rs"]
mod real_provider;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/round_robin.rs"]
mod round_robin;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use deployment::{Answer, Deployment, Jar, SETTLE};
use real_provider::{ALICE, ALICE_SUB};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The test selected in the instance processes.
const ENTRY: &str = "instance_process";
/// Concurrent requests of the storm.
const STORM: usize = 30;
/// `redis_timeout_ms` of the instances.
const REDIS_TIMEOUT_MS: u64 = 500;

/// Not a test of its own: the entry point of the instance processes (does nothing here).
#[test]
fn instance_process() {
    instances::serve_if_instance();
}

async fn deploy(extra: Value) -> Deployment {
    deploy_with(extra, true).await
}

/// Provider, Redis, three instances (with `redis_url` when `with_redis`, and `extra` in
/// their `logto` table) and the front.
async fn deploy_with(extra: Value, with_redis: bool) -> Deployment {
    deployment::deploy(3, ENTRY, |redis| {
        let mut settings = if with_redis {
            json!({ "redis_url": redis.url(), "redis_timeout_ms": REDIS_TIMEOUT_MS })
        } else {
            json!({})
        };
        app::merge(&mut settings, &extra);
        settings
    })
    .await
}

/// Signs alice in through the front; returns the instances of the start and the callback.
async fn sign_in(dep: &Deployment, jar: &mut Jar) -> (String, String) {
    let (started_on, done) = dep.sign_in_as(ALICE, jar).await;
    assert_eq!(done.location.as_deref(), Some("/"), "{done:?}");
    assert!(jar.has("logto_session"));
    (started_on, done.instance)
}

/// 30 concurrent requests of `jar` to `path` through the front: their answers.
async fn storm(dep: &Deployment, path: &str, jar: &Jar) -> Vec<Answer> {
    let url = format!("{}{path}", dep.front.url());
    let requests = (0..STORM).map(|_| dep.get(&url, jar));
    rocket::futures::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_refresh_rotations_and_sign_outs() {
    let dep = deploy(json!({})).await;
    // Tokens from the sign-in live 30 s, under the 60 s refresh margin: the first use of a
    // token needs a refresh.
    dep.provider.set_access_token_ttl(30).await;
    let mut jar = Jar::default();
    let (started_on, called_back_on) = sign_in(&dep, &mut jar).await;
    assert_ne!(
        started_on, called_back_on,
        "the callback must land on another instance than the sign-in"
    );
    dep.provider.set_access_token_ttl(3600).await;
    dep.provider.reset_stats().await;

    // The storm.
    let before = jar.clone();
    let answers = storm(&dep, "/shopping", &before).await;
    let served: BTreeSet<&str> = answers.iter().map(|a| a.instance.as_str()).collect();
    assert_eq!(served.len(), 3, "the front spread the storm: {served:?}");
    let tokens: BTreeSet<&str> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::OK, "{a:?}");
            a.body["access_token"].as_str().unwrap()
        })
        .collect();
    let calls = dep.refreshes().await;
    println!("3-instance storm: {STORM} requests over {served:?}, provider refresh calls: {calls}, distinct access tokens: {}", tokens.len());
    assert_eq!(calls, 1, "exactly one refresh across the instances");
    assert_eq!(tokens.len(), 1, "every request got the one refreshed token");
    assert!(dep.provider.grant_valid(ALICE_SUB).await);
    let mut after = Jar::default();
    after.absorb(&answers[0].headers);
    for (name, pair) in &before.0 {
        after.0.entry(name.clone()).or_insert_with(|| pair.clone());
    }

    // The cookies from before the rotation, on each instance: the rotation is followed.
    for i in 0..3 {
        let replay = dep.on(i, "/shopping", &before).await;
        assert_eq!(replay.status, StatusCode::OK, "instance {i}: {replay:?}");
        assert_eq!(
            replay.body["access_token"].as_str(),
            tokens.first().copied()
        );
    }
    assert_eq!(dep.refreshes().await, 1, "replays make no call");
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "replays revoke nothing"
    );

    // Sign-out on one instance: the old cookies (both generations) fail on every instance.
    for i in 0..3 {
        assert_eq!(dep.on(i, "/me", &after).await.status, StatusCode::OK);
    }
    let mut browser = after.clone();
    let out = dep.browse("/logto/sign-out", &mut browser).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    assert!(!browser.has("logto_session"), "sign-out clears the cookies");
    let took = dep
        .until_all("/me", &after, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!(
        "sign-out on instance {}: 401 on all instances after {took:?}",
        out.instance
    );
    for i in 0..3 {
        assert_eq!(
            dep.on(i, "/me", &before).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    // A new sign-in works, then a back-channel logout posted to one instance ends it on all.
    let mut second = Jar::default();
    sign_in(&dep, &mut second).await;
    for i in 0..3 {
        assert_eq!(dep.on(i, "/me", &second).await.status, StatusCode::OK);
    }
    let token = dep.provider.logout_token(Some(ALICE_SUB), None).await;
    let body = format!(
        "logout_token={}",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    let post = |base: String| {
        dep.http
            .post(format!("{base}/logto/backchannel-logout"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    };
    let accepted = post(dep.instances[0].url()).await.unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    // Within 1 s: a bound SECURITY.md promises, asserted as such (not a ceiling).
    let took = dep
        .until_all(
            "/me",
            &second,
            StatusCode::UNAUTHORIZED,
            Duration::from_secs(1),
        )
        .await;
    println!("back-channel logout on instance a: 401 on all instances after {took:?}");
    // Its jti is spent for every instance.
    for i in 1..3 {
        let replayed = post(dep.instances[i].url()).await.unwrap();
        assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);
        let text = replayed.text().await.unwrap();
        assert!(text.contains("already used (jti)"), "{text}");
    }
    // Sessions started after the logout work.
    let mut third = Jar::default();
    sign_in(&dep, &mut third).await;
    dep.until_all("/me", &third, StatusCode::OK, SETTLE).await;
    assert!(dep.provider.grant_valid(ALICE_SUB).await);
}

/// The problem, as a control for the test above: without Redis the same storm spends the
/// token once per instance, and Logto revokes the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_same_storm_spends_the_token_on_every_instance() {
    let dep = deploy_with(json!({}), false).await;
    dep.provider.set_access_token_ttl(30).await;
    let mut jar = Jar::default();
    sign_in(&dep, &mut jar).await;
    dep.provider.set_access_token_ttl(3600).await;
    dep.provider.reset_stats().await;
    storm(&dep, "/shopping", &jar).await;
    let calls = dep.refreshes().await;
    println!("without Redis: {STORM} requests over 3 instances, provider refresh calls: {calls}");
    assert!(calls > 1, "{calls}");
    assert!(!dep.provider.grant_valid(ALICE_SUB).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hanging_or_stopped_loses_nothing_and_recovers_without_a_restart() {
    let mut dep = deploy(json!({})).await;
    dep.provider.set_access_token_ttl(30).await;
    // One session needing a refresh per outage, one to sign out during the second, and one
    // refreshed now, so that Redis already knows the crate's scripts: a call that timed out
    // while Redis hung then runs when it resumes, and must take no lease.
    let (mut hung, mut stopped, mut other) = (Jar::default(), Jar::default(), Jar::default());
    let mut warm = Jar::default();
    for jar in [&mut hung, &mut stopped, &mut other, &mut warm] {
        sign_in(&dep, jar).await;
    }
    dep.provider.set_access_token_ttl(3600).await;
    assert_eq!(dep.on(0, "/shopping", &warm).await.status, StatusCode::OK);
    dep.provider.reset_stats().await;
    let bound = Duration::from_millis(REDIS_TIMEOUT_MS) + Duration::from_millis(1500);

    for (phase, jar) in [("hanging", &hung), ("stopped", &stopped)] {
        if phase == "hanging" {
            dep.redis.pause();
        } else {
            dep.redis.stop().await;
        }
        for i in 0..3 {
            let claims = dep.on(i, "/me", jar).await;
            assert_eq!(claims.status, StatusCode::OK, "{phase}, instance {i}");
            let started = Instant::now();
            let refresh = dep.on(i, "/shopping", jar).await;
            let took = started.elapsed();
            assert_eq!(
                refresh.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{phase}, instance {i}: {refresh:?}"
            );
            assert!(refresh.retry_after.is_some(), "{refresh:?}");
            assert!(
                took < bound,
                "{phase}: the 503 took {took:?}, over the timeout"
            );
            assert!(
                refresh.headers.get("set-cookie").is_none(),
                "the session is kept as it is: {refresh:?}"
            );
            println!("Redis {phase}: instance {i} answered 503 in {took:?}");
        }
        assert_eq!(
            dep.refreshes().await,
            if phase == "hanging" { 0 } else { 1 },
            "nothing was sent to Logto"
        );
        if phase == "stopped" {
            // A sign-out while Redis is down: this instance refuses that session at once.
            let out = dep.on(0, "/logto/sign-out", &other).await;
            assert_eq!(out.status, StatusCode::SEE_OTHER);
            assert_eq!(
                dep.on(0, "/me", &other).await.status,
                StatusCode::UNAUTHORIZED
            );
            dep.redis.restart().await;
        } else {
            dep.redis.resume();
        }
        // Everything recovers, without a restart of the instances, with one refresh.
        let started = Instant::now();
        let recovered = loop {
            let answer = browse_once(&dep, "/shopping", jar).await;
            if answer.status == StatusCode::OK {
                break answer;
            }
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
            assert!(
                started.elapsed() < SETTLE,
                "no recovery after Redis came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "Redis {phase}, then back: instance {} served the refresh after {:?}",
            recovered.instance,
            started.elapsed()
        );
        let answers = storm(&dep, "/shopping", jar).await;
        assert!(answers.iter().all(|a| a.status == StatusCode::OK));
        assert_eq!(
            dep.refreshes().await,
            if phase == "hanging" { 1 } else { 2 },
            "exactly one refresh per session after the recovery"
        );
    }
    assert!(dep.provider.grant_valid(ALICE_SUB).await);
    // The sign-out made during the outage reaches the other instances.
    let took = dep
        .until_all("/me", &other, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!("sign-out during the outage: on all instances {took:?} after the recovery");
}

/// How an instance dies while it holds the lease of a refresh.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Its request reached Logto, which rotated the token (the worst case: every refresh
    /// rotates); the answer, and the successor in it, die with the instance.
    AfterLogtoRotated,
    /// Its request never reached Logto's handler (dropped when the client vanished).
    BeforeLogtoHandled,
    /// Its request reached Logto, which kept the token, as Logto does for a confidential
    /// app until 70% of the token's lifetime; the answer dies with the instance.
    AfterLogtoKeptTheToken,
}

/// A lease lasts twice the HTTP timeout plus a second: 5 s here.
const LEASE: Duration = Duration::from_secs(5);

/// Signs in, then lets instance 0 take the lease of a refresh and kills it while Logto
/// holds the request. Returns the deployment and the session's (pre-refresh) cookies.
async fn kill_the_lease_holder(death: Death) -> (Deployment, Jar) {
    let mut dep = deploy(json!({ "http_timeout_secs": 2 })).await;
    dep.provider.set_access_token_ttl(30).await;
    let mut jar = Jar::default();
    sign_in(&dep, &mut jar).await;
    dep.provider.set_access_token_ttl(3600).await;
    dep.provider.reset_stats().await;
    match death {
        Death::AfterLogtoRotated => dep.provider.set_token_answer_delay(1500).await,
        Death::BeforeLogtoHandled => {
            dep.provider
                .set_token_delay_dropping_the_abandoned(1500)
                .await
        }
        Death::AfterLogtoKeptTheToken => {
            dep.provider.rotate_like_logto().await;
            dep.provider.set_token_answer_delay(1500).await;
        }
    }

    let url = format!("{}/shopping", dep.instances[0].url());
    let request = dep
        .http
        .get(url)
        .header("Accept", "application/json")
        .header("Cookie", jar.header())
        .send();
    let in_flight = tokio::spawn(request);
    let started = Instant::now();
    while dep.provider.stats().await["token_requests_received"].as_u64() != Some(1) {
        assert!(
            started.elapsed() < SETTLE,
            "the refresh never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dep.instances[0].kill().await;
    assert!(
        in_flight.await.unwrap().is_err(),
        "its client lost the answer"
    );
    // Logto is done with the held request (handled or dropped) before the hold goes.
    let started = Instant::now();
    loop {
        let stats = dep.provider.stats().await;
        let done = match death {
            Death::BeforeLogtoHandled => stats["token_requests_dropped"].as_u64() == Some(1),
            _ => stats["token_requests"]["refresh_token"].as_u64() == Some(1),
        };
        if done {
            break;
        }
        assert!(
            started.elapsed() < SETTLE,
            "Logto never finished the held request: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dep.provider.set_token_delay(0).await;
    (dep, jar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_sender_died_after_logto_rotated_ends_that_session_without_a_resend() {
    let (dep, jar) = kill_the_lease_holder(Death::AfterLogtoRotated).await;

    // The others wait for the lease, ask Logto (introspection), learn that the token was
    // used up, and end the session (sign in again) rather than resend it: a resend would be
    // taken for a replay and revoke the grant.
    let started = Instant::now();
    let answer = dep.on(1, "/shopping", &jar).await;
    println!(
        "lease holder killed after Logto rotated: instance b answered {} after {:?}",
        answer.status,
        started.elapsed()
    );
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        dep.on(2, "/shopping", &jar).await.status,
        StatusCode::UNAUTHORIZED
    );
    let stats = dep.provider.stats().await;
    assert_eq!(
        stats["token_requests_received"].as_u64(),
        Some(1),
        "the token was never sent again: {stats}"
    );
    assert_eq!(stats["introspection_requests"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["introspection_active"].as_u64(), Some(0), "{stats}");
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "nothing was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_sender_died_before_logto_handled_it_completes_on_another_instance() {
    let (dep, jar) = kill_the_lease_holder(Death::BeforeLogtoHandled).await;

    let started = Instant::now();
    let answer = dep.on(1, "/shopping", &jar).await;
    let took = started.elapsed();
    println!(
        "lease holder killed before Logto handled its request: instance b answered {} after {took:?}",
        answer.status
    );
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(took < LEASE * 2, "answered within the lease time: {took:?}");
    let stats = dep.provider.stats().await;
    assert_eq!(stats["token_requests_dropped"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["introspection_active"].as_u64(), Some(1), "{stats}");
    assert_eq!(
        stats["token_requests"]["refresh_token"].as_u64(),
        Some(1),
        "one refresh handled, by instance b: {stats}"
    );
    // The third instance shares b's result (following the rotation): no new call.
    assert_eq!(dep.on(2, "/shopping", &jar).await.status, StatusCode::OK);
    let stats = dep.provider.stats().await;
    assert_eq!(stats["token_requests"]["refresh_token"].as_u64(), Some(1));
    assert_eq!(stats["refresh_refused"].as_u64(), Some(0), "{stats}");
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "nothing was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_sender_died_after_logto_kept_the_token_completes_on_another_instance() {
    let (dep, jar) = kill_the_lease_holder(Death::AfterLogtoKeptTheToken).await;

    let started = Instant::now();
    let answer = dep.on(1, "/shopping", &jar).await;
    let took = started.elapsed();
    println!(
        "lease holder killed after Logto answered without rotating: instance b answered {} after {took:?}",
        answer.status
    );
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(took < LEASE * 2, "answered within the lease time: {took:?}");
    let stats = dep.provider.stats().await;
    assert_eq!(stats["introspection_active"].as_u64(), Some(1), "{stats}");
    assert_eq!(
        stats["token_requests"]["refresh_token"].as_u64(),
        Some(2),
        "the dead instance's refresh and b's, both handled: {stats}"
    );
    assert_eq!(stats["refresh_refused"].as_u64(), Some(0), "{stats}");
    assert_eq!(dep.on(2, "/shopping", &jar).await.status, StatusCode::OK);
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "nothing was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_sender_died_waits_with_a_503_while_logto_cannot_say_whether_it_used_it() {
    let (dep, jar) = kill_the_lease_holder(Death::AfterLogtoRotated).await;
    dep.provider.set_introspection_down(true).await;

    // Logto cannot be asked: nothing is sent, the session stays, and the answer says to
    // come back (a 503 with Retry-After), not to sign in again.
    let answer = dep.on(1, "/shopping", &jar).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert!(answer.retry_after.is_some(), "{answer:?}");
    assert!(
        answer
            .body
            .to_string()
            .contains("cannot be renewed right now"),
        "{answer:?}"
    );
    assert_eq!(dep.on(1, "/me", &jar).await.status, StatusCode::OK);
    let stats = dep.provider.stats().await;
    assert_eq!(stats["introspection_requests"].as_u64(), Some(1), "{stats}");
    assert_eq!(
        stats["token_requests_received"].as_u64(),
        Some(1),
        "nothing sent while in doubt: {stats}"
    );

    // Once Logto answers, the next request asks again (another instance), learns the token
    // was used up, and ends that session without sending it.
    dep.provider.set_introspection_down(false).await;
    let answer = dep.on(2, "/shopping", &jar).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let stats = dep.provider.stats().await;
    assert_eq!(stats["introspection_requests"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["introspection_active"].as_u64(), Some(0), "{stats}");
    assert_eq!(
        stats["token_requests_received"].as_u64(),
        Some(1),
        "{stats}"
    );
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "nothing was revoked"
    );
}

/// Through the front, without keeping cookies.
async fn browse_once(dep: &Deployment, path: &str, jar: &Jar) -> Answer {
    dep.get(&format!("{}{path}", dep.front.url()), jar).await
}
