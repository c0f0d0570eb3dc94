//! Issue 25, part 2: tokens for the app itself (client credentials), against the real,
//! Logto-like provider (tests/provider: its machine-to-machine app `m2m-app`, whose roles
//! give `shopping:read` and the Management API's `all`). 50 concurrent requests make one
//! token request; a token about to expire is renewed; a wrong secret is a clear error that
//! never shows the secret; Logto down is a 503 with `Retry-After`; the Management API
//! answers the signed-in user's roles through `AppToken<ManagementApi>`. The same across
//! three instances with Redis: `tests/app_tokens_redis.rs`. Needs
//! `npm ci --prefix tests/provider` once.

#[path = "support/app.rs"]
mod app;
#[path = "support/process.rs"]
mod process;
#[path = "support/real_provider.rs"]
mod real_provider;

use app::*;
use real_provider::{ProviderBrowser, ProviderOptions, RealProvider, ALICE};
use rocket::futures::future::join_all;
use rocket::http::{Accept, Status};
use rocket::local::asynchronous::Client;
use rocket::serde::json::{json, Json, Value};
use rocket::{get, routes, State};
use rocket_logto::{AppToken, AppTokens, AuthenticatedUser, LogtoError, ManagementApi};

const M2M: (&str, &str) = ("m2m-app", "m2m-secret");

/// Through the guard.
#[get("/guard-token")]
fn guard_token(token: AppToken<MachineShopping>) -> Json<Value> {
    Json(json!({ "access_token": token.secret(), "scopes": token.scopes().collect::<Vec<_>>() }))
}

/// Logto's endpoint, for the Management API's URL.
struct Endpoint(String);

/// The sample's admin page in short: the signed-in user's roles, read through the
/// Management API with the app's token.
#[get("/my-roles")]
async fn my_roles(
    user: AuthenticatedUser<'_>,
    token: AppToken<ManagementApi>,
    endpoint: &State<Endpoint>,
) -> Result<Json<Value>, LogtoError> {
    let url = format!("{}/api/users/{}/roles", endpoint.0, user.id());
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token.secret())
        .send()
        .await
        .map_err(|e| LogtoError::bad_gateway(format!("the Management API: {e}")))?;
    let status = response.status().as_u16();
    let roles: Value = response
        .json()
        .await
        .map_err(|e| LogtoError::bad_gateway(format!("the Management API ({status}): {e}")))?;
    Ok(Json(json!({ "status": status, "roles": roles })))
}

fn table(endpoint: &str, secret: &str) -> Value {
    let mut t = logto_table(endpoint, "sample-app", "sample-secret");
    merge(
        &mut t,
        &json!({ "m2m_app_id": M2M.0, "m2m_app_secret": secret }),
    );
    t
}

async fn app(endpoint: &str, secret: &str) -> Client {
    let rocket = rocket_with(table(endpoint, secret), SECRET_KEY)
        .manage(Endpoint(endpoint.to_string()))
        .mount("/", routes![guard_token, my_roles]);
    Client::tracked(rocket).await.expect("valid rocket")
}

async fn client_credentials_requests(provider: &RealProvider) -> u64 {
    provider.stats().await["token_requests"]["client_credentials"]
        .as_u64()
        .unwrap_or_default()
}

async fn get(client: &Client, path: &str) -> (Status, Value) {
    get_json(client, path).await
}

/// 50 concurrent requests of the guard, and 50 of the managed state, make one token
/// request, and all get the same token, with the machine role's scope.
#[rocket::async_test]
async fn fifty_concurrent_requests_make_one_token_request() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = app(&provider.endpoint, M2M.1).await;
    // A slow Logto: every request arrives while the first is in flight.
    provider.set_token_delay(300).await;
    provider.reset_stats().await;
    let answers = join_all((0..50).map(|i| {
        let path = if i % 2 == 0 {
            "/guard-token"
        } else {
            "/app-token"
        };
        get(&client, path)
    }))
    .await;
    provider.set_token_delay(0).await;
    let tokens: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, Status::Ok, "{body}");
            body["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "one token for all");
    assert_eq!(client_credentials_requests(&provider).await, 1);
    assert_eq!(answers[0].1["scopes"], json!(["shopping:read"]));
    // Cached: no more requests.
    let (status, _) = get(&client, "/guard-token").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(client_credentials_requests(&provider).await, 1);
}

