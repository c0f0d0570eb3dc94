//! Issue 27, item 3: the sign-in hook gets the request, so it reaches Rocket's state and a
//! `rocket_db_pools` database; its refusal is a 403 of its own that never loops back to
//! sign-in. Against the real, Logto-like provider (tests/provider). Needs
//! `npm ci --prefix tests/provider` once.

#[path = "support/app.rs"]
mod app;
#[path = "support/process.rs"]
mod process;
#[path = "support/real_provider.rs"]
mod real_provider;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use app::*;
use real_provider::{ProviderBrowser, ProviderOptions, RealProvider, ALICE, ALICE_SUB, BOB};
use rocket::http::Status;
use rocket::local::asynchronous::Client;
use rocket::serde::json::Json;
use rocket::{get, routes};
use rocket_db_pools::sqlx::{self, Row};
use rocket_logto::{AuthenticatedUser, Logto, ReturnPath, SignInDecision, SignInRefusal, SignedIn};

/// What the refusing hook says: markup, so that the page must escape it.
const REFUSAL: &str = "<b>Members & friends</b> only: ask for an invitation.";

/// Managed state the hook reaches through the request.
#[derive(Default)]
struct SignIns(AtomicUsize);

#[get("/me")]
fn me(user: AuthenticatedUser<'_>) -> Json<String> {
    Json(user.id().to_string())
}

/// The test app with the fairing `logto` (and its hook).
async fn app_with(provider: &RealProvider, logto: Logto) -> Client {
    let table = logto_table(&provider.endpoint, "sample-app", "sample-secret");
    let figment = rocket::figment::Figment::from(rocket::Config::debug_default())
        .merge(("logto", table))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"));
    let rocket = rocket::custom(figment)
        .manage(SignIns::default())
        .attach(logto)
        .register("/", Logto::catchers())
        .mount("/", routes![me]);
    Client::tracked(rocket).await.expect("valid rocket")
}

async fn provider() -> RealProvider {
    RealProvider::start(ProviderOptions {
        post_logout_redirect_uris: vec![format!("{BASE_URL}/")],
        ..ProviderOptions::default()
    })
    .await
}

/// The hook counts sign-ins in managed state (through the request) and sends Bob to a
/// welcome page; the sign-in goes on.
#[rocket::async_test]
async fn the_hook_reaches_managed_state_through_the_request_and_chooses_the_landing_page() {
    let provider = provider().await;
    for (user, landing) in [(ALICE, "/"), (BOB, "/welcome?first=1")] {
        let client = app_with(&provider, counting()).await;
        let browser = ProviderBrowser::new();
        let authorize = start_sign_in(&client, "/logto/sign-in").await;
        let callback = browser.sign_in(&authorize, user.0, user.1).await;
        let response = client.get(path_and_query(&callback)).dispatch().await;
        assert_eq!(response.status(), Status::SeeOther, "{}", user.0);
        assert_eq!(location(&response), landing, "{}", user.0);
        let count = client.rocket().state::<SignIns>().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "{}", user.0);
        let (status, _) = get_json(&client, "/me").await;
        assert_eq!(status, Status::Ok, "{} is signed in", user.0);
    }
}

/// The fairing whose hook counts sign-ins in managed state and lands Bob on a welcome page.
fn counting() -> Logto {
    Logto::fairing().on_sign_in(|user: SignedIn, request| {
        Box::pin(async move {
            let count = request.rocket().state::<SignIns>().expect("managed");
            count.0.fetch_add(1, Ordering::SeqCst);
            match user.claims.sub.as_str() {
                "user_bob" => Ok(SignInDecision::RedirectTo(
                    ReturnPath::parse("/welcome?first=1").expect("a relative path"),
                )),
                _ => Ok(SignInDecision::Continue),
            }
        })
    })
}

