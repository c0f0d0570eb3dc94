//! The real OpenID provider of the integration tests: `tests/provider/server.mjs`, a Logto-like
//! provider built on `oidc-provider`, started as a child process on a free loopback port.
//!
//! ```ignore
//! #[path = "support/real_provider.rs"]
//! mod real_provider;
//! use real_provider::{ProviderBrowser, ProviderOptions, RealProvider};
//!
//! let provider = RealProvider::start(ProviderOptions::default()).await;
//! let browser = ProviderBrowser::new();
//! let callback = browser.sign_in(&authorize_url, "alice", "alice-password").await;
//! ```
//!
//! Needs `node` (20+) on PATH (or in `$NODE`) and `npm ci --prefix tests/provider` once.
//! The provider's stderr is collected (shown when start-up fails, and by [`RealProvider::stderr`]);
//! set `LOGTO_TEST_PROVIDER_LOG=1` to echo it live, with one line per HTTP request.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

#[path = "html_form.rs"]
mod html_form;
use html_form::{unescape, Form};
use tokio::process::{Child, ChildStdin, Command};

/// The line `server.mjs` prints on stdout once it listens.
const READY_PREFIX: &str = "LOGTO_TEST_PROVIDER_READY ";
/// The longest the provider may take to print its READY line. Node loads `oidc-provider` in
/// a second or two, but on a shared 2-core runner busy with a build it once took over 30 s:
/// the wait ends at the line, so this ceiling only matters when the provider is broken.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest one request to the provider may take (a ceiling, as above).
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of the provider's stderr is kept (the tail).
const STDERR_KEEP: usize = 256 * 1024;

/// The test users of the provider (see `tests/provider/README.md`).
pub const ALICE: (&str, &str) = ("alice", "alice-password");
pub const BOB: (&str, &str) = ("bob", "bob-password");
pub const ALICE_SUB: &str = "user_alice";
pub const BOB_SUB: &str = "user_bob";
/// A member of 50 organizations, `org_c01` to `org_c50`.
pub const CAROL: (&str, &str) = ("carol", "carol-password");
pub const CAROL_SUB: &str = "user_carol";
/// In 130 organizations with Logto-shaped ids (21 characters; see its ID token's claims).
pub const DAVE: (&str, &str) = ("dave", "dave-password");
pub const DAVE_SUB: &str = "user_dave";
/// The API resources and organization the provider knows.
pub const SHOPPING_API: &str = "https://shopping.example.com/api";
pub const STORE_API: &str = "https://store.example.com/api";
pub const ORGANIZATIONS_RESOURCE: &str = "urn:logto:resource:organizations";
pub const ACME_ORG: &str = "org_acme";

/// How to configure the provider's one application (a Logto "traditional web" app).
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    pub app_id: String,
    pub app_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `None`: an EC P-384 key and ES384 (Logto's default); `Some("RS256")`: an RSA key.
    pub signing_alg: Option<String>,
    /// Logto's "Unknown session redirect URL": where a finished sign-in page sends the
    /// browser (e.g. after Back); `None` shows an error page.
    pub unknown_session_redirect_url: Option<String>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            app_id: "sample-app".into(),
            app_secret: "sample-secret".into(),
            redirect_uris: vec!["http://localhost:8000/logto/sign-in-callback".into()],
            post_logout_redirect_uris: vec!["http://localhost:8000".into()],
            signing_alg: None,
            unknown_session_redirect_url: None,
        }
    }
}

/// A running provider. Dropping it kills the process (and the process also exits by itself
/// when this test process dies, because its stdin closes).
pub struct RealProvider {
    /// `http://127.0.0.1:PORT`, what the crate calls the Logto endpoint.
    pub endpoint: String,
    pub options: ProviderOptions,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
    // Kept open on purpose: the provider exits when its stdin closes.
    _stdin: ChildStdin,
    child: Child,
}

