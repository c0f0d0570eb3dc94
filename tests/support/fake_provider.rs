//! An in-process, Logto-shaped OpenID provider for tests (tier 1 of DESIGN.md).
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/fake_provider.rs"]
//! mod fake_provider;
//! use fake_provider::{FakeProvider, Fault, Alg};
//! ```
//!
//! By default it behaves like a Logto tenant (see `/work/shared/LOGTO_WIRE.md`): issuer
//! `<endpoint>/oidc`, one EC P-384 key (ES384), `client_secret_basic`, PKCE S256, RFC 9207
//! `iss` in the authorization response, opaque access tokens for userinfo, JWT access tokens
//! for resources and organizations through the refresh grant, refresh-token rotation on
//! *every* refresh (the worst case), and grant revocation when a rotated-out refresh token
//! or a used code is replayed. Every misbehaviour is a knob in [`Behaviour`], changed with
//! [`FakeProvider::set`] at any time (knobs are read when a response is produced).
//!
//! The HTTP server is deliberately tiny: HTTP/1.1, one request per connection, answered with
//! `Connection: close`. That keeps fault injection (hang, truncated body, HTML, closed
//! connection) trivial.
//!
//! Key fixtures: `keys/rsa-2048-{a,b}.pk8.der` are throw-away 2048-bit RSA test keys
//! (PKCS#8 DER, made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`);
//! ring cannot generate RSA keys. EC keys are generated at start.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use ring::{digest, hmac, signature};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

const RSA_KEY_A: &[u8] = include_bytes!("keys/rsa-2048-a.pk8.der");
const RSA_KEY_B: &[u8] = include_bytes!("keys/rsa-2048-b.pk8.der");

/// The `aud` prefix of organization tokens.
pub const ORGANIZATION_URN_PREFIX: &str = "urn:logto:organization:";
/// The scope that unlocks organization tokens.
pub const ORGANIZATIONS_SCOPE: &str = "urn:logto:scope:organizations";
/// The resource the JS SDK adds when [`ORGANIZATIONS_SCOPE`] is requested.
pub const ORGANIZATIONS_RESOURCE: &str = "urn:logto:resource:organizations";
/// The event claim of a back-channel logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

// ---------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------

/// How ID tokens are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-384 with the newest EC key (Logto's default).
    Es384,
    /// RSA PKCS#1 v1.5 SHA-256 with the newest RSA key (the RSA key is added to the JWKS
    /// as soon as this is selected).
    Rs256,
    /// HMAC SHA-256 with the client secret as key (never advertised in discovery).
    Hs256,
    /// `alg: none`, empty signature.
    None,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es384 => "ES384",
            Alg::Rs256 => "RS256",
            Alg::Hs256 => "HS256",
            Alg::None => "none",
        }
    }
}

/// The `kid` header of ID tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kid {
    /// The kid of the signing key.
    Current,
    /// No `kid` header at all.
    Absent,
    /// This kid (e.g. one the JWKS does not have), the token still signed with the current key.
    Value(String),
}

/// The `nonce` claim of ID tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nonce {
    /// The nonce of the authorization request, when it had one (Logto echoes it, also in
    /// ID tokens from a refresh).
    Echo,
    /// No nonce claim.
    Absent,
    /// This value instead.
    Value(String),
}

/// The `iss` parameter of the authorization response (RFC 9207).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackIss {
    Issuer,
    Absent,
    Value(String),
}

/// Fault injected at one endpoint. Faults that replace the response (`Status`, `Html`,
/// `Hang`, `CloseConnection`) happen *before* the handler runs, so they have no side effect
/// (no code consumed, no token rotated). `TruncatedJson` and `TruncatedBody` run the handler
/// first (the token is rotated, the client just never sees the new one), and `Delay` runs
/// it after the delay.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fault {
    #[default]
    None,
    /// Answer with this status, body, content type and extra headers (e.g. `Retry-After`).
    Status {
        status: u16,
        body: String,
        content_type: String,
        headers: Vec<(String, String)>,
    },
    /// 200 with an HTML page (a captive portal or proxy page where JSON was expected).
    Html,
    /// The real response with its JSON body cut in half (framing correct, JSON invalid).
    TruncatedJson,
    /// The real response with `Content-Length` of the full body but only half of it sent,
    /// then the connection closed.
    TruncatedBody,
    /// Read the request and never answer (until the provider stops).
    Hang,
    /// Read the request and close the connection without a byte of response.
    CloseConnection,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Apply the inner fault this many times, then behave (`Fault::None`).
    Times(u32, Box<Fault>),
}

impl Fault {
    /// A status with a Logto-shaped JSON error body.
    pub fn status(status: u16) -> Fault {
        let (error, description) = match status {
            400 => ("invalid_request", "bad request"),
            401 => ("invalid_client", "client authentication failed"),
            403 => ("access_denied", "access denied"),
            404 => ("not_found", "not found"),
            429 => ("too_many_requests", "too many requests"),
            503 => ("temporarily_unavailable", "service unavailable"),
            _ => ("server_error", "internal server error"),
        };
        Fault::json(status, error_json(error, description))
    }

    /// A status with this JSON body.
    pub fn json(status: u16, body: Value) -> Fault {
        Fault::Status {
            status,
            body: body.to_string(),
            content_type: "application/json; charset=utf-8".into(),
            headers: vec![],
        }
    }

    /// Add a header to a `Status` fault (e.g. `Fault::status(429).with_header("Retry-After", "1")`).
    pub fn with_header(self, name: &str, value: &str) -> Fault {
        match self {
            Fault::Status {
                status,
                body,
                content_type,
                mut headers,
            } => {
                headers.push((name.into(), value.into()));
                Fault::Status {
                    status,
                    body,
                    content_type,
                    headers,
                }
            }
            Fault::Times(n, inner) => Fault::Times(n, Box::new(inner.with_header(name, value))),
            other => other,
        }
    }

    /// This fault for the next `n` requests only.
    pub fn times(self, n: u32) -> Fault {
        Fault::Times(n, Box::new(self))
    }

    /// Take the fault to apply to one request, counting down `Times`.
    fn take(&mut self) -> Fault {
        match self {
            Fault::Times(n, inner) => {
                if *n == 0 {
                    *self = Fault::None;
                    return Fault::None;
                }
                *n -= 1;
                let out = inner.as_ref().clone();
                if *n == 0 {
                    *self = Fault::None;
                }
                out
            }
            other => other.clone(),
        }
    }
}

/// One fault per endpoint.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub discovery: Fault,
    pub jwks: Fault,
    pub token: Fault,
    pub userinfo: Fault,
    pub revocation: Fault,
    pub end_session: Fault,
    /// The HTTP `GET /oidc/auth` endpoint (not [`FakeProvider::authorize`]).
    pub authorize: Fault,
}

/// An organization. `members: None` means every user is a member.
#[derive(Clone, Debug)]
pub struct Org {
    pub name: String,
    pub description: Option<String>,
    pub members: Option<BTreeSet<String>>,
    /// Organization roles of members (`organization_roles` claim: `<id>:<role>`).
    pub roles: Vec<String>,
    /// Scopes of an organization token (`aud = urn:logto:organization:<id>`).
    pub scopes: Vec<String>,
}

impl Org {
    pub fn has_member(&self, sub: &str) -> bool {
        self.members.as_ref().is_none_or(|m| m.contains(sub))
    }
}

/// Every knob of the fake. `Default` is a well-behaved Logto tenant.
#[derive(Clone, Debug)]
pub struct Behaviour {
    // ---- keys and signatures ------------------------------------------------------------
    /// Algorithm of ID tokens. Default ES384.
    pub id_token_alg: Alg,
    /// Flip a bit of the ID token signature.
    pub corrupt_signature: bool,
    /// The `kid` header of ID tokens.
    pub id_token_kid: Kid,
    /// Publish JWKS entries without `kid`.
    pub jwks_without_kid: bool,
    /// Extra unrelated EC P-384 keys published in the JWKS, *before* the real ones (so a
    /// client that takes the first key fails). They get kids `decoy-N` unless
    /// `jwks_without_kid`.
    pub decoy_keys: usize,
    /// On [`FakeProvider::rotate_keys`], keep the old key in the JWKS (true, like a real
    /// rotation) or drop it.
    pub keep_old_keys_on_rotation: bool,

