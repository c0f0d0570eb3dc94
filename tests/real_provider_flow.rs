//! End-to-end flows against the real, Logto-like `oidc-provider` (tests/provider): sign-in,
//! claims, sign-out with revocation, resource and organization tokens, userinfo, refresh
//! written back to the cookies, concurrent refreshes of one browser, several tabs, and the
//! size of the session cookies. Each test starts its own provider on a free loopback port.
//! Needs `npm ci --prefix tests/provider` once.
//!
//! Measured figures are printed (`cargo test --test real_provider_flow -- --nocapture`).

#[path = "support/app.rs"]
mod app;
#[path = "support/real_provider.rs"]
mod real_provider;

use std::collections::BTreeMap;
use std::sync::Arc;

use app::*;
use base64::Engine as _;
use real_provider::{
    ProviderBrowser, ProviderOptions, RealProvider, ACME_ORG, ALICE, ALICE_SUB, BOB, BOB_SUB,
};
use rocket::http::{Accept, Cookie, Status};
use rocket::local::asynchronous::Client;
use rocket::tokio::sync::Barrier;
use rocket::tokio::task::JoinSet;
use serde_json::{json, Value};

/// What the sample app asks for: the claims scopes, the resource scopes and the
/// organization scopes the provider grants.
const SCOPES: [&str; 12] = [
    "email",
    "custom_data",
    "identities",
    "roles",
    "urn:logto:scope:organizations",
    "urn:logto:scope:organization_roles",
    "shopping:read",
    "shopping:write",
    "store:read",
    "store:write",
    "read:members",
    "invite:members",
];

/// The crate's default `token_refresh_margin_secs`: a token with less life left is refreshed.
const REFRESH_MARGIN_SECS: i64 = 60;
/// An access-token lifetime below the margin: such a token is refreshed on its next use.
const SHORT_TTL_SECS: u64 = 30;
/// Concurrent requests of one browser in the concurrency test.
const CONCURRENT_REQUESTS: usize = 20;

// ---- Set-up --------------------------------------------------------------------------

/// A provider whose post-logout URI is `base_url` as the crate sends it (with its `/`).
async fn provider() -> RealProvider {
    RealProvider::start(ProviderOptions {
        post_logout_redirect_uris: vec![format!("{BASE_URL}/")],
        ..ProviderOptions::default()
    })
    .await
}

fn table(provider: &RealProvider) -> Value {
    let mut logto = logto_table(
        &provider.endpoint,
        &provider.options.app_id,
        &provider.options.app_secret,
    );
    logto["scopes"] = json!(SCOPES);
    logto["resources"] = json!([SHOPPING, STORE]);
    logto
}

