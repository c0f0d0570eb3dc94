//! SECURITY.md, tier 1: each test names the checklist line (section and attack) it covers
//! and drives the app against the in-process fake provider, which misbehaves on demand.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use app::*;
use fake_flow::*;
use fake_provider::{Alg, Behaviour, CallbackIss, FakeProvider, Kid, Nonce, Options};
use rocket::http::{Cookie, Status};
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};

/// Signs in with the fake set up by `setup`; asserts the callback is refused with 400,
/// nobody is signed in, and returns the page.
async fn assert_sign_in_refused(setup: impl FnOnce(&mut Behaviour), options: Options) -> String {
    let fp = FakeProvider::start_with(options).await;
    fp.set(setup);
    let client = app_for(&fp).await;
    let (status, body, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::BadRequest, "{body}");
    assert_eq!(
        signed_in_sub(&client).await,
        None,
        "a refused callback must not sign in"
    );
    body
}

// ---- Sign-in request -----------------------------------------------------------------

#[rocket::async_test]
async fn sign_in_request_fresh_state_nonce_pkce_of_128_bits_per_sign_in() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let a = start_sign_in(&client, "/logto/sign-in").await;
    let b = start_sign_in(&client, "/logto/sign-in").await;
    for name in ["state", "nonce", "code_challenge"] {
        let (va, vb) = (param(&a, name).unwrap(), param(&b, name).unwrap());
        assert_ne!(va, vb, "{name} must differ between sign-ins");
        assert!(va.len() >= 22, "{name} must carry >= 128 bits: {va}");
    }
}

#[rocket::async_test]
async fn sign_in_request_s256_and_code_only() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let url = start_sign_in(&client, "/logto/sign-in").await;
    assert_eq!(
        param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&url, "response_type").as_deref(), Some("code"));
    assert!(param(&url, "access_token").is_none() && param(&url, "client_secret").is_none());
}

#[rocket::async_test]
async fn sign_in_request_redirect_uri_from_config_not_host_headers() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let response = client
        .get("/logto/sign-in")
        .header(rocket::http::Header::new("Host", "evil.example"))
        .header(rocket::http::Header::new(
            "X-Forwarded-Host",
            "evil.example",
        ))
        .header(rocket::http::Header::new("X-Forwarded-Proto", "https"))
        .dispatch()
        .await;
    let url = location(&response);
    assert_eq!(
        param(&url, "redirect_uri").as_deref(),
        Some("http://localhost:8000/logto/sign-in-callback")
    );
}

#[rocket::async_test]
async fn sign_in_request_openid_always_in_scope_rp_scope_userinfo_claims() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["scopes"] = json!(["email"]);
    let client = client(logto).await;
    let url = start_sign_in(&client, "/logto/sign-in").await;
    let scope = param(&url, "scope").unwrap();
    assert_eq!(scope, "openid offline_access profile email");
}

#[rocket::async_test]
async fn sign_in_request_sends_logto_parameters() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    merge(
        &mut logto,
        &json!({"login_hint": "a@b.c", "identifiers": ["email", "username"], "direct_sign_in": "social:google",
                "extra_params": {"ui_locales": "fr"}}),
    );
    let client = client(logto).await;
    let url = start_sign_in(&client, "/logto/sign-up").await;
    assert_eq!(param(&url, "prompt").as_deref(), Some("consent"));
    assert_eq!(param(&url, "first_screen").as_deref(), Some("register"));
    assert_eq!(param(&url, "login_hint").as_deref(), Some("a@b.c"));
    assert_eq!(param(&url, "identifier").as_deref(), Some("email username"));
    assert_eq!(
        param(&url, "direct_sign_in").as_deref(),
        Some("social:google")
    );
    assert_eq!(param(&url, "ui_locales").as_deref(), Some("fr"));
    let resources: Vec<String> = query(&url)
        .into_iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        resources,
        [SHOPPING, STORE, "urn:logto:resource:organizations"]
    );
}

// ---- Callback ------------------------------------------------------------------------

