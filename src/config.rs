//! `LogtoConfig`: the `logto` table of Rocket's configuration, given defaults and validated
//! once at launch; and `LogtoEnv`, the figment provider of the `LOGTO_*` variables.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use url::Url;

use crate::claims::{UserScope, ORGANIZATIONS_RESOURCE};
use crate::return_path::ReturnPath;
use crate::sign_in_options::{DirectSignIn, FirstScreen};

/// The environment variables of [`LogtoEnv`], and the keys they set.
pub(crate) const ENV_OVERRIDES: [(&str, &str); 8] = [
    ("LOGTO_ENDPOINT", "endpoint"),
    ("LOGTO_APP_ID", "app_id"),
    ("LOGTO_APP_SECRET", "app_secret"),
    ("LOGTO_BASE_URL", "base_url"),
    ("LOGTO_REDIS_URL", "redis_url"),
    ("LOGTO_SESSION_STORE", "session_store"),
    ("LOGTO_M2M_APP_ID", "m2m_app_id"),
    ("LOGTO_M2M_APP_SECRET", "m2m_app_secret"),
];

/// The Management API's resource indicator on Logto OSS; Logto Cloud's is
/// `https://<tenant-id>.logto.app/api` (key `management_api_resource`).
pub const DEFAULT_MANAGEMENT_API_RESOURCE: &str = "https://default.logto.app/api";

/// Scopes every sign-in requests, before the configured ones.
pub const DEFAULT_SCOPES: [UserScope; 3] = [
    UserScope::OpenId,
    UserScope::OfflineAccess,
    UserScope::Profile,
];

/// The `LOGTO_*` environment variables, as a [figment](figment::Figment) provider that sets
/// keys of the `logto` table: `LOGTO_ENDPOINT` (`endpoint`), `LOGTO_APP_ID` (`app_id`),
/// `LOGTO_APP_SECRET` (`app_secret`), `LOGTO_BASE_URL` (`base_url`), `LOGTO_REDIS_URL`
/// (`redis_url`), `LOGTO_SESSION_STORE` (`session_store`), `LOGTO_M2M_APP_ID`
/// (`m2m_app_id`) and `LOGTO_M2M_APP_SECRET` (`m2m_app_secret`). A variable that is unset or
/// empty sets nothing. Values are taken as strings, as written.
///
/// **With `rocket::build()`** there is nothing to do: when Rocket runs on its default
/// figment ([`rocket::Config::figment()`], exactly), the fairing merges `LogtoEnv` on top of
/// it, so the variables win over `Rocket.toml` and `ROCKET_LOGTO`.
///
/// **With `rocket::custom(figment)`** the fairing reads only the figment it is given, as
/// Rocket and its other extensions do: merge `LogtoEnv` where its variables should win.
/// [`testing::figment()`](crate::testing::figment) never has it, so an app's tests never
/// reach the tenant a developer's `LOGTO_*` variables name.
///
/// ```
/// use rocket_logto::{Logto, LogtoEnv};
///
/// let figment = rocket::Config::figment()
///     .merge(("logto.scopes", ["email"]))
///     // The environment wins over the file and over the code above.
///     .merge(LogtoEnv::new());
/// let rocket = rocket::custom(figment).attach(Logto::fairing());
/// ```
#[derive(Clone, Default)]
pub struct LogtoEnv {
    /// Values given in place of the process's environment (the crate's own tests).
    given: Option<Vec<(&'static str, String)>>,
}

impl LogtoEnv {
    /// The provider of the process's `LOGTO_*` variables, read when a figment merges it.
    pub fn new() -> LogtoEnv {
        LogtoEnv::default()
    }

    /// The provider of the variables `lookup` finds, in place of the environment's.
    #[cfg(test)]
    pub(crate) fn with_lookup(lookup: impl Fn(&str) -> Option<String>) -> LogtoEnv {
        LogtoEnv {
            given: Some(
                ENV_OVERRIDES
                    .iter()
                    .filter_map(|(var, _)| lookup(var).map(|value| (*var, value)))
                    .collect(),
            ),
        }
    }

    /// The names of the variables that are set (not empty), for a log line: never a value.
    pub(crate) fn set_names(&self) -> Vec<&'static str> {
        ENV_OVERRIDES
            .iter()
            .filter(|(var, _)| self.value(var).is_some())
            .map(|(var, _)| *var)
            .collect()
    }

    fn value(&self, var: &str) -> Option<String> {
        let value = match &self.given {
            Some(given) => given
                .iter()
                .find(|(v, _)| *v == var)
                .map(|(_, x)| x.clone()),
            None => std::env::var(var).ok(),
        };
        value.filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for LogtoEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names only: LOGTO_APP_SECRET's value is a secret.
        f.debug_tuple("LogtoEnv").field(&self.set_names()).finish()
    }
}

impl Provider for LogtoEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(LOGTO_ENV_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut logto = Dict::new();
        for (var, key) in ENV_OVERRIDES {
            if let Some(value) = self.value(var) {
                logto.insert(key.to_string(), Value::from(value));
            }
        }
        let mut root = Dict::new();
        if !logto.is_empty() {
            root.insert("logto".to_string(), Value::from(logto));
        }
        // Global: the variables win in every profile, as Rocket's own `ROCKET_*` do.
        Ok(Profile::Global.collect(root))
    }
}

/// The name [`LogtoEnv`] gives its values in a figment (in error messages, and to tell
/// whether a figment has it).
pub(crate) const LOGTO_ENV_NAME: &str = "`LOGTO_*` environment variable(s)";

/// The validated configuration. Built by the fairing from the `logto` table of the figment
/// Rocket was given (`[default.logto]` in `Rocket.toml`, any profile, `ROCKET_LOGTO={...}`),
/// with the `LOGTO_*` variables on top for `rocket::build()` (see [`LogtoEnv`]). The
/// [crate docs](crate#configuration) list every key with its type and default.
///
/// Its fields are read through methods, so that new keys and new types can come without
/// breaking apps. URLs are given as `&str` (absolute, checked `http(s)` URLs): the crate's
/// public API names no type of the `url` crate, whose versions would otherwise be tied to
/// this crate's. Parse one with the URL type you use, e.g. Rocket's
/// [`Absolute`](rocket::http::uri::Absolute).
#[derive(Clone)]
#[non_exhaustive]
pub struct LogtoConfig {
    // Each key is documented on its method below.
    pub(crate) endpoint: Url,
    pub(crate) app_id: String,
    pub(crate) app_secret: AppSecret,
    pub(crate) base_url: Url,
    pub(crate) scopes: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) prompt: String,
    pub(crate) fetch_user_info: bool,
    pub(crate) routes_prefix: String,
    pub(crate) post_sign_in_redirect: ReturnPath,
    pub(crate) post_sign_out_redirect: Url,
    pub(crate) first_screen: Option<FirstScreen>,
    pub(crate) identifiers: Vec<String>,
    pub(crate) direct_sign_in: Option<DirectSignIn>,
    pub(crate) login_hint: Option<String>,
    pub(crate) extra_params: BTreeMap<String, String>,
    pub(crate) clock_skew: Duration,
    pub(crate) http_timeout: Duration,
    pub(crate) token_refresh_margin: Duration,
    pub(crate) rotation_grace: Duration,
    pub(crate) session_inactivity: Duration,
    pub(crate) session_lifetime: Duration,
    pub(crate) refresh_cache_entries: usize,
    pub(crate) spent_state_entries: usize,
    pub(crate) session_cache_entries: usize,
    pub(crate) bearer_cache_entries: usize,
    /// No `app_id`: an API that signs nobody in.
    api_only: bool,
    pub(crate) redis: Option<RedisSettings>,
    pub(crate) session_store: SessionStoreKind,
    pub(crate) m2m: Option<M2mCredentials>,
    pub(crate) management_api_resource: String,
}

/// The machine-to-machine app's id and secret (keys `m2m_app_id`, `m2m_app_secret`).
#[derive(Clone, Debug)]
pub(crate) struct M2mCredentials {
    pub app_id: String,
    pub secret: AppSecret,
}

