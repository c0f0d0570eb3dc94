//! JWT verification: one path for every token this crate accepts (ID tokens, back-channel
//! logout tokens) and for the JWT access tokens an API guard accepts.
//!
//! A token passes when it is a compact JWS whose algorithm is on discovery's allow-list
//! (never `none`, never a shared secret), signed by the one key of Logto's JWKS it selects,
//! and its claims follow the rules of its [`Kind`]. The signature check itself is
//! `openidconnect`'s (`JsonWebKey::verify_signature`); this module picks the key and
//! checks the header and claims.
//!
//! Key selection: a `kid` picks the key with that id; no `kid` is accepted only when
//! exactly one of Logto's keys fits the algorithm (trying each key would let a token
//! choose among keys). A token whose key is missing makes one refetch of the JWKS, through
//! the global rate limit of [`Jwks::refetch`].

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse, JwsSigningAlgorithm};
use serde_json::{Map, Value};

use crate::error::LogtoError;
use crate::oidc::jwks::Jwks;
use crate::util::clock::now;

/// The `events` member that makes a JWT a logout token.
pub(crate) const BACKCHANNEL_LOGOUT_EVENT: &str =
    "http://schemas.openid.net/event/backchannel-logout";

/// What a token is, and so which rules its header and claims follow.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    /// An ID token for this app (OIDC Core 3.1.3.7): `aud` is the app id alone, `azp` (if
    /// any) the app id, a `sub`, and the `nonce` of the sign-in when one was sent.
    Id { nonce: Option<&'a str> },
    /// A back-channel logout token for this app (OIDC Back-Channel Logout 1.0, 2.6): `aud`
    /// as for ID tokens, the back-channel event, no `nonce`, a `sub` or a `sid`, a `jti`.
    Logout,
    /// A JWT access token for an API (RFC 9068): `typ` `at+jwt` when it has a `typ`, a
    /// `sub`, `client_id` and `jti`. What it is for (its audience, organization and scopes)
    /// is checked per route by [`check_target`], also on tokens verified before.
    Access,
}

impl Kind<'_> {
    /// `typ` values (lower-case, without `application/`) accepted; `None` in the list
    /// means the header may leave `typ` out.
    fn types(&self) -> &'static [Option<&'static str>] {
        match self {
            Kind::Id { .. } => &[None, Some("jwt"), Some("jose")],
            Kind::Logout => &[None, Some("jwt"), Some("jose"), Some("logout+jwt")],
            // RFC 9068 4: anything else (an ID token typed `JWT` above all) is refused; an
            // untyped ID token still fails for want of this API's audience and `client_id`.
            Kind::Access => &[None, Some("at+jwt")],
        }
    }
}

/// What every token must match, whatever its kind.
pub(crate) struct Expected<'a> {
    /// Logto's issuer, `<endpoint>/oidc`.
    pub issuer: &'a str,
    /// This app's id.
    pub client_id: &'a str,
    /// Allowed clock difference with Logto, seconds.
    pub skew: i64,
    /// Signing algorithms allowed, from discovery.
    pub algs: &'a [CoreJwsSigningAlgorithm],
}

/// Why a token was not accepted.
#[derive(Debug)]
pub(crate) enum JwtError {
    /// The token fails a check; the text says which ("it has expired"), for a 400 answer.
    Rejected(String),
    /// Logto's keys could not be fetched again to look for the token's key.
    Keys(LogtoError),
}

fn rejected(why: impl Into<String>) -> JwtError {
    JwtError::Rejected(why.into())
}

/// Verifies `raw` as a token of `kind` signed by one of `jwks`'s keys; returns its claims.
pub(crate) async fn verify(
    raw: &str,
    kind: Kind<'_>,
    expected: &Expected<'_>,
    jwks: &Arc<Jwks>,
) -> Result<Map<String, Value>, JwtError> {
    let jws = Jws::parse(raw)?;
    let (alg, kid) = check_header(&jws.header, kind, expected)?;
    let key = select_key(jwks, &alg, kid.as_deref()).await?;
    key.verify_signature(&alg, jws.signed.as_bytes(), &jws.signature)
        .map_err(|_| rejected("its signature is invalid"))?;
    let claims = match serde_json::from_slice(&jws.payload) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(rejected("its claims are not a JSON object")),
    };
    check_common_claims(&claims, expected, now())?;
    check_kind_claims(&claims, kind, expected)?;
    Ok(claims)
}