/// A refusal is 403 with the app's message, escaped in HTML; no session starts, the refresh
/// token is revoked, and nothing sends the browser back to sign-in (which would loop).
#[rocket::async_test]
async fn a_refusing_hook_gives_403_with_its_message_and_never_loops_to_sign_in() {
    let provider = provider().await;
    let refusing = || {
        Logto::fairing().on_sign_in(|_user: SignedIn, _request| {
            Box::pin(async move { Err(SignInRefusal::new(REFUSAL)) })
        })
    };
    // A browser (HTML).
    let client = app_with(&provider, refusing()).await;
    let browser = ProviderBrowser::new();
    let authorize = start_sign_in(&client, "/logto/sign-in?return_to=/me").await;
    let callback = browser.sign_in(&authorize, ALICE.0, ALICE.1).await;
    let response = client
        .get(path_and_query(&callback))
        .header(html_accept())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Forbidden);
    assert_eq!(response.headers().get_one("Location"), None, "no redirect");
    let html = response.into_string().await.unwrap_or_default();
    assert!(
        html.contains("&lt;b&gt;Members &amp; friends&lt;&#x2F;b&gt; only: ask for an invitation."),
        "the message, escaped: {html}"
    );
    assert!(!html.contains("<b>Members"), "unescaped: {html}");
    // Links are HTML-escaped (`/` as `&#x2F;`): look for either spelling.
    assert!(
        !html.contains("/logto/sign-in") && !html.contains("logto&#x2F;sign-in"),
        "no way back into the loop: {html}"
    );
    // No session: the protected page sends the browser to sign-in as for anyone signed out.
    let (status, _) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Unauthorized);
    assert!(
        !provider.grant_valid(ALICE_SUB).await,
        "the refresh token is revoked"
    );

    // An API client (JSON): the same refusal, as JSON.
    let client = app_with(&provider, refusing()).await;
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let callback = ProviderBrowser::new()
        .sign_in(&authorize, ALICE.0, ALICE.1)
        .await;
    let (status, body) = get_json(&client, &path_and_query(&callback)).await;
    assert_eq!(status, Status::Forbidden);
    assert!(body.to_string().contains("Members & friends"), "{body}");
}

// ---- The sample app: its users in SQLite ------------------------------------------------

/// The sample app (examples/sample, which `cargo test` builds before the tests; after a
/// change, `cargo build --all-features --example sample` before running this file alone),
/// run as its own process against the provider, with its users' database in a file of
/// this test.
struct Sample {
    _process: process::Killed,
    url: String,
    database: std::path::PathBuf,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_sample(provider: &RealProvider, port: u16) -> Sample {
    let dir = std::env::temp_dir().join(format!("rocket_logto-sample-users-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let database = dir.join("users.sqlite");
    let base_url = format!("http://localhost:{port}");
    let child = Command::new(process::example_binary("sample"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_LOG_LEVEL", "off")
        .env(
            "ROCKET_DATABASES",
            format!(
                "{{sample_users={{url=\"sqlite://{}\"}}}}",
                database.display()
            ),
        )
        .env("LOGTO_ENDPOINT", &provider.endpoint)
        .env("LOGTO_BASE_URL", &base_url)
        .env_remove("LOGTO_APP_ID")
        .env_remove("LOGTO_APP_SECRET")
        .env_remove("LOGTO_REDIS_URL")
        .env_remove("LOGTO_SESSION_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cargo test builds examples/sample first");
    let process = process::Killed(child);
    let url = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    let started = Instant::now();
    while probe.get(&url).send().await.is_err() {
        // A ceiling for a broken app, not for a busy runner: the poll ends when it answers.
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the sample app did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Sample {
        _process: process,
        url,
        database,
        _dir: TempDir(dir),
    }
}

/// Signs `user` in to the sample through its routes, as a browser would.
async fn sign_in_to_sample(sample: &Sample, user: (&str, &str)) {
    let app = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = app
        .get(format!("{}/logto/sign-in", sample.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let authorize = response.headers()["location"].to_str().unwrap().to_string();
    let callback = ProviderBrowser::new()
        .sign_in(&authorize, user.0, user.1)
        .await
        .replace("http://localhost:", "http://127.0.0.1:");
    let response = app.get(callback).send().await.unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let response = app
        .get(format!("{}/me", sample.url))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "signed in");
}

/// The sample's hook writes the user to its `rocket_db_pools` database (SQLite through
/// sqlx); the test reads the row back from the file, once per sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_app_keeps_its_users_in_sqlite_through_the_sign_in_hook() {
    let port = process::free_port();
    let provider = RealProvider::start(ProviderOptions {
        redirect_uris: vec![format!("http://localhost:{port}/logto/sign-in-callback")],
        post_logout_redirect_uris: vec![format!("http://localhost:{port}/")],
        ..ProviderOptions::default()
    })
    .await;
    let sample = start_sample(&provider, port).await;
    let read = || async {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", sample.database.display()))
            .await
            .expect("the sample's database file");
        let rows = sqlx::query("SELECT sub, email, sign_ins FROM users ORDER BY sub")
            .fetch_all(&db)
            .await
            .expect("the users table");
        let rows: Vec<(String, Option<String>, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        db.close().await;
        rows
    };
    assert_eq!(read().await, [], "no user before the first sign-in");
    sign_in_to_sample(&sample, ALICE).await;
    let rows = read().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, ALICE_SUB);
    assert!(
        rows[0].1.as_deref().is_some_and(|e| e.contains('@')),
        "{rows:?}"
    );
    assert_eq!(rows[0].2, 1);
    sign_in_to_sample(&sample, ALICE).await;
    assert_eq!(read().await[0].2, 2, "a second sign-in updates the record");
}