fn now() -> i64 {
    rocket::time::OffsetDateTime::now_utc().unix_timestamp()
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn token_path(resource: &str) -> String {
    format!("/token?resource={}", encode(resource))
}

/// The payload of a JWT, unverified (only to read what the crate forwarded).
fn jwt_payload(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// The `scopes` of an `AccessToken` answer, sorted.
fn scopes_of(token: &Value) -> Vec<String> {
    let mut scopes: Vec<String> = token["scopes"]
        .as_array()
        .unwrap_or_else(|| panic!("no scopes in {token}"))
        .iter()
        .map(|s| s.as_str().expect("scope string").to_string())
        .collect();
    scopes.sort();
    scopes
}

fn count(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Refresh-token requests the provider received so far (all targets, failed ones included).
async fn refreshes(provider: &RealProvider) -> u64 {
    count(&provider.stats().await, "/token_requests/refresh_token")
}

/// Refresh-token requests for one resource indicator.
async fn refreshes_for(provider: &RealProvider, resource: &str) -> u64 {
    let stats = provider.stats().await;
    stats["refresh_by_resource"][resource].as_u64().unwrap_or(0)
}

/// Full sign-in through the provider's login form (or its existing session) with a tracked
/// client: the callback must answer 303 to `/`.
async fn sign_in(client: &Client, browser: &ProviderBrowser, user: (&str, &str)) {
    let authorize = start_sign_in(client, "/logto/sign-in").await;
    let callback = browser.sign_in(&authorize, user.0, user.1).await;
    let response = client.get(path_and_query(&callback)).dispatch().await;
    let status = response.status();
    let location = response.headers().get_one("Location").map(str::to_string);
    let body = response.into_string().await.unwrap_or_default();
    assert_eq!(status, Status::SeeOther, "callback for {}: {body}", user.0);
    assert_eq!(location.as_deref(), Some("/"), "callback for {}", user.0);
}

async fn signed_in_app(provider: &RealProvider, user: (&str, &str)) -> (Client, ProviderBrowser) {
    let client = client(table(provider)).await;
    let browser = ProviderBrowser::new();
    sign_in(&client, &browser, user).await;
    (client, browser)
}

/// A browser's cookie store for an *untracked* client: what it would send, kept by hand so
/// that a test can send any snapshot (e.g. the same old cookies with 20 parallel requests).
#[derive(Clone, Default)]
struct Jar {
    /// name -> (decoded value, `name=value` exactly as in `Set-Cookie`).
    cookies: BTreeMap<String, (String, String)>,
    /// Every `Set-Cookie` line absorbed.
    seen: Vec<String>,
}

impl Jar {
    fn absorb(&mut self, lines: &[String]) {
        let now = rocket::time::OffsetDateTime::now_utc();
        for line in lines {
            self.seen.push(line.clone());
            let cookie = Cookie::parse_encoded(line.clone())
                .unwrap_or_else(|e| panic!("bad Set-Cookie {line}: {e}"));
            let removal = cookie.max_age().is_some_and(|age| age.is_zero())
                || cookie.expires_datetime().is_some_and(|at| at <= now);
            let name = cookie.name().to_string();
            if removal {
                self.cookies.remove(&name);
            } else {
                let raw = line
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.cookies.insert(name, (cookie.value().to_string(), raw));
            }
        }
    }

    fn to_send(&self) -> Vec<Cookie<'static>> {
        self.cookies
            .iter()
            .map(|(name, (value, _))| Cookie::new(name.clone(), value.clone()))
            .collect()
    }

    fn session_names(&self) -> Vec<&str> {
        self.cookies
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("logto_session"))
            .collect()
    }

    /// Bytes of the `Cookie` header a browser sends for the session cookies:
    /// `name=value` pairs joined with `"; "`.
    fn session_header_bytes(&self) -> usize {
        let pairs: Vec<&str> = self
            .cookies
            .iter()
            .filter(|(name, _)| name.starts_with("logto_session"))
            .map(|(_, (_, raw))| raw.as_str())
            .collect();
        pairs.join("; ").len()
    }
}

/// One GET with `jar`'s cookies (JSON accepted); returns status, `Set-Cookie` lines and body.
async fn get_with(client: &Client, jar: &Jar, path: &str) -> (Status, Vec<String>, Value) {
    let response = client
        .get(path.to_string())
        .cookies(jar.to_send())
        .header(Accept::JSON)
        .dispatch()
        .await;
    let status = response.status();
    let lines = set_cookies(&response);
    let body = response.into_string().await.unwrap_or_default();
    (
        status,
        lines,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// [`get_with`], absorbing the answer's cookies into `jar` as a browser would.
async fn browse(client: &Client, jar: &mut Jar, path: &str) -> (Status, Value) {
    let (status, lines, body) = get_with(client, jar, path).await;
    jar.absorb(&lines);
    (status, body)
}

/// Sign-in with an untracked client; returns the browser's cookies afterwards.
async fn sign_in_untracked(client: &Client, browser: &ProviderBrowser, user: (&str, &str)) -> Jar {
    let mut jar = Jar::default();
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let authorize = location(&response);
    jar.absorb(&set_cookies(&response));
    let callback = browser.sign_in(&authorize, user.0, user.1).await;
    let response = client
        .get(path_and_query(&callback))
        .cookies(jar.to_send())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(response.headers().get_one("Location"), Some("/"));
    jar.absorb(&set_cookies(&response));
    assert!(
        jar.cookies.contains_key("logto_session"),
        "the callback sets the session cookie"
    );
    jar
}

// ---- 1. Sign-in, claims, sign-out (issue 2 (b)) ----------------------------------------

#[rocket::async_test]
async fn issue_2b_sign_in_claims_sign_out_revokes_refresh_token_then_sign_in_again() {
    let provider = provider().await;
    let (client, browser) = signed_in_app(&provider, ALICE).await;

    let (status, me) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Ok, "{me}");
    assert_eq!(me["iss"], json!(provider.issuer()));
    assert_eq!(me["aud"], json!(provider.options.app_id));
    assert_eq!(me["sub"], json!(ALICE_SUB));
    assert_eq!(me["email"], json!("alice@example.com"));
    assert_eq!(me["email_verified"], json!(true));
    assert_eq!(me["username"], json!("alice"));
    assert_eq!(me["name"], json!("Alice Liddell"));
    // Logto sends empty profile claims as null, not absent; the crate keeps them so.
    assert!(
        me.as_object().unwrap().contains_key("picture") && me["picture"].is_null(),
        "{me}"
    );
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["organizations"], json!([ACME_ORG]));
    assert_eq!(me["organization_roles"], json!(["org_acme:admin"]));
    // Milliseconds, not seconds.
    assert_eq!(me["created_at"], json!(1_700_000_000_000_i64));
    assert_eq!(me["updated_at"], json!(1_700_000_600_000_i64));
    // userinfo-only claims are not in the ID token.
    assert!(
        me.get("custom_data").is_none() && me.get("organization_data").is_none(),
        "{me}"
    );

    let (_, home) = get_json(&client, "/").await;
    assert_eq!(home["authenticated"], json!(true));
    assert_eq!(home["sub"], json!(ALICE_SUB));

    assert!(provider.grant_valid(ALICE_SUB).await);
    provider.reset_stats().await;

    // Sign-out: the refresh token is revoked before the browser is sent to end-session.
    let response = client.get("/logto/sign-out").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let end_session = location(&response);
    let cleared = set_cookies(&response);
    assert!(
        cleared
            .iter()
            .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")),
        "sign-out removes the session cookie: {cleared:?}"
    );
    assert!(
        end_session.starts_with(&format!("{}/session/end?", provider.issuer())),
        "sign-out goes to the provider's end-session endpoint: {end_session}"
    );
    assert_eq!(
        param(&end_session, "client_id").as_deref(),
        Some(provider.options.app_id.as_str())
    );
    assert_eq!(
        param(&end_session, "post_logout_redirect_uri").as_deref(),
        Some("http://localhost:8000/")
    );
    assert_eq!(
        param(&end_session, "id_token_hint"),
        None,
        "no token in the end-session URL"
    );

    let stats = provider.stats().await;
    assert_eq!(
        count(&stats, "/revocation_requests"),
        1,
        "one revocation request: {stats}"
    );
    assert!(
        !provider.grant_valid(ALICE_SUB).await,
        "revoking the refresh token ends the grant"
    );

    let landed = browser.confirm_sign_out(&end_session).await;
    assert_eq!(landed, "http://localhost:8000/");

    let (status, body) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Unauthorized, "{body}");
    assert!(client.cookies().get("logto_session").is_none());
    let (_, home) = get_json(&client, "/").await;
    assert_eq!(home["authenticated"], json!(false));

    // The provider session is gone too: the login form shows again, and sign-in works.
    sign_in(&client, &browser, ALICE).await;
    let (status, me) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Ok, "{me}");
    assert_eq!(me["sub"], json!(ALICE_SUB));
    assert!(
        provider.grant_valid(ALICE_SUB).await,
        "the new sign-in has a grant"
    );
    let (status, token) = get_json(&client, &token_path(SHOPPING)).await;
    assert_eq!(status, Status::Ok, "the new session can refresh: {token}");
}