impl RealProvider {
    /// The directory of the Node app.
    pub fn dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("provider")
    }

    /// Spawn `node tests/provider/server.mjs` on a free port and wait for its READY line.
    pub async fn start(opts: ProviderOptions) -> RealProvider {
        let dir = Self::dir();
        if !dir
            .join("node_modules")
            .join("oidc-provider")
            .join("package.json")
            .is_file()
        {
            panic!(
                "the test provider's dependencies are not installed: run `npm ci --prefix tests/provider` \
                 (in {}) first",
                env!("CARGO_MANIFEST_DIR")
            );
        }
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let mut command = Command::new(&node);
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("APP_ID", &opts.app_id)
            .env("APP_SECRET", &opts.app_secret)
            .env("REDIRECT_URIS", opts.redirect_uris.join(","))
            .env(
                "POST_LOGOUT_REDIRECT_URIS",
                opts.post_logout_redirect_uris.join(","),
            )
            .env_remove("PROVIDER_IGNORE_STDIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &opts.signing_alg {
            Some(alg) => command.env("SIGNING_ALG", alg),
            None => command.env_remove("SIGNING_ALG"),
        };
        match &opts.unknown_session_redirect_url {
            Some(url) => command.env("UNKNOWN_SESSION_REDIRECT_URL", url),
            None => command.env_remove("UNKNOWN_SESSION_REDIRECT_URL"),
        };
        if std::env::var_os("LOGTO_TEST_PROVIDER_LOG").is_some() {
            command.env("LOG_REQUESTS", "1");
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run `{node} server.mjs` in {}: {e} (is Node.js 20+ installed?)",
                dir.display()
            )
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_done = tokio::spawn(collect_stderr(stderr_pipe, stderr.clone()));

        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(endpoint) = line.trim().strip_prefix(READY_PREFIX) {
                    return Some(endpoint.trim().to_owned());
                }
            }
            None
        })
        .await;

        let endpoint = match ready {
            Ok(Some(endpoint)) => endpoint,
            failure => {
                let why = match failure {
                    Err(_) => format!("no READY line within {START_TIMEOUT:?}"),
                    _ => format!("it exited ({:?})", child.wait().await.ok()),
                };
                let _ = child.start_kill();
                // The pipe closes when the killed process is gone: the wait ends there.
                let _ = tokio::time::timeout(Duration::from_secs(30), stderr_done).await;
                let log = stderr.lock().unwrap().clone();
                panic!("the test provider did not start: {why}\n--- its stderr ---\n{log}");
            }
        };
        // Keep draining stdout so that the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("reqwest client");
        RealProvider {
            endpoint,
            options: opts,
            stderr,
            http,
            _stdin: stdin,
            child,
        }
    }

    /// `<endpoint>/oidc`.
    pub fn issuer(&self) -> String {
        format!("{}/oidc", self.endpoint)
    }

    /// `<endpoint><path>`, e.g. `url("/oidc/token")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path)
    }

    /// What the provider wrote on stderr so far (its tail).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id, e.g. to check that it stops.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Counters of every request that reached the token, revocation and userinfo endpoints:
    /// `{"token_requests": {"authorization_code": n, "refresh_token": n, ...},
    ///   "refresh_by_resource": {"<resource, or \"\" for none>": n},
    ///   "refresh_by_organization": {"<organization_id>": n},
    ///   "revoked_grants": n, "revocation_requests": n, "userinfo_requests": n}`.
    pub async fn stats(&self) -> serde_json::Value {
        self.control(reqwest::Method::GET, "/__test/stats", None)
            .await
    }

    /// Zero every counter of [`RealProvider::stats`].
    pub async fn reset_stats(&self) {
        self.control(reqwest::Method::POST, "/__test/reset-stats", None)
            .await;
    }

    /// Lifetime of the access tokens issued from now on (default 3600 s).
    pub async fn set_access_token_ttl(&self, secs: u64) {
        let body = serde_json::json!({ "seconds": secs });
        self.control(
            reqwest::Method::POST,
            "/__test/access-token-ttl",
            Some(body),
        )
        .await;
    }

    /// Holds every token request for `ms` before handling it (a slow Logto); 0 stops it.
    pub async fn set_token_delay(&self, ms: u64) {
        let body = serde_json::json!({ "ms": ms });
        self.control(reqwest::Method::POST, "/__test/token-delay", Some(body))
            .await;
    }

    /// Holds each token request for `ms`, then drops it unhandled if its client hung up
    /// meanwhile (the request never reached Logto's handler: nothing was rotated).
    pub async fn set_token_delay_dropping_the_abandoned(&self, ms: u64) {
        let body = serde_json::json!({ "ms": ms, "drop_if_gone": true });
        self.control(reqwest::Method::POST, "/__test/token-delay", Some(body))
            .await;
    }

    /// Handles each token request at once, then holds its answer for `ms` (Logto has acted
    /// on the request, rotated the token, when a client that dies meanwhile loses the answer).
    pub async fn set_token_answer_delay(&self, ms: u64) {
        let body = serde_json::json!({ "ms": ms, "after_handling": true });
        self.control(reqwest::Method::POST, "/__test/token-delay", Some(body))
            .await;
    }

    /// Introspection answers 503 while `down` (Logto cannot say whether a token is good).
    pub async fn set_introspection_down(&self, down: bool) {
        let body = serde_json::json!({ "down": down });
        self.control(reqwest::Method::POST, "/__test/introspection", Some(body))
            .await;
    }

    /// Logto's own rotation rule for a confidential app (a new refresh token only past 70%
    /// of its lifetime) instead of the default worst case (every refresh rotates).
    pub async fn rotate_like_logto(&self) {
        let body = serde_json::json!({ "mode": "logto" });
        self.control(reqwest::Method::POST, "/__test/rotation", Some(body))
            .await;
    }

    /// Backdates the next password login by `secs`: its provider session and `auth_time`
    /// are that old (once).
    pub async fn set_next_login_age(&self, secs: u64) {
        let body = serde_json::json!({ "seconds": secs });
        self.control(reqwest::Method::POST, "/__test/next-login-age", Some(body))
            .await;
    }

    /// A back-channel logout token for the app (by `sub`, `sid` or both), signed with the
    /// provider's key.
    pub async fn logout_token(&self, sub: Option<&str>, sid: Option<&str>) -> String {
        let body = serde_json::json!({ "sub": sub, "sid": sid });
        let v = self
            .control(reqwest::Method::POST, "/__test/logout-token", Some(body))
            .await;
        v["logout_token"]
            .as_str()
            .unwrap_or_else(|| panic!("unexpected logout-token answer {v}"))
            .to_string()
    }

    /// Replaces the custom data of user `sub` (Logto's Management API `PATCH
    /// /api/users/{userId}/custom-data`): userinfo answers it from then on.
    pub async fn set_custom_data(&self, sub: &str, custom_data: serde_json::Value) {
        let body = serde_json::json!({ "sub": sub, "custom_data": custom_data });
        self.control(reqwest::Method::POST, "/__test/custom-data", Some(body))
            .await;
    }

    /// Whether the user still has a grant (the thing refresh tokens hang on) for the app that
    /// was not revoked: by refresh-token reuse, code replay, revocation of a refresh token, or
    /// an end-session without `offline_access`.
    pub async fn grant_valid(&self, sub: &str) -> bool {
        let path = format!("/__test/grant-valid?sub={}", encode_component(sub));
        let v = self.control(reqwest::Method::GET, &path, None).await;
        v["valid"]
            .as_bool()
            .unwrap_or_else(|| panic!("unexpected grant-valid answer {v}"))
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("test provider {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "test provider {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("test provider {path}: {e}: {text}"))
    }
}

