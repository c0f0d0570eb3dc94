//! Issue 15, memory: the bytes one decoded session costs in the decoded-session cache,
//! measured on real sessions (signed in through the fake provider: ES384 ID token,
//! refresh token, userinfo token, an ES384 access token), and a heap that stays flat once
//! the cache is full. Prints the figures the crate docs' sizing rule is based on.

#[path = "support/app.rs"]
mod app;
#[path = "support/browser.rs"]
mod browser;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/heap.rs"]
mod heap;

use app::*;
use browser::Browser;
use fake_flow::*;
use fake_provider::FakeProvider;
use rocket::http::Status;
use serde_json::json;

const CACHE: usize = 400;

async fn browsers(
    client: &rocket::local::asynchronous::Client,
    fp: &FakeProvider,
    from: usize,
) -> Vec<Browser> {
    let mut browsers = Vec::with_capacity(CACHE);
    for i in from..from + CACHE {
        let mut b = Browser::signed_in(client, fp, &format!("user-{i:05}")).await;
        // A cached shopping token too, as the benchmark's session has.
        assert_eq!(b.browse(client, "/shopping").await.0, Status::Ok);
        browsers.push(b);
    }
    browsers
}

#[rocket::async_test]
async fn a_decoded_session_costs_a_few_kilobytes_and_a_full_cache_stays_flat() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["session_cache_entries"] = json!(CACHE);
    // Browsers sign in through one instance; another, with the same secret key and an
    // empty cache, serves the measured requests.
    let signing_in = untracked(logto.clone()).await;
    let first = browsers(&signing_in, &fp, 0).await;
    let second = browsers(&signing_in, &fp, CACHE).await;
    drop(signing_in);
    let client = untracked(logto).await;
    assert_eq!(first[0].status_of(&client, "/me").await, Status::Ok);
    let cookie_bytes: usize = first[0]
        .cookies()
        .iter()
        .map(|c| c.name().len() + c.value().len() + 1)
        .sum();

    // A session is cached at the second sight of its cookies, not the first: one request
    // per browser decodes each session and keeps only a fingerprint (a fixed table)...
    let before = heap::live();
    for b in &first {
        assert_eq!(b.status_of(&client, "/me").await, Status::Ok);
    }
    let seen_once = heap::live();
    // ... and two more each decode it into the cache. The browsers (their cookies) stay
    // alive throughout, so only what the app keeps is counted.
    for b in &first {
        for _ in 0..2 {
            assert_eq!(b.status_of(&client, "/me").await, Status::Ok);
        }
    }
    let full = heap::live();
    let per_session = (full - seen_once) / CACHE as i64;
    // As many again: every entry is replaced, none added.
    for b in &second {
        for _ in 0..2 {
            assert_eq!(b.status_of(&client, "/me").await, Status::Ok);
        }
    }
    let after = heap::live();
    println!(
        "decoded-session cache: {per_session} bytes per session ({cookie_bytes} bytes of cookies), \
         {CACHE} entries: {:.1} MiB; after {CACHE} more sessions: {:+} bytes",
        (full - seen_once) as f64 / 1048576.0,
        after - full
    );
    assert!(
        seen_once - before < 64 * 1024,
        "cookies seen once are not cached: the heap grew by {} bytes",
        seen_once - before
    );
    assert!(
        (1_000..16_000).contains(&per_session),
        "a decoded session costs {per_session} bytes"
    );
    assert!(
        (after - full).abs() < (full - seen_once) / 10,
        "a full cache must stay flat: {full} then {after}"
    );
}
