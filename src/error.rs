//! `LogtoError`: every way signing in or getting a token can fail, each with its HTTP
//! status and a message that names the problem and never holds a token or secret. How it
//! is answered (pages, JSON, the redirect to sign-in) is `web::error_page`'s job.

use std::fmt;

use rocket::http::Status;

/// An error of the library. As a [`Responder`](rocket::response::Responder) it answers as the crate's catcher for its
/// status does (see [`Logto::catchers`](crate::Logto::catchers)): a short HTML page (or JSON
/// for clients that ask for it) with the status of [`LogtoError::status`], `Cache-Control:
/// no-store` and, for rate limits, `Retry-After`; [`Unauthenticated`](LogtoError::Unauthenticated)
/// sends a browser's `GET` to sign-in instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogtoError {
    /// The request is malformed or cannot be trusted (400): bad `return_to`, unknown
    /// `state`, replayed callback, an ID token that fails a check, a malformed organization
    /// id.
    BadRequest(String),
    /// No signed-in user (401). The guards do not fail with it: they forward (see
    /// [Composing with Rocket](crate#composing-with-rocket)).
    Unauthenticated,
    /// Signed in, but the session cannot do what was asked until the user signs in again
    /// (401), e.g. Logto issued no refresh token (`offline_access` not granted). The message
    /// says why. Browsers get a page with a "Sign in again" link, not a redirect, so a
    /// sign-in that cannot fix it never loops.
    SignInAgain(String),
    /// Signed in, but not allowed (403): missing scopes, not a member of an organization.
    Forbidden(String),
    /// What the request names does not exist here (404): an API resource indicator that
    /// is not in the `resources` config, passed to
    /// [`AuthenticatedUser::access_token`](crate::AuthenticatedUser::access_token).
    NotFound(String),
    /// Logto answered, but not with something usable (502).
    BadGateway(String),
    /// Logto could not be reached, timed out or asked us to slow down (503).
    Unavailable {
        /// What failed.
        message: String,
        /// Seconds to wait, when Logto said (HTTP 429 `Retry-After`).
        retry_after: Option<u64>,
    },
    /// The app's own configuration or code does not allow this (500), e.g. an organization
    /// token without the organizations scope in `scopes`. The crate's 500 catcher also
    /// renders its generic page as this variant.
    Config(String),
}

impl LogtoError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> Status {
        match self {
            LogtoError::BadRequest(_) => Status::BadRequest,
            LogtoError::Unauthenticated | LogtoError::SignInAgain(_) => Status::Unauthorized,
            LogtoError::Forbidden(_) => Status::Forbidden,
            LogtoError::NotFound(_) => Status::NotFound,
            LogtoError::BadGateway(_) => Status::BadGateway,
            LogtoError::Unavailable { .. } => Status::ServiceUnavailable,
            LogtoError::Config(_) => Status::InternalServerError,
        }
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        match self {
            LogtoError::BadRequest(m)
            | LogtoError::SignInAgain(m)
            | LogtoError::Forbidden(m)
            | LogtoError::NotFound(m)
            | LogtoError::BadGateway(m)
            | LogtoError::Config(m)
            | LogtoError::Unavailable { message: m, .. } => m,
            LogtoError::Unauthenticated => "You are not signed in.",
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> LogtoError {
        LogtoError::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }
}

impl fmt::Display for LogtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status(), self.message())
    }
}

impl std::error::Error for LogtoError {}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(LogtoError::BadRequest("x".into()).status().code, 400);
        assert_eq!(LogtoError::Unauthenticated.status().code, 401);
        assert_eq!(LogtoError::unavailable("x").status().code, 503);
        assert_eq!(LogtoError::BadGateway("x".into()).status().code, 502);
    }
}
