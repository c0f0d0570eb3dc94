//! Issue 9, item 8, through the app and the fake provider (which rotates the refresh token
//! on every refresh, the worst case): an old copy of the session cookies follows a rotation
//! only for `rotation_grace_secs`; later it is signed out, and its spent token never
//! reaches Logto.
//!
//! Item 4 through the app is `hardening_refresh_memory.rs` (its own binary: it counts the
//! process's heap); items 4, 8 and 14 are unit-tested in `src/util/bounded.rs`, `src/tokens/refresh.rs`
//! and `src/config.rs`.

#[path = "support/app.rs"]
mod app;
#[path = "support/browser.rs"]
mod browser;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::time::Duration;

use app::*;
use browser::Browser;
use fake_flow::*;
use fake_provider::{FakeProvider, TokenStatus};
use rocket::http::Status;
use serde_json::json;

/// The refresh tokens presented to the token endpoint, in order.
fn presented_refresh_tokens(fp: &FakeProvider) -> Vec<String> {
    fp.requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect()
}

/// How many requests to the provider, of any kind, carried `token` in their form.
fn requests_carrying(fp: &FakeProvider, token: &str) -> usize {
    fp.requests()
        .iter()
        .filter(|r| r.form.iter().any(|(_, v)| v == token))
        .count()
}

// ---- Item 8: rotation grace ----------------------------------------------------------

#[rocket::async_test]
async fn within_the_grace_an_old_cookie_follows_the_rotation_and_never_sends_its_token() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["rotation_grace_secs"] = json!(60);
    let client = untracked(logto).await;
    let mut browser = Browser::signed_in(&client, &fp, "user-1").await;
    let old = browser.clone();

    let (status, shopping, _) = browser.browse(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{shopping}");
    let presented = presented_refresh_tokens(&fp);
    assert_eq!(presented.len(), 1);
    let spent = presented[0].clone();
    assert_eq!(fp.refresh_token_status(&spent), TokenStatus::RotatedOut);

    // The old cookies, same target: the shared result, no token request at all.
    let calls = fp.count("/token");
    let (status, again, _) = old.clone().browse(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{again}");
    assert_eq!(again["access_token"], shopping["access_token"]);
    assert_eq!(
        fp.count("/token"),
        calls,
        "no token request for the old cookie"
    );

    // The old cookies, another target: one refresh, with the successor.
    let mut followed = old.clone();
    let path = format!("/token?resource={}", urlencode(STORE));
    let (status, store, _) = followed.browse(&client, &path).await;
    assert_eq!(status, Status::Ok, "{store}");
    assert_eq!(store["claims"]["aud"], STORE);
    assert_eq!(fp.count("/token"), calls + 1);
    assert_eq!(
        requests_carrying(&fp, &spent),
        1,
        "the spent token was sent once, when it was live"
    );
    // The grant is alive.
    assert_eq!(
        followed.status_of(&client, "/force-refresh").await,
        Status::Ok
    );
    assert_eq!(requests_carrying(&fp, &spent), 1);
}

#[rocket::async_test]
async fn after_the_grace_an_old_cookie_is_signed_out_and_its_spent_token_is_not_sent() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["rotation_grace_secs"] = json!(1);
    let client = untracked(logto).await;
    let mut browser = Browser::signed_in(&client, &fp, "user-1").await;
    let old = browser.clone();
    let (status, body, _) = browser.browse(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{body}");
    let spent = presented_refresh_tokens(&fp)[0].clone();

    // Let the 1 s grace pass (time itself is what is tested; nothing to wait for).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let calls = fp.count("/token");
    let mut stale = old.clone();
    let (status, body, lines) = stale.browse(&client, "/shopping").await;
    assert_eq!(status, Status::Unauthorized, "{body}");
    let session = old.session_name().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{session}=")) && l.contains("Max-Age=0")),
        "the old session's cookies are cleared: {lines:?}"
    );
    assert!(
        !stale.0.keys().any(|name| name.starts_with(&session)),
        "signed out: {stale:?}"
    );
    assert_eq!(fp.count("/token"), calls, "no token request at all");
    assert_eq!(
        requests_carrying(&fp, &spent),
        1,
        "the spent token was sent only once, when it was live"
    );
    // Another target: signed out too; a page load is sent to sign in. Still not sent.
    let path = format!("/token?resource={}", urlencode(STORE));
    assert_eq!(old.status_of(&client, &path).await, Status::Unauthorized);
    let response = client
        .get("/shopping")
        .cookies(old.cookies())
        .header(html_accept())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther, "to sign-in");
    assert!(location(&response).starts_with("/logto/sign-in"));
    drop(response);
    assert_eq!(fp.count("/token"), calls);
    assert_eq!(requests_carrying(&fp, &spent), 1);

    // The browser that holds the new token was not affected: Logto saw no replay.
    assert_eq!(
        browser.status_of(&client, "/force-refresh").await,
        Status::Ok
    );
    assert_eq!(fp.refresh_token_status(&spent), TokenStatus::RotatedOut);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
