//! Browser end-to-end tests: the sample app (`examples/sample`) signs a user in to the Logto-like
//! test provider (`tests/provider/server.mjs`) in a real headless Chromium, driven through
//! ChromeDriver (WebDriver) with `fantoccini`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`)
//! and `npm ci --prefix tests/provider`. Without Chromium or ChromeDriver the tests print why and
//! pass (skip), unless `CI` is set: then they fail.
//!
//! Every step is saved as a screenshot in `target/e2e-screenshots/NN-step.png`; the logs of the app
//! and of ChromeDriver go to `target/e2e-logs/`. The app runs on `localhost` and the provider on
//! `127.0.0.1`: two hosts for the browser, so their cookies never mix.
//!
//! Run: `cargo test --test browser_e2e -- --nocapture`.

#[path = "support/real_provider.rs"]
mod real_provider;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use real_provider::{ProviderOptions, RealProvider, ALICE, ALICE_SUB, SHOPPING_API};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest any one wait may take (a page to appear, a process to answer). Every wait
/// polls and ends as soon as what it waits for is there, so this ceiling only matters when
/// something is broken: generous, because these tests run on shared 2-core runners, where
/// a build next door once kept the provider from starting within 30 s.
const WAIT: Duration = Duration::from_secs(120);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// A fixed key for the app's private cookies (Rocket needs one outside debug builds).
const SECRET_KEY: &str =
    "hHRQHKyZS5mzlGy1qYUWb0efuuee4sva4avaI1LLhaI1L2AbAZpj/qZwpXimImY856rmec6kYH5fEgvXprh5Hw==";

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Sign in, use the tokens, sign out, all by clicking through the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_tokens_and_sign_out() {
    let Some(env) = Env::start("sign_in_tokens_and_sign_out", 1).await else {
        return;
    };
    let b = &env.browser;

    // 1. Signed out: the home page offers "Sign In".
    b.goto(&env.app.url("/")).await;
    let link = b
        .wait_for_element("the Sign In link on the home page", "#sign-in")
        .await;
    assert!(
        link.is_displayed().await.unwrap(),
        "the Sign In link is not visible"
    );
    assert_eq!(link.text().await.unwrap().trim(), "Sign In");
    b.shot("home-signed-out").await;

    // 2. Sign In leads to the provider's login form.
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    b.shot("provider-login-form").await;

    // 3. Log in as alice.
    b.fill_login_form(ALICE).await;
    b.shot("login-form-filled").await;
    b.click("#submit").await;

    // 4. Back home, signed in.
    let sub = b.wait_signed_in(&env.app).await;
    assert_eq!(sub, ALICE_SUB, "the provider's sub for alice");
    assert!(
        b.client.find(Locator::Css("#sign-out")).await.is_ok(),
        "no Sign Out link"
    );
    b.shot("home-signed-in").await;

    // 4b. The organization switcher fetches the chosen organization's token.
    b.wait_for_element("the organization switcher", "#org-select")
        .await
        .select_by_value("org_acme")
        .await
        .expect("choosing org_acme");
    b.click("#org-switch").await;
    let shown = b
        .wait_for("the organization token of org_acme", async || {
            let s = b.state().await?;
            (s.path() == "/" && s.text.contains("urn:logto:organization:org_acme"))
                .then_some(s.text)
        })
        .await;
    assert!(shown.contains("org_acme"), "{shown}");
    b.shot("home-organization-token").await;

    // 5. A token for the shopping API.
    b.goto(&env.app.url("/fetch-access-token")).await;
    let token = b.wait_for_json(&env.app, "/fetch-access-token").await;
    let aud = &token["claims"]["aud"];
    assert!(
        aud == SHOPPING_API
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == SHOPPING_API)),
        "the shopping token's aud is {aud}, not {SHOPPING_API}: {token}"
    );
    assert_eq!(
        token["claims"]["sub"], sub,
        "the shopping token's sub: {token}"
    );
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "no access_token: {token}"
    );
    b.shot("shopping-access-token").await;

    // 5b. The whole chain: that token, sent to the app's API as a bearer token.
    b.goto(&env.app.url("/call-api")).await;
    let called = b.wait_for_json(&env.app, "/call-api").await;
    assert_eq!(called["status"], 200, "the API refused the token: {called}");
    assert_eq!(
        called["answer"]["sub"], sub,
        "the API's verified claims: {called}"
    );
    b.shot("api-called-with-the-token").await;

    // 6. User info, with Logto's custom_data.
    b.goto(&env.app.url("/userinfo")).await;
    let info = b.wait_for_json(&env.app, "/userinfo").await;
    assert_eq!(info["sub"], sub, "userinfo sub: {info}");
    assert!(
        info.get("custom_data").is_some_and(Value::is_object),
        "userinfo has no custom_data: {info}"
    );
    assert_eq!(
        info["custom_data"]["plan"], "pro",
        "alice's custom_data: {info}"
    );
    b.shot("userinfo").await;

    // 7. Home again, then Sign Out: the provider asks to confirm.
    b.goto(&env.app.url("/")).await;
    assert_eq!(b.wait_signed_in(&env.app).await, sub);
    b.click("#sign-out").await;
    let confirm = r#"button[name="logout"][value="yes"]"#;
    b.wait_for(
        &format!("the sign-out confirmation of the provider ({confirm})"),
        async || {
            let s = b.state().await?;
            (s.origin() == env.provider.endpoint
                && b.client.find(Locator::Css(confirm)).await.is_ok())
            .then_some(())
        },
    )
    .await;
    b.shot("provider-sign-out-confirmation").await;

    // 8. Confirm: back on the app's home page, signed out.
    b.click(confirm).await;
    b.wait_signed_out(&env.app).await;
    b.shot("home-signed-out-again").await;

    // 9. The provider's session ended too: signing in asks for the password again.
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    b.shot("sign-in-again-asks-password").await;

    env.finish().await;
}

