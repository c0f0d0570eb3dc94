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

/// Every `LOGTO_*` variable, with the values of a developer's shell pointed at a live
/// tenant (issue 27, item 1): none of them may reach an app built on a figment of its own.
const LIVE_ENV: [(&str, &str); 6] = [
    ("LOGTO_ENDPOINT", "https://tenant-live.logto.app"),
    ("LOGTO_APP_ID", "live-app-id"),
    ("LOGTO_APP_SECRET", "live-app-secret"),
    ("LOGTO_BASE_URL", "https://shop.example.com"),
    ("LOGTO_REDIS_URL", "redis://cache.example.com:6379"),
    ("LOGTO_SESSION_STORE", "redis"),
];
/// Set on the copies of this test binary that run under [`LIVE_ENV`].
const LIVE_ENV_RUN: &str = "ROCKET_LOGTO_TEST_LIVE_ENV";

/// This test binary again, with [`LIVE_ENV`] (and nothing else of the caller's `LOGTO_*`),
/// running `args`; its output when every test it ran passed.
fn under_live_env(args: &[&str]) -> String {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    for (var, _) in LIVE_ENV {
        command.env_remove(var);
    }
    let output = command
        .args(args)
        .envs(LIVE_ENV)
        .env(LIVE_ENV_RUN, "1")
        .output()
        .expect("the test binary runs again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "under LOGTO_* of a live tenant:\n{text}"
    );
    text
}

/// The number of tests a run passed, from libtest's summary line.
fn passed(output: &str) -> usize {
    output
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line: {output}"))
}

/// Issue 27, item 1: the helpers' tests (here, every other test of this file) pass with
/// every `LOGTO_*` variable set to a live-looking value. Before, the variables won over
/// the test figment: `iss` became the tenant's, and `LOGTO_REDIS_URL` sent the app to a
/// Redis that does not exist.
#[test]
fn the_helpers_ignore_a_live_logto_environment() {
    if std::env::var_os(LIVE_ENV_RUN).is_some() {
        return; // the copy that runs the others
    }
    let output = under_live_env(&[
        "--skip",
        "the_helpers_ignore_a_live_logto_environment",
        "--skip",
        "a_rocket_build_app_reads_the_logto_environment",
    ]);
    assert!(passed(&output) >= 5, "{output}");
}

/// ... while an app on `rocket::build()` still reads them, and so does one whose own figment
/// merges `LogtoEnv`. Runs in a copy of this binary, under [`LIVE_ENV`] without Redis (an
/// ignited app would connect to it).
#[test]
fn a_rocket_build_app_reads_the_logto_environment() {
    if std::env::var_os(LIVE_ENV_RUN).is_none() {
        let output = under_live_env(&["--exact", "a_rocket_build_app_reads_the_logto_environment"]);
        assert_eq!(passed(&output), 1, "{output}");
        return;
    }
    use rocket_logto::{Logto, LogtoEnv};
    std::env::remove_var("LOGTO_REDIS_URL");
    std::env::remove_var("LOGTO_SESSION_STORE");
    let endpoint_of = |rocket: rocket::Rocket<rocket::Build>| {
        let rocket = rocket::execute(rocket.attach(Logto::fairing()).ignite()).expect("ignites");
        let config = Logto::config(&rocket).expect("the fairing's configuration");
        (config.endpoint().to_string(), config.app_id().to_string())
    };
    // rocket::build(): the repository's Rocket.toml (the sample's), with the variables on top.
    assert_eq!(
        endpoint_of(rocket::build()),
        (
            "https://tenant-live.logto.app/".into(),
            "live-app-id".into()
        )
    );
    let custom = rocket_logto::testing::figment();
    assert_eq!(
        endpoint_of(rocket::custom(custom.clone().merge(LogtoEnv::new()))),
        (
            "https://tenant-live.logto.app/".into(),
            "live-app-id".into()
        )
    );
    assert_eq!(
        endpoint_of(rocket::custom(custom)).0,
        "http://127.0.0.1:9/",
        "the test figment reads no variable"
    );
}