#[rocket::async_test]
async fn callback_missing_state_is_400_and_sends_no_token_request() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let without_state: String = query(&callback)
        .into_iter()
        .filter(|(k, _)| k != "state")
        .map(|(k, v)| format!("{k}={}", urlencode(&v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = client
        .get(format!("/logto/sign-in-callback?{without_state}"))
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadRequest);
    assert_eq!(fp.count("/token"), 0);
}

#[rocket::async_test]
async fn callback_unknown_state_is_400_csrf_and_sends_no_token_request() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let forged = path_and_query(&callback).replace(
        &param(&callback, "state").unwrap(),
        "AAAAAAAAAAAAAAAAAAAAAA",
    );
    let response = client.get(forged).dispatch().await;
    assert_eq!(response.status(), Status::BadRequest);
    assert_eq!(fp.count("/token"), 0);
}

#[rocket::async_test]
async fn callback_without_transaction_cookie_csrf_is_400() {
    let fp = FakeProvider::start().await;
    let attacker = app_for(&fp).await;
    let authorize = start_sign_in(&attacker, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "attacker");
    // The victim's browser (no transaction cookie) is sent the attacker's callback URL.
    let victim = app_for(&fp).await;
    let response = victim.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::BadRequest);
    assert_eq!(fp.count("/token"), 0);
    assert_eq!(signed_in_sub(&victim).await, None);
}

#[rocket::async_test]
async fn callback_transaction_used_once_replay_fails_code_replay() {
    let fp = FakeProvider::start().await;
    let client = untracked(table(&fp)).await;
    let (callback, tx_cookies) = authorized_callback(&client, &fp, "user-1").await;
    let first = client
        .get(path_and_query(&callback))
        .cookies(tx_cookies.clone())
        .dispatch()
        .await;
    assert_eq!(first.status(), Status::SeeOther);
    // Same URL, same (captured) transaction cookie: refused without a token request.
    let tokens_before = fp.count("/token");
    let replay = client
        .get(path_and_query(&callback))
        .cookies(tx_cookies)
        .dispatch()
        .await;
    assert_eq!(replay.status(), Status::BadRequest);
    assert_eq!(fp.count("/token"), tokens_before);
}

#[rocket::async_test]
async fn callback_transaction_used_once_even_on_failure() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_nonce = Nonce::Value("wrong".into()));
    let client = untracked(table(&fp)).await;
    let (callback, tx_cookies) = authorized_callback(&client, &fp, "user-1").await;
    let first = client
        .get(path_and_query(&callback))
        .cookies(tx_cookies.clone())
        .dispatch()
        .await;
    assert_eq!(first.status(), Status::BadRequest);
    assert!(
        first
            .headers()
            .get("Set-Cookie")
            .any(|c| c.starts_with("logto_tx_") && c.contains("Max-Age=0")),
        "the transaction cookie is removed"
    );
    fp.set(|b| b.id_token_nonce = Nonce::Echo);
    let again = client
        .get(path_and_query(&callback))
        .cookies(tx_cookies)
        .dispatch()
        .await;
    assert_eq!(again.status(), Status::BadRequest);
}

#[rocket::async_test]
async fn callback_transaction_expires_after_10_minutes() {
    let fp = FakeProvider::start().await;
    let client = untracked(table(&fp)).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    let authorize = location(&response);
    let state = param(&authorize, "state").unwrap();
    let callback = fp.authorize(&authorize, "user-1");
    // The same transaction, made 601 s ago (encrypted with the app's key by the client).
    let stale = json!({"s": state, "n": param(&authorize, "nonce").unwrap(), "v": "x".repeat(43), "r": "/", "c": now() - 601});
    let name = format!("logto_tx_{}", &state[..16]);
    let response = client
        .get(path_and_query(&callback))
        .private_cookie(Cookie::new(name, stale.to_string()))
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadRequest);
    assert!(response.into_string().await.unwrap().contains("10 minutes"));
    assert_eq!(fp.count("/token"), 0);
}

#[rocket::async_test]
async fn callback_iss_must_equal_issuer_mix_up() {
    let body = assert_sign_in_refused(
        |b| b.callback_iss = CallbackIss::Value("https://evil.example/oidc".into()),
        Options::default(),
    )
    .await;
    assert!(body.contains("issuer"), "{body}");
}

