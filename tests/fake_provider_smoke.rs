//! Drives the fake provider the way a confidential client would, with reqwest, to prove the
//! fake itself behaves like Logto before other tests rely on it.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fake_provider::{
    jwt_claims, jwt_header, pkce_pair, Alg, FakeProvider, Fault, Kid, TokenStatus,
};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use serde_json::{json, Value};

const REDIRECT_URI: &str = "http://localhost:8000/logto/sign-in-callback";
const API: &str = "https://shopping.example.com/api";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A ceiling for a hung provider, not for a busy runner.
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn query_value(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

struct SignIn {
    verifier: String,
    nonce: String,
    state: String,
    callback: String,
}

/// Build an authorization URL the way the crate will, and let the fake "log the user in".
fn sign_in(op: &FakeProvider, sub: &str) -> SignIn {
    let (verifier, challenge) = pkce_pair();
    let (nonce, state) = (pkce_pair().0, pkce_pair().0);
    let mut url = url::Url::parse(&format!("{}/auth", op.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", op.client_id())
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("response_type", "code")
        .append_pair("prompt", "consent")
        .append_pair("scope", "openid offline_access profile email custom_data urn:logto:scope:organizations read:products")
        .append_pair("resource", API)
        .append_pair("resource", "urn:logto:resource:organizations");
    let callback = op.authorize(url.as_str(), sub);
    SignIn {
        verifier,
        nonce,
        state,
        callback,
    }
}

async fn token_request(op: &FakeProvider, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/token", op.issuer()))
        .basic_auth(op.client_id(), Some(op.client_secret()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn exchange(op: &FakeProvider, s: &SignIn) -> reqwest::Response {
    let code = query_value(&s.callback, "code").unwrap();
    token_request(
        op,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &s.verifier),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", op.client_id()),
        ],
    )
    .await
}

async fn refresh(op: &FakeProvider, rt: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", op.client_id()),
    ];
    form.extend_from_slice(extra);
    token_request(op, &form).await
}

fn verify_es384(jwt: &str, jwks: &Value) -> bool {
    let kid = jwt_header(jwt)["kid"].as_str().map(String::from);
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "EC")
        .any(|k| {
            if kid.is_some() && k["kid"].as_str() != kid.as_deref() {
                return false;
            }
            let mut point = vec![0x04];
            point.extend(URL_SAFE_NO_PAD.decode(k["x"].as_str().unwrap()).unwrap());
            point.extend(URL_SAFE_NO_PAD.decode(k["y"].as_str().unwrap()).unwrap());
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        })
}

fn verify_rs256(jwt: &str, jwks: &Value) -> bool {
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "RSA")
        .any(|k| {
            let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
            let e = URL_SAFE_NO_PAD.decode(k["e"].as_str().unwrap()).unwrap();
            ring::rsa::PublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    input.as_bytes(),
                    &sig,
                )
                .is_ok()
        })
}

