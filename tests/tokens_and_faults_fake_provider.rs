//! Access tokens, refresh and user info against the fake provider's misbehaviour, and how
//! the app behaves when Logto is down, slow, rate-limiting or answering garbage.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::time::{Duration, Instant};

use app::*;
use fake_flow::*;
use fake_provider::{FakeProvider, Fault, TokenStatus};
use rocket::http::Status;
use serde_json::{json, Value};

// ---- Tokens and refresh --------------------------------------------------------------

#[rocket::async_test]
async fn resource_token_has_the_resource_audience_and_is_cached_per_resource() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, shop) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{shop}");
    assert_eq!(shop["claims"]["aud"], SHOPPING);
    let (_, store) = get_json(&client, &format!("/token?resource={}", urlencode(STORE))).await;
    assert_eq!(
        store["claims"]["aud"], STORE,
        "a token for one resource is never returned for another"
    );
    let refreshes = fp.count("/token");
    let (_, again) = get_json(&client, "/shopping").await;
    assert_eq!(
        again["access_token"], shop["access_token"],
        "served from the session"
    );
    assert_eq!(
        fp.count("/token"),
        refreshes,
        "no token request for a cached token"
    );
}

#[rocket::async_test]
async fn resource_not_configured_is_a_clear_error() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, body) = get_json(&client, "/token?resource=https%3A%2F%2Funknown.example").await;
    // It comes from the request: not found here, not a server error.
    assert_eq!(status, Status::NotFound);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("https://unknown.example"),
        "{body}"
    );
}

#[rocket::async_test]
async fn resource_token_lacking_required_scopes_is_403() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.resource_scopes
            .insert(SHOPPING.into(), vec!["shopping:read".into()]);
    });
    let client = signed_in(&fp, table(&fp), "user-1").await;
    assert_eq!(get_json(&client, "/shopping").await.0, Status::Ok);
    let (status, body) = get_json(&client, "/shopping-write").await;
    assert_eq!(status, Status::Forbidden);
    assert!(
        body["message"].as_str().unwrap().contains("shopping:write"),
        "{body}"
    );
}

#[rocket::async_test]
async fn resource_token_is_401_when_signed_out() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(get_json(&client, "/shopping").await.0, Status::Unauthorized);
}

#[rocket::async_test]
async fn expired_token_is_refreshed_and_written_back_in_the_same_response() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.access_token_ttl = 30); // inside the 60 s margin at once
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (_, first) = get_json(&client, "/shopping").await;
    fp.set(|b| b.access_token_ttl = 3600);
    let response = client
        .get("/shopping")
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    assert!(
        set_cookies(&response)
            .iter()
            .any(|l| l.starts_with("logto_session=")),
        "written back"
    );
    let second: Value = response.into_json().await.unwrap();
    assert_ne!(second["access_token"], first["access_token"]);
    let refreshes = fp.count("/token");
    let (_, third) = get_json(&client, "/shopping").await;
    assert_eq!(third["access_token"], second["access_token"]);
    assert_eq!(fp.count("/token"), refreshes);
}

#[rocket::async_test]
async fn margin_is_configurable() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.access_token_ttl = 30);
    let mut logto = table(&fp);
    logto["token_refresh_margin_secs"] = json!(10);
    let client = signed_in(&fp, logto, "user-1").await;
    let (_, first) = get_json(&client, "/shopping").await;
    let (_, second) = get_json(&client, "/shopping").await;
    assert_eq!(
        first["access_token"], second["access_token"],
        "30 s left > 10 s margin"
    );
}

#[rocket::async_test]
async fn rotated_refresh_token_is_stored_and_the_old_one_never_reused() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    get_json(&client, "/shopping").await;
    get_json(&client, &format!("/token?resource={}", urlencode(STORE))).await;
    get_json(&client, "/org/org_acme").await;
    // Every refresh used the newest token: none was rotated-out when presented.
    let tokens: Vec<String> = fp
        .requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect();
    assert_eq!(tokens.len(), 3);
    let mut unique = tokens.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "each refresh with a fresh token");
    assert_eq!(fp.refresh_token_status(&tokens[2]), TokenStatus::RotatedOut);
    assert_eq!(
        get_json(&client, "/force-refresh").await.0,
        Status::Ok,
        "the grant is alive"
    );
}

