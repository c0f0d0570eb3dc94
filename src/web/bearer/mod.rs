//! Protecting an API: the guards that accept Logto access tokens sent as
//! `Authorization: Bearer <token>`, one per permission model of Logto's API-protection
//! guide, and the cache of verified tokens that makes a repeated token cost one signature
//! check.
//!
//! Every token goes through [`crate::oidc::jwt::verify`] (the same path as ID tokens: Logto's
//! JWKS shared with sign-in, its rate-limited refetch, the algorithm allow-list, `iss`,
//! `exp`, `iat`, `nbf` with the configured skew) as a [`Kind::Access`] token; what a route
//! accepts it for (audience, organization, scopes) is [`jwt::check_target`], on every
//! request, cached or not.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidconnect::core::CoreJwsSigningAlgorithm;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};
use serde_json::{Map, Value};

pub(crate) mod rejection;

use crate::claims::ORGANIZATIONS_RESOURCE;
use crate::oidc::jwks::Jwks;
use crate::oidc::jwt::{self, Expected, JwtError, Kind, Target, TargetError};
use crate::util::bounded::ExpiringMap;
use crate::util::clock::now;
use crate::util::log_limit::{limited, LogLimit};
use crate::util::telemetry::{self, Bearer};
use crate::web::bearer::rejection::BearerError;
use crate::web::guards::Resource;
use crate::web::state::LogtoState;

/// The algorithms Logto signs with (RSA or P-384 keys): the only ones an API guard
/// accepts, whatever discovery lists.
const ACCESS_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 2] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];
/// Longest bearer token read. Logto's are under 2 KB; a longer one is refused before any
/// decoding.
pub(crate) const MAX_TOKEN_BYTES: usize = 8192;
/// Longest a verified token is kept, whatever its `exp`: Logto's keys are fetched again at
/// least this often (with discovery), so a retired key stops opening cached tokens too.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// The route segment an organization guard reads the route's organization from.
pub(crate) const ORGANIZATION_PARAM: &str = "<organization_id>";

/// What the fairing keeps for the API guards: the verified tokens, and the keys that
/// replace Logto's in test mode.
pub(crate) struct ApiState {
    cache: VerifiedTokens,
    /// The `testing` feature's key, when the fairing trusts it (debug builds only).
    test_keys: Option<Arc<Jwks>>,
}

impl ApiState {
    pub fn new(capacity: usize, test_keys: Option<Arc<Jwks>>) -> ApiState {
        ApiState {
            cache: VerifiedTokens::new(capacity),
            test_keys,
        }
    }

    /// Verified tokens held.
    #[cfg_attr(not(any(feature = "testing", doc)), allow(dead_code))]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// A token that passed [`jwt::verify`], with its claims.
struct Verified {
    token: Box<str>,
    claims: Map<String, Value>,
    exp: i64,
}

/// The claims of a verified Logto access token, shared by the API guards
/// ([`BearerToken`], [`OrganizationToken`], [`OrganizationResourceToken`]), which
/// dereference to it.
///
/// Its `Debug` never shows the token.
#[derive(Clone)]
pub struct VerifiedToken(Arc<Verified>);

impl VerifiedToken {
    /// The token itself, as received (to call another API on the caller's behalf, say).
    /// Keep it out of logs, URLs and pages; `Debug` leaves it out.
    pub fn secret(&self) -> &str {
        &self.0.token
    }

    /// Every claim of the token: `iss`, `aud`, `sub`, `client_id`, `scope`, `exp`, `iat`,
    /// `jti`, `organization_id` and any custom claim.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.0.claims
    }

    fn text(&self, name: &str) -> &str {
        self.0
            .claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The subject (`sub`): the user's id, or for a machine-to-machine token (client
    /// credentials) the id of the application that asked for it.
    pub fn sub(&self) -> &str {
        self.text("sub")
    }

    /// The application the token was issued to (`client_id`).
    pub fn client_id(&self) -> &str {
        self.text("client_id")
    }

    /// Whether it is a machine-to-machine token: Logto issues those to an application
    /// through client credentials, with `sub` equal to `client_id` (no user behind it).
    pub fn is_machine_to_machine(&self) -> bool {
        self.sub() == self.client_id()
    }

    /// The user the token acts for; `None` for a machine-to-machine token.
    pub fn user_id(&self) -> Option<&str> {
        (!self.is_machine_to_machine()).then(|| self.sub())
    }

    /// The granted scopes (the space-separated `scope` claim).
    pub fn scopes(&self) -> crate::claims::Scopes<'_> {
        jwt::scopes(&self.0.claims)
    }

