//! Access tokens for API resources and organizations, and user info: served from the
//! session while fresh, otherwise obtained through the refresh coordinator and written
//! back to the session cookies in the same response.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rocket::time::OffsetDateTime;
use serde_json::{Map, Value};

use crate::claims::{IdTokenClaims, UserInfo};
use crate::error::LogtoError;
use crate::oidc::provider::ProviderError;
use crate::session::{self, CachedToken, Session};
use crate::tokens::refresh::RefreshError;
use crate::util::bounded::ExpiringMap;
use crate::util::clock::now;
use crate::util::jose::decode_jwt_payload;
use crate::util::logsafe::for_log;
use crate::util::telemetry::{self, SessionRefusal};
use crate::web::context::RequestContext;

/// An access token for one API resource and/or organization, valid for at least the
/// configured margin. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    decoded: Arc<DecodedToken>,
    expires_at: i64,
}

/// A token with its claims read once: shared between the requests that use it.
pub(crate) struct DecodedToken {
    token: String,
    claims: Map<String, Value>,
}

/// Decoded access tokens, by the end of the token (its signature); the whole token is
/// compared. Reading a token's claims is most of a cached-token request otherwise.
pub(crate) struct DecodedTokens(ExpiringMap<Arc<DecodedToken>>);

impl DecodedTokens {
    pub fn new(capacity: usize) -> DecodedTokens {
        DecodedTokens(ExpiringMap::new(
            std::time::Duration::from_secs(300),
            capacity,
        ))
    }

    pub(crate) fn get(&self, token: &str, expires_at: i64) -> AccessToken {
        let key = crate::session::cache::tail(token, 32);
        let decoded = match self.0.get(key).filter(|d| d.token == token) {
            Some(hit) => hit,
            None => {
                let claims = decode_jwt_payload::<Map<String, Value>>(token).unwrap_or_default();
                let decoded = Arc::new(DecodedToken {
                    token: token.to_string(),
                    claims,
                });
                self.0.insert(key, decoded.clone());
                decoded
            }
        };
        AccessToken {
            decoded,
            expires_at,
        }
    }
}

impl AccessToken {
    /// The token itself, for an `Authorization: Bearer` header. Keep it out of logs,
    /// URLs and pages; `Debug` and `Serialize` leave it out.
    pub fn secret(&self) -> &str {
        &self.decoded.token
    }

    /// When it expires.
    pub fn expires_at(&self) -> OffsetDateTime {
        crate::util::clock::datetime(self.expires_at)
    }

    /// Its granted scopes (the JWT's space-separated `scope` claim).
    pub fn scopes(&self) -> crate::claims::Scopes<'_> {
        crate::oidc::jwt::scopes(&self.decoded.claims)
    }

    /// Whether `scope` is one of its granted scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// Its decoded claims (`aud`, `scope`, `sub`, `exp`, ...), read without verification:
    /// the token came straight from Logto's token endpoint. Empty if it is not a JWT.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.decoded.claims
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("aud", &self.claims().get("aud"))
            .field("scope", &self.claims().get("scope"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `{"expires_at": <seconds since the epoch>, "scopes": [...], "claims": {...}}`: what the
/// token grants, without the token itself, so that serde-based logging cannot leak it.
/// Serialise [`AccessToken::secret`] yourself where a client needs the token.
impl serde::Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("AccessToken", 3)?;
        out.serialize_field("expires_at", &self.expires_at)?;
        out.serialize_field("scopes", &self.scopes().collect::<Vec<_>>())?;
        out.serialize_field("claims", self.claims())?;
        out.end()
    }
}

/// Checks that a token for (`resource`, `organization`) can be asked for at all. Both may
/// come from the request (a path segment), so what they name is the request's problem
/// (404, 400); only the app's own configuration makes a 500.
fn check_target(
    ctx: &RequestContext<'_>,
    resource: Option<&str>,
    organization: Option<&str>,
) -> Result<(), LogtoError> {
    let config = &ctx.state.config;
    if let Some(resource) = resource {
        if !config.resources.iter().any(|r| r == resource) {
            log::info!(
                "logto: no token for the API resource {:?}: it is not in the `resources` config (add it there if the app should get tokens for it)",
                shorten(resource)
            );
            return Err(LogtoError::NotFound(format!(
                "There is no API resource {:?} here.",
                shorten(resource)
            )));
        }
    }
    if organization.is_some() && !config.has_organizations_scope() {
        return Err(LogtoError::Config(
            "Organization tokens need the scope `urn:logto:scope:organizations` in the `scopes` config.".into(),
        ));
    }
    if let Some(org) = organization {
        if org.is_empty() || org.len() > 128 || org.chars().any(|c| c.is_control()) {
            return Err(LogtoError::BadRequest(
                "That is not a valid organization id.".into(),
            ));
        }
    }
    Ok(())
}