/// What the configuration says, key by key.
impl LogtoConfig {
    /// Logto's endpoint, e.g. `https://your-tenant.logto.app` (key `endpoint`).
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The application id (key `app_id`); empty in an API-only configuration (see
    /// [`is_api_only`](LogtoConfig::is_api_only)).
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The application secret (key `app_secret`); never printed. Empty in an API-only
    /// configuration.
    pub fn app_secret(&self) -> &AppSecret {
        &self.app_secret
    }

    /// Where this app is served, e.g. `http://localhost:8000` (key `base_url`; optional in
    /// an API-only configuration, where it defaults to `http://localhost/`). A path
    /// (`https://example.com/app`) means that Rocket serves the app under that path: the
    /// auth routes are mounted at [`routes_base`](LogtoConfig::routes_base) and every
    /// redirect of the crate includes the path.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// Scopes requested beyond `openid offline_access profile` (key `scopes`).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// API resource indicators (key `resources`): requested at sign-in, and the resources
    /// whose access tokens this app's API guards accept.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The `prompt` sent at sign-in (key `prompt`, default `consent`).
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Fetch the userinfo endpoint right after sign-in and keep its answer (key `fetch_user_info`).
    pub fn fetch_user_info(&self) -> bool {
        self.fetch_user_info
    }

    /// Where the auth routes are mounted under the path of `base_url`, without slashes (key
    /// `routes_prefix`, default `logto`).
    pub fn routes_prefix(&self) -> &str {
        &self.routes_prefix
    }

    /// Where to land after sign-in when no `return_to` was given (key `post_sign_in_redirect`).
    pub fn post_sign_in_redirect(&self) -> &ReturnPath {
        &self.post_sign_in_redirect
    }

    /// Where Logto sends the browser after sign-out (key `post_sign_out_redirect`).
    pub fn post_sign_out_redirect(&self) -> &str {
        self.post_sign_out_redirect.as_str()
    }

    /// The first screen of the sign-in experience (key `first_screen`).
    pub fn first_screen(&self) -> Option<FirstScreen> {
        self.first_screen
    }

    /// Identifiers shown on the first screen (key `identifiers`).
    pub fn identifiers(&self) -> &[String] {
        &self.identifiers
    }

    /// `social:<target>` or `sso:<connector-id>` (key `direct_sign_in`).
    pub fn direct_sign_in(&self) -> Option<&DirectSignIn> {
        self.direct_sign_in.as_ref()
    }

    /// Pre-filled identifier (key `login_hint`).
    pub fn login_hint(&self) -> Option<&str> {
        self.login_hint.as_deref()
    }

    /// Extra authorize parameters, sent last (key `extra_params`).
    pub fn extra_params(&self) -> &BTreeMap<String, String> {
        &self.extra_params
    }

    /// The machine-to-machine app's id (key `m2m_app_id`, or `LOGTO_M2M_APP_ID`), whose
    /// tokens [`AppTokens`](crate::AppTokens) fetches; `None` when not configured.
    pub fn m2m_app_id(&self) -> Option<&str> {
        self.m2m.as_ref().map(|m| m.app_id.as_str())
    }

    /// The machine-to-machine app's secret (key `m2m_app_secret`, or
    /// `LOGTO_M2M_APP_SECRET`, preferred); never printed.
    pub fn m2m_app_secret(&self) -> Option<&AppSecret> {
        self.m2m.as_ref().map(|m| &m.secret)
    }

    /// The Management API's resource indicator (key `management_api_resource`, default
    /// [`DEFAULT_MANAGEMENT_API_RESOURCE`], Logto OSS's; on Logto Cloud,
    /// `https://<tenant-id>.logto.app/api`). What [`ManagementApi`](crate::ManagementApi)
    /// tokens are for.
    pub fn management_api_resource(&self) -> &str {
        &self.management_api_resource
    }

    /// Allowed clock difference with Logto (key `clock_skew_secs`, default 60).
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// Timeout of every request to Logto (key `http_timeout_secs`, default 10).
    pub fn http_timeout(&self) -> Duration {
        self.http_timeout
    }

    /// An access token with less life left than this is refreshed (key
    /// `token_refresh_margin_secs`, default 60). Refused at or above 3600, the lifetime of
    /// Logto's access tokens (every request would refresh); logged as a warning above 600.
    pub fn token_refresh_margin(&self) -> Duration {
        self.token_refresh_margin
    }

    /// How long after Logto rotated a refresh token a request still carrying the old one
    /// follows the rotation to the new tokens (key `rotation_grace_secs`, default 60, 1 to
    /// 600): long enough for the parallel requests of one browser, whose responses race to
    /// set the cookie. After that, the old token ends the session it is in (401, cookies
    /// cleared) and is not sent to Logto, so an old, copied or stolen cookie gets nothing.
    /// The cost: a browser that lost the response carrying the new token (a dropped
    /// connection) signs in again.
    pub fn rotation_grace(&self) -> Duration {
        self.rotation_grace
    }

    /// A session unused for this long is signed out (key `session_inactivity_secs`,
    /// default 14 days, Logto's refresh-token lifetime).
    pub fn session_inactivity(&self) -> Duration {
        self.session_inactivity
    }

    /// A session older than this is signed out whatever its use (key
    /// `session_lifetime_secs`, default 30 days).
    pub fn session_lifetime(&self) -> Duration {
        self.session_lifetime
    }

    /// Most refresh tokens whose outcome is kept in memory for concurrent and stale
    /// requests (key `refresh_cache_entries`, default 10000; each entry lives 2 minutes);
    /// also the most rotations followed within the grace, and remembered after it.
    pub fn refresh_cache_entries(&self) -> usize {
        self.refresh_cache_entries
    }

    /// Most used sign-in `state` values remembered to refuse replays (key
    /// `spent_state_entries`, default 100000; each lives 10 minutes).
    pub fn spent_state_entries(&self) -> usize {
        self.spent_state_entries
    }

    /// Most decoded sessions kept in memory, so that requests repeating the same cookies
    /// skip decryption and parsing (key `session_cache_entries`, default 4096; each lives
    /// 5 minutes; a session enters at the second sight of its cookies).
    pub fn session_cache_entries(&self) -> usize {
        self.session_cache_entries
    }

    /// Most verified access tokens kept in memory by the API guards, so that a client
    /// repeating its bearer token costs one signature check (key `bearer_cache_entries`,
    /// default 10000; each lives until its `exp`, at most an hour).
    pub fn bearer_cache_entries(&self) -> usize {
        self.bearer_cache_entries
    }

    /// Redis shared by the app's instances (keys `redis_url`, `redis_cluster`, `redis_sentinel_master`,
    /// `redis_key_prefix`, `redis_timeout_ms`, `redis_fail_closed`); `None` keeps everything
    /// in process. Needs the cargo feature `redis`.
    pub fn redis(&self) -> Option<&RedisSettings> {
        self.redis.as_ref()
    }

    /// Where sessions live (key `session_store`, env `LOGTO_SESSION_STORE`, default
    /// `"cookie"`): in the browser's cookies, or in Redis with only an opaque id in a cookie
    /// (`"redis"`, which needs `redis_url`). See [the crate docs](crate#where-sessions-live).
    pub fn session_store(&self) -> SessionStoreKind {
        self.session_store
    }
}

/// Where the sessions of signed-in browsers live (key `session_store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionStoreKind {
    /// In encrypted cookies: nothing on the server (the default).
    #[default]
    Cookie,
    /// In Redis, sealed; the browser holds an opaque random id in one encrypted cookie.
    Redis,
}

impl SessionStoreKind {
    /// The value of the key `session_store` that names it: `"cookie"` or `"redis"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStoreKind::Cookie => "cookie",
            SessionStoreKind::Redis => "redis",
        }
    }
}

impl fmt::Display for SessionStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionStoreKind {
    type Err = ConfigError;

    /// Parses a value of the key `session_store` (surrounding spaces ignored).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key and its two values when `value` is neither
    /// `"cookie"` nor `"redis"`.
    fn from_str(value: &str) -> Result<SessionStoreKind, ConfigError> {
        match value.trim() {
            "cookie" => Ok(SessionStoreKind::Cookie),
            "redis" => Ok(SessionStoreKind::Redis),
            other => Err(err(
                "session_store",
                format!(
                    "is {:?}: expected \"cookie\" (the default) or \"redis\"",
                    crate::util::logsafe::for_log(other)
                ),
            )),
        }
    }
}