/// "Sign Up" opens the provider on its registration screen (`first_screen=register`), and
/// the error page is the app's, styled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_opens_the_registration_screen() {
    let Some(env) = Env::start("sign_up_opens_the_registration_screen", 61).await else {
        return;
    };
    let b = &env.browser;
    b.goto(&env.app.url("/")).await;
    b.click("#sign-up").await;
    b.wait_for("the provider's registration screen", async || {
        let s = b.state().await?;
        (s.origin() == env.provider.endpoint
            && b.client.find(Locator::Css("h1#register")).await.is_ok())
        .then_some(())
    })
    .await;
    b.shot("provider-registration-screen").await;
    b.fill_login_form(ALICE).await;
    b.click("#submit").await;
    assert_eq!(b.wait_signed_in(&env.app).await, ALICE_SUB);

    // A callback nobody started: the app's error page.
    b.goto(
        &env.app
            .url("/logto/sign-in-callback?state=AAAAAAAAAAAAAAAAAAAAAA&code=x"),
    )
    .await;
    b.wait_for_element("the error page", "h1#error").await;
    b.shot("error-page").await;
    env.finish().await;
}

/// A step-up: the sample's "Sensitive settings" page needs a sign-in from the last 5
/// minutes (`RecentSignIn`). Signed in 10 minutes ago, the click goes to the provider,
/// which asks for the password again, and lands on the page. Then the admin page lists
/// the user's roles through the Management API with the app's own token (`AppToken`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_page_asks_for_the_password_again() {
    let Some(env) = Env::start("a_sensitive_page_asks_for_the_password_again", 71).await else {
        return;
    };
    let b = &env.browser;
    // The provider backdates this sign-in by 10 minutes.
    env.provider.set_next_login_age(600).await;
    b.goto(&env.app.url("/")).await;
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    b.fill_login_form(ALICE).await;
    b.click("#submit").await;
    assert_eq!(b.wait_signed_in(&env.app).await, ALICE_SUB);

    b.click("#sensitive-settings").await;
    b.wait_for_login_form(&env.provider).await;
    b.shot("step-up-login-form").await;
    b.fill_login_form(ALICE).await;
    b.click("#submit").await;
    let ago = b
        .wait_for("the sensitive page", async || {
            let s = b.state().await?;
            (s.origin() == env.app.base && s.path() == "/sensitive" && s.ready == "complete")
                .then_some(())?;
            let shown = b.client.find(Locator::Css("#signed-in-ago")).await.ok()?;
            shown.text().await.ok()?.trim().parse::<i64>().ok()
        })
        .await;
    assert!(ago < 120, "a new sign-in, {ago} s ago");
    b.shot("sensitive-page").await;

    // The admin page: the user's roles, through the Management API with the app's token.
    b.goto(&env.app.url("/")).await;
    b.click("#admin-roles").await;
    let roles = b
        .wait_for("the admin page's roles", async || {
            let s = b.state().await?;
            (s.origin() == env.app.base && s.path() == "/admin/roles" && s.ready == "complete")
                .then_some(())?;
            b.client
                .find(Locator::Css("#roles"))
                .await
                .ok()?
                .text()
                .await
                .ok()
        })
        .await;
    assert!(roles.contains("admin"), "{roles}");
    b.shot("admin-roles").await;
    env.finish().await;
}

