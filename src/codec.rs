//! The session's byte format: small, because every byte travels in every request's
//! `Cookie` header, and quick to read, because a request whose cookies are not in the
//! decoded-session cache reads it before anything else.
//!
//! JWTs are stored as their decoded bytes (the base64url of a JWT would otherwise be
//! base64-encoded a second time by cookie encryption), the whole is compressed with LZ4
//! (the tokens of one user repeat issuer, subject, client id and header), and the result
//! is packed seven bits to a character: encrypted cookie values must be UTF-8 text, and
//! this costs 8/7 where base64 would cost 4/3.
//!
//! LZ4 rather than deflate: on a session with an ID token and an access token, deflate
//! made the text 15 % smaller but cost 28 times as long to read (3.9 µs against 0.14 µs)
//! and 12 times as long to write (11 µs against 0.9 µs), the largest part of both a
//! request with a new cookie and a refresh that writes the session back. Cookies of the
//! earlier deflate format are still read, and rewritten in this one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::claims::IdTokenClaims;
use std::sync::Arc;

use crate::session::{CachedToken, Session, Token};

/// Format marker of the session bytes, inside the compression.
const FORMAT: u8 = 1;
/// First byte of the LZ4 format, before the compressed bytes. It can never start the
/// earlier format's raw deflate stream: its block type bits (`11`) are reserved.
const LZ4_MARKER: u8 = 0xFF;
/// Largest decompressed session accepted.
const MAX_DECODED: usize = 64 * 1024;

/// The session as text (characters U+0000 to U+007F).
pub(crate) fn to_text(session: &Session) -> String {
    let bytes = to_bytes(session);
    let mut packed = Vec::with_capacity(bytes.len() / 2 + 16);
    packed.push(LZ4_MARKER);
    packed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    packed.extend_from_slice(&lz4_flex::block::compress(&bytes));
    pack7(&packed)
}

/// The session's bytes, before compression.
fn to_bytes(session: &Session) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    out.push(FORMAT);
    put_token(&mut out, &session.id_token);
    put_opt(
        &mut out,
        session.refresh_token.as_deref().map(str::as_bytes),
    );
    match &session.userinfo_token {
        Some(t) => {
            out.push(1);
            put_cached(&mut out, t);
        }
        None => out.push(0),
    }
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

/// A session read back, and whether it came in the earlier (deflate) format, so that the
/// caller writes it again in the current one.
pub(crate) struct Read {
    pub session: Session,
    pub legacy: bool,
    /// The ID token's claims, parsed from the payload bytes the session stores (no base64
    /// to undo); `None` when the token is stored as text or its payload does not parse
    /// (the caller then reads them from the token, and fails as before).
    pub claims: Option<IdTokenClaims>,
}

/// The session bytes of either format, bounded by `MAX_DECODED`: in one allocation, which
/// the session's JWTs then share (their text is made from it when first used).
fn decompress(packed: &[u8]) -> Option<(Arc<[u8]>, bool)> {
    match packed.split_first()? {
        (&LZ4_MARKER, rest) => {
            let (size, compressed) = rest.split_at_checked(4)?;
            let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
            if size > MAX_DECODED {
                return None;
            }
            // Allocated once at its exact size (`repeat_n` knows its length).
            let mut bytes: Arc<[u8]> = std::iter::repeat_n(0, size).collect();
            let filled =
                lz4_flex::block::decompress_into(compressed, Arc::get_mut(&mut bytes)?).ok()?;
            (filled == size).then_some((bytes, false))
        }
        _ => miniz_oxide::inflate::decompress_to_vec_with_limit(packed, MAX_DECODED)
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

/// Reads a session written by [`to_text`] (or by the earlier deflate format); `None` for
/// anything else.
pub(crate) fn from_text(text: &[u8]) -> Option<Read> {
    let (bytes, legacy) = UNPACKED.with_borrow_mut(|unpacked| {
        unpack7_into(text, unpacked)?;
        let decompressed = decompress(unpacked);
        // Sessions are a few kilobytes; an odd large one is not kept.
        if unpacked.capacity() > MAX_DECODED {
            *unpacked = Vec::new();
        }
        decompressed
    })?;
    let mut r = Reader::new(&bytes);
    if r.byte()? != FORMAT {
        return None;
    }
    let (id_token, payload) = r.token_and_payload()?;
    let refresh_token = r.opt_str()?;
    let userinfo_token = match r.byte()? {
        0 => None,
        1 => Some(r.cached()?),
        _ => return None,
    };
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
        claims: payload.and_then(|json| serde_json::from_slice(json).ok()),
        session: Session {
            id_token,
            refresh_token,
            userinfo_token,
            tokens,
            user_info,
            created_at_ms,
            seen_at,
        },
        legacy,
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

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
        None => out.push(0),
    }
}

/// A JWT as its three decoded segments (tag 1) when that round-trips exactly, else as
/// text (tag 0).
fn put_token(out: &mut Vec<u8>, token: &str) {
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
                return;
            }
        }
    }
    out.push(0);
    put_bytes(out, token.as_bytes());
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
                return (n <= MAX_DECODED).then_some(n);
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

    fn opt(&mut self) -> Option<Option<&'a [u8]>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.opt()? {
            Some(bytes) => Some(Some(utf8(bytes)?)),
            None => Some(None),
        }
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
                    // The session bytes are at most `MAX_DECODED` long.
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
            let _ = from_text(text.as_bytes());
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
        let text = to_text(&session());
        let read = from_text(text.as_bytes()).expect("readable");
        assert!(!read.legacy);
        assert!(read.session == session());
        assert_eq!(unpack7(text.as_bytes()).unwrap()[0], LZ4_MARKER);
    }

    #[test]
    fn cookies_of_the_earlier_deflate_format_are_read_and_marked_for_rewriting() {
        let legacy = pack7(&miniz_oxide::deflate::compress_to_vec(
            &to_bytes(&session()),
            6,
        ));
        let read = from_text(legacy.as_bytes()).expect("the deflate format is still read");
        assert!(read.legacy, "so that the caller writes it again");
        assert!(read.session == session());
    }

    #[test]
    fn a_forged_size_is_refused_before_anything_is_allocated() {
        let mut packed = vec![LZ4_MARKER];
        packed.extend_from_slice(&u32::MAX.to_le_bytes());
        packed.extend_from_slice(&[0x10, b'x']);
        assert!(from_text(pack7(&packed).as_bytes()).is_none());
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
