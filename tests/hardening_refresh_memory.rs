//! Issue 9, item 4, through the app: a signed-in browser that adds a changing junk session
//! chunk to every request makes the app decode its session and re-cache it under the same
//! key each time. The app's memory must stay flat, and the browser signed in (the junk is
//! not part of the session: its first chunk says how many it has).
//!
//! Its own test binary, with one test: it counts the whole process's heap, which other
//! tests running alongside would blur.

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
use rocket::http::Cookie;
use serde_json::json;

#[rocket::async_test]
async fn junk_session_chunks_keep_memory_flat_and_the_browser_signed_in() {
    const CACHE: usize = 8;
    const REQUESTS: usize = 4000;
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    logto["session_cache_entries"] = json!(CACHE);
    let client = untracked(logto).await;
    let browser = Browser::signed_in(&client, &fp, "user-1").await;
    // The chunk right after the session's last one is read with it, and so makes each
    // request miss the decoded-session cache; the last possible chunk is not read.
    let next = format!("{}_{}", browser.session_name(), browser.session_chunks());
    let last = format!("{}_7", browser.session_name());
    let signed_in_with_junk = |i: usize| {
        let request = client
            .get("/")
            .cookies(browser.cookies())
            .cookie(Cookie::new(next.clone(), format!("junk{i}")))
            .cookie(Cookie::new(last.clone(), format!("junk{i}")));
        signed_in_with(request)
    };

    // Warm up: fill the caches, and whatever Rocket sets up on first use.
    for i in 0..4 * CACHE {
        assert!(signed_in_with_junk(i).await, "request {i}");
    }
    let before = heap::live();
    for i in 0..REQUESTS {
        assert!(signed_in_with_junk(i).await, "request {i}");
    }
    let growth = heap::live() - before;
    println!("{REQUESTS} requests with junk session chunks: live heap {growth:+} bytes");
    // An unbounded record of the rewrites costs at least a key per request (tens of bytes).
    assert!(
        growth < REQUESTS as i64,
        "memory grows with junk requests: {growth:+} bytes after {REQUESTS}"
    );
    // The session as sent without junk still reads.
    assert!(signed_in_with(client.get("/").cookies(browser.cookies())).await);
}
