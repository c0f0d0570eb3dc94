//! Issue 13: the API guards against the in-process fake provider, above all with hostile
//! tokens. Every refused token gets its RFC 6750 answer (status, `WWW-Authenticate`, JSON)
//! and is never cached: the number of verified tokens the guards keep
//! (`testing::__cached_bearer_tokens`, hidden) must not move.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fake_provider::FakeProvider;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use rocket::figment::Figment;
use rocket::http::{Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use rocket::serde::json::Json;
use rocket::{catch, catchers, get, routes, Build, Rocket};
use rocket_logto::testing::{
    __cached_bearer_tokens as cached_bearer_tokens, BearerRequest, TestToken,
};
use rocket_logto::{
    AuthenticatedUser, BearerError, BearerToken, Logto, OrganizationResourceToken,
    OrganizationToken, Resource,
};
use serde_json::{json, Value};

const SHOPPING: &str = "https://shopping.example.com/api";
const SECRET_KEY: &str =
    "w5IlXRemiq3AU6m7JjbnxfPSfpcDPs79isJU0BUjcBhBcaoPas/GsnhoFOLC8mZ18Iawc1t1+5n1Jn4kl/eLUg==";

struct Shopping;
impl Resource for Shopping {
    const INDICATOR: &'static str = SHOPPING;
}

struct ShoppingWriter;
impl Resource for ShoppingWriter {
    const INDICATOR: &'static str = SHOPPING;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read", "shopping:write"];
}

#[get("/api/whoami")]
fn whoami(token: BearerToken<Shopping>) -> Json<Value> {
    Json(json!({
        "claims": token.claims(),
        "user_id": token.user_id(),
        "machine": token.is_machine_to_machine(),
        "scopes": token.scopes().collect::<Vec<_>>(),
    }))
}

#[get("/api/write")]
fn write(token: BearerToken<ShoppingWriter>) -> String {
    token.sub().to_string()
}

#[get("/api/organizations/<organization_id>/whoami")]
fn org_whoami(organization_id: &str, token: OrganizationToken) -> Json<Value> {
    Json(json!({ "route": organization_id, "organization_id": token.organization_id() }))
}

#[get("/api/organizations/<organization_id>/shopping")]
fn org_shopping(organization_id: &str, token: OrganizationResourceToken<Shopping>) -> String {
    format!(
        "{organization_id} {}",
        token.organization_id().unwrap_or("-")
    )
}

/// A route that names its organization segment otherwise: the guard cannot check it.
#[get("/api/teams/<team>/whoami")]
fn misnamed(team: &str, token: OrganizationToken) -> String {
    format!("{team} {}", token.sub())
}

#[get("/api/optional")]
fn optional(token: Option<BearerToken<Shopping>>) -> String {
    token.map_or("anonymous".into(), |t| t.sub().to_string())
}

#[get("/api/result")]
fn result(token: Result<BearerToken<Shopping>, BearerError>) -> String {
    match token {
        Ok(token) => token.sub().to_string(),
        Err(BearerError::Missing { .. }) => "anonymous".into(),
        Err(e) => format!("refused: {}", e.status().code),
    }
}

#[get("/me")]
fn me(user: AuthenticatedUser) -> String {
    user.id().to_string()
}

/// An app route of its own that answers 401 (the crate's catcher renders it).
#[get("/app-401")]
fn app_says_401() -> Status {
    Status::Unauthorized
}

fn rocket(logto: Value, trust_test_key: bool) -> Rocket<Build> {
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"));
    let fairing = if trust_test_key {
        Logto::fairing().trust_test_key()
    } else {
        Logto::fairing()
    };
    rocket::custom(figment)
        .attach(fairing)
        .register("/", Logto::catchers())
        .mount(
            "/",
            routes![
                whoami,
                write,
                org_whoami,
                org_shopping,
                misnamed,
                optional,
                result
            ],
        )
}

/// An API-only app (endpoint and resources only) in front of `fp`.
async fn api(fp: &FakeProvider) -> Client {
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    Client::untracked(rocket(logto, false))
        .await
        .expect("valid rocket")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims of a user's token for the shopping API, as Logto issues them.
fn claims(fp: &FakeProvider) -> Value {
    let now = now();
    json!({
        "iss": fp.issuer(), "aud": SHOPPING, "sub": "user-1", "client_id": "web-app",
        "scope": "shopping:read", "iat": now, "exp": now + 3600, "jti": format!("j{now}{}", rand_id()),
    })
}

fn rand_id() -> String {
    let mut b = [0u8; 9];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).unwrap();
    URL_SAFE_NO_PAD.encode(b)
}

fn with(mut claims: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn access_token(fp: &FakeProvider, claims: Value) -> String {
    fp.sign_jwt(json!({ "typ": "at+jwt" }), claims)
}

fn bearer(token: &str) -> Header<'static> {
    Header::new("Authorization", format!("Bearer {token}"))
}

struct Answer {
    status: Status,
    challenge: Option<String>,
    content_type: Option<String>,
    body: Value,
}

async fn answer(response: LocalResponse<'_>) -> Answer {
    let status = response.status();
    let challenge = response
        .headers()
        .get_one("WWW-Authenticate")
        .map(str::to_string);
    let content_type = response.content_type().map(|c| c.to_string());
    let text = response.into_string().await.unwrap_or_default();
    Answer {
        status,
        challenge,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn get(client: &Client, path: &str, headers: &[Header<'static>]) -> Answer {
    let mut request = client.get(path.to_string());
    for h in headers {
        request = request.header(h.clone());
    }
    answer(request.dispatch().await).await
}

/// Asserts the RFC 6750 answer to a bad token: 401, `invalid_token`, JSON, and `why` in the
/// description; and that nothing was cached.
async fn refused(client: &Client, path: &str, headers: &[Header<'static>], why: &str) {
    let before = cached_bearer_tokens(client.rocket());
    let a = get(client, path, headers).await;
    assert_eq!(a.status, Status::Unauthorized, "{why}: {:?}", a.body);
    let challenge = a.challenge.unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"") && challenge.contains("error=\"invalid_token\""),
        "{why}: {challenge}"
    );
    assert_eq!(a.body["error"], "invalid_token", "{why}");
    let description = a.body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(why),
        "expected {why:?} in {description:?}"
    );
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        cached_bearer_tokens(client.rocket()),
        before,
        "{why}: a refused token was cached"
    );
}

#[rocket::async_test]
async fn a_valid_token_is_accepted_with_typed_claims_and_verified_once() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = access_token(&fp, claims(&fp));
    let a = get(&client, "/api/whoami", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::Ok, "{:?}", a.body);
    assert_eq!(a.body["claims"]["sub"], "user-1");
    assert_eq!(a.body["claims"]["aud"], SHOPPING);
    assert_eq!(a.body["user_id"], "user-1");
    assert_eq!(a.body["machine"], false);
    assert_eq!(a.body["scopes"], json!(["shopping:read"]));
    assert_eq!(cached_bearer_tokens(client.rocket()), 1);
    // The same bytes again: served from the cache (the count does not move), same answer.
    for _ in 0..3 {
        let again = get(&client, "/api/whoami", &[bearer(&token)]).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.body, a.body);
    }
    assert_eq!(cached_bearer_tokens(client.rocket()), 1);
    // A cached token is still checked against each route: here it lacks a scope.
    let a = get(&client, "/api/write", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::Forbidden);
    // No sign-in routes in an API-only app.
    let a = get(&client, "/logto/sign-in", &[]).await;
    assert_eq!(a.status, Status::NotFound);
}

