//! Text from outside (a callback's `error_description`, a claim) made safe for one log
//! line: control characters escaped, so a CR/LF cannot forge another line, and length
//! bounded, so one request cannot flood the log.

/// Longest value written to a log line, in characters.
pub(crate) const MAX_LOGGED_CHARS: usize = 200;

/// `text` with every control or line-separating character escaped (`\n`, `\u{2028}`, ...)
/// and cut to [`MAX_LOGGED_CHARS`] characters, marked with `…` when cut.
pub(crate) fn for_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOGGED_CHARS + 8));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_LOGGED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A short, stable stand-in for a secret or an identifier that must not be logged in full
/// (a session id, a token, a key name holding a token's fingerprint): `#` and the first 8
/// hex digits of its SHA-256. Enough to tell values apart and to follow one through the
/// log; an operator who holds the full value finds its lines with
/// `printf %s "$value" | sha256sum | cut -c1-8`. Eight digits of a hash say nothing usable
/// about a random value of 16 bytes or more.
pub(crate) fn short_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(9);
    out.push('#');
    for byte in &digest[..4] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_hash_is_a_prefix_of_the_sha256_in_hex() {
        // printf %s abc | sha256sum
        assert_eq!(short_hash("abc"), "#ba7816bf");
        assert_ne!(short_hash("session-a"), short_hash("session-b"));
    }

    #[test]
    fn line_breaks_are_escaped_and_length_is_bounded() {
        assert_eq!(
            for_log("denied\r\nINFO forged line"),
            "denied\\r\\nINFO forged line"
        );
        assert_eq!(for_log("a\u{2028}b\u{1b}[31m"), "a\\u{2028}b\\u{1b}[31m");
        let long = "x".repeat(10_000);
        let logged = for_log(&long);
        assert_eq!(logged.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(logged.ends_with('…'));
        assert_eq!(for_log("plain text"), "plain text");
    }
}
