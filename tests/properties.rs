//! Property tests: arbitrary cookies, callback query strings and return paths never panic,
//! never answer 500 and never produce a signed-in session.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use app::{logto_table, rocket_with, SECRET_KEY};
use fake_provider::{FakeProvider, Options};
use proptest::prelude::*;
use rocket::http::{Accept, Cookie, Status};
use rocket::local::blocking::{Client, LocalResponse};

fn app(fp: &FakeProvider) -> Client {
    Client::untracked(rocket_with(
        logto_table(&fp.endpoint, fp.client_id(), fp.client_secret()),
        SECRET_KEY,
    ))
    .unwrap()
}

/// The same app served on https: its cookies carry the `__Host-` prefix.
fn https_app(fp: &FakeProvider) -> Client {
    let mut table = logto_table(&fp.endpoint, fp.client_id(), fp.client_secret());
    table["base_url"] = "https://app.example".into();
    Client::untracked(rocket_with(table, SECRET_KEY)).unwrap()
}

fn starts_a_session(response: &LocalResponse<'_>) -> bool {
    response.headers().get("Set-Cookie").any(|l| {
        (l.starts_with("logto_session") || l.starts_with("__Host-logto_session"))
            && !l.contains("Max-Age=0")
    })
}

/// Every name of cookie the crate reads, plain and `__Host-`.
fn cookie_name() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("logto_session".to_string()),
        "logto_session_[1-7]",
        "logto_tx_[A-Za-z0-9_-]{16}",
        Just("logto_tx_AAAAAAAAAAAAAAAA".to_string()),
    ];
    (base, any::<bool>())
        .prop_map(|(name, host)| if host { format!("__Host-{name}") } else { name })
}

/// Cookie values as they reach the crate: arbitrary Unicode (what percent-decoding of
/// any bytes a browser or attacker sends can give), with multibyte characters placed at
/// every offset, and plausible base64 with a character swapped in.
fn cookie_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        ".{0,64}",
        (
            "[A-Za-z0-9+/=]{0,80}",
            "[\\u{80}-\\u{10FFFF}]",
            "[A-Za-z0-9]{0,40}"
        )
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_cookie_values_mean_signed_out(
        values in proptest::collection::vec(cookie_value(), 1..4),
        names in proptest::collection::vec(cookie_name(), 1..4),
        https in any::<bool>(),
    ) {
        let fp = FakeProvider::start_blocking(Options::default());
        let client = if https { https_app(&fp) } else { app(&fp) };
        for path in ["/", "/me", "/shopping", "/logto/sign-out", "/logto/sign-in-callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x"] {
            let mut request = client.get(path).header(Accept::JSON);
            for (name, value) in names.iter().zip(&values) {
                // Rocket percent-decodes a cookie value into any UTF-8 text: that text is
                // what the crate sees (a value that is not UTF-8 once decoded is dropped).
                request = request.cookie(Cookie::new(name.to_string(), value.to_string()));
            }
            let response = request.dispatch();
            prop_assert_ne!(response.status(), Status::InternalServerError);
            prop_assert!(!starts_a_session(&response));
            if path == "/" {
                let body: serde_json::Value = response.into_json().unwrap();
                prop_assert_eq!(&body["authenticated"], false);
            }
        }
    }

    #[test]
    fn arbitrary_callback_queries_never_sign_in(query in "[ -~]{0,200}", keep_state in any::<bool>()) {
        let fp = FakeProvider::start_blocking(Options::default());
        let client = app(&fp);
        let response = client.get("/logto/sign-in").dispatch();
        let authorize = response.headers().get_one("Location").unwrap().to_string();
        let cookies: Vec<Cookie<'static>> = response.cookies().iter().map(|c| c.clone().into_owned()).collect();
        let state = url::Url::parse(&authorize).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        // Arbitrary text, optionally after the real state (so the transaction is found).
        let q = if keep_state { format!("state={state}&{query}") } else { query.clone() };
        let response = client.get(format!("/logto/sign-in-callback?{q}")).cookies(cookies).dispatch();
        prop_assert_ne!(response.status(), Status::InternalServerError);
        prop_assert!(!starts_a_session(&response), "signed in by {q:?}");
    }

    #[test]
    fn arbitrary_return_paths_are_refused_or_stay_on_this_site(raw in "[ -~]{0,120}|/[ -~]{0,120}") {
        let fp = FakeProvider::start_blocking(Options::default());
        let client = app(&fp);
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let response = client.get(format!("/logto/sign-in?return_to={encoded}")).dispatch();
        prop_assert!(response.status() == Status::SeeOther || response.status() == Status::BadRequest, "{}", response.status());
        if response.status() == Status::SeeOther {
            // Accepted: complete the sign-in and check where the browser lands.
            let authorize = response.headers().get_one("Location").unwrap().to_string();
            let cookies: Vec<Cookie<'static>> = response.cookies().iter().map(|c| c.clone().into_owned()).collect();
            let callback = fp.authorize(&authorize, "user-1");
            let url = url::Url::parse(&callback).unwrap();
            let response = client.get(format!("{}?{}", url.path(), url.query().unwrap())).cookies(cookies).dispatch();
            let location = response.headers().get_one("Location").unwrap().to_string();
            prop_assert!(location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'), "{location:?}");
            let base = url::Url::parse("http://localhost:8000/").unwrap();
            prop_assert_eq!(base.join(&location).unwrap().origin(), base.origin());
        }
    }
}