/// A token with less than the margin (60 s) of life left is renewed; a long-lived one is
/// kept.
#[rocket::async_test]
async fn an_expiring_token_is_renewed() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = app(&provider.endpoint, M2M.1).await;
    provider.set_access_token_ttl(30).await;
    provider.reset_stats().await;
    let (_, first) = get(&client, "/app-token").await;
    let (_, second) = get(&client, "/app-token").await;
    assert_eq!(client_credentials_requests(&provider).await, 2, "renewed");
    assert_ne!(first["access_token"], second["access_token"]);
    provider.set_access_token_ttl(3600).await;
    let (_, third) = get(&client, "/app-token").await;
    let (_, fourth) = get(&client, "/app-token").await;
    assert_eq!(client_credentials_requests(&provider).await, 3);
    assert_eq!(third["access_token"], fourth["access_token"], "cached");
}

/// A wrong secret: Logto refuses it (`invalid_client`), the error says which keys to
/// check, and neither the answer nor the error shows the secret.
#[rocket::async_test]
async fn a_wrong_secret_gives_a_clear_error_without_the_secret() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    const WRONG: &str = "wrong-s3cr3t-value";
    let client = app(&provider.endpoint, WRONG).await;
    let tokens = client.rocket().state::<AppTokens>().expect("managed");
    let error = tokens.token::<MachineShopping>().await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("invalid_client")
            && text.contains("m2m_app_id")
            && text.contains("m2m_app_secret"),
        "{text}"
    );
    assert!(!text.contains(WRONG) && !format!("{error:?}").contains(WRONG));
    assert_eq!(error.status(), Status::BadGateway);
    let response = client
        .get("/guard-token")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadGateway);
    let body = response.into_string().await.unwrap_or_default();
    assert!(!body.contains(WRONG), "{body}");
    assert!(!format!("{tokens:?}").contains(WRONG));
}

/// Logto cannot be reached: 503 with `Retry-After`, never a 500.
#[rocket::async_test]
async fn logto_down_is_503_with_retry_after() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = app(&format!("http://127.0.0.1:{port}"), M2M.1).await;
    for path in ["/guard-token", "/app-token"] {
        let response = client.get(path).header(Accept::JSON).dispatch().await;
        assert_eq!(response.status(), Status::ServiceUnavailable, "{path}");
        let retry = response
            .headers()
            .get_one("Retry-After")
            .map(str::to_string);
        assert!(
            retry.is_some_and(|s| s.parse::<u64>().is_ok()),
            "{path}: Retry-After"
        );
    }
}

/// The Management API (the test provider's `/api/users/:id/roles`) answers the signed-in
/// user's roles to the app's token for the configured `management_api_resource`.
#[rocket::async_test]
async fn the_management_api_answers_the_users_roles_to_the_apps_token() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = app(&provider.endpoint, M2M.1).await;
    let browser = ProviderBrowser::new();
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = browser.sign_in(&authorize, ALICE.0, ALICE.1).await;
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let (status, body) = get(&client, "/my-roles").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["status"], 200, "{body}");
    assert_eq!(body["roles"][0]["name"], "admin", "{body}");
    // Without a token the Management API refuses: the token is what opened it.
    let refused = reqwest::get(provider.url("/api/users/user_alice/roles"))
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
}

/// A route taking `AppToken` in an app without a machine-to-machine app does not launch.
#[rocket::async_test]
async fn app_token_without_m2m_credentials_stops_the_launch() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let t = logto_table(&provider.endpoint, "sample-app", "sample-secret");
    let rocket = rocket_with(t, SECRET_KEY).mount("/", routes![guard_token]);
    match Client::tracked(rocket).await {
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{e}"
        ),
        Ok(_) => panic!("AppToken without m2m_app_id must stop the launch"),
    }
}