#[rocket::async_test]
async fn an_api_only_apps_401_page_links_to_no_sign_in_route() {
    let fp = FakeProvider::start().await;
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    let client = Client::untracked(rocket(logto, false).mount("/", routes![app_says_401]))
        .await
        .expect("valid rocket");
    // A browser at a route of the app that answers 401: the crate's 401 page, without the
    // sign-in link of a web app (an API-only app mounts no `/logto/sign-in`).
    let response = client
        .get("/app-401")
        .header(Header::new("Accept", "text/html"))
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    let body = response.into_string().await.unwrap();
    assert!(body.contains("401"), "{body}");
    assert!(!body.contains("sign-in"), "{body}");
    assert!(!body.contains("Sign in"), "{body}");
}

#[rocket::async_test]
async fn rs256_tokens_of_an_rsa_tenant_are_accepted() {
    let fp = FakeProvider::start_with(fake_provider::Options {
        rsa: true,
        ..Default::default()
    })
    .await;
    let client = api(&fp).await;
    let token = fp.sign_jwt(json!({ "typ": "at+jwt", "alg": "RS256" }), claims(&fp));
    let a = get(&client, "/api/whoami", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::Ok, "{:?}", a.body);
}

#[rocket::async_test]
async fn machine_to_machine_tokens_have_no_user() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let m2m = with(
        claims(&fp),
        json!({ "sub": "m2m-app", "client_id": "m2m-app" }),
    );
    let a = get(&client, "/api/whoami", &[bearer(&access_token(&fp, m2m))]).await;
    assert_eq!(a.status, Status::Ok, "{:?}", a.body);
    assert_eq!(a.body["machine"], true);
    assert_eq!(a.body["user_id"], Value::Null);
}

