//! Tokens for the app itself: [`AppTokens`] in managed state (for background tasks too),
//! the [`AppToken<R>`] request guard, and [`ManagementApi`], Logto's Management API as a
//! [`Resource`].

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;

use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};

use crate::error::LogtoError;
use crate::tokens::client_credentials::ClientCredentials;
use crate::web::guards::Resource;
use crate::web::state::LogtoState;
use crate::web::user_tokens::AccessToken;

/// Logto's Management API, as a [`Resource`] for [`AppToken`] and [`AppTokens::token`].
/// Its indicator is the configured `management_api_resource` (Logto OSS's
/// `https://default.logto.app/api` by default; on Logto Cloud,
/// `https://<tenant-id>.logto.app/api`), whatever [`INDICATOR`](Resource::INDICATOR) says,
/// and it asks for the scope `all`, as Logto's Management API wants. The
/// machine-to-machine app needs Logto's "Logto Management API access" role.
pub struct ManagementApi;

impl Resource for ManagementApi {
    /// The OSS default; replaced by the configured `management_api_resource`.
    const INDICATOR: &'static str = crate::config::DEFAULT_MANAGEMENT_API_RESOURCE;
    const REQUIRED_SCOPES: &'static [&'static str] = &["all"];
}

/// The app's own access tokens (OAuth client credentials, from the machine-to-machine app
/// of `m2m_app_id` and `m2m_app_secret`), for calling APIs as the app rather than as a
/// user: Logto's Management API, or another service protected by Logto.
///
/// Managed by the fairing; a route takes `&State<AppTokens>` (or the [`AppToken<R>`]
/// guard), and a background task keeps a clone. Each token is cached until shortly before
/// it expires (`token_refresh_margin_secs`), and one token request at a time is made per
/// resource and scopes: in this process, and with `redis_url` across every instance.
///
/// ```
/// use rocket::fairing::AdHoc;
/// use rocket_logto::{AppTokens, Logto, Resource};
///
/// /// The reports service, called by a nightly job.
/// struct Reports;
/// impl Resource for Reports {
///     const INDICATOR: &'static str = "https://reports.example.com/api";
///     const REQUIRED_SCOPES: &'static [&'static str] = &["reports:write"];
/// }
///
/// #[rocket::launch]
/// fn rocket() -> _ {
///     rocket::build()
///         .attach(Logto::fairing())
///         .attach(AdHoc::on_liftoff("nightly job", |rocket| {
///             Box::pin(async move {
///                 let tokens = rocket.state::<AppTokens>().expect("the Logto fairing").clone();
///                 rocket::tokio::spawn(async move {
///                     match tokens.token::<Reports>().await {
///                         Ok(token) => { /* send `token.secret()` as a bearer token */ }
///                         Err(e) => rocket::warn!("no token for the reports service: {e}"),
///                     }
///                 });
///             })
///         }))
/// }
/// ```
#[derive(Clone)]
pub struct AppTokens {
    inner: Arc<ClientCredentials>,
    management_api: Arc<str>,
    decoded: Arc<crate::web::user_tokens::DecodedTokens>,
}

impl std::fmt::Debug for AppTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTokens")
            .field("configured", &self.inner.is_configured())
            .field("management_api", &self.management_api)
            .finish_non_exhaustive()
    }
}

impl AppTokens {
    pub(crate) fn new(inner: ClientCredentials, management_api: &str) -> AppTokens {
        AppTokens {
            inner: Arc::new(inner),
            management_api: management_api.into(),
            // The app has a handful of tokens at a time.
            decoded: Arc::new(crate::web::user_tokens::DecodedTokens::new(64)),
        }
    }

    /// Whether a machine-to-machine app is configured (`m2m_app_id`, `m2m_app_secret`).
    pub fn is_configured(&self) -> bool {
        self.inner.is_configured()
    }

    /// The resource indicator `R` is for: its `INDICATOR`, or for [`ManagementApi`] the
    /// configured `management_api_resource`.
    pub fn indicator<R: Resource>(&self) -> &str {
        if TypeId::of::<R>() == TypeId::of::<ManagementApi>() {
            &self.management_api
        } else {
            R::INDICATOR
        }
    }

