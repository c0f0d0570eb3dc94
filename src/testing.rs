//! Test helpers for an app's own route tests (cargo feature `testing`): sign a user in,
//! with the claims and tokens a test chooses, without an identity provider or a network.
//!
//! ```
//! use rocket::{get, routes, local::asynchronous::Client};
//! use rocket_logto::{AuthenticatedUser, Logto};
//! use rocket_logto::testing::{SignedInRequest, TestUser};
//!
//! #[get("/me")]
//! fn me(user: AuthenticatedUser) -> String {
//!     format!("Hello {}", user.id())
//! }
//!
//! # rocket::execute(async {
//! let rocket = rocket::custom(rocket_logto::testing::figment())
//!     .attach(Logto::fairing())
//!     .mount("/", routes![me]);
//! let client = Client::untracked(rocket).await.unwrap();
//!
//! let alice = TestUser::new("alice").claim("email", "alice@example.com");
//! let response = client.get("/me").signed_in_as(&alice).dispatch().await;
//! assert_eq!(response.into_string().await.as_deref(), Some("Hello alice"));
//! # });
//! ```
//!
//! # Testing API routes
//!
//! The API guards ([`BearerToken`](crate::BearerToken),
//! [`OrganizationToken`](crate::OrganizationToken),
//! [`OrganizationResourceToken`](crate::OrganizationResourceToken)) accept tokens signed by
//! Logto. In a test, attach the fairing with
//! [`trust_test_key`](crate::Logto::trust_test_key): the guards then trust this module's
//! test key instead, and [`TestToken`] makes tokens signed with it, with the claims a test
//! chooses. Every check but the key is the same as in production.
//!
//! ```
//! use rocket::{get, routes, local::asynchronous::Client, http::Status};
//! use rocket_logto::{BearerToken, Logto, Resource};
//! use rocket_logto::testing::{BearerRequest, TestToken};
//!
//! struct Orders;
//! impl Resource for Orders {
//!     const INDICATOR: &'static str = "https://orders.example.com";
//!     const REQUIRED_SCOPES: &'static [&'static str] = &["read:orders"];
//! }
//!
//! #[get("/api/orders")]
//! fn orders(token: BearerToken<Orders>) -> String {
//!     format!("orders of {}", token.sub())
//! }
//!
//! # rocket::execute(async {
//! let figment = rocket_logto::testing::figment().merge(("logto.resources", [Orders::INDICATOR]));
//! let rocket = rocket::custom(figment)
//!     .attach(Logto::fairing().trust_test_key())
//!     .register("/", Logto::catchers())
//!     .mount("/", routes![orders]);
//! let client = Client::untracked(rocket).await.unwrap();
//!
//! let token = TestToken::for_resource::<Orders>().user("alice");
//! let response = client.get("/api/orders").bearer(&token).dispatch().await;
//! assert_eq!(response.into_string().await.as_deref(), Some("orders of alice"));
//!
//! let no_scope = TestToken::for_resource::<Orders>().scopes(&[]);
//! let response = client.get("/api/orders").bearer(&no_scope).dispatch().await;
//! assert_eq!(response.status(), Status::Forbidden);
//! # });
//! ```
//!
//! # Why this is safe to ship
//!
//! The session helpers hold no secret and switch nothing on. They write the same encrypted
//! session cookies a real sign-in writes, sealed with the app's own `secret_key` through
//! Rocket's local client, so they work only where the test already holds that key. Whoever
//! holds an app's `secret_key` can forge its sessions with or without this module; an app
//! built with the feature accepts nothing it would not accept without it. Nor does
//! [`figment()`] carry a key: its `secret_key` is random per process, so an app started with
//! it by mistake has no sessions forgeable from this crate's source.
//!
//! The test key is the one thing that would let someone make tokens an app accepts, so it
//! is fenced in three ways:
//!
//! - **A fresh key per process.** It is generated (P-384, ES384) when a test first needs
//!   it and never leaves the process's memory: no key is written in the crate, a file or
//!   the environment, so no token made elsewhere, nor by an earlier run, verifies with it.
//! - **An explicit opt-in in code.** Only a fairing built with
//!   [`Logto::fairing().trust_test_key()`](crate::Logto::trust_test_key) trusts it. No
//!   configuration key, environment variable or Rocket profile does (unknown `logto` keys
//!   are refused), and a normal fairing refuses test tokens like any token signed by
//!   another key.
//! - **Debug builds only.** A fairing that trusts it stops the launch of a release build
//!   (no `debug_assertions`) with an error, so the opt-in cannot reach production even by
//!   mistake. The method exists only with the `testing` feature: keep the feature in
//!   `[dev-dependencies]` so release builds do not even carry the code. The gate is the
//!   `debug_assertions` flag, which a release profile can turn on
//!   (`debug-assertions = true`): such a build launches in test mode, so every launch that
//!   trusts the test key logs a warning (`logto: TEST MODE: ...`, at `warn`) that a
//!   production log must never show.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rocket::figment::Figment;
use rocket::http::Cookie;
use rocket::{Orbit, Rocket};
use serde_json::{json, Map, Value};

