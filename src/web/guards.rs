//! The request guards: the crate's whole request-time API.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};

use crate::claims::{IdTokenClaims, UserInfo};
use crate::error::LogtoError;
use crate::web::context::{record_failure, RequestContext, RequestSession};
use crate::web::state::LogtoState;
use crate::web::user_tokens::{self, AccessToken};

fn logto_state<'r>(request: &'r Request<'_>) -> Result<&'r LogtoState, LogtoError> {
    request.rocket().state::<LogtoState>().ok_or_else(|| {
        LogtoError::Config(
            "rocket_logto's guards need the fairing: attach Logto::fairing().".into(),
        )
    })
}

/// The outcome of a guard that cannot give its value: a forward with 401 when nobody is
/// signed in (a ranked route may serve the request, else the 401 catcher answers), else
/// the error, recorded for the crate's catchers.
pub(crate) fn fail<T>(request: &Request<'_>, error: LogtoError) -> Outcome<T, LogtoError> {
    let path = request.uri().path();
    match &error {
        LogtoError::Unauthenticated => {
            log::debug!("logto: {path}: not signed in; forwarding");
            return Outcome::Forward(Status::Unauthorized);
        }
        LogtoError::Forbidden(m)
        | LogtoError::BadRequest(m)
        | LogtoError::NotFound(m)
        | LogtoError::SignInAgain(m) => {
            log::info!("logto: {path}: refused: {m}")
        }
        LogtoError::RecentSignInRequired { max_age } => {
            log::info!("logto: {path}: the sign-in is older than {max_age} s; asking for a step-up")
        }
        other => log::warn!("logto: {path}: {other}"),
    }
    record_failure(request, &error);
    Outcome::Error((error.status(), error))
}

/// Whether a guard that signs users in cannot work here: no fairing, or an API-only
/// configuration (logged with the fix).
fn missing_fairing(rocket: &Rocket<Ignite>, guard: &str) -> bool {
    match rocket.state::<LogtoState>() {
        None => {
            log::error!("rocket_logto: `{guard}` is used, but the Logto fairing is not attached: add `.attach(Logto::fairing())`.");
            true
        }
        Some(state) if state.config.is_api_only() => {
            log::error!("rocket_logto: `{guard}` signs users in, but the `logto` configuration has no app_id and app_secret (an API only): set app_id, app_secret and base_url, or protect the route with `BearerToken` instead.");
            true
        }
        Some(_) => false,
    }
}

/// The guide's `req.user`: whether someone is signed in, and their claims. Never fails,
/// except with 503 (`Retry-After`) when the Redis session store (`session_store = "redis"`)
/// cannot be reached for a session this instance has not cached: the session is not lost,
/// and the page must not show the user as signed out.
///
/// ```
/// # use rocket::get;
/// use rocket_logto::LogtoUser;
///
/// #[get("/")]
/// fn home(user: LogtoUser) -> String {
///     match user.claims() {
///         Some(claims) => format!("Hello {}", claims.sub),
///         None => "Hello stranger".into(),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct LogtoUser {
    claims: Option<Arc<IdTokenClaims>>,
    user_info: Option<UserInfo>,
}

impl LogtoUser {
    /// Whether a user is signed in.
    pub fn is_authenticated(&self) -> bool {
        self.claims.is_some()
    }

    /// The signed-in user's ID token claims.
    pub fn claims(&self) -> Option<&IdTokenClaims> {
        self.claims.as_deref()
    }

    /// The userinfo answer fetched at sign-in, when `fetch_user_info = true`.
    pub fn user_info(&self) -> Option<&UserInfo> {
        self.user_info.as_ref()
    }
}

async fn stored_user_info(session: &RequestSession, claims: &IdTokenClaims) -> Option<UserInfo> {
    let guard = session.session.lock().await;
    let value = guard.as_ref()?.user_info.clone()?;
    user_tokens::user_info_for(value, claims).ok()
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for LogtoUser {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let state = match logto_state(request) {
            Ok(state) => state,
            Err(e) => return fail(request, e),
        };
        let session = RequestSession::of(request, state).await;
        if session.unavailable {
            return fail(request, crate::web::redis_session::unavailable_error());
        }
        let claims = session.claims();
        let user_info = match (claims, state.config.fetch_user_info) {
            (Some(claims), true) => stored_user_info(session, claims).await,
            _ => None,
        };
        Outcome::Success(LogtoUser {
            claims: claims.cloned(),
            user_info,
        })
    }
}

