//! `ReturnPath`: where a browser may be sent after sign-in. Only same-origin relative
//! paths exist as values of this type, so an open redirect cannot be expressed.

use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use url::{Position, Url};

/// Longest accepted return path, in bytes.
pub const MAX_RETURN_PATH: usize = 2048;

/// A same-origin relative path (`/orders?page=2`), already normalised and percent-encoded.
///
/// Rejected: absolute URLs, scheme-relative `//host`, `/\host`, a backslash anywhere,
/// control characters (TAB, CR, LF, ...), the percent-encoded forms of all of these, paths
/// that are not UTF-8, and paths longer than `MAX_RETURN_PATH` (2048).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReturnPath(String);

/// Why a return path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidReturnPath(&'static str);

impl fmt::Display for InvalidReturnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidReturnPath {}

impl From<InvalidReturnPath> for crate::LogtoError {
    fn from(e: InvalidReturnPath) -> crate::LogtoError {
        crate::LogtoError::BadRequest(format!("The return path is refused: it {e}."))
    }
}

fn check_shape(path: &str) -> Result<(), InvalidReturnPath> {
    if !path.starts_with('/') {
        return Err(InvalidReturnPath(
            "must be a relative path starting with `/`",
        ));
    }
    if path.starts_with("//") {
        return Err(InvalidReturnPath("must not start with `//` (another host)"));
    }
    if path.contains('\\') {
        return Err(InvalidReturnPath("must not contain a backslash"));
    }
    if path.chars().any(char::is_control) {
        return Err(InvalidReturnPath("must not contain control characters"));
    }
    Ok(())
}

impl ReturnPath {
    /// Checks `path` (a value already taken out of its query string, so decoded once).
    ///
    /// # Errors
    ///
    /// [`InvalidReturnPath`] saying why, for anything but a same-origin relative path (see
    /// the type's docs for the list).
    pub fn parse(path: &str) -> Result<ReturnPath, InvalidReturnPath> {
        if path.len() > MAX_RETURN_PATH {
            return Err(InvalidReturnPath("is too long"));
        }
        check_shape(path)?;
        // A second decoding catches `%2F%2Fevil`, `%5C` and `%0A`, which browsers and
        // proxies may decode on the way.
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| InvalidReturnPath("is not UTF-8"))?;
        check_shape(&decoded)?;
        let lower = path.to_ascii_lowercase();
        if lower.contains("%2f%2f") || lower.contains("%5c") {
            return Err(InvalidReturnPath(
                "must not contain encoded slashes or backslashes",
            ));
        }
        let base = Url::parse("http://return-path.invalid/").expect("static URL");
        let joined = base
            .join(path)
            .map_err(|_| InvalidReturnPath("is not a valid path"))?;
        if joined.origin() != base.origin() {
            return Err(InvalidReturnPath("must stay on this site"));
        }
        // Dot segments are resolved by the join: `/..//evil` and `/%2e%2e//evil` only
        // become `//evil` now, so the shape is checked again on what will be sent.
        let normalised = &joined[Position::BeforePath..];
        check_shape(normalised).map_err(|_| {
            InvalidReturnPath("must not lead to another host once `.` and `..` are resolved")
        })?;
        let decoded = percent_decode_str(normalised)
            .decode_utf8()
            .map_err(|_| InvalidReturnPath("is not UTF-8"))?;
        check_shape(&decoded).map_err(|_| {
            InvalidReturnPath("must not lead to another host once `.` and `..` are resolved")
        })?;
        // A browser resolves the value again: it must mean the same URL there.
        if base.join(normalised).ok().as_ref() != Some(&joined) {
            return Err(InvalidReturnPath("is not a stable path"));
        }
        Ok(ReturnPath(normalised.to_string()))
    }

    /// The path of `base_url` (`/` for `http://localhost:8000`).
    pub(crate) fn root_of(base_url: &Url) -> ReturnPath {
        ReturnPath::parse(base_url.path()).unwrap_or_else(|_| ReturnPath("/".into()))
    }

    /// A configured target: a relative path, or an absolute URL on `base_url`'s origin.
    pub(crate) fn from_config(target: &str, base_url: &Url) -> Result<ReturnPath, String> {
        match Url::parse(target) {
            Ok(url) if url.origin() == base_url.origin() => {
                ReturnPath::parse(&url[Position::BeforePath..Position::AfterQuery])
                    .map_err(|e| e.to_string())
            }
            Ok(_) => Err(format!(
                "is {target:?}: it must be a path on base_url's origin"
            )),
            Err(_) => ReturnPath::parse(target).map_err(|e| format!("is {target:?}: it {e}")),
        }
    }

    /// The path, ready for a `Location` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReturnPath {
    type Error = InvalidReturnPath;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ReturnPath::parse(&value)
    }
}

