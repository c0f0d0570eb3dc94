//! Issue 9, items 3, 5, 7 and 15: how the app behaves when Logto is slow, dead or flooded
//! with forged tokens, and that every JWT goes through one verification path.
//!
//! Timing assertions bound how long something may take (a request that should not wait
//! for a hanging Logto); nothing here sleeps to let something else happen.

#[path = "support/app.rs"]
#[allow(unused_imports)]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::*;
use fake_flow::*;
use fake_provider::{FakeProvider, Fault, TokenStatus};
use rocket::http::{ContentType, Cookie, Status};
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};
use tokio::task::JoinSet;

const DISCOVERY: &str = "/.well-known/openid-configuration";

async fn post_logout(client: &Client, token: &str) -> (Status, Value) {
    let body = format!(
        "logout_token={}",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    let response = client
        .post("/logto/backchannel-logout")
        .header(ContentType::Form)
        .body(body)
        .dispatch()
        .await;
    let status = response.status();
    (status, response.into_json().await.unwrap_or(Value::Null))
}

/// Waits (polling, with a deadline) until `condition` holds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    // A ceiling for a broken test, not for a busy runner: the wait ends when it holds.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs every task to the end, failing the test if that takes longer than `limit`.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>, limit: Duration, what: &str) -> Vec<T> {
    let all = async {
        let mut out = Vec::new();
        while let Some(result) = tasks.join_next().await {
            out.push(result.expect("task panicked"));
        }
        out
    };
    tokio::time::timeout(limit, all)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// Runs `request` `n` times at once against `client`.
fn spawn_many<F, Fut, T>(client: &Arc<Client>, n: usize, request: F) -> JoinSet<T>
where
    F: Fn(Arc<Client>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = JoinSet::new();
    for i in 0..n {
        tasks.spawn(request(client.clone(), i));
    }
    tasks
}

/// The refresh tokens the token endpoint received, in order.
fn presented_refresh_tokens(fp: &FakeProvider) -> Vec<String> {
    fp.requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect()
}

// ---- Item 3: JWKS refetch flood ------------------------------------------------------

#[rocket::async_test]
async fn forged_kids_flood_makes_a_handful_of_jwks_fetches_and_delays_no_other_request() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["http_timeout_secs"] = json!(10);
    let client = Arc::new(signed_in(&fp, logto, "user-1").await);
    let fetched_at_sign_in = fp.count("/jwks");
    // A slow key set keeps the flood's refetch in flight while the other requests run.
    fp.set(|b| b.faults.jwks = Fault::Delay(Duration::from_millis(2000)));

    let forged: Vec<String> = (0..1000)
        .map(|i| {
            fp.sign_jwt(
                json!({ "kid": format!("forged-{i}") }),
                fp.logout_token_claims(Some("user-1"), None),
            )
        })
        .collect();
    let forged = Arc::new(forged);
    let finished = Arc::new(AtomicUsize::new(0));
    let flood = spawn_many(&client, forged.len(), |client, i| {
        let (forged, finished) = (forged.clone(), finished.clone());
        async move {
            let answer = post_logout(&client, &forged[i]).await;
            finished.fetch_add(1, Ordering::SeqCst);
            answer
        }
    });
    wait_until("the flood refetches the key set", || {
        fp.count("/jwks") > fetched_at_sign_in
    })
    .await;

    // While the refetch is in flight: a sign-in starts, a signed-in page answers, and a
    // logout token signed with a known key is accepted.
    let sign_in = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(sign_in.status(), Status::SeeOther);
    let (status, me) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Ok, "{me}");
    let genuine = fp.sign_jwt(
        json!({}),
        fp.logout_token_claims(Some("someone-else"), None),
    );
    assert_eq!(post_logout(&client, &genuine).await.0, Status::Ok);
    assert!(
        finished.load(Ordering::SeqCst) < forged.len(),
        "the other requests answered while the flood was still running"
    );

    // A ceiling (1000 requests in a debug build on a busy runner); what is asserted is
    // the number of fetches and that the other requests did not wait for the flood.
    let answers = join_all(flood, Duration::from_secs(120), "the flood").await;
    for (status, body) in &answers {
        assert_eq!(*status, Status::BadRequest, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("key")),
            "{body}"
        );
    }
    let refetches = fp.count("/jwks") - fetched_at_sign_in;
    assert!(
        (1..=3).contains(&refetches),
        "1,000 forged kids caused {refetches} JWKS fetches"
    );
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

// ---- Item 5: discovery under a dead provider -----------------------------------------