/// At most 100 characters of `text`, for a message that repeats a value of the request.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// A token for (`resource`, `organization`): from the session while it has more than the
/// margin of life left, else refreshed (once, whatever the concurrency) and stored.
pub(crate) async fn token_for(
    ctx: &RequestContext<'_>,
    resource: Option<&str>,
    organization: Option<&str>,
    force: bool,
) -> Result<AccessToken, LogtoError> {
    check_target(ctx, resource, organization)?;
    let config = &ctx.state.config;
    let margin = config.token_refresh_margin.as_secs() as i64;
    let mut guard = ctx.session.session.lock().await;
    let session = guard.as_mut().ok_or(LogtoError::Unauthenticated)?;
    let fresh_after = now() + margin;
    if !force {
        if let Some(cached) = session
            .cached_token(resource, organization)
            .filter(|t| t.expires_at > fresh_after)
        {
            return Ok(ctx
                .state
                .decoded_tokens
                .get(&cached.token, cached.expires_at));
        }
    }
    let made_after = force.then(std::time::Instant::now);
    let refreshed = refresh_into(
        ctx,
        &mut guard,
        resource,
        organization,
        fresh_after,
        made_after,
    )
    .await?;
    Ok(ctx
        .state
        .decoded_tokens
        .get(&refreshed.token, refreshed.expires_at))
}

