//! `LogtoError`: every way signing in or getting a token can fail, each with its HTTP
//! status and a message that names the problem and never holds a token or secret.

use std::fmt;
use std::io::Cursor;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};

/// An error of the library. As a [`Responder`] it renders a short HTML page (or JSON for
/// clients that ask for it) with the status of [`LogtoError::status`], `Cache-Control:
/// no-store` and, for rate limits, `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogtoError {
    /// The request is malformed or cannot be trusted (400): bad `return_to`, unknown
    /// `state`, replayed callback, an ID token that fails a check.
    BadRequest(String),
    /// No signed-in user (401).
    Unauthenticated,
    /// Signed in, but not allowed (403): missing scopes, not a member of an organization.
    Forbidden(String),
    /// Logto answered, but not with something usable (502).
    BadGateway(String),
    /// Logto could not be reached, timed out or asked us to slow down (503).
    Unavailable {
        /// What failed.
        message: String,
        /// Seconds to wait, when Logto said (HTTP 429 `Retry-After`).
        retry_after: Option<u64>,
    },
    /// The app's configuration does not allow this (500), e.g. an organization token
    /// without the organizations scope.
    Config(String),
}

impl LogtoError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> Status {
        match self {
            LogtoError::BadRequest(_) => Status::BadRequest,
            LogtoError::Unauthenticated => Status::Unauthorized,
            LogtoError::Forbidden(_) => Status::Forbidden,
            LogtoError::BadGateway(_) => Status::BadGateway,
            LogtoError::Unavailable { .. } => Status::ServiceUnavailable,
            LogtoError::Config(_) => Status::InternalServerError,
        }
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        match self {
            LogtoError::BadRequest(m)
            | LogtoError::Forbidden(m)
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

    /// Renders the default page for `self`, as the library's routes and guards do.
    pub fn render(&self, wants_json: bool) -> Response<'static> {
        let status = self.status();
        let (content_type, body) = if wants_json {
            let body =
                serde_json::json!({ "error": status.reason_lossy(), "message": self.message() });
            (ContentType::JSON, body.to_string())
        } else {
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
                 <body><h1>{code} {reason}</h1><p>{message}</p><p><a href=\"/\">Home</a></p></body></html>",
                code = status.code,
                reason = status.reason_lossy(),
                message = html_escape(self.message()),
            );
            (ContentType::HTML, body)
        };
        let mut response = Response::build();
        response
            .status(status)
            .header(content_type)
            .header(Header::new("Cache-Control", "no-store"))
            .header(Header::new("Referrer-Policy", "no-referrer"))
            .sized_body(body.len(), Cursor::new(body));
        if let LogtoError::Unavailable {
            retry_after: Some(secs),
            ..
        } = self
        {
            response.header(Header::new("Retry-After", secs.to_string()));
        }
        response.finalize()
    }
}

impl fmt::Display for LogtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status(), self.message())
    }
}

impl std::error::Error for LogtoError {}

impl<'r> Responder<'r, 'static> for LogtoError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        Ok(render_for(&self, request))
    }
}

/// The page for `error`: the app's own (see [`crate::Logto::error_page`]) for browsers,
/// else the built-in one; always with the error's status and headers.
pub(crate) fn render_for(error: &LogtoError, request: &Request<'_>) -> Response<'static> {
    let default = error.render(wants_json(request));
    if wants_json(request) {
        return default;
    }
    let custom = request
        .rocket()
        .state::<crate::fairing::LogtoState>()
        .and_then(|state| state.error_page.as_ref())
        .and_then(|page| page(error, request).ok());
    match custom {
        Some(mut page) => {
            page.set_status(error.status());
            for header in default
                .headers()
                .iter()
                .filter(|h| h.name() != "Content-Type" && h.name() != "Content-Length")
            {
                page.set_header(Header::new(
                    header.name().as_str().to_string(),
                    header.value().to_string(),
                ));
            }
            page
        }
        None => default,
    }
}

/// Whether the client prefers JSON over HTML (an API call rather than a page).
pub(crate) fn wants_json(request: &Request<'_>) -> bool {
    match request.accept() {
        Some(accept) => {
            let preferred = accept.preferred().media_type();
            preferred.is_json()
                || (!preferred.is_html()
                    && !preferred.is_any()
                    && accept.media_types().any(|m| m.is_json()))
        }
        None => false,
    }
}

/// Whether the client is a browser navigating (it accepts HTML), so a redirect to sign-in
/// helps rather than confuses.
pub(crate) fn wants_html(request: &Request<'_>) -> bool {
    request
        .accept()
        .is_some_and(|accept| accept.media_types().any(|m| m.is_html()))
}

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
