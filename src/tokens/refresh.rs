//! Refresh coordination: one token request at a time per refresh token.
//!
//! Logto may rotate the refresh token on any refresh, and reusing a rotated-out token
//! revokes the whole grant. Requests of one browser arrive in parallel, all carrying the
//! cookie they were sent with, so this module makes sure that
//! - concurrent requests that need the same (resource, organization) share one call;
//! - a request that still carries a rotated-out token follows it to its successor (and
//!   gets the fresh tokens) instead of spending it again, but only for a short grace after
//!   the rotation (`rotation_grace_secs`): long enough for the racing requests of one
//!   browser, too short for a copied or stolen old cookie. After the grace such a token
//!   ends its session here and is still never sent, since Logto would take it for a
//!   replay (RFC 9700 §4.14.2) and revoke the grant of the browser that holds the new one;
//! - a refresh token that a failed refresh may have spent (refused, or an answer lost) is
//!   never sent again, also long after.
//!
//! Every map is keyed by a SHA-256 fingerprint of the refresh token, never the token, so
//! that the long record of rotated-out tokens holds no token at all. Entries live for a
//! while and their number is bounded, so memory stays flat whatever the traffic.
//!
//! The maps are this process's memory. Before a token this process knows nothing about is
//! sent, the [`Store`] is asked: in process it has nothing to add; with Redis it tells what
//! the other instances did with the token (refreshed, rotated, spent, refreshing right
//! now) and gives one instance at a time the lease to send it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::oidc::provider::{ProviderError, TokenResponse};
use crate::store::{Begin, Finish, Lease, Store};
pub(crate) use crate::store::{Refreshed, Successor, Target};
use crate::util::bounded::{Clock, ExpiringMap};
use crate::util::clock::now;
use crate::util::telemetry::{self, Joined, TakeOver};

/// Why the coordinator has no token to give.
#[derive(Debug, Clone)]
pub(crate) enum RefreshError {
    /// Logto refused the refresh, failed, or could not be reached.
    Provider(ProviderError),
    /// The refresh token was rotated out longer than the grace ago, or may have been spent
    /// by a failed refresh: its session ends, and the token was not sent to Logto.
    Spent,
    /// The shared store (Redis) cannot be reached: nothing was sent to Logto, the session
    /// is intact, try again shortly.
    Unavailable,
    /// An instance vanished while sending this token, and Logto could not be asked whether
    /// it still takes it: nothing was sent, the session is intact, try again shortly.
    Undecided(ProviderError),
}

impl From<ProviderError> for RefreshError {
    fn from(e: ProviderError) -> RefreshError {
        RefreshError::Provider(e)
    }
}

#[derive(Default)]
struct EntryState {
    results: Vec<(Target, Arc<Refreshed>)>,
    /// Refused for every target (e.g. `invalid_grant`): never sent again.
    failed: Option<ProviderError>,
    /// Refused for one target only (e.g. not a member of that organization).
    failed_targets: Vec<(Target, ProviderError)>,
}

struct Entry {
    state: Mutex<EntryState>,
}

/// What became of a refresh token.
enum Rotation {
    /// Not rotated (as far as this process knows).
    Current,
    /// Rotated within the grace: use the successor instead.
    Followed(Successor),
    /// Rotated longer than the grace ago, or possibly spent by a failed refresh.
    Ended,
}

/// The coordinator. One per app, shared by all requests.
pub(crate) struct RefreshCoordinator {
    /// Outcomes of recent refreshes, by token fingerprint.
    entries: ExpiringMap<Arc<Entry>>,
    /// Rotated-out token -> successor, for the grace only: the successor is a live token,
    /// so it is kept no longer than a browser's racing requests need it.
    successors: ExpiringMap<Successor>,
    /// Tokens never to be sent again (rotated out, or possibly spent by a failed refresh),
    /// for as long as a session cookie can live, where `entries` forget after minutes: what
    /// tells a rotated-out token past its grace from one this process never saw rotate.
    /// Holds fingerprints only.
    spent: ExpiringMap<()>,
    /// What the other instances know (nothing, in process).
    store: Store,
}

/// How many rotations a stale request may follow before giving up.
const MAX_CHAIN: usize = 16;

/// The key under which a refresh token is remembered: its SHA-256, base64url.
fn fingerprint(refresh_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(refresh_token.as_bytes()))
}

impl RefreshCoordinator {
    /// A coordinator that keeps refresh outcomes for `ttl`, at most `capacity` per kind,
    /// follows rotations for `grace`, and remembers them for `remember_for` (the longest a
    /// session cookie may live).
    #[cfg(test)]
    pub fn new(
        ttl: Duration,
        capacity: usize,
        grace: Duration,
        remember_for: Duration,
    ) -> RefreshCoordinator {
        Self::with_clock(
            ttl,
            capacity,
            grace,
            remember_for,
            Clock::System,
            Store::Local,
        )
    }

