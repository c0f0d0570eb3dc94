//! Access tokens for API resources and organizations, and user info: served from the
//! session while fresh, otherwise obtained through the refresh coordinator and written
//! back to the session cookies in the same response.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::claims::{organization_urn, IdTokenClaims, UserInfo};
use crate::context::RequestContext;
use crate::error::LogtoError;
use crate::provider::{decode_jwt_payload, ProviderError};
use crate::session::{self, now, CachedToken, Session};

/// An access token for one API resource and/or organization, valid for at least the
/// configured margin. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    token: String,
    expires_at: i64,
    claims: Value,
}

impl AccessToken {
    fn new(token: String, expires_at: i64) -> AccessToken {
        let claims = decode_jwt_payload(&token).unwrap_or(Value::Null);
        AccessToken {
            token,
            expires_at,
            claims,
        }
    }

    /// The token, for an `Authorization: Bearer` header.
    pub fn access_token(&self) -> &str {
        &self.token
    }

    /// When it expires, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// Its granted scopes (the JWT's `scope` claim).
    pub fn scopes(&self) -> Vec<&str> {
        self.claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Whether it carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(&scope)
    }

    /// Its decoded claims (`aud`, `scope`, `sub`, `exp`, ...), read without verification:
    /// the token came straight from Logto's token endpoint. `Null` if it is not a JWT.
    pub fn claims(&self) -> &Value {
        &self.claims
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("aud", &self.claims.get("aud"))
            .field("scope", &self.claims.get("scope"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl serde::Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("AccessToken", 4)?;
        out.serialize_field("access_token", &self.token)?;
        out.serialize_field("expires_at", &self.expires_at)?;
        out.serialize_field("scopes", &self.scopes())?;
        out.serialize_field("claims", &self.claims)?;
        out.end()
    }
}

/// Checks that a token for (`resource`, `organization`) can be asked for at all.
fn check_target(
    ctx: &RequestContext<'_>,
    resource: Option<&str>,
    organization: Option<&str>,
) -> Result<(), LogtoError> {
    let config = &ctx.state.config;
    if let Some(resource) = resource {
        if !config.resources.iter().any(|r| r == resource) {
            return Err(LogtoError::Config(format!(
                "The API resource {resource:?} is not in the `resources` config; add it there so sign-in asks for it."
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
            return Ok(AccessToken::new(cached.token.clone(), cached.expires_at));
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
    Ok(AccessToken::new(refreshed.token, refreshed.expires_at))
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
        return Err(LogtoError::Config(
            "Logto issued no refresh token: keep `offline_access` granted (prompt = \"consent\")."
                .into(),
        ));
    };
    let discovery = state.provider.discovery().await?;
    let target = (
        resource.map(str::to_string),
        organization.map(str::to_string),
    );
    let result = state
        .refresh
        .refresh(&refresh_token, target, fresh_after, made_after, |rt| {
            let discovery = discovery.clone();
            async move {
                state
                    .provider
                    .refresh(&discovery, &rt, resource, organization)
                    .await
            }
        })
        .await;
    let refreshed = match result {
        Ok(r) => r,
        Err(e) if e.may_have_spent_token() => {
            // The grant is gone or the refresh token may be spent: end the session
            // cleanly rather than risk sending a spent token (which revokes the grant).
            let sub = decode_jwt_payload::<IdTokenClaims>(&session.id_token)
                .map(|c| c.sub)
                .unwrap_or_default();
            log_refresh_failure(&e, resource, organization);
            log::warn!("logto: signing out user {sub}: the refresh token can no longer be used");
            ctx.session.sign_out(guard, ctx.jar);
            return Err(if e.is_invalid_grant() {
                LogtoError::Unauthenticated
            } else {
                e.into()
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
        .filter(|t| *t != session.id_token)
    {
        let old: IdTokenClaims =
            decode_jwt_payload(&session.id_token).map_err(|_| LogtoError::Unauthenticated)?;
        let checked = state.provider.verify_id_token(&discovery, id_token, None).await.and_then(|new| {
            if new.iss == old.iss && new.sub == old.sub && new.aud == old.aud {
                Ok(())
            } else {
                Err(LogtoError::BadGateway(
                    "Logto's refreshed ID token names another user or app; the session was ended.".into(),
                ))
            }
        });
        if let Err(e) = checked {
            log::warn!(
                "logto: refreshed ID token refused for user {}: {}",
                old.sub,
                e.message()
            );
            ctx.session.sign_out(guard, ctx.jar);
            return Err(e);
        }
        Arc::make_mut(session).id_token = id_token.to_string();
    }
    let cached = CachedToken {
        resource: resource.map(str::to_string),
        organization: organization.map(str::to_string),
        token: refreshed.access_token.clone(),
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
    write_back(ctx, session, &cached);
    if let Ok(claims) = decode_jwt_payload::<IdTokenClaims>(&session.id_token) {
        log::info!("logto: refreshed tokens of user {} (resource {resource:?}, organization {organization:?})", claims.sub);
    }
    Ok(cached)
}

/// Stores the session; when it no longer fits in the cookies, drops the other cached
/// tokens (they can be fetched again) rather than losing the sign-in.
fn write_back(ctx: &RequestContext<'_>, session: &mut Session, keep: &CachedToken) {
    let config = &ctx.state.config;
    if session::store(ctx.jar, session, config).is_ok() {
        return;
    }
    session.tokens.retain(|t| t == keep);
    session.user_info = None;
    if let Err(session::TooLarge(bytes)) = session::store(ctx.jar, session, config) {
        log::error!("logto: a session of {bytes} bytes does not fit in the cookies; tokens will be refreshed per request");
    }
}

fn log_refresh_failure(e: &ProviderError, resource: Option<&str>, organization: Option<&str>) {
    log::warn!(
        "logto: token refresh for resource {resource:?}, organization {organization:?} failed: {}",
        crate::error::LogtoError::from(e.clone()).message()
    );
}

fn organization_error(e: ProviderError, organization: Option<&str>) -> LogtoError {
    match (&e, organization) {
        (ProviderError::Refused { status: 403, .. }, Some(org)) => {
            LogtoError::Forbidden(format!("You are not a member of the organization {org:?}."))
        }
        (ProviderError::Refused { error, .. }, Some(_)) if error == "insufficient_scope" => LogtoError::Config(
            "Organization tokens need the scope `urn:logto:scope:organizations` granted at sign-in; sign in again.".into(),
        ),
        _ => e.into(),
    }
}

/// The audience an organization token must carry.
pub(crate) fn organization_audience(org: &str) -> String {
    organization_urn(org)
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
        LogtoError::BadGateway("Logto's userinfo answer is not the JSON it should be.".into())
    })?;
    if info.sub != claims.sub {
        log::warn!(
            "logto: userinfo answered for another subject than {}; discarded",
            claims.sub
        );
        return Err(LogtoError::BadGateway(
            "Logto's userinfo answer is about another user; it was discarded.".into(),
        ));
    }
    Ok(info)
}