    /// Whether `scope` is one of the granted scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        jwt::scopes(&self.0.claims).any(|s| s == scope)
    }

    /// The organization the token is for: its `organization_id` claim (a token for an
    /// organization-level API resource), or the `<id>` of an audience
    /// `urn:logto:organization:<id>` (an organization token); `None` for a token of a
    /// global API resource.
    pub fn organization_id(&self) -> Option<&str> {
        if let Some(id) = self.0.claims.get("organization_id").and_then(Value::as_str) {
            return Some(id);
        }
        let urn = crate::claims::organization_urn("");
        match self.0.claims.get("aud") {
            Some(Value::String(aud)) => aud.strip_prefix(urn.as_str()),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .find_map(|aud| aud.strip_prefix(urn.as_str())),
            _ => None,
        }
    }

    /// When it expires (`exp`).
    pub fn expires_at(&self) -> rocket::time::OffsetDateTime {
        crate::util::clock::datetime(self.0.exp)
    }
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("sub", &self.sub())
            .field("client_id", &self.client_id())
            .field("aud", &self.0.claims.get("aud"))
            .field("scope", &self.0.claims.get("scope"))
            .field("exp", &self.0.exp)
            .finish_non_exhaustive()
    }
}

/// Verified tokens by their exact bytes, until their `exp` (at most [`CACHE_TTL`]),
/// bounded. Only a token that passed [`jwt::verify`] and then opened a route gets in, so a
/// forged one never does, nor one for another audience or organization; a hit still has
/// its `exp` and the route's target checked.
struct VerifiedTokens(ExpiringMap<Arc<Verified>>);

enum Cached {
    Hit(VerifiedToken),
    /// Verified before, and past its `exp` (with the skew) now.
    Expired,
    Miss,
}