#[rocket::async_test]
async fn missing_or_malformed_headers_get_401_with_a_bearer_challenge() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    // No token at all (or another scheme): a challenge without an error code.
    for headers in [
        vec![],
        vec![Header::new("Authorization", "Basic dXNlcjpwYXNz")],
    ] {
        let a = get(&client, "/api/whoami", &headers).await;
        assert_eq!(a.status, Status::Unauthorized);
        assert_eq!(
            a.challenge.as_deref(),
            Some(format!("Bearer realm=\"{SHOPPING}\"").as_str())
        );
        assert_eq!(a.body["error"], "missing_token");
    }
    let token = access_token(&fp, claims(&fp));
    for (value, why) in [
        ("Bearer", "no token"),
        ("Bearer    ", "no token"),
        ("Bearer a b", "characters"),
        ("Bearer ###.x.y", "characters"),
        ("Bearer a.b.c", "well-formed"),
        ("Bearer \u{e9}.b.c", "characters"),
    ] {
        refused(
            &client,
            "/api/whoami",
            &[Header::new("Authorization", value)],
            why,
        )
        .await;
    }
    refused(
        &client,
        "/api/whoami",
        &[bearer(&token), bearer(&token)],
        "several Authorization headers",
    )
    .await;
    // Headers of 10 KB and 100 KB: refused before any decoding.
    for size in [10 * 1024, 100 * 1024] {
        let huge = format!("{}.{}.{}", "a".repeat(size / 2), "b".repeat(size / 2), "c");
        let started = Instant::now();
        refused(
            &client,
            "/api/whoami",
            &[bearer(&huge)],
            "longer than 8192 bytes",
        )
        .await;
        assert!(started.elapsed().as_secs() < 5);
    }
    // An opaque token, as Logto issues without a resource: the answer says what to do.
    refused(
        &client,
        "/api/whoami",
        &[bearer("Pm0E7ld3bAPf7XGBOK4xNb-JZ9eGMAPdvDuVv3iS8Uq")],
        "request a token for the resource https://shopping.example.com/api",
    )
    .await;
}

