//! The session's byte format: small, because every byte travels in every request's
//! `Cookie` header, and quick to read, because a request whose cookies are not in the
//! decoded-session cache reads it before anything else.
//!
//! JWTs are stored as their decoded bytes (the base64url of a JWT would otherwise be
//! base64-encoded a second time by cookie encryption), the whole is compressed with LZ4
//! (the tokens of one user repeat issuer, subject, client id and header), and the result
//! is sealed as it is when the crate seals the cookies itself (the usual case). Where the
//! plaintext must be text (Rocket's `add_private`, used when the crate cannot read Rocket's
//! key), it is packed seven bits to a character, which costs 8/7 where base64 would cost
//! 4/3. The first byte tells the two apart: a raw session starts with `LZ4_MARKER`, packed
//! text never has its high bit set.
//!
//! LZ4 rather than deflate: on a session with an ID token and an access token, deflate
//! made the text 15 % smaller but cost 28 times as long to read (3.9 µs against 0.14 µs)
//! and 12 times as long to write (11 µs against 0.9 µs), the largest part of both a
//! request with a new cookie and a refresh that writes the session back. Cookies of the
//! earlier deflate format are still read, and rewritten in this one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use std::sync::Arc;

use crate::claims::IdTokenClaims;
use crate::util::jose::decode_jwt_payload;

use crate::session::{CachedToken, Session, Token, TooLarge};

mod binary_claims;

/// Format marker of the session bytes, inside the compression: 2 adds the ID token's
/// claims in a binary layout (see `claims`).
const FORMAT: u8 = 2;
/// The earlier format, without the claims: still read, and marked for rewriting.
const FORMAT_WITHOUT_CLAIMS: u8 = 1;
/// First byte of the LZ4 format, before the compressed bytes. It can never start the
/// earlier format's raw deflate stream: its block type bits (`11`) are reserved.
const LZ4_MARKER: u8 = 0xFF;
/// Largest session of the cookie store, before compression, written or read: a reader's
/// bound on what a forged size may make it allocate. The cookies' own budget (8 chunks) is
/// on the compressed bytes, and a compressible session (a large userinfo answer) can fit it
/// while being far larger than this once decompressed.
pub(crate) const MAX_COOKIE_SESSION: usize = 64 * 1024;
/// Largest session of the Redis session store, before compression, written or read: no
/// cookie budget there, but a bound all the same on what a value makes an instance
/// allocate. A user of 130 organizations with every organization token takes about 67 kB
/// (tests/redis_sessions.rs), a fifteenth of it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const MAX_REDIS_SESSION: usize = 1024 * 1024;

/// The session as bytes to seal: compressed, with their size. Refused when the session
/// is larger than `limit` before compression, since reading it back (bounded by the same
/// limit) would fail: the caller leaves something out instead.
pub(crate) fn to_raw(session: &Session, limit: usize) -> Result<Vec<u8>, TooLarge> {
    let bytes = to_bytes(session);
    if bytes.len() > limit {
        return Err(TooLarge(bytes.len()));
    }
    let mut raw = Vec::with_capacity(bytes.len() / 2 + 16);
    raw.push(LZ4_MARKER);
    raw.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    raw.extend_from_slice(&lz4_flex::block::compress(&bytes));
    Ok(raw)
}

/// The session as text (characters U+0000 to U+007F): [`to_raw`] packed.
pub(crate) fn to_text(session: &Session, limit: usize) -> Result<String, TooLarge> {
    to_raw(session, limit).map(|raw| pack7(&raw))
}

/// The session's bytes, before compression.
fn to_bytes(session: &Session) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    out.push(FORMAT);
    let payload = put_token(&mut out, &session.id_token);
    // The session's ID token was verified when it was received; claims that do not parse
    // are left out, and reading the session then fails as it did before this layout.
    let claims: Option<IdTokenClaims> = match payload {
        Some(json) => serde_json::from_slice(&json).ok(),
        None => decode_jwt_payload(&session.id_token).ok(),
    };
    put_optional(&mut out, claims.as_ref(), binary_claims::put);
    put_opt(
        &mut out,
        session.refresh_token.as_deref().map(str::as_bytes),
    );
    put_optional(&mut out, session.userinfo_token.as_ref(), put_cached);
    put_len(&mut out, session.tokens.len());
    for t in &session.tokens {
        put_cached(&mut out, t);
    }
    let user_info = session
        .user_info
        .as_ref()
        .map(|v| serde_json::to_vec(v).expect("JSON values serialize"));
    put_opt(&mut out, user_info.as_deref());
    out.extend_from_slice(&session.created_at_ms.to_le_bytes());
    out.extend_from_slice(&session.seen_at.to_le_bytes());
    out
}