impl VerifiedTokens {
    fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens(ExpiringMap::new(CACHE_TTL, capacity))
    }

    /// Keyed by the end of the token (its signature, which only Logto can make for a
    /// genuine token); the whole token is compared.
    fn key(token: &str) -> &str {
        crate::session::cache::tail(token, 32)
    }

    fn get(&self, token: &str, now: i64, skew: i64) -> Cached {
        match self.0.get(Self::key(token)) {
            Some(hit) if *hit.token == *token => {
                if hit.exp > now - skew {
                    Cached::Hit(VerifiedToken(hit))
                } else {
                    Cached::Expired
                }
            }
            _ => Cached::Miss,
        }
    }

    fn insert(&self, verified: &VerifiedToken) {
        self.0
            .insert(Self::key(&verified.0.token), verified.0.clone());
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The bearer token of the request: exactly one `Authorization` header with the `Bearer`
/// scheme and a token of RFC 6750's characters, no longer than [`MAX_TOKEN_BYTES`], that
/// is a JWT (has dots) rather than an opaque token.
fn bearer_of<'r>(request: &'r Request<'_>, resource: &'static str) -> Result<&'r str, BearerError> {
    let invalid = |reason: String| BearerError::InvalidToken { resource, reason };
    let mut headers = request.headers().get("Authorization");
    let Some(value) = headers.next() else {
        return Err(BearerError::Missing { resource });
    };
    if headers.next().is_some() {
        return Err(invalid(
            "the request has several Authorization headers".into(),
        ));
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, ...): no bearer token at all.
        return Err(BearerError::Missing { resource });
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(invalid(
            "the Authorization header has no token after `Bearer`".into(),
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    // RFC 6750 2.1: b64token.
    let b64token = token
        .trim_end_matches('=')
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'));
    if !b64token {
        return Err(invalid(
            "the token has characters a bearer token cannot have".into(),
        ));
    }
    if !token.contains('.') {
        return Err(invalid(format!(
            "it is an opaque token, which Logto issues when no API resource is asked for; \
             request a token for the resource {resource} (the `resource` parameter of the token \
             request) and send that JWT"
        )));
    }
    Ok(token)
}

/// Verifies `raw` (signature, header, issuer, times, the access-token shape) with Logto's
/// keys, or the test key in test mode.
async fn verify_fresh(
    state: &LogtoState,
    api: &ApiState,
    raw: &str,
    resource: &'static str,
) -> Result<VerifiedToken, BearerError> {
    let (jwks, algs) = match &api.test_keys {
        Some(keys) => (keys.clone(), vec![CoreJwsSigningAlgorithm::EcdsaP384Sha384]),
        None => {
            let d = state
                .provider
                .discovery()
                .await
                .map_err(BearerError::Unavailable)?;
            let algs = d
                .algs
                .iter()
                .filter(|alg| ACCESS_TOKEN_ALGS.contains(alg))
                .cloned()
                .collect();
            (d.jwks.clone(), algs)
        }
    };
    let expected = Expected {
        issuer: state.provider.issuer(),
        client_id: "",
        skew: skew(state),
        algs: &algs,
    };
    let claims = jwt::verify(raw, Kind::Access, &expected, &jwks)
        .await
        .map_err(|e| match e {
            JwtError::Rejected(reason) => BearerError::InvalidToken { resource, reason },
            JwtError::Keys(e) => BearerError::Unavailable(e),
        })?;
    let exp = jwt::expiry(&claims).unwrap_or(0);
    Ok(VerifiedToken(Arc::new(Verified {
        token: raw.into(),
        claims,
        exp,
    })))
}

fn skew(state: &LogtoState) -> i64 {
    i64::try_from(state.config.clock_skew.as_secs()).unwrap_or(60)
}

/// A verified token for `target` with the `required` scopes, from the cache or verified
/// now (and then cached).
async fn verified_for(
    request: &Request<'_>,
    target: Target<'_>,
    required: &'static [&'static str],
    resource: &'static str,
) -> Result<VerifiedToken, BearerError> {
    let rocket = request.rocket();
    let (Some(state), Some(api)) = (rocket.state::<LogtoState>(), rocket.state::<ApiState>())
    else {
        return Err(BearerError::Config(
            "rocket_logto's API guards need the fairing: attach Logto::fairing().".into(),
        ));
    };
    let raw = bearer_of(request, resource)?;
    let (token, cached) = match api.cache.get(raw, now(), skew(state)) {
        Cached::Hit(token) => {
            telemetry::bearer_cache_hit();
            (token, true)
        }
        Cached::Expired => {
            return Err(BearerError::InvalidToken {
                resource,
                reason: "it has expired".into(),
            })
        }
        Cached::Miss => (verify_fresh(state, api, raw, resource).await?, false),
    };
    // Checked on every request, cached or not: a token accepted by one route may be sent
    // to another. Only a token that opened a route is cached.
    match jwt::check_target(token.claims(), target, required) {
        Ok(()) => {
            if !cached {
                api.cache.insert(&token);
            }
            Ok(token)
        }
        Err(TargetError::Invalid(reason)) => Err(BearerError::InvalidToken {
            resource,
            reason: reason.into(),
        }),
        Err(TargetError::Scopes(missing)) => Err(BearerError::InsufficientScope {
            resource,
            required: required.to_vec(),
            missing,
        }),
    }
}

/// The log lines of refused bearer tokens.
static BEARER_REFUSED: LogLimit = LogLimit::new("bearer_refused");

/// The request's bearer-token failure, kept for the crate's catchers (which answer it as
/// RFC 6750 JSON whatever the `Accept` header).
#[derive(Default)]
struct BearerFailure(Mutex<Option<BearerError>>);

