//! Refresh coordination: one token request at a time per refresh token.
//!
//! Logto may rotate the refresh token on any refresh, and reusing a rotated-out token
//! revokes the whole grant. Requests of one browser arrive in parallel, all carrying the
//! cookie they were sent with, so this module makes sure that
//! - concurrent requests that need the same (resource, organization) share one call;
//! - a request that still carries a rotated-out token follows it to its successor (and
//!   gets the fresh tokens) instead of spending it again;
//! - a refused refresh token is never sent again.
//!
//! Entries live for a short while (`ttl`) and their number is bounded (`capacity`), so
//! memory stays flat whatever the traffic.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::provider::{ProviderError, TokenResponse};
use crate::session::now;

/// What a request needs a token for.
pub(crate) type Target = (Option<String>, Option<String>);

/// The result of a refresh, as a request should store it.
#[derive(Clone)]
pub(crate) struct Refreshed {
    /// The refresh token to keep (the successor if Logto rotated it).
    pub refresh_token: String,
    /// A new raw ID token, when a refresh along the chain returned one (already verified).
    pub id_token: Option<String>,
    pub access_token: String,
    pub expires_at: i64,
}

#[derive(Default)]
struct EntryState {
    /// Set once this refresh token was rotated: (successor, ID token that came with it).
    successor: Option<(String, Option<String>)>,
    results: Vec<(Target, Arc<Refreshed>)>,
    /// Refused for every target (e.g. `invalid_grant`): never sent again.
    failed: Option<ProviderError>,
    /// Refused for one target only (e.g. not a member of that organization).
    failed_targets: Vec<(Target, ProviderError)>,
}

struct Entry {
    created: Instant,
    state: Mutex<EntryState>,
}

/// The coordinator. One per app, shared by all requests.
pub(crate) struct RefreshCoordinator {
    entries: SyncMutex<(HashMap<String, Arc<Entry>>, VecDeque<String>)>,
    ttl: Duration,
    capacity: usize,
}

/// How many rotations a stale request may follow before giving up.
const MAX_CHAIN: usize = 16;

impl RefreshCoordinator {
    pub fn new(ttl: Duration, capacity: usize) -> RefreshCoordinator {
        RefreshCoordinator {
            entries: SyncMutex::new((HashMap::new(), VecDeque::new())),
            ttl,
            capacity,
        }
    }

    fn entry(&self, refresh_token: &str) -> Arc<Entry> {
        let mut guard = self.entries.lock().expect("refresh entries lock");
        let (map, order) = &mut *guard;
        if let Some(entry) = map.get(refresh_token) {
            return entry.clone();
        }
        while let Some(oldest) = order.front() {
            let stale = map
                .get(oldest)
                .is_none_or(|e| e.created.elapsed() > self.ttl);
            if !stale && map.len() < self.capacity {
                break;
            }
            let oldest = order.pop_front().expect("front exists");
            map.remove(&oldest);
        }
        let entry = Arc::new(Entry {
            created: Instant::now(),
            state: Mutex::new(EntryState::default()),
        });
        map.insert(refresh_token.to_string(), entry.clone());
        order.push_back(refresh_token.to_string());
        entry
    }

