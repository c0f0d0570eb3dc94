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
//! # Why this is safe to ship
//!
//! The helpers hold no secret and switch nothing on. They write the same encrypted
//! session cookies a real sign-in writes, sealed with the app's own `secret_key` through
//! Rocket's local client, so they work only where the test already holds that key. Whoever
//! holds an app's `secret_key` can forge its sessions with or without this module; an app
//! built with the feature accepts nothing it would not accept without it. Keep the feature
//! in `[dev-dependencies]` all the same, so release builds do not carry the code.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rocket::figment::Figment;
use rocket::http::Cookie;
use rocket::{Orbit, Rocket};
use serde_json::{json, Map, Value};

use crate::claims::organization_urn;
use crate::fairing::LogtoState;
use crate::guards::Resource;
use crate::session::{self, CachedToken, CookieNames, Session};

/// How long the tokens of a test session live: long enough that no test refreshes them.
const TEST_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// A Rocket configuration for route tests: Rocket's debug defaults, a fixed test
/// `secret_key`, logging off, and a `logto` table pointing at an address nothing listens
/// on (`http://127.0.0.1:9`), so that any call to Logto fails at once instead of
/// reaching a real tenant. Merge your own keys on top (`resources`, `scopes`, ...).
pub fn figment() -> Figment {
    Figment::from(rocket::Config::debug_default())
        .merge((
            "secret_key",
            "hPRYyVRiMyxpw5sBB1XeCMN1kFsDCqKvBi2QJxBVHQk5h3aKyqBqU6oaBUrW3Kv8vbE9VUvVPbCFyVThOkrrYw==",
        ))
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
        let now = session::now();
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
                    token: unsigned_jwt("at+jwt", &token),
                    expires_at: now + TEST_TOKEN_LIFETIME_SECS,
                },
            );
        }
        let session = Session {
            id_token: unsigned_jwt("JWT", &Value::Object(claims)),
            refresh_token: None,
            userinfo_token: None,
            tokens: tokens.into_values().collect(),
            user_info: self.user_info.clone(),
            created_at_ms: session::now_ms(),
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
