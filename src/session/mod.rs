//! The session (tokens of one signed-in user) and its codec into Rocket private cookies:
//! AES-256-GCM with the cookie's name as associated data, split over several cookies when
//! it outgrows one, with bounded reassembly. The crate seals the session's bytes itself in
//! Rocket's format (`SessionCipher`); only when it cannot read Rocket's key does it hand
//! the session, packed into text, to Rocket's `add_private`.

pub(crate) mod admission;
pub(crate) mod cache;
pub(crate) mod codec;

use std::sync::{Arc, OnceLock};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rocket::http::{Cookie, SameSite};

use crate::config::LogtoConfig;

/// Most chunks a session may span (about 8 × 2.6 kB of plaintext).
pub(crate) const MAX_CHUNKS: usize = 8;
/// Plaintext bytes per chunk. Encrypted and base64-encoded, a chunk grows to
/// `4 * ceil((n + 28 + header) / 3)` bytes (about 3530 for 2600), and the cookie crate
/// percent-encodes each `/` and `=` of the base64 (one character in 64, +2 bytes each):
/// about 110 more bytes on average, and under 250 with overwhelming probability. With
/// the name and attributes (~130 bytes), each `Set-Cookie` line stays under 4096 bytes.
pub(crate) const CHUNK_PLAINTEXT: usize = 2600;

/// Where a JWT's header, payload and signature are in the decoded session bytes.
type SegmentRanges = [(u32, u32); 3];

/// A token the session holds. A session cookie carries its JWTs as their decoded
/// segments (see `codec`); the text is made from them at its first use, once per decoded
/// session: most requests send no token anywhere, and a request whose cookies are new to
/// this instance then skips re-encoding its JWTs (a third of a kilobyte of base64 each).
#[derive(Clone)]
pub(crate) struct Token {
    text: OnceLock<String>,
    /// The decoded session bytes holding the JWT's segments, and where its header,
    /// payload and signature are in them.
    segments: Option<(Arc<[u8]>, SegmentRanges)>,
}

impl Token {
    /// A JWT from its decoded segments at `at` in `bytes`, shared with the rest of the
    /// session (no copy).
    pub fn from_segments(bytes: Arc<[u8]>, at: SegmentRanges) -> Token {
        Token {
            text: OnceLock::new(),
            segments: Some((bytes, at)),
        }
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        self.text.get_or_init(|| match &self.segments {
            Some((bytes, at)) => jwt_text(bytes, at),
            None => String::new(),
        })
    }
}

/// The compact JWT of three decoded segments: one allocation of the exact size.
fn jwt_text(bytes: &[u8], at: &SegmentRanges) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let parts = at.map(|(start, end)| &bytes[start as usize..end as usize]);
    // base64 without padding takes ceil(4n / 3) characters.
    let len = parts
        .iter()
        .map(|p| (p.len() * 4).div_ceil(3))
        .sum::<usize>()
        + 2;
    let mut text = vec![b'.'; len];
    let mut written = 0;
    for part in parts {
        written += URL_SAFE_NO_PAD
            .encode_slice(part, &mut text[written..])
            .expect("sized for the base64 of every segment")
            + 1;
    }
    String::from_utf8(text).expect("base64 is ASCII")
}

impl From<String> for Token {
    fn from(text: String) -> Token {
        Token {
            text: OnceLock::from(text),
            segments: None,
        }
    }
}

impl From<&str> for Token {
    fn from(text: &str) -> Token {
        Token::from(text.to_string())
    }
}

impl std::ops::Deref for Token {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A cached access token for one (resource, organization) pair.
#[derive(Clone, PartialEq)]
#[cfg_attr(test, derive(Debug))] // no Debug outside tests: it holds a token
pub(crate) struct CachedToken {
    pub resource: Option<String>,
    pub organization: Option<String>,
    pub token: Token,
    pub expires_at: i64,
}

/// What a signed-in browser carries (its byte format is in `codec`).
#[derive(Clone, PartialEq)]
#[cfg_attr(test, derive(Debug))] // no Debug outside tests: it holds tokens
pub(crate) struct Session {
    /// The verified ID token (its claims are read from it; sent as `id_token_hint`).
    pub id_token: Token,
    pub refresh_token: Option<String>,
    /// The opaque access token of the code exchange: userinfo only accepts this one.
    pub userinfo_token: Option<CachedToken>,
    pub tokens: Vec<CachedToken>,
    /// The userinfo answer, kept when `fetch_user_info` is on.
    pub user_info: Option<serde_json::Value>,
    /// When the session started (absolute lifetime).
    pub created_at_ms: i64,
    /// When the session was last written (inactivity lifetime).
    pub seen_at: i64,
}

impl Session {
    pub fn cached_token(
        &self,
        resource: Option<&str>,
        organization: Option<&str>,
    ) -> Option<&CachedToken> {
        self.tokens.iter().find(|t| {
            t.resource.as_deref() == resource && t.organization.as_deref() == organization
        })
    }

