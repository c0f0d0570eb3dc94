//! The answer for a [`LogtoError`]: the built-in page (HTML, or JSON for API clients), the
//! app's own page ([`Logto::error_page`](crate::Logto::error_page)), or, for a browser that
//! is not signed in, the redirect to sign-in. Shared by the `LogtoError` responder and the
//! crate's catchers.

use std::io::Cursor;

use rocket::http::{ContentType, Header, Method, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};

use crate::config::LogtoConfig;
use crate::error::LogtoError;

/// `text` escaped for HTML element content and attribute values.
pub(crate) fn html_escape(text: &str) -> std::borrow::Cow<'_, str> {
    rocket::http::RawStr::new(text).html_escape()
}

impl LogtoError {
    /// Renders the built-in page for `self`: HTML, or JSON when `wants_json`, with the
    /// error's status, `Cache-Control: no-store`, `Referrer-Policy: no-referrer` and, for a
    /// rate limit, `Retry-After`. The crate's catchers and the `LogtoError` responder call
    /// it with the configured base path, after the app's
    /// [`error_page`](crate::Logto::error_page) and the redirect to sign-in.
    fn render_page(&self, wants_json: bool, links: &PageLinks) -> Response<'static> {
        let status = self.status();
        let (content_type, body) = if wants_json {
            let body =
                serde_json::json!({ "error": status.reason_lossy(), "message": self.message() });
            (ContentType::JSON, body.to_string())
        } else {
            let sign_in = match (self, &links.sign_in) {
                (LogtoError::Unauthenticated | LogtoError::SignInAgain(_), Some(sign_in)) => {
                    format!(" · <a href=\"{}\">Sign in</a>", html_escape(sign_in))
                }
                (LogtoError::RecentSignInRequired { max_age }, Some(sign_in)) => format!(
                    " · <a href=\"{}\">Sign in again</a>",
                    html_escape(&with_max_age(sign_in, *max_age))
                ),
                _ => String::new(),
            };
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
                 <body><h1>{code} {reason}</h1><p>{message}</p><p><a href=\"{home}\">Home</a>{sign_in}</p></body></html>",
                code = status.code,
                reason = status.reason_lossy(),
                message = html_escape(self.message()),
                home = html_escape(&links.home),
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
        if let LogtoError::RecentSignInRequired { max_age } = self {
            // RFC 9470's step-up challenge: the client learns how recent a sign-in to get.
            response.header(Header::new(
                "WWW-Authenticate",
                format!(
                    "Bearer error=\"insufficient_user_authentication\", error_description=\"A more recent sign-in is required\", max_age={max_age}"
                ),
            ));
        }
        response.finalize()
    }
}

/// Where the links of an error page go.
struct PageLinks {
    /// The app's home: the path of `base_url`.
    home: String,
    /// Sign-in, coming back to the page that failed when it can; `None` in an API-only
    /// app, which mounts no sign-in route.
    sign_in: Option<String>,
}

impl Default for PageLinks {
    fn default() -> PageLinks {
        PageLinks {
            home: "/".into(),
            sign_in: Some("/logto/sign-in".into()),
        }
    }
}

impl PageLinks {
    fn of(request: &Request<'_>, config: Option<&LogtoConfig>) -> PageLinks {
        match config {
            Some(config) => PageLinks {
                home: config.base_url.path().to_string(),
                sign_in: (!config.is_api_only()).then(|| sign_in_location(request, config)),
            },
            None => PageLinks::default(),
        }
    }
}

impl<'r> Responder<'r, 'static> for LogtoError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        // A route's own 5xx: the page shows a generic text, so the developer's message
        // goes to the log (the guards log theirs where they fail).
        if self.status().code >= 500 {
            log::warn!("logto: {}: {self}", request.uri().path());
        }
        Ok(render_for(&self, request))
    }
}

/// The crate's answer for `error` to `request`, shared by the `LogtoError` responder and
/// the crate's catchers: a browser's `GET` that is not signed in is sent to sign-in (303,
/// coming back here afterwards); anything else gets the error page, the app's own (see
/// [`crate::Logto::error_page`]) for browsers, else the built-in one, always with the
/// error's status and headers.
pub(crate) fn render_for(error: &LogtoError, request: &Request<'_>) -> Response<'static> {
    let state = request.rocket().state::<crate::web::state::LogtoState>();
    let config = state.map(|s| &s.config);
    // An API-only app has no sign-in to send anyone to.
    let signs_in = config.is_some_and(|c| !c.is_api_only());
    let browser_get =
        signs_in && request.method() == Method::Get && wants_html(request) && !wants_json(request);
    if browser_get {
        if let Some(config) = config {
            match error {
                LogtoError::Unauthenticated => {
                    return sign_in_redirect(sign_in_location(request, config))
                }
                // A step-up: Logto asks again, and the browser comes back to this page.
                LogtoError::RecentSignInRequired { max_age } => {
                    let location = with_max_age(&sign_in_location(request, config), *max_age);
                    return sign_in_redirect(location);
                }
                _ => {}
            }
        }
    }
    let json = wants_json(request);
    let default = error.render_page(json, &PageLinks::of(request, config));
    if json {
        return default;
    }
    let custom = state
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

/// `<base path>/<routes_prefix>/sign-in`, with `return_to` set to this request's path and
/// query when that is a valid return path.
fn sign_in_location(request: &Request<'_>, config: &LogtoConfig) -> String {
    let here = request.uri().to_string();
    let mut location = format!("{}/sign-in", config.routes_base());
    if crate::return_path::ReturnPath::parse(&here).is_ok() {
        location.push_str("?return_to=");
        location.extend(url::form_urlencoded::byte_serialize(here.as_bytes()));
    }
    location
}

/// The sign-in link `location` asking for a sign-in at most `max_age` seconds old.
fn with_max_age(location: &str, max_age: u64) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}max_age={max_age}")
}

/// 303 to sign-in (`location`), coming back to this page afterwards.
fn sign_in_redirect(location: String) -> Response<'static> {
    Response::build()
        .status(Status::SeeOther)
        .raw_header("Location", location)
        .raw_header("Cache-Control", "no-store")
        .raw_header("Referrer-Policy", "no-referrer")
        .sized_body(0, Cursor::new(Vec::new()))
        .finalize()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &LogtoError, json: bool) -> String {
        let mut response = error.render_page(json, &PageLinks::default());
        let mut body = response.body_mut().take();
        rocket::async_test(async move { body.to_string().await.unwrap() })
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2F;script&gt;&amp;&quot;"
        );
        let page = body(&LogtoError::BadRequest("<b>bold</b>".into()), false);
        assert!(page.contains("&lt;b&gt;bold"), "{page}");
        assert!(!page.contains("<b>bold"), "{page}");
    }

    #[test]
    fn a_500_or_502_page_never_shows_the_developers_message() {
        for error in [
            LogtoError::Config("Sessions::list needs session_store = \"redis\"".into()),
            LogtoError::bad_gateway("Logto's discovery names the issuer \"http://evil\""),
        ] {
            for json in [false, true] {
                let page = body(&error, json);
                assert!(!page.contains("session_store"), "{page}");
                assert!(!page.contains("evil"), "{page}");
                assert!(
                    page.contains(&html_escape(error.message()).to_string()) || json,
                    "{page}"
                );
            }
        }
    }
}
