//! Memory stays bounded: thousands of distinct sessions signed in and refreshed through
//! the sample app, run as its own process, whose resident memory must level off once the
//! library's in-memory caches are full. The fake provider runs in this (test) process, so
//! its own bookkeeping does not count.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/process.rs"]
mod process;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fake_provider::{FakeProvider, Options};

const SESSIONS: usize = 2500;
const CHECKPOINT: usize = 500;
/// The caches are sized small so that they fill within the test.
const CACHE_ENTRIES: usize = 300;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One browser: sign in as `sub`, then get an API token (a refresh through the library).
async fn one_session(app: &str, fp: &FakeProvider, sub: &str) {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http
        .get(format!("{app}/logto/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let authorize = response.headers()["location"].to_str().unwrap().to_string();
    let callback = fp.authorize(&authorize, sub);
    let callback = callback.replace("http://localhost:", "http://127.0.0.1:");
    let response = http.get(callback).send().await.unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let response = http
        .get(format!("{app}/fetch-access-token"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_levels_off_across_thousands_of_refreshed_sessions() {
    let binary = process::example_binary("sample");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds examples first",
        binary.display()
    );
    let fp = Arc::new(
        FakeProvider::start_with(Options {
            client_id: "sample-app".into(),
            client_secret: "sample-secret".into(),
            ..Options::default()
        })
        .await,
    );
    let port = process::free_port();
    let base_url = format!("http://localhost:{port}");
    let app = process::Killed(Command::new(&binary)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_LOG_LEVEL", "off")
        .env(
            "ROCKET_LOGTO",
            format!(
                "{{refresh_cache_entries={CACHE_ENTRIES},spent_state_entries={CACHE_ENTRIES},session_cache_entries={CACHE_ENTRIES}}}"
            ),
        )
        .env("LOGTO_ENDPOINT", &fp.endpoint)
        .env("LOGTO_BASE_URL", &base_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sample app"));
    let pid = app.0.id();
    let app_url = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    // Ready when it answers; the ceiling only matters when the app is broken, not when a
    // shared runner is busy.
    let started = std::time::Instant::now();
    while probe.get(&app_url).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the sample app did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // readiness polling, bounded
    }

    let mut samples = vec![(0usize, rss_kib(pid))];
    let app_url = Arc::new(app_url);
    for batch in 0..SESSIONS / CHECKPOINT {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let (fp, app_url) = (fp.clone(), app_url.clone());
            tasks.spawn(async move {
                for i in (worker..CHECKPOINT).step_by(8) {
                    one_session(&app_url, &fp, &format!("user-{batch}-{i}")).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        samples.push(((batch + 1) * CHECKPOINT, rss_kib(pid)));
    }
    println!("sessions  app RSS (KiB)");
    for (n, rss) in &samples {
        println!("{n:>8}  {rss:>12}");
    }
    let (first_fill, last) = (samples[2].1, samples.last().unwrap().1);
    let growth_filling = first_fill.saturating_sub(samples[0].1);
    let growth_after = last.saturating_sub(first_fill);
    println!("growth while filling the caches (0..1000): {growth_filling} KiB; after (1000..{SESSIONS}): {growth_after} KiB");
    // A leak of even 1 KiB per session would add ~2000 KiB over the last 2000 sessions.
    assert!(growth_after < 1500, "memory keeps growing: {samples:?}");
    drop(app);
}