    // ---- discovery ----------------------------------------------------------------------
    /// `issuer` in discovery (the endpoints stay the real ones).
    pub discovery_issuer: Option<String>,
    /// `id_token_signing_alg_values_supported`; default: the algs of the published keys.
    pub discovery_algs: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported`.
    pub iss_parameter_supported: bool,
    /// JSON merge patch (RFC 7396) applied to the discovery document (`null` removes a field).
    pub discovery_patch: Option<Value>,

    // ---- authorization response ---------------------------------------------------------
    /// `iss` in the callback URL.
    pub callback_iss: CallbackIss,
    /// Answer the authorization request with `error` (and `error_description`) instead of a code.
    pub authorize_error: Option<(String, Option<String>)>,
    /// Registered redirect URIs (`None`: accept any).
    pub redirect_uris: Option<Vec<String>>,
    /// Registered post-logout redirect URIs (`None`: accept any).
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// `GET /oidc/auth` over HTTP signs this user in at once and redirects (302) to the
    /// callback; `None` serves a placeholder login page instead.
    pub auto_login_sub: Option<String>,
    /// Lifetime of authorization codes, seconds.
    pub code_ttl: i64,

    // ---- ID token claims ----------------------------------------------------------------
    /// `iss` of ID tokens.
    pub id_token_iss: Option<String>,
    /// `aud` of ID tokens (a string or an array); default the client id.
    pub id_token_aud: Option<Value>,
    /// `azp` claim (absent by default).
    pub id_token_azp: Option<String>,
    /// `sub` of every ID token (code exchange and refresh).
    pub id_token_sub: Option<String>,
    pub omit_sub: bool,
    pub omit_iat: bool,
    /// `exp = now + id_token_exp_in` (negative: already expired by that many seconds).
    pub id_token_exp_in: i64,
    /// `iat = now + id_token_iat_offset` (positive: issued in the future).
    pub id_token_iat_offset: i64,
    pub id_token_nonce: Nonce,
    /// JSON merge patch applied to the ID token claims last.
    pub id_token_patch: Option<Value>,
    /// Shift of the provider's clock for every token it mints, seconds.
    pub clock_offset: i64,

    // ---- tokens -------------------------------------------------------------------------
    /// `expires_in` and the lifetime of access tokens, seconds.
    pub access_token_ttl: i64,
    /// Lifetime of refresh tokens, seconds (Logto: 14 days).
    pub refresh_token_ttl: i64,
    /// A new refresh token on every refresh (the old one becomes rotated-out).
    pub refresh_rotates: bool,
    /// Refresh responses carry an ID token.
    pub refresh_id_token: bool,
    /// `sub` of the ID token in refresh responses.
    pub refresh_id_token_sub: Option<String>,
    /// A refresh that fails after the refresh token was found (e.g. `invalid_target`, not a
    /// member) still rotates the presented token out, so retrying it revokes the grant.
    pub failed_refresh_rotates: bool,
    /// `offline_access` is dropped (no refresh token) unless the authorization request had
    /// `prompt=consent` (Logto's behaviour).
    pub require_consent_for_offline_access: bool,
    /// Scopes the user's roles grant per resource indicator. A resource not listed grants
    /// every non-OIDC scope that was requested. The token's `scope` is always intersected
    /// with the requested scopes (the refresh request's `scope`, else the sign-in's).
    pub resource_scopes: HashMap<String, Vec<String>>,
    /// A `resource` must be one of the authorization request's, else `invalid_target`.
    pub check_resource_target: bool,
    /// JSON merge patch applied to successful token responses.
    pub token_response_patch: Option<Value>,

    // ---- userinfo -----------------------------------------------------------------------
    /// `sub` of userinfo responses.
    pub userinfo_sub: Option<String>,
    /// JSON merge patch applied to userinfo responses.
    pub userinfo_patch: Option<Value>,

    // ---- users and organizations --------------------------------------------------------
    /// Claims per `sub`, merged over the generated profile (see [`default_profile`]).
    pub users: HashMap<String, Map<String, Value>>,
    /// Organizations by id. Default: `org_acme`, every user a member.
    pub organizations: BTreeMap<String, Org>,

    // ---- faults -------------------------------------------------------------------------
    pub faults: Faults,
}

impl Default for Behaviour {
    fn default() -> Self {
        let mut organizations = BTreeMap::new();
        organizations.insert(
            "org_acme".to_string(),
            Org {
                name: "Acme".into(),
                description: Some("The Acme organization".into()),
                members: None,
                roles: vec!["member".into()],
                scopes: vec!["read:org".into()],
            },
        );
        Behaviour {
            id_token_alg: Alg::Es384,
            corrupt_signature: false,
            id_token_kid: Kid::Current,
            jwks_without_kid: false,
            decoy_keys: 0,
            keep_old_keys_on_rotation: true,
            discovery_issuer: None,
            discovery_algs: None,
            iss_parameter_supported: true,
            discovery_patch: None,
            callback_iss: CallbackIss::Issuer,
            authorize_error: None,
            redirect_uris: None,
            post_logout_redirect_uris: None,
            auto_login_sub: Some("user-1".into()),
            code_ttl: 60,
            id_token_iss: None,
            id_token_aud: None,
            id_token_azp: None,
            id_token_sub: None,
            omit_sub: false,
            omit_iat: false,
            id_token_exp_in: 3600,
            id_token_iat_offset: 0,
            id_token_nonce: Nonce::Echo,
            id_token_patch: None,
            clock_offset: 0,
            access_token_ttl: 3600,
            refresh_token_ttl: 14 * 24 * 3600,
            refresh_rotates: true,
            refresh_id_token: true,
            refresh_id_token_sub: None,
            failed_refresh_rotates: false,
            require_consent_for_offline_access: true,
            resource_scopes: HashMap::new(),
            check_resource_target: true,
            token_response_patch: None,
            userinfo_sub: None,
            userinfo_patch: None,
            users: HashMap::new(),
            organizations,
            faults: Faults::default(),
        }
    }
}

impl Behaviour {
    /// Make `sub` a member of organization `org_id` (creating it, members-only, if needed).
    pub fn add_org_member(&mut self, org_id: &str, sub: &str) {
        let org = self
            .organizations
            .entry(org_id.to_string())
            .or_insert_with(|| Org {
                name: org_id.to_string(),
                description: None,
                members: Some(BTreeSet::new()),
                roles: vec!["member".into()],
                scopes: vec![],
            });
        if let Some(m) = org.members.as_mut() {
            m.insert(sub.to_string());
        }
    }

    /// Remove `sub` from `org_id` (an everyone-org becomes members-only, without `sub`).
    pub fn remove_org_member(&mut self, org_id: &str, sub: &str) {
        if let Some(org) = self.organizations.get_mut(org_id) {
            match org.members.as_mut() {
                Some(m) => {
                    m.remove(sub);
                }
                None => org.members = Some(BTreeSet::new()),
            }
        }
    }
}

/// The profile every user has unless [`Behaviour::users`] overrides claims: Logto's shapes
/// (`picture` null when empty, `created_at`/`updated_at` in milliseconds).
pub fn default_profile(sub: &str) -> Map<String, Value> {
    let v = json!({
        "name": format!("Test User {sub}"),
        "username": sub,
        "picture": null,
        "created_at": 1_700_000_000_000i64,
        "updated_at": 1_700_000_500_000i64,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "phone_number": null,
        "phone_number_verified": false,
        "roles": ["user"],
        "custom_data": {"plan": "pro"},
        "identities": {},
        "sso_identities": [],
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------
// Recorded traffic
// ---------------------------------------------------------------------------------------

/// One request the fake received (a call of [`FakeProvider::authorize`] is recorded too, as
/// `GET <prefix>/oidc/auth` with no headers).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query, as sent.
    pub path: String,
    /// Raw query string (without `?`), empty when none.
    pub query: String,
    /// Header names are lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as `application/x-www-form-urlencoded` (empty otherwise).
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn form_values(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An authorization request the fake saw (through [`FakeProvider::authorize`] or HTTP).
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    pub url: String,
    /// Query parameters in order, repeated ones repeated.
    pub params: Vec<(String, String)>,
}

impl AuthorizeRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn params_named(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn scopes(&self) -> Vec<&str> {
        self.param("scope")
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// What the fake knows about a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    Unknown,
    Active,
    /// Replaced by a rotation (reusing it revokes the grant).
    RotatedOut,
    /// Revoked (revocation endpoint, grant revoked, or expired).
    Revoked,
}

/// Options for [`FakeProvider::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    pub client_id: String,
    pub client_secret: String,
    /// Path the endpoint carries (e.g. `/tenant-a`); the OP lives under `<prefix>/oidc`.
    pub path_prefix: String,
    /// Start with one RSA key (RS256) instead of one EC P-384 key.
    pub rsa: bool,
    /// Port to listen on (0: any free port).
    pub port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_id: "test-app".into(),
            client_secret: "test-secret".into(),
            path_prefix: String::new(),
            rsa: false,
            port: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

enum KeyMaterial {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct SigningKey {
    kid: String,
    material: KeyMaterial,
}

impl SigningKey {
    fn alg(&self) -> &'static str {
        match self.material {
            KeyMaterial::Ec(_) => "ES384",
            KeyMaterial::Rsa(_) => "RS256",
        }
    }

