//! What an app can plug in: code run after each sign-in, and its own error pages.

use std::fmt;
use std::sync::Arc;

use rocket::futures::future::BoxFuture;
use rocket::request::Request;
use rocket::response;

use crate::claims::IdTokenClaims;
use crate::error::LogtoError;
use crate::return_path::ReturnPath;

/// What the sign-in hook learns about a user who just signed in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignedIn {
    /// The verified ID token claims.
    pub claims: IdTokenClaims,
    /// The userinfo answer, when `fetch_user_info = true`.
    pub user_info: Option<crate::claims::UserInfo>,
    /// Where the browser will land unless the hook says otherwise.
    pub return_to: ReturnPath,
    /// Whether Logto issued a refresh token (so API tokens can be fetched later).
    pub has_refresh_token: bool,
}

/// The hook's verdict when it lets the user in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInDecision {
    /// Go on to the return path.
    Continue,
    /// Go on, but land here instead.
    RedirectTo(ReturnPath),
}

/// The sign-in hook's refusal: the user gets a 403 page (or JSON) with `message`, no
/// session starts, and the refresh token is revoked. The browser is not sent back to
/// sign-in, which would only bring it here again.
///
/// `message` is shown to the user as written (escaped in HTML): say what they can do, and
/// keep details of your own (a database error) for your log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInRefusal {
    message: String,
}

impl SignInRefusal {
    /// A refusal that shows `message` to the user.
    pub fn new(message: impl Into<String>) -> SignInRefusal {
        SignInRefusal {
            message: message.into(),
        }
    }

    /// What the user is shown.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SignInRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sign-in refused by the app: {}", self.message)
    }
}

impl std::error::Error for SignInRefusal {}

impl From<SignInRefusal> for LogtoError {
    /// A 403: the user may not sign in here, and signing in again would not change that.
    fn from(refusal: SignInRefusal) -> LogtoError {
        LogtoError::Forbidden(refusal.message)
    }
}

/// What [`Logto::on_sign_in`](crate::Logto::on_sign_in)'s hook returns: a future that may
/// borrow the request (`Box::pin(async move { ... })`).
pub type SignInFuture<'r> = BoxFuture<'r, Result<SignInDecision, SignInRefusal>>;

pub(crate) type SignInHook =
    Arc<dyn for<'r> Fn(SignedIn, &'r Request<'_>) -> SignInFuture<'r> + Send + Sync>;

/// Renders a [`LogtoError`] as the app wants; `Err` falls back to the default page.
pub(crate) type ErrorPage =
    Arc<dyn for<'r> Fn(&LogtoError, &'r Request<'_>) -> response::Result<'static> + Send + Sync>;