    pub fn store_token(&mut self, token: CachedToken) {
        self.tokens
            .retain(|t| !(t.resource == token.resource && t.organization == token.organization));
        self.tokens.push(token);
    }

    /// Leaves out one thing that can be fetched again, so that the session fits its store:
    /// the oldest cached organization token (a user of many organizations grows without
    /// bound there), else the oldest other cached token, else the user info. Never the
    /// token for `keep`'s resource and organization (the one this request uses). Whether
    /// anything was left out.
    pub fn leave_out_one(&mut self, keep: &CachedToken) -> bool {
        // `store_token` appends: the first of the list is the one stored longest ago.
        let oldest = |organization: bool| {
            self.tokens.iter().position(|t| {
                t.organization.is_some() == organization
                    && !(t.resource == keep.resource && t.organization == keep.organization)
            })
        };
        if let Some(i) = oldest(true).or_else(|| oldest(false)) {
            self.tokens.remove(i);
            return true;
        }
        self.user_info.take().is_some()
    }

    /// Whether the session has outlived its absolute or inactivity lifetime.
    pub fn expired(&self, config: &LogtoConfig, now: i64) -> bool {
        now - self.created_at_ms / 1000 > config.session_lifetime.as_secs() as i64
            || now - self.seen_at > config.session_inactivity.as_secs() as i64
            || self.created_at_ms / 1000 > now + 300
    }
}

/// The names of this app's cookies. On https they carry the `__Host-` prefix: browsers
/// accept such a cookie only with `Secure`, `Path=/` and no `Domain`, so a sibling
/// subdomain cannot plant its own session or sign-in cookie here. Plain names on http,
/// where browsers refuse `__Host-` cookies (local development).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CookieNames {
    /// The session chunks, in order: `logto_session`, `logto_session_1`, ...
    pub chunks: [&'static str; MAX_CHUNKS],
    /// Sign-in transaction cookies start with this; the rest comes from the `state`.
    pub transaction_prefix: &'static str,
    /// The session id of the Redis session store (`session_store = "redis"`).
    pub sid: &'static str,
}

/// Names for an http `base_url`.
pub(crate) const PLAIN_NAMES: CookieNames = CookieNames {
    chunks: [
        "logto_session",
        "logto_session_1",
        "logto_session_2",
        "logto_session_3",
        "logto_session_4",
        "logto_session_5",
        "logto_session_6",
        "logto_session_7",
    ],
    transaction_prefix: "logto_tx_",
    sid: "logto_sid",
};

/// Names for an https `base_url`.
pub(crate) const HOST_NAMES: CookieNames = CookieNames {
    chunks: [
        "__Host-logto_session",
        "__Host-logto_session_1",
        "__Host-logto_session_2",
        "__Host-logto_session_3",
        "__Host-logto_session_4",
        "__Host-logto_session_5",
        "__Host-logto_session_6",
        "__Host-logto_session_7",
    ],
    transaction_prefix: "__Host-logto_tx_",
    sid: "__Host-logto_sid",
};

impl CookieNames {
    /// The names `config` uses: `__Host-` ones when its cookies are `Secure`.
    pub fn of(config: &LogtoConfig) -> &'static CookieNames {
        if config.secure_cookies() {
            &HOST_NAMES
        } else {
            &PLAIN_NAMES
        }
    }

    /// The first chunk's name, the one whose presence means "a session was sent".
    pub fn session(&self) -> &'static str {
        self.chunks[0]
    }
}

/// Why stored cookies could not be read as a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// No session cookie at all.
    Absent,
    /// Something was there but is unusable (tampered, truncated, old key, expired).
    Invalid(&'static str),
    /// A session that cannot be checked against the ended sessions now (Redis down with
    /// `redis_fail_closed`): treated as signed out, its cookies kept for later.
    Unverifiable,
}