    fn jwk(&self, with_kid: bool) -> Value {
        let mut jwk = match &self.material {
            KeyMaterial::Ec(kp) => {
                let pk = kp.public_key().as_ref();
                // Uncompressed point: 0x04 || x (48 bytes) || y (48 bytes).
                json!({
                    "kty": "EC",
                    "crv": "P-384",
                    "x": b64(&pk[1..49]),
                    "y": b64(&pk[49..97]),
                })
            }
            KeyMaterial::Rsa(kp) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = kp.public().into();
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
        };
        let o = jwk.as_object_mut().unwrap();
        if with_kid {
            o.insert("kid".into(), json!(self.kid));
        }
        o.insert("alg".into(), json!(self.alg()));
        o.insert("use".into(), json!("sig"));
        jwk
    }

    fn sign(&self, rng: &SystemRandom, msg: &[u8]) -> Vec<u8> {
        match &self.material {
            KeyMaterial::Ec(kp) => kp.sign(rng, msg).expect("ecdsa sign").as_ref().to_vec(),
            KeyMaterial::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, rng, msg, &mut sig)
                    .expect("rsa sign");
                sig
            }
        }
    }
}

struct Grant {
    sub: String,
    scopes: Vec<String>,
    resources: Vec<String>,
    nonce: Option<String>,
    auth_time: i64,
    revoked: bool,
}

struct Code {
    grant: u64,
    redirect_uri: String,
    code_challenge: Option<String>,
    used: bool,
    exp: i64,
}

struct RefreshToken {
    grant: u64,
    status: TokenStatus,
    exp: i64,
}

struct AccessToken {
    grant: u64,
    exp: i64,
    jwt: bool,
}

struct State {
    client_id: String,
    client_secret: String,
    prefix: String,
    port: u16,
    behaviour: Behaviour,
    rng: SystemRandom,
    keys: Vec<SigningKey>,
    decoys: Vec<SigningKey>,
    key_counter: u32,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    codes: HashMap<String, Code>,
    refresh_tokens: HashMap<String, RefreshToken>,
    access_tokens: HashMap<String, AccessToken>,
    requests: Vec<RecordedRequest>,
    authorize_requests: Vec<AuthorizeRequest>,
    revoked: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn error_json(error: &str, description: &str) -> Value {
    json!({
        "code": format!("oidc.{error}"),
        "message": description,
        "error": error,
        "error_description": description,
    })
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

const RESERVED_SCOPES: &[&str] = &[
    "openid",
    "offline_access",
    "profile",
    "email",
    "phone",
    "address",
    "custom_data",
    "identities",
    "roles",
];

fn is_reserved_scope(s: &str) -> bool {
    RESERVED_SCOPES.contains(&s) || s.starts_with("urn:logto:scope:")
}

impl State {
    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}{}/oidc", self.port, self.prefix)
    }

    fn now(&self) -> i64 {
        unix_now() + self.behaviour.clock_offset
    }

    fn random_token(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill(&mut buf).expect("rng");
        b64(&buf)
    }