async fn collect_stderr(pipe: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let echo = std::env::var_os("LOGTO_TEST_PROVIDER_LOG").is_some();
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("[provider] {line}");
        }
        let mut buffer = into.lock().unwrap();
        buffer.push_str(&line);
        buffer.push('\n');
        if buffer.len() > STDERR_KEEP {
            let mut cut = buffer.len() - STDERR_KEEP / 2;
            while !buffer.is_char_boundary(cut) {
                cut += 1;
            }
            buffer.drain(..cut);
        }
    }
}

/// A browser-like user agent for the provider: keeps the provider's cookies (its session),
/// follows its redirects by hand, fills its forms; stops at the first redirect that leaves the
/// provider (to the app's `redirect_uri` or `post_logout_redirect_uri`).
pub struct ProviderBrowser {
    client: reqwest::Client,
}

impl Default for ProviderBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl ProviderBrowser {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("reqwest client");
        ProviderBrowser { client }
    }

    /// The underlying client (it holds the provider's cookies).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Follow an authorize URL through the login form as `username`/`password` until the
    /// provider redirects outside itself (to the app's redirect_uri); return that URL (with
    /// `code`, `state`, `iss`, or an `error`). When the provider session already exists no form
    /// appears (`prompt=consent` skips login) and the credentials are not used. Panics when the
    /// provider rejects the credentials or shows anything else.
    pub async fn sign_in(&self, authorize_url: &str, username: &str, password: &str) -> String {
        self.try_sign_in(authorize_url, username, password)
            .await
            .unwrap_or_else(|e| panic!("sign-in at the test provider failed: {e}"))
    }

    /// [`ProviderBrowser::sign_in`] that returns the failure instead of panicking (e.g. a wrong
    /// password: `Err` with the login form's error message).
    pub async fn try_sign_in(
        &self,
        authorize_url: &str,
        username: &str,
        password: &str,
    ) -> Result<String, String> {
        let provider_origin = origin(authorize_url)?;
        let mut url = authorize_url.to_owned();
        let mut submitted = false;
        for _ in 0..20 {
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            if status.is_redirection() {
                url = location(&url, &response)?;
                if origin(&url)? != provider_origin {
                    return Ok(url);
                }
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::OK || !body.contains("name=\"password\"") {
                return Err(format!(
                    "unexpected answer from GET {url}: {status}\n{body}"
                ));
            }
            if submitted {
                return Err(format!(
                    "the provider rejected the credentials: {}",
                    login_error(&body)
                ));
            }
            // The login form.
            let form =
                Form::parse(&body).ok_or_else(|| format!("no form in the login page:\n{body}"))?;
            let action = resolve(&url, &form.action)?;
            let response = self
                .client
                .post(&action)
                .form(&[("username", username), ("password", password)])
                .send()
                .await
                .map_err(|e| format!("POST {action}: {e}"))?;
            let status = response.status();
            if !status.is_redirection() {
                let body = response.text().await.unwrap_or_default();
                if status == reqwest::StatusCode::OK && body.contains("name=\"password\"") {
                    return Err(format!(
                        "the provider rejected the credentials: {}",
                        login_error(&body)
                    ));
                }
                return Err(format!(
                    "unexpected answer from POST {action}: {status}\n{body}"
                ));
            }
            submitted = true;
            url = location(&action, &response)?;
            if origin(&url)? != provider_origin {
                return Ok(url);
            }
        }
        Err(format!("too many redirects, last at {url}"))
    }

    /// Follow an end-session URL, post the provider's confirmation form ("Yes, sign me out"),
    /// and return the final redirect URL outside the provider (the post_logout_redirect_uri).
    /// Without a `post_logout_redirect_uri` the provider ends on its own success page: its URL
    /// is returned.
    pub async fn confirm_sign_out(&self, end_session_url: &str) -> String {
        self.try_confirm_sign_out(end_session_url)
            .await
            .unwrap_or_else(|e| panic!("sign-out at the test provider failed: {e}"))
    }

    /// [`ProviderBrowser::confirm_sign_out`] that returns the failure instead of panicking.
    pub async fn try_confirm_sign_out(&self, end_session_url: &str) -> Result<String, String> {
        let provider_origin = origin(end_session_url)?;
        let mut url = end_session_url.to_owned();
        let mut posted = false;
        for _ in 0..20 {
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            if status.is_redirection() {
                url = location(&url, &response)?;
                if origin(&url)? != provider_origin {
                    return Ok(url);
                }
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::OK {
                return Err(format!(
                    "unexpected answer from GET {url}: {status}\n{body}"
                ));
            }
            if posted {
                return Ok(url); // the provider's own "signed out" page
            }
            // The confirmation form (or, without a provider session, an auto-submitting form).
            let form = Form::parse(&body)
                .ok_or_else(|| format!("no form in the sign-out page:\n{body}"))?;
            let mut fields = form.hidden;
            if !fields.iter().any(|(name, _)| name == "logout") {
                fields.push(("logout".into(), "yes".into())); // the "Yes, sign me out" button
            }
            let action = resolve(&url, &form.action)?;
            let response = self
                .client
                .post(&action)
                .form(&fields)
                .send()
                .await
                .map_err(|e| format!("POST {action}: {e}"))?;
            let status = response.status();
            if !status.is_redirection() {
                let body = response.text().await.unwrap_or_default();
                return Err(format!(
                    "unexpected answer from POST {action}: {status}\n{body}"
                ));
            }
            posted = true;
            url = location(&action, &response)?;
            if origin(&url)? != provider_origin {
                return Ok(url);
            }
        }
        Err(format!("too many redirects, last at {url}"))
    }
}

fn origin(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    Ok(parsed.origin().ascii_serialization())
}

fn resolve(base: &str, reference: &str) -> Result<String, String> {
    let base = url::Url::parse(base).map_err(|e| format!("bad URL {base}: {e}"))?;
    base.join(reference)
        .map(String::from)
        .map_err(|e| format!("bad URL {reference}: {e}"))
}

fn location(base: &str, response: &reqwest::Response) -> Result<String, String> {
    let value = response
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or_else(|| format!("{} from {base} without a Location", response.status()))?;
    let value = value
        .to_str()
        .map_err(|e| format!("bad Location from {base}: {e}"))?;
    resolve(base, value)
}

fn encode_component(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn login_error(html: &str) -> String {
    element_text(html, "id=\"error\"").unwrap_or_else(|| "(no error message on the page)".into())
}

/// The text of the first element whose start tag contains `marker`.
fn element_text(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(unescape(html[start..end].trim()))
}
