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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::bounded::ExpiringMap;
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
    /// When Logto answered: a forced refresh accepts only answers newer than its request.
    pub made_at: Instant,
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
    state: Mutex<EntryState>,
}

/// The coordinator. One per app, shared by all requests.
pub(crate) struct RefreshCoordinator {
    entries: ExpiringMap<Arc<Entry>>,
    /// Rotated-out refresh token -> its successor, kept much longer than the entries: a
    /// browser may keep a rotated-out token when two responses raced to set its cookie,
    /// and sending that token to Logto again would revoke the grant.
    rotations: ExpiringMap<String>,
}

/// How long a rotation is remembered: longer than an access token lives, so the next
/// refresh of a browser holding a rotated-out token still finds its successor.
const ROTATION_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// How many rotations a stale request may follow before giving up.
const MAX_CHAIN: usize = 16;

impl RefreshCoordinator {
    pub fn new(ttl: Duration, capacity: usize) -> RefreshCoordinator {
        RefreshCoordinator {
            entries: ExpiringMap::new(ttl, capacity),
            rotations: ExpiringMap::new(ROTATION_MEMORY, capacity),
        }
    }

    fn entry(&self, refresh_token: &str) -> Arc<Entry> {
        self.entries.get_or_insert_with(refresh_token, || {
            Arc::new(Entry {
                state: Mutex::new(EntryState::default()),
            })
        })
    }

    fn remember_rotation(&self, from: &str, to: &str) {
        self.rotations.insert(from, to.to_string());
    }

    fn rotated_to(&self, token: &str) -> Option<String> {
        self.rotations.get(token)
    }

    /// Number of refresh tokens currently remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Gets a token for `target`, refreshing with `refresh_token` (or its successors) at
    /// most once across concurrent callers. `fresh_after` is the earliest acceptable expiry
    /// of a shared result, `made_after` (for a forced refresh) its earliest acceptable
    /// age; `call` performs the token request.
    pub async fn refresh<F, Fut>(
        &self,
        refresh_token: &str,
        target: Target,
        fresh_after: i64,
        made_after: Option<Instant>,
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
            if let Some((_, result)) = state.results.iter().find(|(t, r)| {
                *t == target
                    && r.expires_at > fresh_after
                    && made_after.is_none_or(|m| r.made_at >= m)
            }) {
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
            if let Some(successor) = self.rotated_to(&token) {
                // Rotated long ago (the entry is gone): follow it, never resend it.
                drop(state);
                token = successor;
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
                        self.remember_rotation(&token, &next);
                    }
                    let result = Arc::new(Refreshed {
                        refresh_token: next,
                        id_token: new_id,
                        access_token: response.access_token,
                        expires_at: now() + response.expires_in.unwrap_or(3600) as i64,
                        made_at: Instant::now(),
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
                c.refresh("rt1", (Some("api".into()), None), 0, None, |rt| {
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
            .refresh("rt1", (Some("other".into()), None), 0, None, |rt| {
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
            .refresh("rt", (None, None), 0, None, |_| async { Err(refused()) })
            .await
            .err()
            .expect("must fail");
        assert!(e.is_invalid_grant());
        let e = c
            .refresh("rt", (Some("x".into()), None), 0, None, |_| async {
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
                .refresh(&format!("rt{i}"), (None, None), 0, None, |rt| async move {
                    Ok(response(&rt))
                })
                .await;
        }
        assert!(c.len() <= 50);
    }
}

#[cfg(test)]
mod rotation_memory {
    use super::*;

    #[tokio::test]
    async fn a_rotated_out_token_is_followed_after_its_entry_expired() {
        // Entries expire at once; the rotation is remembered.
        let c = RefreshCoordinator::new(Duration::ZERO, 100);
        let rotate = |rt: String| async move {
            Ok::<_, ProviderError>(
                serde_json::from_value::<TokenResponse>(serde_json::json!({
                    "access_token": format!("at-{rt}"), "refresh_token": format!("{rt}+"), "expires_in": 3600
                }))
                .unwrap(),
            )
        };
        c.refresh("rt", (None, None), 0, None, rotate)
            .await
            .unwrap();
        // Someone evicts the entry (another token arrives), then the stale token is used.
        c.refresh("other", (None, None), 0, None, rotate)
            .await
            .unwrap();
        let r = c
            .refresh(
                "rt",
                (Some("api".into()), None),
                0,
                None,
                |rt: String| async move {
                    assert_eq!(rt, "rt+", "the rotated-out token must not be sent again");
                    rotate(rt).await
                },
            )
            .await
            .unwrap();
        assert_eq!(r.refresh_token, "rt++");
    }

    #[tokio::test]
    async fn a_forced_refresh_accepts_only_newer_results_and_shares_them() {
        let c = Arc::new(RefreshCoordinator::new(Duration::from_secs(60), 100));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let call = {
            let calls = calls.clone();
            move |rt: String| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    Ok::<_, ProviderError>(
                        serde_json::from_value::<TokenResponse>(serde_json::json!({
                            "access_token": format!("at-{rt}"), "refresh_token": format!("{rt}+")
                        }))
                        .unwrap(),
                    )
                }
            }
        };
        c.refresh("rt", (None, None), 0, None, call.clone())
            .await
            .unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, call) = (c.clone(), call.clone());
            tasks.push(tokio::spawn(async move {
                c.refresh("rt", (None, None), 0, Some(started), call).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().refresh_token, "rt++");
        }
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one normal, one forced"
        );
    }
}
