//! Logto's discovery document and keys, fetched on first use and cached.
//!
//! A dead or hanging Logto must not make requests queue: with Logto blackholed, each
//! request would otherwise wait a whole `http_timeout` behind the one before it. So
//! - a fresh copy is served from memory;
//! - a stale copy (older than the TTL) is served at once, and one background fetch
//!   refreshes it, at most one per backoff period after failures;
//! - with no copy at all, concurrent callers share one fetch, and a failure that cost its
//!   callers a timeout is answered at once to later callers until the backoff ends (a
//!   failure that came fast, such as a refused connection, is simply tried again).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::CoreJwsSigningAlgorithm;
use openidconnect::JwsSigningAlgorithm;
use serde::Deserialize;
use url::Url;

use crate::error::LogtoError;
use crate::oidc::jwks::Jwks;
use crate::oidc::provider::get_json;
use crate::util::single_flight::Flight;
use crate::util::telemetry::Endpoint;

/// Wait before the first retry after a failed fetch; doubled per failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The parts of `/.well-known/openid-configuration` this crate uses, plus the
/// session-management ones `openidconnect`'s core metadata lacks.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DiscoveryDocument {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: Url,
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// RFC 7662 (Logto enables it): asked only whether a refresh token an instance may
    /// have spent before it vanished is still good.
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// A fetched discovery document with its keys.
pub(crate) struct Discovery {
    pub doc: DiscoveryDocument,
    /// The signing algorithms tokens may use: discovery's, without `none` or any
    /// shared-secret algorithm (keys come from the JWKS only).
    pub algs: Vec<CoreJwsSigningAlgorithm>,
    pub jwks: Arc<Jwks>,
}

/// Where and how discovery is fetched; cloned into the fetch task.
#[derive(Clone)]
pub(crate) struct DiscoverySource {
    pub http: reqwest::Client,
    pub issuer: String,
    /// Least time between two JWKS refetches (see [`Jwks`]).
    pub jwks_refetch_interval: Duration,
}

impl DiscoverySource {
    async fn fetch(&self) -> Result<Discovery, LogtoError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let doc: DiscoveryDocument =
            get_json(&self.http, &url, "discovery request", Endpoint::Discovery).await?;
        if doc.issuer != self.issuer {
            return Err(LogtoError::bad_gateway(format!(
                "Logto's discovery names the issuer {:?}, but the configured endpoint means {:?}; check `endpoint`.",
                doc.issuer, self.issuer
            )));
        }
        let algs: Vec<CoreJwsSigningAlgorithm> = doc
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|alg| {
                serde_json::from_value::<CoreJwsSigningAlgorithm>(serde_json::Value::String(
                    alg.clone(),
                ))
                .ok()
            })
            .filter(|alg| *alg != CoreJwsSigningAlgorithm::None && !alg.uses_shared_secret())
            .collect();
        // OIDC Discovery: RS256 when the provider lists none.
        let algs = if algs.is_empty() {
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
        } else {
            algs
        };
        let keys = Jwks::fetch(&self.http, &doc.jwks_uri).await?;
        let jwks = Jwks::new(
            keys,
            doc.jwks_uri.clone(),
            self.http.clone(),
            self.jwks_refetch_interval,
        );
        Ok(Discovery {
            doc,
            algs,
            jwks: Arc::new(jwks),
        })
    }
}

/// The cached discovery, refreshed as the module docs say.
pub(crate) struct DiscoveryCache {
    source: DiscoverySource,
    state: Arc<Mutex<CacheState>>,
    ttl: Duration,
    /// A failed fetch that took at least this long is answered at once to callers without
    /// a copy until the backoff ends.
    slow: Duration,
}

type Fetch = Flight<Result<Arc<Discovery>, LogtoError>>;

/// Discovery as a readiness probe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// A copy is held; `fresh` unless refreshes failed for a whole TTL; `keys` in its JWKS.
    Loaded { fresh: bool, keys: usize },
    /// No copy, and the last fetch failed.
    Failed,
    /// No copy, and a fetch is still running.
    Pending,
}

#[derive(Default)]
struct CacheState {
    /// The last good copy and when it was fetched.
    current: Option<(Arc<Discovery>, Instant)>,
    flight: Option<Fetch>,
    /// Failed fetches in a row.
    failures: u32,
    /// No new fetch starts before this.
    retry_at: Option<Instant>,
    /// The last failure, when it was slow.
    remembered: Option<LogtoError>,
}

impl DiscoveryCache {
    /// A cache that keeps a copy for `ttl`; failures slower than `slow` are remembered.
    pub fn new(source: DiscoverySource, ttl: Duration, slow: Duration) -> DiscoveryCache {
        DiscoveryCache {
            source,
            state: Arc::new(Mutex::new(CacheState::default())),
            ttl,
            slow,
        }
    }