#[rocket::async_test]
async fn callback_missing_iss_rejected_when_discovery_advertises_it() {
    assert_sign_in_refused(|b| b.callback_iss = CallbackIss::Absent, Options::default()).await;
}

#[rocket::async_test]
async fn callback_missing_iss_accepted_when_not_advertised() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.callback_iss = CallbackIss::Absent;
        b.iss_parameter_supported = false;
    });
    let client = app_for(&fp).await;
    let (status, _, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::SeeOther);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn callback_duplicate_state_code_or_iss_rejected() {
    for duplicate in ["state", "code", "iss"] {
        let fp = FakeProvider::start().await;
        let client = app_for(&fp).await;
        let authorize = start_sign_in(&client, "/logto/sign-in").await;
        let callback = fp.authorize(&authorize, "user-1");
        let value = param(&callback, duplicate).unwrap();
        let url = format!(
            "{}&{duplicate}={}",
            path_and_query(&callback),
            urlencode(&value)
        );
        let response = client.get(url).dispatch().await;
        assert_eq!(
            response.status(),
            Status::BadRequest,
            "duplicate {duplicate}"
        );
        assert!(response.into_string().await.unwrap().contains(duplicate));
        assert_eq!(fp.count("/token"), 0);
    }
}

#[rocket::async_test]
async fn callback_stripped_response_never_downgrades_a_check() {
    // No code: refused, never "signed in without a token".
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let stripped = format!(
        "/logto/sign-in-callback?state={}&iss={}",
        urlencode(&param(&callback, "state").unwrap()),
        urlencode(&param(&callback, "iss").unwrap())
    );
    let response = client.get(stripped).dispatch().await;
    assert_eq!(response.status(), Status::BadRequest);
    assert_eq!(signed_in_sub(&client).await, None);
    // Bare callback: refused.
    let response = client.get("/logto/sign-in-callback").dispatch().await;
    assert_eq!(response.status(), Status::BadRequest);
}

#[rocket::async_test]
async fn callback_error_and_description_are_html_escaped() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.authorize_error = Some((
            "access_denied".into(),
            Some("<script>alert(1)</script>".into()),
        ))
    });
    let client = app_for(&fp).await;
    let (status, body, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::BadRequest);
    assert!(!body.contains("<script>"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
        "{body}"
    );
}

// ---- ID token ------------------------------------------------------------------------

