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

#[cfg(test)]
mod tests {
    use super::*;

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