pub(crate) fn recorded_bearer_failure(request: &Request<'_>) -> Option<BearerError> {
    request
        .local_cache(BearerFailure::default)
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The outcome of an API guard: the token, or the error, logged (never with the token)
/// and recorded for the crate's catchers.
fn outcome<T>(request: &Request<'_>, result: Result<T, BearerError>) -> Outcome<T, BearerError> {
    let error = match result {
        Ok(value) => {
            telemetry::bearer_verification(Bearer::Ok);
            return Outcome::Success(value);
        }
        Err(error) => error,
    };
    let path = request.uri().path();
    match &error {
        BearerError::Missing { .. } => {
            telemetry::bearer_verification(Bearer::Missing);
            log::debug!("logto: {path}: no bearer token")
        }
        BearerError::Unavailable(e) => {
            telemetry::bearer_verification(Bearer::Unavailable);
            log::warn!("logto: event=bearer outcome=unavailable path={path}: bearer token not checked: {e}")
        }
        BearerError::Config(m) => {
            telemetry::bearer_verification(Bearer::Config);
            log::error!("logto: event=bearer outcome=config path={path}: {m}")
        }
        other => {
            let outcome = match other {
                BearerError::InsufficientScope { .. } => Bearer::InsufficientScope,
                _ => Bearer::Invalid,
            };
            telemetry::bearer_verification(outcome);
            // Anyone can send a bad token: rate-limited.
            limited!(
                BEARER_REFUSED,
                info,
                "logto: event=bearer outcome=refused path={path}: bearer token refused: {}",
                crate::util::logsafe::for_log(&other.to_string())
            )
        }
    }
    *request
        .local_cache(BearerFailure::default)
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.clone());
    Outcome::Error((error.status(), error))
}

/// The route's organization: its `<organization_id>` segment, as the handler gets it.
fn route_organization<'r>(request: &'r Request<'_>, guard: &str) -> Result<&'r str, BearerError> {
    let index = request.route().and_then(|route| {
        route
            .uri
            .unmounted_origin
            .path()
            .segments()
            .position(|segment| segment == ORGANIZATION_PARAM)
    });
    match index.map(|i| request.param::<&str>(i)) {
        Some(Some(Ok(id))) => Ok(id),
        Some(_) => Err(BearerError::InvalidToken {
            resource: ORGANIZATIONS_RESOURCE,
            reason: "the request names no organization".into(),
        }),
        None => Err(BearerError::Config(format!(
            "`{guard}` is used on the route {}, whose path has no `{ORGANIZATION_PARAM}` segment: \
             the guard checks the token against that segment, so name the route's organization \
             segment `{ORGANIZATION_PARAM}`",
            request
                .route()
                .map(|r| r.uri.to_string())
                .unwrap_or_default()
        ))),
    }
}

/// Launch-time checks shared by the API guards: the fairing is attached; `resource`, when
/// given, is in the `resources` config; the required scopes are valid scope tokens.
fn sentinel(
    rocket: &Rocket<Ignite>,
    guard: &str,
    resource: Option<&str>,
    required: &[&str],
) -> bool {
    let Some(state) = rocket.state::<LogtoState>() else {
        log::error!("rocket_logto: `{guard}` is used, but the Logto fairing is not attached: add `.attach(Logto::fairing())`.");
        return true;
    };
    if let Some(resource) = resource {
        if !state.config.resources.iter().any(|r| r == resource) {
            log::error!(
                "rocket_logto: `{guard}` accepts tokens for {resource:?}, which is not in the `resources` config: add it to [default.logto] resources."
            );
            return true;
        }
    }
    // RFC 6750 3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
    let bad = required.iter().find(|scope| {
        scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    });
    if let Some(scope) = bad {
        log::error!(
            "rocket_logto: `{guard}` requires the scope {scope:?}, which is not a valid scope (one word of printable ASCII without quotes or backslashes)."
        );
        return true;
    }
    false
}