impl Sentinel for LogtoUser {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        missing_fairing(rocket, "LogtoUser")
    }
}

/// A signed-in user. When nobody is signed in it **forwards** with 401: a route with a
/// later rank (`rank = 2`) can serve signed-out visitors, and with none the 401 catcher answers (with
/// [`Logto::catchers`](crate::Logto::catchers) mounted, a browser is redirected to sign-in
/// and brought back afterwards; API clients get 401). `Option<AuthenticatedUser>` is
/// `None` exactly when nobody is signed in. See
/// [Composing with Rocket](crate#composing-with-rocket).
///
/// The guard itself reads only the session cookies, never Logto. Its async methods fetch tokens and user info; refreshed tokens are written back to the
/// session cookies in this response.
///
/// ```
/// # use rocket::{get, serde::json::Json};
/// use rocket_logto::{AuthenticatedUser, IdTokenClaims};
///
/// #[get("/me")]
/// fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
///     Json(user.claims())
/// }
///
/// // An owned copy, to keep beyond the request:
/// fn copy(user: &AuthenticatedUser<'_>) -> IdTokenClaims {
///     user.claims().clone()
/// }
/// ```
pub struct AuthenticatedUser<'r> {
    /// Held by the request's session for the whole request.
    claims: &'r IdTokenClaims,
    ctx: RequestContext<'r>,
}

impl std::fmt::Debug for AuthenticatedUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedUser")
            .field("sub", &self.claims.sub)
            .finish_non_exhaustive()
    }
}