/// Opens session cookies as Rocket seals private cookies (the `cookie` crate's format: the
/// standard base64 of nonce (12 bytes), ciphertext and tag (16 bytes), AES-256-GCM with the
/// cookie's name as associated data), straight from the request's value: unlike
/// `CookieJar::get_private`, no copy of the cookie, no key schedule per call, no `String`,
/// and ring's AES-GCM, several times as fast as the aes-gcm crate's.
pub(crate) struct SessionCipher(LessSafeKey);

const NONCE_LEN: usize = 12;

impl SessionCipher {
    /// The cipher of Rocket's private cookies under `key`.
    pub fn new(key: &cookie::Key) -> Option<SessionCipher> {
        UnboundKey::new(&AES_256_GCM, key.encryption())
            .ok()
            .map(|key| SessionCipher(LessSafeKey::new(key)))
    }

    /// The value of the private cookie `name` with plaintext `plain`, as Rocket seals one
    /// (a fresh random nonce each time), but from bytes: a session sealed here needs no
    /// packing into text.
    pub(crate) fn seal(&self, name: &str, plain: &[u8]) -> String {
        use base64::Engine;
        use rand::RngCore;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        sealed.resize(NONCE_LEN, 0);
        rand::thread_rng().fill_bytes(&mut sealed);
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).expect("12 bytes");
        sealed.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(name.as_bytes()), &mut sealed[NONCE_LEN..])
            .expect("a cookie is far below AES-GCM's message limit");
        sealed.extend_from_slice(tag.as_ref());
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }

    /// Appends the plaintext of the private cookie `name` = `value` to `out`; `None` (and
    /// `out` unchanged) when it does not authenticate.
    pub(crate) fn open_into(&self, name: &str, value: &str, out: &mut Vec<u8>) -> Option<()> {
        use base64::Engine;
        let start = out.len();
        let opened = (|| {
            base64::engine::general_purpose::STANDARD
                .decode_vec(value, out)
                .ok()?;
            let sealed = &mut out[start..];
            let nonce = Nonce::try_assume_unique_for_key(sealed.get(..NONCE_LEN)?).ok()?;
            // The plaintext ends up at the start of `sealed`.
            let plain = self
                .0
                .open_within(nonce, Aad::from(name.as_bytes()), sealed, NONCE_LEN..)
                .ok()?;
            Some(plain.len())
        })();
        match opened {
            Some(len) => {
                out.truncate(start + len);
                Some(())
            }
            None => {
                out.truncate(start);
                None
            }
        }
    }
}

/// Refuses a session past its inactivity or absolute lifetime, read from the encrypted
/// payload (the cookie's own expiry is only a hint to the browser).
pub(crate) fn check_lifetimes(
    session: &Session,
    config: &LogtoConfig,
    now: i64,
) -> Result<(), LoadError> {
    if session.expired(config, now) {
        return Err(LoadError::Invalid("expired"));
    }
    Ok(())
}

/// Reassembles a session from its decrypted chunks (`chunk(i)`), reading at most
/// `MAX_CHUNKS` of them.
pub(crate) fn decode(chunk: impl Fn(usize) -> Option<String>) -> Result<codec::Read, LoadError> {
    decode_with(|i, out| {
        out.extend_from_slice(chunk(i)?.as_bytes());
        Some(())
    })
}

/// Reassembles a session from its decrypted chunks, `open(i, out)` appending the plaintext
/// of chunk `i` to `out`. One chunk (the usual case) is read where it was decrypted.
pub(crate) fn decode_with(
    open: impl FnMut(usize, &mut Vec<u8>) -> Option<()>,
) -> Result<codec::Read, LoadError> {
    FIRST_CHUNK.with_borrow_mut(|first| {
        first.clear();
        let read = decode_chunks(open, first);
        // A chunk is a few kilobytes; anything larger is not kept.
        if first.capacity() > 4 * CHUNK_PLAINTEXT {
            *first = Vec::new();
        }
        read
    })
}

