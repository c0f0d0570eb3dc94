//! Issue 12, "Server-side sessions in Redis": `session_store = "redis"` with three instances
//! of the app (each a process of its own, the same `secret_key`) behind a round-robin front,
//! one real `redis-server` and the real Logto-like provider.
//!
//! - sign-in, a refresh (no `Set-Cookie`) and sign-out across the instances;
//! - carol, in 50 organizations, with every organization token and 5 resource tokens: the
//!   `Cookie` header and the bytes in Redis (printed);
//! - dave, in 130 organizations, with every organization token (over 64 KiB before
//!   compression): read back by an instance that had not cached it;
//! - session fixation: the pre-sign-in cookies, a planted id, and a stolen id after sign-out
//!   and after `Sessions::end_all`;
//! - the local cache: 0 Redis calls for a cached, unchanged session; a change on one
//!   instance seen by another on its next request;
//! - Redis flushed: a clean sign-in, never a 500; Redis stopped: cached sessions work, the
//!   rest get 503 with `Retry-After`, a sign-out among them (the session kept until Redis
//!   answers, then ended everywhere);
//! - the `Sessions` API: list, end one, end all; `end_all` of cookie sessions across
//!   instances;
//! - moves between the stores, both ways; bad `session_store` values refuse the launch.
//!
//! Needs `redis-server` (scripts/setup) and `npm ci --prefix tests/provider`. Figures are
//! printed (`cargo test --all-features --test redis_sessions -- --nocapture`).

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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deployment::{Deployment, Jar, SETTLE};
use instances::Instance;
use real_provider::{ProviderBrowser, ALICE, ALICE_SUB, BOB, CAROL, DAVE, DAVE_SUB};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The test selected in the instance processes.
const ENTRY: &str = "instance_process";
const REDIS_TIMEOUT_MS: u64 = 500;

/// Not a test of its own: the entry point of the instance processes (does nothing here).
#[test]
fn instance_process() {
    instances::serve_if_instance();
}

/// Provider, Redis, `count` instances with the Redis session store and `extra` in their
/// `logto` table, and the front.
async fn deploy(count: usize, extra: Value) -> Deployment {
    deployment::deploy(count, ENTRY, |redis| {
        let mut settings = json!({
            "redis_url": redis.url(),
            "redis_timeout_ms": REDIS_TIMEOUT_MS,
            "session_store": "redis",
        });
        app::merge(&mut settings, &extra);
        settings
    })
    .await
}

/// Whether `jar` holds cookie-store session cookies.
fn has_cookie_session(jar: &Jar) -> bool {
    jar.0.keys().any(|k| k.starts_with("logto_session"))
}

