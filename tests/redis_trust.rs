//! Issue 21, "Shared state you can trust": what a stale copy of a cookie, a full list of
//! ended sessions, a forger with access to Redis and an instance that cannot subscribe get.
//! Each test is a deployment as users run one: instance processes of the test app with one
//! `secret_key` behind a round-robin front, the real Logto-like provider and a real
//! `redis-server` (see `support/deployment.rs`).
//!
//! - a copy of the cookies from before a rotation, replayed after `rotation_grace_secs`,
//!   gets 401 on every instance and sends nothing to Logto (item 1);
//! - with `spent_state_entries = 3`, a signed-out copy stays refused on every instance after
//!   8 more sign-outs (item 2);
//! - a forged 250,000-member announcement changes nothing: the signed-out copy stays
//!   refused, a live session keeps working; a real record re-announced far in the future
//!   ends nothing (item 3);
//! - instances whose Redis user may not `SUBSCRIBE`: a sign-out on one is refused by the
//!   others within a second, with either session store (item 5).
//!
//! Needs `redis-server` (scripts/setup) and `npm ci --prefix tests/provider`.

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

use std::time::{Duration, Instant};

use deployment::{Deployment, Jar};
use real_provider::{ALICE, ALICE_SUB};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The test selected in the instance processes.
const ENTRY: &str = "instance_process";
/// How long a change may take to reach every instance when it must reach them "within a
/// second" (item 5); the deadline of `until_all` elsewhere, where only the outcome counts.
const WITHIN_A_SECOND: Duration = Duration::from_secs(1);
const EVENTUALLY: Duration = Duration::from_secs(30);

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Not a test of its own: the entry point of the instance processes (does nothing here).
#[test]
fn instance_process() {
    instances::serve_if_instance();
}

async fn deploy(count: usize, extra: Value) -> Deployment {
    deployment::deploy(count, ENTRY, |redis| {
        let mut settings = json!({ "redis_url": redis.url(), "redis_timeout_ms": 1000 });
        app::merge(&mut settings, &extra);
        settings
    })
    .await
}

/// Signs alice in through the front: a new jar.
async fn signed_in(dep: &Deployment) -> Jar {
    let mut jar = Jar::default();
    let (_, done) = dep.sign_in_as(ALICE, &mut jar).await;
    assert_eq!(done.location.as_deref(), Some("/"), "{done:?}");
    jar
}

/// Signs `jar` out on instance `on` (or through the front): the copy of its cookies from
/// before, which must now be refused everywhere.
async fn sign_out(dep: &Deployment, jar: &mut Jar, on: Option<usize>) -> Jar {
    let copy = jar.clone();
    let out = match on {
        Some(i) => dep.on(i, "/logto/sign-out", jar).await,
        None => dep.browse("/logto/sign-out", jar).await,
    };
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    jar.0.clear();
    copy
}

/// `path` with `jar` answers `status` on every instance, checked once each.
async fn on_every_instance(dep: &Deployment, path: &str, jar: &Jar, status: StatusCode) {
    for i in 0..dep.instances.len() {
        let answer = dep.on(i, path, jar).await;
        assert_eq!(answer.status, status, "instance {i}: {answer:?}");
    }
}

/// Waits until every instance has read what was published on the channel before this call:
/// a sign-out on each instance in turn, refused by the others (who can only have heard of it
/// on the channel, after everything published earlier).
async fn barrier(dep: &Deployment) {
    for i in 0..dep.instances.len() {
        let mut jar = signed_in(dep).await;
        let copy = sign_out(dep, &mut jar, Some(i)).await;
        dep.until_all("/me", &copy, StatusCode::UNAUTHORIZED, EVENTUALLY)
            .await;
    }
}