thread_local! {
    /// The first chunk's decoded bytes and plaintext: reused, because every request whose
    /// cookies are new to this instance would otherwise allocate and free a few kilobytes
    /// here (an allocator's large-chunk path, the slowest).
    static FIRST_CHUNK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn decode_chunks(
    mut open: impl FnMut(usize, &mut Vec<u8>) -> Option<()>,
    first: &mut Vec<u8>,
) -> Result<codec::Read, LoadError> {
    open(0, first).ok_or(LoadError::Invalid("undecryptable"))?;
    let (generation, index, count, data) =
        split_header(first).ok_or(LoadError::Invalid("bad header"))?;
    if index != 0 || count == 0 || count > MAX_CHUNKS {
        return Err(LoadError::Invalid("bad chunk count"));
    }
    if count == 1 {
        return codec::from_stored(data, codec::MAX_COOKIE_SESSION)
            .ok_or(LoadError::Invalid("unreadable"));
    }
    let mut text = Vec::with_capacity(count * CHUNK_PLAINTEXT);
    text.extend_from_slice(data);
    let mut next = Vec::with_capacity(CHUNK_PLAINTEXT + 64);
    for i in 1..count {
        next.clear();
        open(i, &mut next).ok_or(LoadError::Invalid("missing chunk"))?;
        let (g, idx, n, data) = split_header(&next).ok_or(LoadError::Invalid("bad header"))?;
        if g != generation || idx != i || n != count {
            return Err(LoadError::Invalid("chunks of different writes"));
        }
        text.extend_from_slice(data);
    }
    codec::from_stored(&text, codec::MAX_COOKIE_SESSION).ok_or(LoadError::Invalid("unreadable"))
}

/// The plaintexts of the chunks of `session`, headers included, as text (for Rocket's
/// `add_private`). Refused when it would not read back: over `MAX_CHUNKS` chunks, or
/// over the codec's limit before compression.
pub(crate) fn encode(session: &Session) -> Result<Vec<String>, TooLarge> {
    // Packed text is ASCII: every byte boundary is a character boundary.
    Ok(
        chunks(codec::to_text(session, codec::MAX_COOKIE_SESSION)?.as_bytes())?
            .into_iter()
            .map(|chunk| String::from_utf8(chunk).expect("ASCII"))
            .collect(),
    )
}

/// The plaintexts of the chunks of `session`, headers included, as bytes to seal (refused
/// as [`encode`] refuses).
pub(crate) fn encode_raw(session: &Session) -> Result<Vec<Vec<u8>>, TooLarge> {
    chunks(&codec::to_raw(session, codec::MAX_COOKIE_SESSION)?)
}

/// `stored` cut into chunks of `CHUNK_PLAINTEXT` bytes, each behind its header.
fn chunks(stored: &[u8]) -> Result<Vec<Vec<u8>>, TooLarge> {
    let count = stored.len().div_ceil(CHUNK_PLAINTEXT);
    if count > MAX_CHUNKS {
        return Err(TooLarge(stored.len()));
    }
    let generation = random_token(6);
    Ok(stored
        .chunks(CHUNK_PLAINTEXT)
        .enumerate()
        .map(|(i, data)| {
            let mut chunk = format!("{generation}.{i}.{count}.").into_bytes();
            chunk.extend_from_slice(data);
            chunk
        })
        .collect())
}

fn split_header(value: &[u8]) -> Option<(&[u8], usize, usize, &[u8])> {
    let mut parts = value.splitn(4, |&b| b == b'.');
    let generation = parts.next()?;
    let index = number(parts.next()?)?;
    let count = number(parts.next()?)?;
    Some((generation, index, count, parts.next()?))
}

/// A decimal number of the chunk header.
fn number(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

pub(crate) fn base_cookie(name: String, value: String, config: &LogtoConfig) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(config.secure_cookies())
        .max_age(time::Duration::seconds(
            config.session_lifetime.as_secs() as i64
        ))
        .build()
}

/// The cookie that carries a session id of the Redis session store (Rocket encrypts it).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn sid_cookie(id: String, config: &LogtoConfig) -> Cookie<'static> {
    base_cookie(CookieNames::of(config).sid.to_string(), id, config)
}

/// Why a session could not be written: it is too large for its store, and would not
/// read back (its size in bytes: compressed for the cookies' chunks, before compression
/// for the codec's limit).
#[derive(Debug)]
pub(crate) struct TooLarge(pub usize);

/// The removal of cookie `name`, with the attributes it was set with: a `__Host-` cookie
/// is only replaced by one that is `Secure` too.
pub(crate) fn removal(name: &str, config: &LogtoConfig) -> Cookie<'static> {
    Cookie::build(name.to_string())
        .path("/")
        .secure(config.secure_cookies())
        .build()
}

