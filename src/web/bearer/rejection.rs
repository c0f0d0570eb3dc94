//! `BearerError`: why an API guard refused a request, answered as RFC 6750 says (status,
//! `WWW-Authenticate`) with a JSON body, whatever the `Accept` header: API clients get
//! errors they can act on, never a sign-in page or a redirect.

use std::fmt;
use std::io::Cursor;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};

use crate::error::LogtoError;

/// Why an API guard ([`BearerToken`](crate::BearerToken),
/// [`OrganizationToken`](crate::OrganizationToken),
/// [`OrganizationResourceToken`](crate::OrganizationResourceToken)) refused a request.
///
/// As a [`Responder`] (and through the crate's catchers, [`Logto::catchers`](crate::Logto::catchers))
/// it answers with its [`status`](BearerError::status), `Cache-Control: no-store`, a JSON
/// body `{"error": ..., "error_description": ...}` and, for 401 and 403, the
/// `WWW-Authenticate` header of RFC 6750 3, whose realm is the resource the route
/// protects:
///
/// | variant | status | `WWW-Authenticate` | body `error` |
/// |---|---|---|---|
/// | [`Missing`](BearerError::Missing) | 401 | `Bearer realm="<resource>"` | `missing_token` |
/// | [`InvalidToken`](BearerError::InvalidToken) | 401 | `Bearer realm="<resource>", error="invalid_token", error_description="..."` | `invalid_token` |
/// | [`InsufficientScope`](BearerError::InsufficientScope) | 403 | `Bearer realm="<resource>", error="insufficient_scope", error_description="...", scope="<required scopes>"` | `insufficient_scope` (and `scope`) |
/// | [`Unavailable`](BearerError::Unavailable) | 503 or 502 | none (`Retry-After` when Logto sent one) | `temporarily_unavailable` |
/// | [`Config`](BearerError::Config) | 500 | none | `server_error` |
///
/// Descriptions name the check that failed and never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// No bearer token: no `Authorization` header, or one with another scheme.
    #[non_exhaustive]
    Missing {
        /// The resource the route protects (the realm).
        resource: &'static str,
    },
    /// A token that is malformed, opaque, too long, forged, expired, not yet valid, from
    /// another issuer, for another audience or organization, or several `Authorization`
    /// headers.
    #[non_exhaustive]
    InvalidToken {
        /// The resource the route protects (the realm).
        resource: &'static str,
        /// Which check failed ("it has expired").
        reason: String,
    },
    /// A valid token for this route that lacks some of its required scopes.
    #[non_exhaustive]
    InsufficientScope {
        /// The resource the route protects (the realm).
        resource: &'static str,
        /// Every scope the route requires (the `scope` of the answer).
        required: Vec<&'static str>,
        /// Those the token lacks.
        missing: Vec<&'static str>,
    },
    /// Logto's keys could not be fetched to check the token (503, or 502 when Logto
    /// answered with something unusable).
    Unavailable(LogtoError),
    /// The app's own code does not allow the check (500): a route that uses an
    /// organization guard without an `<organization_id>` segment.
    Config(String),
}

