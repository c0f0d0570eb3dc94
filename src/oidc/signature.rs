//! JWS signature checks with aws-lc-rs: the public key of one of Logto's JWKs, parsed once
//! when the key set is fetched, and the check of a token's signature against it.
//!
//! Which key a token selects, and whether the algorithm is allowed at all, is decided in
//! `jwt.rs` (from the header and discovery's allow-list). This module only answers whether
//! the signature is good. It accepts what `openidconnect`'s `JsonWebKey::verify_signature`
//! accepted, but for RSA keys under 2048 bits (RFC 7518 3.3 requires 2048 or more, and
//! aws-lc-rs verifies no smaller key); the differential test below holds the two side by
//! side.
//!
//! - ES256 and ES384: a P-256 or P-384 key (`x` and `y` of the field's size), the signature
//!   as JOSE sends it, `r‖s` of fixed size (never DER).
//! - RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS, salt of the hash's size): keys of
//!   2048 to 4096 bits (the ceiling is `rsa`'s, which `openidconnect` used).
//! - EdDSA with an Ed25519 key.
//!
//! ES512 is not verified, as before: Logto never signs with it.

use aws_lc_rs::signature::{
    self as lc, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse, JwsSigningAlgorithm};
use serde_json::Value;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Largest RSA modulus accepted, in bits.
const RSA_MAX_BITS: u32 = 4096;

/// The public key of one JWK, parsed for each algorithm it may verify.
pub(crate) struct PublicKey {
    parsed: Vec<(CoreJwsSigningAlgorithm, ParsedPublicKey)>,
}

/// The signature does not verify, or the key cannot verify that algorithm.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadSignature;

impl PublicKey {
    /// Parses `jwk`'s key material. A key that is malformed, of an unsupported type or
    /// curve, or of the wrong size parses to a key that verifies nothing: it still counts
    /// when a token's key is selected, as before, and its tokens fail as badly signed.
    pub fn parse(jwk: &CoreJsonWebKey) -> PublicKey {
        // The key material is private in `CoreJsonWebKey`; its JSON form has it, and this
        // runs once per key set fetched.
        let json = serde_json::to_value(jwk).unwrap_or(Value::Null);
        let member = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
        };
        let algs: Vec<CoreJwsSigningAlgorithm> = match jwk.signing_alg() {
            _ if jwk.key_use().is_some_and(|u| !u.allows_signature()) => Vec::new(),
            JsonWebKeyAlgorithm::Algorithm(alg) => vec![alg.clone()],
            JsonWebKeyAlgorithm::Unspecified => ALL.to_vec(),
            JsonWebKeyAlgorithm::Unsupported => Vec::new(),
        };
        let parsed = algs
            .into_iter()
            .filter(|alg| alg.key_type().as_ref() == Some(jwk.key_type()))
            .filter_map(|alg| {
                let key = match verifier(&alg)? {
                    Verifier::Ec(params, curve, size) => {
                        if json.get("crv").and_then(Value::as_str) != Some(curve) {
                            return None;
                        }
                        let (x, y) = (member("x")?, member("y")?);
                        if x.len() != size || y.len() != size {
                            return None;
                        }
                        let point = [&[0x04][..], &x, &y].concat();
                        ParsedPublicKey::new(params, point).ok()?
                    }
                    Verifier::Rsa(params) => {
                        let (n, e) = (member("n")?, member("e")?);
                        // JWA writes them unsigned, big-endian; aws-lc-rs wants no leading zero.
                        let n = without_leading_zeros(&n);
                        let e = without_leading_zeros(&e);
                        if n.is_empty() || bits(n) > RSA_MAX_BITS {
                            return None;
                        }
                        RsaPublicKeyComponents { n, e }
                            .to_parsed_public_key(params)
                            .ok()?
                    }
                    Verifier::Ed25519 => {
                        let x = member("x")?;
                        // The raw key only: aws-lc-rs would also read a DER-wrapped one.
                        if json.get("crv").and_then(Value::as_str) != Some("Ed25519")
                            || x.len() != 32
                        {
                            return None;
                        }
                        ParsedPublicKey::new(&lc::ED25519, x).ok()?
                    }
                };
                Some((alg, key))
            })
            .collect();
        PublicKey { parsed }
    }

    /// Checks `signature` over `message` (a JWS's `<header>.<payload>`) made with `alg`.
    pub fn verify(
        &self,
        alg: &CoreJwsSigningAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), BadSignature> {
        let (_, key) = self
            .parsed
            .iter()
            .find(|(parsed_for, _)| parsed_for == alg)
            .ok_or(BadSignature)?;
        key.verify_sig(message, signature).map_err(|_| BadSignature)
    }
}