// ---- 2. Resource tokens ----------------------------------------------------------------

#[rocket::async_test]
async fn resource_tokens_have_the_indicator_as_aud_and_the_scopes_roles_grant() {
    let provider = provider().await;
    let (alice, _) = signed_in_app(&provider, ALICE).await;
    let (bob, _) = signed_in_app(&provider, BOB).await;

    let expected = [
        (
            &alice,
            ALICE_SUB,
            SHOPPING,
            vec!["shopping:read", "shopping:write"],
        ),
        (&alice, ALICE_SUB, STORE, vec!["store:read", "store:write"]),
        (&bob, BOB_SUB, SHOPPING, vec!["shopping:read"]),
        (&bob, BOB_SUB, STORE, vec!["store:read"]),
    ];
    for (client, sub, resource, scopes) in expected {
        let (status, token) = get_json(client, &token_path(resource)).await;
        assert_eq!(status, Status::Ok, "{sub} {resource}: {token}");
        assert_eq!(token["claims"]["aud"], json!(resource), "{sub}: {token}");
        assert_eq!(token["claims"]["sub"], json!(sub), "{token}");
        assert_eq!(scopes_of(&token), scopes, "{sub} {resource}");
        // What the crate decoded is what the JWT says.
        let raw = token["access_token"].as_str().expect("access_token");
        assert_eq!(jwt_payload(raw)["aud"], json!(resource));
        let expires_at = token["expires_at"].as_i64().expect("expires_at");
        assert!(
            expires_at > now() + 3000,
            "default lifetime 3600 s: {expires_at}"
        );
    }

    let (status, me) = get_json(&bob, "/me").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(me["sub"], json!(BOB_SUB));
    assert!(
        me.as_object().unwrap().contains_key("name") && me["name"].is_null(),
        "bob's empty name is null: {me}"
    );
    assert_eq!(me["roles"], json!(["viewer"]));

    let (status, body) = get_json(&bob, "/shopping-write").await;
    assert_eq!(status, Status::Forbidden, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("shopping:write"),
        "{body}"
    );
    let (status, body) = get_json(&bob, "/shopping").await;
    assert_eq!(status, Status::Ok, "bob may read: {body}");

    let (status, body) = get_json(&alice, "/shopping-write").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert!(scopes_of(&body).contains(&"shopping:write".to_string()));
}

