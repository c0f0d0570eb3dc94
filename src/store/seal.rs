//! Nothing secret in Redis in the clear: the keys this module derives from Rocket's
//! `secret_key` name records by keyed hashes (a reader of Redis cannot even test a guessed
//! user id) and seal values with AES-256-GCM bound to the key name they are stored under,
//! like Rocket's private cookies bind the cookie name: a value copied to another key, a
//! flipped byte or a value made up by someone without the secret is refused.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rocket::figment::{value::Value, Figment};
use sha2::Sha256;

/// First byte of a sealed value: its format.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes of HMAC-SHA256 kept in a [`Keys::tag`] (128 bits), and its length in base64url.
const TAG_BYTES: usize = 16;
pub(crate) const TAG_TEXT_LEN: usize = 22;

/// The keys of one app, derived from its `secret_key`.
pub(crate) struct Keys {
    seal: Aes256Gcm,
    ident: Hmac<Sha256>,
}

impl Keys {
    /// Derives the sealing and naming keys (HKDF-SHA256, one label each: neither can be
    /// used for the other, nor for Rocket's cookies).
    pub fn derive(secret: &[u8]) -> Keys {
        let hkdf = Hkdf::<Sha256>::new(Some(b"rocket_logto/redis/v1"), secret);
        let mut seal = [0u8; 32];
        let mut ident = [0u8; 32];
        hkdf.expand(b"seal values", &mut seal)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        hkdf.expand(b"name records", &mut ident)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Keys {
            seal: Aes256Gcm::new_from_slice(&seal).expect("a 256-bit key"),
            ident: <Hmac<Sha256> as Mac>::new_from_slice(&ident)
                .expect("HMAC takes any key length"),
        }
    }

    /// The record name of `value` in the domain `label`: HMAC-SHA256, base64url (43
    /// characters, none of them a brace, so it can be a Redis Cluster hash tag).
    pub fn ident(&self, label: &str, value: &[u8]) -> String {
        let mut mac = self.ident.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn mac(&self, label: &str, value: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.ident.clone();
        mac.update(b"tag\0");
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac
    }

    /// An authentication tag of `value` in the domain `label` ([`TAG_TEXT_LEN`] characters
    /// of base64url, no space or colon): for what is published or stored in the clear and
    /// must not be made up by others who can write to Redis (announcements, ended records).
    pub fn tag(&self, label: &str, value: &[u8]) -> String {
        let full = self.mac(label, value).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&full[..TAG_BYTES])
    }