/// Commands Redis ran so far, by name, from `INFO commandstats`; the health checks of
/// the subscriptions and this test's own connection are left out.
async fn redis_calls(connection: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "ping" | "info" | "hello" | "client|setinfo" | "client" | "select"
            )
        })
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refresh_and_sign_out_across_three_instances_with_the_redis_store() {
    let dep = deploy(3, json!({})).await;
    // Tokens of the sign-in live 30 s, under the 60 s margin: the first use needs a refresh.
    dep.provider.set_access_token_ttl(30).await;
    let mut jar = Jar::default();
    let called_back_on = dep.sign_in_as(ALICE, &mut jar).await.1.instance;
    dep.provider.set_access_token_ttl(3600).await;
    assert!(jar.has("logto_sid"), "{jar:?}");
    assert!(!has_cookie_session(&jar), "no session cookies: {jar:?}");
    assert_eq!(dep.session_keys().await.len(), 1);
    println!("signed in on instance {called_back_on}; the browser holds {jar:?}");
    for i in 0..3 {
        let me = dep.on(i, "/me", &jar).await;
        assert_eq!(me.status, StatusCode::OK, "instance {i}: {me:?}");
        assert_eq!(me.body["sub"], ALICE_SUB);
    }

    // A refresh: 30 concurrent requests over the instances, one refresh, no Set-Cookie.
    dep.provider.reset_stats().await;
    let url = format!("{}/shopping", dep.front.url());
    let answers = rocket::futures::future::join_all((0..30).map(|_| dep.get(&url, &jar))).await;
    let tokens: BTreeSet<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::OK, "{a:?}");
            assert!(
                a.set_cookies().is_empty(),
                "a refresh sets no cookie: {a:?}"
            );
            a.body["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(dep.refreshes().await, 1, "one refresh across the instances");
    assert_eq!(tokens.len(), 1);
    // The refreshed session is the one every instance reads afterwards: no new refresh.
    for i in 0..3 {
        let again = dep.on(i, "/shopping", &jar).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(
            again.body["access_token"].as_str(),
            tokens.first().map(String::as_str)
        );
    }
    assert_eq!(dep.refreshes().await, 1);
    assert!(dep.provider.grant_valid(ALICE_SUB).await);

    // Nothing readable at rest: no key name or value holds the user id or a token.
    let mut connection = dep.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let token = tokens.first().unwrap();
    for key in &keys {
        assert!(!key.contains(ALICE_SUB), "{key}");
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap()],
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut connection)
                .await
                .unwrap(),
            _ => vec![],
        };
        for value in values {
            for secret in [
                ALICE_SUB.as_bytes(),
                b"eyJ",
                &token.as_bytes()[token.len() - 40..],
            ] {
                assert!(
                    !value.windows(secret.len()).any(|w| w == secret),
                    "{key} holds {}",
                    String::from_utf8_lossy(secret)
                );
            }
        }
    }

    // Sign-out: the cookie goes, the session goes from Redis, every instance refuses the id.
    let before = jar.clone();
    let out = dep.browse("/logto/sign-out", &mut jar).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    assert!(!jar.has("logto_sid"), "the id cookie is removed: {jar:?}");
    assert!(dep.session_keys().await.is_empty(), "deleted from Redis");
    let took = dep
        .until_all("/me", &before, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!(
        "sign-out on instance {}: 401 on every instance after {took:?}",
        out.instance
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_organization_tokens_and_five_resource_tokens_keep_the_cookie_small() {
    let dep = deploy(3, json!({})).await;
    let mut jar = Jar::default();
    dep.sign_in_as(CAROL, &mut jar).await;
    let cookie_header = jar.header();

    dep.provider.reset_stats().await;
    let orgs = dep.on(0, "/orgs", &jar).await;
    assert_eq!(orgs.status, StatusCode::OK, "{orgs:?}");
    let orgs = orgs.body.as_object().unwrap().clone();
    let expected: BTreeSet<String> = (1..=50).map(|i| format!("org_c{i:02}")).collect();
    assert_eq!(orgs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (id, token) in &orgs {
        assert_eq!(
            token["claims"]["aud"],
            format!("urn:logto:organization:{id}"),
            "{token}"
        );
    }
    // Five resource tokens: both API resources, and the shopping API in three organizations.
    for path in [
        format!("/token?resource={}", app::SHOPPING),
        format!("/token?resource={}", app::STORE),
        format!("/org/org_c01/resource?resource={}", app::SHOPPING),
        format!("/org/org_c02/resource?resource={}", app::SHOPPING),
        format!("/org/org_c03/resource?resource={}", app::SHOPPING),
    ] {
        let answer = dep.on(1, &path, &jar).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
        assert!(answer.set_cookies().is_empty(), "{answer:?}");
    }
    let fetched = dep.refreshes().await;
    assert_eq!(fetched, 55, "every token fetched once");

    // Every token is in the session, on every instance: none is fetched again.
    let again = dep.on(2, "/orgs", &jar).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body.as_object().unwrap().len(), 50);
    assert_eq!(dep.refreshes().await, fetched);

    // What travels, and what Redis keeps.
    assert_eq!(jar.header(), cookie_header, "the cookie never changed");
    let keys = dep.session_keys().await;
    assert_eq!(keys.len(), 1);
    let mut connection = dep.redis().await;
    let value_bytes: u64 = redis::cmd("STRLEN")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .unwrap();
    let memory: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .unwrap();
    println!(
        "carol, 50 organization tokens + 5 resource tokens: Cookie header {} bytes ({cookie_header:?}); \
         in Redis: value {value_bytes} bytes, MEMORY USAGE {memory} bytes",
        cookie_header.len()
    );
    assert!(cookie_header.len() <= 200, "{}", cookie_header.len());
}

/// Issue 21: dave, in 130 organizations, with every organization token: a session over
/// the 64 KiB of a session cookie before compression. Written by one instance, it is read
/// back by another (a process of its own, which never cached it): before, that instance
/// refused it, signed the user out and removed the id cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_130_organization_tokens_reads_back_on_another_instance() {
    let dep = deploy(2, json!({})).await;
    let mut jar = Jar::default();
    let (_, callback) = dep.sign_in_as(DAVE, &mut jar).await;
    // The instance of the callback cached the session; the other one never saw it.
    let writer = dep
        .instances
        .iter()
        .position(|i| i.name == callback.instance)
        .unwrap_or_else(|| panic!("callback on an unknown instance: {callback:?}"));
    let reader = 1 - writer;
    let sid = jar.0["logto_sid"].clone();
    let me = dep.on(writer, "/me", &jar).await;
    let expected: BTreeSet<String> = me.body["organizations"]
        .as_array()
        .unwrap_or_else(|| panic!("{me:?}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 130);
    assert!(expected.iter().all(|id| id.len() == 21), "{expected:?}");

    dep.provider.reset_stats().await;
    let orgs = dep.on(writer, "/orgs", &jar).await;
    assert_eq!(orgs.status, StatusCode::OK, "{orgs:?}");
    let tokens = orgs.body.as_object().unwrap();
    assert_eq!(tokens.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(dep.refreshes().await, 130, "every token fetched once");
    let token_bytes: usize = tokens
        .values()
        .map(|t| t["access_token"].as_str().unwrap().len())
        .sum();

    // The other instance reads it from Redis: signed in, every token there, the id cookie
    // kept, nothing fetched again.
    let again = dep.on(reader, "/orgs", &jar).await;
    assert_eq!(again.status, StatusCode::OK, "signed out: {again:?}");
    assert!(again.set_cookies().is_empty(), "{:?}", again.set_cookies());
    assert_eq!(again.body.as_object().unwrap().len(), 130);
    assert_eq!(dep.refreshes().await, 130, "no token fetched again");
    let me = dep.on(reader, "/me", &jar).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.body["sub"], DAVE_SUB);
    assert_eq!(jar.0["logto_sid"], sid);

    let keys = dep.session_keys().await;
    assert_eq!(keys.len(), 1);
    let mut connection = dep.redis().await;
    let value_bytes: u64 = redis::cmd("STRLEN")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .unwrap();
    println!(
        "dave, 130 organization tokens ({token_bytes} bytes of JWT text): in Redis a value of \
         {value_bytes} bytes, read back by the instance that had not cached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_fixation_and_stolen_ids_get_nothing() {
    let dep = deploy(3, json!({})).await;
    // The attacker's own session id, planted in the victim's browser before sign-in.
    let mut attacker = Jar::default();
    dep.sign_in_as(BOB, &mut attacker).await;
    let planted = attacker.0["logto_sid"].clone();
    let mut victim = Jar::default();
    victim.0.insert("logto_sid".into(), planted.clone());
    let start = dep.browse("/logto/sign-in", &mut victim).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    let pre_sign_in = victim.clone();
    let authorize = start.location.clone().unwrap();
    let callback = ProviderBrowser::new()
        .sign_in(&authorize, ALICE.0, ALICE.1)
        .await;
    let path = callback.strip_prefix(&dep.front.url()).unwrap().to_string();
    let done = dep.browse(&path, &mut victim).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
    assert_ne!(victim.0["logto_sid"], planted, "a new id at sign-in");
    for i in 0..3 {
        let me = dep.on(i, "/me", &victim).await;
        assert_eq!(me.body["sub"], ALICE_SUB);
    }
    // The pre-sign-in cookies, and the planted id, are worth nothing now.
    dep.until_all("/me", &pre_sign_in, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    dep.until_all("/me", &attacker, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    // A browser with a session signs out on another instance's cookie removal: a forged
    // id (no valid encryption) is refused too, cleanly.
    let mut forged = Jar::default();
    forged.0.insert(
        "logto_sid".into(),
        "logto_sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    );
    assert_eq!(
        dep.on(0, "/me", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A stolen id stops working after sign-out.
    let stolen = victim.clone();
    let out = dep.browse("/logto/sign-out", &mut victim).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let took = dep
        .until_all("/me", &stolen, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!("stolen id after sign-out: 401 on every instance after {took:?}");

    // And after Sessions::end_all, with two sessions of the user.
    let (mut first, mut second) = (Jar::default(), Jar::default());
    dep.sign_in_as(ALICE, &mut first).await;
    dep.sign_in_as(ALICE, &mut second).await;
    for jar in [&first, &second] {
        dep.until_all("/me", jar, StatusCode::OK, SETTLE).await;
    }
    let ended = dep
        .post_on(1, &format!("/admin/end-all/{ALICE_SUB}"), &Jar::default())
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{ended:?}");
    for jar in [&first, &second] {
        let took = dep
            .until_all("/me", jar, StatusCode::UNAUTHORIZED, SETTLE)
            .await;
        println!("stolen id after Sessions::end_all: 401 on every instance after {took:?}");
    }
    assert!(dep.session_keys().await.is_empty());
    // A later sign-in works.
    let mut later = Jar::default();
    dep.sign_in_as(ALICE, &mut later).await;
    dep.until_all("/me", &later, StatusCode::OK, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_unchanged_session_costs_no_redis_call_and_changes_reach_every_instance() {
    let dep = deploy(3, json!({})).await;
    let mut jar = Jar::default();
    dep.sign_in_as(ALICE, &mut jar).await;
    let mut connection = dep.redis().await;
    // Warm: each instance reads the session once.
    for i in 0..3 {
        assert_eq!(dep.on(i, "/shopping", &jar).await.status, StatusCode::OK);
    }
    let before = redis_calls(&mut connection).await;
    const REQUESTS: usize = 50;
    for n in 0..REQUESTS {
        let path = if n % 2 == 0 { "/me" } else { "/shopping" };
        assert_eq!(dep.on(n % 3, path, &jar).await.status, StatusCode::OK);
    }
    let calls = delta(&before, &redis_calls(&mut connection).await);
    println!("{REQUESTS} requests of a cached, unchanged session over 3 instances: Redis calls {calls:?}");
    assert!(calls.is_empty(), "no Redis call on a warm cache: {calls:?}");

    // A change on instance a (a forced refresh writes a new version) is seen by b and c.
    let old = dep.on(1, "/shopping", &jar).await.body["access_token"].clone();
    let before = redis_calls(&mut connection).await;
    let changed = dep.on(0, "/force-refresh", &jar).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    assert!(changed.set_cookies().is_empty());
    let new = changed.body["access_token"].clone();
    assert_ne!(old, new);
    let on_a = delta(&before, &redis_calls(&mut connection).await);
    println!("the change on instance a: Redis calls {on_a:?}");
    for i in [1, 2] {
        let started = Instant::now();
        let mut attempts = 0;
        let before = redis_calls(&mut connection).await;
        loop {
            attempts += 1;
            let seen = dep.on(i, "/shopping", &jar).await;
            assert_eq!(seen.status, StatusCode::OK);
            if seen.body["access_token"] == new {
                break;
            }
            assert!(
                started.elapsed() < SETTLE,
                "instance {i} never saw the change"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let calls = delta(&before, &redis_calls(&mut connection).await);
        println!("instance {i} saw the change on request {attempts}, with Redis calls {calls:?}");
        assert_eq!(attempts, 1, "seen on the next request");
    }
    let before = redis_calls(&mut connection).await;
    for i in 0..3 {
        assert_eq!(dep.on(i, "/shopping", &jar).await.body["access_token"], new);
    }
    assert!(delta(&before, &redis_calls(&mut connection).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_means_signed_out_and_a_stopped_one_503_unless_cached() {
    let mut dep = deploy(3, json!({})).await;
    // Flushed: instances that have not cached the session see a clean sign-out.
    let mut jar = Jar::default();
    let callback = dep.sign_in_as(ALICE, &mut jar).await.1.instance;
    let mut connection = dep.redis().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let others: Vec<usize> = (0..3)
        .filter(|&i| dep.instances[i].name != callback)
        .collect();
    for &i in &others {
        let api = dep.on(i, "/me", &jar).await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{api:?}");
        assert!(
            api.set_cookies()
                .iter()
                .any(|c| c.starts_with("logto_sid=;") || c.contains("Max-Age=0")),
            "the id cookie is removed: {api:?}"
        );
        let url = format!("{}/me", dep.instances[i].url());
        let page = dep
            .request(
                reqwest::Method::GET,
                &url,
                &jar,
                "text/html,application/xhtml+xml,*/*;q=0.8",
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
        assert!(
            page.location
                .as_deref()
                .unwrap_or("")
                .contains("/logto/sign-in"),
            "{page:?}"
        );
    }
    println!("after FLUSHALL: 401 for API clients and a redirect to sign-in for browsers");
    let mut again = Jar::default();
    dep.sign_in_as(ALICE, &mut again).await;
    dep.until_all("/me", &again, StatusCode::OK, SETTLE).await;

    // Stopped: a session cached on an instance keeps working there; an uncached one gets
    // 503 with Retry-After and keeps its cookie.
    let mut cached = Jar::default();
    dep.sign_in_as(ALICE, &mut cached).await;
    let mut uncached = Jar::default();
    let uncached_callback = dep.sign_in_as(ALICE, &mut uncached).await.1.instance;
    assert_eq!(dep.on(0, "/me", &cached).await.status, StatusCode::OK);
    let cold = (0..3)
        .find(|&i| dep.instances[i].name != uncached_callback)
        .unwrap();
    dep.redis.stop().await;
    let started = Instant::now();
    let served = dep.on(0, "/me", &cached).await;
    assert_eq!(served.status, StatusCode::OK, "{served:?}");
    let refused = dep.on(cold, "/me", &uncached).await;
    let took = started.elapsed();
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert!(refused.retry_after.is_some(), "{refused:?}");
    assert!(
        refused.set_cookies().is_empty(),
        "the cookie is kept: {refused:?}"
    );
    let url = format!("{}/me", dep.instances[cold].url());
    let page = dep
        .request(reqwest::Method::GET, &url, &uncached, "text/html")
        .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a browser too: {page:?}"
    );
    println!("Redis stopped: the cached session served (200), the uncached one 503 with Retry-After {:?} ({took:?})", refused.retry_after);

    // Back, empty: every instance empties its cache on resubscribing; a clean sign-in.
    dep.redis.restart().await;
    let took = dep
        .until_all("/me", &cached, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!(
        "Redis restarted empty: the cached session is signed out on every instance after {took:?}"
    );
}

/// A sign-out on an instance that cannot read the session (Redis not answering, the session
/// not cached there) is refused with 503 and the cookie kept: a 303 would only drop the
/// browser's id cookie, leaving the session alive in Redis for every copy of it (and its
/// refresh token unrevoked). Once Redis answers, the same sign-out ends it everywhere. Found
/// by `bench/scale --fault sentinel --store redis`: old cookies served by every instance
/// long after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_that_cannot_read_its_session_is_refused_until_redis_answers() {
    let dep = deploy(2, json!({})).await;
    let mut jar = Jar::default();
    let callback = dep.sign_in_as(ALICE, &mut jar).await.1.instance;
    let cold = (0..2).find(|&i| dep.instances[i].name != callback).unwrap();
    let copy = jar.clone();
    dep.redis.pause();
    let out = dep.on(cold, "/logto/sign-out", &jar).await;
    dep.redis.resume();
    assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE, "{out:?}");
    assert!(out.retry_after.is_some(), "{out:?}");
    assert!(out.set_cookies().is_empty(), "the cookie is kept: {out:?}");

    dep.until_all("/me", &copy, StatusCode::OK, SETTLE).await;
    let out = dep.on(cold, "/logto/sign-out", &jar).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    let took = dep
        .until_all("/me", &copy, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!("a sign-out refused while Redis hung; once it answered, the copy was refused everywhere after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_api_lists_ends_one_and_ends_all() {
    let dep = deploy(3, json!({})).await;
    let (mut first, mut second) = (Jar::default(), Jar::default());
    dep.sign_in_as(ALICE, &mut first).await;
    dep.sign_in_as(ALICE, &mut second).await;
    let list = dep.on(0, "/sessions", &first).await;
    assert_eq!(list.status, StatusCode::OK, "{list:?}");
    let list = list.body.as_array().unwrap().clone();
    println!("Sessions::list: {list:#?}");
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(list
        .iter()
        .all(|s| s["user_agent"] == "rocket_logto-test/1.0"));
    let sids: Vec<&str> = [&first, &second]
        .iter()
        .map(|j| j.0["logto_sid"].split_once('=').unwrap().1)
        .collect();
    for s in &list {
        let handle = s["handle"].as_str().unwrap();
        assert!(
            sids.iter().all(|sid| !sid.contains(handle)),
            "a handle is no id"
        );
    }
    // End the other one.
    let other = list.iter().find(|s| s["current"] == false).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_string();
    let ended = dep
        .post_on(1, &format!("/sessions/end/{other}"), &first)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{ended:?}");
    assert_eq!(ended.body, json!(true));
    dep.until_all("/me", &second, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    dep.until_all("/me", &first, StatusCode::OK, SETTLE).await;
    assert_eq!(
        dep.on(2, "/sessions", &first)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Junk handles are refused as such.
    for junk in ["junk", "%2e%2e", &"A".repeat(43)] {
        let answer = dep
            .post_on(0, &format!("/sessions/end/{junk}"), &first)
            .await;
        assert!(
            answer.status == StatusCode::NOT_FOUND
                || answer.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{junk}: {answer:?}"
        );
    }
    // End all.
    let mut third = Jar::default();
    dep.sign_in_as(ALICE, &mut third).await;
    let all = dep
        .post_on(0, &format!("/admin/end-all/{ALICE_SUB}"), &Jar::default())
        .await;
    assert_eq!(all.status, StatusCode::OK);
    for jar in [&first, &third] {
        dep.until_all("/me", jar, StatusCode::UNAUTHORIZED, SETTLE)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_store_ends_all_sessions_of_a_user_across_instances() {
    let dep = deploy(2, json!({ "session_store": "cookie" })).await;
    let (mut first, mut second) = (Jar::default(), Jar::default());
    dep.sign_in_as(ALICE, &mut first).await;
    dep.sign_in_as(ALICE, &mut second).await;
    assert!(has_cookie_session(&first) && !first.has("logto_sid"));
    for jar in [&first, &second] {
        dep.until_all("/me", jar, StatusCode::OK, SETTLE).await;
    }
    // Listing needs the Redis store: a clear error.
    let list = dep.on(0, "/sessions", &first).await;
    assert_eq!(list.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The app's setup is for its log (the developer's message), not for the page.
    let message = list.body["message"].as_str().unwrap();
    assert!(message.contains("problem in its setup"), "{list:?}");
    assert!(!message.contains("session_store"), "{list:?}");
    let ended = dep
        .post_on(0, &format!("/admin/end-all/{ALICE_SUB}"), &Jar::default())
        .await;
    assert_eq!(ended.status, StatusCode::OK);
    for jar in [&first, &second] {
        let took = dep
            .until_all("/me", jar, StatusCode::UNAUTHORIZED, SETTLE)
            .await;
        println!(
            "cookie store, Sessions::end_all on instance a: 401 on both instances after {took:?}"
        );
    }
    let mut later = Jar::default();
    dep.sign_in_as(ALICE, &mut later).await;
    dep.until_all("/me", &later, StatusCode::OK, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_stores_moves_sessions_both_ways() {
    // Instances a, b keep sessions in cookies (with redis_url); c, d in Redis.
    // A short grace, for the replays of moved cookies.
    let dep = deploy(
        2,
        json!({ "session_store": "cookie", "rotation_grace_secs": 2 }),
    )
    .await;
    let mut redis_table = dep.logto.clone();
    app::merge(&mut redis_table, &json!({ "session_store": "redis" }));
    let (c, d) = tokio::join!(
        Instance::spawn("c", &redis_table, ENTRY),
        Instance::spawn("d", &redis_table, ENTRY)
    );
    let mut no_redis = dep.logto.clone();
    let no_redis = {
        let table = no_redis.as_object_mut().unwrap();
        for key in ["redis_url", "redis_timeout_ms", "session_store"] {
            table.remove(key);
        }
        Value::Object(table.clone())
    };
    let plain = Instance::spawn("plain", &no_redis, ENTRY).await;
    let on = |instance: &Instance, path: &str| format!("{}{path}", instance.url());

    // Cookie to Redis: read once, moved under a new id, the session cookies removed.
    let mut jar = Jar::default();
    dep.sign_in_as(ALICE, &mut jar).await;
    assert!(has_cookie_session(&jar));
    let cookie_jar = jar.clone();
    let moved = dep.get(&on(&c, "/me"), &jar).await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    jar.absorb(&moved.headers);
    // The same cookies sent again join that session within the grace (the browser's
    // parallel requests), then are refused: a session moves in once, and an old copy of its
    // cookies is worth nothing afterwards.
    let again = dep.get(&on(&d, "/me"), &cookie_jar).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let started = Instant::now();
    loop {
        let replay = dep.get(&on(&d, "/me"), &cookie_jar).await;
        assert_eq!(dep.session_keys().await.len(), 1, "no new session");
        if replay.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(replay.status, StatusCode::OK, "{replay:?}");
        assert!(started.elapsed() < SETTLE, "replays never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "moved cookies replayed: joined, then refused after {:?}",
        started.elapsed()
    );
    assert!(jar.has("logto_sid") && !has_cookie_session(&jar), "{jar:?}");
    assert_eq!(dep.session_keys().await.len(), 1);
    let on_d = dep.get(&on(&d, "/me"), &jar).await;
    assert_eq!(on_d.status, StatusCode::OK);
    assert!(on_d.set_cookies().is_empty());
    println!("cookie session moved into Redis: the browser now holds {jar:?}");

    // Redis to cookie: read from Redis once, moved into cookies, the record deleted.
    let redis_jar = jar.clone();
    let back = dep.on(0, "/me", &jar).await;
    assert_eq!(back.status, StatusCode::OK, "{back:?}");
    jar.absorb(&back.headers);
    assert!(has_cookie_session(&jar) && !jar.has("logto_sid"), "{jar:?}");
    assert!(dep.session_keys().await.is_empty());
    assert_eq!(dep.on(1, "/me", &jar).await.status, StatusCode::OK);
    assert_eq!(
        dep.get(&on(&d, "/me"), &redis_jar).await.status,
        StatusCode::UNAUTHORIZED,
        "the moved id is gone"
    );

    // A moved session ended through the Sessions API: its earlier cookies are refused too.
    let mut cookies = Jar::default();
    dep.sign_in_as(ALICE, &mut cookies).await;
    let mut moved = cookies.clone();
    let answer = dep.get(&on(&c, "/sessions"), &moved).await;
    moved.absorb(&answer.headers);
    let handle = answer.body[0]["handle"].as_str().unwrap().to_string();
    let url = on(&c, &format!("/sessions/end/{handle}"));
    let ended = dep
        .request(reqwest::Method::POST, &url, &moved, "application/json")
        .await;
    assert_eq!(ended.body, json!(true), "{ended:?}");
    for target in [
        on(&d, "/me"),
        on(&c, "/me"),
        format!("{}/me", dep.instances[0].url()),
    ] {
        let replay = dep.get(&target, &cookies).await;
        assert_eq!(
            replay.status,
            StatusCode::UNAUTHORIZED,
            "{target}: {replay:?}"
        );
    }

    // Without Redis, an id cookie is removed: a clean sign-in.
    let refused = dep.get(&on(&plain, "/me"), &redis_jar).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert!(
        refused
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("logto_sid=")),
        "{refused:?}"
    );
}

#[rocket::async_test]
async fn bad_session_store_values_refuse_the_launch() {
    for (patch, why) in [
        (
            json!({ "session_store": "memcached", "redis_url": "redis://127.0.0.1:1" }),
            "unknown value",
        ),
        (
            json!({ "session_store": "REDIS", "redis_url": "redis://127.0.0.1:1" }),
            "wrong case",
        ),
        (json!({ "session_store": 3 }), "not a string"),
        (json!({ "session_store": "redis" }), "no redis_url"),
    ] {
        let mut logto = app::logto_table("http://127.0.0.1:1", "app", "secret");
        app::merge(&mut logto, &patch);
        // The messages (naming the key, never a password) are checked in
        // src/config.rs::session_store_is_cookie_or_redis_with_a_redis_url.
        match app::rocket_with(logto, app::SECRET_KEY).ignite().await {
            Ok(_) => panic!("{why}: launched"),
            Err(e) => assert!(
                matches!(e.kind(), rocket::error::ErrorKind::FailedFairings(_)),
                "{why}: {e:?}"
            ),
        }
    }
    let mut ok = app::logto_table("http://127.0.0.1:1", "app", "secret");
    app::merge(&mut ok, &json!({ "session_store": "cookie" }));
    assert!(app::rocket_with(ok, app::SECRET_KEY).ignite().await.is_ok());
}