#[rocket::async_test]
async fn hostile_tokens_are_refused_and_never_cached() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let good = claims(&fp);
    let now = now();

    // alg: none, with and without a signature.
    let none = fp.sign_jwt(json!({ "alg": "none", "typ": "at+jwt" }), good.clone());
    refused(&client, "/api/whoami", &[bearer(&none)], "algorithm").await;
    // HS256 "signed" with Logto's public key (the classic key-confusion attack).
    let jwk = fp.jwks()["keys"][0].to_string();
    let header = URL_SAFE_NO_PAD
        .encode(json!({ "alg": "HS256", "typ": "at+jwt", "kid": fp.current_kid() }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(good.to_string());
    let signed = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.as_bytes());
    let mac = ring::hmac::sign(&key, signed.as_bytes());
    let hs256 = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    refused(&client, "/api/whoami", &[bearer(&hs256)], "algorithm").await;
    // Signed by another key that claims Logto's kid.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let other =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let header = URL_SAFE_NO_PAD
        .encode(json!({ "alg": "ES384", "typ": "at+jwt", "kid": fp.current_kid() }).to_string());
    let signed = format!("{header}.{payload}");
    let sig = other.sign(&rng, signed.as_bytes()).unwrap();
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    refused(&client, "/api/whoami", &[bearer(&forged)], "signature").await;
    // A genuine signature with one byte of the payload changed.
    let genuine = access_token(&fp, good.clone());
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(good.clone(), json!({ "sub": "admin" })).to_string());
    refused(
        &client,
        "/api/whoami",
        &[bearer(&parts.join("."))],
        "signature",
    )
    .await;

    // Claims.
    for (patch, why) in [
        (json!({ "exp": now - 120 }), "expired"),
        (json!({ "nbf": now + 3600 }), "not valid yet"),
        (json!({ "iat": now + 3600 }), "issued in the future"),
        (json!({ "iss": "https://evil.example/oidc" }), "issuer"),
        (
            json!({ "aud": "https://store.example.com/api" }),
            "not meant for this API",
        ),
        (json!({ "aud": null }), "not meant for this API"),
        (json!({ "client_id": null }), "no client_id"),
        (json!({ "sub": null }), "no sub"),
        (
            json!({ "organization_id": "org-1" }),
            "narrowed to an organization",
        ),
    ] {
        let token = access_token(&fp, with(good.clone(), patch.clone()));
        refused(&client, "/api/whoami", &[bearer(&token)], why).await;
    }
    // Another type in the header.
    let typed = fp.sign_jwt(json!({ "typ": "JWT" }), good.clone());
    refused(&client, "/api/whoami", &[bearer(&typed)], "type").await;
    // An ID token offered as an access token, untyped (as Logto sends them) or typed.
    let id_claims = fp.id_token_claims("user-1", None);
    let id_token = fp.sign_jwt(json!({}), id_claims.clone());
    refused(&client, "/api/whoami", &[bearer(&id_token)], "no client_id").await;
    let id_token = fp.sign_jwt(json!({ "typ": "JWT" }), id_claims);
    refused(&client, "/api/whoami", &[bearer(&id_token)], "type").await;
    // An organization token for another organization, and a resource token on an
    // organization route.
    let org_a = access_token(
        &fp,
        with(
            good.clone(),
            json!({ "aud": "urn:logto:organization:org-a" }),
        ),
    );
    refused(
        &client,
        "/api/organizations/org-b/whoami",
        &[bearer(&org_a)],
        "this organization",
    )
    .await;
    refused(
        &client,
        "/api/whoami",
        &[bearer(&org_a)],
        "not meant for this API",
    )
    .await;
    let org_api_a = access_token(
        &fp,
        with(good.clone(), json!({ "organization_id": "org-a" })),
    );
    refused(
        &client,
        "/api/organizations/org-b/shopping",
        &[bearer(&org_api_a)],
        "not narrowed to this organization",
    )
    .await;
    refused(
        &client,
        "/api/organizations/org-a/whoami",
        &[bearer(&org_api_a)],
        "this organization",
    )
    .await;

    // Genuine tokens for another route are not cached either; once they open their own
    // route, they are.
    assert_eq!(cached_bearer_tokens(client.rocket()), 0);
    let ok = get(
        &client,
        "/api/organizations/org-a/whoami",
        &[bearer(&org_a)],
    )
    .await;
    assert_eq!(ok.status, Status::Ok, "{:?}", ok.body);
    assert_eq!(
        ok.body,
        json!({ "route": "org-a", "organization_id": "org-a" })
    );
    let ok = get(
        &client,
        "/api/organizations/org-a/shopping",
        &[bearer(&org_api_a)],
    )
    .await;
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(ok.body, "org-a org-a");
    assert_eq!(cached_bearer_tokens(client.rocket()), 2);
    // Cached, they are still refused by the routes they are not for.
    refused(
        &client,
        "/api/organizations/org-b/whoami",
        &[bearer(&org_a)],
        "this organization",
    )
    .await;
    refused(
        &client,
        "/api/whoami",
        &[bearer(&org_api_a)],
        "narrowed to an organization",
    )
    .await;
}

