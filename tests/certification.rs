//! The OpenID Foundation's relying-party certification cases (Basic and Config RP
//! profiles), one test each, named after the case ID, against the in-process fake
//! provider. `scripts/certification-table` turns this file's results into the README table.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use app::*;
use fake_flow::*;
use fake_provider::{Alg, Behaviour, FakeProvider, Kid, Nonce, Options};
use rocket::http::Status;
use serde_json::json;

/// Signs in as `user-1` with the fake set up by `setup`; returns the callback status and
/// whether the app then sees `user-1` signed in.
async fn attempt(
    options: Options,
    setup: impl FnOnce(&mut Behaviour),
) -> (Status, bool, FakeProvider) {
    let fp = FakeProvider::start_with(options).await;
    fp.set(setup);
    let client = app_for(&fp).await;
    let (status, _, _) = sign_in(&client, &fp, "user-1").await;
    let signed_in = signed_in_sub(&client).await.as_deref() == Some("user-1");
    (status, signed_in, fp)
}

async fn assert_refused(options: Options, setup: impl FnOnce(&mut Behaviour)) {
    let (status, signed_in, _) = attempt(options, setup).await;
    assert_eq!(status, Status::BadRequest);
    assert!(!signed_in);
}

async fn assert_accepted(options: Options, setup: impl FnOnce(&mut Behaviour)) -> FakeProvider {
    let (status, signed_in, fp) = attempt(options, setup).await;
    assert_eq!(status, Status::SeeOther);
    assert!(signed_in);
    fp
}

/// `rp-response_type-code`: Uses the code flow: `response_type=code`, nothing in the fragment.
#[rocket::async_test]
async fn rp_response_type_code() {
    let fp = assert_accepted(Options::default(), |_| {}).await;
    let authorize = &fp.authorize_requests()[0];
    assert_eq!(authorize.param("response_type"), Some("code"));
}

/// `rp-scope-userinfo-claims`: Requests `openid` (and the scopes whose claims it reads).
#[rocket::async_test]
async fn rp_scope_userinfo_claims() {
    let fp = assert_accepted(Options::default(), |_| {}).await;
    let scopes = fp.authorize_requests()[0]
        .scopes()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    assert!(
        scopes.contains(&"openid".to_string()) && scopes.contains(&"profile".to_string()),
        "{scopes:?}"
    );
}

/// `rp-nonce-invalid`: Rejects a nonce that differs from the one sent.
#[rocket::async_test]
async fn rp_nonce_invalid() {
    assert_refused(Options::default(), |b| {
        b.id_token_nonce = Nonce::Value("not-the-one-sent".into())
    })
    .await;
}

/// `rp-token_endpoint-client_secret_basic`: Authenticates at the token endpoint with HTTP Basic (`client_secret_basic`).
#[rocket::async_test]
async fn rp_token_endpoint_client_secret_basic() {
    let fp = assert_accepted(Options::default(), |_| {}).await;
    let token = fp.last_request("/token").unwrap();
    let auth = token.header("authorization").unwrap();
    assert!(auth.starts_with("Basic "), "{auth}");
    assert!(
        token.form_value("client_secret").is_none(),
        "the secret is not in the body"
    );
}

/// `rp-id_token-aud`: Rejects an ID token with a wrong `aud`.
#[rocket::async_test]
async fn rp_id_token_aud() {
    assert_refused(Options::default(), |b| {
        b.id_token_aud = Some(json!("another-client"))
    })
    .await;
}

/// `rp-id_token-kid-absent-single-jwks`: Verifies an ID token without `kid` when the JWKS has one key.
#[rocket::async_test]
async fn rp_id_token_kid_absent_single_jwks() {
    assert_accepted(Options::default(), |b| {
        b.id_token_kid = Kid::Absent;
        b.jwks_without_kid = true;
    })
    .await;
}

/// `rp-id_token-kid-absent-multiple-jwks`: Rejects an ID token without `kid` when the JWKS has several keys (no guessing).
#[rocket::async_test]
async fn rp_id_token_kid_absent_multiple_jwks() {
    assert_refused(Options::default(), |b| {
        b.id_token_kid = Kid::Absent;
        b.jwks_without_kid = true;
        b.decoy_keys = 2;
    })
    .await;
}

/// `rp-id_token-issuer-mismatch`: Rejects an ID token with a wrong `iss`.
#[rocket::async_test]
async fn rp_id_token_issuer_mismatch() {
    assert_refused(Options::default(), |b| {
        b.id_token_iss = Some("https://attacker.example/oidc".into())
    })
    .await;
}