/// Item 1: after the grace, a rotated-out refresh token gets nothing on any instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_older_than_the_rotation_grace_gets_nothing_on_any_instance() {
    let dep = deploy(3, json!({ "rotation_grace_secs": 2 })).await;
    // Tokens from the sign-in live 30 s, under the 60 s refresh margin: the first use of a
    // token needs a refresh (and the provider rotates the refresh token on every refresh).
    dep.provider.set_access_token_ttl(30).await;
    let before = signed_in(&dep).await;
    dep.provider.set_access_token_ttl(3600).await;

    let refreshed = dep.on(0, "/shopping", &before).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    assert_eq!(dep.refreshes().await, 1);
    let mut after = before.clone();
    after.absorb(&refreshed.headers);
    let token = refreshed.body["access_token"].as_str().unwrap().to_string();

    // The grace ends when Redis forgets the rotation (its key lives `rotation_grace_secs`);
    // instance a, which saw the rotation, forgets it no later.
    let mut redis = dep.redis().await;
    let rotations = || {
        let mut cmd = redis::cmd("KEYS");
        cmd.arg("rocket_logto:rot:*");
        cmd
    };
    let held: Vec<String> = rotations().query_async(&mut redis).await.unwrap();
    assert_eq!(held.len(), 1, "the rotation is shared: {held:?}");
    let started = Instant::now();
    loop {
        let held: Vec<String> = rotations().query_async(&mut redis).await.unwrap();
        if held.is_empty() {
            break;
        }
        assert!(started.elapsed() < EVENTUALLY, "the rotation never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The shared result of that refresh is still kept (2 minutes): it must not be handed out.
    let results: Vec<String> = redis::cmd("KEYS")
        .arg("rocket_logto:res:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(results.len(), 1, "{results:?}");

    dep.provider.reset_stats().await;
    for i in 0..3 {
        let replay = dep.on(i, "/shopping", &before).await;
        assert_eq!(
            replay.status,
            StatusCode::UNAUTHORIZED,
            "instance {i} answered the stale copy: {replay:?}"
        );
        assert!(
            !replay
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("logto_session") && !c.contains("Max-Age=0")),
            "instance {i} gave the stale copy new session cookies: {:?}",
            replay.set_cookies()
        );
    }
    assert_eq!(
        dep.refreshes().await,
        0,
        "the replays sent nothing to Logto"
    );
    assert!(dep.provider.grant_valid(ALICE_SUB).await);
    // The browser that holds the successor keeps its session and token everywhere.
    for i in 0..3 {
        let answer = dep.on(i, "/shopping", &after).await;
        assert_eq!(answer.status, StatusCode::OK, "instance {i}: {answer:?}");
        assert_eq!(answer.body["access_token"].as_str(), Some(token.as_str()));
    }
}

/// Item 2: a full list of ended sessions never lets a signed-out copy back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_copy_stays_refused_after_the_list_of_ended_sessions_is_full() {
    let dep = deploy(3, json!({ "spent_state_entries": 3 })).await;
    let mut first = signed_in(&dep).await;
    on_every_instance(&dep, "/me", &first, StatusCode::OK).await;
    let first_copy = sign_out(&dep, &mut first, None).await;
    dep.until_all("/me", &first_copy, StatusCode::UNAUTHORIZED, EVENTUALLY)
        .await;

    // 8 more sign-outs, each reaching every instance.
    for _ in 0..8 {
        let mut jar = signed_in(&dep).await;
        let copy = sign_out(&dep, &mut jar, None).await;
        dep.until_all("/me", &copy, StatusCode::UNAUTHORIZED, EVENTUALLY)
            .await;
    }
    on_every_instance(&dep, "/me", &first_copy, StatusCode::UNAUTHORIZED).await;
    // A session started after those sign-outs is not affected.
    let live = signed_in(&dep).await;
    on_every_instance(&dep, "/me", &live, StatusCode::OK).await;
}

async fn ended_members(dep: &Deployment) -> Vec<String> {
    let mut redis = dep.redis().await;
    redis::cmd("ZRANGE")
        .arg("rocket_logto:ended")
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap()
}