#[rocket::async_test]
async fn a_flood_of_unknown_kids_refetches_the_keys_at_the_rate_limit() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    // Discovery and the first key set.
    let warm = access_token(&fp, claims(&fp));
    assert_eq!(
        get(&client, "/api/whoami", &[bearer(&warm)]).await.status,
        Status::Ok
    );
    let before = fp.count("/jwks");
    let started = Instant::now();
    for i in 0..200 {
        let token = fp.sign_jwt(
            json!({ "typ": "at+jwt", "kid": format!("kid-{i}") }),
            claims(&fp),
        );
        refused(&client, "/api/whoami", &[bearer(&token)], "key id").await;
    }
    // The crate refetches at most once per 10 s, the first one at once.
    let allowed = 1 + started.elapsed().as_secs() as usize / 10;
    let fetched = fp.count("/jwks") - before;
    assert!(
        fetched >= 1 && fetched <= allowed,
        "{fetched} refetches for 200 unknown kids"
    );
    assert_eq!(cached_bearer_tokens(client.rocket()), 1);
}

#[rocket::async_test]
async fn a_rotated_key_is_picked_up_on_its_first_token() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let old = access_token(&fp, claims(&fp));
    assert_eq!(
        get(&client, "/api/whoami", &[bearer(&old)]).await.status,
        Status::Ok
    );
    fp.rotate_keys();
    let new = access_token(&fp, claims(&fp));
    let a = get(&client, "/api/whoami", &[bearer(&new)]).await;
    assert_eq!(a.status, Status::Ok, "{:?}", a.body);
}

#[rocket::async_test]
async fn missing_scopes_get_403_insufficient_scope_with_the_scopes_needed() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = access_token(&fp, claims(&fp));
    let a = get(&client, "/api/write", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::Forbidden);
    assert_eq!(
        a.challenge.as_deref(),
        Some("Bearer realm=\"https://shopping.example.com/api\", error=\"insufficient_scope\", error_description=\"The access token lacks the scopes: shopping:write.\", scope=\"shopping:read shopping:write\"")
    );
    assert_eq!(a.body["error"], "insufficient_scope");
    assert_eq!(a.body["scope"], "shopping:read shopping:write");
    let writer = access_token(
        &fp,
        with(
            claims(&fp),
            json!({ "scope": "shopping:write shopping:read" }),
        ),
    );
    let a = get(&client, "/api/write", &[bearer(&writer)]).await;
    assert_eq!(a.status, Status::Ok);
}