/// `rp-id_token-iat`: Rejects an ID token without `iat`.
#[rocket::async_test]
async fn rp_id_token_iat() {
    assert_refused(Options::default(), |b| b.omit_iat = true).await;
}

/// `rp-id_token-sub`: Rejects an ID token without `sub`.
#[rocket::async_test]
async fn rp_id_token_sub() {
    assert_refused(Options::default(), |b| b.omit_sub = true).await;
}

/// `rp-id_token-bad-sig-rs256`: Rejects an RS256 ID token with a bad signature.
#[rocket::async_test]
async fn rp_id_token_bad_sig_rs256() {
    assert_refused(
        Options {
            rsa: true,
            ..Options::default()
        },
        |b| b.corrupt_signature = true,
    )
    .await;
}

/// `rp-id_token-bad-sig-es384`: Rejects an ES384 ID token (Logto's default) with a bad signature.
#[rocket::async_test]
async fn rp_id_token_bad_sig_es384() {
    assert_refused(Options::default(), |b| b.corrupt_signature = true).await;
}

/// `rp-id_token-sig-rs256`: Accepts a correctly signed RS256 ID token.
#[rocket::async_test]
async fn rp_id_token_sig_rs256() {
    assert_accepted(
        Options {
            rsa: true,
            ..Options::default()
        },
        |_| {},
    )
    .await;
}

/// `rp-id_token-sig-es384`: Accepts a correctly signed ES384 ID token.
#[rocket::async_test]
async fn rp_id_token_sig_es384() {
    assert_accepted(Options::default(), |_| {}).await;
}

/// `rp-id_token-sig-none`: Rejects `alg: none` (this client always expects signed ID tokens).
#[rocket::async_test]
async fn rp_id_token_sig_none() {
    assert_refused(Options::default(), |b| b.id_token_alg = Alg::None).await;
}

/// `rp-userinfo-bearer-header`: Sends the access token in the `Authorization: Bearer` header to userinfo.
#[rocket::async_test]
async fn rp_userinfo_bearer_header() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    assert_eq!(get_json(&client, "/userinfo").await.0, Status::Ok);
    let request = fp.last_request("/me").unwrap();
    assert!(request
        .header("authorization")
        .unwrap()
        .starts_with("Bearer "));
    assert!(
        request.query_value("access_token").is_none()
            && request.form_value("access_token").is_none()
    );
}

/// `rp-userinfo-bad-sub-claim`: Discards a userinfo answer whose `sub` is not the ID token's.
#[rocket::async_test]
async fn rp_userinfo_bad_sub_claim() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.set(|b| b.userinfo_sub = Some("someone-else".into()));
    assert_eq!(get_json(&client, "/userinfo").await.0, Status::BadGateway);
}

/// `rp-discovery-openid-configuration`: Finds every endpoint through `/.well-known/openid-configuration`.
#[rocket::async_test]
async fn rp_discovery_openid_configuration() {
    let fp = FakeProvider::start().await;
    // Move the authorize endpoint: the app must follow discovery, not guess paths.
    let moved = format!("{}/elsewhere/auth", fp.endpoint);
    fp.set(|b| b.discovery_patch = Some(json!({ "authorization_endpoint": moved })));
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    assert!(authorize.starts_with(&moved), "{authorize}");
    assert_eq!(fp.count("/.well-known/openid-configuration"), 1);
}

/// `rp-discovery-jwks_uri-keys`: Fetches the keys from the discovered `jwks_uri`.
#[rocket::async_test]
async fn rp_discovery_jwks_uri_keys() {
    let fp = assert_accepted(Options::default(), |_| {}).await;
    assert_eq!(fp.count("/oidc/jwks"), 1);
}

/// `rp-discovery-issuer-not-matching-config`: Refuses a discovery document whose `issuer` is not the configured one.
#[rocket::async_test]
async fn rp_discovery_issuer_not_matching_config() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.discovery_issuer = Some("https://attacker.example/oidc".into()));
    let client = app_for(&fp).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::BadGateway);
    assert!(response.headers().get_one("Location").is_none());
}

/// `rp-key-rotation-op-sign-key`: Follows a signing-key rotation: an unknown `kid` refetches the JWKS once.
#[rocket::async_test]
async fn rp_key_rotation_op_sign_key() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    fp.rotate_keys();
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_eq!(fp.count("/oidc/jwks"), 2);
}