#[rocket::async_test]
async fn id_token_alg_none_rejected_rp_id_token_sig_none() {
    assert_sign_in_refused(|b| b.id_token_alg = Alg::None, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_alg_outside_discovery_allow_list_rejected() {
    // HS256 signed with the client secret: valid MAC, but discovery never listed HS256.
    assert_sign_in_refused(|b| b.id_token_alg = Alg::Hs256, Options::default()).await;
    // RS256 with a published RSA key, while discovery lists ES384 only.
    assert_sign_in_refused(
        |b| {
            b.id_token_alg = Alg::Rs256;
            b.discovery_algs = Some(vec!["ES384".into()]);
        },
        Options::default(),
    )
    .await;
}

#[rocket::async_test]
async fn id_token_rs256_and_es384_accepted_when_advertised() {
    for rsa in [false, true] {
        let fp = FakeProvider::start_with(Options {
            rsa,
            ..Options::default()
        })
        .await;
        let client = app_for(&fp).await;
        let (status, body, _) = sign_in(&client, &fp, "user-1").await;
        assert_eq!(status, Status::SeeOther, "rsa={rsa}: {body}");
        assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
    }
}

#[rocket::async_test]
async fn id_token_bad_signature_rejected_rp_id_token_bad_sig() {
    assert_sign_in_refused(|b| b.corrupt_signature = true, Options::default()).await;
    assert_sign_in_refused(
        |b| b.corrupt_signature = true,
        Options {
            rsa: true,
            ..Options::default()
        },
    )
    .await;
}

#[rocket::async_test]
async fn id_token_wrong_iss_rejected_rp_id_token_issuer_mismatch() {
    assert_sign_in_refused(
        |b| b.id_token_iss = Some("https://evil.example/oidc".into()),
        Options::default(),
    )
    .await;
}

#[rocket::async_test]
async fn id_token_aud_without_app_id_rejected_rp_id_token_aud() {
    assert_sign_in_refused(
        |b| b.id_token_aud = Some(json!("another-app")),
        Options::default(),
    )
    .await;
}

#[rocket::async_test]
async fn id_token_extra_audience_without_azp_rejected() {
    assert_sign_in_refused(
        |b| b.id_token_aud = Some(json!(["test-app", "another-app"])),
        Options::default(),
    )
    .await;
}

#[rocket::async_test]
async fn id_token_missing_sub_rejected_rp_id_token_sub() {
    assert_sign_in_refused(|b| b.omit_sub = true, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_missing_iat_rejected_rp_id_token_iat() {
    assert_sign_in_refused(|b| b.omit_iat = true, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_expired_rejected() {
    assert_sign_in_refused(|b| b.id_token_exp_in = -120, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_nonce_mismatch_rejected_rp_nonce_invalid() {
    assert_sign_in_refused(
        |b| b.id_token_nonce = Nonce::Value("another".into()),
        Options::default(),
    )
    .await;
    assert_sign_in_refused(|b| b.id_token_nonce = Nonce::Absent, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_skew_is_bounded_to_60_seconds() {
    // Expired 30 s ago: inside the default 60 s skew.
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_exp_in = -30);
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    // Issued 30 s in the future: inside; 300 s: outside.
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_iat_offset = 30);
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_sign_in_refused(|b| b.id_token_iat_offset = 300, Options::default()).await;
    assert_sign_in_refused(|b| b.id_token_exp_in = -90, Options::default()).await;
}

#[rocket::async_test]
async fn id_token_skew_is_configurable() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_exp_in = -30);
    let mut logto = table(&fp);
    logto["clock_skew_secs"] = json!(10);
    let client = client(logto).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::BadRequest);
}

#[rocket::async_test]
async fn id_token_no_kid_one_key_verifies_rp_id_token_kid_absent_single_jwks() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.id_token_kid = Kid::Absent;
        b.jwks_without_kid = true;
    });
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
}

#[rocket::async_test]
async fn id_token_no_kid_several_keys_rejected_rp_id_token_kid_absent_multiple_jwks() {
    assert_sign_in_refused(
        |b| {
            b.id_token_kid = Kid::Absent;
            b.jwks_without_kid = true;
            b.decoy_keys = 2;
        },
        Options::default(),
    )
    .await;
}

#[rocket::async_test]
async fn id_token_unknown_kid_refetches_jwks_once_rp_key_rotation_op_sign_key() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    // Discovery and JWKS are fetched at the first sign-in; then Logto rotates its key.
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    assert_eq!(fp.count("/jwks"), 1);
    fp.rotate_keys();
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(fp.count("/jwks"), 2, "one refetch for the unknown kid");
}

#[rocket::async_test]
async fn id_token_unknown_kid_not_in_refetched_jwks_rejected_and_refetch_is_rate_limited() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_kid = Kid::Value("nobody-has-this".into()));
    let client = app_for(&fp).await;
    for _ in 0..3 {
        assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::BadRequest);
    }
    assert!(
        fp.count("/jwks") <= 2,
        "JWKS fetched {} times for 3 sign-ins",
        fp.count("/jwks")
    );
}

#[rocket::async_test]
async fn discovery_issuer_not_matching_config_refused_before_redirect_rp_discovery_issuer_not_matching_config(
) {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.discovery_issuer = Some("https://evil.example/oidc".into()));
    let client = app_for(&fp).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::BadGateway);
    assert!(response.headers().get_one("Location").is_none());
}

// ---- Session and cookies -------------------------------------------------------------

