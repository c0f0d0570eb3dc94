//! What an app can plug in: code run after each sign-in, and its own error pages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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

/// The hook's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInDecision {
    /// Go on to the return path.
    Continue,
    /// Go on, but land here instead.
    RedirectTo(ReturnPath),
}

type SignInFuture = Pin<Box<dyn Future<Output = Result<SignInDecision, LogtoError>> + Send>>;
pub(crate) type SignInHook = Arc<dyn Fn(SignedIn) -> SignInFuture + Send + Sync>;

/// Renders a [`LogtoError`] as the app wants; `Err` falls back to the default page.
pub(crate) type ErrorPage =
    Arc<dyn for<'r> Fn(&LogtoError, &'r Request<'_>) -> response::Result<'static> + Send + Sync>;

pub(crate) fn sign_in_hook<F, Fut>(hook: F) -> SignInHook
where
    F: Fn(SignedIn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SignInDecision, LogtoError>> + Send + 'static,
{
    Arc::new(move |signed_in| Box::pin(hook(signed_in)))
}