    /// The same, sharing what it learns through `store`.
    pub fn with_store(
        ttl: Duration,
        capacity: usize,
        grace: Duration,
        remember_for: Duration,
        store: Store,
    ) -> RefreshCoordinator {
        Self::with_clock(ttl, capacity, grace, remember_for, Clock::System, store)
    }

    fn with_clock(
        ttl: Duration,
        capacity: usize,
        grace: Duration,
        remember_for: Duration,
        clock: Clock,
        store: Store,
    ) -> RefreshCoordinator {
        RefreshCoordinator {
            entries: ExpiringMap::with_clock(ttl, capacity, clock.clone()),
            successors: ExpiringMap::with_clock(grace, capacity, clock.clone()),
            spent: ExpiringMap::with_clock(remember_for.max(grace), capacity, clock),
            store,
        }
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        self.entries.get_or_insert_with(key, || {
            Arc::new(Entry {
                state: Mutex::new(EntryState::default()),
            })
        })
    }

    fn remember_rotation(&self, key: &str, successor: Successor) {
        // Successor first: a reader never finds a rotation within the grace without it.
        self.successors.insert(key, successor);
        self.spent.insert(key, ());
    }

    fn rotation(&self, key: &str) -> Rotation {
        if let Some(successor) = self.successors.get(key) {
            Rotation::Followed(successor)
        } else if self.spent.get(key).is_some() {
            Rotation::Ended
        } else {
            Rotation::Current
        }
    }

    /// The last token of the chain that starts at `from`, with the newest ID token seen
    /// along it.
    fn newest(&self, mut from: Successor) -> Successor {
        for _ in 0..MAX_CHAIN {
            match self.successors.get(&fingerprint(&from.refresh_token)) {
                Some(next) => {
                    from = Successor {
                        refresh_token: next.refresh_token,
                        id_token: next.id_token.or(from.id_token),
                    }
                }
                None => break,
            }
        }
        from
    }

    /// [`Self::newest`], asking the other instances for the hops this process has not seen.
    async fn newest_shared(&self, mut from: Successor) -> Successor {
        for _ in 0..MAX_CHAIN {
            from = self.newest(from);
            match self.store.successor(&from.refresh_token).await {
                Some(next) => {
                    self.remember_rotation(&fingerprint(&from.refresh_token), next.clone());
                    from = Successor {
                        refresh_token: next.refresh_token,
                        id_token: next.id_token.or(from.id_token),
                    };
                }
                None => break,
            }
        }
        from
    }

    /// The lease of an instance that vanished while sending `token` ran out and is now
    /// this caller's: whether to send the token is Logto's to say (see
    /// [`Self::refresh_checking`]).
    async fn take_over<A, AFut>(
        &self,
        lease: Lease,
        key: &str,
        token: &str,
        target: &Target,
        still_good: &A,
    ) -> Result<Lease, RefreshError>
    where
        A: Fn(String) -> AFut,
        AFut: Future<Output = Result<Option<bool>, ProviderError>>,
    {
        match still_good(token.to_string()).await {
            Ok(Some(true)) => {
                telemetry::refresh_taken_over(TakeOver::Resent);
                log::warn!(
                    "logto: event=refresh_taken_over outcome=resent: an instance vanished while sending a refresh token that Logto still takes; this instance sends it"
                );
                Ok(lease)
            }
            Ok(answer) => {
                telemetry::refresh_taken_over(TakeOver::Ended);
                let (reason, what) = match answer {
                    Some(_) => (
                        "used_up",
                        "Logto had used up the refresh token (its successor vanished with the instance)",
                    ),
                    None => (
                        "cannot_ask",
                        "it may have been used up, and Logto's discovery names no introspection endpoint to ask",
                    ),
                };
                log::warn!(
                    "logto: event=refresh_taken_over outcome=ended reason={reason}: an instance vanished while sending a refresh token; {what}; the token is never sent again and its session ends"
                );
                self.spent.insert(key, ());
                self.store
                    .finish_refresh(lease, token, target, Finish::Spent)
                    .await;
                Err(RefreshError::Spent)
            }
            Err(e) => {
                telemetry::refresh_taken_over(TakeOver::Undecided);
                // Nothing is sent; the doubt stays for the next request to ask again.
                self.store
                    .finish_refresh(lease, token, target, Finish::Doubt)
                    .await;
                Err(RefreshError::Undecided(e))
            }
        }
    }