async fn publish(dep: &Deployment, message: &str) -> i64 {
    let mut redis = dep.redis().await;
    redis::cmd("PUBLISH")
        .arg("rocket_logto:events")
        .arg(message)
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Item 3: a forged flood of ended sessions, more than the list holds, evicts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_flood_of_ended_sessions_changes_nothing() {
    let dep = deploy(3, json!({})).await;
    let mut signed_out = signed_in(&dep).await;
    let signed_out = sign_out(&dep, &mut signed_out, None).await;
    dep.until_all("/me", &signed_out, StatusCode::UNAUTHORIZED, EVENTUALLY)
        .await;
    let live = signed_in(&dep).await;
    on_every_instance(&dep, "/me", &live, StatusCode::OK).await;

    // 250,000 made-up records (6.8 MB) in one message: more than the list holds (100,000).
    let now_ms = unix_ms();
    let mut flood = String::with_capacity(7_000_000);
    flood.push('e');
    for n in 0..250_000u32 {
        flood.push_str(&format!(" ses:f{n:07}:{now_ms}"));
    }
    assert_eq!(
        publish(&dep, &flood).await,
        3,
        "every instance is subscribed"
    );

    barrier(&dep).await;
    on_every_instance(&dep, "/me", &signed_out, StatusCode::UNAUTHORIZED).await;
    on_every_instance(&dep, "/me", &live, StatusCode::OK).await;
    let members = ended_members(&dep).await;
    assert!(
        !members.iter().any(|m| m.starts_with("ses:f")),
        "{members:?}"
    );
}

/// Item 3: a real record re-announced with a far-future time ends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_record_re_announced_far_in_the_future_ends_nothing() {
    let dep = deploy(3, json!({})).await;
    // A back-channel logout of alice: a `sub` record, ending her sessions started before.
    let token = dep.provider.logout_token(Some(ALICE_SUB), None).await;
    let accepted = dep
        .http
        .post(format!(
            "{}/logto/backchannel-logout",
            dep.instances[0].url()
        ))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    let members = ended_members(&dep).await;
    let sub_record = members
        .iter()
        .find(|m| m.starts_with("sub:"))
        .unwrap_or_else(|| panic!("no sub record in {members:?}"))
        .clone();
    // A session started after the logout, which must keep working.
    let live = signed_in(&dep).await;
    on_every_instance(&dep, "/me", &live, StatusCode::OK).await;

    // The record re-announced as ending every session of alice until far in the future,
    // without a tag and with the tag it carried.
    let fields: Vec<&str> = sub_record.split(':').collect();
    let far = unix_ms() + 10 * 365 * 86_400 * 1000;
    let mut forged = vec![format!("sub:{}:{far}", fields[1])];
    if let Some(tag) = fields.get(3) {
        forged.push(format!("sub:{}:{far}:{tag}", fields[1]));
    }
    for member in &forged {
        assert_eq!(publish(&dep, &format!("e {member}")).await, 3);
    }

    barrier(&dep).await;
    on_every_instance(&dep, "/me", &live, StatusCode::OK).await;
    let members = ended_members(&dep).await;
    assert!(
        !members.iter().any(|m| m.contains(&far.to_string())),
        "{members:?}"
    );
}

/// Item 5: the ACL of the instances' Redis user denies `SUBSCRIBE`; commands work.
async fn deploy_without_subscribe(extra: Value) -> Deployment {
    deployment::deploy(3, ENTRY, |redis| {
        let mut admin = redis.client().get_connection().expect("a Redis connection");
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg("on")
            .arg(">app-password")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-subscribe")
            .arg("-psubscribe")
            .arg("-ssubscribe")
            .query(&mut admin)
            .expect("ACL SETUSER");
        let url = redis.url().replace("redis://", "redis://app:app-password@");
        let mut settings = json!({ "redis_url": url, "redis_timeout_ms": 1000 });
        app::merge(&mut settings, &extra);
        settings
    })
    .await
}

async fn a_sign_out_reaches_every_instance_within_a_second_without_subscribe(store: &str) {
    let dep = deploy_without_subscribe(json!({ "session_store": store })).await;
    let mut jar = signed_in(&dep).await;
    // Every instance serves (and, with the Redis session store, may cache) the session.
    for _ in 0..2 {
        on_every_instance(&dep, "/me", &jar, StatusCode::OK).await;
    }
    let copy = sign_out(&dep, &mut jar, Some(0)).await;
    let took = dep
        .until_all("/me", &copy, StatusCode::UNAUTHORIZED, WITHIN_A_SECOND)
        .await;
    println!(
        "{store} sessions, no SUBSCRIBE: sign-out on instance a refused by all after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_subscribe_a_sign_out_reaches_every_instance_within_a_second_redis_sessions() {
    a_sign_out_reaches_every_instance_within_a_second_without_subscribe("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_subscribe_a_sign_out_reaches_every_instance_within_a_second_cookie_sessions() {
    a_sign_out_reaches_every_instance_within_a_second_without_subscribe("cookie").await;
}