/// A verified Logto access token for the global API resource `R`, from the request's
/// `Authorization: Bearer <token>` header: the guard of Logto's first permission model
/// ("global API resources").
///
/// The token must be a JWT signed by one of Logto's keys (RS256 or ES384, the JWKS shared
/// with sign-in), of type `at+jwt` when it says, issued by the configured Logto, within its
/// `exp`, `iat` and `nbf` (give or take `clock_skew_secs`), with `R::INDICATOR` among its
/// audiences, no `organization_id` (a token narrowed to an organization carries the user's
/// roles in that organization only: see [`OrganizationResourceToken`]), and every scope of
/// `R::REQUIRED_SCOPES`. It dereferences to [`VerifiedToken`]: `sub()`, `client_id()`,
/// `scopes()`, `has_scope()`, `user_id()` (`None` for a machine-to-machine token), `exp()`,
/// `token()`, `claims()`.
///
/// It never forwards: without a token, or with one that fails, it fails with a
/// [`BearerError`], which the crate's catchers answer as RFC 6750 says (401 or 403 with
/// `WWW-Authenticate`, JSON body), never a redirect to sign-in. `Option<BearerToken<R>>`
/// is `None` in both cases; `Result<BearerToken<R>, BearerError>` tells them apart. See
/// [Protecting an API](crate#protecting-an-api).
///
/// A resource missing from the `resources` config stops the launch.
///
/// ```
/// use rocket::get;
/// use rocket_logto::{BearerToken, Resource};
///
/// struct Shopping;
/// impl Resource for Shopping {
///     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
///     const REQUIRED_SCOPES: &'static [&'static str] = &["read:orders"];
/// }
///
/// #[get("/api/orders")]
/// fn orders(token: BearerToken<Shopping>) -> String {
///     match token.user_id() {
///         Some(user) => format!("orders of {user}"),
///         None => format!("all orders, for the service {}", token.client_id()),
///     }
/// }
/// ```
pub struct BearerToken<R: Resource> {
    token: VerifiedToken,
    _resource: PhantomData<R>,
}

/// A verified Logto **organization token** for the route's organization: the guard of
/// Logto's second permission model ("organization (non-API) permissions").
///
/// Its audience must be `urn:logto:organization:<id>`, where `<id>` is the route's
/// `<organization_id>` path segment, and it must carry every scope of
/// `R::REQUIRED_SCOPES`. Organization scopes (permissions) live on Logto's organizations
/// resource, so `R::INDICATOR` must be [`ORGANIZATIONS_RESOURCE`] (the default
/// [`Organizations`] requires no scope); any other stops the launch.
///
/// **Why the route's segment.** A token for organization A must never open organization
/// B's data. The guard reads the organization from the route itself, so there is no check
/// to write and none to forget: a route that uses it must name its organization segment
/// `<organization_id>` (otherwise every request fails with 500 and the log says why). The
/// handler receives the same segment as a parameter and can use it knowing that the token
/// is for it. Other checks the handler does by hand (a method to call, a value to compare)
/// are the ones that get forgotten.
///
/// Otherwise like [`BearerToken`]: same verification, same errors.
///
/// ```
/// use rocket::get;
/// use rocket_logto::{OrganizationToken, Resource, ORGANIZATIONS_RESOURCE};
///
/// /// The organization permission `invite:members`.
/// struct InviteMembers;
/// impl Resource for InviteMembers {
///     const INDICATOR: &'static str = ORGANIZATIONS_RESOURCE;
///     const REQUIRED_SCOPES: &'static [&'static str] = &["invite:members"];
/// }
///
/// #[get("/api/organizations/<organization_id>/members")]
/// fn members(organization_id: &str, token: OrganizationToken) -> String {
///     format!("members of {organization_id}, for {}", token.sub())
/// }
///
/// #[get("/api/organizations/<organization_id>/invitations")]
/// fn invite(organization_id: &str, token: OrganizationToken<InviteMembers>) -> String {
///     format!("{} may invite to {organization_id}", token.sub())
/// }
/// ```
pub struct OrganizationToken<R: Resource = Organizations> {
    token: VerifiedToken,
    _resource: PhantomData<R>,
}

/// A verified Logto access token for the API resource `R` narrowed to the route's
/// organization: the guard of Logto's third permission model ("organization-level API
/// resources").
///
/// Like [`BearerToken<R>`], and its `organization_id` claim must be the route's
/// `<organization_id>` path segment (see [`OrganizationToken`] for why the guard reads the
/// route). Its scopes are the user's roles in that organization.
///
/// ```
/// use rocket::get;
/// use rocket_logto::{OrganizationResourceToken, Resource};
///
/// struct Shopping;
/// impl Resource for Shopping {
///     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
///     const REQUIRED_SCOPES: &'static [&'static str] = &["read:orders"];
/// }
///
/// #[get("/api/organizations/<organization_id>/orders")]
/// fn orders(organization_id: &str, token: OrganizationResourceToken<Shopping>) -> String {
///     format!("orders of {organization_id}, for {}", token.sub())
/// }
/// ```
pub struct OrganizationResourceToken<R: Resource> {
    token: VerifiedToken,
    _resource: PhantomData<R>,
}