/// Two tabs start signing in before either finishes; both end signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_sign_in_at_once() {
    let Some(env) = Env::start("two_tabs_sign_in_at_once", 21).await else {
        return;
    };
    let b = &env.browser;

    // Tab 1 and tab 2 both show the provider's login form.
    let tab1 = b.client.window().await.unwrap();
    b.goto(&env.app.url("/")).await;
    b.wait_for_element("the Sign In link in tab 1", "#sign-in")
        .await;
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    let tab1_form = b.state().await.unwrap().url;
    b.shot("tab1-login-form").await;

    let tab2 = b.client.new_window(true).await.unwrap().handle;
    b.switch_to(&tab2).await;
    b.goto(&env.app.url("/")).await;
    b.wait_for_element("the Sign In link in tab 2", "#sign-in")
        .await;
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    let tab2_form = b.state().await.unwrap().url;
    assert_ne!(
        tab1_form, tab2_form,
        "both tabs got the same sign-in interaction"
    );
    b.shot("tab2-login-form").await;

    // Log in in tab 1.
    b.switch_to(&tab1).await;
    b.fill_login_form(ALICE).await;
    b.click("#submit").await;
    let sub1 = b.wait_signed_in(&env.app).await;
    assert_eq!(sub1, ALICE_SUB);
    b.shot("tab1-signed-in").await;

    // Then in tab 2: its form is still on screen, though the provider now has a session.
    b.switch_to(&tab2).await;
    if b.client.find(Locator::Css("#username")).await.is_ok() {
        b.fill_login_form(ALICE).await;
        b.click("#submit").await;
    }
    let sub2 = b.wait_signed_in(&env.app).await;
    assert_eq!(sub2, sub1);
    b.shot("tab2-signed-in").await;

    // Tab 1 is still signed in (tab 2's sign-in replaced the session, for the same user).
    b.switch_to(&tab1).await;
    b.client.refresh().await.unwrap();
    assert_eq!(b.wait_signed_in(&env.app).await, sub1);
    b.shot("tab1-still-signed-in").await;

    env.finish().await;
}

/// Back after signing in: Chromium returns to the last page before the redirects, which is the
/// provider's login form (the app's `/logto/sign-in` and `/logto/sign-in-callback` answer 303 and
/// never become history entries). What must never show is the crate's callback error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_button_after_sign_in_never_replays_the_callback() {
    let Some(env) = Env::start("back_button_after_sign_in_never_replays_the_callback", 41).await
    else {
        return;
    };
    let (sub, after_back) = sign_in_then_press_back(&env).await;
    let b = &env.browser;
    assert!(
        !after_back.text.contains("No sign-in is in progress"),
        "Back after sign-in shows the callback's error page: {after_back:#?}"
    );
    assert!(
        !after_back.path().ends_with("/sign-in-callback"),
        "Back after sign-in went to the callback URL: {after_back:#?}"
    );
    // Forward again: the app's home page, still signed in.
    b.client.forward().await.unwrap();
    assert_eq!(b.wait_signed_in(&env.app).await, sub);
    b.shot("forward-to-home").await;
    env.finish().await;
}