#[rocket::async_test]
async fn session_cookies_private_httponly_lax_path_root() {
    let fp = FakeProvider::start().await;
    let client = untracked(table(&fp)).await;
    let (callback, tx) = authorized_callback(&client, &fp, "user-1").await;
    let response = client
        .get(path_and_query(&callback))
        .cookies(tx)
        .dispatch()
        .await;
    let lines = set_cookies(&response);
    let session: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("logto_session"))
        .collect();
    assert!(!session.is_empty());
    for line in session {
        assert!(
            line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/"),
            "{line}"
        );
        assert!(!line.contains("Secure"), "http base_url: no Secure: {line}");
        assert!(
            !line.contains("eyJ"),
            "the value is encrypted, no JWT visible: {line}"
        );
        assert!(line.len() <= 4096, "{} bytes", line.len());
    }
}

#[rocket::async_test]
async fn session_cookies_secure_when_base_url_is_https() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["base_url"] = json!("https://app.example");
    let client = untracked(logto).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    for line in set_cookies(&response) {
        assert!(line.contains("Secure"), "{line}");
    }
}

#[rocket::async_test]
async fn session_fresh_nonce_per_write_aead() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    let first = client
        .cookies()
        .get("logto_session")
        .unwrap()
        .value()
        .to_string();
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    let second = client
        .cookies()
        .get("logto_session")
        .unwrap()
        .value()
        .to_string();
    assert_ne!(first, second);
}

#[rocket::async_test]
async fn session_keys_per_purpose_transaction_cookie_is_not_a_session() {
    let fp = FakeProvider::start().await;
    let client = untracked(table(&fp)).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    let tx = response
        .cookies()
        .iter()
        .find(|c| c.name().starts_with("logto_tx_"))
        .unwrap()
        .value()
        .to_string();
    // The transaction's ciphertext moved under the session's name does not decrypt.
    assert!(!signed_in_with(client.get("/").cookie(Cookie::new("logto_session", tx))).await);
}

async fn assert_signed_out_and_cleared(client: &Client, cookie: Cookie<'static>) {
    for path in ["/", "/me"] {
        let response = client
            .get(path)
            .cookie(cookie.clone())
            .header(rocket::http::Accept::JSON)
            .dispatch()
            .await;
        assert_ne!(response.status(), Status::InternalServerError);
        let lines = set_cookies(&response);
        let clears = lines
            .iter()
            .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0"));
        assert!(clears, "{path}: the bad cookie is cleared: {lines:?}");
        if path == "/" {
            assert_eq!(
                response.into_json::<Value>().await.unwrap()["authenticated"],
                false
            );
        } else {
            assert_eq!(response.status(), Status::Unauthorized);
        }
    }
}

#[rocket::async_test]
async fn session_tampered_truncated_or_old_key_cookie_means_signed_out() {
    let fp = FakeProvider::start().await;
    let signed = app_for(&fp).await;
    assert_eq!(sign_in(&signed, &fp, "user-1").await.0, Status::SeeOther);
    let good = signed
        .cookies()
        .get("logto_session")
        .unwrap()
        .value()
        .to_string();
    let client = untracked(table(&fp)).await;

    let mut tampered = good.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    assert_signed_out_and_cleared(
        &client,
        Cookie::new("logto_session", String::from_utf8(tampered).unwrap()),
    )
    .await;
    assert_signed_out_and_cleared(
        &client,
        Cookie::new("logto_session", good[..good.len() / 2].to_string()),
    )
    .await;
    assert_signed_out_and_cleared(
        &client,
        Cookie::new("logto_session", "garbage%%%".to_string()),
    )
    .await;

    // The same cookie, read by an app with another secret key.
    let other_key = Client::untracked(rocket_with(table(&fp), OTHER_SECRET_KEY))
        .await
        .unwrap();
    assert_signed_out_and_cleared(&other_key, Cookie::new("logto_session", good)).await;
}