// ---- 3. Organization tokens ------------------------------------------------------------

#[rocket::async_test]
async fn organization_tokens_for_members_only() {
    let provider = provider().await;
    let (alice, _) = signed_in_app(&provider, ALICE).await;

    let (status, token) = get_json(&alice, &format!("/org/{ACME_ORG}")).await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(
        token["claims"]["aud"],
        json!("urn:logto:organization:org_acme")
    );
    assert_eq!(token["claims"]["sub"], json!(ALICE_SUB));
    assert_eq!(scopes_of(&token), ["invite:members", "read:members"]);

    let (status, body) = get_json(&alice, "/org/org_globex").await;
    assert_eq!(status, Status::Forbidden, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not a member") && message.contains("org_globex"),
        "{body}"
    );
    // A refused organization does not spend the refresh token nor end the session.
    assert!(provider.grant_valid(ALICE_SUB).await);
    let (status, me) = get_json(&alice, "/me").await;
    assert_eq!(status, Status::Ok, "{me}");

    let before = provider.stats().await;
    let (status, orgs) = get_json(&alice, "/orgs").await;
    assert_eq!(status, Status::Ok, "{orgs}");
    let keys: Vec<&String> = orgs.as_object().expect("a map").keys().collect();
    assert_eq!(keys, ["org_acme"]);
    assert_eq!(
        orgs[ACME_ORG]["claims"]["aud"],
        json!("urn:logto:organization:org_acme")
    );
    assert_eq!(
        orgs[ACME_ORG]["access_token"], token["access_token"],
        "the cached organization token is reused"
    );
    let after = provider.stats().await;
    assert_eq!(
        count(&after, "/token_requests/refresh_token"),
        count(&before, "/token_requests/refresh_token"),
        "no refresh for a cached organization token"
    );

    let (bob, _) = signed_in_app(&provider, BOB).await;
    let (status, body) = get_json(&bob, &format!("/org/{ACME_ORG}")).await;
    assert_eq!(status, Status::Forbidden, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a member"),
        "{body}"
    );
    let (status, orgs) = get_json(&bob, "/orgs").await;
    assert_eq!(status, Status::Ok, "{orgs}");
    assert_eq!(orgs, json!({}), "bob has no organization");
}