    /// Number of refresh tokens currently remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// [`Self::refresh_checking`] with no way to ask Logto whether a token is still good
    /// (in process, the question never comes up).
    #[cfg(test)]
    pub async fn refresh<F, Fut>(
        &self,
        refresh_token: &str,
        target: Target,
        fresh_after: i64,
        made_after: Option<Instant>,
        call: F,
    ) -> Result<Arc<Refreshed>, RefreshError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<TokenResponse, ProviderError>>,
    {
        self.refresh_checking(
            refresh_token,
            target,
            fresh_after,
            made_after,
            call,
            |_| async { Ok(None) },
        )
        .await
    }

    /// Gets a token for `target`, refreshing with `refresh_token` (or its successors) at
    /// most once across concurrent callers. `fresh_after` is the earliest acceptable expiry
    /// of a shared result, `made_after` (for a forced refresh) its earliest acceptable
    /// age; `call` performs the token request.
    ///
    /// `still_good` asks Logto whether a token is still active (introspection; `None`:
    /// Logto cannot be asked). It is called only for a token whose last sender vanished
    /// mid-refresh (an instance killed while it held the Redis lease): if Logto rotated the
    /// token before that instance died, the successor died with it and sending the token
    /// again would be taken for a replay; if not (the request never arrived, or Logto kept
    /// the token, as it does for a confidential app until 70% of the token's lifetime),
    /// the refresh goes on here and the session survives.
    pub async fn refresh_checking<F, Fut, A, AFut>(
        &self,
        refresh_token: &str,
        target: Target,
        fresh_after: i64,
        made_after: Option<Instant>,
        call: F,
        still_good: A,
    ) -> Result<Arc<Refreshed>, RefreshError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<TokenResponse, ProviderError>>,
        A: Fn(String) -> AFut,
        AFut: Future<Output = Result<Option<bool>, ProviderError>>,
    {
        let mut token = refresh_token.to_string();
        let mut id_token: Option<String> = None;
        for _ in 0..MAX_CHAIN {
            let key = fingerprint(&token);
            let entry = self.entry(&key);
            let mut state = entry.state.lock().await;
            if let Some(failed) = &state.failed {
                return Err(failed.clone().into());
            }
            if let Some((_, e)) = state.failed_targets.iter().find(|(t, _)| *t == target) {
                return Err(e.clone().into());
            }
            let successor = match self.rotation(&key) {
                Rotation::Current => None,
                Rotation::Followed(successor) => Some(successor),
                // Checked before any shared result: a token past its grace gets nothing.
                Rotation::Ended => return Err(RefreshError::Spent),
            };
            if let Some((_, result)) = state.results.iter().find(|(t, r)| {
                *t == target
                    && r.expires_at > fresh_after
                    && made_after.is_none_or(|m| r.made_at >= m)
            }) {
                let mut result = result.clone();
                if let Some(successor) = successor {
                    // Rotated after the result was made, maybe more than once: hand out the
                    // newest refresh token, so that this browser does not keep one that
                    // will have outlived its grace by its next refresh.
                    let newest = self.newest(successor);
                    let r = Arc::make_mut(&mut result);
                    r.refresh_token = newest.refresh_token;
                    r.id_token = newest.id_token.or(r.id_token.take()).or(id_token);
                }
                telemetry::refresh_joined(Joined::Process);
                return Ok(result);
            }
            if let Some(successor) = successor {
                token = successor.refresh_token;
                id_token = successor.id_token.or(id_token);
                continue;
            }
            // Nothing known here: what did the other instances do with it?
            let lease = match self
                .store
                .begin_refresh(&token, &target, fresh_after, made_after)
                .await
            {
                Begin::Proceed(lease) => lease,
                Begin::Doubt(lease) => {
                    self.take_over(lease, &key, &token, &target, &still_good)
                        .await?
                }
                Begin::Shared { result, successor } => {
                    telemetry::refresh_joined(Joined::Redis);
                    let mut result = Arc::new(result);
                    let r = Arc::make_mut(&mut result);
                    match successor {
                        Some(successor) => {
                            self.remember_rotation(&key, successor.clone());
                            let newest = self.newest_shared(successor).await;
                            r.refresh_token = newest.refresh_token;
                            r.id_token = newest.id_token.or(r.id_token.take()).or(id_token);
                        }
                        None => r.id_token = r.id_token.take().or(id_token),
                    }
                    state.results.retain(|(t, _)| *t != target);
                    state.results.push((target, result.clone()));
                    return Ok(result);
                }
                Begin::Rotated(successor) => {
                    self.remember_rotation(&key, successor.clone());
                    token = successor.refresh_token;
                    id_token = successor.id_token.or(id_token);
                    continue;
                }
                Begin::Spent => {
                    self.spent.insert(&key, ());
                    return Err(RefreshError::Spent);
                }
                Begin::Unavailable => return Err(RefreshError::Unavailable),
            };
            telemetry::refresh_grant();
            return match call(token.clone()).await {
                Ok(response) => {
                    let next = response
                        .refresh_token
                        .clone()
                        .unwrap_or_else(|| token.clone());
                    let new_id = response.id_token.clone().or(id_token);
                    let successor = (next != token).then(|| Successor {
                        refresh_token: next.clone(),
                        id_token: response.id_token.clone(),
                    });
                    if let Some(successor) = &successor {
                        self.remember_rotation(&key, successor.clone());
                    }
                    let result = Arc::new(Refreshed {
                        refresh_token: next,
                        id_token: new_id,
                        access_token: response.access_token,
                        expires_at: now() + response.expires_in.unwrap_or(3600) as i64,
                        made_at: Instant::now(),
                    });
                    let finish = Finish::Refreshed {
                        result: &result,
                        successor: successor.as_ref(),
                    };
                    self.store
                        .finish_refresh(lease, &token, &target, finish)
                        .await;
                    state.results.retain(|(t, _)| *t != target);
                    state.results.push((target, result.clone()));
                    Ok(result)
                }
                Err(e) if e.may_have_spent_token() => {
                    // Never send this token again, whatever the target: this request gets
                    // the error, later ones (after the entry is gone) `Spent`.
                    state.failed = Some(e.clone());
                    self.spent.insert(&key, ());
                    self.store
                        .finish_refresh(lease, &token, &target, Finish::Spent)
                        .await;
                    Err(e.into())
                }
                Err(e @ ProviderError::Refused { .. }) => {
                    // Refused for this target only (not a member, scope missing): the
                    // token is intact for others.
                    self.store
                        .finish_refresh(lease, &token, &target, Finish::Free)
                        .await;
                    state.failed_targets.push((target, e.clone()));
                    Err(e.into())
                }
                Err(e) => {
                    // Never sent, rate-limited or a server error: the token was not
                    // spent, a later request may try it again.
                    self.store
                        .finish_refresh(lease, &token, &target, Finish::Free)
                        .await;
                    Err(e.into())
                }
            };
        }
        Err(ProviderError::Malformed(
            "Logto rotated the refresh token too many times at once".into(),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(super) const GRACE: Duration = Duration::from_secs(60);
    const MONTH: Duration = Duration::from_secs(30 * 86_400);

    pub(super) fn coordinator(ttl: Duration, capacity: usize) -> RefreshCoordinator {
        RefreshCoordinator::new(ttl, capacity, GRACE, MONTH)
    }

    /// A coordinator on a clock the test moves.
    pub(super) fn on_clock(ttl: Duration) -> (RefreshCoordinator, Clock) {
        let clock = Clock::manual();
        let c = RefreshCoordinator::with_clock(ttl, 100, GRACE, MONTH, clock.clone(), Store::Local);
        (c, clock)
    }

    /// A token answer that rotates `rt` into `rt+`.
    pub(super) fn response(rt: &str) -> TokenResponse {
        serde_json::from_value(serde_json::json!({
            "access_token": format!("at-for-{rt}"), "refresh_token": format!("{rt}+"), "expires_in": 3600
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_stale_tokens_follow_the_rotation() {
        let coordinator = Arc::new(coordinator(Duration::from_secs(60), 100));
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
        let c = coordinator(Duration::from_secs(60), 100);
        let refused = || ProviderError::Refused {
            what: "token refresh",
            status: 400,
            error: "invalid_grant".into(),
            description: String::new(),
        };
        let invalid_grant = |r: Result<Arc<Refreshed>, RefreshError>| matches!(r, Err(RefreshError::Provider(e)) if e.is_invalid_grant());
        let r = c
            .refresh("rt", (None, None), 0, None, |_| async { Err(refused()) })
            .await;
        assert!(invalid_grant(r));
        let r = c
            .refresh("rt", (Some("x".into()), None), 0, None, |_| async {
                panic!("must not be called")
            })
            .await;
        assert!(invalid_grant(r));
    }

    #[tokio::test]
    async fn a_possibly_spent_token_is_not_sent_after_its_entry_expired() {
        // Entries expire at once: only the long record remembers the failure.
        let (c, clock) = on_clock(Duration::ZERO);
        let garbled = || ProviderError::Malformed("token refresh answer cut short".into());
        let r = c
            .refresh(
                "rt",
                (None, None),
                0,
                None,
                |_| async move { Err(garbled()) },
            )
            .await;
        assert!(matches!(
            r,
            Err(RefreshError::Provider(ProviderError::Malformed(_)))
        ));
        clock.advance(Duration::from_secs(86_400));
        let r = c
            .refresh("rt", (Some("x".into()), None), 0, None, |_| async {
                panic!("must not be called")
            })
            .await;
        assert!(matches!(r, Err(RefreshError::Spent)), "{:?}", r.err());
    }

    #[tokio::test]
    async fn entries_are_bounded() {
        let c = coordinator(Duration::from_secs(60), 50);
        for i in 0..1000 {
            let _ = c
                .refresh(&format!("rt{i}"), (None, None), 0, None, |rt| async move {
                    Ok(response(&rt))
                })
                .await;
        }
        assert!(c.len() <= 50);
        assert!(c.successors.len() <= 50 && c.spent.len() <= 50);
    }

    #[tokio::test]
    async fn refresh_tokens_are_remembered_by_fingerprint_only() {
        let c = coordinator(Duration::from_secs(60), 10);
        c.refresh("rt", (None, None), 0, None, |rt| async move {
            Ok(response(&rt))
        })
        .await
        .unwrap();
        assert!(c.spent.get("rt").is_none() && c.entries.get("rt").is_none());
        assert!(c.spent.get(&fingerprint("rt")).is_some());
        assert_eq!(fingerprint("rt").len(), 43, "SHA-256, base64url");
        assert_ne!(fingerprint("rt"), fingerprint("rt+"));
    }
}

#[cfg(test)]
mod rotation_memory {
    use super::tests::{on_clock, response, GRACE};
    use super::*;

    async fn rotate(rt: String) -> Result<TokenResponse, ProviderError> {
        Ok(response(&rt))
    }

    fn never_sent(rt: String) -> std::future::Ready<Result<TokenResponse, ProviderError>> {
        panic!("the rotated-out token {rt} was sent")
    }

    #[tokio::test]
    async fn within_the_grace_a_rotated_out_token_follows_its_successor_after_its_entry_expired() {
        // Entries expire at once; the rotation is remembered for the grace.
        let (c, clock) = on_clock(Duration::ZERO);
        c.refresh("rt", (None, None), 0, None, rotate)
            .await
            .unwrap();
        clock.advance(GRACE - Duration::from_secs(1));
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
    async fn after_the_grace_a_rotated_out_token_ends_its_session_and_is_never_sent() {
        // Entries outlive the grace, so a shared result of the old token is still there.
        let (c, clock) = on_clock(Duration::from_secs(120));
        let target = (Some("api".to_string()), None);
        c.refresh("rt", target.clone(), 0, None, rotate)
            .await
            .unwrap();
        clock.advance(GRACE + Duration::from_secs(1));
        for target in [target, (None, None)] {
            let r = c.refresh("rt", target, 0, None, never_sent).await;
            assert!(matches!(r, Err(RefreshError::Spent)), "{:?}", r.err());
        }
        // A day later (every entry and successor forgotten), still refused, still not sent.
        clock.advance(Duration::from_secs(86_400));
        let r = c.refresh("rt", (None, None), 0, None, never_sent).await;
        assert!(matches!(r, Err(RefreshError::Spent)));
        // The successor is untouched: the browser that holds it goes on.
        let r = c.refresh("rt+", (None, None), 0, None, rotate).await;
        assert_eq!(r.unwrap().refresh_token, "rt++");
    }

    #[tokio::test]
    async fn a_shared_result_hands_out_the_newest_token_of_the_chain() {
        let (c, _clock) = on_clock(Duration::from_secs(120));
        let a = (Some("a".to_string()), None);
        let b = (Some("b".to_string()), None);
        c.refresh("rt", a.clone(), 0, None, rotate).await.unwrap();
        // Another request with the old cookie needs another target: rt+ -> rt++.
        let r = c.refresh("rt", b, 0, None, rotate).await.unwrap();
        assert_eq!(r.refresh_token, "rt++");
        // A third with the old cookie shares the first result, but must not be handed rt+,
        // already rotated out: it would end the session at the next refresh after the grace.
        let r = c.refresh("rt", a, 0, None, never_sent).await.unwrap();
        assert_eq!(r.access_token, "at-for-rt");
        assert_eq!(r.refresh_token, "rt++");
    }

    #[tokio::test]
    async fn a_forced_refresh_accepts_only_newer_results_and_shares_them() {
        let c = Arc::new(super::tests::coordinator(Duration::from_secs(60), 100));
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