    /// Number of refresh tokens currently remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().expect("refresh entries lock").0.len()
    }

    /// Gets a token for `target`, refreshing with `refresh_token` (or its successors) at
    /// most once across concurrent callers. `fresh_after` is the earliest acceptable expiry
    /// of a shared result; `call` performs the token request and checks any ID token.
    pub async fn refresh<F, Fut>(
        &self,
        refresh_token: &str,
        target: Target,
        fresh_after: i64,
        call: F,
    ) -> Result<Arc<Refreshed>, ProviderError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<TokenResponse, ProviderError>>,
    {
        let mut token = refresh_token.to_string();
        let mut id_token: Option<String> = None;
        for _ in 0..MAX_CHAIN {
            let entry = self.entry(&token);
            let mut state = entry.state.lock().await;
            if let Some(failed) = &state.failed {
                return Err(failed.clone());
            }
            if let Some((_, e)) = state.failed_targets.iter().find(|(t, _)| *t == target) {
                return Err(e.clone());
            }
            if let Some((_, result)) = state
                .results
                .iter()
                .find(|(t, r)| *t == target && r.expires_at > fresh_after)
            {
                let mut result = result.clone();
                if let Some((successor, successor_id)) = &state.successor {
                    // Someone rotated this token after the result was made: hand out the
                    // newest refresh token so this browser does not keep a spent one.
                    let r = Arc::make_mut(&mut result);
                    r.refresh_token = successor.clone();
                    r.id_token = successor_id.clone().or(r.id_token.take()).or(id_token);
                }
                return Ok(result);
            }
            if let Some((successor, successor_id)) = &state.successor {
                token = successor.clone();
                id_token = successor_id.clone().or(id_token);
                continue;
            }
            return match call(token.clone()).await {
                Ok(response) => {
                    let next = response
                        .refresh_token
                        .clone()
                        .unwrap_or_else(|| token.clone());
                    let new_id = response.id_token.clone().or(id_token);
                    if next != token {
                        state.successor = Some((next.clone(), response.id_token.clone()));
                    }
                    let result = Arc::new(Refreshed {
                        refresh_token: next,
                        id_token: new_id,
                        access_token: response.access_token,
                        expires_at: now() + response.expires_in.unwrap_or(3600) as i64,
                    });
                    state.results.retain(|(t, _)| *t != target);
                    state.results.push((target, result.clone()));
                    Ok(result)
                }
                Err(e) if e.may_have_spent_token() => {
                    // Never send this token again, whatever the target.
                    state.failed = Some(e.clone());
                    Err(e)
                }
                Err(e @ ProviderError::Refused { .. }) => {
                    // Refused for this target only (not a member, scope missing): the
                    // token is intact for others.
                    state.failed_targets.push((target, e.clone()));
                    Err(e)
                }
                Err(e) => {
                    // No answer or a server error: the token was not spent, a later
                    // request may try it again.
                    Err(e)
                }
            };
        }
        Err(ProviderError::Malformed(
            "Logto rotated the refresh token too many times at once".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn response(rt: &str) -> TokenResponse {
        serde_json::from_value(serde_json::json!({
            "access_token": format!("at-for-{rt}"), "refresh_token": format!("{rt}+"), "expires_in": 3600
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_stale_tokens_follow_the_rotation() {
        let coordinator = Arc::new(RefreshCoordinator::new(Duration::from_secs(60), 100));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, calls) = (coordinator.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                c.refresh("rt1", (Some("api".into()), None), 0, |rt| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(response(&rt)) }
                })
                .await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            assert_eq!(r.refresh_token, "rt1+");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Another resource with the rotated-out token: refreshes with the successor.
        let r = coordinator
            .refresh("rt1", (Some("other".into()), None), 0, |rt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert_eq!(rt, "rt1+", "must never spend a rotated-out token");
                    Ok(response(&rt))
                }
            })
            .await
            .unwrap();
        assert_eq!(r.refresh_token, "rt1++");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_is_never_sent_again() {
        let c = RefreshCoordinator::new(Duration::from_secs(60), 100);
        let refused = || ProviderError::Refused {
            what: "token refresh",
            status: 400,
            error: "invalid_grant".into(),
            description: String::new(),
        };
        let e = c
            .refresh("rt", (None, None), 0, |_| async { Err(refused()) })
            .await
            .err()
            .expect("must fail");
        assert!(e.is_invalid_grant());
        let e = c
            .refresh("rt", (Some("x".into()), None), 0, |_| async {
                panic!("must not be called")
            })
            .await
            .err()
            .expect("must fail");
        assert!(e.is_invalid_grant());
    }

    #[tokio::test]
    async fn entries_are_bounded() {
        let c = RefreshCoordinator::new(Duration::from_secs(60), 50);
        for i in 0..1000 {
            let _ = c
                .refresh(&format!("rt{i}"), (None, None), 0, |rt| async move {
                    Ok(response(&rt))
                })
                .await;
        }
        assert!(c.len() <= 50);
    }
}