/// A session read back, and whether it came in an earlier format (deflate, or without the
/// claims), so that the caller writes it again in the current one.
pub(crate) struct Read {
    pub session: Session,
    pub legacy: bool,
    /// The ID token's claims: from their binary layout, or in the earlier format parsed
    /// from the payload bytes the session stores (no base64 to undo); `None` when they did
    /// not parse (the caller then reads them from the token, and fails as before).
    pub claims: Option<IdTokenClaims>,
}

/// The session bytes of either format, bounded by `limit`: in one allocation, which the
/// session's JWTs then share (their text is made from it when first used).
fn decompress(packed: &[u8], limit: usize) -> Option<(Arc<[u8]>, bool)> {
    match packed.split_first()? {
        (&LZ4_MARKER, rest) => {
            let (size, compressed) = rest.split_at_checked(4)?;
            let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
            if size > limit {
                return None;
            }
            // Allocated once at its exact size (`repeat_n` knows its length).
            let mut bytes: Arc<[u8]> = std::iter::repeat_n(0, size).collect();
            let filled =
                lz4_flex::block::decompress_into(compressed, Arc::get_mut(&mut bytes)?).ok()?;
            (filled == size).then_some((bytes, false))
        }
        _ => miniz_oxide::inflate::decompress_to_vec_with_limit(packed, limit)
            .ok()
            .map(|bytes| (bytes.into(), true)),
    }
}

thread_local! {
    /// The unpacked bytes of the session being read: reused, because every request whose
    /// cookies are new to this instance would otherwise allocate and free a kilobyte or
    /// two here (an allocator's large-chunk path, the slowest).
    static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads a session written by [`to_raw`] or [`to_text`] (or by the earlier deflate
/// format) under the same `limit`; `None` for anything else.
pub(crate) fn from_stored(stored: &[u8], limit: usize) -> Option<Read> {
    let (bytes, legacy) = match stored.first() {
        Some(&LZ4_MARKER) => decompress(stored, limit)?,
        _ => from_text(stored, limit)?,
    };
    read(bytes, legacy)
}

/// The session bytes of packed text.
fn from_text(text: &[u8], limit: usize) -> Option<(Arc<[u8]>, bool)> {
    UNPACKED.with_borrow_mut(|unpacked| {
        unpack7_into(text, unpacked)?;
        let decompressed = decompress(unpacked, limit);
        // Sessions are a few kilobytes; an odd large one is not kept.
        if unpacked.capacity() > MAX_COOKIE_SESSION {
            *unpacked = Vec::new();
        }
        decompressed
    })
}

fn read(bytes: Arc<[u8]>, legacy: bool) -> Option<Read> {
    let mut r = Reader::new(&bytes);
    let format = r.byte()?;
    if format != FORMAT && format != FORMAT_WITHOUT_CLAIMS {
        return None;
    }
    let (id_token, payload) = r.token_and_payload()?;
    let claims = if format == FORMAT {
        r.optional(binary_claims::read)?
    } else {
        payload.and_then(|json| serde_json::from_slice(json).ok())
    };
    let refresh_token = r.opt_str()?;
    let userinfo_token = r.optional(Reader::cached)?;
    let count = r.len()?;
    let mut tokens = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        tokens.push(r.cached()?);
    }
    let user_info = match r.opt()? {
        Some(json) => Some(serde_json::from_slice(json).ok()?),
        None => None,
    };
    let created_at_ms = r.i64()?;
    let seen_at = r.i64()?;
    if !r.rest.is_empty() {
        return None;
    }
    Some(Read {
        claims,
        session: Session {
            id_token,
            refresh_token,
            userinfo_token,
            tokens,
            user_info,
            created_at_ms,
            seen_at,
        },
        legacy: legacy || format == FORMAT_WITHOUT_CLAIMS,
    })
}

fn utf8(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A presence byte (0: none, 1: some), then the value as `put` writes it.
fn put_optional<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => {
            out.push(1);
            put(out, value);
        }
        None => out.push(0),
    }
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    put_optional(out, bytes, put_bytes);
}

