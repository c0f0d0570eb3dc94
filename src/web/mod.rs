//! The Rocket face: the fairing and the state it manages, the routes under `/logto`, the
//! request guards (session and bearer), catchers and error pages, the health routes, the
//! request's session and its cookies, return paths, hooks, the `Sessions` admin API, and the
//! app's own tokens (`AppTokens`). The only layer that
//! names Rocket's request-time types (`Request`, `CookieJar`, `Outcome`, `FromRequest`).

pub(crate) mod app_tokens;
pub(crate) mod bearer;
pub(crate) mod catchers;
pub(crate) mod context;
pub(crate) mod error_page;
pub(crate) mod fairing;
pub(crate) mod guards;
pub(crate) mod health;
pub(crate) mod hooks;
pub(crate) mod redis_session;
pub(crate) mod routes;
pub(crate) mod session_cookies;
pub(crate) mod sessions_admin;
pub(crate) mod sign_in;
pub(crate) mod state;
pub(crate) mod transaction;
pub(crate) mod user_tokens;
