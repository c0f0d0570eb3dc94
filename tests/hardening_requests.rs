//! Issue 9 (outside review), the items reachable from any request: cookie values that
//! split a character, return paths with dot segments, `__Host-` cookie names, sign-out
//! CSRF and an oversized userinfo answer. (No token in the end-session URL:
//! `security_fake_provider.rs`, `real_provider_flow.rs`.)

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/html_form.rs"]
mod html_form;
#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use app::*;
use fake_flow::*;
use fake_provider::FakeProvider;
use html_form::Form;
use rocket::http::{Accept, Cookie, Header, Status};
use rocket::local::asynchronous::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- 1. Multibyte cookie values: an answer always comes back ---------------------------

/// Serves the test app on a loopback port, as users deploy it: a real socket, so that a
/// panic outside Rocket's handler shows as a dropped connection.
async fn serve(fp: &FakeProvider) -> (u16, rocket::Shutdown) {
    let port = process::free_port();
    let rocket = rocket_with(table(fp), SECRET_KEY);
    let figment = rocket
        .figment()
        .clone()
        .merge(("address", "127.0.0.1"))
        .merge(("port", port));
    let rocket = rocket
        .configure(figment)
        .ignite()
        .await
        .expect("the app ignites");
    let shutdown = rocket.shutdown();
    tokio::spawn(rocket.launch());
    // Ready when it accepts a connection (bounded: 120 s, a ceiling for a broken app, not
    // for a busy runner).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never listened"
        );
        tokio::task::yield_now().await;
    }
    (port, shutdown)
}

/// Sends one raw HTTP/1.1 request and returns the whole answer (empty when the
/// connection was dropped without one).
async fn raw_request(port: u16, path: &str, cookie_header: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:8000\r\nAccept: text/html\r\nCookie: {cookie_header}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    // A ceiling: what is tested is that an answer comes, not how fast.
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 60 s for {path}");
    String::from_utf8_lossy(&answer).into_owned()
}

#[rocket::async_test]
async fn cookie_values_that_split_a_character_get_an_answer_not_a_dropped_connection() {
    let fp = FakeProvider::start().await;
    let (port, shutdown) = serve(&fp).await;
    // Rocket percent-decodes cookie values: `%C3%A9` arrives as one two-byte character,
    // placed where the session cache used to cut the value by byte index.
    let value = format!("aaaaaaaaaa%C3%A9{}", "b".repeat(23));
    let names = [
        "logto_session",
        "logto_session_1",
        "logto_session_7",
        "logto_tx_AAAAAAAAAAAAAAAA",
    ];
    for path in [
        "/",
        "/me",
        "/shopping",
        "/userinfo",
        "/logto/sign-out",
        "/logto/sign-in",
        "/logto/sign-in-callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x",
    ] {
        for name in names {
            let answer = raw_request(port, path, &format!("{name}={value}")).await;
            let status_line = answer.lines().next().unwrap_or_default();
            assert!(
                status_line.starts_with("HTTP/1.1 "),
                "{path} with {name}: the connection was dropped without an answer"
            );
            assert!(
                !status_line.starts_with("HTTP/1.1 500"),
                "{path} with {name}: {status_line}"
            );
        }
    }
    shutdown.notify();
}

// ---- 2. Return paths with dot segments -------------------------------------------------

#[rocket::async_test]
async fn return_paths_that_normalise_to_another_host_are_refused_up_front() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    for raw in [
        "/..//evil.example",
        "/.//evil.example",
        "/%2e%2e//evil.example",
        "/a/../..//evil.example/path",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let response = client
            .get(format!("/logto/sign-in?return_to={encoded}"))
            .header(Accept::JSON)
            .dispatch()
            .await;
        assert_eq!(response.status(), Status::BadRequest, "{raw}");
        assert!(
            set_cookies(&response).is_empty(),
            "{raw}: no sign-in may start"
        );
        let body = response.into_string().await.unwrap_or_default();
        assert!(body.contains("return_to"), "{raw}: {body}");
    }
    assert_eq!(fp.authorize_requests().len(), 0);
}

// ---- 10. `__Host-` cookie names on https -----------------------------------------------

fn https_table(fp: &FakeProvider) -> serde_json::Value {
    let mut t = table(fp);
    merge(&mut t, &json!({ "base_url": "https://app.example" }));
    t
}

#[rocket::async_test]
async fn https_apps_name_their_cookies_with_the_host_prefix() {
    let fp = FakeProvider::start().await;
    let client = client(https_table(&fp)).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    let tx = set_cookies(&response);
    assert!(
        tx.len() == 1 && tx[0].starts_with("__Host-logto_tx_"),
        "{tx:?}"
    );
    let authorize = location(&response);
    drop(response);
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let lines = set_cookies(&response);
    let session: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("logto_session") && !l.contains("Max-Age=0"))
        .collect();
    assert!(!session.is_empty(), "{lines:?}");
    for line in session {
        assert!(line.starts_with("__Host-logto_session"), "{line}");
        assert!(line.contains("Secure") && line.contains("Path=/"), "{line}");
        assert!(!line.to_ascii_lowercase().contains("domain="), "{line}");
    }
    // The transaction cookie's removal is `Secure` too, or browsers would ignore it.
    assert!(
        lines.iter().any(|l| l.starts_with("__Host-logto_tx_")
            && l.contains("Max-Age=0")
            && l.contains("Secure")),
        "{lines:?}"
    );
    drop(response);
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));
}

