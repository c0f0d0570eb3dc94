//! Issue 14, the `testing` module: an app's route tests sign a user in with chosen claims
//! and tokens, with no provider and no network (the configured endpoint is a closed port).

#[path = "support/app.rs"]
mod app;

use app::*;
use rocket::http::{Accept, Status};
use rocket::local::asynchronous::Client;
use rocket_logto::testing::{SignedInRequest, TestUser};
use serde_json::{json, Value};

/// The test app, pointed at a port nothing listens on: any call to Logto would fail.
async fn offline_app(base_url: &str) -> Client {
    let mut table = logto_table("http://127.0.0.1:9", "test-app", "test-secret");
    table["base_url"] = json!(base_url);
    Client::untracked(rocket_with(table, SECRET_KEY))
        .await
        .expect("valid rocket")
}

async fn json_of(client: &Client, path: &str, user: Option<&TestUser>) -> (Status, Value) {
    let mut request = client.get(path.to_string()).header(Accept::JSON);
    if let Some(user) = user {
        request = request.signed_in_as(user);
    }
    let response = request.dispatch().await;
    let status = response.status();
    let body = response.into_string().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[rocket::async_test]
async fn a_test_user_is_signed_in_with_the_chosen_claims() {
    for base_url in ["http://localhost:8000", "https://app.example"] {
        let client = offline_app(base_url).await;
        let alice = TestUser::new("alice")
            .claim("email", "alice@example.com")
            .claim("roles", json!(["admin"]));
        let (status, me) = json_of(&client, "/me", Some(&alice)).await;
        assert_eq!(status, Status::Ok, "{base_url}: {me}");
        assert_eq!(me["sub"], "alice");
        assert_eq!(me["email"], "alice@example.com");
        assert_eq!(me["roles"], json!(["admin"]));
        assert_eq!(me["iss"], "http://127.0.0.1:9/oidc");
        let (_, home) = json_of(&client, "/", Some(&alice)).await;
        assert_eq!(home["authenticated"], true, "{base_url}");
        // Without the helper: signed out.
        let (status, _) = json_of(&client, "/me", None).await;
        assert_eq!(status, Status::Unauthorized, "{base_url}");
    }
}

#[rocket::async_test]
async fn resource_and_organization_tokens_are_served_from_the_test_session() {
    let client = offline_app("http://localhost:8000").await;
    let bob = TestUser::new("bob")
        .resource_token::<Shopping>(&["shopping:read"])
        .organization_token("org_acme", &["read:reports"]);
    let (status, token) = json_of(&client, "/shopping", Some(&bob)).await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(token["scopes"], json!(["shopping:read"]));
    assert_eq!(token["claims"]["aud"], SHOPPING);
    assert_eq!(token["claims"]["sub"], "bob");

    let (status, token) = json_of(&client, "/org/org_acme", Some(&bob)).await;
    assert_eq!(status, Status::Ok, "{token}");
    assert_eq!(token["claims"]["aud"], "urn:logto:organization:org_acme");
    let (_, me) = json_of(&client, "/me", Some(&bob)).await;
    assert_eq!(me["organizations"], json!(["org_acme"]));

    // A route that needs a scope the token lacks: 403, decided without Logto.
    let (status, _) = json_of(&client, "/shopping-write", Some(&bob)).await;
    assert_eq!(status, Status::Forbidden);
}

#[rocket::async_test]
async fn the_kept_user_info_is_served_with_fetch_user_info() {
    let mut table = logto_table("http://127.0.0.1:9", "test-app", "test-secret");
    table["fetch_user_info"] = json!(true);
    let client = Client::untracked(rocket_with(table, SECRET_KEY))
        .await
        .unwrap();
    let carol = TestUser::new("carol").user_info(json!({ "custom_data": { "plan": "pro" } }));
    let (_, home) = json_of(&client, "/", Some(&carol)).await;
    assert_eq!(home["user_info"]["custom_data"]["plan"], "pro", "{home}");
    let (status, info) = json_of(&client, "/userinfo", Some(&carol)).await;
    assert_eq!(status, Status::Ok, "{info}");
    assert_eq!(info["sub"], "carol");
}

#[test]
fn the_blocking_client_works_too() {
    let table = logto_table("http://127.0.0.1:9", "test-app", "test-secret");
    let client =
        rocket::local::blocking::Client::untracked(rocket_with(table, SECRET_KEY)).unwrap();
    let response = client
        .get("/me")
        .header(Accept::JSON)
        .signed_in_as(&TestUser::new("dave"))
        .dispatch();
    assert_eq!(response.status(), Status::Ok);
}

/// The `secret_key` the crate published in `testing::figment` before issue 21: whoever read
/// the crate's source could forge the sessions of an app that ran with it.
const PUBLISHED_KEY: &str =
    "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk5h3aKyqBqU6oaBUrW3Kv8vbE9VUvVPbCFyVThOkrrYw==";
/// Set on the copies of this test binary that only print their key.
const PRINT_KEY: &str = "ROCKET_LOGTO_TEST_PRINT_FIGMENT_KEY";

fn figment_key() -> String {
    rocket_logto::testing::figment()
        .extract_inner::<String>("secret_key")
        .expect("testing::figment sets a secret_key")
}

/// Issue 21, item 6: `testing::figment`'s `secret_key` is random per process (and stable
/// within one), never a constant of the crate. Two more runs of this very test binary
/// print theirs.
#[test]
fn the_test_figment_key_is_random_per_process() {
    let key = figment_key();
    if std::env::var_os(PRINT_KEY).is_some() {
        // On a line of its own: the harness has started the line of the test.
        println!("\nFIGMENT_KEY={key}");
        return;
    }
    assert_ne!(key, PUBLISHED_KEY, "the key published in the crate");
    assert_eq!(key, figment_key(), "one key for the whole process");
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &key)
        .expect("base64, as Rocket reads a secret_key");
    assert_eq!(bytes.len(), 64);
    // Rocket accepts it (a wrong key would fail the launch).
    rocket::execute(rocket::custom(rocket_logto::testing::figment()).ignite())
        .expect("Rocket takes the key");

    let other_process = || {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_test_figment_key_is_random_per_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PRINT_KEY, "1")
            .output()
            .expect("the test binary runs again");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("FIGMENT_KEY="))
            .unwrap_or_else(|| panic!("no key printed: {text}"))
            .to_string()
    };
    let (a, b) = (other_process(), other_process());
    assert_ne!(a, key, "another process has another key");
    assert_ne!(a, b, "each process has its own key");
    assert_ne!(a, PUBLISHED_KEY);
}