impl<'r> AuthenticatedUser<'r> {
    /// The ID token claims, borrowed for the whole request: a route can answer them
    /// without copying them, `fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims>`
    /// with `Json(user.claims())`.
    pub fn claims(&self) -> &'r IdTokenClaims {
        self.claims
    }

    /// The user id (`sub`).
    pub fn id(&self) -> &str {
        &self.claims.sub
    }

    /// With `session_store = "redis"`: the handle of this session, as
    /// [`Sessions::list`](crate::Sessions::list) names it (to mark "this session", or to
    /// end the others). `None` with the cookie store.
    pub fn session_handle(&self) -> Option<crate::SessionHandle> {
        self.ctx
            .session
            .stored
            .as_ref()
            .map(|s| crate::SessionHandle::from_hash(s.hash.clone()))
    }

    /// A valid access token for the API resource `indicator` (one of the configured
    /// `resources`); refreshed when it has less than the margin of life left.
    ///
    /// # Errors
    ///
    /// [`LogtoError::NotFound`] (404) when `indicator` is not in `resources`;
    /// [`LogtoError::Forbidden`] (403) when Logto refuses the resource to this user;
    /// [`LogtoError::SignInAgain`] (401) when the session has no refresh token;
    /// [`LogtoError::Unauthenticated`] (401) when Logto refused the refresh token (the
    /// session ended); [`LogtoError::BadGateway`] (502) or [`LogtoError::Unavailable`]
    /// (503) when Logto answered with something unusable or could not be reached (see
    /// [`LogtoError::provider_failure`]).
    pub async fn access_token(&self, indicator: &str) -> Result<AccessToken, LogtoError> {
        user_tokens::token_for(&self.ctx, Some(indicator), None, false).await
    }

    /// An organization token (`aud = urn:logto:organization:<id>`). Needs the
    /// organizations scope; 403 when the user is not a member.
    ///
    /// # Errors
    ///
    /// [`LogtoError::Forbidden`] (403) when the user is not a member;
    /// [`LogtoError::BadRequest`] (400) for a malformed organization id;
    /// [`LogtoError::Config`] (500) without the organizations scope in `scopes`;
    /// [`LogtoError::SignInAgain`] (401) when the session has no refresh token;
    /// [`LogtoError::Unauthenticated`] (401) when Logto refused the refresh token (the
    /// session ended); [`LogtoError::BadGateway`] (502) or [`LogtoError::Unavailable`]
    /// (503) when Logto answered with something unusable or could not be reached (see
    /// [`LogtoError::provider_failure`]).
    pub async fn organization_token(
        &self,
        organization_id: &str,
    ) -> Result<AccessToken, LogtoError> {
        let token = user_tokens::token_for(&self.ctx, None, Some(organization_id), false).await?;
        let expected = crate::claims::organization_urn(organization_id);
        let aud_ok = match token.claims().get("aud") {
            Some(serde_json::Value::String(aud)) => *aud == expected,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str() == Some(&expected))
            }
            _ => true, // an opaque token: nothing to check
        };
        if !aud_ok {
            return Err(LogtoError::bad_gateway(
                "Logto's organization token is for another audience.",
            ));
        }
        Ok(token)
    }

    /// A token for the API resource `indicator`, narrowed to the roles the user has in
    /// the organization (it carries an `organization_id` claim).
    ///
    /// # Errors
    ///
    /// As [`access_token`](Self::access_token) and
    /// [`organization_token`](Self::organization_token): 404, 400, 403 or 500 for the
    /// resource or organization; [`LogtoError::SignInAgain`] (401) when the session has no refresh token;
    /// [`LogtoError::Unauthenticated`] (401) when Logto refused the refresh token (the
    /// session ended); [`LogtoError::BadGateway`] (502) or [`LogtoError::Unavailable`]
    /// (503) when Logto answered with something unusable or could not be reached (see
    /// [`LogtoError::provider_failure`]).
    pub async fn organization_resource_token(
        &self,
        organization_id: &str,
        indicator: &str,
    ) -> Result<AccessToken, LogtoError> {
        user_tokens::token_for(&self.ctx, Some(indicator), Some(organization_id), false).await
    }

    /// Tokens for every organization in the user's `organizations` claim, fetched one
    /// after the other (never several refreshes at once), keyed by organization id.
    ///
    /// # Errors
    ///
    /// The first error of [`organization_token`](Self::organization_token), which stops
    /// the rest.
    pub async fn organization_tokens(&self) -> Result<BTreeMap<String, AccessToken>, LogtoError> {
        let mut tokens = BTreeMap::new();
        for org in self.claims.organizations.iter().flatten() {
            tokens.insert(org.clone(), self.organization_token(org).await?);
        }
        Ok(tokens)
    }

    /// The userinfo answer (`custom_data`, `identities`, `organization_data`, ...). With
    /// `fetch_user_info = true` the copy fetched at sign-in is returned without a request.
    ///
    /// # Errors
    ///
    /// [`LogtoError::BadGateway`] (502) also when the answer is about another user;
    /// [`LogtoError::SignInAgain`] (401) when the session has no refresh token;
    /// [`LogtoError::Unauthenticated`] (401) when Logto refused the refresh token (the
    /// session ended); [`LogtoError::BadGateway`] (502) or [`LogtoError::Unavailable`]
    /// (503) when Logto answered with something unusable or could not be reached (see
    /// [`LogtoError::provider_failure`]).
    pub async fn user_info(&self) -> Result<UserInfo, LogtoError> {
        if self.ctx.state.config.fetch_user_info {
            if let Some(info) = stored_user_info(self.ctx.session, self.claims).await {
                return Ok(info);
            }
        }
        user_tokens::fetch_user_info(&self.ctx, self.claims).await
    }

    /// Refreshes now, ignoring cached tokens: after a change of roles or organizations,
    /// to get tokens and an ID token that show it. Returns the new access token for
    /// `indicator` (or the userinfo token with `None`).
    ///
    /// # Errors
    ///
    /// As [`access_token`](Self::access_token); [`LogtoError::SignInAgain`] (401) when the session has no refresh token;
    /// [`LogtoError::Unauthenticated`] (401) when Logto refused the refresh token (the
    /// session ended); [`LogtoError::BadGateway`] (502) or [`LogtoError::Unavailable`]
    /// (503) when Logto answered with something unusable or could not be reached (see
    /// [`LogtoError::provider_failure`]).
    pub async fn force_refresh(&self, indicator: Option<&str>) -> Result<AccessToken, LogtoError> {
        user_tokens::token_for(&self.ctx, indicator, None, true).await
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthenticatedUser<'r> {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let state = match logto_state(request) {
            Ok(state) => state,
            Err(e) => return fail(request, e),
        };
        let session = RequestSession::of(request, state).await;
        if session.unavailable {
            return fail(request, crate::web::redis_session::unavailable_error());
        }
        match session.claims() {
            Some(claims) => Outcome::Success(AuthenticatedUser {
                claims,
                ctx: RequestContext {
                    state,
                    session,
                    jar: request.cookies(),
                },
            }),
            None => fail(request, LogtoError::Unauthenticated),
        }
    }
}