#[rocket::async_test]
async fn api_answers_stay_rfc_6750_json_for_browsers_in_an_app_that_signs_in_too() {
    let fp = FakeProvider::start().await;
    let logto = json!({
        "endpoint": fp.endpoint, "app_id": fp.client_id(), "app_secret": fp.client_secret(),
        "base_url": "http://localhost:8000", "resources": [SHOPPING],
    });
    let client = Client::untracked(rocket(logto, false).mount("/", routes![me]))
        .await
        .unwrap();
    let html = Header::new("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");
    // The web route sends a browser to sign-in...
    let response = client.get("/me").header(html.clone()).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    // ...the API route never does, whatever the client accepts.
    for accept in [
        html,
        Header::new("Accept", "application/json"),
        Header::new("Accept", "text/plain"),
    ] {
        let a = get(&client, "/api/whoami", std::slice::from_ref(&accept)).await;
        assert_eq!(a.status, Status::Unauthorized, "{accept}");
        assert!(a.challenge.is_some(), "{accept}");
        assert_eq!(
            a.content_type.as_deref(),
            Some("application/json"),
            "{accept}"
        );
        assert_eq!(a.body["error"], "missing_token");
        let bad = get(&client, "/api/whoami", &[accept.clone(), bearer("x.y.z")]).await;
        assert_eq!(bad.body["error"], "invalid_token", "{accept}");
    }
}

#[catch(401)]
fn api_401() -> &'static str {
    "the app's own 401"
}

#[rocket::async_test]
async fn the_apps_own_catchers_win() {
    let fp = FakeProvider::start().await;
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    let client = Client::untracked(rocket(logto, false).register("/api", catchers![api_401]))
        .await
        .unwrap();
    let a = get(&client, "/api/whoami", &[]).await;
    assert_eq!(a.status, Status::Unauthorized);
    assert_eq!(a.body, "the app's own 401");
    assert_eq!(a.challenge, None);
    // Its other statuses are still the crate's.
    let token = access_token(&fp, claims(&fp));
    let a = get(&client, "/api/write", &[bearer(&token)]).await;
    assert_eq!(a.body["error"], "insufficient_scope");
}

#[rocket::async_test]
async fn option_and_result_tell_anonymous_and_refused_callers_apart() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = access_token(&fp, claims(&fp));
    let expired = access_token(&fp, with(claims(&fp), json!({ "exp": now() - 3600 })));
    for (path, headers, expected) in [
        ("/api/optional", vec![], "anonymous"),
        ("/api/optional", vec![bearer(&token)], "user-1"),
        ("/api/optional", vec![bearer(&expired)], "anonymous"),
        ("/api/result", vec![], "anonymous"),
        ("/api/result", vec![bearer(&token)], "user-1"),
        ("/api/result", vec![bearer(&expired)], "refused: 401"),
    ] {
        let a = get(&client, path, &headers).await;
        assert_eq!(a.status, Status::Ok, "{path}");
        assert_eq!(a.body, expected, "{path} {headers:?}");
    }
}

#[rocket::async_test]
async fn an_organization_guard_on_a_route_without_its_segment_fails_closed() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = access_token(
        &fp,
        with(claims(&fp), json!({ "aud": "urn:logto:organization:t1" })),
    );
    let a = get(&client, "/api/teams/t1/whoami", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::InternalServerError);
    assert_eq!(a.body["error"], "server_error");
    // The route's setup is the app's business, in its log; the client gets a generic text.
    let description = a.body["error_description"].as_str().unwrap();
    assert!(!description.contains("<organization_id>"), "{description}");
    assert!(
        description.contains("cannot check access tokens"),
        "{description}"
    );
}

#[rocket::async_test]
async fn an_unreachable_logto_is_503_not_a_refusal() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = access_token(&fp, claims(&fp));
    fp.stop().await;
    let a = get(&client, "/api/whoami", &[bearer(&token)]).await;
    assert_eq!(a.status, Status::ServiceUnavailable, "{:?}", a.body);
    assert_eq!(a.body["error"], "temporarily_unavailable");
    assert_eq!(a.challenge, None);
    assert_eq!(cached_bearer_tokens(client.rocket()), 0);
}

