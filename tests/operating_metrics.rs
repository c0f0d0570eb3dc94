//! Issue 23, metrics in the sample app: built with `--features metrics` and run as its own
//! process (the `metrics` recorder is process-wide), it signs alice in against the real
//! provider; then 20 concurrent requests with the same cookies need a token that must be
//! refreshed, one bearer call goes to its API, and she signs out. Its `/metrics` must then
//! count exactly: one sign-in completed, one refresh grant, 19 joined refreshes, one bearer
//! verification and one sign-out. Its health routes answer too.

#[path = "support/app.rs"]
mod app;
#[path = "support/process.rs"]
mod process;
#[path = "support/real_provider.rs"]
mod real_provider;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use real_provider::{ProviderBrowser, ProviderOptions, RealProvider, ALICE};
use reqwest::cookie::CookieStore;
use reqwest::StatusCode;

const STORM: usize = 20;
/// The ceiling of the wait for the app to answer (a shared runner may be busy building).
const WAIT: Duration = Duration::from_secs(120);

/// One sample of a scrape: the metric's name, its labels and its value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (no escaped quotes in this crate's labels).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include `labels`.
fn count(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_counts_known_traffic_exactly() {
    let binary = process::build_example("sample", "metrics");
    let port = process::free_port();
    let base = format!("http://localhost:{port}");
    let provider = RealProvider::start(ProviderOptions {
        redirect_uris: vec![format!("{base}/logto/sign-in-callback")],
        post_logout_redirect_uris: vec![base.clone()],
        ..ProviderOptions::default()
    })
    .await;
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("operating_metrics-app.log");
    let out = std::fs::File::create(&log).unwrap();
    let _app = process::Killed(
        Command::new(&binary)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LOGTO_ENDPOINT", &provider.endpoint)
            .env("LOGTO_APP_ID", &provider.options.app_id)
            .env("LOGTO_APP_SECRET", &provider.options.app_secret)
            .env("LOGTO_BASE_URL", &base)
            .env("ROCKET_PORT", port.to_string())
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_LOG_LEVEL", "normal")
            .env("ROCKET_CLI_COLORS", "false")
            .env("ROCKET_SECRET_KEY", app::SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the sample app"),
    );
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match plain.get(format!("{base}/health/live")).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the sample app did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await; // polling for start-up, bounded
            }
        }
    }

    // One sign-in.
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let start = browser
        .get(format!("{base}/logto/sign-in"))
        .send()
        .await
        .unwrap();
    assert!(start.status().is_redirection(), "{}", start.status());
    let callback = ProviderBrowser::new()
        .sign_in(&location(&start), ALICE.0, ALICE.1)
        .await;
    let signed_in = browser.get(&callback).send().await.unwrap();
    assert!(
        signed_in.status().is_redirection(),
        "{}: {}",
        signed_in.status(),
        signed_in.text().await.unwrap_or_default()
    );
    let cookies = jar
        .cookies(&base.parse().unwrap())
        .expect("session cookies")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookies.contains("logto_session"), "{cookies}");

    // The refresh storm: the same cookies, a token that has to be fetched with the refresh
    // token, 20 requests at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(STORM));
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..STORM {
        let (plain, barrier, cookies, base) = (
            plain.clone(),
            barrier.clone(),
            cookies.clone(),
            base.clone(),
        );
        storm.spawn(async move {
            barrier.wait().await;
            let response = plain
                .get(format!("{base}/fetch-access-token"))
                .header("Cookie", cookies)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"].as_str().unwrap().to_string()
        });
    }
    let mut tokens = Vec::new();
    while let Some(token) = storm.join_next().await {
        tokens.push(token.unwrap());
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "one refresh for all"
    );

    // One bearer call to the sample's API.
    let api = plain
        .get(format!("{base}/api/whoami"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);

    // One sign-out.
    let out = browser
        .get(format!("{base}/logto/sign-out"))
        .send()
        .await
        .unwrap();
    assert!(out.status().is_redirection(), "{}", out.status());

    // Ready, and the scrape.
    let ready = plain
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let scrape = plain.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    assert!(scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = scrape.text().await.unwrap();
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("operating_metrics.prom");
    std::fs::write(&kept, &text).unwrap();
    println!("--- /metrics (also in {}) ---\n{text}", kept.display());

    let samples = parse(&text);
    let exactly = |name: &str, labels: &[(&str, &str)], n: f64| {
        assert_eq!(
            count(&samples, name, labels),
            n,
            "{name} {labels:?}:\n{text}"
        );
    };
    exactly("logto_sign_ins_started_total", &[], 1.0);
    exactly("logto_sign_ins_completed_total", &[], 1.0);
    exactly("logto_sign_ins_failed_total", &[], 0.0);
    exactly("logto_refresh_grants_total", &[], 1.0);
    exactly("logto_refresh_joined_total", &[("via", "process")], 19.0);
    exactly("logto_refresh_joined_total", &[], 19.0);
    exactly(
        "logto_bearer_verifications_total",
        &[("outcome", "ok")],
        1.0,
    );
    exactly("logto_bearer_verifications_total", &[], 1.0);
    exactly("logto_sign_outs_total", &[], 1.0);
    // The code exchange and the one refresh, both answered.
    exactly(
        "logto_provider_requests_total",
        &[("endpoint", "token"), ("outcome", "ok")],
        2.0,
    );
    exactly(
        "logto_provider_request_duration_seconds_count",
        &[("endpoint", "token")],
        2.0,
    );
    // Labels stay within their short lists: no user id, token or path.
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains("user_alice") && !value.contains('/') && value.len() < 40,
                "unbounded label {value:?} on {}",
                sample.name
            );
        }
    }
}