impl Sentinel for AuthenticatedUser<'_> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        missing_fairing(rocket, "AuthenticatedUser")
    }
}

/// A user who signed in at most `MAX_AGE_SECS` seconds ago: a step-up guard for
/// sensitive routes (changing an email, deleting an account, paying). It reads the ID
/// token's `auth_time`, when the user last really signed in at Logto (a password or MFA,
/// not a silent sign-in through Logto's session), and derefs to [`AuthenticatedUser`].
///
/// - Nobody signed in: forwards with 401, like [`AuthenticatedUser`].
/// - Signed in, but longer ago (or `auth_time` unknown): fails with 401
///   [`LogtoError::RecentSignInRequired`]. With [`Logto::catchers`](crate::Logto::catchers)
///   mounted, a browser's `GET` is sent to sign-in with `max_age=MAX_AGE_SECS`, so Logto
///   asks for the password again, and comes back to the route; the callback refuses an ID
///   token whose `auth_time` does not show the new sign-in. Other clients get 401 with
///   `WWW-Authenticate: Bearer error="insufficient_user_authentication", max_age=...`
///   (RFC 9470).
///
/// The step-up keeps the session's tokens: only the ID token (and `auth_time`) change.
///
/// ```
/// # use rocket::post;
/// use rocket_logto::RecentSignIn;
///
/// /// Needs a sign-in within the last 5 minutes.
/// #[post("/account/delete")]
/// fn delete_account(user: RecentSignIn<'_, 300>) -> String {
///     format!("deleting {}", user.id())
/// }
/// ```
pub struct RecentSignIn<'r, const MAX_AGE_SECS: u64> {
    user: AuthenticatedUser<'r>,
}

impl<'r, const MAX_AGE_SECS: u64> RecentSignIn<'r, MAX_AGE_SECS> {
    /// When the user signed in (`auth_time`, seconds since the Unix epoch).
    pub fn auth_time(&self) -> i64 {
        // The guard succeeds only with an `auth_time`.
        self.user.claims().auth_time().unwrap_or_default()
    }

    /// The signed-in user, to keep for the rest of the request.
    pub fn into_inner(self) -> AuthenticatedUser<'r> {
        self.user
    }
}

impl<'r, const MAX_AGE_SECS: u64> std::ops::Deref for RecentSignIn<'r, MAX_AGE_SECS> {
    type Target = AuthenticatedUser<'r>;

    fn deref(&self) -> &AuthenticatedUser<'r> {
        &self.user
    }
}

impl<const MAX_AGE_SECS: u64> std::fmt::Debug for RecentSignIn<'_, MAX_AGE_SECS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentSignIn")
            .field("max_age", &MAX_AGE_SECS)
            .field("sub", &self.user.claims().sub)
            .field("auth_time", &self.user.claims().auth_time())
            .finish_non_exhaustive()
    }
}

/// Whether a sign-in at `auth_time` is at most `max_age` seconds old at `now`. One in the
/// future (beyond the skew the callback allowed) is not trusted either.
fn signed_in_within(auth_time: Option<i64>, max_age: u64, now: i64, skew: i64) -> bool {
    let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
    auth_time.is_some_and(|t| t <= now.saturating_add(skew) && now.saturating_sub(t) <= max_age)
}