#[rocket::async_test]
async fn https_apps_ignore_a_session_planted_under_the_plain_name() {
    let fp = FakeProvider::start().await;
    // A valid session under the plain name (same secret key), as a sibling subdomain
    // could plant with `Domain=.example`: the attacker's own account, say.
    let http = signed_in(&fp, table(&fp), "attacker").await;
    let planted: Vec<Cookie<'static>> = http
        .cookies()
        .iter()
        .filter(|c| c.name().starts_with("logto_session"))
        .map(|c| c.clone().into_owned())
        .collect();
    assert!(!planted.is_empty());
    assert!(signed_in_with(http.get("/").cookies(planted.clone())).await);

    let https = untracked(https_table(&fp)).await;
    assert!(
        !signed_in_with(https.get("/").cookies(planted)).await,
        "an https app must only read __Host- cookies"
    );
}

#[rocket::async_test]
async fn http_apps_keep_plain_cookie_names() {
    let fp = FakeProvider::start().await;
    let client = app_for(&fp).await;
    let response = client.get("/logto/sign-in").dispatch().await;
    let lines = set_cookies(&response);
    assert!(
        lines.len() == 1 && lines[0].starts_with("logto_tx_") && !lines[0].contains("Secure"),
        "{lines:?}"
    );
}

// ---- 11. Sign-out CSRF ----------------------------------------------------------------

async fn still_signed_in(client: &Client) -> bool {
    signed_in_sub(client).await.is_some()
}

#[rocket::async_test]
async fn cross_site_sign_outs_ask_to_confirm_and_sign_nobody_out() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let cross_site = [
        vec![Header::new("Sec-Fetch-Site", "cross-site")],
        vec![Header::new("Origin", "https://evil.example")],
        vec![Header::new("Origin", "null")],
        vec![
            Header::new("Sec-Fetch-Site", "cross-site"),
            Header::new("Origin", "http://localhost:8000"),
        ],
    ];
    for headers in cross_site {
        for post in [false, true] {
            let mut request = if post {
                client.post("/logto/sign-out")
            } else {
                client.get("/logto/sign-out")
            };
            for h in &headers {
                request = request.header(h.clone());
            }
            let response = request.dispatch().await;
            let label = format!("{} {headers:?}", if post { "POST" } else { "GET" });
            assert_eq!(response.status(), Status::Ok, "{label}");
            assert!(
                set_cookies(&response).is_empty(),
                "{label}: no cookie change"
            );
            assert_eq!(
                response.headers().get_one("Cache-Control"),
                Some("no-store")
            );
            let body = response.into_string().await.unwrap_or_default();
            let form = Form::parse(&body).expect("a confirmation form");
            assert_eq!(form.action, "/logto/sign-out", "{label}");
            assert!(body.contains("method=\"post\""), "{label}: {body}");
            assert!(still_signed_in(&client).await, "{label}");
        }
    }
    assert!(fp.revoked_tokens().is_empty(), "nothing was revoked");
}

#[rocket::async_test]
async fn same_site_gets_and_posts_sign_out() {
    for (method, headers) in [
        ("GET", vec![Header::new("Sec-Fetch-Site", "same-origin")]),
        ("GET", vec![Header::new("Sec-Fetch-Site", "same-site")]),
        ("GET", vec![Header::new("Sec-Fetch-Site", "none")]),
        ("GET", vec![]),
        (
            "POST",
            vec![
                Header::new("Sec-Fetch-Site", "same-origin"),
                Header::new("Origin", "http://localhost:8000"),
            ],
        ),
        ("POST", vec![Header::new("Origin", "http://localhost:8000")]),
    ] {
        let fp = FakeProvider::start().await;
        let client = signed_in(&fp, table(&fp), "user-1").await;
        let mut request = if method == "POST" {
            client.post("/logto/sign-out")
        } else {
            client.get("/logto/sign-out")
        };
        for h in &headers {
            request = request.header(h.clone());
        }
        let response = request.dispatch().await;
        let label = format!("{method} {headers:?}");
        assert_eq!(response.status(), Status::SeeOther, "{label}");
        assert!(
            set_cookies(&response)
                .iter()
                .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")),
            "{label}"
        );
        drop(response);
        assert!(!still_signed_in(&client).await, "{label}");
        assert_eq!(fp.revoked_tokens().len(), 1, "{label}");
    }
}

// ---- 13. An oversized userinfo answer ---------------------------------------------------

#[rocket::async_test]
async fn a_userinfo_answer_too_large_for_cookies_is_left_out_and_fetched_on_demand() {
    let fp = FakeProvider::start().await;
    // About 40 kB that deflate cannot shrink much: well past the 8 cookies of a session.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: String = (0..40_000)
        .map(|_| {
            // xorshift64: letters that repeat no pattern deflate could find.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    fp.set(|b| b.userinfo_patch = Some(json!({ "custom_data": { "notes": noise } })));
    let mut t = table(&fp);
    merge(&mut t, &json!({ "fetch_user_info": true }));
    let client = client(t).await;
    let (status, body, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::SeeOther, "sign-in must not fail: {body}");
    let (_, home) = get_json(&client, "/").await;
    assert_eq!(home["sub"], "user-1");
    assert!(
        home["user_info"].is_null(),
        "the user info must be left out"
    );
    let before = fp.count("/me");
    let (status, info) = get_json(&client, "/userinfo").await;
    assert_eq!(status, Status::Ok, "{info}");
    assert_eq!(
        info["custom_data"]["notes"].as_str().map(str::len),
        Some(40_000)
    );
    assert_eq!(fp.count("/me"), before + 1, "fetched on demand");
}