/// Back after signing in should bring the user to something useful: the sensible outcome is the
/// app's home page, still signed in.
///
/// Back reaches the provider's finished login page. The provider is set up as a Logto tenant
/// should be, with its "Unknown session redirect URL" pointing at the app, so it sends the
/// browser home (the crate's own routes only redirect, so they are not in the history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_button_after_sign_in_lands_home_signed_in() {
    let Some(env) = Env::start("back_button_after_sign_in_lands_home_signed_in", 51).await else {
        return;
    };
    let (sub, after_back) = sign_in_then_press_back(&env).await;
    let b = &env.browser;
    // The sensible outcome: the app's home page, signed in (possibly after a redirect) ...
    let home = b
        .wait_for_within(
            "the app's home page after Back",
            // The provider redirects home at once; the ceiling is for a busy runner.
            WAIT,
            async || {
                let s = b.state().await?;
                (s.origin() == env.app.base && s.path() == "/" && s.ready == "complete")
                    .then_some(s)
            },
        )
        .await;
    if let Some(home) = home {
        assert!(
            home.text.contains(&format!("Hello {sub}")),
            "after Back the home page is not signed in: {home:#?}"
        );
        b.shot("home-after-back").await;
    } else {
        // ... or at least a page with a link back to the app.
        let links: Value = b
            .client
            .execute("return [...document.links].map(a => a.href);", vec![])
            .await
            .unwrap();
        let to_app = links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|h| h.starts_with(&env.app.base));
        assert!(
            to_app,
            "after Back the browser shows neither the app's home page nor a link to it: {after_back:#?}"
        );
    }
    env.finish().await;
}

/// Signs alice in, presses Back, and returns her sub and the page Chromium settles on (printed).
async fn sign_in_then_press_back(env: &Env) -> (String, PageState) {
    let b = &env.browser;
    b.goto(&env.app.url("/")).await;
    b.wait_for_element("the Sign In link", "#sign-in").await;
    b.click("#sign-in").await;
    b.wait_for_login_form(&env.provider).await;
    b.fill_login_form(ALICE).await;
    b.click("#submit").await;
    let sub = b.wait_signed_in(&env.app).await;
    b.shot("signed-in-before-back").await;

    // Mark this document, press Back, and wait for another document to be fully loaded.
    b.client
        .execute("window.__e2eBeforeBack = true;", vec![])
        .await
        .unwrap();
    let history_length = b
        .client
        .execute("return history.length;", vec![])
        .await
        .unwrap();
    b.client.back().await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    let after_back = b
        .wait_for("another page after Back", async || {
            let s = b.state().await?;
            let line = format!("{} (status {}, title {:?})", s.url, s.status, s.title);
            if seen.last() != Some(&line) {
                seen.push(line);
            }
            (!s.marked && s.ready == "complete").then_some(s)
        })
        .await;
    println!(
        "[browser_e2e] {}: Back after sign-in (history length {history_length}) went through {seen:?}; \
         the page shows, with status {}:\n---\n{}\n---",
        env.name, after_back.status, after_back.text
    );
    b.shot("after-back").await;
    (sub, after_back)
}

// ---------------------------------------------------------------------------------------------
// The environment: provider, app, ChromeDriver and Chromium
// ---------------------------------------------------------------------------------------------

struct Env {
    name: &'static str,
    started: Instant,
    // Dropped in this order: the browser session first, the provider last.
    browser: Browser,
    driver: Driver,
    app: App,
    provider: RealProvider,
}