    fn new_ec_key(&mut self, kid_prefix: &str) -> SigningKey {
        self.key_counter += 1;
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &self.rng).expect("generate P-384 key");
        let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &self.rng).expect("load P-384 key");
        SigningKey {
            kid: format!("{kid_prefix}-{}", self.key_counter),
            material: KeyMaterial::Ec(kp),
        }
    }

    fn new_rsa_key(&mut self) -> SigningKey {
        self.key_counter += 1;
        let rsa_count = self
            .keys
            .iter()
            .filter(|k| matches!(k.material, KeyMaterial::Rsa(_)))
            .count();
        let der = if rsa_count % 2 == 0 {
            RSA_KEY_A
        } else {
            RSA_KEY_B
        };
        let kp = RsaKeyPair::from_pkcs8(der).expect("load RSA fixture key");
        SigningKey {
            kid: format!("rsa-{}", self.key_counter),
            material: KeyMaterial::Rsa(kp),
        }
    }

    /// Make the key set match the knobs (RSA key present when RS256 is selected, decoys).
    fn reconcile(&mut self) {
        if self.behaviour.id_token_alg == Alg::Rs256 && self.newest_key("RS256").is_none() {
            let k = self.new_rsa_key();
            self.keys.push(k);
        }
        if self.behaviour.id_token_alg == Alg::Es384 && self.newest_key("ES384").is_none() {
            let k = self.new_ec_key("ec");
            self.keys.push(k);
        }
        while self.decoys.len() < self.behaviour.decoy_keys {
            let k = self.new_ec_key("decoy");
            self.decoys.push(k);
        }
        self.decoys.truncate(self.behaviour.decoy_keys);
    }

    fn newest_key(&self, alg: &str) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.alg() == alg)
    }

    /// The asymmetric key that signs ID tokens and JWT access tokens now.
    fn current_key(&self) -> &SigningKey {
        let alg = if self.behaviour.id_token_alg == Alg::Rs256 {
            "RS256"
        } else {
            "ES384"
        };
        self.newest_key(alg)
            .or_else(|| self.keys.last())
            .expect("the fake has no key")
    }

    fn rotate(&mut self) {
        let rsa = self.current_key().alg() == "RS256";
        let new = if rsa {
            self.new_rsa_key()
        } else {
            self.new_ec_key("ec")
        };
        if !self.behaviour.keep_old_keys_on_rotation {
            let alg = new.alg();
            self.keys.retain(|k| k.alg() != alg);
        }
        self.keys.push(new);
    }

    fn jwks(&self) -> Value {
        let with_kid = !self.behaviour.jwks_without_kid;
        let keys: Vec<Value> = self
            .decoys
            .iter()
            .chain(self.keys.iter())
            .map(|k| k.jwk(with_kid))
            .collect();
        json!({ "keys": keys })
    }

    /// Encode and sign. `header.alg` picks the method: ES384 / RS256 use the key whose kid is
    /// in the header (else the newest key of that alg), HS256 the client secret, `none`
    /// nothing; any other alg is signed with the current key (the header lies).
    fn encode(&self, header: &Map<String, Value>, claims: &Value, corrupt: bool) -> String {
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("ES384")
            .to_string();
        let kid = header.get("kid").and_then(Value::as_str);
        let signing_input = format!(
            "{}.{}",
            b64(Value::Object(header.clone()).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = match alg.as_str() {
            "none" => vec![],
            "HS256" => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, self.client_secret.as_bytes());
                hmac::sign(&key, signing_input.as_bytes()).as_ref().to_vec()
            }
            "ES384" | "RS256" => {
                let key = kid
                    .and_then(|kid| self.keys.iter().find(|k| k.kid == kid && k.alg() == alg))
                    .or_else(|| self.newest_key(&alg))
                    .unwrap_or_else(|| {
                        panic!("the fake has no {alg} key (select Alg::Rs256 first)")
                    });
                key.sign(&self.rng, signing_input.as_bytes())
            }
            _ => self.current_key().sign(&self.rng, signing_input.as_bytes()),
        };
        if corrupt {
            match sig.last_mut() {
                Some(b) => *b ^= 0x01,
                None => sig = vec![0u8; 8],
            }
        }
        format!("{signing_input}.{}", b64(&sig))
    }

    fn user(&self, sub: &str) -> Map<String, Value> {
        let mut u = default_profile(sub);
        if let Some(o) = self.behaviour.users.get(sub) {
            for (k, v) in o {
                u.insert(k.clone(), v.clone());
            }
        }
        u
    }

    fn member_orgs(&self, sub: &str) -> Vec<(&String, &Org)> {
        self.behaviour
            .organizations
            .iter()
            .filter(|(_, o)| o.has_member(sub))
            .collect()
    }

    /// Claims for the granted scopes; `userinfo` adds the userinfo-only ones.
    fn scope_claims(&self, sub: &str, scopes: &[String], userinfo: bool) -> Map<String, Value> {
        let user = self.user(sub);
        let mut out = Map::new();
        let copy = |names: &[&str], always: bool, out: &mut Map<String, Value>| {
            for n in names {
                match user.get(*n) {
                    Some(v) if always || !(v.is_null() || v == "") => {
                        out.insert(n.to_string(), v.clone());
                    }
                    None if always => {
                        out.insert(n.to_string(), Value::Null);
                    }
                    _ => {}
                }
            }
        };
        let has = |s: &str| scopes.iter().any(|x| x == s);
        if has("profile") {
            copy(
                &["name", "username", "picture", "created_at", "updated_at"],
                true,
                &mut out,
            );
            copy(
                &[
                    "family_name",
                    "given_name",
                    "middle_name",
                    "nickname",
                    "preferred_username",
                    "profile",
                    "website",
                    "gender",
                    "birthdate",
                    "zoneinfo",
                    "locale",
                ],
                false,
                &mut out,
            );
        }
        if has("email") {
            copy(&["email", "email_verified"], true, &mut out);
        }
        if has("phone") {
            copy(&["phone_number", "phone_number_verified"], true, &mut out);
        }
        if has("address") {
            copy(&["address"], false, &mut out);
        }
        if has("roles") {
            copy(&["roles"], true, &mut out);
        }
        if userinfo && has("custom_data") {
            copy(&["custom_data"], true, &mut out);
        }
        if userinfo && has("identities") {
            copy(&["identities", "sso_identities"], true, &mut out);
        }
        if has(ORGANIZATIONS_SCOPE) {
            let orgs = self.member_orgs(sub);
            out.insert(
                "organizations".into(),
                json!(orgs.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()),
            );
            if userinfo {
                let data: Vec<Value> = orgs
                    .iter()
                    .map(|(id, o)| json!({"id": id, "name": o.name, "description": o.description}))
                    .collect();
                out.insert("organization_data".into(), Value::Array(data));
            }
        }
        if has("urn:logto:scope:organization_roles") {
            let roles: Vec<String> = self
                .member_orgs(sub)
                .iter()
                .flat_map(|(id, o)| o.roles.iter().map(move |r| format!("{id}:{r}")))
                .collect();
            out.insert("organization_roles".into(), json!(roles));
        }
        out
    }

    fn mint_id_token(&self, grant: &Grant, sub_override: Option<&str>) -> String {
        let b = &self.behaviour;
        let now = self.now();
        let mut c = self.scope_claims(&grant.sub, &grant.scopes, false);
        let sub = sub_override
            .or(b.id_token_sub.as_deref())
            .unwrap_or(&grant.sub);
        if !b.omit_sub {
            c.insert("sub".into(), json!(sub));
        }
        c.insert(
            "iss".into(),
            json!(b.id_token_iss.clone().unwrap_or_else(|| self.issuer())),
        );
        c.insert(
            "aud".into(),
            b.id_token_aud
                .clone()
                .unwrap_or_else(|| json!(self.client_id)),
        );
        if let Some(azp) = &b.id_token_azp {
            c.insert("azp".into(), json!(azp));
        }
        c.insert("exp".into(), json!(now + b.id_token_exp_in));
        if !b.omit_iat {
            c.insert("iat".into(), json!(now + b.id_token_iat_offset));
        }
        c.insert("auth_time".into(), json!(grant.auth_time));
        match &b.id_token_nonce {
            Nonce::Echo => {
                if let Some(n) = &grant.nonce {
                    c.insert("nonce".into(), json!(n));
                }
            }
            Nonce::Absent => {}
            Nonce::Value(v) => {
                c.insert("nonce".into(), json!(v));
            }
        }
        let mut claims = Value::Object(c);
        if let Some(p) = &b.id_token_patch {
            merge_patch(&mut claims, p);
        }
        let mut header = Map::new();
        header.insert("alg".into(), json!(b.id_token_alg.as_str()));
        header.insert("typ".into(), json!("JWT"));
        if matches!(b.id_token_alg, Alg::Es384 | Alg::Rs256) {
            match &b.id_token_kid {
                Kid::Current => {
                    header.insert("kid".into(), json!(self.current_key().kid));
                }
                Kid::Absent => {}
                Kid::Value(v) => {
                    header.insert("kid".into(), json!(v));
                }
            }
        } else if let Kid::Value(v) = &b.id_token_kid {
            header.insert("kid".into(), json!(v));
        }
        self.encode(&header, &claims, b.corrupt_signature)
    }

    fn mint_jwt_access_token(
        &self,
        sub: &str,
        aud: &str,
        scope: &str,
        org: Option<&str>,
    ) -> String {
        let now = self.now();
        let mut claims = json!({
            "jti": self.random_token(16),
            "sub": sub,
            "iat": now,
            "exp": now + self.behaviour.access_token_ttl,
            "scope": scope,
            "client_id": self.client_id,
            "iss": self.issuer(),
            "aud": aud,
        });
        if let Some(org) = org {
            claims["organization_id"] = json!(org);
        }
        let key = self.current_key();
        let mut header = Map::new();
        header.insert("alg".into(), json!(key.alg()));
        header.insert("typ".into(), json!("at+jwt"));
        header.insert("kid".into(), json!(key.kid));
        self.encode(&header, &claims, false)
    }

    fn revoke_grant(&mut self, grant: u64) {
        if let Some(g) = self.grants.get_mut(&grant) {
            g.revoked = true;
        }
        for rt in self
            .refresh_tokens
            .values_mut()
            .filter(|t| t.grant == grant)
        {
            rt.status = TokenStatus::Revoked;
        }
        self.access_tokens.retain(|_, t| t.grant != grant);
    }

    fn record(&mut self, req: &RawRequest) {
        let is_form = req.header("content-type").is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let form = if is_form {
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect()
        } else {
            vec![]
        };
        self.requests.push(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
            form,
        });
    }

    // ---- authorization ------------------------------------------------------------------

    fn authorize(&mut self, authorize_url: &str, sub: &str) -> Result<String, String> {
        let url = url::Url::parse(authorize_url).map_err(|e| format!("not a URL: {e}"))?;
        let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        self.authorize_requests.push(AuthorizeRequest {
            url: authorize_url.to_string(),
            params: params.clone(),
        });

        let expected = format!("{}/auth", self.issuer());
        let base = format!("{}{}", url.origin().ascii_serialization(), url.path());
        if base != expected {
            return Err(format!(
                "authorize URL {base} is not the authorization endpoint {expected}"
            ));
        }
        let mut single: HashMap<&str, &str> = HashMap::new();
        for (k, v) in &params {
            if k != "resource" && single.insert(k.as_str(), v.as_str()).is_some() {
                return Err(format!("invalid_request: parameter {k} repeated"));
            }
        }
        let get = |k: &str| single.get(k).copied();
        if get("client_id") != Some(self.client_id.as_str()) {
            return Err(format!(
                "invalid_client: client_id {:?} unknown",
                get("client_id")
            ));
        }
        let redirect_uri = get("redirect_uri")
            .ok_or("invalid_request: missing redirect_uri")?
            .to_string();
        if let Some(allowed) = &self.behaviour.redirect_uris {
            if !allowed.contains(&redirect_uri) {
                return Err(format!(
                    "invalid_redirect_uri: {redirect_uri} is not registered"
                ));
            }
        }
        if get("response_type") != Some("code") {
            return Err(format!(
                "unsupported_response_type: {:?}",
                get("response_type")
            ));
        }
        let scopes: Vec<String> = get("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            return Err("invalid_scope: openid scope missing".into());
        }
        let challenge = get("code_challenge").map(String::from);
        if let Some(c) = &challenge {
            if get("code_challenge_method") != Some("S256") {
                return Err(format!(
                    "invalid_request: code_challenge_method {:?} not supported",
                    get("code_challenge_method")
                ));
            }
            if c.len() != 43 {
                return Err(
                    "invalid_request: code_challenge must be 43 base64url characters".into(),
                );
            }
        }
        let state = get("state").map(String::from);
        let iss = match &self.behaviour.callback_iss {
            CallbackIss::Issuer => Some(self.issuer()),
            CallbackIss::Absent => None,
            CallbackIss::Value(v) => Some(v.clone()),
        };

        let mut out = url::form_urlencoded::Serializer::new(String::new());
        if let Some((error, description)) = self.behaviour.authorize_error.clone() {
            out.append_pair("error", &error);
            if let Some(d) = description {
                out.append_pair("error_description", &d);
            }
        } else {
            let consent = get("prompt").is_some_and(|p| p.split(' ').any(|p| p == "consent"));
            let granted: Vec<String> = scopes
                .iter()
                .filter(|s| {
                    !(*s == "offline_access"
                        && self.behaviour.require_consent_for_offline_access
                        && !consent)
                })
                .cloned()
                .collect();
            let resources: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "resource")
                .map(|(_, v)| v.clone())
                .collect();
            let id = self.next_grant;
            self.next_grant += 1;
            let now = self.now();
            self.grants.insert(
                id,
                Grant {
                    sub: sub.to_string(),
                    scopes: granted,
                    resources,
                    nonce: get("nonce").map(String::from),
                    auth_time: now,
                    revoked: false,
                },
            );
            let code = self.random_token(32);
            self.codes.insert(
                code.clone(),
                Code {
                    grant: id,
                    redirect_uri: redirect_uri.clone(),
                    code_challenge: challenge,
                    used: false,
                    exp: now + self.behaviour.code_ttl,
                },
            );
            out.append_pair("code", &code);
        }
        if let Some(s) = state {
            out.append_pair("state", &s);
        }
        if let Some(i) = iss {
            out.append_pair("iss", &i);
        }
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        Ok(format!("{redirect_uri}{sep}{}", out.finish()))
    }

    // ---- HTTP endpoints -----------------------------------------------------------------

    fn discovery(&self) -> Resp {
        let iss = self.issuer();
        let algs: Vec<String> = match &self.behaviour.discovery_algs {
            Some(a) => a.clone(),
            None => {
                let mut a: Vec<String> = vec![];
                for k in &self.keys {
                    if !a.iter().any(|x| x == k.alg()) {
                        a.push(k.alg().to_string());
                    }
                }
                a
            }
        };
        let mut doc = json!({
            "issuer": self.behaviour.discovery_issuer.clone().unwrap_or_else(|| iss.clone()),
            "authorization_endpoint": format!("{iss}/auth"),
            "token_endpoint": format!("{iss}/token"),
            "userinfo_endpoint": format!("{iss}/me"),
            "jwks_uri": format!("{iss}/jwks"),
            "end_session_endpoint": format!("{iss}/session/end"),
            "revocation_endpoint": format!("{iss}/token/revocation"),
            "introspection_endpoint": format!("{iss}/token/introspection"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["form_post", "fragment", "query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_jwt", "client_secret_post", "private_key_jwt", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": self.behaviour.iss_parameter_supported,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claim_types_supported": ["normal"],
            "scopes_supported": [
                "openid", "offline_access", "profile", "email", "phone", "address", "custom_data",
                "identities", "roles", ORGANIZATIONS_SCOPE, "urn:logto:scope:organization_roles"
            ],
            "claims_supported": [
                "sub", "name", "username", "picture", "created_at", "updated_at", "email",
                "email_verified", "phone_number", "phone_number_verified", "address", "custom_data",
                "identities", "sso_identities", "roles", "organizations", "organization_data",
                "organization_roles", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "sid"
            ],
        });
        if let Some(p) = &self.behaviour.discovery_patch {
            merge_patch(&mut doc, p);
        }
        Resp::json(200, &doc)
    }

    fn check_client(&self, req: &RawRequest) -> Result<(), Resp> {
        let bad = || {
            let mut r = Resp::json(
                401,
                &error_json("invalid_client", "client authentication failed"),
            );
            r.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"oidc\"".into()));
            r
        };
        let form = req.form();
        if form.iter().any(|(k, _)| k == "client_secret") {
            return Err(Resp::json(
                400,
                &error_json(
                    "invalid_request",
                    "client authentication must only be provided using one mechanism",
                ),
            ));
        }
        let auth = req.header("authorization").ok_or_else(bad)?;
        let (scheme, cred) = auth.split_once(' ').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad());
        }
        let decoded = STANDARD.decode(cred.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
        let unescape = |s: &str| -> String {
            url::form_urlencoded::parse(s.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default()
        };
        if unescape(id) != self.client_id || unescape(secret) != self.client_secret {
            return Err(bad());
        }
        if let Some((_, cid)) = form.iter().find(|(k, _)| k == "client_id") {
            if *cid != self.client_id {
                return Err(bad());
            }
        }
        Ok(())
    }

    fn token(&mut self, req: &RawRequest) -> Resp {
        if let Err(r) = self.check_client(req) {
            return r;
        }
        let form = req.form();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let mut resp = match get("grant_type") {
            Some("authorization_code") => self.code_grant(&form),
            Some("refresh_token") => self.refresh_grant(&form),
            Some(other) => Resp::json(
                400,
                &error_json(
                    "unsupported_grant_type",
                    &format!("unsupported grant_type {other}"),
                ),
            ),
            None => Resp::json(
                400,
                &error_json("invalid_request", "missing required parameter 'grant_type'"),
            ),
        };
        resp.headers.push(("Pragma".into(), "no-cache".into()));
        resp
    }

    fn code_grant(&mut self, form: &[(String, String)]) -> Resp {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let invalid = |d: &str| Resp::json(400, &error_json("invalid_grant", d));
        let Some(code) = get("code") else {
            return Resp::json(
                400,
                &error_json("invalid_request", "missing required parameter 'code'"),
            );
        };
        let now = self.now();
        let Some(c) = self.codes.get_mut(code) else {
            return invalid("grant request is invalid");
        };
        if c.used {
            let g = c.grant;
            self.revoke_grant(g);
            return invalid("grant request is invalid");
        }
        c.used = true;
        let (grant_id, redirect_uri, challenge, exp) = (
            c.grant,
            c.redirect_uri.clone(),
            c.code_challenge.clone(),
            c.exp,
        );
        if exp < now {
            return invalid("grant request is invalid");
        }
        if get("redirect_uri") != Some(redirect_uri.as_str()) {
            return invalid("grant request is invalid");
        }
        if let Some(challenge) = challenge {
            let Some(verifier) = get("code_verifier") else {
                return invalid("grant request is invalid");
            };
            let ok_chars = verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !(43..=128).contains(&verifier.len()) || !ok_chars {
                return invalid("grant request is invalid");
            }
            if b64(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref()) != challenge {
                return invalid("grant request is invalid");
            }
        }
        if self.grants.get(&grant_id).is_none_or(|g| g.revoked) {
            return invalid("grant request is invalid");
        }
        let resource = get("resource").map(String::from);
        let grant = &self.grants[&grant_id];
        let mut body = Map::new();
        let id_token = self.mint_id_token(grant, None);
        let scope = grant.scopes.join(" ");
        let offline = grant.scopes.iter().any(|s| s == "offline_access");
        let sub = grant.sub.clone();
        let access_token = match &resource {
            Some(r) => {
                let s = self.resource_scope(grant_id, r, None);
                self.mint_jwt_access_token(&sub, r, &s, None)
            }
            None => self.random_token(32),
        };
        self.access_tokens.insert(
            access_token.clone(),
            AccessToken {
                grant: grant_id,
                exp: now + self.behaviour.access_token_ttl,
                jwt: resource.is_some(),
            },
        );
        body.insert("access_token".into(), json!(access_token));
        body.insert("expires_in".into(), json!(self.behaviour.access_token_ttl));
        body.insert("id_token".into(), json!(id_token));
        if offline {
            let rt = self.random_token(32);
            self.refresh_tokens.insert(
                rt.clone(),
                RefreshToken {
                    grant: grant_id,
                    status: TokenStatus::Active,
                    exp: now + self.behaviour.refresh_token_ttl,
                },
            );
            body.insert("refresh_token".into(), json!(rt));
        }
        body.insert("scope".into(), json!(scope));
        body.insert("token_type".into(), json!("Bearer"));
        self.token_ok(body)
    }

    fn token_ok(&self, body: Map<String, Value>) -> Resp {
        let mut v = Value::Object(body);
        if let Some(p) = &self.behaviour.token_response_patch {
            merge_patch(&mut v, p);
        }
        Resp::json(200, &v)
    }

    /// Scopes of a resource token: granted (knob, else requested non-OIDC scopes) ∩ requested.
    fn resource_scope(&self, grant: u64, resource: &str, requested: Option<&str>) -> String {
        let g = &self.grants[&grant];
        let requested: Vec<String> = match requested {
            Some(r) => r
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => g.scopes.clone(),
        };
        let granted: Vec<String> = match self.behaviour.resource_scopes.get(resource) {
            Some(allowed) => requested
                .iter()
                .filter(|s| allowed.contains(s))
                .cloned()
                .collect(),
            None => requested
                .iter()
                .filter(|s| !is_reserved_scope(s))
                .cloned()
                .collect(),
        };
        granted.join(" ")
    }

    fn refresh_grant(&mut self, form: &[(String, String)]) -> Resp {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let invalid = |d: &str| Resp::json(400, &error_json("invalid_grant", d));
        let Some(presented) = get("refresh_token").map(String::from) else {
            return Resp::json(
                400,
                &error_json(
                    "invalid_request",
                    "missing required parameter 'refresh_token'",
                ),
            );
        };
        let now = self.now();
        let Some(rt) = self.refresh_tokens.get_mut(&presented) else {
            return invalid("grant request is invalid");
        };
        if rt.status == TokenStatus::Active && rt.exp < now {
            rt.status = TokenStatus::Revoked;
        }
        let grant_id = rt.grant;
        match rt.status {
            TokenStatus::Active => {}
            TokenStatus::RotatedOut => {
                self.revoke_grant(grant_id);
                return invalid("grant request is invalid");
            }
            _ => return invalid("grant request is invalid"),
        }
        if self.grants.get(&grant_id).is_none_or(|g| g.revoked) {
            return invalid("grant request is invalid");
        }
        match self.refresh_checks(grant_id, form) {
            Ok(()) => {}
            Err(r) => {
                if self.behaviour.failed_refresh_rotates && self.behaviour.refresh_rotates {
                    self.refresh_tokens.get_mut(&presented).unwrap().status =
                        TokenStatus::RotatedOut;
                }
                return r;
            }
        }
        let resource = get("resource").map(String::from);
        let org = get("organization_id").map(String::from);
        let (sub, grant_scopes) = {
            let g = &self.grants[&grant_id];
            (g.sub.clone(), g.scopes.clone())
        };
        let (access_token, scope, jwt) = match (&resource, &org) {
            (Some(r), o) => {
                let s = self.resource_scope(grant_id, r, get("scope"));
                (
                    self.mint_jwt_access_token(&sub, r, &s, o.as_deref()),
                    s,
                    true,
                )
            }
            (None, Some(o)) => {
                let s = self.behaviour.organizations[o].scopes.join(" ");
                let aud = format!("{ORGANIZATION_URN_PREFIX}{o}");
                (self.mint_jwt_access_token(&sub, &aud, &s, None), s, true)
            }
            (None, None) => (self.random_token(32), grant_scopes.join(" "), false),
        };
        self.access_tokens.insert(
            access_token.clone(),
            AccessToken {
                grant: grant_id,
                exp: now + self.behaviour.access_token_ttl,
                jwt,
            },
        );
        let new_rt = if self.behaviour.refresh_rotates {
            self.refresh_tokens.get_mut(&presented).unwrap().status = TokenStatus::RotatedOut;
            let t = self.random_token(32);
            self.refresh_tokens.insert(
                t.clone(),
                RefreshToken {
                    grant: grant_id,
                    status: TokenStatus::Active,
                    exp: now + self.behaviour.refresh_token_ttl,
                },
            );
            t
        } else {
            presented.clone()
        };
        let mut body = Map::new();
        body.insert("access_token".into(), json!(access_token));
        body.insert("expires_in".into(), json!(self.behaviour.access_token_ttl));
        if self.behaviour.refresh_id_token {
            let sub_override = self.behaviour.refresh_id_token_sub.clone();
            let t = self.mint_id_token(&self.grants[&grant_id], sub_override.as_deref());
            body.insert("id_token".into(), json!(t));
        }
        body.insert("refresh_token".into(), json!(new_rt));
        body.insert("scope".into(), json!(scope));
        body.insert("token_type".into(), json!("Bearer"));
        self.token_ok(body)
    }

    /// Checks of a refresh request after the refresh token was accepted.
    fn refresh_checks(&self, grant_id: u64, form: &[(String, String)]) -> Result<(), Resp> {
        let g = &self.grants[&grant_id];
        let resources: Vec<&str> = form
            .iter()
            .filter(|(k, _)| k == "resource")
            .map(|(_, v)| v.as_str())
            .collect();
        if resources.len() > 1 {
            return Err(Resp::json(
                400,
                &error_json("invalid_target", "only one resource indicator is allowed"),
            ));
        }
        if let Some(r) = resources.first() {
            if self.behaviour.check_resource_target && !g.resources.iter().any(|x| x == r) {
                return Err(Resp::json(
                    400,
                    &error_json(
                        "invalid_target",
                        "resource indicator is missing, or unknown",
                    ),
                ));
            }
        }
        if let Some((_, org)) = form.iter().find(|(k, _)| k == "organization_id") {
            if !g.scopes.iter().any(|s| s == ORGANIZATIONS_SCOPE) {
                return Err(Resp::json(
                    400,
                    &error_json("insufficient_scope", "refresh token missing required scope"),
                ));
            }
            let member = self
                .behaviour
                .organizations
                .get(org)
                .is_some_and(|o| o.has_member(&g.sub));
            if !member {
                return Err(Resp::json(
                    403,
                    &json!({
                        "code": "oidc.access_denied",
                        "error": "access_denied",
                        "error_description": "user is not a member of the organization",
                    }),
                ));
            }
        }
        Ok(())
    }

    fn userinfo(&self, req: &RawRequest) -> Resp {
        let bad = || {
            let mut r = Resp::json(401, &error_json("invalid_token", "invalid token provided"));
            r.headers.push((
                "WWW-Authenticate".into(),
                "Bearer realm=\"oidc\", error=\"invalid_token\"".into(),
            ));
            r
        };
        let Some(token) = req
            .header("authorization")
            .and_then(|a| a.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return bad();
        };
        let Some(at) = self.access_tokens.get(token) else {
            return bad();
        };
        if at.jwt || at.exp < self.now() {
            return bad();
        }
        let Some(g) = self.grants.get(&at.grant).filter(|g| !g.revoked) else {
            return bad();
        };
        let mut claims = self.scope_claims(&g.sub, &g.scopes, true);
        let sub = self
            .behaviour
            .userinfo_sub
            .clone()
            .unwrap_or_else(|| g.sub.clone());
        claims.insert("sub".into(), json!(sub));
        let mut v = Value::Object(claims);
        if let Some(p) = &self.behaviour.userinfo_patch {
            merge_patch(&mut v, p);
        }
        Resp::json(200, &v)
    }

    fn revocation(&mut self, req: &RawRequest) -> Resp {
        if let Err(r) = self.check_client(req) {
            return r;
        }
        let form = req.form();
        let Some((_, token)) = form.iter().find(|(k, _)| k == "token") else {
            return Resp::json(
                400,
                &error_json("invalid_request", "missing required parameter 'token'"),
            );
        };
        self.revoked.push(token.clone());
        if let Some(rt) = self.refresh_tokens.get(token) {
            let g = rt.grant;
            self.revoke_grant(g);
        } else {
            self.access_tokens.remove(token);
        }
        Resp::empty(200)
    }

    fn end_session(&self, req: &RawRequest) -> Resp {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        if req.method == "POST" {
            pairs.extend(req.form());
        }
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(cid) = get("client_id") {
            if cid != self.client_id {
                return Resp::html(400, "<h1>invalid_client</h1>");
            }
        }
        match get("post_logout_redirect_uri") {
            Some(uri) => {
                if let Some(allowed) = &self.behaviour.post_logout_redirect_uris {
                    if !allowed.contains(&uri) {
                        return Resp::html(
                            400,
                            "<h1>invalid_request: post_logout_redirect_uri not registered</h1>",
                        );
                    }
                }
                let mut loc = uri.clone();
                if let Some(state) = get("state") {
                    let sep = if loc.contains('?') { '&' } else { '?' };
                    loc = format!(
                        "{loc}{sep}{}",
                        url::form_urlencoded::Serializer::new(String::new())
                            .append_pair("state", &state)
                            .finish()
                    );
                }
                Resp::redirect(302, &loc)
            }
            None => Resp::html(200, "<h1>You have signed out</h1>"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------------------

struct RawRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("Cache-Control".into(), "no-store".into()),
            ],
            body: v.to_string().into_bytes(),
        }
    }
    fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: vec![("Cache-Control".into(), "no-store".into())],
            body: vec![],
        }
    }
    fn html(status: u16, html: &str) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: format!("<!DOCTYPE html><html><head><title>fake provider</title></head><body>{html}</body></html>")
                .into_bytes(),
        }
    }
    fn redirect(status: u16, location: &str) -> Resp {
        Resp {
            status,
            headers: vec![("Location".into(), location.into())],
            body: vec![],
        }
    }

    fn to_bytes(&self, content_length: usize, body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode a complete chunked body; `None` while incomplete.
fn decode_chunked(buf: &[u8]) -> Option<Result<Vec<u8>, ()>> {
    let mut out = vec![];
    let mut pos = 0;
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let size_str = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_str, 16) else {
            return Some(Err(()));
        };
        pos = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            find(&buf[pos..], b"\r\n")?;
            return Some(Ok(out));
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

async fn read_request(stream: &mut TcpStream) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?.to_string();
    let mut lines = head.split("\r\n");
    let mut rl = lines.next()?.split(' ');
    let method = rl.next()?.to_string();
    let target = rl.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let hdr = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body =
        if hdr("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
            loop {
                match decode_chunked(&rest) {
                    Some(Ok(b)) => break b,
                    Some(Err(())) => return None,
                    None => {}
                }
                if rest.len() > MAX_BODY {
                    return None;
                }
                let n = stream.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                rest.extend_from_slice(&tmp[..n]);
            }
        } else {
            let len: usize = hdr("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if len > MAX_BODY {
                return None;
            }
            while rest.len() < len {
                let n = stream.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            rest.truncate(len);
            rest
        };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(RawRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Userinfo,
    Revocation,
    EndSession,
    Authorize,
    NotFound,
}

fn route(prefix: &str, method: &str, path: &str) -> Endpoint {
    let Some(rest) = path
        .strip_prefix(prefix)
        .and_then(|p| p.strip_prefix("/oidc"))
    else {
        return Endpoint::NotFound;
    };
    match (method, rest) {
        ("GET", "/.well-known/openid-configuration") => Endpoint::Discovery,
        ("GET", "/jwks") => Endpoint::Jwks,
        ("POST", "/token") => Endpoint::Token,
        ("GET" | "POST", "/me") => Endpoint::Userinfo,
        ("POST", "/token/revocation") => Endpoint::Revocation,
        ("GET" | "POST", "/session/end") => Endpoint::EndSession,
        ("GET", "/auth") => Endpoint::Authorize,
        _ => Endpoint::NotFound,
    }
}

async fn handle_connection(mut stream: TcpStream, shared: Shared) {
    let Some(req) = read_request(&mut stream).await else {
        let r = Resp::json(
            400,
            &error_json("invalid_request", "malformed HTTP request"),
        );
        let _ = stream.write_all(&r.to_bytes(r.body.len(), &r.body)).await;
        let _ = stream.shutdown().await;
        return;
    };
    let (endpoint, fault) = {
        let mut st = lock(&shared);
        st.record(&req);
        let endpoint = route(&st.prefix, &req.method, &req.path);
        let f = &mut st.behaviour.faults;
        let fault = match endpoint {
            Endpoint::Discovery => f.discovery.take(),
            Endpoint::Jwks => f.jwks.take(),
            Endpoint::Token => f.token.take(),
            Endpoint::Userinfo => f.userinfo.take(),
            Endpoint::Revocation => f.revocation.take(),
            Endpoint::EndSession => f.end_session.take(),
            Endpoint::Authorize => f.authorize.take(),
            Endpoint::NotFound => Fault::None,
        };
        (endpoint, fault)
    };
    let (resp, truncate_body, truncate_framing) = match fault {
        Fault::Hang => {
            std::future::pending::<()>().await;
            return;
        }
        Fault::CloseConnection => return,
        Fault::Status {
            status,
            body,
            content_type,
            headers,
        } => {
            let mut r = Resp {
                status,
                headers: vec![("Content-Type".into(), content_type)],
                body: body.into_bytes(),
            };
            r.headers.extend(headers);
            (r, false, false)
        }
        Fault::Html => (
            Resp::html(
                200,
                "<h1>502 Bad Gateway</h1><p>The upstream server is not responding.</p>",
            ),
            false,
            false,
        ),
        other => {
            if let Fault::Delay(d) = other {
                tokio::time::sleep(d).await;
            }
            let r = respond(&shared, endpoint, &req);
            (
                r,
                other == Fault::TruncatedJson,
                other == Fault::TruncatedBody,
            )
        }
    };
    let mut body = resp.body.clone();
    if (truncate_body || truncate_framing) && body.is_empty() {
        body = b"{\"error\":\"server_error\"}".to_vec();
    }
    let bytes = if truncate_body {
        let half = body[..body.len() / 2].to_vec();
        resp.to_bytes(half.len(), &half)
    } else if truncate_framing {
        let mut b = resp.to_bytes(body.len(), &body);
        b.truncate(b.len() - body.len() + body.len() / 2);
        b
    } else {
        resp.to_bytes(body.len(), &body)
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

fn respond(shared: &Shared, endpoint: Endpoint, req: &RawRequest) -> Resp {
    let mut st = lock(shared);
    match endpoint {
        Endpoint::Discovery => st.discovery(),
        Endpoint::Jwks => Resp::json(200, &st.jwks()),
        Endpoint::Token => st.token(req),
        Endpoint::Userinfo => st.userinfo(req),
        Endpoint::Revocation => st.revocation(req),
        Endpoint::EndSession => st.end_session(req),
        Endpoint::Authorize => match st.behaviour.auto_login_sub.clone() {
            Some(sub) => {
                let url = format!("http://127.0.0.1:{}{}?{}", st.port, req.path, req.query);
                match st.authorize(&url, &sub) {
                    Ok(callback) => Resp::redirect(302, &callback),
                    Err(e) => Resp::html(
                        400,
                        &format!("<h1>authorization error</h1><p>{}</p>", html_escape(&e)),
                    ),
                }
            }
            None => Resp::html(200, "<h1>Sign in</h1><p>(fake provider login page)</p>"),
        },
        Endpoint::NotFound => Resp::json(404, &error_json("not_found", "not found")),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn serve(listener: std::net::TcpListener, shared: Shared) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
    // Dropping this task (stop / Drop) drops the JoinSet, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(handle_connection(stream, shared.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn bind(port: u16) -> std::net::TcpListener {
    // std sets SO_REUSEADDR on Unix, so a restart can take the same port again at once.
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind fake provider");
    l.set_nonblocking(true).expect("nonblocking listener");
    l
}

// ---------------------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------------------

/// A running fake provider. Dropping it stops the server.
pub struct FakeProvider {
    /// `http://127.0.0.1:<port><prefix>` (what goes into `endpoint` of the Logto config).
    pub endpoint: String,
    client_id: String,
    client_secret: String,
    state: Shared,
    server: Mutex<Option<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
    /// Present when started with [`FakeProvider::start_blocking`].
    own_runtime: Option<tokio::runtime::Runtime>,
}

impl FakeProvider {
    /// Start on the current tokio runtime: client `test-app` / `test-secret`, one ES384 key.
    pub async fn start() -> FakeProvider {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> FakeProvider {
        Self::launch(options, tokio::runtime::Handle::current(), None)
    }

    /// Start on a runtime of its own (for tests that use Rocket's blocking client). Use
    /// [`stop_blocking`](Self::stop_blocking) / [`restart_blocking`](Self::restart_blocking) there.
    pub fn start_blocking(options: Options) -> FakeProvider {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake provider runtime");
        let handle = rt.handle().clone();
        Self::launch(options, handle, Some(rt))
    }

    fn launch(
        options: Options,
        runtime: tokio::runtime::Handle,
        own_runtime: Option<tokio::runtime::Runtime>,
    ) -> FakeProvider {
        let listener = bind(options.port);
        let port = listener.local_addr().unwrap().port();
        let prefix = options.path_prefix.trim_end_matches('/').to_string();
        let mut behaviour = Behaviour::default();
        if options.rsa {
            behaviour.id_token_alg = Alg::Rs256;
        }
        let (client_id, client_secret) = (options.client_id, options.client_secret);
        let mut state = State {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            prefix: prefix.clone(),
            port,
            behaviour,
            rng: SystemRandom::new(),
            keys: vec![],
            decoys: vec![],
            key_counter: 0,
            grants: HashMap::new(),
            next_grant: 1,
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            requests: vec![],
            authorize_requests: vec![],
            revoked: vec![],
        };
        state.reconcile();
        let state = Arc::new(Mutex::new(state));
        let server = runtime.spawn(serve(listener, state.clone()));
        FakeProvider {
            endpoint: format!("http://127.0.0.1:{port}{prefix}"),
            client_id,
            client_secret,
            state,
            server: Mutex::new(Some(server)),
            runtime,
            own_runtime,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `<endpoint>/oidc`.
    pub fn issuer(&self) -> String {
        self.st().issuer()
    }
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }
    pub fn port(&self) -> u16 {
        self.st().port
    }
    /// A URL on the fake, e.g. `url("/oidc/jwks")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path)
    }

    /// Act as the user's browser at the authorization endpoint: check and record the
    /// authorization request, sign `sub` in, and return the callback URL
    /// (`redirect_uri?code=..&state=..&iss=..`, or `?error=..` with
    /// [`Behaviour::authorize_error`]). Panics when the provider would refuse the request
    /// (wrong client, redirect URI, response type, no `openid`, non-S256 PKCE, repeated
    /// parameter); use [`try_authorize`](Self::try_authorize) to observe that.
    pub fn authorize(&self, authorize_url: &str, sub: &str) -> String {
        self.try_authorize(authorize_url, sub)
            .unwrap_or_else(|e| panic!("fake provider refused {authorize_url}: {e}"))
    }

    pub fn try_authorize(&self, authorize_url: &str, sub: &str) -> Result<String, String> {
        let mut st = self.st();
        let (path, query) = match url::Url::parse(authorize_url) {
            Ok(u) => (u.path().to_string(), u.query().unwrap_or("").to_string()),
            Err(_) => (authorize_url.to_string(), String::new()),
        };
        st.requests.push(RecordedRequest {
            method: "GET".into(),
            path,
            query,
            headers: vec![],
            body: vec![],
            form: vec![],
        });
        st.authorize(authorize_url, sub)
    }

    /// Change knobs. Takes effect for the next response.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        let mut st = self.st();
        f(&mut st.behaviour);
        st.reconcile();
    }

    /// A copy of the current knobs.
    pub fn behaviour(&self) -> Behaviour {
        self.st().behaviour.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.st().requests.clone()
    }

    /// Requests whose path ends with `path_suffix` (`"/token"` does not count
    /// `/token/revocation`).
    pub fn requests_to(&self, path_suffix: &str) -> Vec<RecordedRequest> {
        self.st()
            .requests
            .iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .cloned()
            .collect()
    }

    pub fn count(&self, path_suffix: &str) -> usize {
        self.st()
            .requests
            .iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .count()
    }

    pub fn last_request(&self, path_suffix: &str) -> Option<RecordedRequest> {
        self.st()
            .requests
            .iter()
            .rev()
            .find(|r| r.path.ends_with(path_suffix))
            .cloned()
    }

    pub fn clear_requests(&self) {
        let mut st = self.st();
        st.requests.clear();
        st.authorize_requests.clear();
    }

    pub fn authorize_requests(&self) -> Vec<AuthorizeRequest> {
        self.st().authorize_requests.clone()
    }

    /// Tokens posted to the revocation endpoint, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.st().revoked.clone()
    }

    /// Every refresh and access token issued so far (to look for them where they must not be).
    pub fn issued_tokens(&self) -> Vec<String> {
        let st = self.st();
        st.refresh_tokens
            .keys()
            .chain(st.access_tokens.keys())
            .cloned()
            .collect()
    }

    pub fn refresh_token_status(&self, token: &str) -> TokenStatus {
        self.st()
            .refresh_tokens
            .get(token)
            .map_or(TokenStatus::Unknown, |t| t.status)
    }

    /// Revoke every grant (the user signed out elsewhere, or an admin revoked sessions).
    pub fn revoke_all_grants(&self) {
        let mut st = self.st();
        let ids: Vec<u64> = st.grants.keys().copied().collect();
        for id in ids {
            st.revoke_grant(id);
        }
    }

    /// Add a key with a new kid and sign with it from now on (same algorithm as the current
    /// key). The old key stays in the JWKS unless `keep_old_keys_on_rotation` is false.
    /// Returns the new kid.
    pub fn rotate_keys(&self) -> String {
        let mut st = self.st();
        st.rotate();
        st.current_key().kid.clone()
    }

    /// The kid of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.st().current_key().kid.clone()
    }

    /// The JWKS as served now (ignoring faults).
    pub fn jwks(&self) -> Value {
        self.st().jwks()
    }

    /// Mint a signed JWT with any header and claims. `alg` missing: the ID-token alg;
    /// `kid` missing: the current key's kid (for ES384/RS256); `"kid": null`: no kid.
    /// ES384/RS256 sign with the key named by `kid` if the fake has it, else the newest key
    /// of that alg; HS256 signs with the client secret; `none` has an empty signature; any
    /// other alg is signed with the current key (a lying header).
    pub fn sign_jwt(&self, header: Value, claims: Value) -> String {
        let st = self.st();
        let mut h = match header {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if !h.contains_key("alg") {
            h.insert("alg".into(), json!(st.behaviour.id_token_alg.as_str()));
        }
        let alg = h["alg"].as_str().unwrap_or("").to_string();
        match h.get("kid") {
            Some(Value::Null) => {
                h.remove("kid");
            }
            None if alg == "ES384" || alg == "RS256" => {
                let kid = st
                    .newest_key(&alg)
                    .map(|k| k.kid.clone())
                    .unwrap_or_else(|| st.current_key().kid.clone());
                h.insert("kid".into(), json!(kid));
            }
            _ => {}
        }
        st.encode(&h, &claims, false)
    }

    /// Valid ID-token claims for `sub` as the fake would mint them now (no knobs applied
    /// except the clock), to tweak and pass to [`sign_jwt`](Self::sign_jwt).
    pub fn id_token_claims(&self, sub: &str, nonce: Option<&str>) -> Value {
        let st = self.st();
        let now = st.now();
        let mut c = json!({
            "iss": st.issuer(), "sub": sub, "aud": st.client_id, "iat": now, "exp": now + 3600, "auth_time": now,
        });
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    /// Valid back-channel logout token claims (to tweak and pass to [`sign_jwt`](Self::sign_jwt)).
    pub fn logout_token_claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let st = self.st();
        let now = st.now();
        let mut c = json!({
            "iss": st.issuer(), "aud": st.client_id, "iat": now, "exp": now + 120,
            "jti": st.random_token(16),
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        if let Some(s) = sub {
            c["sub"] = json!(s);
        }
        if let Some(s) = sid {
            c["sid"] = json!(s);
        }
        c
    }

    /// Stop listening: new connections are refused, open ones are dropped.
    pub async fn stop(&self) {
        let handle = self.server.lock().unwrap().take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
    }

    /// Listen again on the same port (stops first if running).
    pub async fn restart(&self) {
        self.stop().await;
        self.relisten();
    }

    pub fn stop_blocking(&self) {
        let handle = self.server.lock().unwrap().take();
        if let Some(h) = handle {
            h.abort();
            let rt = self
                .own_runtime
                .as_ref()
                .expect("stop_blocking needs start_blocking");
            let _ = rt.block_on(h);
        }
    }

    pub fn restart_blocking(&self) {
        self.stop_blocking();
        self.relisten();
    }

    fn relisten(&self) {
        let listener = bind(self.port());
        let h = self.runtime.spawn(serve(listener, self.state.clone()));
        *self.server.lock().unwrap() = Some(h);
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(h) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
        if let Some(rt) = self.own_runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `path?query` of a URL (for Rocket's local client).
pub fn path_and_query(url: &str) -> String {
    let u = url::Url::parse(url).expect("absolute URL");
    match u.query() {
        Some(q) => format!("{}?{}", u.path(), q),
        None => u.path().to_string(),
    }
}

/// Decode the claims of a JWT without verifying it.
pub fn jwt_claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("JWT with a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload"))
        .expect("JSON payload")
}

/// Decode the header of a JWT without verifying it.
pub fn jwt_header(jwt: &str) -> Value {
    let part = jwt.split('.').next().expect("JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url header"))
        .expect("JSON header")
}

/// A PKCE pair `(verifier, S256 challenge)` for tests that build authorization URLs by hand.
pub fn pkce_pair() -> (String, String) {
    let mut buf = [0u8; 32];
    SystemRandom::new().fill(&mut buf).expect("rng");
    let verifier = b64(&buf);
    let challenge = b64(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
    (verifier, challenge)
}
