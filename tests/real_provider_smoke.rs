//! Smoke test of the real (oidc-provider based) test provider and its Rust harness: a full
//! authorization-code flow by hand, resource and organization tokens, userinfo, refresh-token
//! reuse, sign-out and the test-control endpoints. Needs `npm ci --prefix tests/provider`.

#[path = "support/real_provider.rs"]
mod real_provider;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use real_provider::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const REDIRECT_URI: &str = "http://localhost:8000/logto/sign-in-callback";

fn random_b64(len: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    Pkce {
        verifier,
        challenge,
    }
}

struct Authorize {
    url: String,
    state: String,
    nonce: String,
    pkce: Pkce,
}

/// An authorize URL with the parameters the Logto JS SDK sends, plus a nonce.
fn authorize(provider: &RealProvider, prompt: &str, scopes: &str, resources: &[&str]) -> Authorize {
    let pkce = pkce();
    let state = random_b64(16);
    let nonce = random_b64(16);
    let mut url = url::Url::parse(&format!("{}/auth", provider.issuer())).unwrap();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("client_id", &provider.options.app_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("response_type", "code")
            .append_pair("prompt", prompt)
            .append_pair("scope", scopes);
        for resource in resources {
            query.append_pair("resource", resource);
        }
    }
    Authorize {
        url: url.into(),
        state,
        nonce,
        pkce,
    }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A token request the way the crate sends it: Basic auth, plus `client_id` in the body.
async fn token(provider: &RealProvider, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = form.to_vec();
    form.push(("client_id", &provider.options.app_id));
    let response = http()
        .post(format!("{}/token", provider.issuer()))
        .basic_auth(&provider.options.app_id, Some(&provider.options.app_secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn exchange_code(provider: &RealProvider, auth: &Authorize, callback: &str) -> Value {
    assert_eq!(
        query_param(callback, "state").as_deref(),
        Some(auth.state.as_str()),
        "{callback}"
    );
    assert_eq!(
        query_param(callback, "iss"),
        Some(provider.issuer()),
        "{callback}"
    );
    let code = query_param(callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));
    let (status, body) = token(
        provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &auth.pkce.verifier),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn refresh(
    provider: &RealProvider,
    refresh_token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    form.extend_from_slice(extra);
    token(provider, &form).await
}

async fn userinfo(provider: &RealProvider, access_token: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("{}/me", provider.issuer()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    let part = jwt
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a JWT: {jwt}"));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v}"))
}

#[tokio::test]
async fn code_flow_resource_and_organization_tokens_then_reuse_revokes_the_grant() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let issuer = provider.issuer();

    let discovery: Value = http()
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], json!(issuer));
    assert_eq!(
        discovery["token_endpoint"],
        json!(format!("{issuer}/token"))
    );
    assert_eq!(
        discovery["end_session_endpoint"],
        json!(format!("{issuer}/session/end"))
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES384"])
    );
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        json!(true)
    );

    // Sign in. Like Logto, resource scopes are granted when asked for in `scope`
    // (requested ∩ what the user's roles allow).
    let scopes = "openid offline_access profile email custom_data urn:logto:scope:organizations \
                  urn:logto:scope:organization_roles shopping:read shopping:write read:members invite:members";
    let auth = authorize(
        &provider,
        "consent",
        scopes,
        &[SHOPPING_API, ORGANIZATIONS_RESOURCE],
    );
    let browser = ProviderBrowser::new();
    let callback = browser.sign_in(&auth.url, ALICE.0, ALICE.1).await;
    assert!(callback.starts_with(REDIRECT_URI), "{callback}");

    let tokens = exchange_code(&provider, &auth, &callback).await;
    let id_token = str_of(&tokens, "id_token");
    assert_eq!(jwt_part(id_token, 0)["alg"], json!("ES384"));
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], json!(issuer));
    assert_eq!(claims["aud"], json!("sample-app"));
    assert_eq!(claims["sub"], json!(ALICE_SUB));
    assert_eq!(claims["nonce"], json!(auth.nonce));
    assert_eq!(claims["username"], json!("alice"));
    assert_eq!(claims["picture"], Value::Null);
    assert!(
        claims.as_object().unwrap().contains_key("picture"),
        "picture is null, not absent: {claims}"
    );
    assert!(
        claims["created_at"].as_u64().unwrap() > 1_000_000_000_000,
        "created_at in ms: {claims}"
    );
    assert_eq!(claims["email"], json!("alice@example.com"));
    assert_eq!(claims["organizations"], json!([ACME_ORG]));
    assert_eq!(claims["organization_roles"], json!(["org_acme:admin"]));
    assert!(
        claims.get("custom_data").is_none(),
        "custom_data is userinfo-only: {claims}"
    );
    assert!(
        claims.get("organization_data").is_none(),
        "organization_data is userinfo-only: {claims}"
    );
    assert!(claims.get("at_hash").is_none(), "{claims}");
    let access_token = str_of(&tokens, "access_token");
    assert!(
        !is_jwt(access_token),
        "the code exchange's access token is opaque: {access_token}"
    );
    let mut refresh_token = str_of(&tokens, "refresh_token").to_owned();

    // Userinfo with the opaque access token.
    let (status, info) = userinfo(&provider, access_token).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["sub"], json!(ALICE_SUB));
    assert_eq!(info["custom_data"], json!({ "plan": "pro" }));
    assert_eq!(info["organization_data"][0]["id"], json!(ACME_ORG));
    assert_eq!(info["organization_data"][0]["name"], json!("Acme"));

    // A resource token: rotates the refresh token.
    let (status, body) = refresh(&provider, &refresh_token, &[("resource", SHOPPING_API)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = jwt_part(str_of(&body, "access_token"), 1);
    assert_eq!(at["aud"], json!(SHOPPING_API));
    assert_eq!(at["scope"], json!("shopping:read shopping:write"));
    assert_eq!(at["sub"], json!(ALICE_SUB));
    assert_eq!(at["iss"], json!(issuer));
    assert_eq!(body["expires_in"], json!(3600));
    assert_ne!(
        str_of(&body, "refresh_token"),
        refresh_token,
        "every refresh rotates"
    );
    refresh_token = str_of(&body, "refresh_token").to_owned();

    // A resource JWT is not accepted by userinfo.
    let (status, _) = userinfo(&provider, str_of(&body, "access_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An organization token.
    let (status, body) = refresh(&provider, &refresh_token, &[("organization_id", ACME_ORG)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = jwt_part(str_of(&body, "access_token"), 1);
    assert_eq!(at["aud"], json!("urn:logto:organization:org_acme"));
    assert_eq!(at["scope"], json!("read:members invite:members"));
    refresh_token = str_of(&body, "refresh_token").to_owned();

    // organization_id + resource: an API token narrowed to the organization, with organization_id.
    let (status, body) = refresh(
        &provider,
        &refresh_token,
        &[("organization_id", ACME_ORG), ("resource", SHOPPING_API)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = jwt_part(str_of(&body, "access_token"), 1);
    assert_eq!(at["aud"], json!(SHOPPING_API));
    assert_eq!(at["organization_id"], json!(ACME_ORG));
    refresh_token = str_of(&body, "refresh_token").to_owned();

    // Not a member: 403 with Logto's body (and no rotation).
    let (status, body) = refresh(
        &provider,
        &refresh_token,
        &[("organization_id", "org_nope")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"code":"oidc.access_denied","error":"access_denied","error_description":"user is not a member of the organization"})
    );

    // Reuse of a rotated-out refresh token revokes the whole grant.
    assert!(provider.grant_valid(ALICE_SUB).await);
    let (status, body) = refresh(&provider, &refresh_token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest = str_of(&body, "refresh_token").to_owned();
    assert!(provider.grant_valid(ALICE_SUB).await);
    let (status, body) = refresh(&provider, &refresh_token, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], json!("invalid_grant"), "{body}");
    let (status, body) = refresh(&provider, &newest, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        json!("invalid_grant"),
        "the newest one dies with the grant: {body}"
    );
    assert!(!provider.grant_valid(ALICE_SUB).await);

    let stats = provider.stats().await;
    assert_eq!(
        stats["token_requests"]["authorization_code"],
        json!(1),
        "{stats}"
    );
    assert_eq!(
        stats["token_requests"]["refresh_token"],
        json!(7),
        "{stats}"
    );
    assert_eq!(
        stats["refresh_by_resource"][SHOPPING_API],
        json!(2),
        "{stats}"
    );
    assert_eq!(
        stats["refresh_by_organization"][ACME_ORG],
        json!(2),
        "{stats}"
    );
    assert_eq!(stats["userinfo_requests"], json!(2), "{stats}");
    assert_eq!(stats["revoked_grants"], json!(1), "{stats}");
    assert_eq!(stats["revocation_requests"], json!(0), "{stats}");
    provider.reset_stats().await;
    assert_eq!(
        provider.stats().await["token_requests"]["refresh_token"],
        json!(0)
    );
}

#[tokio::test]
async fn bob_gets_read_scopes_only_and_no_organization() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let scopes = "openid offline_access profile urn:logto:scope:organizations \
                  shopping:read shopping:write store:read store:write";
    let auth = authorize(
        &provider,
        "consent",
        scopes,
        &[SHOPPING_API, STORE_API, ORGANIZATIONS_RESOURCE],
    );
    let browser = ProviderBrowser::new();

    let wrong = browser
        .try_sign_in(&auth.url, BOB.0, "not-the-password")
        .await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("Incorrect")),
        "{wrong:?}"
    );

    let auth = authorize(
        &provider,
        "consent",
        scopes,
        &[SHOPPING_API, STORE_API, ORGANIZATIONS_RESOURCE],
    );
    let callback = browser.sign_in(&auth.url, BOB.0, BOB.1).await;
    let tokens = exchange_code(&provider, &auth, &callback).await;
    let claims = jwt_part(str_of(&tokens, "id_token"), 1);
    assert_eq!(claims["sub"], json!(BOB_SUB));
    assert_eq!(claims["name"], Value::Null);
    assert_eq!(claims["organizations"], json!([]));
    let mut rt = str_of(&tokens, "refresh_token").to_owned();

    for (resource, expected) in [(SHOPPING_API, "shopping:read"), (STORE_API, "store:read")] {
        let (status, body) = refresh(&provider, &rt, &[("resource", resource)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            jwt_part(str_of(&body, "access_token"), 1)["scope"],
            json!(expected)
        );
        rt = str_of(&body, "refresh_token").to_owned();
    }
    let (status, body) = refresh(&provider, &rt, &[("organization_id", ACME_ORG)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], json!("oidc.access_denied"));
    // The 403 did not spend the refresh token.
    let (status, body) = refresh(&provider, &rt, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn session_reuse_ttl_control_revocation_and_sign_out() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let browser = ProviderBrowser::new();
    let auth = authorize(
        &provider,
        "consent",
        "openid offline_access profile",
        &[SHOPPING_API],
    );
    let callback = browser.sign_in(&auth.url, ALICE.0, ALICE.1).await;
    exchange_code(&provider, &auth, &callback).await;

    // The provider session exists: prompt=consent shows no form (wrong credentials unused).
    let auth = authorize(
        &provider,
        "consent",
        "openid offline_access profile shopping:read",
        &[SHOPPING_API],
    );
    let callback = browser.sign_in(&auth.url, "nobody", "nothing").await;
    let tokens = exchange_code(&provider, &auth, &callback).await;
    let id_token = str_of(&tokens, "id_token").to_owned();
    let rt = str_of(&tokens, "refresh_token").to_owned();
    // Without the organizations scope: insufficient_scope.
    let (status, body) = refresh(&provider, &rt, &[("organization_id", ACME_ORG)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], json!("insufficient_scope"), "{body}");

    // Access tokens issued from now on live 30 s.
    provider.set_access_token_ttl(30).await;
    let (status, body) = refresh(&provider, &rt, &[("resource", SHOPPING_API)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], json!(30));
    let at = jwt_part(str_of(&body, "access_token"), 1);
    assert_eq!(
        at["exp"].as_u64().unwrap() - at["iat"].as_u64().unwrap(),
        30
    );
    let rt = str_of(&body, "refresh_token").to_owned();

    // Revoking the refresh token ends the grant.
    assert!(provider.grant_valid(ALICE_SUB).await);
    let response = http()
        .post(format!("{}/token/revocation", provider.issuer()))
        .basic_auth("sample-app", Some("sample-secret"))
        .form(&[("token", rt.as_str()), ("client_id", "sample-app")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!provider.grant_valid(ALICE_SUB).await);
    let (status, _) = refresh(&provider, &rt, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(provider.stats().await["revocation_requests"], json!(1));

    // End session: the confirmation form, then the post-logout redirect.
    let mut end = url::Url::parse(&format!("{}/session/end", provider.issuer())).unwrap();
    end.query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("client_id", "sample-app")
        .append_pair("post_logout_redirect_uri", "http://localhost:8000");
    let after = browser.confirm_sign_out(end.as_str()).await;
    assert_eq!(after.trim_end_matches('/'), "http://localhost:8000");

    // Signed out of the provider: prompt=none gives login_required.
    let auth = authorize(&provider, "none", "openid profile", &[]);
    let callback = browser.sign_in(&auth.url, ALICE.0, ALICE.1).await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("login_required"),
        "{callback}"
    );
}

#[tokio::test]
async fn rs256_option() {
    let provider = RealProvider::start(ProviderOptions {
        signing_alg: Some("RS256".into()),
        ..Default::default()
    })
    .await;
    let discovery: Value = http()
        .get(format!(
            "{}/.well-known/openid-configuration",
            provider.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let auth = authorize(
        &provider,
        "consent",
        "openid offline_access shopping:read",
        &[SHOPPING_API],
    );
    let callback = ProviderBrowser::new()
        .sign_in(&auth.url, ALICE.0, ALICE.1)
        .await;
    let tokens = exchange_code(&provider, &auth, &callback).await;
    assert_eq!(
        jwt_part(str_of(&tokens, "id_token"), 0)["alg"],
        json!("RS256")
    );
    let (status, body) = refresh(
        &provider,
        str_of(&tokens, "refresh_token"),
        &[("resource", SHOPPING_API)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        jwt_part(str_of(&body, "access_token"), 0)["alg"],
        json!("RS256")
    );
}

#[tokio::test]
async fn code_replay_and_parallel_refreshes_revoke_the_grant() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let browser = ProviderBrowser::new();

    // Replaying a code fails and revokes the grant.
    let auth = authorize(&provider, "consent", "openid offline_access", &[]);
    let callback = browser.sign_in(&auth.url, ALICE.0, ALICE.1).await;
    let tokens = exchange_code(&provider, &auth, &callback).await;
    let code = query_param(&callback, "code").unwrap();
    let replay = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", auth.pkce.verifier.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let (status, body) = token(&provider, &replay).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant")),
        "{body}"
    );
    assert!(!provider.grant_valid(ALICE_SUB).await);
    let (status, _) = refresh(&provider, str_of(&tokens, "refresh_token"), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Two parallel refreshes with one token: one wins, the other revokes the grant.
    let auth = authorize(&provider, "consent", "openid offline_access", &[]);
    let callback = browser.sign_in(&auth.url, ALICE.0, ALICE.1).await;
    let tokens = exchange_code(&provider, &auth, &callback).await;
    let rt = str_of(&tokens, "refresh_token");
    assert!(provider.grant_valid(ALICE_SUB).await);
    let ((a, body_a), (b, body_b)) =
        tokio::join!(refresh(&provider, rt, &[]), refresh(&provider, rt, &[]));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::BAD_REQUEST],
        "{body_a} {body_b}"
    );
    assert!(!provider.grant_valid(ALICE_SUB).await);
    let winner = if a == StatusCode::OK { body_a } else { body_b };
    let (status, _) = refresh(&provider, str_of(&winner, "refresh_token"), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