/// Logto's organizations resource ([`ORGANIZATIONS_RESOURCE`]) with no required scope:
/// what an [`OrganizationToken`] accepts by default.
#[derive(Debug, Clone, Copy)]
pub struct Organizations;

impl Resource for Organizations {
    const INDICATOR: &'static str = ORGANIZATIONS_RESOURCE;
}

macro_rules! api_guard {
    ($guard:ident, $name:literal) => {
        impl<R: Resource> std::ops::Deref for $guard<R> {
            type Target = VerifiedToken;
            fn deref(&self) -> &VerifiedToken {
                &self.token
            }
        }

        impl<R: Resource> $guard<R> {
            /// The verified token, to keep beyond the guard.
            pub fn into_inner(self) -> VerifiedToken {
                self.token
            }
        }

        impl<R: Resource> std::fmt::Debug for $guard<R> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($name)
                    .field("resource", &R::INDICATOR)
                    .field("token", &self.token)
                    .finish()
            }
        }
    };
}

api_guard!(BearerToken, "BearerToken");
api_guard!(OrganizationToken, "OrganizationToken");
api_guard!(OrganizationResourceToken, "OrganizationResourceToken");

#[rocket::async_trait]
impl<'r, R: Resource> FromRequest<'r> for BearerToken<R> {
    type Error = BearerError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, BearerError> {
        let target = Target::Resource(R::INDICATOR);
        let result = verified_for(request, target, R::REQUIRED_SCOPES, R::INDICATOR).await;
        outcome(
            request,
            result.map(|token| BearerToken {
                token,
                _resource: PhantomData,
            }),
        )
    }
}

#[rocket::async_trait]
impl<'r, R: Resource> FromRequest<'r> for OrganizationToken<R> {
    type Error = BearerError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, BearerError> {
        let result = match route_organization(request, "OrganizationToken") {
            Ok(organization) => {
                let target = Target::Organization(organization);
                verified_for(request, target, R::REQUIRED_SCOPES, R::INDICATOR).await
            }
            Err(e) => Err(e),
        };
        outcome(
            request,
            result.map(|token| OrganizationToken {
                token,
                _resource: PhantomData,
            }),
        )
    }
}

#[rocket::async_trait]
impl<'r, R: Resource> FromRequest<'r> for OrganizationResourceToken<R> {
    type Error = BearerError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, BearerError> {
        let result = match route_organization(request, "OrganizationResourceToken") {
            Ok(organization) => {
                let target = Target::OrganizationResource {
                    indicator: R::INDICATOR,
                    organization,
                };
                verified_for(request, target, R::REQUIRED_SCOPES, R::INDICATOR).await
            }
            Err(e) => Err(e),
        };
        outcome(
            request,
            result.map(|token| OrganizationResourceToken {
                token,
                _resource: PhantomData,
            }),
        )
    }
}

impl<R: Resource> Sentinel for BearerToken<R> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        sentinel(
            rocket,
            "BearerToken",
            Some(R::INDICATOR),
            R::REQUIRED_SCOPES,
        )
    }
}

impl<R: Resource> Sentinel for OrganizationResourceToken<R> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        sentinel(
            rocket,
            "OrganizationResourceToken",
            Some(R::INDICATOR),
            R::REQUIRED_SCOPES,
        ) || no_organization_segment(rocket, "OrganizationResourceToken")
    }
}

impl<R: Resource> Sentinel for OrganizationToken<R> {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if R::INDICATOR != ORGANIZATIONS_RESOURCE {
            log::error!(
                "rocket_logto: `OrganizationToken` is used with a resource whose INDICATOR is {:?}: organization permissions live on {ORGANIZATIONS_RESOURCE:?}; for an API resource narrowed to an organization use `OrganizationResourceToken`.",
                R::INDICATOR
            );
            return true;
        }
        sentinel(rocket, "OrganizationToken", None, R::REQUIRED_SCOPES)
            || no_organization_segment(rocket, "OrganizationToken")
    }
}