/// A JWT as its three decoded segments (tag 1) when that round-trips exactly, else as
/// text (tag 0). Answers the decoded payload in the first case.
fn put_token(out: &mut Vec<u8>, token: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() == 3 {
        let decoded: Option<Vec<Vec<u8>>> = segments
            .iter()
            .map(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .collect();
        if let Some(decoded) = decoded {
            if decoded
                .iter()
                .zip(&segments)
                .all(|(d, s)| URL_SAFE_NO_PAD.encode(d) == *s)
            {
                out.push(1);
                for segment in &decoded {
                    put_bytes(out, segment);
                }
                let [_, payload, _]: [Vec<u8>; 3] = decoded.try_into().ok()?;
                return Some(payload);
            }
        }
    }
    out.push(0);
    put_bytes(out, token.as_bytes());
    None
}

fn put_cached(out: &mut Vec<u8>, t: &CachedToken) {
    put_opt(out, t.resource.as_deref().map(str::as_bytes));
    put_opt(out, t.organization.as_deref().map(str::as_bytes));
    put_token(out, &t.token);
    out.extend_from_slice(&t.expires_at.to_le_bytes());
}

struct Reader<'a> {
    /// All the session bytes, which the JWTs share...
    all: &'a Arc<[u8]>,
    /// ... and those not read yet, the end of `all`.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(all: &'a Arc<[u8]>) -> Reader<'a> {
        Reader { all, rest: all }
    }

    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            n |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                // No length or count can exceed the bytes it describes.
                return (n <= self.all.len()).then_some(n);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        if n > self.rest.len() {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    /// A value after a presence byte (as [`put_optional`] writes it), read by `read`.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(read(self)?)),
            _ => None,
        }
    }

    fn opt(&mut self) -> Option<Option<&'a [u8]>> {
        self.optional(Self::bytes)
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        self.optional(|r| utf8(r.bytes()?))
    }

    fn token(&mut self) -> Option<Token> {
        self.token_and_payload().map(|(token, _)| token)
    }

    /// A token, and the decoded bytes of its payload when it is a JWT stored decoded.
    fn token_and_payload(&mut self) -> Option<(Token, Option<&'a [u8]>)> {
        match self.byte()? {
            0 => Some((utf8(self.bytes()?)?.into(), None)),
            1 => {
                let segments = [self.bytes()?, self.bytes()?, self.bytes()?];
                let range = |segment: &[u8]| {
                    let start = segment.as_ptr() as usize - self.all.as_ptr() as usize;
                    // The session bytes are at most `MAX_REDIS_SESSION` long (1 MiB).
                    (start as u32, (start + segment.len()) as u32)
                };
                Some((
                    Token::from_segments(self.all.clone(), segments.map(range)),
                    Some(segments[1]),
                ))
            }
            _ => None,
        }
    }

    fn i64(&mut self) -> Option<i64> {
        if self.rest.len() < 8 {
            return None;
        }
        let (head, rest) = self.rest.split_at(8);
        self.rest = rest;
        Some(i64::from_le_bytes(head.try_into().ok()?))
    }

    fn cached(&mut self) -> Option<CachedToken> {
        let resource = self.opt_str()?;
        let organization = self.opt_str()?;
        let token = self.token()?;
        let expires_at = self.i64()?;
        Some(CachedToken {
            resource,
            organization,
            token,
            expires_at,
        })
    }
}

/// Packs bytes seven bits to a character (U+0000 to U+007F).
fn pack7(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 7 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 7 {
            bits -= 7;
            out.push(char::from(((acc >> bits) & 0x7f) as u8));
        }
    }
    if bits > 0 {
        out.push(char::from(((acc << (7 - bits)) & 0x7f) as u8));
    }
    out
}

#[cfg(test)]
fn unpack7(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    unpack7_into(text, &mut out)?;
    Some(out)
}