    /// Whether `tag` is [`Keys::tag`] of `value` in `label` (compared in constant time).
    pub fn verify_tag(&self, label: &str, value: &[u8], tag: &str) -> bool {
        if tag.len() != TAG_TEXT_LEN {
            return false;
        }
        match URL_SAFE_NO_PAD.decode(tag) {
            Ok(bytes) => self.mac(label, value).verify_truncated_left(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    /// `header` (clear, authenticated: e.g. an expiry that a Lua script compares) followed
    /// by `plain` sealed for the key `name`.
    pub fn seal(&self, name: &str, header: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = aad(name, header);
        let sealed = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any message of this size");
        let mut out = Vec::with_capacity(header.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(header);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of `value` stored under `name` with a clear header of `header_len`
    /// bytes; `None` when anything was changed, moved or made up.
    pub fn open(&self, name: &str, value: &[u8], header_len: usize) -> Option<Vec<u8>> {
        if value.len() < header_len + 1 + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (header, rest) = value.split_at(header_len);
        let (version, rest) = rest.split_first()?;
        if *version != VERSION {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let aad = aad(name, header);
        self.seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
    }
}

fn aad(name: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name.len() + 1 + header.len());
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

/// The bytes of Rocket's configured `secret_key` (base64 of 32 or 64 bytes, hex of 32, or a
/// byte array), which every instance shares. Without one (debug builds: Rocket makes up a
/// key per process, and so does this), the values this process seals can be opened by it
/// alone: fine for one instance, and said in the log.
pub(crate) fn secret_key_material(figment: &Figment) -> Result<Vec<u8>, String> {
    const NEEDED: &str = "logto config: `redis_url` needs Rocket's `secret_key`, the same for every \
        instance (set secret_key in Rocket.toml or ROCKET_SECRET_KEY, e.g. from `openssl rand -base64 32`)";
    let configured = figment.find_value("secret_key").ok().filter(|v| {
        // Rocket's defaults hold an all-zero key, which means "none".
        v.deserialize::<Vec<u8>>()
            .map_or(true, |bytes| bytes.iter().any(|&b| b != 0))
    });
    let Some(value) = configured else {
        log::warn!(
            "logto: no secret_key is configured: what this instance stores in Redis is sealed \
             with a key of its own, so other instances cannot use it (nor its cookies); set \
             secret_key, the same on every instance"
        );
        let mut key = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut key);
        return Ok(key);
    };
    let bytes = match &value {
        Value::String(_, s) => {
            let s = s.trim();
            match s.len() {
                44 | 88 => STANDARD.decode(s).ok(),
                64 => decode_hex(s),
                _ => None,
            }
        }
        other => other.deserialize::<Vec<u8>>().ok(),
    };
    match bytes {
        Some(b) if b.len() >= 32 && b.iter().any(|&x| x != 0) => Ok(b),
        _ => Err(format!("{NEEDED}; the configured one is not a valid key")),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[7u8; 64])
    }

    #[test]
    fn sealed_values_open_only_unchanged_and_under_their_own_name() {
        let k = keys();
        let v = k.seal("p:rot:{a}", b"12:34:", b"refresh-token");
        assert_eq!(
            k.open("p:rot:{a}", &v, 6).as_deref(),
            Some(&b"refresh-token"[..])
        );
        assert!(!v.windows(13).any(|w| w == b"refresh-token"));
        // Another name, another key, a changed header, any flipped byte: refused.
        assert_eq!(k.open("p:rot:{b}", &v, 6), None);
        assert_eq!(Keys::derive(&[8u8; 64]).open("p:rot:{a}", &v, 6), None);
        for i in 0..v.len() {
            let mut w = v.clone();
            w[i] ^= 0x01;
            assert_eq!(k.open("p:rot:{a}", &w, 6), None, "byte {i}");
        }
        assert_eq!(k.open("p:rot:{a}", &v[..v.len() - 1], 6), None);
        assert_eq!(k.open("p:rot:{a}", b"", 0), None);
        // A fresh nonce per seal.
        assert_ne!(v, k.seal("p:rot:{a}", b"12:34:", b"refresh-token"));
    }

    #[test]
    fn tags_verify_only_their_own_value_domain_and_key() {
        let k = keys();
        let t = k.tag("announce", b"e ses:abc:1");
        assert_eq!(t.len(), TAG_TEXT_LEN);
        assert!(!t.contains(' ') && !t.contains(':'));
        assert!(k.verify_tag("announce", b"e ses:abc:1", &t));
        assert!(!k.verify_tag("announce", b"e ses:abc:2", &t));
        assert!(!k.verify_tag("ended", b"e ses:abc:1", &t));
        assert!(!Keys::derive(&[8u8; 64]).verify_tag("announce", b"e ses:abc:1", &t));
        assert!(!k.verify_tag("announce", b"e ses:abc:1", &t[..21]));
        assert!(!k.verify_tag("announce", b"e ses:abc:1", ""));
        assert!(!k.verify_tag("announce", b"e ses:abc:1", "!!!!!!!!!!!!!!!!!!!!!!"));
        // Not an ident under another name.
        assert_ne!(t, &k.ident("announce", b"e ses:abc:1")[..TAG_TEXT_LEN]);
    }

    #[test]
    fn idents_are_keyed_hashes_per_domain() {
        let k = keys();
        let a = k.ident("sub", b"user_alice");
        assert_eq!(a.len(), 43);
        assert!(!a.contains('{') && !a.contains('}'));
        assert_eq!(a, k.ident("sub", b"user_alice"));
        assert_ne!(a, k.ident("sid", b"user_alice"));
        assert_ne!(a, Keys::derive(&[8u8; 64]).ident("sub", b"user_alice"));
    }

    #[test]
    fn the_secret_key_is_read_like_rocket_reads_it() {
        use rocket::figment::providers::Serialized;
        let with = |v: serde_json::Value| {
            Figment::from(Serialized::defaults(serde_json::json!({ "secret_key": v })))
        };
        let b64 = STANDARD.encode([3u8; 64]);
        assert_eq!(
            secret_key_material(&with(b64.into())).unwrap(),
            vec![3u8; 64]
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            secret_key_material(&with(hex.into())).unwrap(),
            vec![0xab; 32]
        );
        assert_eq!(
            secret_key_material(&with(serde_json::json!(vec![5u8; 32]))).unwrap(),
            vec![5u8; 32]
        );
        for bad in [
            serde_json::json!("short"),
            serde_json::json!(STANDARD.encode([0u8; 32])),
        ] {
            let e = secret_key_material(&with(bad)).unwrap_err();
            assert!(e.contains("secret_key"), "{e}");
        }
        // None configured (a debug build; Rocket's default is all zeros): a key of this
        // process only.
        let own = secret_key_material(&Figment::new()).unwrap();
        assert_eq!(own.len(), 64);
        assert_ne!(own, secret_key_material(&Figment::new()).unwrap());
        let zeros = with(serde_json::json!(vec![0u8; 32]));
        assert_eq!(secret_key_material(&zeros).unwrap().len(), 64);
    }
}