// ---- 4. Userinfo ---------------------------------------------------------------------

#[rocket::async_test]
async fn userinfo_has_custom_data_and_organization_data_and_is_fetched_once_with_fetch_user_info() {
    let provider = provider().await;
    let (client, browser) = signed_in_app(&provider, ALICE).await;

    let (status, info) = get_json(&client, "/userinfo").await;
    assert_eq!(status, Status::Ok, "{info}");
    assert_eq!(info["sub"], json!(ALICE_SUB));
    assert_eq!(info["custom_data"], json!({"plan": "pro"}));
    assert_eq!(
        info["organization_data"],
        json!([{"id": "org_acme", "name": "Acme", "description": "Acme Corporation"}])
    );
    assert_eq!(info["email"], json!("alice@example.com"));
    // Without fetch_user_info, `/` does not carry it.
    let (_, home) = get_json(&client, "/").await;
    assert!(home["user_info"].is_null(), "{home}");

    // With fetch_user_info = true: fetched once at sign-in, then served from the session.
    let mut logto = table(&provider);
    logto["fetch_user_info"] = json!(true);
    let client = app::client(logto).await;
    provider.reset_stats().await;
    sign_in(&client, &browser, ALICE).await;
    assert_eq!(
        count(&provider.stats().await, "/userinfo_requests"),
        1,
        "fetched at sign-in"
    );

    let (status, home) = get_json(&client, "/").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(home["user_info"]["sub"], json!(ALICE_SUB), "{home}");
    assert_eq!(
        home["user_info"]["custom_data"],
        json!({"plan": "pro"}),
        "{home}"
    );
    assert_eq!(
        home["user_info"]["organization_data"][0]["id"],
        json!("org_acme"),
        "{home}"
    );
    for _ in 0..3 {
        let (status, home) = get_json(&client, "/").await;
        assert_eq!(status, Status::Ok);
        assert_eq!(home["user_info"]["custom_data"], json!({"plan": "pro"}));
        let (status, info) = get_json(&client, "/userinfo").await;
        assert_eq!(status, Status::Ok, "{info}");
        assert_eq!(info["custom_data"], json!({"plan": "pro"}));
    }
    let stats = provider.stats().await;
    assert_eq!(
        count(&stats, "/userinfo_requests"),
        1,
        "no userinfo request after sign-in: {stats}"
    );
}

// ---- 5. Refresh written back ---------------------------------------------------------

#[rocket::async_test]
async fn refreshed_token_is_written_back_in_the_same_response_and_then_served_from_the_cookie() {
    let provider = provider().await;
    let (client, _) = signed_in_app(&provider, ALICE).await;

    provider.set_access_token_ttl(SHORT_TTL_SECS).await;
    let (status, a) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "{a}");
    let a_expires = a["expires_at"].as_i64().unwrap();
    assert!(
        a_expires <= now() + SHORT_TTL_SECS as i64 && a_expires < now() + REFRESH_MARGIN_SECS,
        "{a}"
    );
    provider.set_access_token_ttl(3600).await;

    let before = refreshes_for(&provider, SHOPPING).await;
    let response = client
        .get("/shopping")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Ok);
    let lines = set_cookies(&response);
    let b: Value = serde_json::from_str(&response.into_string().await.unwrap()).unwrap();
    assert_ne!(
        b["access_token"], a["access_token"],
        "a token within the margin is refreshed"
    );
    assert!(b["expires_at"].as_i64().unwrap() > now() + 3000, "{b}");
    assert_eq!(
        refreshes_for(&provider, SHOPPING).await,
        before + 1,
        "exactly one more refresh"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("logto_session=") && !l.contains("Max-Age=0")),
        "the refreshed session is written back in the same response: {lines:?}"
    );

    let response = client
        .get("/shopping")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Ok);
    let lines = set_cookies(&response);
    let c: Value = serde_json::from_str(&response.into_string().await.unwrap()).unwrap();
    assert_eq!(
        c["access_token"], b["access_token"],
        "B is served from the cookie"
    );
    assert_eq!(
        refreshes_for(&provider, SHOPPING).await,
        before + 1,
        "no new refresh"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("logto_session")),
        "nothing to write back: {lines:?}"
    );
    assert!(provider.grant_valid(ALICE_SUB).await);
}

