//! Sign users in to a [Rocket](https://rocket.rs) application with
//! [Logto](https://logto.io) (OpenID Connect): attach a fairing, add guards to route
//! signatures, configure it in `Rocket.toml`.
//!
//! ```no_run
//! use rocket::{get, launch, routes, response::content::RawHtml, serde::json::Json};
//! use rocket_logto::{AuthenticatedUser, IdTokenClaims, Logto, LogtoUser};
//!
//! #[get("/")]
//! fn home(user: LogtoUser) -> RawHtml<String> {
//!     RawHtml(match user.claims() {
//!         Some(claims) => format!(r#"Hello {}, <a href="/logto/sign-out">Sign Out</a>"#, claims.sub),
//!         None => r#"<a href="/logto/sign-in">Sign In</a>"#.to_string(),
//!     })
//! }
//!
//! #[get("/me")]
//! fn me(user: AuthenticatedUser) -> Json<IdTokenClaims> {
//!     Json(user.claims().clone())
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build().attach(Logto::fairing()).mount("/", routes![home, me])
//! }
//! ```
//!
//! ```toml
//! # Rocket.toml
//! [default.logto]
//! endpoint = "http://localhost:3001"
//! app_id = "<your-application-id>"
//! app_secret = "<your-application-secret>"   # or LOGTO_APP_SECRET
//! base_url = "http://localhost:8000"
//! ```
//!
//! # Configuration
//!
//! The fairing reads the `logto` table of Rocket's configuration. `LOGTO_ENDPOINT`,
//! `LOGTO_APP_ID`, `LOGTO_APP_SECRET` and `LOGTO_BASE_URL` override the file, as does
//! `ROCKET_LOGTO={...}`. A missing or malformed key stops the launch with one line naming it.
//!
//! | key | type | default | environment |
//! |---|---|---|---|
//! | `endpoint` | URL | required | `LOGTO_ENDPOINT` |
//! | `app_id` | string | required | `LOGTO_APP_ID` |
//! | `app_secret` | string | required | `LOGTO_APP_SECRET` |
//! | `base_url` | URL | required | `LOGTO_BASE_URL` |
//! | `scopes` | list of strings | `[]` (always `openid offline_access profile`) | |
//! | `resources` | list of URIs | `[]` | |
//! | `prompt` | string | `"consent"` | |
//! | `fetch_user_info` | bool | `false` | |
//! | `routes_prefix` | string | `"logto"` | |
//! | `post_sign_in_redirect` | path or same-origin URL | path of `base_url` | |
//! | `post_sign_out_redirect` | URL | `base_url` | |
//! | `first_screen` | `sign_in`, `register`, `reset_password`, `identifier:sign_in`, `identifier:register`, `single_sign_on` | none | |
//! | `identifiers` | list of `email`, `phone`, `username` | `[]` | |
//! | `direct_sign_in` | `social:<target>` or `sso:<connector-id>` | none | |
//! | `login_hint` | string | none | |
//! | `extra_params` | table of strings | `{}` | |
//! | `clock_skew_secs` | integer | `60` | |
//! | `http_timeout_secs` | integer | `10` | |
//! | `token_refresh_margin_secs` | integer | `60` | |
//! | `session_inactivity_secs` | integer | `1209600` (14 days) | |
//! | `session_lifetime_secs` | integer | `2592000` (30 days) | |
//! | `refresh_cache_entries` | integer | `10000` | |
//! | `spent_state_entries` | integer | `100000` | |
//!
//! Register `<base_url>/<routes_prefix>/sign-in-callback` as a redirect URI in Logto, and
//! `post_sign_out_redirect` as a post sign-out redirect URI.

#![warn(missing_docs)]

mod claims;
mod config;
mod context;
mod error;
mod fairing;
mod guards;
mod hooks;
mod provider;
mod redirect;
mod refresh;
mod routes;
mod session;
mod tokens;
mod transaction;

pub use claims::{
    organization_urn, Address, IdTokenClaims, OrganizationData, ProfileClaims,
    UserInfo as UserInfoClaims, UserScope, ORGANIZATIONS_RESOURCE,
};
pub use config::{AppSecret, ConfigError, LogtoConfig};
pub use error::{html_escape, LogtoError};
pub use fairing::Logto;
pub use guards::{AuthenticatedUser, LogtoUser, Resource, ResourceToken, UserInfo};
pub use hooks::{SignInDecision, SignedIn};
pub use redirect::{InvalidReturnPath, ReturnPath};
pub use tokens::AccessToken;