    /// A valid access token of the app for `R`, asking Logto for `R::REQUIRED_SCOPES`.
    ///
    /// # Errors
    ///
    /// [`LogtoError::Config`] (500) when no machine-to-machine app is configured;
    /// [`LogtoError::Forbidden`] (403) when the token lacks `R::REQUIRED_SCOPES` (the
    /// machine-to-machine app lacks a role), or Logto denies it;
    /// [`LogtoError::BadGateway`] (502) when Logto refuses the credentials (the message
    /// names `m2m_app_id` and `m2m_app_secret`, never the secret) or the resource, or
    /// answers with something unusable; [`LogtoError::Unavailable`] (503, with
    /// `Retry-After`) when Logto (or Redis, with `redis_url`) cannot be reached.
    pub async fn token<R: Resource>(&self) -> Result<AccessToken, LogtoError> {
        let indicator = self.indicator::<R>();
        let access = self.inner.token(indicator, R::REQUIRED_SCOPES).await?;
        let token = self.decoded.get(&access.token, access.expires_at);
        let missing: Vec<&str> = R::REQUIRED_SCOPES
            .iter()
            .copied()
            .filter(|s| !token.has_scope(s))
            .collect();
        if !missing.is_empty() {
            log::warn!(
                "logto: the app's token for {} lacks the scopes {missing:?}: give the \
                 machine-to-machine app a role with them",
                crate::util::logsafe::for_log(indicator)
            );
            return Err(LogtoError::Forbidden(format!(
                "This app's access to {indicator} lacks the scopes: {}.",
                missing.join(", ")
            )));
        }
        Ok(token)
    }
}

/// A valid access token of the app itself for the resource `R` (see [`AppTokens`]), with
/// `R::REQUIRED_SCOPES`, for a route that calls an API as the app, e.g. Logto's Management
/// API ([`ManagementApi`]). It does not sign anyone in: combine it with
/// [`AuthenticatedUser`](crate::AuthenticatedUser) for a route of signed-in users.
///
/// Fails as [`AppTokens::token`] does: 503 with `Retry-After` when Logto cannot be
/// reached, 502 when it refuses, 403 for missing scopes. A route using it in an app
/// without `m2m_app_id` and `m2m_app_secret` stops the launch.
///
/// ```
/// # use rocket::get;
/// use rocket_logto::{AppToken, AuthenticatedUser, LogtoError, ManagementApi};
///
/// /// The signed-in user's roles, read through Logto's Management API.
/// #[get("/my-roles")]
/// async fn my_roles(
///     user: AuthenticatedUser<'_>,
///     token: AppToken<ManagementApi>,
/// ) -> Result<String, LogtoError> {
///     let url = format!("https://your-tenant.logto.app/api/users/{}/roles", user.id());
///     # let _ = (url, token.secret());
///     // reqwest::Client::new().get(url).bearer_auth(token.secret()).send().await ...
///     Ok("...".into())
/// }
/// ```
pub struct AppToken<R: Resource> {
    token: AccessToken,
    _resource: PhantomData<R>,
}

impl<R: Resource> AppToken<R> {
    /// The token, to keep beyond the request.
    pub fn into_inner(self) -> AccessToken {
        self.token
    }
}

/// The token's [`secret`](AccessToken::secret), [`scopes`](AccessToken::scopes),
/// [`claims`](AccessToken::claims) and [`expires_at`](AccessToken::expires_at).
impl<R: Resource> std::ops::Deref for AppToken<R> {
    type Target = AccessToken;

    fn deref(&self) -> &AccessToken {
        &self.token
    }
}

impl<R: Resource> std::fmt::Debug for AppToken<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppToken")
            .field("token", &self.token)
            .finish()
    }
}

#[rocket::async_trait]
impl<'r, R: Resource> FromRequest<'r> for AppToken<R> {
    type Error = LogtoError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        let result = match request.rocket().state::<AppTokens>() {
            Some(tokens) => tokens.token::<R>().await,
            None => Err(LogtoError::Config(
                "rocket_logto's AppToken needs the fairing: attach Logto::fairing().".into(),
            )),
        };
        match result {
            Ok(token) => Outcome::Success(AppToken {
                token,
                _resource: PhantomData,
            }),
            Err(e) => crate::web::guards::fail(request, e),
        }
    }
}

impl<R: Resource> Sentinel for AppToken<R> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        let configured = rocket
            .state::<LogtoState>()
            .is_some_and(|s| s.config.m2m.is_some());
        if !configured {
            log::error!(
                "rocket_logto: a route takes `AppToken`, but no machine-to-machine app is configured: attach `Logto::fairing()` and set m2m_app_id and m2m_app_secret (LOGTO_M2M_APP_SECRET) under [default.logto]."
            );
        }
        !configured
    }
}