#[rocket::async_trait]
impl<'r, const MAX_AGE_SECS: u64> FromRequest<'r> for RecentSignIn<'r, MAX_AGE_SECS> {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let user = match AuthenticatedUser::from_request(request).await {
            Outcome::Success(user) => user,
            Outcome::Error(e) => return Outcome::Error(e),
            Outcome::Forward(s) => return Outcome::Forward(s),
        };
        let skew = i64::try_from(user.ctx.state.config.clock_skew.as_secs()).unwrap_or(60);
        let now = crate::util::clock::now();
        if signed_in_within(user.claims().auth_time(), MAX_AGE_SECS, now, skew) {
            Outcome::Success(RecentSignIn { user })
        } else {
            fail(
                request,
                LogtoError::RecentSignInRequired {
                    max_age: MAX_AGE_SECS,
                },
            )
        }
    }
}

impl<const MAX_AGE_SECS: u64> Sentinel for RecentSignIn<'_, MAX_AGE_SECS> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if MAX_AGE_SECS > crate::sign_in_options::MAX_MAX_AGE_SECS {
            // Its sign-in link would be refused: the route could never be reached.
            log::error!(
                "rocket_logto: `RecentSignIn<'_, {MAX_AGE_SECS}>` asks for more than {} seconds (a year), which no sign-in link accepts: use a shorter age.",
                crate::sign_in_options::MAX_MAX_AGE_SECS
            );
            return true;
        }
        missing_fairing(rocket, "RecentSignIn")
    }
}

/// An API resource: its indicator and the scopes a route needs.
///
/// The type is a route's requirement, not the API: routes that need different scopes of
/// one API use one type each, with the same `INDICATOR`.
///
/// ```
/// use rocket::{get, post};
/// use rocket_logto::{Resource, ResourceToken};
///
/// /// Any token for the shopping API.
/// struct Shopping;
/// impl Resource for Shopping {
///     const INDICATOR: &'static str = "https://shopping.example.com/api";
/// }
///
/// /// A token for the same API with `shopping:write`.
/// struct ShoppingWrite;
/// impl Resource for ShoppingWrite {
///     const INDICATOR: &'static str = Shopping::INDICATOR;
///     const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:write"];
/// }
///
/// #[get("/cart")]
/// fn cart(token: ResourceToken<Shopping>) -> String {
///     format!("scopes {:?}", token.scopes())
/// }
///
/// /// 403 when the user's token lacks `shopping:write`.
/// #[post("/cart")]
/// fn add_to_cart(token: ResourceToken<ShoppingWrite>) -> String {
///     format!("added, with scopes {:?}", token.scopes())
/// }
/// ```
pub trait Resource: Send + Sync + 'static {
    /// The resource indicator, exactly as in the `resources` config.
    const INDICATOR: &'static str;
    /// Scopes the token must carry, else the guard answers 403.
    const REQUIRED_SCOPES: &'static [&'static str] = &[];
}

/// A valid access token for the resource `R`.
///
/// - Nobody signed in, or the session ended while refreshing (Logto refused the refresh
///   token): forwards with 401, like [`AuthenticatedUser`].
/// - Fails with 403 when the token lacks `R::REQUIRED_SCOPES`, 401
///   ([`LogtoError::SignInAgain`]) when the session has no refresh token, 502/503 when
///   Logto fails or cannot be reached.
/// - A resource missing from the `resources` config stops the launch.
pub struct ResourceToken<R: Resource> {
    token: AccessToken,
    _resource: PhantomData<R>,
}

impl<R: Resource> ResourceToken<R> {
    /// The token, to keep beyond the request.
    pub fn into_inner(self) -> AccessToken {
        self.token
    }
}

/// The token's [`secret`](AccessToken::secret), [`scopes`](AccessToken::scopes),
/// [`claims`](AccessToken::claims) and [`expires_at`](AccessToken::expires_at), named as
/// the API guards' [`VerifiedToken`](crate::VerifiedToken) names them.
impl<R: Resource> std::ops::Deref for ResourceToken<R> {
    type Target = AccessToken;

    fn deref(&self) -> &AccessToken {
        &self.token
    }
}

