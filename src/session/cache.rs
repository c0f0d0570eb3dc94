//! Sessions already decrypted and decoded, keyed by the cookie values that carried them,
//! with the admission filter that keeps cookies seen once from evicting live entries.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::claims::IdTokenClaims;
use crate::session::admission::SecondSight;
use crate::session::{codec, CookieNames, LoadError, Session, SessionCipher, MAX_CHUNKS};
use crate::util::bounded::ExpiringMap;
use crate::util::jose::decode_jwt_payload;
use crate::util::telemetry;

/// Sessions already decrypted and decoded, by the exact encrypted cookie values that
/// carried them: a browser sends the same cookies with every request, so most requests
/// skip decryption, decompression and parsing. Sound because a value decrypts to one
/// plaintext only (authenticated encryption); lifetimes and logouts are still checked on
/// every request. Bounded like every cache here.
pub(crate) struct DecodedSessions {
    map: ExpiringMap<Arc<Decoded>>,
    /// Cookies decoded once recently: a session is cached at the second sight of its
    /// cookies, not the first (see `admission`).
    admission: SecondSight,
    /// Opens the session cookies: Rocket's cookie key, read once from the launched
    /// configuration (`None` if unreadable: Rocket's `get_private` then).
    cipher: OnceLock<Option<SessionCipher>>,
}

pub(crate) struct Decoded {
    /// The cookie values that carried the session, one after the other (one allocation,
    /// compared on every hit)...
    values: Box<str>,
    /// ... and where each ends in `values`.
    ends: [u32; MAX_CHUNKS],
    count: u8,
    session: Arc<Session>,
    claims: Arc<IdTokenClaims>,
}

impl Decoded {
    /// Whether `sent` are exactly the values this session was decoded from.
    fn carried_by<'a>(&self, sent: impl Iterator<Item = &'a str>) -> bool {
        let (mut start, mut n) = (0, 0);
        for value in sent {
            if n == self.count as usize {
                return false;
            }
            let end = self.ends[n] as usize;
            if self.values.get(start..end) != Some(value) {
                return false;
            }
            (start, n) = (end, n + 1);
        }
        n == self.count as usize
    }
}

/// How long a decoded session is kept.
const DECODED_TTL: Duration = Duration::from_secs(300);

impl DecodedSessions {
    pub fn new(capacity: usize) -> DecodedSessions {
        DecodedSessions {
            map: ExpiringMap::new(DECODED_TTL, capacity),
            // Twice the cache: a browser's second request is admitted unless about twice
            // as many other new cookies came between its first two.
            admission: SecondSight::new(capacity.saturating_mul(2)),
            cipher: OnceLock::new(),
        }
    }

    /// Makes the cipher from Rocket's cookie key (read from the launched configuration by
    /// `key`), once: at liftoff or on the first request.
    pub fn init_cipher(&self, key: impl FnOnce() -> Option<cookie::Key>) {
        self.cipher
            .get_or_init(|| key().and_then(|key| SessionCipher::new(&key)));
    }

    /// The cipher that opens and seals session cookies, once read (`init_cipher`); `None`
    /// before, or when Rocket's key could not be read: Rocket's private cookies then.
    pub fn cipher(&self) -> Option<&SessionCipher> {
        self.cipher.get().and_then(Option::as_ref)
    }

    /// The session and claims carried by the request's cookies: `value_of` gives a cookie's
    /// value by name, `read` decrypts and decodes them (with the cipher, when there is one)
    /// when they are not cached.
    pub fn get_or_decode<'v>(
        &self,
        names: &CookieNames,
        value_of: impl Fn(&str) -> Option<&'v str>,
        read: impl FnOnce(Option<&SessionCipher>) -> Result<codec::Read, LoadError>,
    ) -> Result<(Arc<Session>, Arc<IdTokenClaims>, bool), LoadError> {
        let sent = || names.chunks.iter().map_while(|name| value_of(name));
        let first = value_of(names.session()).ok_or(LoadError::Absent)?;
        // Keyed by the end of the first value (its AEAD tag); every value is compared.
        let key = tail(first, 24);
        if let Some(hit) = self.map.get(key).filter(|hit| hit.carried_by(sent())) {
            telemetry::session_cache(true);
            return Ok((hit.session.clone(), hit.claims.clone(), false));
        }
        telemetry::session_cache(false);
        let read = read(self.cipher())?;
        let claims = match read.claims {
            Some(claims) => claims,
            None => decode_jwt_payload(&read.session.id_token)
                .map_err(|_| LoadError::Invalid("unreadable ID token"))?,
        };
        let (s, claims) = (Arc::new(read.session), Arc::new(claims));
        if read.legacy {
            // Written again in this request, under new values: nothing to keep.
            return Ok((s, claims, true));
        }
        if !self.admission.seen_again(key) {
            return Ok((s, claims, false));
        }
        telemetry::session_cache_admitted();
        let mut values = String::with_capacity(sent().map(str::len).sum());
        let mut ends = [0; MAX_CHUNKS];
        let mut count = 0;
        for (value, end) in sent().zip(&mut ends) {
            values.push_str(value);
            // Cookie values fit in a request header, far below 4 GiB.
            *end = u32::try_from(values.len()).unwrap_or(u32::MAX);
            count += 1;
        }
        self.map.insert(
            key,
            Arc::new(Decoded {
                values: values.into_boxed_str(),
                ends,
                count,
                session: s.clone(),
                claims: claims.clone(),
            }),
        );
        Ok((s, claims, false))
    }
}

/// The last `max` bytes of `value` or a little less: never splits a character, because
/// cookie values come from the request and Rocket percent-decodes them into any UTF-8.
pub(crate) fn tail(value: &str, max: usize) -> &str {
    let mut start = value.len().saturating_sub(max);
    while !value.is_char_boundary(start) {
        start += 1;
    }
    &value[start..]
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tails_never_split_a_character() {
        let value = format!("aaaaaaaaaa\u{e9}{}", "b".repeat(23));
        assert_eq!(tail(&value, 24), "b".repeat(23));
        assert_eq!(tail("\u{e9}\u{e9}", 3), "\u{e9}");
        assert_eq!(tail("abc", 24), "abc");
        assert_eq!(tail("", 24), "");
    }
}