/// The store `value` of the key `session_store` names, or why not.
fn session_store(value: Option<&str>, redis: bool) -> Result<SessionStoreKind, ConfigError> {
    let kind = match value {
        None => SessionStoreKind::Cookie,
        Some(value) => value.parse()?,
    };
    if kind == SessionStoreKind::Redis && !redis {
        return Err(err(
            "session_store",
            "is \"redis\" but `redis_url` is not set: set redis_url (or LOGTO_REDIS_URL) to the \
             Redis that keeps the sessions, or use session_store = \"cookie\"",
        ));
    }
    Ok(kind)
}

/// Where and how the instances of an app share refreshes and sign-outs (see the crate
/// docs, "Running several instances").
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisSettings {
    /// The server, or with `cluster` the seed nodes of a Redis Cluster (key `redis_url`,
    /// comma-separated for several nodes; env `LOGTO_REDIS_URL`).
    pub urls: Vec<RedisUrl>,
    /// The URLs are nodes of a Redis Cluster (key `redis_cluster`, default false).
    pub cluster: bool,
    /// The URLs are Redis Sentinels, and this is the name of the master they watch (key
    /// `redis_sentinel_master`): every connection asks a sentinel where the master is now,
    /// so a failover is followed without a restart.
    pub sentinel_master: Option<String>,
    /// Start of every key name (key `redis_key_prefix`, default `rocket_logto:`).
    pub key_prefix: String,
    /// Longest wait for one Redis operation; past it the request goes on without Redis
    /// (key `redis_timeout_ms`, default 1000).
    pub timeout: Duration,
    /// While the list of ended sessions cannot be kept current (Redis unreachable), refuse
    /// session cookies (signed out, cookies kept) instead of serving them (key
    /// `redis_fail_closed`, default false).
    pub fail_closed: bool,
}

/// A `redis://` or `rediss://` URL, which may carry a user and password: its `Debug` and
/// `Display` print `***` in place of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// The URL itself, password included, for the Redis client only.
    #[cfg(any(feature = "redis", test))]
    pub(crate) fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Whether it asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "rediss"
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// The app secret (key `app_secret`, and `m2m_app_secret`). It has no `Display`, and its `Debug` prints `***`, so
/// it never reaches a log; nor can it be compared (a comparison that stops at the first
/// different byte tells an attacker how much of a guess was right). Only the crate reads
/// it, to authenticate to Logto's token endpoint.
#[derive(Clone)]
pub struct AppSecret(String);

impl AppSecret {
    /// The secret itself, for the token endpoint's Basic authentication.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether there is none: an API-only configuration.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret(***)")
    }
}

impl fmt::Debug for LogtoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogtoConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .field("base_url", &self.base_url.as_str())
            .field("scopes", &self.scopes)
            .field("resources", &self.resources)
            .field("routes_prefix", &self.routes_prefix)
            .field("redis", &self.redis)
            .field("session_store", &self.session_store)
            .field("m2m", &self.m2m)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot be used; its message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The `logto` table as written: every key optional so that a missing one gets a message
/// of ours rather than serde's.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    endpoint: Option<String>,
    app_id: Option<String>,
    app_secret: Option<String>,
    base_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    prompt: Option<String>,
    #[serde(default)]
    fetch_user_info: bool,
    routes_prefix: Option<String>,
    post_sign_in_redirect: Option<String>,
    post_sign_out_redirect: Option<String>,
    first_screen: Option<String>,
    #[serde(default)]
    identifiers: Vec<String>,
    direct_sign_in: Option<String>,
    login_hint: Option<String>,
    #[serde(default)]
    extra_params: BTreeMap<String, String>,
    clock_skew_secs: Option<u64>,
    http_timeout_secs: Option<u64>,
    token_refresh_margin_secs: Option<u64>,
    rotation_grace_secs: Option<u64>,
    session_inactivity_secs: Option<u64>,
    session_lifetime_secs: Option<u64>,
    refresh_cache_entries: Option<usize>,
    spent_state_entries: Option<usize>,
    session_cache_entries: Option<usize>,
    bearer_cache_entries: Option<usize>,
    redis_url: Option<OneOrMany>,
    redis_cluster: Option<bool>,
    redis_sentinel_master: Option<String>,
    redis_key_prefix: Option<String>,
    redis_timeout_ms: Option<u64>,
    redis_fail_closed: Option<bool>,
    session_store: Option<String>,
    m2m_app_id: Option<String>,
    m2m_app_secret: Option<String>,
    management_api_resource: Option<String>,
}

const IDENTIFIERS: [&str; 3] = ["email", "phone", "username"];
const PROMPTS: [&str; 4] = ["none", "login", "consent", "select_account"];
/// Parameters the library sets itself; `extra_params` may not override them.
const RESERVED_PARAMS: [&str; 14] = [
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "nonce",
    "response_type",
    "prompt",
    "scope",
    "login_hint",
    "direct_sign_in",
    "resource",
    "first_screen",
    "identifier",
];

/// How long Logto's access tokens live by default: a refresh margin this long would
/// refresh on every request.
const ACCESS_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Above this refresh margin, refreshes get frequent enough to warn about.
const MARGIN_WARNING_SECS: u64 = 600;

fn err(key: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError(format!("logto config: `{key}` {problem}"))
}

fn secs(key: &str, value: Option<u64>, default: u64, max: u64) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    if value > max {
        return Err(err(key, format!("is {value}, more than the maximum {max}")));
    }
    Ok(Duration::from_secs(value))
}

fn entries(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(err(key, "must be more than 0")),
        n if n > 10_000_000 => Err(err(key, format!("is {n}, more than the maximum 10000000"))),
        n => Ok(n),
    }
}

