//! Logto's signing keys (the JWKS): fetched with discovery, and fetched again when a token
//! names a key that is not there, which is how a key rotation shows.
//!
//! Anyone can post a token with a made-up key id (the back-channel logout route is open),
//! so refetches are rate-limited globally, whatever the key id: at most one starts per
//! interval, and callers that arrive while one runs share it. The first refetch is allowed
//! at once, so a genuine rotation is picked up on its first token.
//!
//! Each key's public key is parsed when the set is fetched ([`PublicKey::parse`]) and kept
//! parsed with it, so that a token's check does no parsing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet};
use url::Url;

use crate::error::LogtoError;
use crate::oidc::provider::get_json;
use crate::oidc::signature::PublicKey;
use crate::util::single_flight::Flight;
use crate::util::telemetry::{self, Endpoint};

/// One of Logto's keys: its JWK (id, use, type, algorithm) and its public key, parsed.
pub(crate) struct Key {
    pub jwk: CoreJsonWebKey,
    pub public: PublicKey,
}

/// A fetched key set, each key parsed.
fn parsed(set: CoreJsonWebKeySet) -> Arc<Vec<Arc<Key>>> {
    Arc::new(
        set.keys()
            .iter()
            .map(|jwk| {
                Arc::new(Key {
                    public: PublicKey::parse(jwk),
                    jwk: jwk.clone(),
                })
            })
            .collect(),
    )
}

/// Logto's current signing keys, with the rate-limited refetch.
pub(crate) struct Jwks {
    keys: Mutex<Arc<Vec<Arc<Key>>>>,
    refetch: Mutex<Refetch>,
    /// Where the keys are fetched again; `None` for a fixed set (the test key).
    uri: Option<Url>,
    http: reqwest::Client,
    /// Least time between the starts of two refetches.
    interval: Duration,
}

#[derive(Default)]
struct Refetch {
    /// When the last refetch started (none yet: the next may start at once).
    started: Option<Instant>,
    flight: Option<Flight<Result<(), LogtoError>>>,
}

impl Jwks {
    /// Keys fetched from `uri` (with discovery); refetches go to the same place.
    pub fn new(
        keys: CoreJsonWebKeySet,
        uri: Url,
        http: reqwest::Client,
        interval: Duration,
    ) -> Jwks {
        Jwks {
            keys: Mutex::new(parsed(keys)),
            refetch: Mutex::new(Refetch::default()),
            uri: Some(uri),
            http,
            interval,
        }
    }

    /// A set that is never fetched again (the `testing` feature's test key).
    #[cfg(any(feature = "testing", doc))]
    pub fn fixed(keys: CoreJsonWebKeySet) -> Jwks {
        Jwks {
            keys: Mutex::new(parsed(keys)),
            refetch: Mutex::new(Refetch::default()),
            uri: None,
            http: reqwest::Client::new(),
            interval: Duration::MAX,
        }
    }

    /// Fetches the key set once from `uri`.
    pub async fn fetch(http: &reqwest::Client, uri: &Url) -> Result<CoreJsonWebKeySet, LogtoError> {
        Ok(get_json(http, uri.as_str(), "key set request", Endpoint::Jwks).await?)
    }

    /// The keys as last fetched.
    pub fn keys(&self) -> Arc<Vec<Arc<Key>>> {
        self.keys.lock().expect("jwks lock").clone()
    }

    /// Fetches the keys again, unless a refetch started less than an interval ago; joins
    /// the refetch that runs, if any. Callers look at [`keys`](Self::keys) again afterwards
    /// either way: another caller's refetch may have brought the key they miss.
    pub async fn refetch(self: &Arc<Self>) -> Result<(), LogtoError> {
        let Some(uri) = self.uri.clone() else {
            return Ok(());
        };
        let flight = {
            let mut state = self.refetch.lock().expect("jwks refetch lock");
            match &state.flight {
                Some(running) if running.is_running() => running.clone(),
                _ if state.started.is_some_and(|at| at.elapsed() < self.interval) => return Ok(()),
                _ => {
                    state.started = Some(Instant::now());
                    telemetry::jwks_refetch();
                    let jwks = self.clone();
                    let flight = Flight::start(async move {
                        let keys = Jwks::fetch(&jwks.http, &uri).await?;
                        let keys = parsed(keys);
                        *jwks.keys.lock().expect("jwks lock") = keys;
                        log::info!("logto: event=jwks_refetch outcome=ok: fetched Logto's signing keys again (unknown key id)");
                        Ok(())
                    });
                    state.flight = Some(flight.clone());
                    flight
                }
            }
        };
        flight.wait().await.unwrap_or_else(|| {
            Err(LogtoError::unavailable(
                "Fetching Logto's signing keys was interrupted; try again.",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::discovery::tests::MiniLogto;

    fn jwks(logto: &MiniLogto, interval: Duration) -> Arc<Jwks> {
        Arc::new(Jwks::new(
            CoreJsonWebKeySet::new(vec![]),
            logto.url("/oidc/jwks"),
            reqwest::Client::new(),
            interval,
        ))
    }

    #[tokio::test]
    async fn concurrent_refetches_share_one_fetch_and_then_wait_for_the_interval() {
        let logto = MiniLogto::start().await;
        logto.delay_jwks(true);
        let jwks = jwks(&logto, Duration::from_secs(3600));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let jwks = jwks.clone();
                tokio::spawn(async move { jwks.refetch().await })
            })
            .collect();
        logto.wait_for_jwks_requests(1).await;
        logto.delay_jwks(false);
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(logto.jwks_requests(), 1);
        assert_eq!(jwks.keys().len(), 1, "the new keys are in place");
        for _ in 0..100 {
            jwks.refetch().await.unwrap();
        }
        assert_eq!(logto.jwks_requests(), 1, "no refetch within the interval");
    }

    #[tokio::test]
    async fn the_first_unknown_key_after_the_interval_refetches_at_once() {
        let logto = MiniLogto::start().await;
        let jwks = jwks(&logto, Duration::from_millis(50));
        // Before the first fetch: the interval may count from its start.
        let started = Instant::now();
        jwks.refetch().await.unwrap();
        assert_eq!(logto.jwks_requests(), 1);
        // Keep asking until the interval has passed: exactly one more fetch, at once.
        while logto.jwks_requests() == 1 {
            assert!(started.elapsed() < Duration::from_secs(5));
            jwks.refetch().await.unwrap();
            tokio::task::yield_now().await;
        }
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(logto.jwks_requests(), 2);
    }

    #[tokio::test]
    async fn a_failed_refetch_is_an_error_and_counts_for_the_rate_limit() {
        let logto = MiniLogto::start().await;
        logto.fail_jwks(true);
        let jwks = jwks(&logto, Duration::from_secs(3600));
        assert!(jwks.refetch().await.is_err());
        assert!(
            jwks.refetch().await.is_ok(),
            "rate-limited: nothing fetched"
        );
        assert_eq!(logto.jwks_requests(), 1);
    }
}