#[rocket::async_test]
async fn session_chunks_bounded_and_each_set_cookie_at_most_4096_bytes() {
    let fp = FakeProvider::start().await;
    // A large ID token (many custom claims) forces several chunks.
    fp.set(|b| b.id_token_patch = Some(json!({"big": noise(10_000)})));
    let client = untracked(table(&fp)).await;
    let (callback, tx) = authorized_callback(&client, &fp, "user-1").await;
    let response = client
        .get(path_and_query(&callback))
        .cookies(tx)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    let lines = set_cookies(&response);
    let chunks: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("logto_session") && !l.contains("Max-Age=0"))
        .collect();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    assert!(
        lines.iter().all(|l| l.len() <= 4096),
        "{:?}",
        lines.iter().map(String::len).collect::<Vec<_>>()
    );
    let jar = cookies_set(&response, "logto_session");
    let r = client
        .get("/")
        .cookies(jar.clone())
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(
        r.into_json::<Value>().await.unwrap()["sub"],
        "user-1",
        "the chunks reassemble"
    );

    // A chunk missing, or a first chunk claiming more chunks than allowed: signed out.
    let missing: Vec<Cookie<'static>> = jar
        .iter()
        .filter(|c| c.name() != "logto_session_1")
        .cloned()
        .collect();
    assert!(!signed_in_with(client.get("/").cookies(missing)).await);
    assert!(
        !signed_in_with(
            client
                .get("/")
                .private_cookie(Cookie::new("logto_session", "g.0.1000.{}"))
        )
        .await
    );
}

#[rocket::async_test]
async fn session_chunks_from_two_writes_are_never_mixed() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_patch = Some(json!({"big": noise(5_000)})));
    let client = untracked(table(&fp)).await;
    let mut writes = Vec::new();
    for _ in 0..2 {
        let (callback, tx) = authorized_callback(&client, &fp, "user-1").await;
        let response = client
            .get(path_and_query(&callback))
            .cookies(tx)
            .dispatch()
            .await;
        let jar = cookies_set(&response, "logto_session");
        writes.push(jar);
    }
    let mixed = vec![
        writes[0]
            .iter()
            .find(|c| c.name() == "logto_session")
            .unwrap()
            .clone(),
        writes[1]
            .iter()
            .find(|c| c.name() == "logto_session_1")
            .unwrap()
            .clone(),
    ];
    assert!(!signed_in_with(client.get("/").cookies(mixed)).await);
}

#[rocket::async_test]
async fn session_stale_chunks_are_removed_when_the_session_shrinks() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_patch = Some(json!({"big": noise(10_000)})));
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert!(client.cookies().get("logto_session_2").is_some());
    fp.set(|b| b.id_token_patch = None);
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    let lines = set_cookies(&response);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("logto_session_2=") && l.contains("Max-Age=0")),
        "{lines:?}"
    );
    drop(response);
    assert!(client.cookies().get("logto_session_2").is_none());
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn session_new_sign_in_starts_a_new_session_other_sub_inherits_nothing() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "alice").await.0, Status::SeeOther);
    let (status, alice_token) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{alice_token}");
    assert_eq!(alice_token["claims"]["sub"], "alice");
    // Bob signs in in the same browser: Alice's cached token must be gone.
    assert_eq!(sign_in(&client, &fp, "bob").await.0, Status::SeeOther);
    let (_, bob_token) = get_json(&client, "/shopping").await;
    assert_eq!(bob_token["claims"]["sub"], "bob");
    assert_ne!(bob_token["access_token"], alice_token["access_token"]);
}

// ---- The flow, end to end against the fake -------------------------------------------

#[rocket::async_test]
async fn several_sign_ins_in_flight_each_complete() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let tabs: Vec<String> = futures_join(&client, 3).await;
    let callbacks: Vec<String> = tabs.iter().map(|a| fp.authorize(a, "user-1")).collect();
    for callback in callbacks.iter().rev() {
        let response = client.get(path_and_query(callback)).dispatch().await;
        assert_eq!(
            response.status(),
            Status::SeeOther,
            "{:?}",
            response.into_string().await
        );
    }
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

async fn futures_join(client: &Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(start_sign_in(client, &format!("/logto/sign-in?return_to=/tab{i}")).await);
    }
    out
}

#[rocket::async_test]
async fn return_to_is_honoured_and_travels_in_the_transaction() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let authorize = start_sign_in(&client, "/logto/sign-in?return_to=%2Forders%3Fpage%3D2").await;
    assert!(
        !authorize.contains("orders"),
        "the return path is not in the authorize URL"
    );
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(location(&response), "/orders?page=2");
    assert_eq!(
        response.headers().get_one("Cache-Control"),
        Some("no-store")
    );
    assert_eq!(
        response.headers().get_one("Referrer-Policy"),
        Some("no-referrer")
    );
}

