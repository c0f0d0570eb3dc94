//! Everything that talks to Logto: discovery (see [`crate::oidc::discovery`]), ID token
//! verification (see [`crate::oidc::jwt`]), the token endpoint (code exchange, refresh with
//! `resource` / `organization_id`), userinfo, revocation and the end-session URL.
//!
//! Token, userinfo and revocation requests go through our own small `reqwest` calls rather
//! than `openidconnect`'s request builders: those hide the HTTP status and headers, and we
//! need them (403 for non-members, 429 with `Retry-After`, 5xx vs 4xx) to give the right
//! answer. `openidconnect` still does the cryptography: JWKS parsing, signature
//! verification, PKCE, `state` and `nonce` generation.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::claims::IdTokenClaims;
use crate::config::LogtoConfig;
use crate::error::{LogtoError, OAuthErrorCode, ProviderFailure};
use crate::oidc::discovery::{DiscoveryCache, DiscoverySource};
use crate::oidc::jwt::{self, Expected, JwtError, Kind};
use crate::util::telemetry::{self, Endpoint};

pub(crate) use crate::oidc::discovery::Discovery;

/// Discovery is fetched again after this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` refetches the JWKS at most this often, whatever the `kid`.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Largest answer read from Logto; more is refused rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// A successful token endpoint answer. No `Debug`: it holds tokens.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// How a call to Logto failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderError {
    /// The request never left: connection refused, DNS, connect timeout. Logto did nothing.
    NotSent { what: &'static str, timed_out: bool },
    /// The request was sent but no answer came back: a timeout after sending, or the
    /// connection closed before the answer. Logto may have acted on it (rotated a token).
    NoAnswer { what: &'static str, timed_out: bool },
    /// HTTP 429.
    RateLimited {
        what: &'static str,
        retry_after: Option<u64>,
    },
    /// An answer that is not what the protocol says (HTML, truncated JSON).
    Malformed(String),
    /// HTTP 5xx: Logto failed before doing anything.
    ServerError { what: &'static str, status: u16 },
    /// An OAuth error answer (4xx with `error`).
    Refused {
        what: &'static str,
        status: u16,
        error: String,
        description: String,
    },
}

impl ProviderError {
    /// The `outcome` label of a failed call (a short fixed list).
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::NotSent {
                timed_out: true, ..
            }
            | ProviderError::NoAnswer {
                timed_out: true, ..
            } => "timeout",
            ProviderError::NotSent { .. } => "unreachable",
            ProviderError::NoAnswer { .. } => "no_answer",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::ServerError { .. } => "server_error",
            ProviderError::Refused { .. } => "refused",
        }
    }

    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, ProviderError::Refused { error, .. } if error == "invalid_grant")
    }

    /// Whether the refresh token may have been spent by the failed request: anything but
    /// a request that never left, a rate limit, a server error, or a refusal about this one
    /// target (403, missing scope). A request that was sent and got no answer may have
    /// rotated the token at Logto, like a garbled answer.
    pub fn may_have_spent_token(&self) -> bool {
        match self {
            ProviderError::NotSent { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::ServerError { .. } => false,
            ProviderError::Refused { status: 403, .. } => false,
            ProviderError::Refused { error, .. } => error != "insufficient_scope",
            ProviderError::NoAnswer { .. } | ProviderError::Malformed(_) => true,
        }
    }

    /// The error for a refresh that failed this way and ended the session: an answer that
    /// never came says that the user was signed out, and why.
    pub fn ending_the_session(self) -> LogtoError {
        match self {
            ProviderError::NoAnswer { .. } => LogtoError::unavailable(format!(
                "{}; you were signed out because Logto may have used up the refresh token: sign in again.",
                self.without_advice()
            ))
            .with_cause(self.failure()),
            other => other.into(),
        }
    }

    /// What happened to the request, for a message that still needs its advice.
    fn without_advice(&self) -> String {
        match self {
            ProviderError::NotSent {
                what,
                timed_out: true,
            } => format!("Logto did not accept a connection for the {what} in time"),
            ProviderError::NotSent { what, .. } => {
                format!("Logto could not be reached for the {what}")
            }
            ProviderError::NoAnswer {
                what,
                timed_out: true,
            } => format!("Logto did not answer the {what} in time"),
            ProviderError::NoAnswer { what, .. } => format!(
                "Logto could not be reached for the {what}: the connection closed before its answer"
            ),
            other => LogtoError::from(other.clone()).detail().to_string(),
        }
    }
}