/// A compact JWS split and decoded, not verified yet.
struct Jws<'a> {
    header: Map<String, Value>,
    /// `<header>.<payload>` as received: what the signature covers.
    signed: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    fn parse(raw: &'a str) -> Result<Jws<'a>, JwtError> {
        let malformed = || rejected("it is not a well-formed JWT");
        let mut parts = raw.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed());
        let header = match serde_json::from_slice(&decode(header)?) {
            Ok(Value::Object(header)) => header,
            _ => return Err(rejected("its header is not a JSON object")),
        };
        Ok(Jws {
            header,
            signed: &raw[..raw.len() - signature.len() - 1],
            payload: decode(payload)?,
            signature: decode(signature)?,
        })
    }
}

/// Checks `alg`, `typ`, `crit` and `cty`; returns the algorithm and the key id.
fn check_header(
    header: &Map<String, Value>,
    kind: Kind<'_>,
    expected: &Expected<'_>,
) -> Result<(CoreJwsSigningAlgorithm, Option<String>), JwtError> {
    let alg: CoreJwsSigningAlgorithm = header
        .get("alg")
        .filter(|alg| alg.is_string())
        .and_then(|alg| serde_json::from_value(alg.clone()).ok())
        .ok_or_else(|| rejected("its algorithm is unknown"))?;
    // The allow-list comes from discovery, which never lists these; refuse them here too.
    let asymmetric = alg != CoreJwsSigningAlgorithm::None && !alg.uses_shared_secret();
    if !asymmetric || !expected.algs.contains(&alg) {
        return Err(rejected(
            "its signing algorithm is not one Logto advertises",
        ));
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.to_ascii_lowercase()),
        Some(_) => return Err(rejected("its type (typ) is not a string")),
    };
    let typ = typ
        .as_deref()
        .map(|t| t.strip_prefix("application/").unwrap_or(t));
    if !kind.types().contains(&typ) {
        return Err(rejected("its type (typ) is not the expected one"));
    }
    if header.contains_key("crit") {
        return Err(rejected(
            "it marks header fields as critical (crit), which this app does not support",
        ));
    }
    if header.contains_key("cty") {
        return Err(rejected(
            "it declares a content type (cty), which this app does not support",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(rejected("its key id (kid) is not a string")),
    };
    Ok((alg, kid))
}

/// Whether `key` may verify a signature made with `alg` (its `use`, type and `alg`).
fn fits(key: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    let may_sign = key.key_use().is_none_or(|u| u.allows_signature());
    let same_type = alg.key_type().as_ref() == Some(key.key_type());
    let same_alg = match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Algorithm(key_alg) => key_alg == alg,
        JsonWebKeyAlgorithm::Unsupported => false,
    };
    may_sign && same_type && same_alg
}

/// The one key that verifies the token, refetching the JWKS once if it is missing.
async fn select_key(
    jwks: &Arc<Jwks>,
    alg: &CoreJwsSigningAlgorithm,
    kid: Option<&str>,
) -> Result<CoreJsonWebKey, JwtError> {
    let mut refetched = false;
    loop {
        let keys = jwks.keys();
        let candidates: Vec<&CoreJsonWebKey> = keys
            .keys()
            .iter()
            .filter(|key| fits(key, alg))
            .filter(|key| kid.is_none() || key.key_id().map(|id| id.as_str()) == kid)
            .collect();
        match (candidates.as_slice(), kid) {
            ([key], _) => return Ok((*key).clone()),
            ([], _) if !refetched => {
                jwks.refetch().await.map_err(JwtError::Keys)?;
                refetched = true;
            }
            ([], Some(_)) => return Err(rejected("no key of Logto's matches its key id")),
            ([], None) => return Err(rejected("no key of Logto's fits its algorithm")),
            (_, None) => return Err(rejected("it names no key id and Logto has several keys")),
            (_, Some(_)) => return Err(rejected("several of Logto's keys have its key id")),
        }
    }
}

/// A NumericDate claim (seconds; fractions are cut off). `Err` when present but not a
/// number.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ()> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(()),
    }
}

/// The `exp` of verified claims (seconds since the epoch).
pub(crate) fn expiry(claims: &Map<String, Value>) -> Option<i64> {
    numeric_date(claims, "exp").ok().flatten()
}

