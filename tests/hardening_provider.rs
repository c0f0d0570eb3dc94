//! Issue 9, hardening of what talks to Logto: a refresh answer that never comes (item 7).
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

use app::*;
use fake_flow::*;
use fake_provider::{FakeProvider, Fault, TokenStatus};
use rocket::http::{Cookie, Status};
use serde_json::json;

/// The refresh tokens the token endpoint received, in order.
fn presented_refresh_tokens(fp: &FakeProvider) -> Vec<String> {
    fp.requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect()
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