impl Env {
    /// Everything a test needs, or `None` (after saying why) when the browser is not installed
    /// and `CI` is not set.
    async fn start(name: &'static str, first_shot: u32) -> Option<Env> {
        let started = Instant::now();
        if !browser_installed(name) {
            return None;
        }
        let app_port = free_port();
        let app_base = format!("http://localhost:{app_port}");
        let provider = RealProvider::start(ProviderOptions {
            redirect_uris: vec![format!("{app_base}/logto/sign-in-callback")],
            post_logout_redirect_uris: vec![format!("{app_base}/")],
            unknown_session_redirect_url: Some(format!("{app_base}/")),
            ..ProviderOptions::default()
        })
        .await;
        let app = App::start(name, &provider, app_port).await;
        let driver = Driver::start(name).await;
        let browser = Browser::open(name, &driver, first_shot).await;
        println!(
            "[browser_e2e] {name}: ready in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Some(Env {
            name,
            started,
            browser,
            driver,
            app,
            provider,
        })
    }

    /// Ends the browser session and prints how long the test took.
    async fn finish(self) {
        let Env {
            name,
            started,
            browser,
            driver,
            app,
            provider,
        } = self;
        browser
            .client
            .close()
            .await
            .expect("closing the WebDriver session");
        drop(driver);
        drop(app);
        drop(provider);
        println!(
            "[browser_e2e] {name}: passed in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Whether Chromium and ChromeDriver are there; when not, fails under `CI`, else says why.
fn browser_installed(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} missing, and CI is set: the browser tests must run in CI \
             (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
    }
    println!(
        "[browser_e2e] SKIPPED {test}: {} missing (apt-get install chromium chromium-driver); \
         with CI set this is a failure",
        missing.join(" and ")
    );
    false
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// `target/` (or `target/<triple>/`), from this test binary's path `<that>/<profile>/deps/…`.
fn target_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (profile_dir.parent().unwrap().to_path_buf(), profile)
}

fn output_dir(name: &str) -> PathBuf {
    let dir = target_dir().0.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The last `max` bytes of a log file.
fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut cut = text.len().saturating_sub(max);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

/// The sample app (`target/<profile>/examples/sample`), run from the crate root so that it
/// reads `Rocket.toml` and `templates/`. Killed on drop.
struct App {
    /// `http://localhost:<port>`.
    base: String,
    log: PathBuf,
    child: std::process::Child,
}

impl App {
    async fn start(test: &str, provider: &RealProvider, port: u16) -> App {
        let binary = sample_binary();
        let base = format!("http://localhost:{port}");
        let log = output_dir("e2e-logs").join(format!("{test}-app.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = std::process::Command::new(&binary)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LOGTO_ENDPOINT", &provider.endpoint)
            .env("LOGTO_APP_ID", &provider.options.app_id)
            .env("LOGTO_APP_SECRET", &provider.options.app_secret)
            .env("LOGTO_BASE_URL", &base)
            .env("ROCKET_PORT", port.to_string())
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_LOG_LEVEL", "normal")
            .env("ROCKET_CLI_COLORS", "false")
            .env("ROCKET_SECRET_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));

        // Ready when it answers HTTP at all.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let probe = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the sample app exited ({status}):\n{}", tail(&log, 8000));
            }
            if http.get(&probe).send().await.is_ok() {
                return App { base, log, child };
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the sample app did not answer on {probe} within {WAIT:?}:\n{}",
            tail(&log, 8000)
        );
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- the sample app's log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log, 8000)
            );
        }
    }
}

/// `target/<profile>/examples/sample`, built first if needed.
///
/// `cargo test` builds the examples before it runs the tests, but `cargo test --test browser_e2e`
/// does not: so cargo is asked to bring the example up to date (quick when it is), with the
/// profile of this test binary, once per test process. Without cargo, the binary must already be
/// there.
fn sample_binary() -> PathBuf {
    static SAMPLE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(build_sample).clone()
}

fn build_sample() -> PathBuf {
    let (target, profile) = target_dir();
    let binary = target.join(&profile).join("examples").join("sample");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["build", "--quiet", "--example", "sample", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // Not the variables cargo set for this test process: some build scripts watch them (ring
    // watches CARGO_MANIFEST_DIR), and a changed value would rebuild half the tree, twice.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_by_cargo {
            command.env_remove(name.as_ref());
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            panic!("`cargo build --example sample` failed ({status}); its errors are above")
        }
        Err(e) if binary.is_file() => {
            println!(
                "[browser_e2e] cannot run cargo ({e}); using {} as it is",
                binary.display()
            )
        }
        Err(e) => panic!(
            "no {} and cannot run cargo to build it: {e}",
            binary.display()
        ),
    }
    assert!(binary.is_file(), "no sample app at {}", binary.display());
    binary
}

/// ChromeDriver on a port of its choosing, in a process group of its own so that it goes with
/// every Chromium process it started. Killed on drop, with the profile directory removed.
struct Driver {
    url: String,
    pgid: u32,
    log: PathBuf,
    user_data_dir: PathBuf,
    _child: tokio::process::Child,
}

