//! `LogtoState`: what every request of the app needs, built once by the fairing at
//! ignition and managed by Rocket. Only `web` sees it whole; the layers below are handed
//! the parts they use (the provider client, the store, the refresh coordinator).

use std::sync::OnceLock;

use crate::config::LogtoConfig;
use crate::oidc::provider::Provider;
use crate::session::cache::DecodedSessions;
use crate::store::Store;
use crate::tokens::logout::Logouts;
use crate::tokens::refresh::RefreshCoordinator;
use crate::web::hooks::{ErrorPage, SignInHook};
use crate::web::sessions_admin::Sessions;
use crate::web::transaction::SpentStates;
use crate::web::user_tokens::DecodedTokens;

/// What the fairing shares with the routes and guards (Rocket managed state), built at
/// ignition from the configuration.
pub(crate) struct LogtoState {
    pub config: LogtoConfig,
    /// Shared with [`AppTokens`](crate::AppTokens), which calls Logto as the app.
    pub provider: std::sync::Arc<Provider>,
    pub refresh: RefreshCoordinator,
    /// Where refreshes and ended sessions are shared (for the readiness probe).
    pub store: Store,
    pub spent: SpentStates,
    pub logouts: Logouts,
    pub decoded: DecodedSessions,
    pub decoded_tokens: DecodedTokens,
    /// The sessions admin handle, also the way to the Redis session store.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub sessions: Sessions,
    pub on_sign_in: Option<SignInHook>,
    pub error_page: Option<ErrorPage>,
    /// Rocket's cookie key, read once from the launched configuration when a response
    /// needs session cookies put back (see `restore_session_cookies`).
    pub cookie_key: OnceLock<Option<cookie::Key>>,
}
