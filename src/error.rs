//! `LogtoError`: every way signing in or getting a token can fail, each with its HTTP
//! status, a message for the end user that never holds a token, a secret or a detail of
//! the app's setup, and a developer's message (`Display`) for the log. How it is answered
//! (pages, JSON, the redirect to sign-in) is `web::error_page`'s job.

use std::fmt;

use rocket::http::Status;

/// An error of the library. As a [`Responder`](rocket::response::Responder) it answers as
/// the crate's catcher for its status does (see [`Logto::catchers`](crate::Logto::catchers)):
/// a short HTML page (or JSON for clients that ask for it) with the status of
/// [`LogtoError::status`], `Cache-Control: no-store` and, for rate limits, `Retry-After`;
/// [`Unauthenticated`](LogtoError::Unauthenticated) sends a browser's `GET` to sign-in
/// instead.
///
/// Two texts: [`message`](LogtoError::message) is what an end user may see (the page
/// shows it); `Display` is the developer's message for logs, lower-case without a trailing
/// period, with what went wrong in the app's setup or at Logto. A 500 or 502 page never
/// shows the developer's message: it is logged instead.
///
/// Failures of a call to Logto carry a typed [`ProviderFailure`] (timeout, refusal with its
/// OAuth error code, Logto's HTTP status), also given as the error's
/// [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogtoError {
    /// The request is malformed or cannot be trusted (400): bad `return_to`, unknown
    /// `state`, replayed callback, an ID token that fails a check, a malformed organization
    /// id. The message is about the request, for its sender.
    BadRequest(String),
    /// No signed-in user (401). The guards do not fail with it: they forward (see
    /// [Composing with Rocket](crate#composing-with-rocket)).
    Unauthenticated,
    /// Signed in, but the session cannot do what was asked until the user signs in again
    /// (401), e.g. Logto issued no refresh token (`offline_access` not granted). The message
    /// says why. Browsers get a page with a "Sign in again" link, not a redirect, so a
    /// sign-in that cannot fix it never loops.
    SignInAgain(String),
    /// Signed in, but not recently enough for this route (401): the session's sign-in
    /// (`auth_time`) is older than `max_age` seconds, or not known. A browser's `GET` is
    /// sent to sign-in with `max_age`, so Logto asks for the password (or MFA) again, and
    /// comes back; other clients get 401 with `WWW-Authenticate: Bearer
    /// error="insufficient_user_authentication", max_age=...` (RFC 9470). What
    /// [`RecentSignIn`](crate::RecentSignIn) fails with.
    RecentSignInRequired {
        /// How old the sign-in may be, in seconds.
        max_age: u64,
    },
    /// Signed in, but not allowed (403): missing scopes, not a member of an organization.
    Forbidden(String),
    /// What the request names does not exist here (404): an API resource indicator that
    /// is not in the `resources` config, passed to
    /// [`AuthenticatedUser::access_token`](crate::AuthenticatedUser::access_token).
    NotFound(String),
    /// Logto (or another service the app calls) answered, but not with something usable
    /// (502). Build it with [`LogtoError::bad_gateway`].
    #[non_exhaustive]
    BadGateway {
        /// What failed (the developer's message: logged, not shown to end users).
        message: String,
        /// How the call to Logto failed, when the failure was one.
        cause: Option<ProviderFailure>,
    },
    /// Logto (or another service) could not be reached, timed out or asked us to slow
    /// down (503). Build it with [`LogtoError::unavailable`].
    #[non_exhaustive]
    Unavailable {
        /// What failed, and what the user can do (shown to end users).
        message: String,
        /// Seconds to wait, when Logto said (HTTP 429 `Retry-After`).
        retry_after: Option<u64>,
        /// How the call to Logto failed, when the failure was one.
        cause: Option<ProviderFailure>,
    },
    /// The app's own configuration or code does not allow this (500), e.g. an organization
    /// token without the organizations scope in `scopes`. The message is the developer's:
    /// it is logged, and the page shows a generic text. The crate's 500 catcher also
    /// renders its generic page as this variant.
    Config(String),
}

impl LogtoError {
    /// A 502: `message` says what answered with something unusable (it is logged; the
    /// page shows a generic text).
    pub fn bad_gateway(message: impl Into<String>) -> LogtoError {
        LogtoError::BadGateway {
            message: message.into(),
            cause: None,
        }
    }