#[tokio::test]
async fn a_client_can_do_the_whole_logto_flow() {
    let op = FakeProvider::start().await;
    let http = client();
    let issuer = op.issuer();
    assert_eq!(issuer, format!("{}/oidc", op.endpoint));

    // Discovery.
    let d: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], issuer);
    assert_eq!(d["authorization_endpoint"], format!("{issuer}/auth"));
    assert_eq!(d["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{issuer}/me"));
    assert_eq!(d["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(d["end_session_endpoint"], format!("{issuer}/session/end"));
    assert_eq!(
        d["revocation_endpoint"],
        format!("{issuer}/token/revocation")
    );
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES384"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(
        d["authorization_response_iss_parameter_supported"],
        json!(true)
    );

    // JWKS: one P-384 key.
    let jwks: Value = http
        .get(format!("{issuer}/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-384");
    assert_eq!(keys[0]["alg"], "ES384");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["kid"], op.current_kid());

    // Authorize: the callback carries code, state and iss.
    let s = sign_in(&op, "user-1");
    assert!(s.callback.starts_with(&format!("{REDIRECT_URI}?code=")));
    assert_eq!(
        query_value(&s.callback, "state").as_deref(),
        Some(s.state.as_str())
    );
    assert_eq!(
        query_value(&s.callback, "iss").as_deref(),
        Some(issuer.as_str())
    );
    assert_eq!(
        op.authorize_requests()[0].param("nonce"),
        Some(s.nonce.as_str())
    );
    assert_eq!(op.count("/oidc/auth"), 1);

    // Client authentication is required.
    let code = query_value(&s.callback, "code").unwrap();
    let r = http
        .post(format!("{issuer}/token"))
        .basic_auth(op.client_id(), Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // Code exchange with Basic auth and PKCE.
    let r = exchange(&op, &s).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert!(t["scope"].as_str().unwrap().contains("offline_access"));
    let access_token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        access_token.split('.').count(),
        1,
        "code exchange gives an opaque access token"
    );
    let mut refresh_token = t["refresh_token"].as_str().unwrap().to_string();
    let id_token = t["id_token"].as_str().unwrap();
    assert!(
        verify_es384(id_token, &jwks),
        "ID token verifies against the JWKS"
    );
    let h = jwt_header(id_token);
    assert_eq!(h["alg"], "ES384");
    assert_eq!(h["kid"], op.current_kid());
    let c = jwt_claims(id_token);
    assert_eq!(c["iss"], issuer);
    assert_eq!(c["aud"], "test-app");
    assert_eq!(c["sub"], "user-1");
    assert_eq!(c["nonce"], s.nonce.as_str());
    assert_eq!(c["email"], "user-1@example.com");
    assert_eq!(c["organizations"], json!(["org_acme"]));
    assert!(c.get("at_hash").is_none());
    assert!(
        c.get("custom_data").is_none(),
        "custom_data is userinfo-only"
    );
    let req = op.last_request("/oidc/token").unwrap();
    assert_eq!(req.form_value("grant_type"), Some("authorization_code"));
    assert!(req.header("authorization").unwrap().starts_with("Basic "));

    // The code is single-use, and replaying it revokes the grant (on another sign-in here).
    let sr = sign_in(&op, "user-1");
    let first: Value = exchange(&op, &sr).await.json().await.unwrap();
    let r = exchange(&op, &sr).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = refresh(&op, first["refresh_token"].as_str().unwrap(), &[]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // PKCE: a wrong verifier fails.
    let mut s2 = sign_in(&op, "user-1");
    s2.verifier = pkce_pair().0;
    let r = exchange(&op, &s2).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // Userinfo with the opaque access token.
    let u: Value = http
        .get(format!("{issuer}/me"))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["sub"], "user-1");
    assert_eq!(u["custom_data"], json!({"plan": "pro"}));
    assert_eq!(u["organization_data"][0]["id"], "org_acme");
    assert_eq!(u["picture"], Value::Null);
    let r = http
        .get(format!("{issuer}/me"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Refresh for a resource: a JWT with aud = resource; the refresh token rotates.
    let r = refresh(&op, &refresh_token, &[("resource", API)]).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let at = t["access_token"].as_str().unwrap();
    assert!(verify_es384(at, &jwks));
    let ac = jwt_claims(at);
    assert_eq!(ac["aud"], API);
    assert_eq!(ac["scope"], "read:products");
    assert_eq!(ac["sub"], "user-1");
    assert_eq!(ac["client_id"], "test-app");
    assert_eq!(ac["iss"], issuer);
    assert!(ac["jti"].is_string() && ac["exp"].as_i64().unwrap() > ac["iat"].as_i64().unwrap());
    assert_eq!(jwt_claims(t["id_token"].as_str().unwrap())["sub"], "user-1");
    let new_rt = t["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new_rt, refresh_token);
    assert_eq!(
        op.refresh_token_status(&refresh_token),
        TokenStatus::RotatedOut
    );
    refresh_token = new_rt;

    // A resource not in the authorization request.
    let r = refresh(
        &op,
        &refresh_token,
        &[("resource", "https://other.example.com")],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");

    // Organization token: member.
    let r = refresh(&op, &refresh_token, &[("organization_id", "org_acme")]).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        jwt_claims(t["access_token"].as_str().unwrap())["aud"],
        "urn:logto:organization:org_acme"
    );
    refresh_token = t["refresh_token"].as_str().unwrap().to_string();

    // Organization token: not a member.
    let r = refresh(&op, &refresh_token, &[("organization_id", "org_other")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"code":"oidc.access_denied","error":"access_denied","error_description":"user is not a member of the organization"})
    );

    // Revocation.
    let r = http
        .post(format!("{issuer}/token/revocation"))
        .basic_auth(op.client_id(), Some(op.client_secret()))
        .form(&[
            ("token", refresh_token.as_str()),
            ("client_id", op.client_id()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(op.revoked_tokens(), vec![refresh_token.clone()]);
    let r = refresh(&op, &refresh_token, &[]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // Reusing a rotated-out refresh token fails and revokes the whole grant.
    let s3 = sign_in(&op, "user-2");
    let t: Value = exchange(&op, &s3).await.json().await.unwrap();
    let rt1 = t["refresh_token"].as_str().unwrap().to_string();
    let t: Value = refresh(&op, &rt1, &[]).await.json().await.unwrap();
    let rt2 = t["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&op, &rt1, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(op.refresh_token_status(&rt2), TokenStatus::Revoked);
    let r = refresh(&op, &rt2, &[]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    // End session.
    let r = http
        .get(format!("{issuer}/session/end"))
        .query(&[
            ("client_id", "test-app"),
            ("post_logout_redirect_uri", "http://localhost:8000/"),
            ("id_token_hint", id_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://localhost:8000/");
    assert_eq!(
        op.last_request("/session/end")
            .unwrap()
            .query_value("id_token_hint")
            .as_deref(),
        Some(id_token)
    );

    // Counters.
    assert_eq!(op.count("/.well-known/openid-configuration"), 1);
    assert_eq!(op.count("/oidc/jwks"), 1);
    assert_eq!(op.count("/oidc/token/revocation"), 1);
    assert_eq!(op.count("/oidc/me"), 2);
    assert_eq!(op.count("/oidc/token"), 15);
}

#[tokio::test]
async fn hang_stop_and_restart() {
    let op = FakeProvider::start().await;
    let discovery = format!("{}/.well-known/openid-configuration", op.issuer());
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();

    op.set(|b| b.faults.discovery = Fault::Hang);
    let started = std::time::Instant::now();
    let err = quick.get(&discovery).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        op.count("/openid-configuration"),
        1,
        "the hung request was received"
    );
    op.set(|b| b.faults.discovery = Fault::None);
    assert_eq!(quick.get(&discovery).send().await.unwrap().status(), 200);

    op.stop().await;
    let err = quick.get(&discovery).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    op.restart().await;
    let r = quick.get(&discovery).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["issuer"], op.issuer());
}

#[tokio::test]
async fn faults_and_knobs() {
    let op = FakeProvider::start().await;
    let http = client();
    let issuer = op.issuer();
    let jwks_url = format!("{issuer}/jwks");

    // Status with Retry-After, for two requests only.
    op.set(|b| b.faults.jwks = Fault::status(429).with_header("Retry-After", "7").times(2));
    for _ in 0..2 {
        let r = http.get(&jwks_url).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    assert_eq!(http.get(&jwks_url).send().await.unwrap().status(), 200);

    // HTML, truncated JSON, truncated body, closed connection.
    op.set(|b| b.faults.jwks = Fault::Html);
    let r = http.get(&jwks_url).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    op.set(|b| b.faults.jwks = Fault::TruncatedJson);
    assert!(http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .is_err());
    op.set(|b| b.faults.jwks = Fault::TruncatedBody);
    assert!(http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .is_err());
    op.set(|b| b.faults.jwks = Fault::CloseConnection);
    assert!(http.get(&jwks_url).send().await.is_err());
    op.set(|b| b.faults.jwks = Fault::None);

    // Misbehaving ID tokens.
    op.set(|b| {
        b.corrupt_signature = true;
        b.id_token_kid = Kid::Absent;
        b.id_token_iss = Some("https://evil.example.com/oidc".into());
        b.id_token_aud = Some(json!(["test-app", "other-app"]));
        b.omit_iat = true;
        b.id_token_exp_in = -120;
    });
    let s = sign_in(&op, "user-1");
    let t: Value = exchange(&op, &s).await.json().await.unwrap();
    let jwks: Value = http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = t["id_token"].as_str().unwrap();
    assert!(
        !verify_es384(id_token, &jwks),
        "corrupted signature must not verify"
    );
    assert!(jwt_header(id_token).get("kid").is_none());
    let c = jwt_claims(id_token);
    assert_eq!(c["iss"], "https://evil.example.com/oidc");
    assert_eq!(c["aud"], json!(["test-app", "other-app"]));
    assert!(c.get("iat").is_none() && c.get("azp").is_none());
    assert!(c["exp"].as_i64().unwrap() < c["auth_time"].as_i64().unwrap());

    // alg none and HS256.
    op.set(|b| *b = Default::default());
    op.set(|b| b.id_token_alg = Alg::None);
    let t: Value = exchange(&op, &sign_in(&op, "user-1"))
        .await
        .json()
        .await
        .unwrap();
    let id_token = t["id_token"].as_str().unwrap();
    assert_eq!(jwt_header(id_token)["alg"], "none");
    assert!(id_token.ends_with('.'));
    op.set(|b| b.id_token_alg = Alg::Hs256);
    let t: Value = exchange(&op, &sign_in(&op, "user-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwt_header(t["id_token"].as_str().unwrap())["alg"], "HS256");

    // RS256: the RSA key joins the JWKS and discovery.
    op.set(|b| b.id_token_alg = Alg::Rs256);
    let d: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        json!(["ES384", "RS256"])
    );
    let jwks: Value = http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t: Value = exchange(&op, &sign_in(&op, "user-1"))
        .await
        .json()
        .await
        .unwrap();
    let id_token = t["id_token"].as_str().unwrap();
    assert_eq!(jwt_header(id_token)["alg"], "RS256");
    assert!(verify_rs256(id_token, &jwks));

    // Key rotation: a new kid, old key kept; decoys without kid.
    op.set(|b| b.id_token_alg = Alg::Es384);
    let old = op.current_kid();
    let new = op.rotate_keys();
    assert_ne!(old, new);
    let t: Value = exchange(&op, &sign_in(&op, "user-1"))
        .await
        .json()
        .await
        .unwrap();
    let id_token = t["id_token"].as_str().unwrap().to_string();
    assert_eq!(jwt_header(&id_token)["kid"], new);
    let jwks: Value = http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verify_es384(&id_token, &jwks));
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3); // ec-1, rsa, new ec
    op.set(|b| {
        b.decoy_keys = 2;
        b.jwks_without_kid = true;
    });
    let jwks: Value = http
        .get(&jwks_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 5);
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("kid").is_none()));

    // Callback iss knobs, discovery knobs.
    op.set(|b| {
        b.callback_iss = fake_provider::CallbackIss::Absent;
        b.iss_parameter_supported = false;
        b.discovery_issuer = Some("https://other.example.com/oidc".into());
    });
    let s = sign_in(&op, "user-1");
    assert!(query_value(&s.callback, "iss").is_none());
    let d: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], "https://other.example.com/oidc");
    assert_eq!(d["authorization_response_iss_parameter_supported"], false);

    // Refresh without rotation, without ID token; userinfo with another sub.
    op.set(|b| {
        *b = Default::default();
        b.refresh_rotates = false;
        b.refresh_id_token = false;
        b.userinfo_sub = Some("someone-else".into());
        b.access_token_ttl = 5;
    });
    let t: Value = exchange(&op, &sign_in(&op, "user-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["expires_in"], 5);
    let rt = t["refresh_token"].as_str().unwrap();
    let t2: Value = refresh(&op, rt, &[]).await.json().await.unwrap();
    assert_eq!(t2["refresh_token"], rt);
    assert!(t2.get("id_token").is_none());
    let u: Value = http
        .get(format!("{issuer}/me"))
        .bearer_auth(t2["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["sub"], "someone-else");

    // Hand-made tokens.
    let claims = op.id_token_claims("user-9", Some("n"));
    let jwt = op.sign_jwt(json!({"alg": "ES384", "kid": null}), claims.clone());
    assert!(jwt_header(&jwt).get("kid").is_none());
    assert!(verify_es384(&jwt, &jwks));
    assert_eq!(jwt_claims(&jwt), claims);

    // Without prompt=consent Logto drops offline_access: no refresh token.
    let (verifier, challenge) = pkce_pair();
    let url = format!(
        "{issuer}/auth?client_id=test-app&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state=s&response_type=code&scope=openid%20offline_access",
        url::form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>()
    );
    let cb = op.authorize(&url, "user-1");
    let s = SignIn {
        verifier,
        nonce: String::new(),
        state: "s".into(),
        callback: cb,
    };
    let t: Value = exchange(&op, &s).await.json().await.unwrap();
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert!(jwt_claims(t["id_token"].as_str().unwrap())
        .get("nonce")
        .is_none());
    // Refused authorization requests.
    assert!(op
        .try_authorize(&url.replace("S256", "plain"), "user-1")
        .is_err());
    assert!(op
        .try_authorize(&url.replace("client_id=test-app", "client_id=x"), "user-1")
        .is_err());
    assert!(op
        .try_authorize(&format!("{url}&state=again"), "user-1")
        .is_err());
}

#[tokio::test]
async fn http_authorize_endpoint_and_path_prefix() {
    let op = FakeProvider::start_with(fake_provider::Options {
        path_prefix: "/tenant-a".into(),
        ..Default::default()
    })
    .await;
    assert!(op.endpoint.ends_with("/tenant-a"));
    assert_eq!(op.issuer(), format!("{}/oidc", op.endpoint));
    let (_, challenge) = pkce_pair();
    let url = format!(
        "{}/auth?client_id=test-app&redirect_uri=http%3A%2F%2Flocalhost%3A8000%2Fcb&code_challenge={challenge}&code_challenge_method=S256&state=xyz&response_type=code&scope=openid",
        op.issuer()
    );
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("http://localhost:8000/cb?code="));
    assert_eq!(query_value(&loc, "state").as_deref(), Some("xyz"));
    assert_eq!(
        fake_provider::path_and_query(&loc).split('?').next(),
        Some("/cb")
    );
    let r = client()
        .get(format!("{}/oidc/jwks", op.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!(
            "{}/oidc/jwks",
            op.endpoint.trim_end_matches("/tenant-a")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn blocking_mode() {
    let op = FakeProvider::start_blocking(Default::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("{}/jwks", op.issuer());
    let get = |u: &str| rt.block_on(async { reqwest::get(u).await.map(|r| r.status().as_u16()) });
    assert_eq!(get(&url).unwrap(), 200);
    op.stop_blocking();
    assert!(get(&url).is_err());
    op.restart_blocking();
    assert_eq!(get(&url).unwrap(), 200);
}
