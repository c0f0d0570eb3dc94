//! Tokens for the app itself (OAuth `client_credentials`, as Logto's machine-to-machine
//! apps get them): one cached token per resource and scopes, renewed shortly before it
//! expires, with one token request at a time per resource and scopes in this process (a
//! single flight) and, with Redis, across the instances (the refresh lease of `store`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::M2mCredentials;
use crate::error::LogtoError;
use crate::oidc::provider::{Provider, ProviderError};
use crate::store::{Begin, Finish, Refreshed, Store};
use crate::util::clock::now;
use crate::util::single_flight::Flight;

/// A 503 without Logto's own `Retry-After` asks the client to wait this long.
const RETRY_AFTER_SECS: u64 = 5;
/// Lifetime assumed when Logto's answer has no `expires_in`.
const DEFAULT_LIFETIME_SECS: i64 = 3600;

/// A token of the app. No `Debug`: it holds the token.
#[derive(Clone)]
pub(crate) struct AppAccess {
    pub token: String,
    pub expires_at: i64,
}

/// Which token: the resource indicator and the space-separated scopes asked for.
type Key = (String, String);

#[derive(Default)]
struct Slot {
    token: Option<AppAccess>,
    flight: Option<Flight<Result<AppAccess, LogtoError>>>,
}

