//! Issue 23: a flood of what anyone can send (forged logout tokens, bad session cookies, bad
//! bearer tokens) does not flood the log: each event gets ten lines a minute, and the rest
//! are counted in `logto_log_lines_suppressed_total`. Its own test binary: it installs the
//! process's logger and metrics recorder before any Rocket.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::sync::Mutex;

use app::{logto_table, rocket_with, Shopping, SECRET_KEY};
use fake_provider::{FakeProvider, Options};
use metrics_exporter_prometheus::PrometheusBuilder;
use rocket::http::{ContentType, Cookie, Header, Status};
use rocket::local::asynchronous::Client;
use rocket::{get, routes};
use rocket_logto::BearerToken;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("rocket_logto") {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[get("/api/whoami")]
fn whoami(token: BearerToken<Shopping>) -> String {
    token.sub().to_string()
}

const FLOOD: usize = 200;

fn lines_with(word: &str) -> usize {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(word))
        .count()
}

/// The value of `name{event="<event>"}` in a Prometheus scrape (0 when absent).
fn suppressed(scrape: &str, event: &str) -> f64 {
    let series = format!("logto_log_lines_suppressed_total{{event=\"{event}\"}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[rocket::async_test]
async fn floods_of_forged_logout_tokens_bad_cookies_and_bad_bearer_tokens_get_ten_lines_each() {
    log::set_logger(&Capture).expect("the first logger of this process");
    log::set_max_level(log::LevelFilter::Trace);
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("the first recorder of this process");

    let fp = FakeProvider::start_with(Options::default()).await;
    let logto = logto_table(&fp.endpoint, "test-app", "test-secret");
    let client = Client::untracked(rocket_with(logto, SECRET_KEY).mount("/", routes![whoami]))
        .await
        .unwrap();

    for i in 0..FLOOD {
        let forged = client
            .post("/logto/backchannel-logout")
            .header(ContentType::Form)
            .body(format!(
                "logout_token=eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ4In0.forged{i}"
            ))
            .dispatch()
            .await;
        assert_eq!(forged.status(), Status::BadRequest);
        let cookie = client
            .get("/me")
            .cookie(Cookie::new("logto_session", format!("junk{i}")))
            .dispatch()
            .await;
        assert_eq!(cookie.status(), Status::Unauthorized);
        let bearer = client
            .get("/api/whoami")
            .header(Header::new(
                "Authorization",
                format!("Bearer not-a-jwt-{i}"),
            ))
            .dispatch()
            .await;
        assert_eq!(bearer.status(), Status::Unauthorized);
    }

    let scrape = metrics.render();
    for (line, event) in [
        ("back-channel logout refused", "backchannel_logout_refused"),
        ("session cookie refused", "session_refused"),
        ("bearer token refused", "bearer_refused"),
    ] {
        assert_eq!(lines_with(line), 10, "{line}: {:#?}", LINES.lock().unwrap());
        assert_eq!(
            suppressed(&scrape, event),
            (FLOOD - 10) as f64,
            "{event}:\n{scrape}"
        );
    }
    // Still counted one by one.
    assert!(
        scrape.contains("logto_sessions_refused_total{reason=\"unreadable\"} 200"),
        "{scrape}"
    );
}
