//! The session in the request's cookies: read from Rocket's jar and written back to it,
//! with the chunking, sealing and codec of `session`.

use rocket::http::CookieJar;

use crate::config::LogtoConfig;
use crate::session::codec;
use crate::session::{
    base_cookie, decode, decode_with, encode, encode_raw, removal, CookieNames, LoadError, Session,
    SessionCipher, TooLarge,
};

/// Reads the session from the request's cookies (lifetimes are checked by the caller),
/// opening them with `cipher` (Rocket's `get_private` without it).
///
/// Each chunk's plaintext starts with `<generation>.<index>.<count>.`: a chunk from an
/// older write (a stale or replayed cookie) has another generation and is refused, so a
/// session is never assembled from two writes.
pub(crate) fn read(
    jar: &CookieJar<'_>,
    names: &CookieNames,
    cipher: Option<&SessionCipher>,
) -> Result<codec::Read, LoadError> {
    if jar.get(names.session()).is_none() {
        return Err(LoadError::Absent);
    }
    match cipher {
        Some(cipher) => decode_with(|i, out| {
            let name = names.chunks[i];
            cipher.open_into(name, jar.get(name)?.value(), out)
        }),
        None => decode(|i| {
            jar.get_private(names.chunks[i])
                .map(|c| c.value().to_string())
        }),
    }
}

/// Writes `session` into private cookies and removes chunks of an earlier, longer write:
/// sealed here with `cipher` (the session's bytes as they are), or without it by Rocket's
/// `add_private` (packed into text).
pub(crate) fn store(
    jar: &CookieJar<'_>,
    session: &Session,
    config: &LogtoConfig,
    cipher: Option<&SessionCipher>,
) -> Result<(), TooLarge> {
    let names = CookieNames::of(config);
    let count = match cipher {
        Some(cipher) => {
            let chunks = encode_raw(session)?;
            for (i, plain) in chunks.iter().enumerate() {
                let name = names.chunks[i];
                let sealed = cipher.seal(name, plain);
                jar.add(base_cookie(name.to_string(), sealed, config));
            }
            chunks.len()
        }
        None => {
            let chunks = encode(session)?;
            let count = chunks.len();
            for (i, value) in chunks.into_iter().enumerate() {
                jar.add_private(base_cookie(names.chunks[i].to_string(), value, config));
            }
            count
        }
    };
    for name in &names.chunks[count..] {
        if jar.get(name).is_some() {
            jar.remove(removal(name, config));
        }
    }
    Ok(())
}

/// Removes every session cookie the browser sent (and any this response was adding).
pub(crate) fn clear(jar: &CookieJar<'_>, config: &LogtoConfig) {
    for name in present_session_cookies(jar, CookieNames::of(config)) {
        jar.remove(removal(name, config));
    }
}

/// Names of the session cookies in the request.
pub(crate) fn present_session_cookies(
    jar: &CookieJar<'_>,
    names: &CookieNames,
) -> Vec<&'static str> {
    names
        .chunks
        .iter()
        .filter(|n| jar.get(n).is_some())
        .copied()
        .collect()
}