/// The app's tokens. The keys come from the app's code (its `Resource` types), not from
/// requests, so the map stays as small as the app's list of resources: no bound needed.
pub(crate) struct ClientCredentials {
    provider: Arc<Provider>,
    store: Store,
    credentials: Option<M2mCredentials>,
    /// A token with less life left than this is renewed (`token_refresh_margin_secs`).
    margin: i64,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl ClientCredentials {
    pub fn new(
        provider: Arc<Provider>,
        store: Store,
        credentials: Option<M2mCredentials>,
        margin_secs: u64,
    ) -> ClientCredentials {
        ClientCredentials {
            provider,
            store,
            credentials,
            margin: i64::try_from(margin_secs).unwrap_or(60),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `m2m_app_id` and `m2m_app_secret` are configured.
    pub fn is_configured(&self) -> bool {
        self.credentials.is_some()
    }

    /// A token for `resource` with `scopes`: the cached one while it has more than the
    /// margin left, else a new one, asked for once however many callers wait for it.
    pub async fn token(
        self: &Arc<Self>,
        resource: &str,
        scopes: &[&str],
    ) -> Result<AppAccess, LogtoError> {
        if self.credentials.is_none() {
            return Err(LogtoError::Config(
                "App tokens need a machine-to-machine app: set m2m_app_id and m2m_app_secret \
                 (or LOGTO_M2M_APP_ID and LOGTO_M2M_APP_SECRET) under [default.logto]"
                    .into(),
            ));
        }
        let key: Key = (resource.to_string(), scopes.join(" "));
        let flight = {
            let mut slots = self.slots.lock().expect("app token slots");
            let slot = slots.entry(key.clone()).or_default();
            if let Some(token) = slot.token.as_ref().filter(|t| self.fresh(t)) {
                return Ok(token.clone());
            }
            match &slot.flight {
                Some(flight) if flight.is_running() => flight.clone(),
                _ => {
                    let this = self.clone();
                    let flight = Flight::start(async move { this.fetch(key).await });
                    slot.flight = Some(flight.clone());
                    flight
                }
            }
        };
        flight.wait().await.unwrap_or_else(|| {
            Err(
                LogtoError::unavailable("The app's token could not be fetched; try again.")
                    .retry_after(RETRY_AFTER_SECS),
            )
        })
    }

    fn fresh(&self, token: &AppAccess) -> bool {
        token.expires_at - self.margin > now()
    }

    /// Asks the other instances (Redis) or Logto, and keeps the token before the waiters
    /// wake, so a caller arriving after them finds it cached.
    async fn fetch(self: Arc<Self>, key: Key) -> Result<AppAccess, LogtoError> {
        let result = self.fetch_shared(&key).await;
        if let Ok(token) = &result {
            let mut slots = self.slots.lock().expect("app token slots");
            slots.entry(key).or_default().token = Some(token.clone());
        }
        result
    }

    async fn fetch_shared(&self, key: &Key) -> Result<AppAccess, LogtoError> {
        let credentials = self.credentials.as_ref().expect("checked by `token`");
        let (resource, scope) = key;
        // The lease and the shared result are keyed as a refresh token's are: by a name no
        // refresh token can have (it starts with a NUL), for this app and scopes.
        let name = format!(
            "\u{0}client_credentials\u{0}{}\u{0}{scope}",
            credentials.app_id
        );
        let target = (Some(resource.clone()), None);
        let lease =
            match self
                .store
                .begin_refresh(&name, &target, now() + self.margin, None)
                .await
            {
                // A vanished holder cannot have spent anything: client credentials can
                // always be asked for again.
                Begin::Proceed(lease) | Begin::Doubt(lease) => Some(lease),
                Begin::Shared { result, .. } => {
                    return Ok(AppAccess {
                        token: result.access_token,
                        expires_at: result.expires_at,
                    })
                }
                Begin::Unavailable => return Err(LogtoError::unavailable(
                    "The app's token cannot be coordinated with the other instances now (Redis \
                     is unreachable); try again.",
                )
                .retry_after(RETRY_AFTER_SECS)),
                // Records a vanished instance left behind: they guard refresh tokens that can be
                // spent, and client credentials cannot be. Ask Logto without the lease.
                Begin::Rotated(_) | Begin::Spent => None,
            };
        let answer = self.request(credentials, resource, scope).await;
        if let Some(lease) = lease {
            let finish = match &answer {
                Ok(token) => Some(Refreshed {
                    refresh_token: name.clone(),
                    id_token: None,
                    access_token: token.token.clone(),
                    expires_at: token.expires_at,
                    made_at: Instant::now(),
                }),
                Err(_) => None,
            };
            let finish = match &finish {
                Some(result) => Finish::Refreshed {
                    result,
                    successor: None,
                },
                None => Finish::Free,
            };
            self.store
                .finish_refresh(lease, &name, &target, finish)
                .await;
        }
        answer
    }

    async fn request(
        &self,
        credentials: &M2mCredentials,
        resource: &str,
        scope: &str,
    ) -> Result<AppAccess, LogtoError> {
        let discovery = self.provider.discovery().await.map_err(with_retry_after)?;
        let asked = now();
        let response = self
            .provider
            .client_credentials(
                &discovery,
                &credentials.app_id,
                credentials.secret.expose(),
                resource,
                scope,
            )
            .await
            .map_err(|e| app_token_error(e, &credentials.app_id, resource, scope))?;
        log::info!(
            "logto: new app token for {} (machine-to-machine app {})",
            crate::util::logsafe::for_log(resource),
            crate::util::logsafe::for_log(&credentials.app_id)
        );
        let lifetime = response
            .expires_in
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(DEFAULT_LIFETIME_SECS);
        Ok(AppAccess {
            token: response.access_token,
            expires_at: asked + lifetime,
        })
    }
}

/// A 503 says when to try again: Logto's own `Retry-After`, else ours.
fn with_retry_after(error: LogtoError) -> LogtoError {
    match &error {
        LogtoError::Unavailable {
            retry_after: None, ..
        } => error.retry_after(RETRY_AFTER_SECS),
        _ => error,
    }
}

/// The error for a failed client-credentials request: a refused secret names the keys to
/// check (never the secret); anything else is a user token's error, with `Retry-After`.
fn app_token_error(e: ProviderError, app_id: &str, resource: &str, scope: &str) -> LogtoError {
    let failure = e.failure();
    match &e {
        ProviderError::Refused { error, .. } if error == "invalid_client" => {
            LogtoError::bad_gateway(format!(
                "Logto refused the machine-to-machine app's credentials (invalid_client): check \
                 m2m_app_id ({}) and m2m_app_secret (LOGTO_M2M_APP_SECRET)",
                crate::util::logsafe::for_log(app_id)
            ))
            .with_cause(failure)
        }
        ProviderError::Refused {
            error, description, ..
        } => LogtoError::bad_gateway(format!(
            "Logto refused the app token for {} with scopes [{}]: {} {} (is the resource \
             registered, and does the machine-to-machine app have a role with these scopes?)",
            crate::util::logsafe::for_log(resource),
            crate::util::logsafe::for_log(scope),
            crate::util::logsafe::for_log(error),
            crate::util::logsafe::for_log(description)
        ))
        .with_cause(failure),
        _ => with_retry_after(LogtoError::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_secret_names_the_keys_and_a_down_provider_says_when_to_retry() {
        let refused = ProviderError::Refused {
            what: "client credentials request",
            status: 401,
            error: "invalid_client".into(),
            description: "client authentication failed".into(),
        };
        let e = app_token_error(refused, "m2m-app", "https://api", "read");
        assert!(e.to_string().contains("m2m_app_secret"), "{e}");
        let down = ProviderError::NotSent {
            what: "client credentials request",
            timed_out: false,
        };
        match app_token_error(down, "m2m-app", "https://api", "read") {
            LogtoError::Unavailable { retry_after, .. } => {
                assert_eq!(retry_after, Some(RETRY_AFTER_SECS))
            }
            other => panic!("{other:?}"),
        }
    }
}
