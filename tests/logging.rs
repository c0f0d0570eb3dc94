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

#[rocket::async_test]
async fn sign_in_refresh_refusal_and_sign_out_are_logged_without_tokens_or_secrets() {
    log::set_logger(&Capture).expect("first logger");
    log::set_max_level(log::LevelFilter::Trace);

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