/// Unpacks [`pack7`]'s text into `out` (cleared first).
fn unpack7_into(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.reserve(text.len() * 7 / 8 + 8);
    // Eight characters are 56 bits, seven whole bytes: the bulk goes eight at a time, the
    // seven bits of each character gathered by pairs, then fours, then the eight, and
    // written as eight bytes of which the next group overwrites the last.
    let mut groups = text.chunks_exact(8);
    let whole = groups.len() * 7;
    out.resize(whole + 1, 0);
    for (i, group) in (&mut groups).enumerate() {
        let word = u64::from_be_bytes(group.try_into().ok()?);
        if word & 0x8080_8080_8080_8080 != 0 {
            return None;
        }
        let pairs = (word & 0x007F_007F_007F_007F) | ((word & 0x7F00_7F00_7F00_7F00) >> 1);
        let fours = (pairs & 0x0000_3FFF_0000_3FFF) | ((pairs & 0x3FFF_0000_3FFF_0000) >> 2);
        let eight = (fours & 0x0FFF_FFFF) | ((fours & 0x0FFF_FFFF_0000_0000) >> 4);
        out[i * 7..i * 7 + 8].copy_from_slice(&(eight << 8).to_be_bytes());
    }
    out.truncate(whole);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in groups.remainder() {
        if c > 0x7f {
            return None;
        }
        acc = (acc << 7) | c as u32;
        bits += 7;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack7_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = pack7(&bytes);
            prop_assert!(text.bytes().all(|b| b < 0x80));
            prop_assert_eq!(unpack7(text.as_bytes()).unwrap(), bytes);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = from_stored(text.as_bytes(), MAX_COOKIE_SESSION);
        }
    }

    fn session() -> Session {
        Session {
            id_token: "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ1IiwiaXNzIjoiaHR0cHM6Ly90LmxvZ3RvLmFwcC9vaWRjIn0.c2lnbmF0dXJl".into(),
            refresh_token: Some("rt-0123456789".into()),
            userinfo_token: None,
            tokens: vec![CachedToken {
                resource: Some("https://api.example".into()),
                organization: None,
                token: "eyJhbGciOiJFUzM4NCJ9.eyJhdWQiOiJodHRwczovL2FwaS5leGFtcGxlIn0.c2ln".into(),
                expires_at: 1_800_000_000,
            }],
            user_info: Some(serde_json::json!({ "sub": "u", "custom_data": { "plan": "pro" } })),
            created_at_ms: 1_700_000_000_000,
            seen_at: 1_700_000_000,
        }
    }

    #[test]
    fn sessions_round_trip_in_the_lz4_format() {
        let text = to_text(&session(), MAX_COOKIE_SESSION).unwrap();
        let read = from_stored(text.as_bytes(), MAX_COOKIE_SESSION).expect("readable");
        assert!(!read.legacy);
        assert!(read.session == session());
        assert_eq!(unpack7(text.as_bytes()).unwrap()[0], LZ4_MARKER);
    }

    #[test]
    fn raw_sessions_round_trip_and_are_an_eighth_smaller_than_text() {
        let raw = to_raw(&signed_in(), MAX_COOKIE_SESSION).unwrap();
        assert_eq!(raw[0], LZ4_MARKER);
        let read = from_stored(&raw, MAX_COOKIE_SESSION).expect("readable");
        assert!(!read.legacy);
        assert!(read.session == signed_in());
        assert_eq!(read.claims, decode_jwt_payload(ID_TOKEN).ok());
        let text = to_text(&signed_in(), MAX_COOKIE_SESSION).unwrap();
        assert_eq!(text.len(), (raw.len() * 8).div_ceil(7));
        // Either form of the same session reads the same.
        assert!(
            from_stored(text.as_bytes(), MAX_COOKIE_SESSION)
                .unwrap()
                .session
                == read.session
        );
    }

    #[test]
    fn cookies_of_the_earlier_deflate_format_are_read_and_marked_for_rewriting() {
        let legacy = pack7(&miniz_oxide::deflate::compress_to_vec(
            &to_bytes(&session()),
            6,
        ));
        let read = from_stored(legacy.as_bytes(), MAX_COOKIE_SESSION)
            .expect("the deflate format is still read");
        assert!(read.legacy, "so that the caller writes it again");
        assert!(read.session == session());
    }

    /// A signed-in session with a Logto-like ID token (its payload is what the test
    /// provider signs for alice; the signature bytes are made up: not checked here).
    fn signed_in() -> Session {
        Session {
            id_token: ID_TOKEN.into(),
            refresh_token: Some("rt-0123456789".into()),
            userinfo_token: None,
            tokens: vec![],
            user_info: None,
            created_at_ms: 1_700_000_000_000,
            seen_at: 1_700_000_000,
        }
    }

    const ID_TOKEN: &str = "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjM1NTUzL29pZGMiLCJzdWIiOiJ1c2VyX2FsaWNlIiwiYXVkIjoic2FtcGxlLWFwcCIsImV4cCI6MTc5NjA2NTkzNywiaWF0IjoxNzk2MDYyMzM3LCJuYW1lIjoiQWxpY2UgTGlkZGVsbCIsInVzZXJuYW1lIjoiYWxpY2UiLCJwaWN0dXJlIjpudWxsLCJjcmVhdGVkX2F0IjoxNzAwMDAwMDAwMDAwLCJ1cGRhdGVkX2F0IjoxNzAwMDAwNjAwMDAwLCJmYW1pbHlfbmFtZSI6IkxpZGRlbGwiLCJnaXZlbl9uYW1lIjoiQWxpY2UiLCJsb2NhbGUiOiJlbi1VUyIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20iLCJlbWFpbF92ZXJpZmllZCI6dHJ1ZSwib3JnYW5pemF0aW9ucyI6WyJvcmdfYWNtZSJdLCJvcmdhbml6YXRpb25fcm9sZXMiOlsib3JnX2FjbWU6YWRtaW4iXSwibm9uY2UiOiItV3JFMXZiM3hybzFlaWNjUkhsaGRnIn0.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f";

    /// `signed_in()` as the previous release wrote it (format 1: no claims layout).
    const WRITTEN_BY_FORMAT_1: &str = "\u{7f}X\0 \0\u{3}g%\0@$gY\tBl3HG\"\u{12}\u{15}&3\u{1c}\r\u{4}\"a\thy8\u{8}G\"\u{12}).T\u{11}\u{b}\u{4}&[%H\"\u{1d}\u{8}M3\t\t{2\u{1}^d&KMf\"\u{1d}\u{8}M\u{7}#Q`:\u{17}Kf\u{13}\u{11}\\\\0\u{17}\u{c}\u{5}c\thf5\u{1a}M&2{=Rd1HEB\u{13}Mjb\u{11}\u{e}D'+MJr/X-FK\rJ\"\u{16}\u{8}L\u{17}+\u{10}D:\u{11}\u{1c}l\u{16}kAXe\u{16}X.\u{7}\u{1}\u{8}X\"2^\u{e}\u{2}\u{11}hb7\u{1c}MF\u{3}1Tr3\u{1b}K\u{4}&K\u{5}h\"\u{1d}\u{c}&sIX`6\u{19}\u{c}f390Dn0[,R\u{11}hDA6\u{1a},6)\u{1}\u{18}i2\u{19}\u{c}Vc0D,\u{11}\u{1d}.6+H6\0\u{2}\u{17}`\u{f}\u{10}!`i1]\u{e}W\u{13}\u{14}D:7\u{1d}-Fa0Dc9\u{19},\u{17}#\u{15}H_(@\u{2}c\0\u{4}\0\\\u{16}\u{8}NW\u{3}\u{10}6\0\u{8}MD\0\u{4}LX\"3\u{18}-VK1r_-@\0g\0\u{1}(g4]LVp\\\0\u{1}F@\u{1e}@Q\u{8}X\"6\u{1b}l6\u{b}1J\"\u{1d}\u{8}LVq5*S\u{11}\u{b}\u{4}&+5Bi6$`\u{c}\"\u{1}Jx0[.\u{6}c\u{14}\\c7[#@\u{7}h:_;\u{19}.&K\u{19}Re2\u{8}G'#Ije\u{16}\u{8}Mw\u{13}\u{1d}Bn4^L\u{17}#%^n9HG%Y\t^r3Wl\u{16}\u{1b}5J\".G \u{5}J}do6\u{19}$ \u{3}\0ta2\u{1b}-\u{16}q \0@7\u{1b}mf\u{1c}\u{1c}\u{1}v7K*w\u{12}\u{14}bv1\u{c}o\u{7}\u{13}<be4Xl5\u{12}!Xh2\u{19}d'k\0\0\u{1}\u{1}\0`@(\u{18}\u{e}\u{8}\u{4}BA0`4\u{1c}\u{f}\u{8}\u{4}\"!\u{18}P*\u{16}\u{b}F\u{3}\u{11}Pl8\u{1d}\u{f}\u{7}d\u{2}\t\u{8}F$\u{12}IDrA$T+\u{16}\u{b}%by@b2\u{19}M\u{6}S1\\p9\u{1d}\u{e}gCix~@ PH4\"\u{15}\u{c}G$\u{12})$Z1\u{1a}N'T\n\u{15}\u{12}M(U+\u{15}k\u{5}Ji6\\.WKp\u{8}5dt\u{16}M \u{f}\0\u{10}\0\0\0\0\r\u{e}.>\u{16}\u{1}\0\0\0\u{f}\nMJ\0\0\0\0\0";

    #[test]
    fn the_claims_are_stored_in_their_layout_and_read_back() {
        let text = to_text(&signed_in(), MAX_COOKIE_SESSION).unwrap();
        let read = from_stored(text.as_bytes(), MAX_COOKIE_SESSION).expect("readable");
        assert!(!read.legacy);
        assert!(read.session == signed_in());
        let expected: IdTokenClaims = decode_jwt_payload(ID_TOKEN).unwrap();
        assert_eq!(read.claims.as_ref(), Some(&expected));
        assert_eq!(expected.profile.locale.as_deref(), Some("en-US"));
        assert!(expected.extra.contains_key("nonce"));
    }

    #[test]
    fn sessions_of_format_1_are_read_and_marked_for_rewriting() {
        let read = from_stored(WRITTEN_BY_FORMAT_1.as_bytes(), MAX_COOKIE_SESSION)
            .expect("format 1 is still read");
        assert!(read.legacy, "so that the caller writes it again");
        assert!(read.session == signed_in());
        assert_eq!(read.claims, decode_jwt_payload(ID_TOKEN).ok());
    }

    #[test]
    fn claims_that_do_not_parse_are_left_out() {
        let read = from_stored(
            to_text(&session(), MAX_COOKIE_SESSION).unwrap().as_bytes(),
            MAX_COOKIE_SESSION,
        )
        .expect("readable");
        assert!(
            read.claims.is_none(),
            "the test session's payload has no aud, exp, iat"
        );
        assert!(read.session == session());
    }

    #[test]
    fn a_forged_size_is_refused_before_anything_is_allocated() {
        let mut packed = vec![LZ4_MARKER];
        packed.extend_from_slice(&u32::MAX.to_le_bytes());
        packed.extend_from_slice(&[0x10, b'x']);
        assert!(from_stored(pack7(&packed).as_bytes(), MAX_COOKIE_SESSION).is_none());
    }

    /// A session of a user in `n` organizations holding every organization token, in the
    /// shapes of the test provider's (Logto's: ids of 21 characters, ES384 JWTs with a
    /// random `jti` and signature, the ID token listing the organizations and roles).
    fn with_organization_tokens(n: usize) -> Session {
        let b64 = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        // Pseudo-random bytes: what compresses least, as real ones.
        let noise = |seed: usize, len: usize| -> Vec<u8> {
            (0..len)
                .map(|k| ((seed * 7919 + k * 104_729) % 251) as u8)
                .collect()
        };
        let letters = |seed: usize, len: usize| -> String {
            noise(seed, len)
                .iter()
                .map(|b| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[*b as usize % 36]))
                .collect()
        };
        let jwt = |payload: serde_json::Value, seed: usize| {
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"ES384","typ":"at+jwt","kid":"s4JvHhxTuLJVqW1r"}"#),
                b64(payload.to_string().as_bytes()),
                b64(&noise(seed, 96))
            )
        };
        let issuer = "http://127.0.0.1:35553/oidc";
        let orgs: Vec<String> = (0..n).map(|i| letters(i, 21)).collect();
        let id_token = jwt(
            serde_json::json!({
                "iss": issuer, "sub": "user_dave", "aud": "sample-app", "exp": 1_796_065_937,
                "iat": 1_796_062_337, "name": "Dave More-Orgs", "username": "dave",
                "organizations": orgs,
                "organization_roles": orgs.iter().map(|o| format!("{o}:member")).collect::<Vec<_>>(),
            }),
            n,
        );
        let mut s = signed_in();
        s.id_token = id_token.into();
        for (i, org) in orgs.iter().enumerate() {
            let payload = serde_json::json!({
                "jti": b64(&noise(i + 1000, 32)), "sub": "user_dave", "iat": 1_796_062_337,
                "exp": 1_796_065_937, "scope": "read:members", "client_id": "sample-app",
                "iss": issuer, "aud": format!("urn:logto:organization:{org}"),
            });
            s.tokens.push(CachedToken {
                resource: None,
                organization: Some(org.clone()),
                token: jwt(payload, i).into(),
                expires_at: 1_796_065_937,
            });
        }
        s
    }

    #[test]
    fn a_session_larger_than_its_limit_before_compression_is_not_written() {
        // 90 KB of compressible userinfo: small once compressed, which is all the cookies'
        // budget saw, yet over the cookie limit before compression.
        let mut s = signed_in();
        s.user_info = Some(
            serde_json::json!({ "sub": "user_alice", "custom_data": { "notes": "x".repeat(90_000) } }),
        );
        let Err(TooLarge(bytes)) = to_raw(&s, MAX_COOKIE_SESSION) else {
            panic!("written, though it would not read back")
        };
        assert!(bytes > 90_000, "{bytes}");
        assert!(to_text(&s, MAX_COOKIE_SESSION).is_err());
        // The Redis store takes it, and reads it back under its own limit only.
        let raw = to_raw(&s, MAX_REDIS_SESSION).expect("under the Redis limit");
        assert!(raw.len() < 2_000, "compressed to {} bytes", raw.len());
        assert!(from_stored(&raw, MAX_REDIS_SESSION).unwrap().session == s);
        assert!(from_stored(&raw, MAX_COOKIE_SESSION).is_none());
    }

    #[test]
    fn a_session_is_written_exactly_when_it_reads_back_under_the_same_limit() {
        let s = with_organization_tokens(3);
        let size = to_bytes(&s).len();
        for limit in [size - 1, size, size + 1] {
            match to_raw(&s, limit) {
                Ok(raw) => {
                    assert!(limit >= size);
                    let read = from_stored(&raw, limit).expect("what is written reads back");
                    assert!(read.session == s);
                    let text = to_text(&s, limit).unwrap();
                    assert!(from_stored(text.as_bytes(), limit).unwrap().session == s);
                }
                Err(TooLarge(bytes)) => {
                    assert_eq!((limit, bytes), (size - 1, size));
                    // What the earlier code wrote regardless is what reading refuses.
                    assert!(from_stored(&to_raw(&s, usize::MAX).unwrap(), limit).is_none());
                }
            }
        }
    }

    #[test]
    fn a_user_of_130_organizations_fits_the_redis_limit_and_not_the_cookie_one() {
        let s = with_organization_tokens(130);
        let size = to_bytes(&s).len();
        // Over the cookie limit, with room to spare under the Redis one.
        assert!(
            size > MAX_COOKIE_SESSION && size < MAX_REDIS_SESSION / 10,
            "{size}"
        );
        assert!(to_raw(&s, MAX_COOKIE_SESSION).is_err());
        let raw = to_raw(&s, MAX_REDIS_SESSION).unwrap();
        let read = from_stored(&raw, MAX_REDIS_SESSION).expect("reads back");
        assert!(read.session == s);
        println!(
            "130 organization tokens: {size} bytes, {} compressed",
            raw.len()
        );
    }

    #[test]
    fn jwts_are_stored_decoded_and_other_tokens_as_text() {
        for token in [
            "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ1In0.c2ln",
            "opaque-token",
            "a.b.c",
            "e30.e30.",
            "x==.y.z",
        ] {
            let mut out = Vec::new();
            put_token(&mut out, token);
            let all: Arc<[u8]> = out.into();
            assert_eq!(Reader::new(&all).token().as_deref(), Some(token), "{token}");
        }
    }
}
