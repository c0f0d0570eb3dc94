//! The API guards log why they refused a token, never the token. Its own test binary: it
//! installs a capturing logger before Rocket can install its own. (That any `Authorization`
//! header gets an answer is `tests/bearer_headers.rs`: its flood of refusals would use up
//! this process's rate limit of refusal lines, which the test here reads.)

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::sync::Mutex;

use fake_provider::{FakeProvider, Options};
use rocket::figment::Figment;
use rocket::http::{Header, Status};
use rocket::local::blocking::Client;
use rocket::{get, routes};
use rocket_logto::{BearerToken, Logto, OrganizationToken, Resource};
use serde_json::json;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The lines at `warn` and above.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("rocket_logto") {
            LINES.lock().unwrap().push(record.args().to_string());
            if record.level() <= log::Level::Warn {
                WARNINGS.lock().unwrap().push(record.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

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
        .merge(("log_level", "debug"));
    Client::untracked(
        rocket::custom(figment)
            .attach(Logto::fairing())
            .register("/", Logto::catchers())
            .mount("/", routes![whoami, org]),
    )
    .unwrap()
}

fn claims(fp: &FakeProvider, patch: serde_json::Value) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({
        "iss": fp.issuer(), "aud": SHOPPING, "sub": "user-1", "client_id": "web-app",
        "scope": "shopping:read", "iat": now, "exp": now + 3600, "jti": format!("j-{now}-{patch}"),
    });
    for (k, v) in patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// Installs the capturing logger, once per process, before either test makes a Rocket.
fn install_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("the first logger of this process");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

#[test]
fn refusals_are_logged_with_their_reason_and_without_the_token() {
    install_capture();
    let fp = FakeProvider::start_blocking(Options::default());
    let client = app(&fp);
    let send = |token: &str| {
        client
            .get("/api/whoami")
            .header(Header::new("Authorization", format!("Bearer {token}")))
            .dispatch()
            .status()
    };
    let good = fp.sign_jwt(json!({ "typ": "at+jwt" }), claims(&fp, json!({})));
    let expired = fp.sign_jwt(json!({ "typ": "at+jwt" }), claims(&fp, json!({ "exp": 1 })));
    let no_scope = fp.sign_jwt(
        json!({ "typ": "at+jwt" }),
        claims(&fp, json!({ "scope": "x" })),
    );
    // Another last character of the signature (never the same one: that would be `good`).
    let last = if good.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &good[..good.len() - 1]);
    assert_eq!(send(&good), Status::Ok);
    assert_eq!(send(&expired), Status::Unauthorized);
    assert_eq!(send(&no_scope), Status::Forbidden);
    assert_ne!(send(&forged), Status::Ok);
    assert_eq!(send("opaque-token-value"), Status::Unauthorized);

    let lines = LINES.lock().unwrap().clone();
    let refusals: Vec<&String> = lines.iter().filter(|l| l.contains("refused")).collect();
    assert!(
        refusals.iter().any(|l| l.contains("it has expired")),
        "{lines:#?}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("lacks the scopes: shopping:read")),
        "{lines:#?}"
    );
    assert!(refusals.iter().any(|l| l.contains("opaque")), "{lines:#?}");
    for token in [&good, &expired, &no_scope, &forged] {
        let signature = token.rsplit('.').next().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for line in &lines {
            assert!(
                !line.contains(signature) && !line.contains(payload),
                "a token reached the log: {line}"
            );
        }
    }
    assert!(
        !lines.iter().any(|l| l.contains("opaque-token-value")),
        "{lines:#?}"
    );
}

/// Issue 21, item 6: the gate of test mode is `debug_assertions`, which a release profile
/// can turn on, so every launch that trusts the test key says so at `warn`, and why it was
/// allowed.
#[cfg(feature = "testing")]
#[test]
fn a_launch_that_trusts_the_test_key_logs_a_warning() {
    install_capture();
    let figment = rocket_logto::testing::figment().merge(("logto.resources", [SHOPPING]));
    let client = Client::untracked(
        rocket::custom(figment)
            .attach(Logto::fairing().trust_test_key())
            .mount("/", routes![whoami]),
    )
    .unwrap();
    drop(client);
    let lines = WARNINGS.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("TEST MODE")
            && l.contains("debug_assertions")
            && l.contains("never run in production")),
        "the launch warns that the test key is trusted, and why: {lines:#?}"
    );
}
