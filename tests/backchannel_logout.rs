//! SECURITY.md "Logout": a back-channel logout token is POST form-encoded and checked for
//! signature, alg, `iss`, `aud`, `iat`, `exp`, the back-channel event, `sub` or `sid`, no
//! `nonce`, and `jti` replay; once accepted, the user's session cookies stop working.

#[path = "support/app.rs"]
#[allow(unused_imports)]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use fake_flow::*;
use fake_provider::{FakeProvider, BACKCHANNEL_LOGOUT_EVENT};
use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};

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
    assert_eq!(
        response.headers().get_one("Cache-Control"),
        Some("no-store")
    );
    (status, response.into_json().await.unwrap_or(Value::Null))
}

/// A signed-in client and a valid logout token for its user.
async fn setup() -> (FakeProvider, Client) {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    (fp, client)
}

#[rocket::async_test]
async fn logout_by_sub_ends_the_users_sessions() {
    let (fp, client) = setup().await;
    let token = fp.sign_jwt(json!({}), fp.logout_token_claims(Some("user-1"), None));
    assert_eq!(post_logout(&client, &token).await.0, Status::Ok);
    assert_eq!(
        signed_in_sub(&client).await,
        None,
        "the session cookie no longer works"
    );
    // A new sign-in after the logout works.
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn logout_by_sid_ends_that_session_only() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_patch = Some(json!({"sid": "session-a"})));
    let a = signed_in(&fp, table(&fp), "user-1").await;
    fp.set(|b| b.id_token_patch = Some(json!({"sid": "session-b"})));
    let b = signed_in(&fp, table(&fp), "user-1").await;
    let token = fp.sign_jwt(json!({}), fp.logout_token_claims(None, Some("session-a")));
    assert_eq!(post_logout(&a, &token).await.0, Status::Ok);
    assert_eq!(signed_in_sub(&a).await, None);
    assert_eq!(signed_in_sub(&b).await.as_deref(), Some("user-1"));
}

async fn assert_refused(
    patch: impl FnOnce(&FakeProvider, &mut Value) -> Option<String>,
    why: &str,
) {
    let (fp, client) = setup().await;
    let mut claims = fp.logout_token_claims(Some("user-1"), None);
    let token = patch(&fp, &mut claims).unwrap_or_else(|| fp.sign_jwt(json!({}), claims));
    let (status, body) = post_logout(&client, &token).await;
    assert_eq!(status, Status::BadRequest, "{why}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"].as_str().unwrap().contains(why),
        "{body}"
    );
    assert_eq!(
        signed_in_sub(&client).await.as_deref(),
        Some("user-1"),
        "a refused token ends nothing"
    );
}

#[rocket::async_test]
async fn logout_token_bad_signature_refused() {
    assert_refused(
        |fp, c| {
            let t = fp.sign_jwt(json!({}), c.clone());
            let (head, sig) = t.rsplit_once('.').unwrap();
            let first = if sig.starts_with('A') { "B" } else { "A" };
            let flipped = format!("{first}{}", &sig[1..]);
            Some(format!("{head}.{flipped}"))
        },
        "signature",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_alg_none_or_unadvertised_refused() {
    assert_refused(
        |fp, c| Some(fp.sign_jwt(json!({"alg": "none"}), c.clone())),
        "algorithm",
    )
    .await;
    assert_refused(
        |fp, c| Some(fp.sign_jwt(json!({"alg": "HS256"}), c.clone())),
        "algorithm",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_wrong_iss_refused() {
    assert_refused(
        |_, c| {
            c["iss"] = json!("https://evil.example/oidc");
            None
        },
        "issuer",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_wrong_aud_refused() {
    assert_refused(
        |_, c| {
            c["aud"] = json!("another-app");
            None
        },
        "aud",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_without_iat_or_in_the_future_refused() {
    assert_refused(
        |_, c| {
            c.as_object_mut().unwrap().remove("iat");
            None
        },
        "iat",
    )
    .await;
    assert_refused(
        |_, c| {
            c["iat"] = json!(c["iat"].as_i64().unwrap() + 600);
            None
        },
        "future",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_expired_or_without_exp_refused() {
    assert_refused(
        |_, c| {
            c["exp"] = json!(c["iat"].as_i64().unwrap() - 600);
            None
        },
        "expired",
    )
    .await;
    assert_refused(
        |_, c| {
            c.as_object_mut().unwrap().remove("exp");
            None
        },
        "exp",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_without_the_backchannel_event_refused() {
    assert_refused(
        |_, c| {
            c["events"] = json!({"http://example.com/other": {}});
            None
        },
        "event",
    )
    .await;
    assert_refused(
        |_, c| {
            c.as_object_mut().unwrap().remove("events");
            None
        },
        "event",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_without_sub_or_sid_refused() {
    assert_refused(
        |_, c| {
            c.as_object_mut().unwrap().remove("sub");
            None
        },
        "neither",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_with_nonce_refused() {
    assert_refused(
        |_, c| {
            c["nonce"] = json!("n");
            None
        },
        "nonce",
    )
    .await;
}

#[rocket::async_test]
async fn logout_token_replayed_jti_refused() {
    let (fp, client) = setup().await;
    let claims = fp.logout_token_claims(Some("someone-else"), None);
    let token = fp.sign_jwt(json!({}), claims);
    assert_eq!(post_logout(&client, &token).await.0, Status::Ok);
    let (status, body) = post_logout(&client, &token).await;
    assert_eq!(status, Status::BadRequest);
    assert!(
        body["error_description"].as_str().unwrap().contains("jti"),
        "{body}"
    );
    let mut no_jti = fp.logout_token_claims(Some("someone-else"), None);
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        post_logout(&client, &fp.sign_jwt(json!({}), no_jti))
            .await
            .0,
        Status::BadRequest
    );
}

#[rocket::async_test]
async fn logout_token_must_be_posted_form_encoded() {
    let (fp, client) = setup().await;
    let token = fp.sign_jwt(json!({}), fp.logout_token_claims(Some("user-1"), None));
    let get = client
        .get(format!("/logto/backchannel-logout?logout_token={token}"))
        .dispatch()
        .await;
    assert_ne!(get.status(), Status::Ok);
    let json_body = client
        .post("/logto/backchannel-logout")
        .header(ContentType::JSON)
        .body(json!({ "logout_token": token }).to_string())
        .dispatch()
        .await;
    assert_ne!(json_body.status(), Status::Ok);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
    let _ = BACKCHANNEL_LOGOUT_EVENT;
}

#[rocket::async_test]
async fn logout_token_signed_with_a_rotated_key_is_verified_after_one_refetch() {
    let (fp, client) = setup().await;
    fp.rotate_keys();
    let token = fp.sign_jwt(json!({}), fp.logout_token_claims(Some("user-1"), None));
    assert_eq!(post_logout(&client, &token).await.0, Status::Ok);
    assert_eq!(signed_in_sub(&client).await, None);
}