/// `bytes` random bytes, base64url-encoded.
pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LogtoConfig {
        let toml = "[logto]\nendpoint='http://l'\napp_id='a'\napp_secret='s'\nbase_url='http://b'";
        let figment = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(toml),
        );
        LogtoConfig::from_figment_with_env(&figment, |_| None).unwrap()
    }

    fn session(created_at: i64, seen_at: i64) -> Session {
        Session {
            id_token: "a.b.c".into(),
            refresh_token: None,
            userinfo_token: None,
            tokens: vec![],
            user_info: None,
            created_at_ms: created_at * 1000,
            seen_at,
        }
    }

    #[test]
    fn session_lifetimes_are_enforced_from_the_payload() {
        let (config, now) = (config(), 1_800_000_000);
        let through_codec = |s: Session| {
            let chunks = encode(&s).unwrap();
            decode(|i| chunks.get(i).cloned())
                .map(|read| read.session)
                .and_then(|s| check_lifetimes(&s, &config, now).map(|()| s))
        };
        // Absolute lifetime (30 days) passed although seen a minute ago.
        assert_eq!(
            through_codec(session(now - 31 * 86_400, now - 60)).err(),
            Some(LoadError::Invalid("expired"))
        );
        // Unused for 15 days (inactivity limit 14).
        assert_eq!(
            through_codec(session(now - 16 * 86_400, now - 15 * 86_400)).err(),
            Some(LoadError::Invalid("expired"))
        );
        // Created in the future (a forged clock): refused.
        assert_eq!(
            through_codec(session(now + 3600, now)).err(),
            Some(LoadError::Invalid("expired"))
        );
        assert!(through_codec(session(now - 86_400, now - 60)).is_ok());
    }

    #[test]
    fn the_cipher_opens_what_rocket_seals_and_nothing_else() {
        let key = cookie::Key::generate();
        let cipher = SessionCipher::new(&key).unwrap();
        let seal = |name: &str, value: &str| {
            let mut jar = cookie::CookieJar::new();
            jar.private_mut(&key)
                .add(cookie::Cookie::new(name.to_string(), value.to_string()));
            jar.get(name).unwrap().value().to_string()
        };
        let sealed = seal("logto_session", "abc.0.1.payload");
        let mut out = b"kept".to_vec();
        assert_eq!(
            cipher.open_into("logto_session", &sealed, &mut out),
            Some(())
        );
        assert_eq!(out, b"keptabc.0.1.payload");
        // Another cookie's name (the associated data), a changed byte, another key, junk:
        // refused, and `out` left as it was.
        let mut out = b"kept".to_vec();
        assert_eq!(cipher.open_into("logto_session_1", &sealed, &mut out), None);
        let mut tampered = sealed.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(cipher.open_into("logto_session", &tampered, &mut out), None);
        let other = SessionCipher::new(&cookie::Key::generate()).unwrap();
        assert_eq!(other.open_into("logto_session", &sealed, &mut out), None);
        for junk in ["", "AAAA", "not base64!", &sealed[..sealed.len() - 4]] {
            assert_eq!(cipher.open_into("logto_session", junk, &mut out), None);
        }
        assert_eq!(out, b"kept");
        // An empty plaintext opens to nothing.
        let empty = seal("logto_session", "");
        assert_eq!(
            cipher.open_into("logto_session", &empty, &mut out),
            Some(())
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn what_the_crate_seals_opens_as_rocket_opens_private_cookies() {
        let key = cookie::Key::generate();
        let cipher = SessionCipher::new(&key).unwrap();
        let sealed = cipher.seal("logto_session", b"abc.0.1.payload");
        assert_ne!(
            sealed,
            cipher.seal("logto_session", b"abc.0.1.payload"),
            "a fresh nonce"
        );
        let jar = cookie::CookieJar::new();
        let opened = jar
            .private(&key)
            .decrypt(cookie::Cookie::new("logto_session", sealed.clone()))
            .expect("Rocket's private cookies open it");
        assert_eq!(opened.value(), "abc.0.1.payload");
        // Bytes that are not text, which Rocket's private cookies cannot carry.
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        let mut out = Vec::new();
        let sealed = cipher.seal("logto_session_1", &bytes);
        assert_eq!(
            cipher.open_into("logto_session_1", &sealed, &mut out),
            Some(())
        );
        assert_eq!(out, bytes);
        assert_eq!(cipher.open_into("logto_session", &sealed, &mut out), None);
    }

    #[test]
    fn a_session_sealed_as_bytes_over_several_chunks_reads_back() {
        let key = cookie::Key::generate();
        let cipher = SessionCipher::new(&key).unwrap();
        let mut s = session(1_700_000_000, 1_700_000_000);
        // Incompressible text: several chunks of plaintext.
        s.refresh_token = Some(random_token(3 * CHUNK_PLAINTEXT));
        let chunks = encode_raw(&s).unwrap();
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_PLAINTEXT + 16));
        let sealed: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| cipher.seal(PLAIN_NAMES.chunks[i], c))
            .collect();
        let read =
            decode_with(|i, out| cipher.open_into(PLAIN_NAMES.chunks[i], sealed.get(i)?, out))
                .unwrap();
        assert!(read.session == s);
        // The bytes are the text format's less an eighth.
        let text: usize = encode(&s).unwrap().iter().map(String::len).sum();
        let raw: usize = chunks.iter().map(Vec::len).sum();
        assert!(raw * 8 <= text * 7 + 8 * 16, "{raw} raw, {text} text");
    }

    #[test]
    fn what_is_left_out_first_is_the_oldest_organization_token_never_the_one_in_use() {
        let token = |resource: Option<&str>, organization: Option<&str>| CachedToken {
            resource: resource.map(str::to_string),
            organization: organization.map(str::to_string),
            token: "t".into(),
            expires_at: 0,
        };
        let mut s = session(1_700_000_000, 1_700_000_000);
        s.user_info = Some(serde_json::json!({ "sub": "u" }));
        for t in [
            token(Some("api"), None),
            token(None, Some("o1")),
            token(None, Some("o2")),
            token(None, Some("o3")),
        ] {
            s.store_token(t);
        }
        // o1 is fetched again: the newest now.
        s.store_token(token(None, Some("o1")));
        let keep = token(None, Some("o3"));
        let mut left = Vec::new();
        while s.leave_out_one(&keep) {
            left.push(
                s.tokens
                    .iter()
                    .map(|t| t.organization.as_deref().or(t.resource.as_deref()).unwrap())
                    .collect::<Vec<_>>()
                    .join(",")
                    + if s.user_info.is_some() { "+info" } else { "" },
            );
        }
        assert_eq!(
            left,
            ["api,o3,o1+info", "api,o3+info", "o3+info", "o3"],
            "organization tokens oldest first, then the others, then the user info"
        );
        assert_eq!(s.tokens, vec![keep]);
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            split_header(b"abc.1.3.{\"x\":1}"),
            Some((&b"abc"[..], 1, 3, &b"{\"x\":1}"[..]))
        );
        assert_eq!(split_header(b"abc.x.3.data"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = CachedToken> {
        (
            proptest::option::of("[a-z:/.]{1,40}"),
            proptest::option::of("[a-z_0-9]{1,20}"),
            "\\PC{0,900}",
            any::<i64>(),
        )
            .prop_map(|(resource, organization, token, expires_at)| CachedToken {
                resource,
                organization,
                token: token.into(),
                expires_at,
            })
    }

    fn session() -> impl Strategy<Value = Session> {
        (
            "\\PC{1,3000}",
            proptest::option::of("[A-Za-z0-9_-]{0,80}"),
            proptest::option::of(token()),
            proptest::collection::vec(token(), 0..5),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(
                |(id_token, refresh_token, userinfo_token, tokens, created_at, seen_at)| Session {
                    id_token: id_token.into(),
                    refresh_token,
                    userinfo_token,
                    tokens,
                    user_info: None,
                    created_at_ms: created_at,
                    seen_at,
                },
            )
    }

    proptest! {
        #[test]
        fn the_codec_round_trips_every_session_it_can_produce(s in session()) {
            let chunks = encode(&s).unwrap();
            prop_assert!(chunks.len() <= MAX_CHUNKS);
            prop_assert!(chunks.iter().all(|c| c.len() <= CHUNK_PLAINTEXT + 32));
            let back = decode(|i| chunks.get(i).cloned()).unwrap().session;
            prop_assert!(back == s);
        }

        #[test]
        fn arbitrary_chunks_never_panic(chunks in proptest::collection::vec("\\PC{0,200}", 0..10)) {
            let _ = decode(|i| chunks.get(i).cloned());
        }
    }
}