impl BearerError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> Status {
        match self {
            BearerError::Missing { .. } | BearerError::InvalidToken { .. } => Status::Unauthorized,
            BearerError::InsufficientScope { .. } => Status::Forbidden,
            BearerError::Unavailable(e) => e.status(),
            BearerError::Config(_) => Status::InternalServerError,
        }
    }

    /// The RFC 6750 error code (`None` without a token, as RFC 6750 3.1 asks), or the
    /// OAuth code of a server-side failure.
    fn code(&self) -> Option<&'static str> {
        match self {
            BearerError::Missing { .. } => None,
            BearerError::InvalidToken { .. } => Some("invalid_token"),
            BearerError::InsufficientScope { .. } => Some("insufficient_scope"),
            BearerError::Unavailable(_) => Some("temporarily_unavailable"),
            BearerError::Config(_) => Some("server_error"),
        }
    }

    /// The description: what is wrong and what the client can do.
    fn description(&self) -> String {
        match self {
            BearerError::Missing { resource } => format!(
                "This API needs a Logto access token for {resource}: send it as `Authorization: Bearer <token>`."
            ),
            BearerError::InvalidToken { reason, .. } => {
                format!("The access token was refused: {reason}.")
            }
            BearerError::InsufficientScope { missing, .. } => format!(
                "The access token lacks the scopes: {}.",
                missing.join(", ")
            ),
            BearerError::Unavailable(e) => e.message().to_string(),
            // The app's own mistake: the client cannot act on it, and the route's
            // setup is not its business (the message is logged where it happens).
            BearerError::Config(_) => {
                "This API cannot check access tokens right now; the server's log says why.".into()
            }
        }
    }

    /// The `WWW-Authenticate` value for 401 and 403 answers.
    fn challenge(&self) -> Option<String> {
        let (resource, scope) = match self {
            BearerError::Missing { resource } => {
                return Some(format!("Bearer realm=\"{}\"", quoted(resource)));
            }
            BearerError::InvalidToken { resource, .. } => (resource, None),
            BearerError::InsufficientScope {
                resource, required, ..
            } => (resource, Some(required.join(" "))),
            _ => return None,
        };
        let mut value = format!(
            "Bearer realm=\"{}\", error=\"{}\", error_description=\"{}\"",
            quoted(resource),
            self.code().unwrap_or_default(),
            quoted(&self.description())
        );
        if let Some(scope) = scope {
            value.push_str(&format!(", scope=\"{}\"", quoted(&scope)));
        }
        Some(value)
    }

    /// The answer: status, headers and JSON body.
    pub(crate) fn render(&self) -> Response<'static> {
        let mut body = serde_json::json!({
            "error": self.code().unwrap_or("missing_token"),
            "error_description": self.description(),
        });
        if let BearerError::InsufficientScope { required, .. } = self {
            body["scope"] = required.join(" ").into();
        }
        let body = body.to_string();
        let mut response = Response::build();
        response
            .status(self.status())
            .header(ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .sized_body(body.len(), Cursor::new(body));
        if let Some(challenge) = self.challenge() {
            response.header(Header::new("WWW-Authenticate", challenge));
        }
        if let BearerError::Unavailable(LogtoError::Unavailable {
            retry_after: Some(secs),
            ..
        }) = self
        {
            response.header(Header::new("Retry-After", secs.to_string()));
        }
        response.finalize()
    }
}

/// `text` as the inside of an RFC 6750 quoted string: printable ASCII without `"` and
/// `\` (3: `%x20-21 / %x23-5B / %x5D-7E`); anything else becomes `?`, `"` becomes `'`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

impl fmt::Display for BearerError {
    /// `<what>: <why>`, lower-case without a trailing period (the developer's message;
    /// the answer's `error_description` is for the client).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BearerError::Missing { resource } => write!(f, "no bearer token for {resource}"),
            BearerError::InvalidToken { reason, .. } => {
                f.write_str("invalid token: ")?;
                crate::error::write_sentence_tail(f, reason)
            }
            BearerError::InsufficientScope { missing, .. } => {
                write!(
                    f,
                    "insufficient scope: the token lacks the scopes: {}",
                    missing.join(", ")
                )
            }
            BearerError::Unavailable(e) => write!(f, "cannot check the token: {e}"),
            BearerError::Config(m) => {
                f.write_str("configuration: ")?;
                crate::error::write_sentence_tail(f, m)
            }
        }
    }
}

impl std::error::Error for BearerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BearerError::Unavailable(e) => Some(e),
            _ => None,
        }
    }
}

impl<'r> Responder<'r, 'static> for BearerError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Ok(self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(e: &BearerError) -> Option<String> {
        e.render()
            .headers()
            .get_one("WWW-Authenticate")
            .map(str::to_string)
    }

    #[test]
    fn each_error_has_its_rfc_6750_challenge() {
        let r = "https://api.example.com";
        assert_eq!(
            header(&BearerError::Missing { resource: r }).as_deref(),
            Some("Bearer realm=\"https://api.example.com\"")
        );
        let invalid = BearerError::InvalidToken {
            resource: r,
            reason: "it lacks the scope \"x\\y\"\r\n".into(),
        };
        assert_eq!(invalid.status(), Status::Unauthorized);
        assert_eq!(
            header(&invalid).as_deref(),
            Some("Bearer realm=\"https://api.example.com\", error=\"invalid_token\", error_description=\"The access token was refused: it lacks the scope 'x/y'??.\"")
        );
        let scope = BearerError::InsufficientScope {
            resource: r,
            required: vec!["read", "write"],
            missing: vec!["write"],
        };
        assert_eq!(scope.status(), Status::Forbidden);
        let challenge = header(&scope).unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.ends_with("scope=\"read write\""), "{challenge}");
        let down = BearerError::Unavailable(
            LogtoError::unavailable("Logto is rate-limiting").retry_after(7),
        );
        assert_eq!(down.status(), Status::ServiceUnavailable);
        assert_eq!(header(&down), None);
        assert_eq!(down.render().headers().get_one("Retry-After"), Some("7"));
    }
}