    /// A 503: `message` says what is unavailable and what the user can do (the page shows
    /// it). Add a `Retry-After` with [`LogtoError::retry_after`].
    pub fn unavailable(message: impl Into<String>) -> LogtoError {
        LogtoError::Unavailable {
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// The same error with `Retry-After: secs` when it is a 503; other errors are returned
    /// unchanged.
    pub fn retry_after(mut self, secs: u64) -> LogtoError {
        if let LogtoError::Unavailable { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }

    pub(crate) fn with_cause(mut self, failure: ProviderFailure) -> LogtoError {
        match &mut self {
            LogtoError::BadGateway { cause, .. } | LogtoError::Unavailable { cause, .. } => {
                *cause = Some(failure)
            }
            _ => {}
        }
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> Status {
        match self {
            LogtoError::BadRequest(_) => Status::BadRequest,
            LogtoError::Unauthenticated
            | LogtoError::SignInAgain(_)
            | LogtoError::RecentSignInRequired { .. } => Status::Unauthorized,
            LogtoError::Forbidden(_) => Status::Forbidden,
            LogtoError::NotFound(_) => Status::NotFound,
            LogtoError::BadGateway { .. } => Status::BadGateway,
            LogtoError::Unavailable { .. } => Status::ServiceUnavailable,
            LogtoError::Config(_) => Status::InternalServerError,
        }
    }

    /// The message for the end user, as the built-in page shows it. For a 500
    /// ([`Config`](LogtoError::Config)) and a 502 ([`BadGateway`](LogtoError::BadGateway))
    /// it is a generic text: what went wrong is the developer's business, in `Display`.
    pub fn message(&self) -> &str {
        match self {
            LogtoError::BadRequest(m)
            | LogtoError::SignInAgain(m)
            | LogtoError::Forbidden(m)
            | LogtoError::NotFound(m)
            | LogtoError::Unavailable { message: m, .. } => m,
            LogtoError::Unauthenticated => "You are not signed in.",
            LogtoError::RecentSignInRequired { .. } => {
                "This page needs a recent sign-in; sign in again to continue."
            }
            LogtoError::BadGateway { .. } => {
                "A service this site depends on answered with something it cannot use; try again later."
            }
            LogtoError::Config(_) => {
                "This site cannot answer this request because of a problem in its setup; it has been logged."
            }
        }
    }

    /// How the call to Logto failed, when this error is such a failure.
    pub fn provider_failure(&self) -> Option<&ProviderFailure> {
        match self {
            LogtoError::BadGateway { cause, .. } | LogtoError::Unavailable { cause, .. } => {
                cause.as_ref()
            }
            _ => None,
        }
    }

    /// The developer's text: the message the error was made with.
    pub(crate) fn detail(&self) -> &str {
        match self {
            LogtoError::BadGateway { message, .. } | LogtoError::Config(message) => message,
            other => other.message(),
        }
    }

    /// What kind of failure, for the start of the developer's message.
    fn label(&self) -> &'static str {
        match self {
            LogtoError::BadRequest(_) => "bad request",
            LogtoError::Unauthenticated => "not signed in",
            LogtoError::SignInAgain(_) => "sign in again",
            LogtoError::RecentSignInRequired { .. } => "recent sign-in required",
            LogtoError::Forbidden(_) => "forbidden",
            LogtoError::NotFound(_) => "not found",
            LogtoError::BadGateway { .. } => "bad gateway",
            LogtoError::Unavailable { .. } => "unavailable",
            LogtoError::Config(_) => "configuration",
        }
    }
}

/// Writes `text` as the tail of an error message: without a trailing period, and with a
/// lower-case first letter unless it starts an acronym ("ID token", "HTTP").
pub(crate) fn write_sentence_tail(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let text = text.trim_end().trim_end_matches('.');
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second)
            if first.is_uppercase() && !second.is_some_and(|c| c.is_uppercase()) =>
        {
            write!(f, "{}{}", first.to_lowercase(), &text[first.len_utf8()..])
        }
        _ => f.write_str(text),
    }
}

impl fmt::Display for LogtoError {
    /// `<kind>: <what went wrong>`, lower-case without a trailing period, e.g.
    /// `configuration: organization tokens need the scope ...`. Holds no token or secret,
    /// but may name the app's setup: for logs, not for pages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.label())?;
        write_sentence_tail(f, self.detail())
    }
}

impl std::error::Error for LogtoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.provider_failure()
            .map(|failure| failure as &(dyn std::error::Error + 'static))
    }
}

/// How a call to Logto (token, userinfo, revocation, discovery or JWKS request) failed:
/// the typed cause of a [`LogtoError::BadGateway`] or [`LogtoError::Unavailable`], to
/// tell a timeout from a refusal without reading messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderFailure {
    /// The request never reached Logto (connection refused, DNS, TLS); `timed_out` when
    /// the connection was not accepted in time. Logto did nothing.
    NotReached {
        /// Whether the connection attempt timed out.
        timed_out: bool,
    },
    /// The request was sent but no answer came: `http_timeout_secs` passed (`timed_out`),
    /// or the connection closed first. Logto may have acted on it.
    NoAnswer {
        /// Whether the request timed out.
        timed_out: bool,
    },
    /// Logto asked us to slow down (HTTP 429).
    RateLimited,
    /// Logto answered with this HTTP server error (5xx).
    Status(u16),
    /// Logto refused the request with an OAuth error (RFC 6749 5.2).
    Refused {
        /// The HTTP status of the refusal (400, 401, 403).
        status: u16,
        /// The OAuth `error` code.
        error: OAuthErrorCode,
    },
    /// Logto's answer is not what it should be: not JSON, fields missing, about another
    /// user, another issuer.
    Malformed,
}