impl From<ReturnPath> for String {
    fn from(value: ReturnPath) -> String {
        value.0
    }
}

impl fmt::Display for ReturnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ReturnPath {
    type Err = InvalidReturnPath;

    fn from_str(path: &str) -> Result<ReturnPath, InvalidReturnPath> {
        ReturnPath::parse(path)
    }
}

/// A query or form field (`/go?<next>` with `next: ReturnPath`): a refused path fails the
/// field with the reason, as any form field that does not parse does (Rocket answers 422
/// unless the route takes `Result<ReturnPath, _>` or `Option<ReturnPath>`).
impl<'v> rocket::form::FromFormField<'v> for ReturnPath {
    fn from_value(field: rocket::form::ValueField<'v>) -> rocket::form::Result<'v, ReturnPath> {
        ReturnPath::parse(field.value)
            .map_err(|e| rocket::form::Error::validation(format!("the return path {e}")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_same_origin_paths() {
        for ok in [
            "/",
            "/orders",
            "/orders?page=2&x=%20y",
            "/a/b#frag",
            "/caf%C3%A9",
            "/café",
        ] {
            assert!(ReturnPath::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(ReturnPath::parse("/a b").unwrap().as_str(), "/a%20b");
    }

    #[test]
    fn rejects_every_open_redirect_vector() {
        let long = format!("/{}", "a".repeat(10_000));
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil",
            "https://evil.example",
            "javascript:alert(1)",
            "%2F%2Fevil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%5cevil",
            "/ok\r\nSet-Cookie: x=y",
            "/%0d%0aSet-Cookie:x",
            "/%FF%FE",
            "/..//evil.example",
            "/.//evil.example",
            "/%2e%2e//evil.example",
            "/%2E%2E//evil.example",
            "/%2e//evil.example",
            "/a/../..//evil.example",
            "/./%2e%2e/.//evil.example",
            "/..\\evil.example",
            "evil.example",
            "",
            long.as_str(),
        ] {
            assert!(ReturnPath::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn config_targets_keep_to_the_base_origin() {
        let base = Url::parse("http://localhost:8000").unwrap();
        assert_eq!(
            ReturnPath::from_config("http://localhost:8000/home?x=1", &base)
                .unwrap()
                .as_str(),
            "/home?x=1"
        );
        assert!(ReturnPath::from_config("http://localhost:9000/", &base).is_err());
        assert_eq!(
            ReturnPath::from_config("/dash", &base).unwrap().as_str(),
            "/dash"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from the pieces open redirects are made of: slashes, backslashes, dot
    /// segments (plain and percent-encoded), hosts, schemes, control characters and any
    /// Unicode, plus fully arbitrary strings.
    fn return_path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just("\\".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E%2e".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("evil.example".to_string()),
            Just("http:".to_string()),
            Just("?".to_string()),
            Just("#".to_string()),
            Just("@".to_string()),
            Just("%0a".to_string()),
            "[a-z]{1,4}",
            "\\PC{1,3}",
            "%[0-9a-fA-F]{2}",
        ];
        prop_oneof![
            proptest::collection::vec(piece, 1..10).prop_map(|p| p.concat()),
            "\\PC{0,64}",
            "/[\\x00-\\x7f]{0,64}",
        ]
    }

    proptest! {
        #[test]
        fn an_accepted_return_path_always_stays_on_this_site(path in return_path_like()) {
            if let Ok(accepted) = ReturnPath::parse(&path) {
                let s = accepted.as_str();
                prop_assert!(s.starts_with('/') && !s.starts_with("//") && !s.starts_with("/\\"), "{path:?} -> {s:?}");
                prop_assert!(!s.contains('\\') && !s.chars().any(char::is_control), "{s:?}");
                // No scheme or host, whatever base it is resolved against.
                prop_assert!(Url::parse(s).is_err(), "{s:?} parses as an absolute URL");
                for base in ["http://site.invalid/", "https://site.invalid/app/page"] {
                    let base = Url::parse(base).unwrap();
                    let resolved = base.join(s).unwrap();
                    prop_assert_eq!(resolved.origin(), base.origin());
                    prop_assert_eq!(resolved.host_str(), Some("site.invalid"));
                }
                // Parsing is idempotent: what is stored reads back as itself.
                let again = ReturnPath::parse(s);
                prop_assert_eq!(again.as_ref().map(ReturnPath::as_str), Ok(s));
            }
        }
    }
}