impl<R: Resource> std::fmt::Debug for ResourceToken<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceToken")
            .field("resource", &R::INDICATOR)
            .field("token", &self.token)
            .finish()
    }
}

#[rocket::async_trait]
impl<'r, R: Resource> FromRequest<'r> for ResourceToken<R> {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let user = match AuthenticatedUser::from_request(request).await {
            Outcome::Success(user) => user,
            Outcome::Error(e) => return Outcome::Error(e),
            Outcome::Forward(s) => return Outcome::Forward(s),
        };
        let token = match user.access_token(R::INDICATOR).await {
            Ok(token) => token,
            Err(e) => return fail(request, e),
        };
        let missing: Vec<&str> = R::REQUIRED_SCOPES
            .iter()
            .copied()
            .filter(|s| !token.has_scope(s))
            .collect();
        if !missing.is_empty() {
            log::info!(
                "logto: user {} lacks scopes {missing:?} of {}",
                user.id(),
                R::INDICATOR
            );
            return fail(
                request,
                LogtoError::Forbidden(format!(
                    "Your access to {} lacks the scopes: {}.",
                    R::INDICATOR,
                    missing.join(", ")
                )),
            );
        }
        Outcome::Success(ResourceToken {
            token,
            _resource: PhantomData,
        })
    }
}

impl<R: Resource> Sentinel for ResourceToken<R> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if missing_fairing(rocket, "ResourceToken") {
            return true;
        }
        let Some(state) = rocket.state::<LogtoState>() else {
            return true;
        };
        let known = state.config.resources.iter().any(|r| r == R::INDICATOR);
        if !known {
            log::error!(
                "rocket_logto: a route needs a token for {:?}, which is not in the `resources` config: add it to [default.logto] resources.",
                R::INDICATOR
            );
        }
        !known
    }
}

/// The guard that fetches the userinfo answer for this request (or takes the copy kept at
/// sign-in with `fetch_user_info = true`): the data is a [`UserInfo`], reached through
/// `Deref` or [`FetchedUserInfo::into_inner`].
///
/// Nobody signed in: forwards with 401, like [`AuthenticatedUser`]. Fails with 502 when the
/// answer is about another user or unusable, 503 when Logto cannot be reached, and 401
/// ([`LogtoError::SignInAgain`]) when the session has no refresh token to get a fresh
/// userinfo token with. Earlier versions called this guard `UserInfo`, the name the data
/// has now.
///
/// ```
/// # use rocket::get;
/// use rocket_logto::FetchedUserInfo;
///
/// #[get("/plan")]
/// fn plan(info: FetchedUserInfo) -> String {
///     format!("{:?}", info.custom_data)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FetchedUserInfo(pub UserInfo);

impl FetchedUserInfo {
    /// The userinfo answer.
    pub fn into_inner(self) -> UserInfo {
        self.0
    }
}

impl std::ops::Deref for FetchedUserInfo {
    type Target = UserInfo;
    fn deref(&self) -> &UserInfo {
        &self.0
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for FetchedUserInfo {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let user = match AuthenticatedUser::from_request(request).await {
            Outcome::Success(user) => user,
            Outcome::Error(e) => return Outcome::Error(e),
            Outcome::Forward(s) => return Outcome::Forward(s),
        };
        match user.user_info().await {
            Ok(info) => Outcome::Success(FetchedUserInfo(info)),
            Err(e) => fail(request, e),
        }
    }
}

impl Sentinel for FetchedUserInfo {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        missing_fairing(rocket, "FetchedUserInfo")
    }
}

#[cfg(test)]
mod tests {
    use super::signed_in_within;

    #[test]
    fn recent_means_within_max_age_and_not_in_the_future() {
        let now = 1_000_000;
        assert!(signed_in_within(Some(now - 300), 300, now, 60));
        assert!(
            signed_in_within(Some(now + 60), 300, now, 60),
            "within the skew"
        );
        assert!(!signed_in_within(Some(now - 301), 300, now, 60));
        assert!(!signed_in_within(Some(now + 61), 300, now, 60), "future");
        assert!(!signed_in_within(None, 300, now, 60), "unknown");
        assert!(signed_in_within(Some(0), u64::MAX, now, 60));
    }
}