use crate::claims::organization_urn;
use crate::oidc::jwks::Jwks;
use crate::session::{self, CachedToken, CookieNames, Session};
use crate::web::bearer::ApiState;
use crate::web::guards::Resource;
use crate::web::state::LogtoState;

/// How long the tokens of a test session live: long enough that no test refreshes them.
const TEST_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// A Rocket configuration for route tests: Rocket's debug defaults, a `secret_key` drawn
/// at random once per process, logging off, and a `logto` table pointing at an address
/// nothing listens on (`http://127.0.0.1:9`), so that any call to Logto fails at once
/// instead of reaching a real tenant. Merge your own keys on top (`resources`, `scopes`,
/// ...).
///
/// The `LOGTO_*` environment variables never override it: the fairing reads them only on
/// `rocket::build()`'s figment, or on one that merges [`LogtoEnv`](crate::LogtoEnv). So a
/// developer whose shell points `LOGTO_ENDPOINT` and `LOGTO_APP_SECRET` at a tenant still
/// runs the tests offline.
///
/// The key is the same for every call in one process (so that two apps of one test share
/// cookies) and never the same in two processes: an app that used this configuration
/// outside its tests would not have sessions that anyone can forge with a key published
/// in this crate. A test that needs a key it knows merges its own `secret_key`.
pub fn figment() -> Figment {
    Figment::from(rocket::Config::debug_default())
        .merge(("secret_key", test_secret_key()))
        .merge(("log_level", "off"))
        .merge((
            "logto",
            json!({
                "endpoint": "http://127.0.0.1:9",
                "app_id": "test-app",
                "app_secret": "test-secret",
                "base_url": "http://localhost:8000",
            }),
        ))
}