/// `iss`, `exp`, `iat` and `nbf`, with `skew` seconds of tolerance.
fn check_common_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
    now: i64,
) -> Result<(), JwtError> {
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(rejected("its issuer (iss) is not the configured Logto"));
    }
    let skew = expected.skew;
    match numeric_date(claims, "exp") {
        Ok(Some(exp)) if exp > now - skew => {}
        Ok(Some(_)) => return Err(rejected("it has expired")),
        _ => return Err(rejected("it has no expiry (exp)")),
    }
    match numeric_date(claims, "iat") {
        Ok(Some(iat)) if iat <= now + skew => {}
        Ok(Some(_)) => return Err(rejected("it is issued in the future")),
        _ => return Err(rejected("it has no issue time (iat)")),
    }
    match numeric_date(claims, "nbf") {
        Ok(None) => {}
        Ok(Some(nbf)) if nbf <= now + skew => {}
        Ok(Some(_)) => return Err(rejected("it is not valid yet (nbf)")),
        Err(()) => return Err(rejected("its not-before time (nbf) is not a number")),
    }
    Ok(())
}

/// `aud` as a list (one string or an array of strings on the wire); empty when it is
/// missing or holds anything but strings.
fn audiences(claims: &Map<String, Value>) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn text<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Tokens for this app: its id among the audiences, and no other audience (another
/// audience could replay its copy of the token here).
fn check_for_this_app(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<(), JwtError> {
    let auds = audiences(claims);
    if !auds.contains(&expected.client_id) {
        return Err(rejected("it is not meant for this app (aud)"));
    }
    if auds.iter().any(|aud| *aud != expected.client_id) {
        return Err(rejected(
            "it is meant for another audience too (aud), which this app does not trust",
        ));
    }
    Ok(())
}

fn check_kind_claims(
    claims: &Map<String, Value>,
    kind: Kind<'_>,
    expected: &Expected<'_>,
) -> Result<(), JwtError> {
    match kind {
        Kind::Id { nonce } => {
            check_for_this_app(claims, expected)?;
            if claims
                .get("azp")
                .is_some_and(|azp| azp.as_str() != Some(expected.client_id))
            {
                return Err(rejected("its authorized party (azp) is not this app"));
            }
            if text(claims, "sub").is_none() {
                return Err(rejected("it has no valid subject (sub)"));
            }
            if let Some(sent) = nonce {
                let echoed = claims.get("nonce").and_then(Value::as_str);
                if !echoed.is_some_and(|echoed| same_secret(echoed, sent)) {
                    return Err(rejected("its nonce does not match this sign-in"));
                }
            }
        }
        Kind::Logout => {
            check_for_this_app(claims, expected)?;
            let is_logout = claims
                .get("events")
                .and_then(Value::as_object)
                .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
                .is_some_and(Value::is_object);
            if !is_logout {
                return Err(rejected("it is not a back-channel logout event"));
            }
            if claims.contains_key("nonce") {
                return Err(rejected("it carries a nonce, which logout tokens must not"));
            }
            if text(claims, "sub").is_none() && text(claims, "sid").is_none() {
                return Err(rejected(
                    "it names neither a user (sub) nor a session (sid)",
                ));
            }
            if text(claims, "jti").is_none() {
                return Err(rejected("it has no token id (jti)"));
            }
        }
        Kind::Access => {
            for name in ["sub", "client_id", "jti"] {
                if text(claims, name).is_none() {
                    return Err(rejected(format!("it has no {name}")));
                }
            }
        }
    }
    Ok(())
}

/// What a route of an API accepts an access token for (RFC 9068 4, Logto's three
/// permission models).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A global API resource: `aud` has the indicator, and the token is not narrowed to an
    /// organization (such a token carries the user's roles *in* that organization).
    Resource(&'a str),
    /// An organization token: `aud` has `urn:logto:organization:<id>` (the argument).
    Organization(&'a str),
    /// An organization-level API resource: `aud` has the indicator and `organization_id`
    /// is the organization.
    OrganizationResource {
        indicator: &'a str,
        organization: &'a str,
    },
}

/// Why a verified access token does not open a route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TargetError<'s> {
    /// Not meant for this route (RFC 6750 `invalid_token`); the text says why.
    Invalid(&'static str),
    /// Meant for it, but without these scopes (RFC 6750 `insufficient_scope`).
    Scopes(Vec<&'s str>),
}

/// The scopes of an access token (its space-separated `scope`).
pub(crate) fn scopes(claims: &Map<String, Value>) -> crate::claims::Scopes<'_> {
    crate::claims::Scopes::new(text(claims, "scope").unwrap_or_default())
}

/// Checks the claims of a verified access token against what a route accepts: audience,
/// organization, then every scope of `required`.
pub(crate) fn check_target<'s>(
    claims: &Map<String, Value>,
    target: Target<'_>,
    required: &[&'s str],
) -> Result<(), TargetError<'s>> {
    let auds = audiences(claims);
    let organization = claims.get("organization_id");
    match target {
        Target::Resource(indicator) => {
            if !auds.contains(&indicator) {
                return Err(TargetError::Invalid("it is not meant for this API (aud)"));
            }
            if organization.is_some() {
                return Err(TargetError::Invalid(
                    "it is narrowed to an organization (organization_id), and this route is not",
                ));
            }
        }
        Target::Organization(id) => {
            let urn = crate::claims::organization_urn(id);
            if !auds.contains(&urn.as_str()) {
                return Err(TargetError::Invalid(
                    "it is not an organization token for this organization (aud)",
                ));
            }
        }
        Target::OrganizationResource {
            indicator,
            organization: id,
        } => {
            if !auds.contains(&indicator) {
                return Err(TargetError::Invalid("it is not meant for this API (aud)"));
            }
            if organization.and_then(Value::as_str) != Some(id) {
                return Err(TargetError::Invalid(
                    "it is not narrowed to this organization (organization_id)",
                ));
            }
        }
    }
    let missing: Vec<&'s str> = required
        .iter()
        .copied()
        .filter(|need| !scopes(claims).any(|s| s == *need))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TargetError::Scopes(missing))
    }
}