impl Driver {
    async fn start(test: &str) -> Driver {
        // With `--port=0` chromedriver finds a free port and then binds it, so two drivers
        // started at once (the tests of this file run in parallel) can pick the same one:
        // the loser exits with "Address already in use". Only that failure is retried.
        for _ in 0..4 {
            if let Some(driver) = Driver::try_start(test).await {
                return driver;
            }
        }
        panic!("chromedriver lost the race for its port five times");
    }

    /// `None` when chromedriver lost a port race (worth another try); any other failure
    /// fails the test.
    async fn try_start(test: &str) -> Option<Driver> {
        let log = output_dir("e2e-logs").join(format!("{test}-chromedriver.log"));
        let err = std::fs::File::create(&log).unwrap();
        let mut child = tokio::process::Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err.try_clone().unwrap())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("running {CHROMEDRIVER}: {e}"));
        let pgid = child.id().expect("chromedriver pid");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "ChromeDriver was started successfully on port 43467."
        let port = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await;
        let port = match port {
            Ok(Some(port)) => port,
            other => {
                kill_group(pgid);
                let output = tail(&log, 4000);
                if output.contains("Address already in use") {
                    return None;
                }
                panic!("chromedriver did not start ({other:?}):\n{output}");
            }
        };
        // Keep draining its stdout into the log.
        let mut out = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = out.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        let user_data_dir = std::env::temp_dir().join(format!(
            "rocket_logto-e2e-{}-{test}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&user_data_dir).unwrap();
        let driver = Driver {
            url: format!("http://127.0.0.1:{port}"),
            pgid,
            log,
            user_data_dir,
            _child: child,
        };

        // Ready when /status says so.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let status_url = format!("{}/status", driver.url);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(response) = http.get(&status_url).send().await {
                if let Ok(v) = response.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return Some(driver);
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "chromedriver not ready at {status_url} within {WAIT:?}:\n{}",
            tail(&driver.log, 4000)
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(self.pgid);
        let _ = std::fs::remove_dir_all(&self.user_data_dir);
        if std::thread::panicking() {
            eprintln!(
                "--- chromedriver's log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log, 4000)
            );
        }
    }
}

/// SIGKILL to the process group `pgid` (ChromeDriver and the Chromium it started).
fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------------

/// What a page shows, read in one script call.
#[derive(Debug, Clone)]
struct PageState {
    url: String,
    ready: String,
    title: String,
    /// The HTTP status of the document (0 when Chromium does not know, e.g. from the cache).
    status: i64,
    text: String,
    /// The text of a bare `<pre>` (how Chromium shows JSON), if any.
    pre: Option<String>,
    /// Whether the document carries `window.__e2eBeforeBack` (the back-button test sets it).
    marked: bool,
}

impl PageState {
    fn parsed(&self) -> Option<url::Url> {
        url::Url::parse(&self.url).ok()
    }
    fn origin(&self) -> String {
        self.parsed()
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }
    fn path(&self) -> String {
        self.parsed()
            .map(|u| u.path().to_owned())
            .unwrap_or_default()
    }
}

const STATE_SCRIPT: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const pre = document.body && document.body.querySelector(':scope > pre');
return {
  url: location.href,
  ready: document.readyState,
  title: document.title,
  status: nav && typeof nav.responseStatus === 'number' ? nav.responseStatus : 0,
  text: document.body ? document.body.innerText : '',
  pre: pre ? pre.innerText : null,
  marked: window.__e2eBeforeBack === true,
};
"#;

struct Browser {
    client: Client,
    test: &'static str,
    shots: PathBuf,
    next_shot: AtomicU32,
}