impl ProviderFailure {
    /// Whether a timeout ended the call (as opposed to a refusal or an unusable answer).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProviderFailure::NotReached { timed_out: true }
                | ProviderFailure::NoAnswer { timed_out: true }
        )
    }
}

impl fmt::Display for ProviderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderFailure::NotReached { timed_out: true } => {
                f.write_str("logto did not accept the connection in time")
            }
            ProviderFailure::NotReached { timed_out: false } => {
                f.write_str("logto could not be reached")
            }
            ProviderFailure::NoAnswer { timed_out: true } => {
                f.write_str("logto did not answer in time")
            }
            ProviderFailure::NoAnswer { timed_out: false } => {
                f.write_str("the connection to logto closed before its answer")
            }
            ProviderFailure::RateLimited => f.write_str("logto rate-limited the request"),
            ProviderFailure::Status(status) => write!(f, "logto answered with HTTP {status}"),
            ProviderFailure::Refused { status, error } => {
                write!(f, "logto refused the request (HTTP {status}, {error})")
            }
            ProviderFailure::Malformed => f.write_str("logto's answer is not usable"),
        }
    }
}

impl std::error::Error for ProviderFailure {}

/// An OAuth 2.0 error code (RFC 6749 5.2, RFC 8707, RFC 6750), as Logto sends them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_client`: the app id or secret is wrong.
    InvalidClient,
    /// `invalid_grant`: the code or refresh token is used, expired or revoked.
    InvalidGrant,
    /// `unauthorized_client`.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`.
    InvalidScope,
    /// `invalid_target`: an API resource Logto does not know (RFC 8707).
    InvalidTarget,
    /// `insufficient_scope`.
    InsufficientScope,
    /// `access_denied`.
    AccessDenied,
    /// Any other code, as sent.
    Other(String),
}

impl OAuthErrorCode {
    /// The code as it is sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::InsufficientScope => "insufficient_scope",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::Other(code) => code,
        }
    }
}

impl From<&str> for OAuthErrorCode {
    fn from(code: &str) -> OAuthErrorCode {
        match code {
            "invalid_request" => OAuthErrorCode::InvalidRequest,
            "invalid_client" => OAuthErrorCode::InvalidClient,
            "invalid_grant" => OAuthErrorCode::InvalidGrant,
            "unauthorized_client" => OAuthErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => OAuthErrorCode::UnsupportedGrantType,
            "invalid_scope" => OAuthErrorCode::InvalidScope,
            "invalid_target" => OAuthErrorCode::InvalidTarget,
            "insufficient_scope" => OAuthErrorCode::InsufficientScope,
            "access_denied" => OAuthErrorCode::AccessDenied,
            other => OAuthErrorCode::Other(other.to_string()),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn statuses() {
        assert_eq!(LogtoError::BadRequest("x".into()).status().code, 400);
        assert_eq!(LogtoError::Unauthenticated.status().code, 401);
        assert_eq!(LogtoError::unavailable("x").status().code, 503);
        assert_eq!(LogtoError::bad_gateway("x").status().code, 502);
    }

    #[test]
    fn display_is_lower_case_without_a_trailing_period() {
        let e = LogtoError::Config("Sessions::list needs session_store = \"redis\".".into());
        assert_eq!(
            e.to_string(),
            "configuration: sessions::list needs session_store = \"redis\""
        );
        let e = LogtoError::BadRequest("The ID token from Logto was rejected: bad nonce.".into());
        assert_eq!(
            e.to_string(),
            "bad request: the ID token from Logto was rejected: bad nonce"
        );
        assert_eq!(
            LogtoError::Unauthenticated.to_string(),
            "not signed in: you are not signed in"
        );
    }

    #[test]
    fn the_end_user_never_sees_a_developer_message() {
        let config = LogtoError::Config("Sessions::list needs session_store = \"redis\"".into());
        assert!(!config.message().contains("session_store"));
        let gateway = LogtoError::bad_gateway("Logto's discovery names the issuer \"x\"");
        assert!(!gateway.message().contains("issuer"));
        assert!(gateway.to_string().contains("issuer"));
    }

    #[test]
    fn a_provider_failure_is_the_source() {
        let e = LogtoError::unavailable("Logto did not answer in time; try again.")
            .with_cause(ProviderFailure::NoAnswer { timed_out: true })
            .retry_after(3);
        let source = e.source().expect("a source");
        assert_eq!(source.to_string(), "logto did not answer in time");
        assert!(e.provider_failure().unwrap().is_timeout());
        assert!(matches!(
            e,
            LogtoError::Unavailable {
                retry_after: Some(3),
                ..
            }
        ));
        assert!(LogtoError::BadRequest("x".into()).source().is_none());
        assert_eq!(
            OAuthErrorCode::from("invalid_grant"),
            OAuthErrorCode::InvalidGrant
        );
        assert_eq!(OAuthErrorCode::from("weird").as_str(), "weird");
    }
}