#[rocket::async_test]
async fn refresh_without_id_token_keeps_the_old_one() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.refresh_id_token = false);
    let client = signed_in(&fp, table(&fp), "user-1").await;
    assert_eq!(get_json(&client, "/shopping").await.0, Status::Ok);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn refresh_with_id_token_replaces_it_after_verification() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.users.insert(
            "user-1".into(),
            json!({"name": "Before"}).as_object().unwrap().clone(),
        );
    });
    let client = signed_in(&fp, table(&fp), "user-1").await;
    assert_eq!(get_json(&client, "/me").await.1["name"], "Before");
    fp.set(|b| {
        b.users.insert(
            "user-1".into(),
            json!({"name": "After"}).as_object().unwrap().clone(),
        );
    });
    assert_eq!(get_json(&client, "/force-refresh").await.0, Status::Ok);
    assert_eq!(
        get_json(&client, "/me").await.1["name"],
        "After",
        "roles/claims change visible after a forced refresh"
    );
}

#[rocket::async_test]
async fn refresh_id_token_with_another_sub_is_refused_and_signs_out() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.refresh_id_token_sub = Some("someone-else".into()));
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::BadGateway, "{body}");
    assert_eq!(signed_in_sub(&client).await, None);
}

#[rocket::async_test]
async fn refresh_invalid_grant_signs_out_cleanly() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.revoke_all_grants();
    let response = client
        .get("/shopping")
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    assert!(
        set_cookies(&response)
            .iter()
            .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")),
        "cookies cleared"
    );
    drop(response);
    assert_eq!(signed_in_sub(&client).await, None);
    let refreshes = fp.count("/token");
    assert_eq!(get_json(&client, "/shopping").await.0, Status::Unauthorized);
    assert_eq!(
        fp.count("/token"),
        refreshes,
        "the refused token is never sent again"
    );
}

#[rocket::async_test]
async fn refresh_network_failure_is_503_and_keeps_the_session() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.stop().await;
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::ServiceUnavailable, "{body}");
    assert_eq!(
        signed_in_sub(&client).await.as_deref(),
        Some("user-1"),
        "still signed in"
    );
    fp.restart().await;
    assert_eq!(
        get_json(&client, "/shopping").await.0,
        Status::Ok,
        "works when Logto is back"
    );
}

#[rocket::async_test]
async fn refresh_answer_cut_short_is_502_and_the_token_is_never_resent() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.set(|b| b.faults.token = Fault::TruncatedJson.times(1));
    let (status, body) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::BadGateway, "{body}");
    // What Logto sent is the developer's business (logged); the page says it generically.
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("answered with something it cannot use"),
        "{body}"
    );
    assert!(!message.contains("token refresh"), "{body}");
    let presented: Vec<String> = fp
        .requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect();
    // The next request does not spend the (possibly rotated) token again.
    get_json(&client, "/shopping").await;
    let after: Vec<String> = fp
        .requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect();
    assert_eq!(presented, after);
}

#[rocket::async_test]
async fn organization_token_for_members_and_403_for_others() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.add_org_member("org_private", "someone-else"));
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, token) = get_json(&client, "/org/org_acme").await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(token["claims"]["aud"], "urn:logto:organization:org_acme");
    let (status, body) = get_json(&client, "/org/org_private").await;
    assert_eq!(status, Status::Forbidden);
    assert!(
        body["message"].as_str().unwrap().contains("not a member"),
        "{body}"
    );
    // The 403 did not break the session: the member token is still served.
    assert_eq!(get_json(&client, "/org/org_acme").await.0, Status::Ok);
}

#[rocket::async_test]
async fn organization_token_without_organizations_scope_is_a_configuration_error() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["scopes"] = json!(["email"]);
    let client = signed_in(&fp, logto, "user-1").await;
    let (status, body) = get_json(&client, "/org/org_acme").await;
    assert_eq!(status, Status::InternalServerError);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("problem in its setup"), "{body}");
    assert!(!message.contains("urn:logto:scope:organizations"), "{body}");
}

