//! SECURITY.md "Tokens never appear in URLs or logs", and issue 5's logging: sign-in,
//! sign-out, refresh and refusals are logged with a user id, never a token or secret.
//! Its own test binary: it installs a capturing logger before Rocket can install its own.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::sync::Mutex;

use app::*;
use fake_flow::*;
use fake_provider::FakeProvider;
use rocket::http::{Cookie, Status};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("rocket_logto") {
            LINES
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger, once per process, before any test makes a Rocket.
fn install_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("the first logger of this process");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The captured lines that mention `word` (the tests of this binary run in parallel and
/// each uses its own user id).
fn lines_with(word: &str) -> Vec<(log::Level, String)> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, line)| line.contains(word))
        .cloned()
        .collect()
}

#[rocket::async_test]
async fn sign_in_refresh_refusal_and_sign_out_are_logged_without_tokens_or_secrets() {
    install_capture();

    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (_, token) = get_json(&client, "/shopping").await;
    let (_, userinfo) = get_json(&client, "/userinfo").await;
    assert_eq!(userinfo["sub"], "user-1");
    // A refusal: a callback nobody started.
    assert_eq!(
        client
            .get("/logto/sign-in-callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x")
            .dispatch()
            .await
            .status(),
        Status::BadRequest
    );
    // Log injection: an error answer whose `error` forges a log line, and whose
    // description would flood the log.
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    let state = param(&authorize, "state").expect("state");
    let flood = "x".repeat(5000);
    let response = client
        .get(format!(
            "/logto/sign-in-callback?state={state}&error=access_denied%0D%0AINFO%20logto%3A%20user%20admin%20signed%20in&error_description={flood}"
        ))
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadRequest);
    drop(response);
    // A tampered cookie.
    let other = untracked(table(&fp)).await;
    other
        .get("/")
        .cookie(Cookie::new("logto_session", "tampered"))
        .dispatch()
        .await;
    let response = client.get("/logto/sign-out").dispatch().await;
    let end_session = location(&response);
    drop(response);

    let mut secrets = vec![
        fp.client_secret().to_string(),
        token["access_token"].as_str().unwrap().to_string(),
    ];
    assert_eq!(
        param(&end_session, "id_token_hint"),
        None,
        "no token in a URL"
    );
    for request in fp.requests() {
        for key in ["code", "code_verifier", "refresh_token", "token"] {
            if let Some(value) = request.form_value(key) {
                secrets.push(value.to_string());
            }
        }
        if let Some(auth) = request.header("authorization") {
            secrets.push(auth.split(' ').nth(1).unwrap_or_default().to_string());
        }
    }
    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() >= 8, "collected {} secrets", secrets.len());

    let lines = LINES.lock().unwrap().clone();
    for (_, line) in &lines {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a token or secret reached the log: {line}"
            );
        }
    }
    for (_, line) in &lines {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "a value from the request broke a log line: {line:?}"
        );
        assert!(
            line.len() < 1000,
            "an unbounded value reached the log: {} bytes",
            line.len()
        );
    }
    assert!(
        has_line(&lines, &["callback refused", "access_denied\\r\\nINFO"]),
        "the forged line is logged escaped: {lines:#?}"
    );
    let has = |level: log::Level, words: &[&str]| {
        lines
            .iter()
            .any(|(l, line)| *l == level && words.iter().all(|w| line.contains(w)))
    };
    assert!(
        has(log::Level::Info, &["signed in", "user-1"]),
        "{lines:#?}"
    );
    assert!(
        has(log::Level::Info, &["refreshed", "user-1"]),
        "{lines:#?}"
    );
    assert!(has(log::Level::Warn, &["callback refused"]), "{lines:#?}");
    assert!(
        has(log::Level::Info, &["session cookie refused"]),
        "{lines:#?}"
    );
    assert!(
        has(log::Level::Info, &["signed out", "user-1"]),
        "{lines:#?}"
    );
}

fn has_line(lines: &[(log::Level, String)], words: &[&str]) -> bool {
    lines
        .iter()
        .any(|(_, line)| words.iter().all(|w| line.contains(w)))
}