    /// The discovery document and keys; waits only when there is no copy at all.
    pub async fn get(&self) -> Result<Arc<Discovery>, LogtoError> {
        let flight = {
            let mut state = self.state.lock().expect("discovery lock");
            let may_start = state.retry_at.is_none_or(|at| Instant::now() >= at);
            let running = state.flight.as_ref().filter(|f| f.is_running()).cloned();
            if let Some((copy, fetched_at)) = &state.current {
                let copy = copy.clone();
                if fetched_at.elapsed() >= self.ttl && running.is_none() && may_start {
                    state.flight = Some(self.start());
                }
                return Ok(copy);
            }
            match running {
                Some(running) => running,
                None => {
                    if let Some(failure) = state.remembered.as_ref().filter(|_| !may_start) {
                        return Err(failure.clone());
                    }
                    let flight = self.start();
                    state.flight = Some(flight.clone());
                    flight
                }
            }
        };
        flight.wait().await.unwrap_or_else(|| {
            Err(LogtoError::unavailable(
                "The discovery request to Logto was interrupted; try again.",
            ))
        })
    }

    /// How discovery stands, for a readiness probe: asks for it as a request would (which
    /// starts a fetch when there is no copy, or refreshes a stale one in the background),
    /// but waits at most `wait`, so that a probe answers before its own timeout; a fetch
    /// still running goes on and the next probe sees its outcome.
    pub async fn readiness(&self, wait: Duration) -> Readiness {
        let got = tokio::time::timeout(wait, self.get()).await;
        let state = self.state.lock().expect("discovery lock");
        match &state.current {
            // Served while refreshes fail, but an operator wants to know once it is old:
            // past twice the TTL, refreshes have been failing for a whole TTL.
            Some((copy, at)) => Readiness::Loaded {
                fresh: at.elapsed() < self.ttl.saturating_mul(2),
                keys: copy.jwks.keys().len(),
            },
            None if got.is_err() => Readiness::Pending,
            None => Readiness::Failed,
        }
    }