#[rocket::async_test]
async fn organization_tokens_of_all_organizations_one_refresh_at_a_time() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.add_org_member("org_two", "user-1"));
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, body) = get_json(&client, "/orgs").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(
        body["org_acme"]["claims"]["aud"],
        "urn:logto:organization:org_acme"
    );
    assert_eq!(
        body["org_two"]["claims"]["aud"],
        "urn:logto:organization:org_two"
    );
    let presented: Vec<String> = fp
        .requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect();
    assert_eq!(presented.len(), 2);
    assert_ne!(
        presented[0], presented[1],
        "the second used the first one's rotated token"
    );
}

#[rocket::async_test]
async fn userinfo_is_typed_and_another_sub_is_discarded_rp_userinfo_bad_sub_claim() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, info) = get_json(&client, "/userinfo").await;
    assert_eq!(status, Status::Ok, "{info}");
    assert_eq!(info["sub"], "user-1");
    assert!(info.get("custom_data").is_some(), "{info}");
    let userinfo = fp.last_request("/me").unwrap();
    assert!(
        userinfo
            .header("authorization")
            .unwrap()
            .starts_with("Bearer "),
        "rp-userinfo-bearer-header"
    );
    fp.set(|b| b.userinfo_sub = Some("someone-else".into()));
    let (status, body) = get_json(&client, "/userinfo").await;
    assert_eq!(status, Status::BadGateway);
    assert!(
        !body.to_string().contains("someone-else"),
        "the foreign answer is not shown"
    );
}

#[rocket::async_test]
async fn fetch_user_info_keeps_it_in_the_session() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["fetch_user_info"] = json!(true);
    let client = signed_in(&fp, logto, "user-1").await;
    let calls = fp.count("/me");
    assert_eq!(calls, 1, "fetched once at sign-in");
    let (_, home) = get_json(&client, "/").await;
    assert!(home["user_info"]["custom_data"].is_object(), "{home}");
    assert_eq!(get_json(&client, "/userinfo").await.0, Status::Ok);
    assert_eq!(fp.count("/me"), calls, "no further userinfo request");
}

// ---- Faults --------------------------------------------------------------------------

#[rocket::async_test]
async fn provider_down_during_callback_is_503_and_the_user_can_retry() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    fp.set(|b| b.faults.token = Fault::CloseConnection.times(1));
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert!(response
        .into_string()
        .await
        .unwrap()
        .contains("could not be reached"));
    let (status, _, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::SeeOther, "a new sign-in works");
}

#[rocket::async_test]
async fn provider_that_hangs_fails_within_the_configured_timeout() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["http_timeout_secs"] = json!(1);
    let client = client(logto).await;
    fp.set(|b| b.faults.discovery = Fault::Hang);
    let started = Instant::now();
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(response.into_string().await.unwrap().contains("in time"));
}

#[rocket::async_test]
async fn provider_answering_html_truncated_json_or_500_is_502() {
    for fault in [
        Fault::Html,
        Fault::TruncatedJson,
        Fault::status(500),
        Fault::TruncatedBody,
    ] {
        let fp = FakeProvider::start().await;
        let client = app_for(&fp).await;
        fp.set(|b| b.faults.discovery = fault.clone());
        let response = client.get("/logto/sign-in").dispatch().await;
        assert_eq!(response.status(), Status::BadGateway, "{fault:?}");
        let body = response.into_string().await.unwrap();
        assert!(!body.contains("discovery"), "{fault:?}: {body}");
        assert!(
            body.contains("answered with something it cannot use"),
            "{fault:?}: {body}"
        );
    }
}

#[rocket::async_test]
async fn rate_limited_429_is_503_with_retry_after() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.set(|b| b.faults.token = Fault::status(429).with_header("Retry-After", "7"));
    let response = client
        .get("/shopping")
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert_eq!(response.headers().get_one("Retry-After"), Some("7"));
    drop(response);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
    // At the callback too.
    let fresh = app_for(&fp).await;
    let authorize = start_sign_in(&fresh, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let response = fresh.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert_eq!(response.headers().get_one("Retry-After"), Some("7"));
}

#[rocket::async_test]
async fn auth_responses_are_not_cached_and_send_no_referrer() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    for path in [
        "/logto/sign-in",
        "/logto/sign-out",
        "/logto/sign-in-callback",
    ] {
        let response = client.get(path).dispatch().await;
        assert_eq!(
            response.headers().get_one("Cache-Control"),
            Some("no-store"),
            "{path}"
        );
        assert_eq!(
            response.headers().get_one("Referrer-Policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