/// Runs one refresh for the target and stores its result in the session and cookies.
async fn refresh_into(
    ctx: &RequestContext<'_>,
    guard: &mut Option<Arc<Session>>,
    resource: Option<&str>,
    organization: Option<&str>,
    fresh_after: i64,
    made_after: Option<std::time::Instant>,
) -> Result<CachedToken, LogtoError> {
    let state = ctx.state;
    let session = guard.as_mut().ok_or(LogtoError::Unauthenticated)?;
    let Some(refresh_token) = session.refresh_token.clone() else {
        log::warn!(
            "logto: the session of user {} has no refresh token, so no token can be fetched: keep `offline_access` granted (prompt = \"consent\")",
            decode_jwt_payload::<IdTokenClaims>(&session.id_token)
                .map(|c| c.sub)
                .unwrap_or_default()
        );
        return Err(LogtoError::SignInAgain(
            "This sign-in cannot renew access (Logto issued no refresh token, as offline access was not granted); sign in again."
                .into(),
        ));
    };
    let discovery = state.provider.discovery().await?;
    let old: IdTokenClaims =
        decode_jwt_payload(&session.id_token).map_err(|_| LogtoError::Unauthenticated)?;
    let target = (
        resource.map(str::to_string),
        organization.map(str::to_string),
    );
    // The ID token of a refresh is verified inside the shared call, once for all the
    // requests that share it (ES384 verification is the costliest step of a refresh).
    let old_claims = &old;
    // Whether this request is the one that called Logto (the others of a shared refresh
    // only receive its result): an operator reads one info line per call to Logto.
    let called = AtomicBool::new(false);
    let called = &called;
    let result = state
        .refresh
        .refresh_checking(&refresh_token, target, fresh_after, made_after, |rt| {
            let discovery = discovery.clone();
            async move {
                called.store(true, Ordering::Relaxed);
                let response = state.provider.refresh(&discovery, &rt, resource, organization).await?;
                if let Some(id_token) = &response.id_token {
                    let new = state
                        .provider
                        .verify_id_token(&discovery, id_token, None)
                        .await
                        .map_err(|e| ProviderError::Malformed(e.detail().to_string()))?;
                    if !same_user_and_app(&new, old_claims) {
                        return Err(ProviderError::Malformed(
                            "Logto's refreshed ID token names another user or app; the session was ended.".into(),
                        ));
                    }
                }
                Ok(response)
            }
        }, |rt| {
            let discovery = discovery.clone();
            async move { state.provider.refresh_token_is_active(&discovery, &rt).await }
        })
        .await;
    let result = match result {
        Ok(r) => Ok(r),
        Err(RefreshError::Provider(e)) => Err(e),
        Err(RefreshError::Undecided(e)) => {
            // An instance vanished while sending this token and Logto cannot say now
            // whether it used the token up: nothing was sent, the session stays.
            log::warn!(
                "logto: event=refresh_taken_over outcome=undecided reason={}: the refresh for user {} waits: an instance vanished while sending its token, and Logto could not be asked whether it still takes it; answering 503",
                e.label(),
                old.sub
            );
            return Err(LogtoError::unavailable(
                "Your access token cannot be renewed right now; try again in a moment.",
            )
            .retry_after(1)
            .with_cause(e.failure()));
        }
        Err(RefreshError::Unavailable) => {
            // Redis is down: nothing was sent to Logto (spending a token twice is worse
            // than a short wait) and the session stays as it is.
            let cached = match (resource, organization) {
                (None, None) => session.userinfo_token.clone(),
                _ => session.cached_token(resource, organization).cloned(),
            };
            if let Some(cached) = cached.filter(|t| t.expires_at > now()) {
                log::warn!(
                    "logto: the refresh for user {} waits until Redis is back; serving the cached access token meanwhile",
                    old.sub
                );
                return Ok(cached);
            }
            log::warn!(
                "logto: the refresh for user {} waits until Redis is back; answering 503",
                old.sub
            );
            let retry_after = state
                .config
                .redis
                .as_ref()
                .map_or(1, |r| r.timeout.as_secs().max(1));
            return Err(LogtoError::unavailable(
                "Your access token cannot be renewed right now; try again in a moment.",
            )
            .retry_after(retry_after));
        }
        Err(RefreshError::Spent) => {
            telemetry::session_refused(SessionRefusal::Rotated);
            // Mostly an old copy of the cookie (or one whose newer copy never arrived): Logto
            // would take the token for a replay and revoke the grant of the browser that
            // holds its successor, so it is not sent, and this copy of the session ends.
            log::warn!(
                "logto: signing out user {}: the session's refresh token was rotated out longer than `rotation_grace_secs` ago, or spent by a failed refresh or by an instance that vanished; it was not sent to Logto",
                old.sub
            );
            ctx.session.sign_out(guard, ctx.jar, ctx.state).await;
            return Err(LogtoError::Unauthenticated);
        }
    };
    let refreshed = match result {
        Ok(r) => r,
        Err(e) if e.may_have_spent_token() => {
            // The grant is gone or the refresh token may be spent: end the session
            // cleanly rather than risk sending a spent token (which revokes the grant).
            log_refresh_failure(&e, resource, organization);
            log::warn!(
                "logto: signing out user {}: the refresh token can no longer be used",
                old.sub
            );
            ctx.session.sign_out(guard, ctx.jar, ctx.state).await;
            return Err(if e.is_invalid_grant() {
                LogtoError::Unauthenticated
            } else {
                e.ending_the_session()
            });
        }
        Err(e) => {
            log_refresh_failure(&e, resource, organization);
            return Err(organization_error(e, organization));
        }
    };

    if let Some(id_token) = refreshed
        .id_token
        .as_deref()
        .filter(|t| *t != session.id_token.as_str())
    {
        // Verified by the call that produced it; a token carried along a rotation chain
        // must still belong to this session's user and app.
        let same = decode_jwt_payload::<IdTokenClaims>(id_token)
            .is_ok_and(|new| same_user_and_app(&new, &old));
        if !same {
            log::warn!(
                "logto: refreshed ID token refused for user {}: another user or app",
                old.sub
            );
            ctx.session.sign_out(guard, ctx.jar, ctx.state).await;
            return Err(LogtoError::bad_gateway(
                "Logto's refreshed ID token names another user or app; the session was ended.",
            ));
        }
        Arc::make_mut(session).id_token = id_token.into();
    }
    let cached = CachedToken {
        resource: resource.map(str::to_string),
        organization: organization.map(str::to_string),
        token: refreshed.access_token.clone().into(),
        expires_at: refreshed.expires_at,
    };
    let session = Arc::make_mut(session);
    session.refresh_token = Some(refreshed.refresh_token.clone());
    if resource.is_none() && organization.is_none() {
        session.userinfo_token = Some(cached.clone());
    } else {
        session.store_token(cached.clone());
    }
    session.seen_at = now();
    write_back(ctx, session, &cached).await;
    if called.load(Ordering::Relaxed) {
        log::info!(
            "logto: event=refresh outcome=ok user={}: refreshed tokens of user {0} (resource {resource:?}, organization {organization:?})",
            for_log(&old.sub)
        );
    } else {
        log::debug!(
            "logto: shared the refreshed tokens of user {} (resource {resource:?}, organization {organization:?}) from a refresh already made",
            old.sub
        );
    }
    Ok(cached)
}