/// Compares secrets without an early exit that would time how much of them matched.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::discovery::tests::MiniLogto;
    use openidconnect::core::CoreJsonWebKeySet;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    use serde_json::json;
    use std::time::Duration;

    const ISSUER: &str = "https://tenant.logto.app/oidc";
    const APP: &str = "app-1";
    const API: &str = "https://api.example.com";

    struct Signer {
        kid: String,
        pair: EcdsaKeyPair,
    }

    impl Signer {
        fn new(kid: &str) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Signer {
                kid: kid.into(),
                pair,
            }
        }

        fn jwk(&self) -> Value {
            let point = self.pair.public_key().as_ref();
            json!({
                "kty": "EC", "crv": "P-384", "kid": self.kid, "use": "sig", "alg": "ES384",
                "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
                "y": URL_SAFE_NO_PAD.encode(&point[49..97]),
            })
        }

        fn sign(&self, header: Value, claims: Value) -> String {
            let mut h = json!({ "alg": "ES384", "kid": self.kid });
            for (k, v) in header.as_object().unwrap() {
                if v.is_null() {
                    h.as_object_mut().unwrap().remove(k);
                } else {
                    h[k] = v.clone();
                }
            }
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(h.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    /// These keys, refetched (when a key is missing) from a Logto that has none of them.
    async fn jwks(signers: &[&Signer]) -> Arc<Jwks> {
        let set: CoreJsonWebKeySet = serde_json::from_value(
            json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }),
        )
        .unwrap();
        let logto = MiniLogto::start().await;
        Arc::new(Jwks::new(
            set,
            logto.url("/oidc/jwks"),
            reqwest::Client::new(),
            Duration::from_secs(3600),
        ))
    }

    const ALGS: &[CoreJwsSigningAlgorithm] = &[CoreJwsSigningAlgorithm::EcdsaP384Sha384];

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: APP,
            skew: 60,
            algs: ALGS,
        }
    }

    fn id_claims() -> Value {
        let now = now();
        json!({ "iss": ISSUER, "aud": APP, "sub": "user-1", "iat": now, "exp": now + 3600, "nonce": "n-1" })
    }

    fn access_claims() -> Value {
        let now = now();
        json!({ "iss": ISSUER, "aud": API, "sub": "user-1", "client_id": APP, "jti": "j",
                "scope": "read write", "iat": now, "exp": now + 3600 })
    }

    async fn check(kind: Kind<'_>, token: &str, jwks: &Arc<Jwks>) -> Result<(), String> {
        match verify(token, kind, &expected(), jwks).await {
            Ok(_) => Ok(()),
            Err(JwtError::Rejected(why)) => Err(why),
            Err(JwtError::Keys(e)) => Err(format!("keys: {}", e.detail())),
        }
    }

    const ID: Kind<'static> = Kind::Id { nonce: Some("n-1") };
    const ACCESS: Kind<'static> = Kind::Access;

    #[tokio::test]
    async fn no_kid_is_accepted_with_one_fitting_key_only() {
        let (a, b) = (Signer::new("a"), Signer::new("b"));
        let token = a.sign(json!({ "kid": null }), id_claims());
        assert_eq!(check(ID, &token, &jwks(&[&a]).await).await, Ok(()));
        let several = check(ID, &token, &jwks(&[&b, &a]).await).await.unwrap_err();
        assert!(several.contains("no key id"), "{several}");
        // With its kid, the right one of several keys is used.
        let token = a.sign(json!({}), id_claims());
        assert_eq!(check(ID, &token, &jwks(&[&b, &a]).await).await, Ok(()));
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refused_after_the_refetch() {
        let (a, b) = (Signer::new("a"), Signer::new("b"));
        let token = a.sign(json!({}), id_claims());
        let why = check(ID, &token, &jwks(&[&b]).await).await.unwrap_err();
        assert!(
            why.contains("no key of Logto's matches its key id"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn the_header_is_checked_before_any_key() {
        let a = Signer::new("a");
        let keys = jwks(&[&a]).await;
        for (header, why) in [
            (json!({ "alg": "none" }), "algorithm"),
            (json!({ "alg": "HS256" }), "algorithm"),
            (json!({ "alg": "RS256" }), "algorithm"),
            (json!({ "alg": 7 }), "algorithm"),
            (json!({ "crit": ["exp"] }), "crit"),
            (json!({ "cty": "JWT" }), "cty"),
            (json!({ "kid": 1 }), "key id"),
            (json!({ "typ": "at+jwt" }), "typ"),
        ] {
            let token = a.sign(header.clone(), id_claims());
            let got = check(ID, &token, &keys).await.unwrap_err();
            assert!(got.contains(why), "{header}: {got}");
        }
        // An allow-list that (wrongly) holds a shared-secret algorithm changes nothing.
        let hs = [CoreJwsSigningAlgorithm::HmacSha256];
        let e = Expected {
            algs: &hs,
            ..expected()
        };
        let token = a.sign(json!({ "alg": "HS256" }), id_claims());
        assert!(verify(&token, ID, &e, &keys).await.is_err());
        let padded = format!("{token}=");
        for malformed in ["", "a.b", "a.b.c.d", "!!.e30.e30", padded.as_str()] {
            assert!(check(ID, malformed, &keys).await.is_err(), "{malformed}");
        }
    }

    #[tokio::test]
    async fn id_token_claims() {
        let a = Signer::new("a");
        let keys = jwks(&[&a]).await;
        let now = now();
        for (patch, why) in [
            (json!({ "iss": "https://evil.example/oidc" }), "iss"),
            (json!({ "aud": "other" }), "aud"),
            (json!({ "aud": [APP, "other"] }), "aud"),
            (json!({ "azp": "other" }), "azp"),
            (json!({ "sub": null }), "sub"),
            (json!({ "sub": "" }), "sub"),
            (json!({ "iat": null }), "iat"),
            (json!({ "iat": now + 120 }), "future"),
            (json!({ "exp": null }), "exp"),
            (json!({ "exp": now - 61 }), "expired"),
            (json!({ "nbf": now + 120 }), "nbf"),
            (json!({ "nonce": "n-2" }), "nonce"),
            (json!({ "nonce": null }), "nonce"),
        ] {
            let mut claims = id_claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            let got = check(ID, &a.sign(json!({}), claims), &keys).await;
            assert!(
                got.as_ref().is_err_and(|g| g.contains(why)),
                "{patch}: {got:?}"
            );
        }
        // Within the skew, and without an expected nonce (a refresh), it passes.
        let mut claims = id_claims();
        claims["exp"] = json!(now - 30);
        claims["azp"] = json!(APP);
        let token = a.sign(json!({ "typ": "JWT" }), claims);
        assert_eq!(check(ID, &token, &keys).await, Ok(()));
        assert_eq!(check(Kind::Id { nonce: None }, &token, &keys).await, Ok(()));
    }

    #[tokio::test]
    async fn access_token_rules_reuse_the_same_signature_and_key_checks() {
        let a = Signer::new("a");
        let keys = jwks(&[&a]).await;
        let good = a.sign(json!({ "typ": "at+jwt" }), access_claims());
        assert_eq!(check(ACCESS, &good, &keys).await, Ok(()));
        let typed = a.sign(json!({ "typ": "application/AT+JWT" }), access_claims());
        assert_eq!(check(ACCESS, &typed, &keys).await, Ok(()));
        // `typ` is checked where present: an untyped token passes this step.
        let no_typ = a.sign(json!({}), access_claims());
        assert_eq!(check(ACCESS, &no_typ, &keys).await, Ok(()));
        // An ID token is not an access token, typed or not.
        let id = a.sign(json!({ "typ": "JWT" }), id_claims());
        assert!(check(ACCESS, &id, &keys).await.unwrap_err().contains("typ"));
        let id = a.sign(json!({}), id_claims());
        assert!(check(ACCESS, &id, &keys)
            .await
            .unwrap_err()
            .contains("client_id"));
        for (patch, why) in [
            (json!({ "client_id": null }), "client_id"),
            (json!({ "sub": "" }), "sub"),
            (json!({ "jti": null }), "jti"),
            (json!({ "exp": now() - 3600 }), "expired"),
            (json!({ "nbf": now() + 3600 }), "nbf"),
            (json!({ "iss": "https://evil.example/oidc" }), "iss"),
        ] {
            let mut claims = access_claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            let got = check(ACCESS, &a.sign(json!({ "typ": "at+jwt" }), claims), &keys).await;
            assert!(
                got.as_ref().is_err_and(|g| g.contains(why)),
                "{patch}: {got:?}"
            );
        }
        // The signature is checked for access tokens too.
        let other = Signer::new("a");
        let forged = other.sign(json!({ "typ": "at+jwt" }), access_claims());
        assert!(check(ACCESS, &forged, &keys)
            .await
            .unwrap_err()
            .contains("signature"));
    }

    fn claims_of(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    type Case<'a> = (
        &'a Map<String, Value>,
        Target<'a>,
        &'a [&'a str],
        Result<(), TargetError<'a>>,
    );

    #[test]
    fn targets_check_audience_organization_and_scopes() {
        use TargetError::*;
        let resource = claims_of(access_claims());
        let mut org_resource = resource.clone();
        org_resource.insert("organization_id".into(), json!("org-1"));
        let mut org = resource.clone();
        org.insert("aud".into(), json!(["urn:logto:organization:org-1"]));
        let here = Target::OrganizationResource {
            indicator: API,
            organization: "org-1",
        };
        let cases: Vec<Case> = vec![
            (&resource, Target::Resource(API), &["read"], Ok(())),
            (&resource, Target::Resource(API), &["read", "write"], Ok(())),
            (
                &resource,
                Target::Resource(API),
                &["read", "admin", "x"],
                Err(Scopes(vec!["admin", "x"])),
            ),
            (
                &resource,
                Target::Resource("https://other"),
                &[],
                Err(Invalid("it is not meant for this API (aud)")),
            ),
            (
                &org_resource,
                Target::Resource(API),
                &[],
                Err(Invalid(
                    "it is narrowed to an organization (organization_id), and this route is not",
                )),
            ),
            (&org_resource, here, &["read"], Ok(())),
            (
                &org_resource,
                Target::OrganizationResource {
                    indicator: API,
                    organization: "org-2",
                },
                &[],
                Err(Invalid(
                    "it is not narrowed to this organization (organization_id)",
                )),
            ),
            (
                &resource,
                here,
                &[],
                Err(Invalid(
                    "it is not narrowed to this organization (organization_id)",
                )),
            ),
            (&org, Target::Organization("org-1"), &["write"], Ok(())),
            (
                &org,
                Target::Organization("org-2"),
                &[],
                Err(Invalid(
                    "it is not an organization token for this organization (aud)",
                )),
            ),
            (
                &org,
                Target::Resource(API),
                &[],
                Err(Invalid("it is not meant for this API (aud)")),
            ),
            (
                &resource,
                Target::Organization("org-1"),
                &[],
                Err(Invalid(
                    "it is not an organization token for this organization (aud)",
                )),
            ),
        ];
        for (claims, target, required, expected) in cases {
            assert_eq!(
                check_target(claims, target, required),
                expected,
                "{target:?} {required:?}"
            );
        }
        // A scope is a whole word of `scope`, never a part of one.
        let mut partial = resource.clone();
        partial.insert("scope".into(), json!("readers  write"));
        assert_eq!(
            check_target(&partial, Target::Resource(API), &["read"]),
            Err(Scopes(vec!["read"]))
        );
        assert_eq!(scopes(&partial).collect::<Vec<_>>(), ["readers", "write"]);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