impl ProviderError {
    /// The public, typed account of this failure.
    pub fn failure(&self) -> ProviderFailure {
        match self {
            ProviderError::NotSent { timed_out, .. } => ProviderFailure::NotReached {
                timed_out: *timed_out,
            },
            ProviderError::NoAnswer { timed_out, .. } => ProviderFailure::NoAnswer {
                timed_out: *timed_out,
            },
            ProviderError::RateLimited { .. } => ProviderFailure::RateLimited,
            ProviderError::Malformed(_) => ProviderFailure::Malformed,
            ProviderError::ServerError { status, .. } => ProviderFailure::Status(*status),
            ProviderError::Refused { status, error, .. } => ProviderFailure::Refused {
                status: *status,
                error: OAuthErrorCode::from(error.as_str()),
            },
        }
    }
}

impl From<ProviderError> for LogtoError {
    fn from(e: ProviderError) -> LogtoError {
        let failure = e.failure();
        let error = match e {
            ProviderError::NotSent { .. } | ProviderError::NoAnswer { .. } => {
                LogtoError::unavailable(format!("{}; try again.", e.without_advice()))
            }
            ProviderError::RateLimited { what, retry_after } => {
                let error = LogtoError::unavailable(format!(
                    "Logto is rate-limiting the {what}; try again shortly."
                ));
                match retry_after {
                    Some(secs) => error.retry_after(secs),
                    None => error,
                }
            }
            ProviderError::Malformed(m) => LogtoError::bad_gateway(m),
            ProviderError::ServerError { what, status } => LogtoError::bad_gateway(format!(
                "Logto answered the {what} with HTTP {status}; try again later."
            )),
            ProviderError::Refused {
                status: 403,
                description,
                ..
            } => {
                return LogtoError::Forbidden(if description.is_empty() {
                    "Logto denied access.".into()
                } else {
                    format!("Logto denied access: {description}.")
                })
            }
            ProviderError::Refused {
                what,
                error,
                description,
                ..
            } => LogtoError::bad_gateway(
                format!("Logto refused the {what}: {error} {description}")
                    .trim_end()
                    .to_string(),
            ),
        };
        error.with_cause(failure)
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The client for one Logto tenant and app.
pub(crate) struct Provider {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    /// Allowed clock difference with Logto, seconds.
    clock_skew: i64,
    discovery: DiscoveryCache,
}

impl Provider {
    pub fn new(config: &LogtoConfig) -> Result<Provider, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            // Shorter than the whole-request timeout, so that a connection that cannot be
            // made fails as a connect error (nothing was sent, a refresh token is intact)
            // rather than as a timeout of a request that may have reached Logto.
            .connect_timeout(config.http_timeout / 2)
            // Logto runs on Node.js, whose server closes a keep-alive connection idle for 5 s.
            // A refresh sent on such a connection as it closes fails with no answer, and the
            // crate must then end the session (the token may have been spent). Never reusing
            // a connection idle for 4 s avoids that race (bench/scale found it: one user in
            // 2,000 signed out when the first refreshes of a load came 5 s after sign-in).
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .user_agent(concat!("rocket_logto/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let source = DiscoverySource {
            http: http.clone(),
            issuer: config.issuer(),
            jwks_refetch_interval: JWKS_REFETCH_INTERVAL,
        };
        Ok(Provider {
            http,
            issuer: config.issuer(),
            client_id: config.app_id.clone(),
            client_secret: config.app_secret.expose().to_string(),
            redirect_uri: config.redirect_uri(),
            clock_skew: i64::try_from(config.clock_skew.as_secs()).unwrap_or(60),
            // A failure that took a quarter of the timeout or more cost its callers real
            // time: later callers are answered at once until the backoff ends.
            discovery: DiscoveryCache::new(source, DISCOVERY_TTL, config.http_timeout / 4),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document and keys (cached; see [`crate::oidc::discovery`]).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, LogtoError> {
        self.discovery.get().await
    }

    /// How discovery and the keys stand, for a readiness probe (waits at most `wait`).
    pub async fn readiness(&self, wait: Duration) -> crate::oidc::discovery::Readiness {
        self.discovery.readiness(wait).await
    }

    /// What every token from Logto for this app must match.
    pub fn expected<'a>(&'a self, d: &'a Discovery) -> Expected<'a> {
        Expected {
            issuer: &self.issuer,
            client_id: &self.client_id,
            skew: self.clock_skew,
            algs: &d.algs,
        }
    }

    /// Verifies an ID token (see [`jwt::Kind::Id`]), with `nonce` when one was sent.
    pub async fn verify_id_token(
        &self,
        d: &Discovery,
        raw: &str,
        nonce: Option<&str>,
    ) -> Result<IdTokenClaims, LogtoError> {
        let reject = |why: &str| {
            LogtoError::BadRequest(format!("The ID token from Logto was rejected: {why}."))
        };
        let claims = jwt::verify(raw, Kind::Id { nonce }, &self.expected(d), &d.jwks)
            .await
            .map_err(|e| match e {
                JwtError::Rejected(why) => reject(&why),
                JwtError::Keys(e) => e,
            })?;
        serde_json::from_value(serde_json::Value::Object(claims))
            .map_err(|_| reject("its claims cannot be read"))
    }

    /// Exchanges an authorization code (PKCE, `client_secret_basic`, no `resource`).
    pub async fn exchange_code(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
    ) -> Result<TokenResponse, ProviderError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", &self.client_id),
        ];
        self.post_form(&d.doc.token_endpoint, &form, "code exchange")
            .await
    }

    /// Uses the refresh token, optionally for one API resource and/or organization.
    pub async fn refresh(
        &self,
        d: &Discovery,
        refresh_token: &str,
        resource: Option<&str>,
        organization_id: Option<&str>,
    ) -> Result<TokenResponse, ProviderError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", self.client_id.as_str()),
        ];
        if let Some(resource) = resource {
            form.push(("resource", resource));
        }
        if let Some(org) = organization_id {
            form.push(("organization_id", org));
        }
        self.post_form(&d.doc.token_endpoint, &form, "token refresh")
            .await
    }

    /// A token for the app itself (`client_credentials`), authenticated as the
    /// machine-to-machine app `client_id` rather than as this web app.
    pub async fn client_credentials(
        &self,
        d: &Discovery,
        client_id: &str,
        client_secret: &str,
        resource: &str,
        scope: &str,
    ) -> Result<TokenResponse, ProviderError> {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(d.doc.token_endpoint.clone())
            .basic_auth(client_id, Some(client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| send_error(&e, "client credentials request"))?;
        read_json(response, "client credentials request").await
    }

    /// Calls the userinfo endpoint with the opaque access token of the code exchange.
    pub async fn userinfo(
        &self,
        d: &Discovery,
        access_token: &str,
    ) -> Result<serde_json::Value, ProviderError> {
        let Some(endpoint) = &d.doc.userinfo_endpoint else {
            return Err(ProviderError::Malformed(
                "Logto's discovery has no userinfo endpoint".into(),
            ));
        };
        let started = telemetry::start();
        let result = async {
            let response = self
                .http
                .get(endpoint.clone())
                .bearer_auth(access_token)
                .send()
                .await
                .map_err(|e| send_error(&e, "userinfo request"))?;
            read_json(response, "userinfo request").await
        }
        .await;
        record(Endpoint::Userinfo, &result, started);
        result
    }

    /// Whether Logto still takes `refresh_token` (RFC 7662 introspection): `Some(false)`
    /// once it was rotated out (consumed), expired or revoked. `None` when Logto's discovery
    /// names no introspection endpoint, so it cannot be asked.
    ///
    /// Only asked after an instance vanished while it held the lease to send this token:
    /// an active token was not spent, so sending it cannot be taken for a replay.
    pub async fn refresh_token_is_active(
        &self,
        d: &Discovery,
        refresh_token: &str,
    ) -> Result<Option<bool>, ProviderError> {
        #[derive(Deserialize)]
        struct Introspection {
            active: bool,
        }
        let Some(endpoint) = &d.doc.introspection_endpoint else {
            return Ok(None);
        };
        let form = [
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", self.client_id.as_str()),
        ];
        let answer: Introspection = self
            .post_form_to(
                endpoint,
                &form,
                "token introspection",
                Endpoint::Introspection,
            )
            .await?;
        Ok(Some(answer.active))
    }

    /// Revokes a refresh token. Failures are logged, not returned: the local session ends
    /// whatever Logto says.
    pub async fn revoke(&self, d: &Discovery, refresh_token: &str) {
        let Some(endpoint) = &d.doc.revocation_endpoint else {
            return;
        };
        let form = [
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", &self.client_id),
        ];
        let started = telemetry::start();
        let result = self
            .http
            .post(endpoint.clone())
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&form)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                telemetry::provider_call(Endpoint::Revocation, "ok", started)
            }
            Ok(r) => {
                let outcome = if r.status().is_server_error() {
                    "server_error"
                } else {
                    "refused"
                };
                telemetry::provider_call(Endpoint::Revocation, outcome, started);
                log::warn!(
                    "logto: event=logto_call endpoint=revocation outcome={outcome} status={}: revoking the refresh token answered {}",
                    r.status().as_u16(),
                    r.status()
                )
            }
            Err(e) => {
                let e = send_error(&e, "revocation");
                telemetry::provider_call(Endpoint::Revocation, e.label(), started);
                log::warn!(
                    "logto: event=logto_call endpoint=revocation outcome={}: revoking the refresh token failed: {}",
                    e.label(),
                    e.detail()
                )
            }
        }
    }

    async fn post_form<T: DeserializeOwned>(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        what: &'static str,
    ) -> Result<T, ProviderError> {
        self.post_form_to(url, form, what, Endpoint::Token).await
    }

    async fn post_form_to<T: DeserializeOwned>(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        what: &'static str,
        endpoint: Endpoint,
    ) -> Result<T, ProviderError> {
        let started = telemetry::start();
        let result = async {
            let response = self
                .http
                .post(url.clone())
                .basic_auth(&self.client_id, Some(&self.client_secret))
                .form(form)
                .send()
                .await
                .map_err(|e| send_error(&e, what))?;
            read_json(response, what).await
        }
        .await;
        record(endpoint, &result, started);
        result
    }
}