#[rocket::async_test]
async fn a_web_guard_in_an_api_only_app_stops_the_launch() {
    let fp = FakeProvider::start().await;
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    let launched = Client::untracked(rocket(logto, false).mount("/", routes![me])).await;
    match launched {
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{e}"
        ),
        Ok(_) => panic!("AuthenticatedUser in an API-only app must stop the launch"),
    }
    // And a resource the configuration does not list.
    let logto = json!({ "endpoint": fp.endpoint, "resources": ["https://store.example.com/api"] });
    match Client::untracked(rocket(logto, false)).await {
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{e}"
        ),
        Ok(_) => panic!("BearerToken<R> with R not in `resources` must stop the launch"),
    }
}

// ---- Test mode (issue 14) -------------------------------------------------------------

#[rocket::async_test]
async fn a_test_token_is_refused_without_the_opt_in() {
    let fp = FakeProvider::start().await;
    let client = api(&fp).await;
    let token = TestToken::for_resource::<Shopping>().user("alice");
    let response = client.get("/api/whoami").bearer(&token).dispatch().await;
    let a = answer(response).await;
    assert_eq!(a.status, Status::Unauthorized, "{:?}", a.body);
    assert!(a.body["error_description"]
        .as_str()
        .unwrap()
        .contains("key id"));
    assert_eq!(cached_bearer_tokens(client.rocket()), 0);
}

#[rocket::async_test]
async fn in_test_mode_test_tokens_open_every_guard_and_logto_is_never_asked() {
    let fp = FakeProvider::start().await;
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    let client = Client::untracked(rocket(logto, true)).await.unwrap();
    let send = |path: &'static str, token: TestToken| {
        let client = &client;
        async move { answer(client.get(path).bearer(&token).dispatch().await).await }
    };
    let a = send(
        "/api/whoami",
        TestToken::for_resource::<Shopping>().user("alice"),
    )
    .await;
    assert_eq!(a.status, Status::Ok, "{:?}", a.body);
    assert_eq!(a.body["user_id"], "alice");
    let a = send(
        "/api/whoami",
        TestToken::for_resource::<Shopping>().machine("cron"),
    )
    .await;
    assert_eq!(a.body["machine"], true);
    let a = send("/api/write", TestToken::for_resource::<ShoppingWriter>()).await;
    assert_eq!(a.status, Status::Ok);
    let a = send("/api/write", TestToken::for_resource::<Shopping>()).await;
    assert_eq!(a.status, Status::Forbidden);
    let a = send(
        "/api/organizations/o1/whoami",
        TestToken::for_organization("o1"),
    )
    .await;
    assert_eq!(a.status, Status::Ok);
    let a = send(
        "/api/organizations/o2/whoami",
        TestToken::for_organization("o1"),
    )
    .await;
    assert_eq!(a.status, Status::Unauthorized);
    let a = send(
        "/api/organizations/o1/shopping",
        TestToken::for_organization_resource::<Shopping>("o1"),
    )
    .await;
    assert_eq!(a.status, Status::Ok);
    // Every other check still applies.
    let a = send(
        "/api/whoami",
        TestToken::for_resource::<Shopping>().claim("exp", now() - 3600),
    )
    .await;
    assert_eq!(a.status, Status::Unauthorized);
    let a = send(
        "/api/whoami",
        TestToken::for_resource::<Shopping>().claim("iss", "https://evil.example/oidc"),
    )
    .await;
    assert_eq!(a.status, Status::Unauthorized);
    // Logto's own tokens are not trusted in test mode, and Logto is never called.
    let logto_token = access_token(&fp, claims(&fp));
    let a = get(&client, "/api/whoami", &[bearer(&logto_token)]).await;
    assert_eq!(a.status, Status::Unauthorized);
    assert_eq!(fp.count("/jwks") + fp.count("/openid-configuration"), 0);
}
