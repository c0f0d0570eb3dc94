//! Any `Authorization` header gets an RFC 6750 answer from the API guards (401 with a
//! `Bearer` challenge, or 404), never a panic or a 500. Its own test binary: its flood of
//! refused tokens uses up the process's rate limit of refusal log lines, which
//! `tests/bearer_logging.rs` reads.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use fake_provider::{FakeProvider, Options};
use proptest::prelude::*;
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::local::blocking::Client;
use rocket::{get, routes};
use rocket_logto::{BearerToken, Logto, OrganizationToken, Resource};
use serde_json::json;

const SHOPPING: &str = "https://shopping.example.com/api";

struct Shopping;
impl Resource for Shopping {
    const INDICATOR: &'static str = SHOPPING;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read"];
}

#[get("/api/whoami")]
fn whoami(token: BearerToken<Shopping>) -> String {
    token.sub().to_string()
}

#[get("/api/organizations/<organization_id>/whoami")]
fn org(organization_id: &str, token: OrganizationToken) -> String {
    format!("{organization_id} {}", token.sub())
}

fn app(fp: &FakeProvider) -> Client {
    let figment = Figment::from(rocket::Config::debug_default())
        .merge((
            "logto",
            json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] }),
        ))
        .merge(("log_level", "off"));
    Client::untracked(
        rocket::custom(figment)
            .attach(Logto::fairing())
            .register("/", Logto::catchers())
            .mount("/", routes![whoami, org]),
    )
    .unwrap()
}

fn authorization() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        "(?i:bearer)( {0,3})[A-Za-z0-9._~+/=-]{0,300}",
        "Bearer [A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,200}",
        "Bearer eyJ[A-Za-z0-9_-]{0,80}\\.eyJ[A-Za-z0-9_-]{0,80}\\.\\PC{0,40}",
    ]
}

#[test]
fn any_authorization_header_gets_an_rfc_6750_answer() {
    let fp = FakeProvider::start_blocking(Options::default());
    let client = app(&fp);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let strategy = (authorization(), "[a-z0-9%_.-]{1,20}");
    runner
        .run(&strategy, |(value, org)| {
            for path in [
                "/api/whoami".to_string(),
                format!("/api/organizations/{org}/whoami"),
            ] {
                let response = client
                    .get(path.clone())
                    .header(Header::new("Authorization", value.clone()))
                    .dispatch();
                let status = response.status();
                prop_assert!(
                    matches!(status.code, 401 | 404),
                    "{path} {value:?}: {status}"
                );
                if status.code == 401 {
                    let challenge = response
                        .headers()
                        .get_one("WWW-Authenticate")
                        .unwrap_or_default()
                        .to_string();
                    prop_assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
                    prop_assert!(!challenge.contains(['\r', '\n']), "{challenge}");
                }
            }
            Ok(())
        })
        .unwrap();
}