impl Browser {
    async fn open(test: &'static str, driver: &Driver, first_shot: u32) -> Browser {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--password-store=basic".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", driver.user_data_dir.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session through chromedriver: {e}\n{}",
                    tail(&driver.log, 4000)
                )
            });
        client.set_window_size(1280, 900).await.unwrap();
        Browser {
            client,
            test,
            shots: output_dir("e2e-screenshots"),
            next_shot: AtomicU32::new(first_shot),
        }
    }

    /// The current page, or `None` while the browser cannot tell (between two documents).
    async fn state(&self) -> Option<PageState> {
        let v = self.client.execute(STATE_SCRIPT, vec![]).await.ok()?;
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        Some(PageState {
            url: text("url"),
            ready: text("ready"),
            title: text("title"),
            status: v["status"].as_i64().unwrap_or(0),
            text: text("text"),
            pre: v["pre"].as_str().map(str::to_owned),
            marked: v["marked"].as_bool().unwrap_or(false),
        })
    }

    /// Polls `probe` every [`POLL`] for at most `limit`; `None` when it never gave a value.
    async fn wait_for_within<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = probe().await {
                return Some(value);
            }
            if Instant::now() >= deadline {
                println!(
                    "[browser_e2e] {}: waited {limit:?} for {what}, in vain",
                    self.test
                );
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `probe` every [`POLL`] until it gives a value; fails after [`WAIT`], saying what
    /// the browser shows (with a screenshot).
    async fn wait_for<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if Instant::now() >= deadline {
                let shot = self.shots.join(format!("FAILED-{}.png", self.test));
                if let Ok(png) = self.client.screenshot().await {
                    let _ = std::fs::write(&shot, png);
                }
                let state = self.state().await;
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; the browser shows {state:#?} \
                     (screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_for_element(&self, what: &str, css: &str) -> fantoccini::elements::Element {
        self.wait_for(&format!("{what} ({css})"), async || {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    async fn click(&self, css: &str) {
        let element = self.wait_for_element("something to click", css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn switch_to(&self, window: &WindowHandle) {
        self.client.switch_to_window(window.clone()).await.unwrap();
    }

    /// Saves a screenshot as `NN-<step>.png`.
    async fn shot(&self, step: &str) {
        let n = self.next_shot.fetch_add(1, Ordering::SeqCst);
        let path = self.shots.join(format!("{n:02}-{step}.png"));
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {step}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "the screenshot of {step} is not a PNG"
        );
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("[browser_e2e] {}: screenshot {}", self.test, path.display());
    }

    /// Waits for the provider's login form.
    async fn wait_for_login_form(&self, provider: &RealProvider) {
        self.wait_for("the provider's login form", async || {
            let s = self.state().await?;
            let on_form = s.origin() == provider.endpoint && s.path().starts_with("/interaction/");
            (on_form && self.client.find(Locator::Css("#username")).await.is_ok()).then_some(())
        })
        .await;
    }

    async fn fill_login_form(&self, (username, password): (&str, &str)) {
        let user = self
            .wait_for_element("the username field", "#username")
            .await;
        user.clear().await.unwrap();
        user.send_keys(username).await.unwrap();
        let pass = self
            .wait_for_element("the password field", "#password")
            .await;
        pass.clear().await.unwrap();
        pass.send_keys(password).await.unwrap();
    }

    /// Waits for the app's home page, signed in, and returns the `sub` it greets.
    async fn wait_signed_in(&self, app: &App) -> String {
        self.wait_for("the app's home page saying Hello", async || {
            let s = self.state().await?;
            if s.origin() != app.base || s.path() != "/" || s.ready != "complete" {
                return None;
            }
            let line = s
                .text
                .lines()
                .find(|l| l.trim_start().starts_with("Hello "))?;
            let sub = line
                .trim_start()
                .strip_prefix("Hello ")?
                .split(',')
                .next()?
                .trim()
                .to_owned();
            (!sub.is_empty()).then_some(sub)
        })
        .await
    }

    /// Waits for the app's home page, signed out.
    async fn wait_signed_out(&self, app: &App) {
        self.wait_for("the app's home page offering Sign In", async || {
            let s = self.state().await?;
            let home = s.origin() == app.base && s.path() == "/" && s.ready == "complete";
            (home
                && !s.text.contains("Hello")
                && self.client.find(Locator::Css("#sign-in")).await.is_ok())
            .then_some(())
        })
        .await;
    }

    /// Waits for the JSON the app serves at `path` (shown by Chromium in a `<pre>`).
    async fn wait_for_json(&self, app: &App, path: &str) -> Value {
        self.wait_for(&format!("JSON at {path}"), async || {
            let s = self.state().await?;
            if s.origin() != app.base || s.path() != path || s.ready != "complete" {
                return None;
            }
            let body = s.pre.unwrap_or(s.text);
            serde_json::from_str(&body).ok()
        })
        .await
    }
}