/// The asymmetric algorithms a key without `alg` is parsed for.
const ALL: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

enum Verifier {
    /// The algorithm, the JWK `crv`, and the size of `x` and `y` in bytes.
    Ec(&'static dyn VerificationAlgorithm, &'static str, usize),
    Rsa(&'static RsaParameters),
    Ed25519,
}

fn verifier(alg: &CoreJwsSigningAlgorithm) -> Option<Verifier> {
    use CoreJwsSigningAlgorithm as A;
    Some(match alg {
        A::EcdsaP384Sha384 => Verifier::Ec(&lc::ECDSA_P384_SHA384_FIXED, "P-384", 48),
        A::EcdsaP256Sha256 => Verifier::Ec(&lc::ECDSA_P256_SHA256_FIXED, "P-256", 32),
        A::RsaSsaPkcs1V15Sha256 => Verifier::Rsa(&lc::RSA_PKCS1_2048_8192_SHA256),
        A::RsaSsaPkcs1V15Sha384 => Verifier::Rsa(&lc::RSA_PKCS1_2048_8192_SHA384),
        A::RsaSsaPkcs1V15Sha512 => Verifier::Rsa(&lc::RSA_PKCS1_2048_8192_SHA512),
        A::RsaSsaPssSha256 => Verifier::Rsa(&lc::RSA_PSS_2048_8192_SHA256),
        A::RsaSsaPssSha384 => Verifier::Rsa(&lc::RSA_PSS_2048_8192_SHA384),
        A::RsaSsaPssSha512 => Verifier::Rsa(&lc::RSA_PSS_2048_8192_SHA512),
        A::EdDsa => Verifier::Ed25519,
        _ => return None,
    })
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bits of a big-endian number without leading zero bytes.
fn bits(n: &[u8]) -> u32 {
    (n.len() as u32 - 1) * 8 + (8 - n[0].leading_zeros())
}

/// The differential test: on every case the issue lists, the new check accepts exactly what
/// `openidconnect`'s `JsonWebKey::verify_signature` (the check before it, still in the tree)
/// accepts, but for the one intended difference, RSA keys under 2048 bits.
#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair};
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _};
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPrivateKey;
    use serde_json::json;

    use CoreJwsSigningAlgorithm as A;

    const P384_ORDER: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";
    const P256_ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