// ---- 6. Concurrent refreshes of one browser ------------------------------------------

#[rocket::async_test]
async fn concurrent_requests_with_the_same_stale_cookies_share_one_refresh_and_keep_the_grant() {
    let provider = provider().await;
    let client = Arc::new(untracked(table(&provider)).await);
    let browser = ProviderBrowser::new();
    let mut jar = sign_in_untracked(&client, &browser, ALICE).await;

    // A cached shopping token that needs refreshing on its next use.
    provider.set_access_token_ttl(SHORT_TTL_SECS).await;
    let (status, a) = browse(&client, &mut jar, "/shopping").await;
    assert_eq!(status, Status::Ok, "{a}");
    provider.set_access_token_ttl(3600).await;
    let old = jar.clone();
    let old_refresh_count = refreshes(&provider).await;

    // The same cookies, N requests at once.
    let barrier = Arc::new(Barrier::new(CONCURRENT_REQUESTS));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENT_REQUESTS {
        let (client, barrier, jar) = (client.clone(), barrier.clone(), old.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            get_with(&client, &jar, "/shopping").await
        });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.expect("request task"));
    }
    let refresh_calls = refreshes(&provider).await - old_refresh_count;
    println!(
        "concurrency: {CONCURRENT_REQUESTS} concurrent /shopping requests with the same stale cookies \
         -> {refresh_calls} refresh-token request(s) at the provider"
    );

    let mut tokens = Vec::new();
    for (status, lines, body) in &results {
        assert_eq!(*status, Status::Ok, "{body}");
        tokens.push(
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("logto_session=") && !l.contains("Max-Age=0")),
            "each response writes the refreshed session back: {lines:?}"
        );
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "all requests got the same fresh token"
    );
    assert_ne!(
        json!(tokens[0]),
        a["access_token"],
        "the token was refreshed"
    );
    assert_eq!(
        refresh_calls, 1,
        "exactly one refresh-token request for {CONCURRENT_REQUESTS} requests"
    );
    assert!(
        provider.grant_valid(ALICE_SUB).await,
        "the grant survives the parallel requests"
    );

    // The newest cookies carry the rotated refresh token: they can refresh again.
    let mut newest = old.clone();
    newest.absorb(&results.last().unwrap().1);
    let (status, store) = browse(&client, &mut newest, &token_path(STORE)).await;
    assert_eq!(
        status,
        Status::Ok,
        "the newest cookies can still refresh: {store}"
    );
    assert_eq!(store["claims"]["aud"], json!(STORE));
    assert_eq!(refreshes(&provider).await - old_refresh_count, 2);
    assert!(provider.grant_valid(ALICE_SUB).await);

    // The old cookies (with the rotated-out refresh token) follow the rotation in memory.
    let before_replay = refreshes(&provider).await;
    let (status, lines, replay) = get_with(&client, &old, &token_path(STORE)).await;
    assert_eq!(
        status,
        Status::Ok,
        "replaying the old cookies must succeed: {replay}"
    );
    assert_eq!(replay["claims"]["aud"], json!(STORE));
    assert!(
        provider.grant_valid(ALICE_SUB).await,
        "replaying old cookies must not revoke the grant"
    );
    assert_eq!(
        refreshes(&provider).await,
        before_replay,
        "the rotated-out refresh token is never sent again"
    );
    assert_eq!(
        replay["access_token"], store["access_token"],
        "served from the coordinator's result"
    );
    println!(
        "concurrency: replay of the pre-rotation cookies -> {} refresh-token request(s)",
        refreshes(&provider).await - before_replay
    );

    // The replaying browser now holds a live session too.
    let mut replayed = old.clone();
    replayed.absorb(&lines);
    let (status, body) = browse(&client, &mut replayed, &format!("/org/{ACME_ORG}")).await;
    assert_eq!(status, Status::Ok, "{body}");
    assert!(provider.grant_valid(ALICE_SUB).await);
}