impl ProviderError {
    fn detail(&self) -> String {
        LogtoError::from(self.clone()).detail().to_string()
    }
}

/// Records a call to Logto: its outcome and latency.
fn record<T>(endpoint: Endpoint, result: &Result<T, ProviderError>, started: telemetry::Started) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    telemetry::provider_call(endpoint, outcome, started);
}

/// GETs a JSON document (discovery, the key set: `endpoint`).
pub(crate) async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    what: &'static str,
    endpoint: Endpoint,
) -> Result<T, ProviderError> {
    let started = telemetry::start();
    let result = async {
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|e| send_error(&e, what))?;
        read_json(response, what).await
    }
    .await;
    record(endpoint, &result, started);
    result
}

/// Tells a request that never left (safe to send again) from one that was sent and got no
/// answer (Logto may have acted on it).
fn send_error(e: &reqwest::Error, what: &'static str) -> ProviderError {
    let timed_out = e.is_timeout();
    if e.is_connect() || e.is_builder() {
        ProviderError::NotSent { what, timed_out }
    } else {
        ProviderError::NoAnswer { what, timed_out }
    }
}

async fn read_body(
    mut response: reqwest::Response,
    what: &'static str,
) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ProviderError::Malformed(format!(
                        "Logto's answer to the {what} is too large"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => {
                return Err(ProviderError::NoAnswer {
                    what,
                    timed_out: true,
                })
            }
            Err(_) => {
                return Err(ProviderError::Malformed(format!(
                    "Logto's answer to the {what} was cut short"
                )))
            }
        }
    }
}

async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    what: &'static str,
) -> Result<T, ProviderError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = read_body(response, what).await?;
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(ProviderError::RateLimited { what, retry_after });
    }
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|_| {
            ProviderError::Malformed(format!(
                "Logto's answer to the {what} is not the JSON it should be"
            ))
        });
    }
    if status.is_server_error() {
        return Err(ProviderError::ServerError {
            what,
            status: status.as_u16(),
        });
    }
    if status.is_client_error() {
        if let Ok(e) = serde_json::from_slice::<OAuthErrorBody>(&body) {
            return Err(ProviderError::Refused {
                what,
                status: status.as_u16(),
                error: e.error.chars().take(64).collect(),
                description: e
                    .error_description
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
    }
    Err(ProviderError::Malformed(format!(
        "Logto answered the {what} with HTTP {}",
        status.as_u16()
    )))
}