    const RSA_A: &[u8] = include_bytes!("../../tests/support/keys/rsa-2048-a.pk8.der");
    const RSA_B: &[u8] = include_bytes!("../../tests/support/keys/rsa-2048-b.pk8.der");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `a - b` of two big-endian numbers of one length (`a >= b`).
    fn sub(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; a.len()];
        let mut borrow = 0i16;
        for i in (0..a.len()).rev() {
            let mut d = a[i] as i16 - b[i] as i16 - borrow;
            borrow = (d < 0) as i16;
            if d < 0 {
                d += 256;
            }
            out[i] = d as u8;
        }
        out
    }

    /// `a + b` of two big-endian numbers of one length, modulo 2^(8 len).
    fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; a.len()];
        let mut carry = 0u16;
        for i in (0..a.len()).rev() {
            let s = a[i] as u16 + b[i] as u16 + carry;
            out[i] = s as u8;
            carry = s >> 8;
        }
        out
    }

    enum Signer {
        Ec {
            fixed: EcdsaKeyPair,
            der: EcdsaKeyPair,
            crv: &'static str,
        },
        Rsa(Box<RsaPrivateKey>),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        fn ec(
            fixed: &'static EcdsaSigningAlgorithm,
            der: &'static EcdsaSigningAlgorithm,
            crv: &'static str,
        ) -> Signer {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(fixed, &SystemRandom::new()).unwrap();
            Signer::Ec {
                fixed: EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref()).unwrap(),
                der: EcdsaKeyPair::from_pkcs8(der, pkcs8.as_ref()).unwrap(),
                crv,
            }
        }

        fn p384() -> Signer {
            Signer::ec(
                &lc::ECDSA_P384_SHA384_FIXED_SIGNING,
                &lc::ECDSA_P384_SHA384_ASN1_SIGNING,
                "P-384",
            )
        }

        fn p256() -> Signer {
            Signer::ec(
                &lc::ECDSA_P256_SHA256_FIXED_SIGNING,
                &lc::ECDSA_P256_SHA256_ASN1_SIGNING,
                "P-256",
            )
        }

        /// One of the tests' 2048-bit keys (quicker than making one).
        fn rsa(pkcs8: &[u8]) -> Signer {
            Signer::Rsa(Box::new(RsaPrivateKey::from_pkcs8_der(pkcs8).unwrap()))
        }

        fn rsa_of(bits: usize) -> Signer {
            Signer::Rsa(Box::new(
                RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap(),
            ))
        }

        fn ed25519() -> Signer {
            Signer::Ed(Ed25519KeyPair::generate().unwrap())
        }

        /// The JWK, without `alg` (so that one key serves several algorithms).
        fn jwk(&self) -> Value {
            match self {
                Signer::Ec { fixed, crv, .. } => {
                    let point = fixed.public_key().as_ref();
                    let size = (point.len() - 1) / 2;
                    json!({ "kty": "EC", "crv": crv, "use": "sig",
                            "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..]) })
                }
                Signer::Rsa(key) => json!({ "kty": "RSA", "use": "sig",
                    "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()) }),
                Signer::Ed(pair) => json!({ "kty": "OKP", "crv": "Ed25519", "use": "sig",
                    "x": b64(pair.public_key().as_ref()) }),
            }
        }

        fn sign(&self, alg: &CoreJwsSigningAlgorithm, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                Signer::Ec { fixed, .. } => fixed.sign(&rng, message).unwrap().as_ref().to_vec(),
                Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
                Signer::Rsa(key) => {
                    let key = (**key).clone();
                    let mut rng = rand::thread_rng();
                    match alg {
                        A::RsaSsaPkcs1V15Sha256 => {
                            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
                                .sign(message)
                                .to_vec()
                        }
                        A::RsaSsaPkcs1V15Sha384 => {
                            rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(key)
                                .sign(message)
                                .to_vec()
                        }
                        A::RsaSsaPkcs1V15Sha512 => {
                            rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key)
                                .sign(message)
                                .to_vec()
                        }
                        A::RsaSsaPssSha256 => rsa::pss::SigningKey::<sha2::Sha256>::new(key)
                            .sign_with_rng(&mut rng, message)
                            .to_vec(),
                        A::RsaSsaPssSha384 => rsa::pss::SigningKey::<sha2::Sha384>::new(key)
                            .sign_with_rng(&mut rng, message)
                            .to_vec(),
                        A::RsaSsaPssSha512 => rsa::pss::SigningKey::<sha2::Sha512>::new(key)
                            .sign_with_rng(&mut rng, message)
                            .to_vec(),
                        other => panic!("not an RSA algorithm: {other:?}"),
                    }
                }
            }
        }

        fn sign_der(&self, message: &[u8]) -> Vec<u8> {
            match self {
                Signer::Ec { der, .. } => der
                    .sign(&SystemRandom::new(), message)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                _ => panic!("DER signatures are ECDSA's"),
            }
        }
    }

    /// A message as a JWS's signing input: `<header>.<payload>`.
    fn message(alg: &str) -> Vec<u8> {
        let header = json!({ "alg": alg, "kid": "k1", "typ": "JWT" });
        let claims = json!({ "iss": "https://tenant.logto.app/oidc", "sub": "user-1",
                             "aud": "app-1", "iat": 1_700_000_000, "exp": 1_700_003_600 });
        format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
        .into_bytes()
    }

    struct Case {
        name: String,
        jwk: Value,
        alg: CoreJwsSigningAlgorithm,
        message: Vec<u8>,
        signature: Vec<u8>,
    }

    /// (accepted before, accepted now); `None` when the JWK is not even a `CoreJsonWebKey`.
    fn outcomes(case: &Case) -> Option<(bool, bool)> {
        let jwk: CoreJsonWebKey = serde_json::from_value(case.jwk.clone()).ok()?;
        let before = jwk
            .verify_signature(&case.alg, &case.message, &case.signature)
            .is_ok();
        let now = PublicKey::parse(&jwk)
            .verify(&case.alg, &case.message, &case.signature)
            .is_ok();
        Some((before, now))
    }

    fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
        serde_json::to_value(alg)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A valid signature of each kind, and the same with one bit flipped in the header,
    /// the payload and the signature, truncated and extended, and under a wrong key.
    fn cases_of(signer: &Signer, other: &Signer, alg: A, out: &mut Vec<Case>) {
        let name = alg_name(&alg);
        let message = message(&name);
        let signature = signer.sign(&alg, &message);
        let jwk = signer.jwk();
        let case = |what: &str, jwk: &Value, message: &[u8], signature: &[u8]| Case {
            name: format!("{name}: {what}"),
            jwk: jwk.clone(),
            alg: alg.clone(),
            message: message.to_vec(),
            signature: signature.to_vec(),
        };
        out.push(case("valid", &jwk, &message, &signature));
        let mut with_alg = jwk.clone();
        with_alg["alg"] = json!(name);
        out.push(case(
            "valid, the key names its alg",
            &with_alg,
            &message,
            &signature,
        ));
        let dot = message.iter().position(|b| *b == b'.').unwrap();
        for at in 0..message.len() {
            let mut flipped = message.clone();
            flipped[at] ^= 1 << (at % 8);
            let part = if at < dot { "header" } else { "payload" };
            out.push(case(
                &format!("bit {} of {part} byte {at} flipped", at % 8),
                &jwk,
                &flipped,
                &signature,
            ));
        }
        for at in 0..signature.len() {
            let mut flipped = signature.clone();
            flipped[at] ^= 1 << (at % 8);
            out.push(case(
                &format!("bit {} of signature byte {at} flipped", at % 8),
                &jwk,
                &message,
                &flipped,
            ));
        }
        out.push(case(
            "signature truncated by a byte",
            &jwk,
            &message,
            &signature[..signature.len() - 1],
        ));
        out.push(case(
            "signature without its first byte",
            &jwk,
            &message,
            &signature[1..],
        ));
        out.push(case(
            "signature extended by a zero byte",
            &jwk,
            &message,
            &[&signature[..], &[0]].concat(),
        ));
        out.push(case(
            "signature with a leading zero byte",
            &jwk,
            &message,
            &[&[0], &signature[..]].concat(),
        ));
        out.push(case("empty signature", &jwk, &message, &[]));
        out.push(case("another key", &other.jwk(), &message, &signature));
    }

    /// ECDSA's own cases: `r` or `s` zero or at or above the order, high-S, DER.
    fn ecdsa_cases(signer: &Signer, alg: A, order: &str, out: &mut Vec<Case>) {
        let name = alg_name(&alg);
        let message = message(&name);
        let signature = signer.sign(&alg, &message);
        let jwk = signer.jwk();
        let n = hex(order);
        let size = n.len();
        let (r, s) = signature.split_at(size);
        let one = {
            let mut one = vec![0u8; size];
            one[size - 1] = 1;
            one
        };
        let zero = vec![0u8; size];
        let max = vec![0xffu8; size];
        let mut push = |what: &str, signature: Vec<u8>| {
            out.push(Case {
                name: format!("{name}: {what}"),
                jwk: jwk.clone(),
                alg: alg.clone(),
                message: message.clone(),
                signature,
            })
        };
        push("r = 0", [&zero[..], s].concat());
        push("s = 0", [r, &zero[..]].concat());
        push("r = s = 0", [&zero[..], &zero[..]].concat());
        push("r = n", [&n[..], s].concat());
        push("s = n", [r, &n[..]].concat());
        push("r = n + 1", [&add(&n, &one)[..], s].concat());
        push("s = n + 1", [r, &add(&n, &one)[..]].concat());
        push("r = 2^k - 1", [&max[..], s].concat());
        push("s = 2^k - 1", [r, &max[..]].concat());
        // r + n and s + n name the same residues as r and s, when they fit in the field.
        push("r + n", [&add(r, &n)[..], s].concat());
        push("s + n", [r, &add(s, &n)[..]].concat());
        // n - s is as valid as s (ECDSA's malleability): the one of the two above n/2 is the
        // high-S form; one of these two is valid low-S, the other high-S.
        push(
            "s replaced by n - s (high-S or low-S)",
            [r, &sub(&n, s)[..]].concat(),
        );
        push("r and s swapped", [s, r].concat());
        let der = signer.sign_der(&message);
        push("DER signature", der.clone());
        let mut padded = der.clone();
        padded.resize(2 * size, 0);
        push("DER signature zero-padded to the fixed size", padded);
        push(
            "DER signature truncated to the fixed size",
            der[..der.len().min(2 * size)].to_vec(),
        );
    }

    fn all_cases() -> Vec<Case> {
        let p384 = Signer::p384();
        let p384_other = Signer::p384();
        let p256 = Signer::p256();
        let p256_other = Signer::p256();
        let rsa = Signer::rsa(RSA_A);
        let rsa_other = Signer::rsa(RSA_B);
        let rsa_small = Signer::rsa_of(1024);
        let ed = Signer::ed25519();
        let ed_other = Signer::ed25519();
        let mut out = Vec::new();
        cases_of(&p384, &p384_other, A::EcdsaP384Sha384, &mut out);
        cases_of(&p256, &p256_other, A::EcdsaP256Sha256, &mut out);
        for alg in [
            A::RsaSsaPkcs1V15Sha256,
            A::RsaSsaPkcs1V15Sha384,
            A::RsaSsaPkcs1V15Sha512,
            A::RsaSsaPssSha256,
            A::RsaSsaPssSha384,
            A::RsaSsaPssSha512,
        ] {
            cases_of(&rsa, &rsa_other, alg.clone(), &mut out);
        }
        cases_of(&ed, &ed_other, A::EdDsa, &mut out);
        ecdsa_cases(&p384, A::EcdsaP384Sha384, P384_ORDER, &mut out);
        ecdsa_cases(&p256, A::EcdsaP256Sha256, P256_ORDER, &mut out);

        // Keys of the wrong curve, type or size, each with a signature that is good for the
        // key that signed it.
        let es384 = message("ES384");
        let es384_sig = p384.sign(&A::EcdsaP384Sha384, &es384);
        let es256 = message("ES256");
        let es256_sig = p256.sign(&A::EcdsaP256Sha256, &es256);
        let rs256 = message("RS256");
        let rs256_sig = rsa.sign(&A::RsaSsaPkcs1V15Sha256, &rs256);
        let mut key_case = |what: &str, jwk: Value, alg: A, message: &[u8], sig: &[u8]| {
            out.push(Case {
                name: format!("key: {what}"),
                jwk,
                alg,
                message: message.to_vec(),
                signature: sig.to_vec(),
            })
        };
        let mut k = p384.jwk();
        k["crv"] = json!("P-256");
        key_case(
            "a P-384 key labelled P-256, ES256",
            k.clone(),
            A::EcdsaP256Sha256,
            &es384,
            &es384_sig,
        );
        key_case(
            "a P-384 key labelled P-256, ES384",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        key_case(
            "a P-256 key, ES384",
            p256.jwk(),
            A::EcdsaP384Sha384,
            &es256,
            &es256_sig,
        );
        let mut k = p256.jwk();
        k["crv"] = json!("P-384");
        key_case(
            "a P-256 key labelled P-384",
            k,
            A::EcdsaP384Sha384,
            &es256,
            &es256_sig,
        );
        let mut k = p384.jwk();
        k["crv"] = json!("P-521");
        key_case(
            "a P-384 key labelled P-521",
            k,
            A::EcdsaP521Sha512,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k["crv"] = json!("secp256k1");
        key_case(
            "a P-384 key of an unknown curve",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k.as_object_mut().unwrap().remove("crv");
        key_case(
            "a P-384 key without crv",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let point = match &p384 {
            Signer::Ec { fixed, .. } => fixed.public_key().as_ref().to_vec(),
            _ => unreachable!(),
        };
        let mut k = p384.jwk();
        let mut y = point[49..].to_vec();
        y[47] ^= 1;
        k["y"] = json!(b64(&y));
        key_case(
            "a P-384 point off the curve",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k["x"] = json!(b64(&[&[0], &point[1..49]].concat()));
        key_case(
            "a P-384 key with x of 49 bytes",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k["x"] = json!(b64(&point[2..49]));
        key_case(
            "a P-384 key with x of 47 bytes",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k.as_object_mut().unwrap().remove("y");
        key_case(
            "a P-384 key without y",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = p384.jwk();
        k["kty"] = json!("RSA");
        key_case(
            "a P-384 key typed RSA",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        key_case(
            "an RSA key, ES384",
            rsa.jwk(),
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        key_case(
            "a P-384 key, RS256",
            p384.jwk(),
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let mut k = p384.jwk();
        k["alg"] = json!("ES256");
        key_case(
            "a P-384 key whose alg is ES256",
            k,
            A::EcdsaP384Sha384,
            &es384,
            &es384_sig,
        );
        let mut k = rsa.jwk();
        k["alg"] = json!("RS384");
        key_case(
            "an RSA key whose alg is RS384, RS256",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let mut k = rsa.jwk();
        k["alg"] = json!("A128GCM");
        key_case(
            "an RSA key whose alg is A128GCM (not a signature's)",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let mut k = rsa.jwk();
        k["use"] = json!("enc");
        key_case(
            "an RSA key for encryption",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        key_case(
            "RS256 verified as RS384",
            rsa.jwk(),
            A::RsaSsaPkcs1V15Sha384,
            &rs256,
            &rs256_sig,
        );
        key_case(
            "RS256 verified as PS256",
            rsa.jwk(),
            A::RsaSsaPssSha256,
            &rs256,
            &rs256_sig,
        );
        key_case(
            "ES384 verified as HS384",
            p384.jwk(),
            A::HmacSha384,
            &es384,
            &es384_sig,
        );
        key_case(
            "ES384 verified as none",
            p384.jwk(),
            A::None,
            &es384,
            &es384_sig,
        );
        let mut k = rsa.jwk();
        let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
        k["n"] = json!(b64(&[&[0, 0], &n[..]].concat()));
        key_case(
            "an RSA key with leading zeros in n",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let mut k = rsa.jwk();
        k["e"] = json!(b64(&[0, 1, 0, 1]));
        key_case(
            "an RSA key with a leading zero in e",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        for (what, e) in [
            ("e = 1", vec![1]),
            ("e = 3", vec![3]),
            ("e = 65536 (even)", vec![1, 0, 0]),
            ("e = 2^33 + 1", vec![2, 0, 0, 0, 1]),
            ("e = 0", vec![0]),
        ] {
            let mut k = rsa.jwk();
            k["e"] = json!(b64(&e));
            key_case(
                &format!("an RSA key with {what}"),
                k,
                A::RsaSsaPkcs1V15Sha256,
                &rs256,
                &rs256_sig,
            );
        }
        let mut k = rsa.jwk();
        k["n"] = json!(b64(&[&n[..n.len() - 1], &[n[n.len() - 1] & 0xfe]].concat()));
        key_case(
            "an RSA key with an even n",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let mut k = rsa.jwk();
        let big: Vec<u8> = std::iter::repeat_n(0xc5u8, 513).chain([0x01]).collect();
        k["n"] = json!(b64(&big));
        key_case(
            "an RSA key of 4112 bits",
            k,
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_sig,
        );
        let rs256_small_sig = rsa_small.sign(&A::RsaSsaPkcs1V15Sha256, &rs256);
        key_case(
            "an RSA key of 1024 bits",
            rsa_small.jwk(),
            A::RsaSsaPkcs1V15Sha256,
            &rs256,
            &rs256_small_sig,
        );
        let ps256_small_sig = rsa_small.sign(&A::RsaSsaPssSha256, &rs256);
        key_case(
            "an RSA key of 1024 bits, PSS",
            rsa_small.jwk(),
            A::RsaSsaPssSha256,
            &rs256,
            &ps256_small_sig,
        );
        let mut k = ed.jwk();
        k["crv"] = json!("Ed448");
        let ed_sig = ed.sign(&A::EdDsa, &es384);
        key_case(
            "an Ed25519 key labelled Ed448",
            k,
            A::EdDsa,
            &es384,
            &ed_sig,
        );
        let mut k = ed.jwk();
        let x = URL_SAFE_NO_PAD.decode(k["x"].as_str().unwrap()).unwrap();
        k["x"] = json!(b64(&[&hex("302a300506032b6570032100")[..], &x[..]].concat()));
        key_case("an Ed25519 key as DER", k, A::EdDsa, &es384, &ed_sig);
        let mut k = ed.jwk();
        k["kty"] = json!("EC");
        key_case("an Ed25519 key typed EC", k, A::EdDsa, &es384, &ed_sig);
        out
    }

    /// Where the two may differ, on purpose: RFC 7518 3.3 wants RSA keys of 2048 bits or
    /// more, which the old check did not enforce.
    fn intended_difference(name: &str) -> bool {
        name.starts_with("key: an RSA key of 1024 bits")
    }

    #[test]
    fn the_new_check_accepts_exactly_what_the_old_one_accepted() {
        let cases = all_cases();
        let mut disagreements = Vec::new();
        let mut skipped = Vec::new();
        let mut accepted = Vec::new();
        for case in &cases {
            let Some((before, now)) = outcomes(case) else {
                skipped.push(case.name.as_str());
                continue;
            };
            if now {
                accepted.push(case.name.as_str());
            }
            if intended_difference(&case.name) {
                assert!(before && !now, "{}: before {before}, now {now}", case.name);
            } else if before != now {
                disagreements.push(format!("{}: before {before}, now {now}", case.name));
            }
        }
        assert!(
            disagreements.is_empty(),
            "{} of {} cases disagree:\n{}",
            disagreements.len(),
            cases.len(),
            disagreements.join("\n")
        );
        assert!(skipped.is_empty(), "not a CoreJsonWebKey: {skipped:?}");
        // The valid signatures pass, and nothing else but what is as valid.
        for alg in [
            "ES384", "ES256", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
        ] {
            for what in ["valid", "valid, the key names its alg"] {
                let name = format!("{alg}: {what}");
                assert!(accepted.contains(&name.as_str()), "{name} refused");
            }
        }
        let unexpected: Vec<_> = accepted
            .iter()
            .filter(|name| {
                !name.ends_with(": valid")
                    && !name.ends_with(": valid, the key names its alg")
                    && !name.ends_with("(high-S or low-S)")
                    && **name != "key: an RSA key with leading zeros in n"
                    && **name != "key: an RSA key with a leading zero in e"
            })
            .collect();
        assert!(unexpected.is_empty(), "accepted: {unexpected:?}");
        assert!(cases.len() > 2000, "{} cases", cases.len());
    }

    #[test]
    fn a_key_is_parsed_once_for_each_algorithm_it_may_verify() {
        let jwk = |value: Value| serde_json::from_value::<CoreJsonWebKey>(value).unwrap();
        let p384 = Signer::p384().jwk();
        assert_eq!(PublicKey::parse(&jwk(p384.clone())).parsed.len(), 1);
        let mut named = p384;
        named["alg"] = json!("ES384");
        assert_eq!(PublicKey::parse(&jwk(named)).parsed.len(), 1);
        let rsa = Signer::rsa(RSA_A).jwk();
        assert_eq!(PublicKey::parse(&jwk(rsa.clone())).parsed.len(), 6);
        let mut named = rsa;
        named["alg"] = json!("RS256");
        let key = PublicKey::parse(&jwk(named));
        assert_eq!(key.parsed.len(), 1);
        assert_eq!(key.parsed[0].0, A::RsaSsaPkcs1V15Sha256);
    }
}