/// The organization guards' launch check: some route has the `<organization_id>` segment
/// they read. Rocket tells a Sentinel only that some route uses its type, not which: when
/// no route has the segment, every route with the guard names it otherwise (Rocket's abort
/// message then gives each one's file and line); a route that misnames it next to routes
/// that have it is caught at its first request instead (`route_organization`, a 500).
fn no_organization_segment(rocket: &Rocket<Ignite>, guard: &str) -> bool {
    let dynamic = |route: &&rocket::Route| {
        route
            .uri
            .unmounted_origin
            .path()
            .segments()
            .any(|segment| segment.starts_with('<'))
    };
    let named = rocket.routes().any(|route| {
        route
            .uri
            .unmounted_origin
            .path()
            .segments()
            .any(|segment| segment == ORGANIZATION_PARAM)
    });
    if !named {
        let candidates: Vec<String> = rocket
            .routes()
            .filter(dynamic)
            .map(|route| format!("{} {}", route.method, route.uri))
            .collect();
        log::error!(
            "rocket_logto: `{guard}` checks the token against the route's `{ORGANIZATION_PARAM}` \
             path segment, and no route has one: name the organization segment of its routes \
             `{ORGANIZATION_PARAM}` (routes with dynamic segments: {})",
            match candidates.is_empty() {
                true => "none".to_string(),
                false => candidates.join(", "),
            }
        );
    }
    !named
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verified(token: &str, exp: i64) -> VerifiedToken {
        VerifiedToken(Arc::new(Verified {
            token: token.into(),
            claims: json!({ "sub": "u", "client_id": "c", "exp": exp })
                .as_object()
                .unwrap()
                .clone(),
            exp,
        }))
    }

    #[test]
    fn the_cache_compares_whole_tokens_and_honours_exp() {
        let cache = VerifiedTokens::new(10);
        let now = 1_000_000;
        let token = format!("h.p.{}", "s".repeat(40));
        cache.insert(&verified(&token, now + 100));
        assert!(matches!(cache.get(&token, now, 60), Cached::Hit(_)));
        // Same signature tail, other bytes: not the cached token.
        let forged = format!("x.p.{}", "s".repeat(40));
        assert!(matches!(cache.get(&forged, now, 60), Cached::Miss));
        // Past exp, beyond the skew.
        assert!(matches!(cache.get(&token, now + 159, 60), Cached::Hit(_)));
        assert!(matches!(cache.get(&token, now + 160, 60), Cached::Expired));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = VerifiedTokens::new(100);
        for i in 0..10_000 {
            cache.insert(&verified(&format!("h.p.sig{i:0>40}"), i64::MAX));
        }
        assert_eq!(cache.len(), 100);
        assert!(matches!(
            cache.get(&format!("h.p.sig{:0>40}", 9_999), 0, 60),
            Cached::Hit(_)
        ));
        assert!(matches!(
            cache.get(&format!("h.p.sig{:0>40}", 0), 0, 60),
            Cached::Miss
        ));
    }

    #[test]
    fn machine_tokens_and_organizations_are_told_apart() {
        let token = |claims: Value| {
            VerifiedToken(Arc::new(Verified {
                token: "t".into(),
                claims: claims.as_object().unwrap().clone(),
                exp: 0,
            }))
        };
        let user =
            token(json!({ "sub": "u1", "client_id": "app", "aud": "https://api", "scope": "a b" }));
        assert_eq!(user.user_id(), Some("u1"));
        assert!(!user.is_machine_to_machine());
        assert_eq!(user.scopes().collect::<Vec<_>>(), ["a", "b"]);
        assert!(user.has_scope("b") && !user.has_scope("c"));
        assert_eq!(user.organization_id(), None);
        let machine = token(json!({ "sub": "app", "client_id": "app", "aud": ["https://api"] }));
        assert!(machine.is_machine_to_machine());
        assert_eq!(machine.user_id(), None);
        let org =
            token(json!({ "sub": "u1", "client_id": "app", "aud": "urn:logto:organization:o1" }));
        assert_eq!(org.organization_id(), Some("o1"));
        let org_api = token(
            json!({ "sub": "u1", "client_id": "app", "aud": "https://api", "organization_id": "o2" }),
        );
        assert_eq!(org_api.organization_id(), Some("o2"));
        let debug = format!("{:?}", token(json!({ "sub": "u" })));
        assert!(!debug.contains("\"t\""), "{debug}");
    }
}