    /// Starts a fetch that stores its outcome, whoever waits for it.
    fn start(&self) -> Fetch {
        let (source, state, slow) = (self.source.clone(), self.state.clone(), self.slow);
        Flight::start(async move {
            let started = Instant::now();
            let result = source.fetch().await.map(Arc::new);
            let mut state = state.lock().expect("discovery lock");
            match &result {
                Ok(fresh) => {
                    state.current = Some((fresh.clone(), Instant::now()));
                    state.failures = 0;
                    state.retry_at = None;
                    state.remembered = None;
                }
                Err(e) => {
                    state.failures = state.failures.saturating_add(1);
                    let backoff = BACKOFF_FIRST
                        .saturating_mul(1 << state.failures.min(8).saturating_sub(1))
                        .min(BACKOFF_MAX);
                    state.retry_at = Some(Instant::now() + backoff);
                    state.remembered = (started.elapsed() >= slow).then(|| e.clone());
                    if state.current.is_some() {
                        log::warn!(
                            "logto: event=discovery outcome=failed cached=yes retry_in_s={}: discovery refresh failed, serving the cached copy: {}",
                            backoff.as_secs(),
                            e.detail()
                        );
                    } else {
                        log::warn!(
                            "logto: event=discovery outcome=failed cached=no retry_in_s={}: discovery failed: {}",
                            backoff.as_secs(),
                            e.detail()
                        );
                    }
                }
            }
            result
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A minimal Logto on loopback: discovery and a one-key JWKS, with switches to make
    /// discovery hang, the JWKS wait or fail, and counters of the requests it received.
    pub(crate) struct MiniLogto {
        port: u16,
        knobs: Arc<Knobs>,
    }

    #[derive(Default)]
    struct Knobs {
        hang_discovery: AtomicBool,
        fail_jwks: AtomicBool,
        jwks_gate: tokio::sync::Notify,
        delay_jwks: AtomicBool,
        discovery_requests: AtomicUsize,
        jwks_requests: AtomicUsize,
    }

    impl MiniLogto {
        pub async fn start() -> MiniLogto {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let knobs = Arc::new(Knobs::default());
            let served = knobs.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, port, served.clone()));
                }
            });
            MiniLogto { port, knobs }
        }

        pub fn url(&self, path: &str) -> Url {
            Url::parse(&format!("http://127.0.0.1:{}{path}", self.port)).unwrap()
        }

        pub fn issuer(&self) -> String {
            format!("http://127.0.0.1:{}/oidc", self.port)
        }

        pub fn hang_discovery(&self, on: bool) {
            self.knobs.hang_discovery.store(on, Ordering::SeqCst);
        }

        pub fn fail_jwks(&self, on: bool) {
            self.knobs.fail_jwks.store(on, Ordering::SeqCst);
        }

        /// While on, JWKS requests are held until it is switched off.
        pub fn delay_jwks(&self, on: bool) {
            self.knobs.delay_jwks.store(on, Ordering::SeqCst);
            if !on {
                self.knobs.jwks_gate.notify_waiters();
            }
        }

        pub fn discovery_requests(&self) -> usize {
            self.knobs.discovery_requests.load(Ordering::SeqCst)
        }

        pub fn jwks_requests(&self) -> usize {
            self.knobs.jwks_requests.load(Ordering::SeqCst)
        }

        pub async fn wait_for_jwks_requests(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.jwks_requests() < n {
                assert!(Instant::now() < deadline, "no JWKS request came");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    async fn answer(mut stream: TcpStream, port: u16, knobs: Arc<Knobs>) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or("");
        let issuer = format!("http://127.0.0.1:{port}/oidc");
        let (status, body) = if path.ends_with("/.well-known/openid-configuration") {
            knobs.discovery_requests.fetch_add(1, Ordering::SeqCst);
            if knobs.hang_discovery.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let doc = serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "id_token_signing_alg_values_supported": ["ES384"],
            });
            (200, doc.to_string())
        } else if path.ends_with("/jwks") {
            knobs.jwks_requests.fetch_add(1, Ordering::SeqCst);
            while knobs.delay_jwks.load(Ordering::SeqCst) {
                let released = knobs.jwks_gate.notified();
                if !knobs.delay_jwks.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
            if knobs.fail_jwks.load(Ordering::SeqCst) {
                (500, "{}".to_string())
            } else {
                let keys = serde_json::json!({ "keys": [
                    { "kty": "RSA", "kid": "k1", "use": "sig", "n": "AQAB", "e": "AQAB" }
                ]});
                (200, keys.to_string())
            }
        } else {
            (404, "{}".to_string())
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn cache(logto: &MiniLogto, ttl: Duration, timeout: Duration) -> DiscoveryCache {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        let source = DiscoverySource {
            http,
            issuer: logto.issuer(),
            jwks_refetch_interval: Duration::from_secs(10),
        };
        DiscoveryCache::new(source, ttl, timeout / 4)
    }

    #[tokio::test]
    async fn a_stale_copy_is_served_at_once_while_logto_hangs() {
        let logto = MiniLogto::start().await;
        let timeout = Duration::from_secs(2);
        let cache = cache(&logto, Duration::ZERO, timeout);
        let first = cache.get().await.unwrap();
        assert_eq!(logto.discovery_requests(), 1);

        // Past its TTL (zero here), with Logto hanging: every caller gets the stale copy
        // at once, and one background fetch tries to refresh it.
        logto.hang_discovery(true);
        let started = Instant::now();
        for _ in 0..50 {
            let copy = cache.get().await.unwrap();
            assert!(Arc::ptr_eq(&copy, &first));
        }
        assert!(
            started.elapsed() < timeout / 2,
            "50 callers took {:?}",
            started.elapsed()
        );
        while logto.discovery_requests() < 2 {
            assert!(started.elapsed() < timeout, "no background refresh started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(logto.discovery_requests(), 2, "one refresh at a time");

        // The refresh times out; during the backoff nobody tries again, and the copy stays.
        let failed = || cache.state.lock().unwrap().failures == 1;
        while !failed() {
            assert!(started.elapsed() < 3 * timeout, "the refresh never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let copy = cache.state.lock().unwrap().current.clone().unwrap().0;
        assert!(Arc::ptr_eq(&copy, &first));
        assert!(Arc::ptr_eq(&cache.get().await.unwrap(), &first));
        assert_eq!(logto.discovery_requests(), 2, "backing off");
    }

    #[tokio::test]
    async fn without_a_copy_concurrent_callers_share_one_attempt_and_a_slow_failure_is_remembered()
    {
        let logto = MiniLogto::start().await;
        logto.hang_discovery(true);
        let timeout = Duration::from_millis(500);
        let cache = Arc::new(cache(&logto, Duration::from_secs(3600), timeout));
        let started = Instant::now();
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await })
            })
            .collect();
        for caller in callers {
            let e = caller.await.unwrap().err().expect("Logto hangs");
            assert!(e.message().contains("in time"), "{}", e.message());
        }
        assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
        assert_eq!(logto.discovery_requests(), 1);
        let again = Instant::now();
        assert!(cache.get().await.is_err());
        assert!(again.elapsed() < timeout / 2);
        assert_eq!(
            logto.discovery_requests(),
            1,
            "failing fast during the backoff"
        );
    }

    #[tokio::test]
    async fn a_fresh_copy_is_served_without_a_request() {
        let logto = MiniLogto::start().await;
        let cache = cache(&logto, Duration::from_secs(3600), Duration::from_secs(2));
        let first = cache.get().await.unwrap();
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&cache.get().await.unwrap(), &first));
        }
        assert_eq!(logto.discovery_requests(), 1);
        assert_eq!(logto.jwks_requests(), 1);
    }
}