/// Issue 21, item 7: one refresh shared by 20 parallel requests is one call to Logto and
/// one info line; the requests that joined it log at debug only.
#[rocket::async_test]
async fn a_refresh_shared_by_parallel_requests_is_logged_once_at_info() {
    install_capture();
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-parallel").await;
    fp.clear_requests();
    // Each needs a token for the shopping API, which the sign-in did not fetch.
    let requests = (0..20).map(|_| async {
        let response = client.get("/shopping").dispatch().await;
        response.status()
    });
    let statuses = rocket::futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == Status::Ok), "{statuses:?}");
    let refreshes = fp
        .requests_to("/token")
        .iter()
        .filter(|r| r.form_value("grant_type") == Some("refresh_token"))
        .count();
    assert_eq!(refreshes, 1, "one call to Logto for the 20 requests");
    let lines = lines_with("user-parallel");
    let info: Vec<_> = lines
        .iter()
        .filter(|(level, line)| *level == log::Level::Info && line.contains("refreshed tokens"))
        .collect();
    assert_eq!(info.len(), 1, "one info line per call to Logto: {lines:#?}");
}

/// Issue 21, item 7: the back-channel logout line names the user, and Logto's session id
/// only by a short hash.
#[rocket::async_test]
async fn the_back_channel_logout_line_does_not_show_the_session_id() {
    install_capture();
    let fp = FakeProvider::start().await;
    let sid = "sid-of-logto-3Kq9ZrT0vYx7WbNcLmPa";
    fp.set(|b| b.id_token_patch = Some(serde_json::json!({ "sid": sid })));
    let client = signed_in(&fp, table(&fp), "user-backchannel").await;
    let token = fp.sign_jwt(
        serde_json::json!({}),
        fp.logout_token_claims(Some("user-backchannel"), Some(sid)),
    );
    let body = format!(
        "logout_token={}",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    let response = client
        .post("/logto/backchannel-logout")
        .header(rocket::http::ContentType::Form)
        .body(body)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Ok);
    assert_eq!(signed_in_sub(&client).await, None, "the logout took effect");
    let lines = lines_with("user-backchannel");
    let logout: Vec<_> = lines
        .iter()
        .filter(|(_, line)| line.contains("back-channel logout of user user-backchannel"))
        .collect();
    assert_eq!(logout.len(), 1, "{lines:#?}");
    // Not in full, nor any 8 characters of it.
    let chars: Vec<char> = sid.chars().collect();
    for piece in chars.windows(8) {
        let piece: String = piece.iter().collect();
        assert!(
            !logout[0].1.contains(&piece),
            "the session id reached the log: {}",
            logout[0].1
        );
    }
}

/// Issue 27: a second `on_sign_in` on one fairing says that it replaces the first; and a
/// `LOGTO_*` variable that a figment of the app's own does not read is named, never shown.
#[rocket::async_test]
async fn a_second_sign_in_hook_and_unread_logto_variables_are_logged() {
    install_capture();
    let count = |word: &str| lines_with(word).len();
    let before = count("`on_sign_in` was set twice");
    let _fairing = rocket_logto::Logto::fairing()
        .on_sign_in(|_, _| Box::pin(async { Ok(rocket_logto::SignInDecision::Continue) }))
        .on_sign_in(|_, _| Box::pin(async { Ok(rocket_logto::SignInDecision::Continue) }));
    assert_eq!(count("`on_sign_in` was set twice"), before + 1);

    // Only this binary's apps see it, and they run on figments of their own.
    std::env::set_var("LOGTO_APP_SECRET", "unread-env-secret-5Tq8");
    let fp = FakeProvider::start().await;
    let client =
        rocket::local::asynchronous::Client::untracked(rocket_with(table(&fp), SECRET_KEY))
            .await
            .expect("valid rocket");
    std::env::remove_var("LOGTO_APP_SECRET");
    drop(client);
    let lines = lines_with("set in the environment but not read");
    assert!(
        lines.iter().any(|(level, line)| *level == log::Level::Warn
            && line.contains("LOGTO_APP_SECRET")
            && line.contains("LogtoEnv")),
        "{lines:#?}"
    );
    assert!(
        LINES
            .lock()
            .unwrap()
            .iter()
            .all(|(_, line)| !line.contains("unread-env-secret-5Tq8")),
        "the value reached the log"
    );
}