#[rocket::async_test]
async fn hanging_provider_fifty_concurrent_sign_ins_all_answer_within_one_timeout() {
    let fp = FakeProvider::start().await;
    let timeout = Duration::from_secs(2);
    let mut logto = table(&fp);
    logto["http_timeout_secs"] = json!(timeout.as_secs());
    let client = Arc::new(client(logto).await);
    fp.set(|b| b.faults.discovery = Fault::Hang);

    let started = Instant::now();
    let sign_ins = spawn_many(&client, 50, |client, _| async move {
        let response = client.get("/logto/sign-in").dispatch().await;
        let status = response.status();
        (status, response.into_string().await.unwrap_or_default())
    });
    let answers = join_all(sign_ins, 10 * timeout, "50 sign-ins").await;
    let elapsed = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, Status::ServiceUnavailable, "{body}");
        assert!(body.contains("in time"), "{body}");
    }
    assert!(
        elapsed < 2 * timeout,
        "50 concurrent sign-ins took {elapsed:?} with an http_timeout of {timeout:?}"
    );
    assert_eq!(fp.count(DISCOVERY), 1, "the callers shared one attempt");

    // The failure is remembered for a while: the next caller fails at once.
    let again = Instant::now();
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert!(
        again.elapsed() < timeout / 2,
        "answered in {:?}",
        again.elapsed()
    );
    assert_eq!(fp.count(DISCOVERY), 1, "no new attempt during the backoff");
}

#[rocket::async_test]
async fn refused_connection_to_discovery_is_retried_by_the_next_request() {
    // A refused connection costs no one a timeout: it is not remembered.
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    fp.stop().await;
    assert_eq!(
        client.get("/logto/sign-in").dispatch().await.status(),
        Status::ServiceUnavailable
    );
    fp.restart().await;
    assert_eq!(
        client.get("/logto/sign-in").dispatch().await.status(),
        Status::SeeOther
    );
}

// ---- Item 7: a refresh answer that never comes ---------------------------------------

#[rocket::async_test]
async fn refresh_timeout_after_sending_signs_out_and_never_resends_the_token() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["http_timeout_secs"] = json!(1);
    let client = signed_in(&fp, logto, "user-1").await;
    let cookies: Vec<Cookie<'static>> = client.cookies().iter().cloned().collect();
    fp.set(|b| b.faults.token = Fault::Hang.times(1));

    let (status, body) = get_json(&client, "/shopping").await;
    let sent = presented_refresh_tokens(&fp);
    assert_eq!(sent.len(), 1, "{sent:?}");

    // Logto may have rotated the token: neither this browser nor a request that still
    // carries the old cookies (another tab) sends it again.
    let (again, _) = get_json(&client, "/shopping").await;
    let stale = client
        .get("/shopping")
        .cookies(cookies)
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    let stale_status = stale.status();
    drop(stale);
    let resent = presented_refresh_tokens(&fp)
        .iter()
        .filter(|t| **t == sent[0])
        .count();
    assert_eq!(resent, 1, "the possibly spent refresh token was sent again");

    // The user learns what happened: 503, signed out, asked to sign in again.
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("in time"), "{body}");
    assert!(message.contains("sign in again"), "{body}");
    assert_eq!(again, Status::Unauthorized);
    assert_ne!(stale_status, Status::Ok);
    assert_eq!(signed_in_sub(&client).await, None);
}

#[rocket::async_test]
async fn refresh_connection_refused_keeps_the_session_and_the_token_is_retried() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.stop().await;
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
    assert!(presented_refresh_tokens(&fp).is_empty());

    fp.restart().await;
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{body}");
    let sent = presented_refresh_tokens(&fp);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        fp.refresh_token_status(&sent[0]),
        TokenStatus::RotatedOut,
        "the token that never left was used, and Logto rotated it"
    );
}

// ---- Item 15: one verification path ------------------------------------------------

#[rocket::async_test]
async fn logout_token_without_kid_is_refused_when_logto_has_several_keys() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.decoy_keys = 2);
    let client = signed_in(&fp, table(&fp), "user-1").await;
    // Signed with Logto's real key, but the header names none of the three.
    let token = fp.sign_jwt(
        json!({ "kid": null }),
        fp.logout_token_claims(Some("user-1"), None),
    );
    let (status, body) = post_logout(&client, &token).await;
    assert_eq!(status, Status::BadRequest, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("key id")),
        "{body}"
    );
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn logout_token_without_kid_is_accepted_when_logto_has_one_key() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let token = fp.sign_jwt(
        json!({ "kid": null }),
        fp.logout_token_claims(Some("user-1"), None),
    );
    let (status, body) = post_logout(&client, &token).await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(signed_in_sub(&client).await, None);
}