fn http_url(key: &str, env: Option<&str>, value: Option<String>) -> Result<Url, ConfigError> {
    let hint = match env {
        Some(var) => format!("set it under [default.logto] in Rocket.toml or in {var}"),
        None => "set it under [default.logto] in Rocket.toml".to_string(),
    };
    let value = value.filter(|v| !v.trim().is_empty());
    let value = value.ok_or_else(|| err(key, format!("is missing: {hint}")))?;
    let url = Url::parse(value.trim()).map_err(|e| {
        err(
            key,
            format!("is not a URL ({e}): expected e.g. http://localhost:3001"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(err(key, "must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(key, "must not have a query or fragment"));
    }
    Ok(url)
}

/// A string, or a list of strings (`redis_url`: one server, or the nodes of a cluster).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `text` with the password of every URL in it (`scheme://user:password@host`) shown as `***`.
fn mask_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '"' | '\'' | ',' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user = authority[..at].split(':').next().unwrap_or_default();
                out.push_str(user);
                if authority[..at].contains(':') {
                    out.push_str(":***");
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Default start of every Redis key name.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "rocket_logto:";

/// One `redis://` or `rediss://` URL. Messages never repeat the value: it may hold a password.
fn redis_url(value: &str) -> Result<RedisUrl, ConfigError> {
    let key = "redis_url";
    let value = value.trim();
    if value.is_empty() {
        return Err(err(
            key,
            "has an empty URL: expected e.g. redis://127.0.0.1:6379 (or remove the key to keep \
             everything in process)",
        ));
    }
    let url = Url::parse(value).map_err(|e| {
        err(
            key,
            format!("is not a URL ({e}): expected e.g. redis://127.0.0.1:6379 or rediss://user:password@host:6380"),
        )
    })?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(err(
            key,
            format!(
                "has the scheme `{}`: expected redis:// (plain) or rediss:// (TLS)",
                crate::util::logsafe::for_log(url.scheme())
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err(
            key,
            "has no host: expected e.g. redis://127.0.0.1:6379",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(key, "must not have a query or fragment"));
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() && path.parse::<u16>().is_err() {
        return Err(err(
            key,
            "has a path that is not a database number: expected e.g. redis://host:6379/0",
        ));
    }
    Ok(RedisUrl(url))
}

fn redis_settings(raw: &RawConfig) -> Result<Option<RedisSettings>, ConfigError> {
    let Some(value) = &raw.redis_url else {
        for (set, key) in [
            (raw.redis_cluster.is_some(), "redis_cluster"),
            (raw.redis_sentinel_master.is_some(), "redis_sentinel_master"),
            (raw.redis_key_prefix.is_some(), "redis_key_prefix"),
            (raw.redis_timeout_ms.is_some(), "redis_timeout_ms"),
            (raw.redis_fail_closed.is_some(), "redis_fail_closed"),
        ] {
            if set {
                return Err(err(
                    key,
                    "is set without `redis_url`: set redis_url (or LOGTO_REDIS_URL) too, or remove it",
                ));
            }
        }
        return Ok(None);
    };
    let cluster = raw.redis_cluster.unwrap_or(false);
    let urls = match value {
        OneOrMany::One(list) => list.split(',').map(redis_url).collect::<Result<Vec<_>, _>>()?,
        OneOrMany::Many(urls) if urls.is_empty() => return Err(err(
            "redis_url",
            "is an empty list: expected e.g. redis://127.0.0.1:6379 (or remove the key to keep everything in process)",
        )),
        OneOrMany::Many(urls) => urls.iter().map(|u| redis_url(u)).collect::<Result<Vec<_>, _>>()?,
    };
    let sentinel_master = match raw.redis_sentinel_master.as_deref() {
        None => None,
        Some(_) if cluster => {
            return Err(err(
                "redis_sentinel_master",
                "is set with redis_cluster = true: a deployment is Sentinel or Cluster, not both; remove one",
            ))
        }
        Some(name)
            if name.is_empty()
                || name.len() > 128
                || !name.chars().all(|c| c.is_ascii_graphic()) =>
        {
            return Err(err(
                "redis_sentinel_master",
                format!(
                    "is {:?}: expected the master's name in the sentinels' config (`sentinel monitor <name> ...`), e.g. \"mymaster\"",
                    crate::util::logsafe::for_log(name)
                ),
            ))
        }
        Some(name) => Some(name.to_string()),
    };
    if sentinel_master.is_some()
        && urls
            .iter()
            .any(|u| !u.0.path().trim_start_matches('/').is_empty())
    {
        return Err(err(
            "redis_url",
            "names a database (/N) on a sentinel's address: sentinels have none; the master's database is 0",
        ));
    }
    if urls.len() > 1 && !cluster && sentinel_master.is_none() {
        return Err(err(
            "redis_url",
            "lists several URLs: that is for the nodes of a Redis Cluster (add redis_cluster = true) or for Redis Sentinels (add redis_sentinel_master); or keep one URL",
        ));
    }
    if cluster
        && urls
            .iter()
            .any(|u| !u.0.path().trim_start_matches('/').is_empty())
    {
        return Err(err(
            "redis_url",
            "names a database (/N), which Redis Cluster does not have",
        ));
    }
    let key_prefix = raw
        .redis_key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '{' | '}'))
    {
        return Err(err(
            "redis_key_prefix",
            format!(
                "is {:?}: expected 1 to 64 printable ASCII characters without spaces or braces \
                 (braces would change the Redis Cluster hash slot), e.g. \"myapp:logto:\"",
                crate::util::logsafe::for_log(&key_prefix)
            ),
        ));
    }
    let timeout = raw.redis_timeout_ms.unwrap_or(1000);
    if !(10..=60_000).contains(&timeout) {
        return Err(err(
            "redis_timeout_ms",
            format!("is {timeout}: expected 10 to 60000 milliseconds (default 1000)"),
        ));
    }
    Ok(Some(RedisSettings {
        urls,
        cluster,
        sentinel_master,
        key_prefix,
        timeout: Duration::from_millis(timeout),
        fail_closed: raw.redis_fail_closed.unwrap_or(false),
    }))
}

impl LogtoConfig {
    /// Reads the `logto` table of `figment` (already profile-selected, as Rocket's is), and
    /// nothing else: the `LOGTO_*` variables count only when `figment` has merged
    /// [`LogtoEnv`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`], one line naming the key and the fix, when the table is missing,
    /// a required key is missing, or a key has a value of the wrong type or out of range.
    pub fn from_figment(figment: &Figment) -> Result<LogtoConfig, ConfigError> {
        if !figment.contains("logto") {
            return Err(ConfigError(
                "logto config: the `logto` table is missing: add [default.logto] with endpoint, \
                 app_id, app_secret and base_url to Rocket.toml (or set LOGTO_ENDPOINT, \
                 LOGTO_APP_ID, LOGTO_APP_SECRET, LOGTO_BASE_URL)"
                    .into(),
            ));
        }
        let raw: RawConfig = figment.extract_inner("logto").map_err(|e| {
            let e = e
                .into_iter()
                .next()
                .map(|e| e.to_string())
                .unwrap_or_default();
            // Figment quotes the value it could not use: never a password of a URL.
            ConfigError(format!("logto config: {}", mask_passwords(&e)))
        })?;
        let config = Self::validate(raw)?;
        for warning in config.warnings() {
            log::warn!("{warning}");
        }
        Ok(config)
    }

    /// `figment` with the variables `env` finds on top, as [`LogtoEnv`] would merge them.
    #[cfg(test)]
    pub(crate) fn from_figment_with_env(
        figment: &Figment,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<LogtoConfig, ConfigError> {
        Self::from_figment(&figment.clone().merge(LogtoEnv::with_lookup(env)))
    }

    /// Settings that work but are probably not what was meant, one line each.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let margin = self.token_refresh_margin.as_secs();
        if margin > MARGIN_WARNING_SECS {
            warnings.push(format!(
                "logto config: `token_refresh_margin_secs` is {margin}: access tokens (which Logto \
                 issues for {ACCESS_TOKEN_LIFETIME_SECS} s by default) are refreshed once less \
                 than that is left, so about every {} s; keep it at most {MARGIN_WARNING_SECS} \
                 (default 60)",
                ACCESS_TOKEN_LIFETIME_SECS.saturating_sub(margin)
            ));
        }
        warnings
    }

    fn validate(raw: RawConfig) -> Result<LogtoConfig, ConfigError> {
        let redis = redis_settings(&raw)?;
        let session_store = session_store(raw.session_store.as_deref(), redis.is_some())?;
        let endpoint = http_url("endpoint", Some("LOGTO_ENDPOINT"), raw.endpoint)?;
        // Without `app_id` and `app_secret` the app signs nobody in: an API, which needs
        // the resources it serves. Either of them set means a web app, which needs all three.
        let given = |v: &Option<String>| v.as_ref().is_some_and(|v| !v.trim().is_empty());
        let api_only = !given(&raw.app_id) && !given(&raw.app_secret);
        if api_only && raw.resources.is_empty() {
            return Err(ConfigError(
                "logto config: neither a web app nor an API is configured: to sign users in, set                  app_id, app_secret and base_url under [default.logto] (or LOGTO_APP_ID,                  LOGTO_APP_SECRET, LOGTO_BASE_URL); to protect an API, list the resources it serves                  in `resources` (urn:logto:resource:organizations for organization tokens)"
                    .into(),
            ));
        }
        let base_url = match raw.base_url {
            None if api_only => Url::parse("http://localhost/").expect("a valid URL"),
            base_url => http_url("base_url", Some("LOGTO_BASE_URL"), base_url)?,
        };
        let base_path = base_url.path().trim_end_matches('/');
        if !base_path.is_empty()
            && !base_path[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
            })
        {
            return Err(err(
                "base_url",
                format!("has the path {base_path:?}; expected path segments of letters, digits, `-`, `_`, `.`, `~` (e.g. https://example.com/app)"),
            ));
        }
        let (app_id, app_secret) = if api_only {
            (String::new(), String::new())
        } else {
            let app_id = raw.app_id.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                err(
                    "app_id",
                    "is missing: set it under [default.logto] in Rocket.toml or in LOGTO_APP_ID",
                )
            })?;
            let app_secret = raw.app_secret.filter(|v| !v.is_empty()).ok_or_else(|| {
                err(
                    "app_secret",
                    "is missing: a traditional web app needs its secret; set LOGTO_APP_SECRET \
                     (preferred) or app_secret under [default.logto]",
                )
            })?;
            (app_id, app_secret)
        };

        let mut scopes = Vec::new();
        for scope in raw.scopes {
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                return Err(err(
                    "scopes",
                    format!("has {scope:?}: a scope is one word without spaces"),
                ));
            }
            if !scopes.contains(&scope) && !DEFAULT_SCOPES.iter().any(|d| d.as_str() == scope) {
                scopes.push(scope);
            }
        }
        let mut resources: Vec<String> = Vec::new();
        for resource in raw.resources {
            if Url::parse(&resource).is_err() {
                return Err(err(
                    "resources",
                    format!("has {resource:?}, which is not an absolute URI (e.g. https://api.example.com)"),
                ));
            }
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
        if scopes
            .iter()
            .any(|s| s == UserScope::Organizations.as_str())
            && !resources.iter().any(|r| r == ORGANIZATIONS_RESOURCE)
        {
            resources.push(ORGANIZATIONS_RESOURCE.to_string());
        }

        let prompt = raw.prompt.unwrap_or_else(|| "consent".into());
        if prompt.split(' ').any(|p| !PROMPTS.contains(&p)) {
            return Err(err(
                "prompt",
                format!("is {prompt:?}; expected space-separated values of {PROMPTS:?}"),
            ));
        }

        let routes_prefix = raw.routes_prefix.unwrap_or_else(|| "logto".into());
        let routes_prefix = routes_prefix.trim_matches('/').to_string();
        if routes_prefix.is_empty()
            || !routes_prefix.split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
        {
            return Err(err("routes_prefix", format!("is {routes_prefix:?}; expected path segments of letters, digits, `-`, `_`, `.` (e.g. \"logto\")")));
        }

        let post_sign_in_redirect = match raw.post_sign_in_redirect {
            None => ReturnPath::root_of(&base_url),
            Some(target) => ReturnPath::from_config(&target, &base_url)
                .map_err(|why| err("post_sign_in_redirect", why))?,
        };
        let post_sign_out_redirect = match raw.post_sign_out_redirect {
            None => base_url.clone(),
            Some(v) => http_url("post_sign_out_redirect", None, Some(v))?,
        };

        // The same checks as a sign-in link's options (`sign_in.rs`).
        let first_screen = match &raw.first_screen {
            Some(screen) => Some(
                FirstScreen::parse(screen)
                    .map_err(|e| err("first_screen", format!("is {screen:?}: {e}")))?,
            ),
            None => None,
        };
        for identifier in &raw.identifiers {
            if !IDENTIFIERS.contains(&identifier.as_str()) {
                return Err(err(
                    "identifiers",
                    format!("has {identifier:?}; expected values of {IDENTIFIERS:?}"),
                ));
            }
        }
        let direct_sign_in = match &raw.direct_sign_in {
            Some(direct) => Some(
                DirectSignIn::parse(direct)
                    .map_err(|e| err("direct_sign_in", format!("is {direct:?}: {e}")))?,
            ),
            None => None,
        };
        for key in raw.extra_params.keys() {
            if RESERVED_PARAMS.contains(&key.as_str()) {
                return Err(err(
                    "extra_params",
                    format!("sets {key:?}, which has its own key or is set by the library"),
                ));
            }
        }

        let session_inactivity = secs(
            "session_inactivity_secs",
            raw.session_inactivity_secs,
            14 * 86_400,
            400 * 86_400,
        )?;
        let session_lifetime = secs(
            "session_lifetime_secs",
            raw.session_lifetime_secs,
            30 * 86_400,
            400 * 86_400,
        )?;
        if session_inactivity.is_zero() || session_lifetime.is_zero() {
            return Err(err(
                "session_inactivity_secs",
                "and `session_lifetime_secs` must be more than 0",
            ));
        }
        let http_timeout = secs("http_timeout_secs", raw.http_timeout_secs, 10, 120)?;
        if http_timeout.is_zero() {
            return Err(err("http_timeout_secs", "must be more than 0"));
        }
        let margin = raw.token_refresh_margin_secs.unwrap_or(60);
        if margin >= ACCESS_TOKEN_LIFETIME_SECS {
            return Err(err(
                "token_refresh_margin_secs",
                format!(
                    "is {margin}, at or above the {ACCESS_TOKEN_LIFETIME_SECS} s that Logto's \
                     access tokens live by default, so every request would refresh them; set it \
                     to at most {MARGIN_WARNING_SECS} (default 60)"
                ),
            ));
        }
        let rotation_grace = secs("rotation_grace_secs", raw.rotation_grace_secs, 60, 600)?;
        if rotation_grace.is_zero() {
            return Err(err(
                "rotation_grace_secs",
                "must be at least 1: the parallel requests of one browser need a moment to \
                 follow a rotation (default 60)",
            ));
        }

        let m2m =
            match (
                raw.m2m_app_id.filter(|v| !v.trim().is_empty()),
                raw.m2m_app_secret.filter(|v| !v.is_empty()),
            ) {
                (None, None) => None,
                (Some(app_id), Some(secret)) => Some(M2mCredentials {
                    app_id,
                    secret: AppSecret(secret),
                }),
                (Some(_), None) => return Err(err(
                    "m2m_app_secret",
                    "is missing: `m2m_app_id` is set, and its machine-to-machine app needs its \
                     secret; set LOGTO_M2M_APP_SECRET (preferred) or m2m_app_secret",
                )),
                (None, Some(_)) => {
                    return Err(err(
                        "m2m_app_id",
                        "is missing: `m2m_app_secret` is set; set the machine-to-machine app's id \
                     in m2m_app_id (or LOGTO_M2M_APP_ID)",
                    ))
                }
            };
        let management_api_resource = match raw.management_api_resource {
            None => DEFAULT_MANAGEMENT_API_RESOURCE.to_string(),
            Some(r) => {
                if Url::parse(&r).is_err() {
                    return Err(err(
                        "management_api_resource",
                        format!("is {r:?}, which is not an absolute URI (e.g. https://<tenant-id>.logto.app/api)"),
                    ));
                }
                r
            }
        };

        Ok(LogtoConfig {
            endpoint,
            app_id,
            app_secret: AppSecret(app_secret),
            base_url,
            scopes,
            resources,
            prompt,
            fetch_user_info: raw.fetch_user_info,
            routes_prefix,
            post_sign_in_redirect,
            post_sign_out_redirect,
            first_screen,
            identifiers: raw.identifiers,
            direct_sign_in,
            login_hint: raw.login_hint,
            extra_params: raw.extra_params,
            clock_skew: secs("clock_skew_secs", raw.clock_skew_secs, 60, 600)?,
            http_timeout,
            token_refresh_margin: Duration::from_secs(margin),
            rotation_grace,
            session_inactivity,
            session_lifetime,
            refresh_cache_entries: entries(
                "refresh_cache_entries",
                raw.refresh_cache_entries,
                10_000,
            )?,
            spent_state_entries: entries("spent_state_entries", raw.spent_state_entries, 100_000)?,
            session_cache_entries: entries(
                "session_cache_entries",
                raw.session_cache_entries,
                4096,
            )?,
            bearer_cache_entries: entries(
                "bearer_cache_entries",
                raw.bearer_cache_entries,
                10_000,
            )?,
            api_only,
            redis,
            session_store,
            m2m,
            management_api_resource,
        })
    }

    /// Whether this configuration only protects an API: no `app_id` and `app_secret`, so
    /// the fairing mounts no sign-in routes and the guards that sign users in
    /// ([`AuthenticatedUser`](crate::AuthenticatedUser) and the others) stop the launch.
    pub fn is_api_only(&self) -> bool {
        self.api_only
    }

    /// The issuer: `<endpoint>/oidc` (a path in the endpoint, e.g. a tenant, is kept).
    pub fn issuer(&self) -> String {
        format!("{}/oidc", self.endpoint.as_str().trim_end_matches('/'))
    }

    /// The redirect URI to register in Logto: `<base_url>/<routes_prefix>/sign-in-callback`.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/{}/sign-in-callback",
            self.base_url.as_str().trim_end_matches('/'),
            self.routes_prefix
        )
    }

    /// Every scope sent at sign-in: `openid offline_access profile`, then the configured ones.
    pub fn requested_scopes(&self) -> Vec<&str> {
        DEFAULT_SCOPES
            .iter()
            .map(|s| s.as_str())
            .chain(self.scopes.iter().map(String::as_str))
            .collect()
    }

    /// Whether the organizations scope is configured (needed for organization tokens).
    pub fn has_organizations_scope(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| s == UserScope::Organizations.as_str())
    }

    /// Whether session cookies get the `Secure` attribute (when `base_url` is https).
    pub fn secure_cookies(&self) -> bool {
        self.base_url.scheme() == "https"
    }

    /// Where the fairing mounts the auth routes: the path of `base_url`, then
    /// `routes_prefix`. `/logto` for `http://localhost:8000`, `/app/logto` for
    /// `https://example.com/app`.
    pub fn routes_base(&self) -> String {
        let base = self.base_url.path().trim_end_matches('/');
        format!("{base}/{}", self.routes_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<LogtoConfig, ConfigError> {
        let figment = Figment::from(Toml::string(toml));
        LogtoConfig::from_figment_with_env(&figment, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const FULL: &str = r#"
        [logto]
        endpoint = "http://localhost:3001"
        app_id = "app"
        app_secret = "secret"
        base_url = "http://localhost:8000"
    "#;

    #[test]
    fn m2m_credentials_come_in_pairs_and_the_secret_from_the_environment() {
        let cfg = load(FULL, &[]).unwrap();
        assert!(cfg.m2m_app_id().is_none() && cfg.m2m_app_secret().is_none());
        assert_eq!(
            cfg.management_api_resource(),
            DEFAULT_MANAGEMENT_API_RESOURCE
        );
        let cfg = load(
            &format!("{FULL}m2m_app_id = \"m2m\"\nmanagement_api_resource = \"https://t1.logto.app/api\""),
            &[("LOGTO_M2M_APP_SECRET", "m2m-s3cr3t")],
        )
        .unwrap();
        assert_eq!(cfg.m2m_app_id(), Some("m2m"));
        assert_eq!(
            cfg.m2m_app_secret().map(AppSecret::expose),
            Some("m2m-s3cr3t")
        );
        assert_eq!(cfg.management_api_resource(), "https://t1.logto.app/api");
        assert!(!format!("{cfg:?}").contains("m2m-s3cr3t"), "{cfg:?}");
        let e = load(&format!("{FULL}m2m_app_id = \"m2m\""), &[]).unwrap_err();
        assert!(e.0.contains("`m2m_app_secret` is missing"), "{e}");
        let e = load(&format!("{FULL}m2m_app_secret = \"x\""), &[]).unwrap_err();
        assert!(e.0.contains("`m2m_app_id` is missing"), "{e}");
        let e = load(&format!("{FULL}management_api_resource = \"api\""), &[]).unwrap_err();
        assert!(e.0.contains("`management_api_resource`"), "{e}");
    }

    #[test]
    fn session_store_is_cookie_or_redis_with_a_redis_url() {
        assert_eq!(
            load(FULL, &[]).unwrap().session_store,
            SessionStoreKind::Cookie
        );
        let redis = "redis_url = \"redis://user:s3cr3t-pw@127.0.0.1:6379\"\n";
        let with = |extra: &str, env: &[(&str, &str)]| load(&format!("{FULL}{extra}"), env);
        let kind = |extra: &str, env: &[(&str, &str)]| with(extra, env).unwrap().session_store;
        assert_eq!(
            kind(&format!("{redis}session_store = \"redis\""), &[]),
            SessionStoreKind::Redis
        );
        assert_eq!(
            kind(&format!("{redis}session_store = \"cookie\""), &[]),
            SessionStoreKind::Cookie
        );
        assert_eq!(
            kind(redis, &[("LOGTO_SESSION_STORE", "redis")]),
            SessionStoreKind::Redis
        );
        // Bad values: the key, the accepted values, never the password.
        for (extra, env, expect) in [
            (
                format!("{redis}session_store = \"memcached\""),
                vec![],
                "expected \"cookie\"",
            ),
            (
                format!("{redis}session_store = \"Redis\""),
                vec![],
                "expected \"cookie\"",
            ),
            (
                format!("{redis}session_store = \"\""),
                vec![],
                "expected \"cookie\"",
            ),
            (format!("{redis}session_store = 1"), vec![], "session_store"),
            (
                format!("{redis}session_store = [\"redis\"]"),
                vec![],
                "session_store",
            ),
            (
                redis.to_string(),
                vec![("LOGTO_SESSION_STORE", "files")],
                "expected \"cookie\"",
            ),
            (
                "session_store = \"redis\"".to_string(),
                vec![],
                "`redis_url` is not set",
            ),
            (
                String::new(),
                vec![("LOGTO_SESSION_STORE", "redis")],
                "`redis_url` is not set",
            ),
        ] {
            let e = with(&extra, &env).unwrap_err().to_string();
            assert!(
                e.contains("session_store") && e.contains(expect),
                "{extra:?}: {e}"
            );
            assert!(!e.contains("s3cr3t-pw"), "{e}");
        }
    }

    #[test]
    fn defaults_fill_every_optional_key() {
        let cfg = load(FULL, &[]).unwrap();
        assert_eq!(cfg.prompt, "consent");
        assert_eq!(cfg.routes_prefix, "logto");
        assert_eq!(
            cfg.post_sign_out_redirect.as_str(),
            "http://localhost:8000/"
        );
        assert_eq!(cfg.post_sign_in_redirect.as_str(), "/");
        assert_eq!(cfg.issuer(), "http://localhost:3001/oidc");
        assert_eq!(
            cfg.redirect_uri(),
            "http://localhost:8000/logto/sign-in-callback"
        );
        assert_eq!(
            cfg.requested_scopes(),
            ["openid", "offline_access", "profile"]
        );
        assert_eq!(cfg.clock_skew, Duration::from_secs(60));
        assert!(!cfg.secure_cookies());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let cfg = load(
            FULL,
            &[
                ("LOGTO_APP_ID", "12345"),
                ("LOGTO_BASE_URL", "https://app.example"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.app_id, "12345");
        assert!(cfg.secure_cookies());
    }

    #[test]
    fn environment_alone_is_enough() {
        let cfg = load(
            "",
            &[
                ("LOGTO_ENDPOINT", "https://t.logto.app/tenant"),
                ("LOGTO_APP_ID", "a"),
                ("LOGTO_APP_SECRET", "s"),
                ("LOGTO_BASE_URL", "http://localhost:8000"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.issuer(), "https://t.logto.app/tenant/oidc");
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = load(
            "[logto]\nendpoint = \"http://x\"\nbase_url = \"http://y\"\napp_secret = \"s\"",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("`app_id` is missing") && e.0.contains("LOGTO_APP_ID"),
            "{e}"
        );
        let e = load("", &[]).unwrap_err();
        assert!(e.0.contains("`logto` table is missing"), "{e}");
    }

    #[test]
    fn a_malformed_key_is_named() {
        for (line, key) in [
            ("endpoint = \"not a url\"", "endpoint"),
            ("fetch_user_info = \"yes\"", "fetch_user_info"),
            ("first_screen = \"welcome\"", "first_screen"),
            ("identifiers = [\"fax\"]", "identifiers"),
            ("direct_sign_in = \"google\"", "direct_sign_in"),
            ("prompt = \"always\"", "prompt"),
            ("resources = [\"shopping\"]", "resources"),
            ("routes_prefix = \"a b\"", "routes_prefix"),
            (
                "post_sign_in_redirect = \"https://evil.example/\"",
                "post_sign_in_redirect",
            ),
            ("extra_params = { state = \"x\" }", "extra_params"),
            ("app_secrett = \"typo\"", "app_secrett"),
        ] {
            let e = load(&format!("{FULL}\n{line}"), &[]).unwrap_err();
            assert!(e.0.contains(key), "{line}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_refresh_margin_at_or_above_the_access_token_lifetime_is_refused() {
        for (value, why) in [
            ("3600", "every request would refresh"),
            ("86400", "every request would refresh"),
            ("-1", "token_refresh_margin_secs"),
            ("\"60\"", "token_refresh_margin_secs"),
        ] {
            let e = load(&format!("{FULL}\ntoken_refresh_margin_secs = {value}"), &[]).unwrap_err();
            assert!(e.0.contains("token_refresh_margin_secs"), "{value}: {e}");
            assert!(e.0.contains(why), "{value}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn a_large_refresh_margin_is_accepted_with_a_warning() {
        let cfg = load(FULL, &[]).unwrap();
        assert_eq!(cfg.token_refresh_margin, Duration::from_secs(60));
        assert!(cfg.warnings().is_empty());
        let cfg = load(&format!("{FULL}\ntoken_refresh_margin_secs = 600"), &[]).unwrap();
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
        for margin in [601, 3599] {
            let cfg = load(
                &format!("{FULL}\ntoken_refresh_margin_secs = {margin}"),
                &[],
            )
            .unwrap();
            assert_eq!(cfg.token_refresh_margin, Duration::from_secs(margin));
            let warnings = cfg.warnings();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains(&format!("`token_refresh_margin_secs` is {margin}")),
                "{warnings:?}"
            );
            assert!(!warnings[0].contains('\n'), "one line: {warnings:?}");
        }
    }

    #[test]
    fn rotation_grace_defaults_to_a_minute_and_is_bounded() {
        assert_eq!(
            load(FULL, &[]).unwrap().rotation_grace,
            Duration::from_secs(60)
        );
        let cfg = load(&format!("{FULL}\nrotation_grace_secs = 1"), &[]).unwrap();
        assert_eq!(cfg.rotation_grace, Duration::from_secs(1));
        for (value, why) in [
            ("0", "at least 1"),
            ("601", "more than the maximum 600"),
            ("86400", "more than the maximum 600"),
            ("-5", "rotation_grace_secs"),
            ("\"1m\"", "rotation_grace_secs"),
        ] {
            let e = load(&format!("{FULL}\nrotation_grace_secs = {value}"), &[]).unwrap_err();
            assert!(e.0.contains("rotation_grace_secs"), "{value}: {e}");
            assert!(e.0.contains(why), "{value}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn an_app_under_a_path_has_every_route_and_redirect_under_it() {
        let under = |base: &str| {
            load(
                &FULL.replace("http://localhost:8000", base),
                &[("LOGTO_BASE_URL", base)],
            )
        };
        for base in ["https://example.com/app", "https://example.com/app/"] {
            let cfg = under(base).unwrap();
            assert_eq!(cfg.routes_base(), "/app/logto", "{base}");
            assert_eq!(
                cfg.redirect_uri(),
                "https://example.com/app/logto/sign-in-callback"
            );
            assert!(cfg.post_sign_in_redirect.as_str().starts_with("/app"));
        }
        assert_eq!(
            under("http://localhost:8000").unwrap().routes_base(),
            "/logto"
        );
        for bad in [
            "https://example.com/a%20b",
            "https://example.com/<x>",
            "https://example.com/a//b",
        ] {
            let e = under(bad).unwrap_err();
            assert!(e.0.contains("`base_url`"), "{bad}: {e}");
        }
    }

    #[test]
    fn organizations_scope_adds_its_resource_once() {
        let cfg = load(&format!("{FULL}\nscopes = [\"urn:logto:scope:organizations\", \"email\", \"email\", \"openid\"]"), &[]).unwrap();
        assert_eq!(cfg.scopes, ["urn:logto:scope:organizations", "email"]);
        assert_eq!(cfg.resources, [ORGANIZATIONS_RESOURCE]);
    }

    #[test]
    fn an_api_needs_only_the_endpoint_and_its_resources() {
        let cfg = load(
            "[logto]\nendpoint = \"http://localhost:3001\"\nresources = [\"https://api.example.com\"]",
            &[],
        )
        .unwrap();
        assert!(cfg.is_api_only());
        assert_eq!(cfg.resources, ["https://api.example.com"]);
        assert_eq!(cfg.issuer(), "http://localhost:3001/oidc");
        assert_eq!(cfg.bearer_cache_entries, 10_000);
        // The environment alone, as the API example is configured.
        let cfg = load(
            "[logto]\nresources = [\"https://api.example.com\"]",
            &[("LOGTO_ENDPOINT", "http://127.0.0.1:3001")],
        )
        .unwrap();
        assert!(cfg.is_api_only());
        // A web app and an API at once.
        let cfg = load(
            &format!("{FULL}\nresources = [\"https://api.example.com\"]"),
            &[],
        )
        .unwrap();
        assert!(!cfg.is_api_only());
    }

    #[test]
    fn a_config_that_is_neither_a_web_app_nor_an_api_is_refused() {
        for toml in [
            "[logto]\nendpoint = \"http://localhost:3001\"",
            "[logto]\nendpoint = \"http://localhost:3001\"\nbase_url = \"http://localhost:8000\"",
        ] {
            let e = load(toml, &[]).unwrap_err();
            assert!(
                e.0.contains("neither a web app nor an API") && e.0.contains("resources"),
                "{e}"
            );
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
        // Half a web app is a web app with a missing key, API resources or not.
        let e = load(
            "[logto]\nendpoint = \"http://x\"\napp_id = \"a\"\nbase_url = \"http://y\"\nresources = [\"https://api.example.com\"]",
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("`app_secret` is missing"), "{e}");
        let e = load(
            "[logto]\nendpoint = \"http://x\"\nresources = [\"https://api.example.com\"]",
            &[("LOGTO_APP_SECRET", "s"), ("LOGTO_BASE_URL", "http://y")],
        )
        .unwrap_err();
        assert!(e.0.contains("`app_id` is missing"), "{e}");
        // Test mode has no configuration key.
        let e = load(&format!("{FULL}\ntrust_test_key = true"), &[]).unwrap_err();
        assert!(e.0.contains("trust_test_key"), "{e}");
    }

    #[test]
    fn redis_is_off_by_default_and_read_from_the_file_or_the_environment() {
        assert!(load(FULL, &[]).unwrap().redis.is_none());
        let cfg = load(
            &format!("{FULL}\nredis_url = \"redis://127.0.0.1:6379\""),
            &[],
        )
        .unwrap();
        let redis = cfg.redis.unwrap();
        assert_eq!(redis.urls.len(), 1);
        assert_eq!(redis.urls[0].expose(), "redis://127.0.0.1:6379");
        assert!(!redis.cluster && !redis.fail_closed);
        assert_eq!(redis.key_prefix, DEFAULT_REDIS_KEY_PREFIX);
        assert_eq!(redis.timeout, Duration::from_millis(1000));
        let cfg = load(
            FULL,
            &[("LOGTO_REDIS_URL", "rediss://u:p@cache.example:6380/2")],
        )
        .unwrap();
        assert!(cfg.redis.unwrap().urls[0].is_tls());
        let cfg = load(
            &format!(
                "{FULL}\nredis_url = \"redis://a:7000, redis://b:7001\"\nredis_cluster = true\n\
                 redis_key_prefix = \"shop:auth:\"\nredis_timeout_ms = 250\nredis_fail_closed = true"
            ),
            &[],
        )
        .unwrap();
        let redis = cfg.redis.unwrap();
        assert_eq!(redis.urls.len(), 2);
        assert!(redis.cluster && redis.fail_closed);
        let cfg = load(
            &format!("{FULL}\nredis_url = [\"redis://a:7000\", \"redis://b:7001\"]\nredis_cluster = true"),
            &[],
        )
        .unwrap();
        assert_eq!(cfg.redis.unwrap().urls[1].expose(), "redis://b:7001");
        let cfg = load(
            &format!("{FULL}\nredis_url = \"redis://s1:26379,redis://s2:26379\"\nredis_sentinel_master = \"mymaster\""),
            &[],
        )
        .unwrap();
        let sentinel = cfg.redis.unwrap();
        assert_eq!(sentinel.sentinel_master.as_deref(), Some("mymaster"));
        assert_eq!(sentinel.urls.len(), 2);
        assert!(!sentinel.cluster);
        assert_eq!(redis.key_prefix, "shop:auth:");
        assert_eq!(redis.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_redis_settings_are_refused_by_name_and_never_show_the_password() {
        for (lines, key, why) in [
            ("redis_url = \"\"", "redis_url", "empty"),
            ("redis_url = \"   \"", "redis_url", "empty"),
            (
                "redis_url = \"http://:hunter2pw@h:6379\"",
                "redis_url",
                "scheme `http`",
            ),
            (
                "redis_url = \"unix:///tmp/redis.sock\"",
                "redis_url",
                "scheme `unix`",
            ),
            ("redis_url = \"127.0.0.1:6379\"", "redis_url", "redis://"),
            (
                "redis_url = \"redis://:hunter2pw@\"",
                "redis_url",
                "not a URL",
            ),
            (
                "redis_url = \"redis://:hunter2pw@h:6379/x\"",
                "redis_url",
                "database number",
            ),
            (
                "redis_url = \"redis://:hunter2pw@h:99999\"",
                "redis_url",
                "not a URL",
            ),
            (
                "redis_url = \"redis://:hunter2pw@h:6379?db=1\"",
                "redis_url",
                "query",
            ),
            (
                "redis_url = \"redis://:hunter2pw@a,redis://b\"",
                "redis_url",
                "redis_cluster = true",
            ),
            (
                "redis_url = \"redis://a/1\"\nredis_cluster = true",
                "redis_url",
                "database",
            ),
            (
                "redis_url = \"redis://:hunter2pw@a:26379\"\nredis_sentinel_master = \"m\"\nredis_cluster = true",
                "redis_sentinel_master",
                "not both",
            ),
            (
                "redis_url = \"redis://a:26379\"\nredis_sentinel_master = \"\"",
                "redis_sentinel_master",
                "mymaster",
            ),
            (
                "redis_url = \"redis://a:26379/2\"\nredis_sentinel_master = \"m\"",
                "redis_url",
                "sentinel",
            ),
            (
                "redis_sentinel_master = \"mymaster\"",
                "redis_sentinel_master",
                "without `redis_url`",
            ),
            (
                "redis_url = \"redis://a,\"\nredis_cluster = true",
                "redis_url",
                "empty",
            ),
            ("redis_url = 6379", "redis_url", "redis_url"),
            ("redis_url = []", "redis_url", "empty list"),
            (
                "redis_url = [\"redis://:hunter2pw@a\", 5]",
                "redis_url",
                "redis_url",
            ),
            (
                "redis_cluster = \"redis://:hunter2pw@a\"",
                "redis_cluster",
                "redis_cluster",
            ),
            (
                "redis_cluster = true",
                "redis_cluster",
                "without `redis_url`",
            ),
            (
                "redis_timeout_ms = 5",
                "redis_timeout_ms",
                "without `redis_url`",
            ),
            (
                "redis_url = \"redis://h\"\nredis_timeout_ms = 5",
                "redis_timeout_ms",
                "10 to 60000",
            ),
            (
                "redis_url = \"redis://h\"\nredis_timeout_ms = 600000",
                "redis_timeout_ms",
                "10 to 60000",
            ),
            (
                "redis_url = \"redis://h\"\nredis_key_prefix = \"\"",
                "redis_key_prefix",
                "braces",
            ),
            (
                "redis_url = \"redis://h\"\nredis_key_prefix = \"{app}:\"",
                "redis_key_prefix",
                "braces",
            ),
            (
                "redis_url = \"redis://h\"\nredis_key_prefix = \"my app\"",
                "redis_key_prefix",
                "spaces",
            ),
            (
                "redis_url = \"redis://h\"\nredis_fail_closed = \"yes\"",
                "redis_fail_closed",
                "redis_fail_closed",
            ),
        ] {
            let e = load(&format!("{FULL}\n{lines}"), &[]).unwrap_err();
            assert!(e.0.contains(key), "{lines}: {e}");
            assert!(e.0.contains(why), "{lines}: {e}");
            assert!(
                !e.0.contains("hunter2pw"),
                "{lines}: the password shows in {e}"
            );
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn passwords_in_quoted_values_are_masked() {
        assert_eq!(
            mask_passwords("found string \"redis://app:pw@h:1/0\", expected"),
            "found string \"redis://app:***@h:1/0\", expected"
        );
        assert_eq!(
            mask_passwords("a redis://:pw@a,rediss://u:p@b c http://host/x"),
            "a redis://:***@a,rediss://u:***@b c http://host/x"
        );
        assert_eq!(mask_passwords("no url"), "no url");
        assert_eq!(mask_passwords("x://"), "x://");
    }

    #[test]
    fn the_redis_password_never_prints() {
        let cfg = load(
            FULL,
            &[(
                "LOGTO_REDIS_URL",
                "rediss://app:hunter2pw@cache.example:6380/0",
            )],
        )
        .unwrap();
        let redis = cfg.redis.as_ref().unwrap();
        assert_eq!(
            redis.urls[0].to_string(),
            "rediss://app:***@cache.example:6380/0"
        );
        for shown in [
            format!("{cfg:?}"),
            format!("{redis:?}"),
            redis.urls[0].to_string(),
        ] {
            assert!(!shown.contains("hunter2pw"), "{shown}");
        }
        assert!(redis.urls[0].expose().contains("hunter2pw"));
    }

    #[test]
    fn session_store_kind_parses_and_prints_its_config_value() {
        for kind in [SessionStoreKind::Cookie, SessionStoreKind::Redis] {
            assert_eq!(kind.to_string().parse::<SessionStoreKind>(), Ok(kind));
        }
        assert_eq!(" redis ".parse(), Ok(SessionStoreKind::Redis));
        let e = "Redis".parse::<SessionStoreKind>().unwrap_err();
        assert!(
            e.0.contains("`session_store`") && e.0.contains("\"cookie\""),
            "{e}"
        );
    }

    #[test]
    fn the_environment_provider_sets_strings_of_the_logto_table_only_where_merged() {
        let env = LogtoEnv::with_lookup(|name| match name {
            "LOGTO_APP_ID" => Some("12345".into()),
            "LOGTO_APP_SECRET" => Some("s3cr3t-value".into()),
            "LOGTO_BASE_URL" => Some(String::new()),
            _ => None,
        });
        // A number-like value stays a string; an empty one sets nothing.
        let figment = Figment::from(Toml::string(FULL)).merge(env.clone());
        let cfg = LogtoConfig::from_figment(&figment).unwrap();
        assert_eq!(cfg.app_id(), "12345");
        assert_eq!(cfg.base_url(), "http://localhost:8000/");
        assert_eq!(env.set_names(), ["LOGTO_APP_ID", "LOGTO_APP_SECRET"]);
        assert!(!format!("{env:?}").contains("s3cr3t"), "{env:?}");
        // Without it, the figment alone.
        let cfg = LogtoConfig::from_figment(&Figment::from(Toml::string(FULL))).unwrap();
        assert_eq!(cfg.app_id(), "app");
        // In every profile: Rocket's figments are profile-selected.
        let figment =
            Figment::from(Toml::string(&FULL.replace("[logto]", "[release.logto]")).nested())
                .merge(env)
                .select("release");
        assert_eq!(
            LogtoConfig::from_figment(&figment).unwrap().app_id(),
            "12345"
        );
    }

    #[test]
    fn sign_in_experience_keys_are_typed() {
        let cfg = load(
            &format!("{FULL}\nfirst_screen = \"register\"\ndirect_sign_in = \"social:google\""),
            &[],
        )
        .unwrap();
        assert_eq!(cfg.first_screen(), Some(FirstScreen::Register));
        assert_eq!(
            cfg.direct_sign_in().map(DirectSignIn::as_str),
            Some("social:google")
        );
        assert_eq!(cfg.prompt(), "consent");
        assert!(!cfg.app_secret().is_empty());
    }

    #[test]
    fn the_secret_never_prints() {
        let cfg = load(FULL, &[]).unwrap();
        assert!(!format!("{cfg:?}").contains("secret\""));
        assert!(format!("{cfg:?}").contains("***"));
    }
}