/// The `secret_key` of [`figment`]: 64 random bytes (base64), drawn on first use and kept
/// for the life of the process. Random rather than written here, because a key in the
/// published crate would let anyone forge the sessions of an app that ships this
/// configuration by mistake.
fn test_secret_key() -> &'static str {
    static KEY: LazyLock<String> = LazyLock::new(|| {
        use rand::RngCore;
        let mut bytes = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    &KEY
}

/// A signed-in user for a test: the claims of their ID token and the access tokens their
/// session holds. Turn it into a signed-in request with [`SignedInRequest::signed_in_as`].
#[derive(Debug, Clone)]
pub struct TestUser {
    sub: String,
    claims: Map<String, Value>,
    tokens: Vec<(Option<String>, Option<String>, Vec<String>)>,
    user_info: Option<Value>,
}

impl TestUser {
    /// A user with id (`sub`) `sub` and no other claims than the required ones.
    pub fn new(sub: &str) -> TestUser {
        TestUser {
            sub: sub.to_string(),
            claims: Map::new(),
            tokens: Vec::new(),
            user_info: None,
        }
    }

    /// Sets one more claim of the ID token (`email`, `name`, `roles`, a custom claim...).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> TestUser {
        self.claims.insert(name.to_string(), value.into());
        self
    }

    /// Gives the session an access token for the resource `R` with `scopes`, so that
    /// `ResourceToken<R>` and `AuthenticatedUser::access_token` serve it.
    pub fn resource_token<R: Resource>(mut self, scopes: &[&str]) -> TestUser {
        self.tokens
            .push((Some(R::INDICATOR.to_string()), None, owned(scopes)));
        self
    }

    /// Gives the session an organization token for `organization_id` with `scopes`, and
    /// adds the organization to the `organizations` claim.
    pub fn organization_token(mut self, organization_id: &str, scopes: &[&str]) -> TestUser {
        self.add_organization(organization_id);
        self.tokens
            .push((None, Some(organization_id.to_string()), owned(scopes)));
        self
    }

    /// Gives the session a token for the resource `R` narrowed to `organization_id`.
    pub fn organization_resource_token<R: Resource>(
        mut self,
        organization_id: &str,
        scopes: &[&str],
    ) -> TestUser {
        self.add_organization(organization_id);
        self.tokens.push((
            Some(R::INDICATOR.to_string()),
            Some(organization_id.to_string()),
            owned(scopes),
        ));
        self
    }

    /// The userinfo answer kept in the session, as with `fetch_user_info = true` (its
    /// `sub` is set to the user's).
    pub fn user_info(mut self, info: Value) -> TestUser {
        let mut info = match info {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        info.insert("sub".into(), Value::String(self.sub.clone()));
        self.user_info = Some(Value::Object(info));
        self
    }

    fn add_organization(&mut self, organization_id: &str) {
        let list = self
            .claims
            .entry("organizations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(ids) = list {
            if !ids.iter().any(|id| id == organization_id) {
                ids.push(Value::String(organization_id.to_string()));
            }
        }
    }

    /// The session cookies (not yet encrypted) that the app ignited as `rocket` would
    /// have set after this user signed in.
    ///
    /// # Panics
    ///
    /// When the Logto fairing is not attached to `rocket`, or the session does not fit in
    /// cookies: both are mistakes in the test itself.
    pub fn session_cookies(&self, rocket: &Rocket<Orbit>) -> Vec<Cookie<'static>> {
        let state = rocket
            .state::<LogtoState>()
            .expect("rocket_logto::testing: the Logto fairing is not attached to this Rocket");
        let config = &state.config;
        let now = crate::util::clock::now();
        let mut claims = self.claims.clone();
        for (name, value) in [
            ("iss", json!(config.issuer())),
            ("sub", json!(self.sub)),
            ("aud", json!(config.app_id)),
            ("iat", json!(now)),
            ("exp", json!(now + TEST_TOKEN_LIFETIME_SECS)),
        ] {
            claims.entry(name).or_insert(value);
        }
        let mut tokens = BTreeMap::new();
        for (resource, organization, scopes) in &self.tokens {
            let aud = match (resource, organization) {
                (Some(resource), _) => resource.clone(),
                (None, Some(org)) => organization_urn(org),
                (None, None) => continue,
            };
            let mut token = json!({
                "iss": config.issuer(), "sub": self.sub, "aud": aud, "client_id": config.app_id,
                "scope": scopes.join(" "), "iat": now, "exp": now + TEST_TOKEN_LIFETIME_SECS,
                "jti": session::random_token(12),
            });
            if let (Some(_), Some(org)) = (resource, organization) {
                token["organization_id"] = json!(org);
            }
            tokens.insert(
                (resource.clone(), organization.clone()),
                CachedToken {
                    resource: resource.clone(),
                    organization: organization.clone(),
                    token: unsigned_jwt("at+jwt", &token).into(),
                    expires_at: now + TEST_TOKEN_LIFETIME_SECS,
                },
            );
        }
        let session = Session {
            id_token: unsigned_jwt("JWT", &Value::Object(claims)).into(),
            refresh_token: None,
            userinfo_token: None,
            tokens: tokens.into_values().collect(),
            user_info: self.user_info.clone(),
            created_at_ms: crate::util::clock::now_ms(),
            seen_at: now,
        };
        let chunks = session::encode(&session)
            .expect("rocket_logto::testing: the test session does not fit in cookies");
        let names = CookieNames::of(config);
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, value)| Cookie::build((names.chunks[i], value)).path("/").build())
            .collect()
    }
}

fn owned(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| s.to_string()).collect()
}

/// A JWT-shaped token that is not signed: sessions hold tokens that were verified (or
/// received from Logto) before they were stored, and are only read afterwards.
fn unsigned_jwt(typ: &str, claims: &Value) -> String {
    let header = json!({ "alg": "none", "typ": typ });
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Signs a request of Rocket's local client in as a [`TestUser`].
pub trait SignedInRequest: Sized {
    /// The request with the session cookies of `user` (encrypted with the app's key).
    fn signed_in_as(self, user: &TestUser) -> Self;
}

impl SignedInRequest for rocket::local::asynchronous::LocalRequest<'_> {
    fn signed_in_as(self, user: &TestUser) -> Self {
        let cookies = user.session_cookies(self.inner().rocket());
        cookies
            .into_iter()
            .fold(self, |request, cookie| request.private_cookie(cookie))
    }
}