#[rocket::async_test]
async fn return_to_open_redirect_vectors_are_400() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let long = format!("/{}", "a".repeat(10_000));
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "/\t/evil",
        "https://evil.example",
        "javascript:alert(1)",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/ok\r\nSet-Cookie:x=y",
        long.as_str(),
    ] {
        let response = client
            .get(format!("/logto/sign-in?return_to={}", urlencode(bad)))
            .dispatch()
            .await;
        assert_eq!(response.status(), Status::BadRequest, "{bad:?}");
        assert!(response.headers().get_one("Location").is_none());
    }
    let response = client
        .get("/logto/sign-in?return_to=%FF%FE")
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadRequest, "non-UTF-8");
}

#[rocket::async_test]
async fn me_is_401_when_signed_out_and_browsers_are_sent_to_sign_in() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let (status, body) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Unauthorized);
    assert_eq!(body["message"], "You are not signed in.");
    let response = client.get("/me?x=1").header(html_accept()).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(
        location(&response),
        "/logto/sign-in?return_to=%2Fme%3Fx%3D1"
    );
}

#[rocket::async_test]
async fn sign_out_revokes_clears_and_redirects_to_end_session_without_the_id_token() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    let response = client.get("/logto/sign-out").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let url = location(&response);
    assert!(
        url.starts_with(&format!("{}/session/end", fp.issuer())),
        "{url}"
    );
    assert_eq!(param(&url, "client_id").as_deref(), Some("test-app"));
    assert_eq!(
        param(&url, "post_logout_redirect_uri").as_deref(),
        Some("http://localhost:8000/")
    );
    // Tokens never go into URLs: no `id_token_hint`, nothing shaped like a JWT.
    assert_eq!(param(&url, "id_token_hint"), None);
    assert!(!url.contains("eyJ"), "{url}");
    assert!(set_cookies(&response)
        .iter()
        .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")));
    drop(response);
    assert_eq!(fp.revoked_tokens().len(), 1, "the refresh token is revoked");
    assert_eq!(signed_in_sub(&client).await, None);
    // The provider accepts the request without the hint and sends the browser back.
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_redirection(), "{}", answer.status());
    assert_eq!(
        answer.headers()["location"].to_str().unwrap(),
        "http://localhost:8000/"
    );
    // And sign in again.
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn sign_out_ends_its_session_for_every_copy_of_its_cookies() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let copy = || -> Vec<Cookie<'static>> {
        client
            .cookies()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect()
    };
    // Two sessions of one user (two browsers); the second signs out.
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    let first = copy();
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    let second = copy();
    assert_eq!(
        client.get("/logto/sign-out").dispatch().await.status(),
        Status::SeeOther
    );
    // A copy of the signed-out session's cookies, taken before: refused, and removed.
    let response = client
        .get("/me")
        .header(rocket::http::Accept::JSON)
        .cookies(second)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    assert!(set_cookies(&response)
        .iter()
        .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")));
    drop(response);
    // The other session goes on, and a new sign-in works.
    let response = client
        .get("/me")
        .header(rocket::http::Accept::JSON)
        .cookies(first)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Ok);
    drop(response);
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn launch_does_not_need_logto_and_discovery_is_retried_after_a_failure() {
    let fp = FakeProvider::start().await;
    fp.stop().await;
    let client = app_for(&fp).await; // launches although Logto is down
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    fp.restart().await;
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Text that does not compress (the session is deflated), so that it needs several chunks.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                    [(x % 62) as usize],
            )
        })
        .collect()
}

#[rocket::async_test]
async fn pages_made_from_the_session_are_never_stored_by_caches() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    for path in ["/", "/me"] {
        let response = client.get(path).dispatch().await;
        assert_eq!(
            response.headers().get_one("Cache-Control"),
            Some("private, no-store"),
            "{path}"
        );
    }
}
