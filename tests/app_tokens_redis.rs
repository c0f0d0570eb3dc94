//! Issue 25, part 2 across instances: three instances of the app, each a process of its
//! own, behind a round-robin front and sharing one Redis, against the real Logto-like
//! provider. 50 concurrent requests for the app's own token (client credentials), spread
//! over the instances, make one token request: the instances share it through the refresh
//! lease in Redis. Without Redis, each instance asks once. Needs `redis-server`
//! (scripts/setup) and `npm ci --prefix tests/provider`.

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

use deployment::{Deployment, Jar};
use reqwest::StatusCode;
use serde_json::json;

/// The test selected in the instance processes.
const ENTRY: &str = "instance_process";
const REQUESTS: usize = 50;

/// Not a test of its own: the entry point of the instance processes (does nothing here).
#[test]
fn instance_process() {
    instances::serve_if_instance();
}

async fn deploy(with_redis: bool) -> Deployment {
    deployment::deploy(3, ENTRY, |redis| {
        let mut settings = json!({ "m2m_app_id": "m2m-app", "m2m_app_secret": "m2m-secret" });
        if with_redis {
            app::merge(&mut settings, &json!({ "redis_url": redis.url() }));
        }
        settings
    })
    .await
}

/// 50 concurrent requests through the front: the instances that answered, the distinct
/// tokens, and the provider's count of client-credentials requests.
async fn storm(dep: &Deployment) -> (BTreeSet<String>, BTreeSet<String>, u64) {
    // A slow Logto: every instance asks while the first request is in flight.
    dep.provider.set_token_delay(300).await;
    dep.provider.reset_stats().await;
    let url = format!("{}/app-token", dep.front.url());
    let jar = Jar::default();
    let answers =
        rocket::futures::future::join_all((0..REQUESTS).map(|_| dep.get(&url, &jar))).await;
    dep.provider.set_token_delay(0).await;
    let mut instances = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        instances.insert(answer.instance.clone());
        tokens.insert(answer.body["access_token"].as_str().unwrap().to_string());
    }
    let calls = dep.provider.stats().await["token_requests"]["client_credentials"]
        .as_u64()
        .unwrap_or_default();
    (instances, tokens, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_redis_make_one_token_request() {
    let dep = deploy(true).await;
    let (instances, tokens, calls) = storm(&dep).await;
    println!(
        "app tokens, 3 instances with Redis: {REQUESTS} requests over {instances:?}, \
         client-credentials requests: {calls}, distinct tokens: {}",
        tokens.len()
    );
    assert_eq!(instances.len(), 3, "the front spread the requests");
    assert_eq!(calls, 1, "one token request across the instances");
    assert_eq!(tokens.len(), 1);
}

/// The control: without Redis, each instance asks for its own token (so the test above
/// can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_without_redis_ask_once_each() {
    let dep = deploy(false).await;
    let (instances, tokens, calls) = storm(&dep).await;
    assert_eq!(instances.len(), 3);
    assert_eq!(calls, 3, "one per instance");
    assert_eq!(tokens.len(), 3);
}