/// A refreshed ID token must name the same issuer, user and app as the session's.
fn same_user_and_app(new: &IdTokenClaims, old: &IdTokenClaims) -> bool {
    new.iss == old.iss && new.sub == old.sub && new.aud == old.aud
}

/// Stores the session; when it no longer fits its store (the cookies, or the Redis
/// store's limit), leaves out the other cached tokens oldest first, then the user info
/// (all can be fetched again), rather than losing the sign-in or writing a session that
/// would not read back. With the Redis session store it is written there in place (no
/// cookie changes).
async fn write_back(ctx: &RequestContext<'_>, session: &mut Session, keep: &CachedToken) {
    // Whatever answers this request (the handler, or a catcher after a guard failed
    // later), the rotated refresh token must reach the browser: `save` notes the cookies.
    // A session grows by one token at a time, so one thing left out is usually enough.
    let mut left_out = 0;
    while let Err(session::TooLarge(bytes)) = ctx.session.save(ctx.jar, session, ctx.state).await {
        let had_user_info = session.user_info.is_some();
        if !session.leave_out_one(keep) {
            log::error!("logto: a session of {bytes} bytes does not fit its store even with nothing left out; tokens will be refreshed per request");
            return;
        }
        left_out += 1;
        if had_user_info && session.user_info.is_none() {
            log::warn!("logto: the session outgrew its store; its user info is left out and fetched on demand");
        }
    }
    if left_out > 0 {
        log::info!("logto: the session outgrew its store; {left_out} cached token(s) or the user info left out, fetched again when needed");
    }
}

fn log_refresh_failure(e: &ProviderError, resource: Option<&str>, organization: Option<&str>) {
    log::warn!(
        "logto: event=refresh outcome=failed reason={}: token refresh for resource {resource:?}, organization {organization:?} failed: {}",
        e.label(),
        crate::error::LogtoError::from(e.clone()).detail()
    );
}

fn organization_error(e: ProviderError, organization: Option<&str>) -> LogtoError {
    match (&e, organization) {
        (ProviderError::Refused { status: 403, .. }, Some(org)) => {
            LogtoError::Forbidden(format!("You are not a member of the organization {org:?}."))
        }
        (ProviderError::Refused { error, .. }, Some(_)) if error == "insufficient_scope" => LogtoError::SignInAgain(
            "This sign-in did not grant access to organizations (the scope `urn:logto:scope:organizations`); sign in again.".into(),
        ),
        _ => e.into(),
    }
}

/// Calls userinfo with the code exchange's opaque access token (refreshing it when
/// needed) and checks its `sub` against the ID token's.
pub(crate) async fn fetch_user_info(
    ctx: &RequestContext<'_>,
    claims: &IdTokenClaims,
) -> Result<UserInfo, LogtoError> {
    let state = ctx.state;
    let margin = state.config.token_refresh_margin.as_secs() as i64;
    let token = {
        let mut guard = ctx.session.session.lock().await;
        let session = guard.as_mut().ok_or(LogtoError::Unauthenticated)?;
        match session
            .userinfo_token
            .clone()
            .filter(|t| t.expires_at > now() + margin)
        {
            Some(t) => t.token,
            None => {
                refresh_into(ctx, &mut guard, None, None, now() + margin, None)
                    .await?
                    .token
            }
        }
    };
    let discovery = state.provider.discovery().await?;
    let value = state
        .provider
        .userinfo(&discovery, &token)
        .await
        .map_err(LogtoError::from)?;
    user_info_for(value, claims)
}

/// Types a userinfo answer, refusing one about another user.
pub(crate) fn user_info_for(value: Value, claims: &IdTokenClaims) -> Result<UserInfo, LogtoError> {
    let info: UserInfo = serde_json::from_value(value).map_err(|_| {
        LogtoError::bad_gateway("Logto's userinfo answer is not the JSON it should be.")
    })?;
    if info.sub != claims.sub {
        log::warn!(
            "logto: userinfo answered for another subject than {}; discarded",
            claims.sub
        );
        return Err(LogtoError::bad_gateway(
            "Logto's userinfo answer is about another user; it was discarded.",
        ));
    }
    Ok(info)
}