impl SignedInRequest for rocket::local::blocking::LocalRequest<'_> {
    fn signed_in_as(self, user: &TestUser) -> Self {
        let cookies = user.session_cookies(self.inner().rocket());
        cookies
            .into_iter()
            .fold(self, |request, cookie| request.private_cookie(cookie))
    }
}

/// The process's test key: generated on first use, never stored anywhere.
struct TestKey {
    pair: ring::signature::EcdsaKeyPair,
    kid: String,
}

fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .expect("rocket_logto::testing: cannot generate the test key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("rocket_logto::testing: cannot load the test key");
        TestKey {
            pair,
            kid: format!("rocket-logto-test-{}", session::random_token(9)),
        }
    })
}

/// The test key's public half as a key set, for a fairing in test mode.
pub(crate) fn test_jwks() -> Arc<Jwks> {
    use ring::signature::KeyPair;
    let key = test_key();
    let point = key.pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384", "kid": key.kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
        "y": URL_SAFE_NO_PAD.encode(&point[49..97]),
    });
    let keys = serde_json::from_value(json!({ "keys": [jwk] }))
        .expect("rocket_logto::testing: the test key set");
    Arc::new(Jwks::fixed(keys))
}

/// Why test mode is refused in a build with (`debug_build`) or without debug assertions;
/// `None` when it is allowed.
pub(crate) fn test_mode_refusal(debug_build: bool) -> Option<&'static str> {
    (!debug_build).then_some(
        "refusing to launch: `Logto::fairing().trust_test_key()` (test mode: the API guards \
         trust the testing key) is for tests and debug builds only, and this is a release \
         build; remove the call from the code that builds the app",
    )
}

#[cfg(test)]
static FORCE_RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this is a debug build (`debug_assertions`). Unit tests can pretend otherwise.
pub(crate) fn debug_build() -> bool {
    #[cfg(test)]
    if FORCE_RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    cfg!(debug_assertions)
}

/// How many verified access tokens the API guards of `rocket` keep in memory. Not part of
/// the API (hidden, exempt from semver): the crate's own tests of what is cached use it.
#[doc(hidden)]
pub fn __cached_bearer_tokens(rocket: &Rocket<Orbit>) -> usize {
    rocket.state::<ApiState>().map_or(0, ApiState::cached)
}

/// An access token for a test of an API route, signed with the test key that a fairing
/// in test mode ([`trust_test_key`](crate::Logto::trust_test_key)) trusts. It starts valid
/// for its guard; change what the test is about. Send it with
/// [`BearerRequest::bearer`], or get the JWT with [`TestToken::sign`].
///
/// Every token has `iss` (the app's issuer), `aud`, `sub`, `client_id`, `scope`, `iat`,
/// `exp` (in an hour), `jti` and the header `typ: at+jwt`.
#[derive(Debug, Clone)]
pub struct TestToken {
    audience: String,
    organization_id: Option<String>,
    sub: String,
    client_id: String,
    scopes: Vec<String>,
    claims: Map<String, Value>,
}

impl TestToken {
    fn new(audience: String, organization_id: Option<String>, scopes: &[&str]) -> TestToken {
        TestToken {
            audience,
            organization_id,
            sub: "test-user".into(),
            client_id: "test-client".into(),
            scopes: owned(scopes),
            claims: Map::new(),
        }
    }

    /// A user's token for the API resource `R`, with `R::REQUIRED_SCOPES`: what
    /// [`BearerToken<R>`](crate::BearerToken) accepts.
    pub fn for_resource<R: Resource>() -> TestToken {
        TestToken::new(R::INDICATOR.into(), None, R::REQUIRED_SCOPES)
    }

    /// A user's organization token for `organization_id`, without scopes: what
    /// [`OrganizationToken`](crate::OrganizationToken) accepts on that organization's routes.
    pub fn for_organization(organization_id: &str) -> TestToken {
        TestToken::new(organization_urn(organization_id), None, &[])
    }

    /// A user's token for the API resource `R` narrowed to `organization_id`, with
    /// `R::REQUIRED_SCOPES`: what [`OrganizationResourceToken<R>`](crate::OrganizationResourceToken)
    /// accepts on that organization's routes.
    pub fn for_organization_resource<R: Resource>(organization_id: &str) -> TestToken {
        TestToken::new(
            R::INDICATOR.into(),
            Some(organization_id.into()),
            R::REQUIRED_SCOPES,
        )
    }