// ---- 7. Several tabs -----------------------------------------------------------------

#[rocket::async_test]
async fn three_tabs_start_sign_in_and_complete_in_reverse_order() {
    let provider = provider().await;
    let client = client(table(&provider)).await;
    let browser = ProviderBrowser::new();

    let tabs = ["/tab-1", "/tab-2", "/tab-3"];
    let mut authorizes = Vec::new();
    for tab in tabs {
        authorizes.push(
            start_sign_in(
                &client,
                &format!("/logto/sign-in?return_to={}", encode(tab)),
            )
            .await,
        );
    }
    let states: Vec<String> = authorizes
        .iter()
        .map(|a| param(a, "state").unwrap())
        .collect();
    assert!(states[0] != states[1] && states[1] != states[2] && states[0] != states[2]);

    for i in (0..tabs.len()).rev() {
        let callback = browser.sign_in(&authorizes[i], ALICE.0, ALICE.1).await;
        assert_eq!(param(&callback, "state"), Some(states[i].clone()));
        let response = client.get(path_and_query(&callback)).dispatch().await;
        let status = response.status();
        let location = response.headers().get_one("Location").map(str::to_string);
        let body = response.into_string().await.unwrap_or_default();
        assert_eq!(status, Status::SeeOther, "tab {}: {body}", i + 1);
        assert_eq!(
            location.as_deref(),
            Some(tabs[i]),
            "tab {} returns to its own page",
            i + 1
        );
        let (status, me) = get_json(&client, "/me").await;
        assert_eq!(status, Status::Ok, "{me}");
        assert_eq!(me["sub"], json!(ALICE_SUB));
    }
    assert!(
        !client
            .cookies()
            .iter()
            .any(|c| c.name().starts_with("logto_tx_")),
        "every transaction cookie is spent"
    );
    let (status, token) = get_json(&client, &token_path(SHOPPING)).await;
    assert_eq!(status, Status::Ok, "{token}");
}

// ---- 8. Session size -----------------------------------------------------------------

#[rocket::async_test]
async fn session_cookies_with_three_tokens_stay_within_browser_limits() {
    let provider = provider().await;
    let client = untracked(table(&provider)).await;
    let browser = ProviderBrowser::new();
    let mut jar = sign_in_untracked(&client, &browser, ALICE).await;
    let after_sign_in = jar.session_header_bytes();

    for path in [
        token_path(SHOPPING),
        token_path(STORE),
        format!("/org/{ACME_ORG}"),
    ] {
        let (status, body) = browse(&client, &mut jar, &path).await;
        assert_eq!(status, Status::Ok, "{path}: {body}");
    }
    assert_eq!(refreshes(&provider).await, 3);

    let bytes = jar.session_header_bytes();
    let names = jar.session_names();
    let longest = jar.seen.iter().map(String::len).max().unwrap_or(0);
    println!(
        "session size: Cookie header of the session {bytes} bytes in {} cookie(s) {names:?} \
         (after sign-in alone: {after_sign_in} bytes); longest Set-Cookie line {longest} bytes",
        names.len()
    );
    for line in &jar.seen {
        assert!(
            line.len() <= 4096,
            "a Set-Cookie line of {} bytes: {}",
            line.len(),
            &line[..80.min(line.len())]
        );
    }
    assert!(
        bytes > after_sign_in,
        "the three tokens are kept in the session"
    );

    // All three tokens are in the cookies: asking again refreshes nothing.
    for path in [
        token_path(SHOPPING),
        token_path(STORE),
        format!("/org/{ACME_ORG}"),
    ] {
        let (status, body) = browse(&client, &mut jar, &path).await;
        assert_eq!(status, Status::Ok, "{path}: {body}");
    }
    assert_eq!(
        refreshes(&provider).await,
        3,
        "all three tokens were served from the cookies"
    );
}