    /// The user (`sub`, default `test-user`), with the client `test-client`.
    pub fn user(mut self, sub: &str) -> TestToken {
        self.sub = sub.into();
        self
    }

    /// A machine-to-machine token of the application `client_id` (client credentials):
    /// `sub` and `client_id` are both `client_id`.
    pub fn machine(mut self, client_id: &str) -> TestToken {
        self.sub = client_id.into();
        self.client_id = client_id.into();
        self
    }

    /// The granted scopes, instead of the default ones.
    pub fn scopes(mut self, scopes: &[&str]) -> TestToken {
        self.scopes = owned(scopes);
        self
    }

    /// Sets any claim, over the ones above (`exp` in the past, another `iss`, a custom
    /// claim...); `Value::Null` removes it.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> TestToken {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// The signed JWT, issued by the Logto of `rocket`'s configuration.
    ///
    /// # Panics
    ///
    /// When the Logto fairing is not attached to `rocket`: a mistake in the test itself.
    pub fn sign(&self, rocket: &Rocket<Orbit>) -> String {
        let state = rocket
            .state::<LogtoState>()
            .expect("rocket_logto::testing: the Logto fairing is not attached to this Rocket");
        let now = crate::util::clock::now();
        let mut claims = Map::new();
        for (name, value) in [
            ("iss", json!(state.config.issuer())),
            ("aud", json!(self.audience)),
            ("sub", json!(self.sub)),
            ("client_id", json!(self.client_id)),
            ("scope", json!(self.scopes.join(" "))),
            ("iat", json!(now)),
            ("exp", json!(now + 3600)),
            ("jti", json!(session::random_token(12))),
        ] {
            claims.insert(name.into(), value);
        }
        if let Some(org) = &self.organization_id {
            claims.insert("organization_id".into(), json!(org));
        }
        for (name, value) in &self.claims {
            match value {
                Value::Null => claims.remove(name),
                value => claims.insert(name.clone(), value.clone()),
            };
        }
        let key = test_key();
        let header = json!({ "alg": "ES384", "typ": "at+jwt", "kid": key.kid });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = key
            .pair
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .expect("rocket_logto::testing: signing with the test key");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// Sends a [`TestToken`] with a request of Rocket's local client.
pub trait BearerRequest: Sized {
    /// The request with `Authorization: Bearer <token>`, signed for the app under test.
    fn bearer(self, token: &TestToken) -> Self;
}

impl BearerRequest for rocket::local::asynchronous::LocalRequest<'_> {
    fn bearer(self, token: &TestToken) -> Self {
        let jwt = token.sign(self.inner().rocket());
        self.header(rocket::http::Header::new(
            "Authorization",
            format!("Bearer {jwt}"),
        ))
    }
}

impl BearerRequest for rocket::local::blocking::LocalRequest<'_> {
    fn bearer(self, token: &TestToken) -> Self {
        let jwt = token.sign(self.inner().rocket());
        self.header(rocket::http::Header::new(
            "Authorization",
            format!("Bearer {jwt}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mode_is_refused_without_debug_assertions_only() {
        assert!(test_mode_refusal(true).is_none());
        let why = test_mode_refusal(false).expect("refused in a release build");
        assert!(
            why.contains("release build") && why.contains("trust_test_key"),
            "{why}"
        );
        // This test binary is a debug build, and the fairing reads the real flag.
        assert_eq!(debug_build(), cfg!(debug_assertions));
    }

    #[rocket::async_test]
    async fn a_fairing_in_test_mode_stops_the_launch_of_a_release_build() {
        let ignite = || {
            rocket::custom(figment())
                .attach(crate::Logto::fairing().trust_test_key())
                .ignite()
        };
        assert!(
            ignite().await.is_ok(),
            "a debug build launches in test mode"
        );
        FORCE_RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
        let refused = ignite().await;
        FORCE_RELEASE.store(false, std::sync::atomic::Ordering::SeqCst);
        match refused {
            Err(e) => assert!(
                matches!(e.kind(), rocket::error::ErrorKind::FailedFairings(f) if f[0].name == "Logto"),
                "{e}"
            ),
            Ok(_) => panic!("a release build must not launch in test mode"),
        }
    }
}