/// Issue 21: 90 KB of compressible custom data in the userinfo answer, with
/// `fetch_user_info`: a few kilobytes once compressed (within the cookies' budget), over
/// the 64 KiB a session cookie may hold before compression. Written whole, it signed the
/// user in and the very next request out; it is left out of the session and fetched on
/// demand, and the user stays signed in.
#[rocket::async_test]
async fn ninety_kb_of_compressible_userinfo_is_left_out_and_the_user_stays_signed_in() {
    let provider = provider().await;
    let notes = "All work and no play makes Jack a dull boy. ".repeat(2_100);
    assert!(notes.len() > 90_000);
    provider
        .set_custom_data(BOB_SUB, json!({ "notes": notes }))
        .await;
    let mut logto = table(&provider);
    logto["fetch_user_info"] = json!(true);
    let client = app::client(logto).await;
    sign_in(&client, &ProviderBrowser::new(), BOB).await;
    let cookie_bytes: usize = client
        .cookies()
        .iter()
        .filter(|c| c.name().starts_with("logto_session"))
        .map(|c| c.name().len() + 1 + c.value().len())
        .sum();
    assert!(cookie_bytes > 0, "a session cookie was set");
    assert_eq!(
        count(&provider.stats().await, "/userinfo_requests"),
        1,
        "fetched at sign-in"
    );

    for _ in 0..2 {
        let (status, home) = get_json(&client, "/").await;
        assert_eq!(status, Status::Ok);
        assert_eq!(home["authenticated"], json!(true), "signed out: {home}");
        assert_eq!(home["sub"], json!(BOB_SUB), "{home}");
        assert!(
            home["user_info"].is_null(),
            "left out of the session: {home}"
        );
    }
    // Fetched on demand, the whole of it.
    let (status, info) = get_json(&client, "/userinfo").await;
    assert_eq!(status, Status::Ok, "{info}");
    assert_eq!(info["sub"], json!(BOB_SUB));
    assert_eq!(info["custom_data"]["notes"], json!(notes));
    assert_eq!(count(&provider.stats().await, "/userinfo_requests"), 2);
    let (status, me) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Ok, "still signed in: {me}");
    assert_eq!(me["sub"], json!(BOB_SUB));
    println!(
        "userinfo with {} bytes of custom data: session cookies {cookie_bytes} bytes, user info left out",
        notes.len()
    );
}

// ---- Found while testing ---------------------------------------------------------------

#[rocket::async_test]
async fn concurrent_force_refreshes_of_one_session_all_succeed() {
    let provider = provider().await;
    let client = Arc::new(untracked(table(&provider)).await);
    let browser = ProviderBrowser::new();
    let jar = sign_in_untracked(&client, &browser, ALICE).await;
    let before = refreshes(&provider).await;

    let barrier = Arc::new(Barrier::new(CONCURRENT_REQUESTS));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENT_REQUESTS {
        let (client, barrier, jar) = (client.clone(), barrier.clone(), jar.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            get_with(&client, &jar, "/force-refresh").await
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let (status, _, _) = result.expect("request task");
        *statuses.entry(status.code).or_insert(0) += 1;
    }
    let calls = refreshes(&provider).await - before;
    println!("force-refresh: {CONCURRENT_REQUESTS} concurrent requests -> statuses {statuses:?}, {calls} refresh-token request(s)");
    assert!(provider.grant_valid(ALICE_SUB).await);
    assert_eq!(
        statuses.get(&200),
        Some(&CONCURRENT_REQUESTS),
        "every forced refresh succeeds: {statuses:?}"
    );
}
