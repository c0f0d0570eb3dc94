//! Sign-in options chosen per link, as `@logto/express`'s `signIn(res, options)` chooses
//! them per call: which screen Logto opens on, a pre-filled identifier, a social or SSO
//! connector to go straight to, an organization, the UI language, and for a step-up how
//! recent the sign-in must be (`max_age`) or that Logto must ask again (`prompt=login`).
//! Each is checked when it
//! is made, and refuses a value Logto would not accept; [`SignIn`](crate::SignIn) builds
//! them in a route, and `/logto/sign-in?...` reads them from its query string.

use std::fmt;

use crate::error::LogtoError;
use crate::return_path::ReturnPath;

/// Longest `login_hint`, in characters: an email address is at most 254.
pub const MAX_LOGIN_HINT: usize = 256;
/// Longest connector target, organization id or language list, in characters.
const MAX_OPTION: usize = 128;
/// Largest `max_age`, in seconds: a year. A longer one asks for nothing a session
/// (at most `session_max_age`) does not already have, and its digits bound the parse.
pub const MAX_MAX_AGE_SECS: u64 = 366 * 24 * 3600;

/// The screen Logto's sign-in experience opens on (`first_screen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirstScreen {
    /// `sign_in`: the sign-in form (Logto's default).
    SignIn,
    /// `register`: the registration form (what `/logto/sign-up` opens).
    Register,
    /// `reset_password`: the "forgot password" flow.
    ResetPassword,
    /// `identifier:sign_in`: sign-in by identifier only.
    IdentifierSignIn,
    /// `identifier:register`: registration by identifier only.
    IdentifierRegister,
    /// `single_sign_on`: enterprise SSO by email domain.
    SingleSignOn,
}

impl FirstScreen {
    /// Every screen, in the order of Logto's docs.
    pub const ALL: &'static [FirstScreen] = &[
        FirstScreen::SignIn,
        FirstScreen::Register,
        FirstScreen::ResetPassword,
        FirstScreen::IdentifierSignIn,
        FirstScreen::IdentifierRegister,
        FirstScreen::SingleSignOn,
    ];

    /// The value sent to Logto.
    pub fn as_str(self) -> &'static str {
        match self {
            FirstScreen::SignIn => "sign_in",
            FirstScreen::Register => "register",
            FirstScreen::ResetPassword => "reset_password",
            FirstScreen::IdentifierSignIn => "identifier:sign_in",
            FirstScreen::IdentifierRegister => "identifier:register",
            FirstScreen::SingleSignOn => "single_sign_on",
        }
    }

    /// The screen named `value`, as Logto spells it.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] naming the screens Logto knows, for any other value.
    pub fn parse(value: &str) -> Result<FirstScreen, InvalidSignInOption> {
        FirstScreen::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| {
                let names: Vec<&str> = FirstScreen::ALL.iter().map(|s| s.as_str()).collect();
                InvalidSignInOption(format!(
                    "`first_screen` must be one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for FirstScreen {
    /// Logto's spelling, as [`FirstScreen::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FirstScreen {
    type Err = InvalidSignInOption;

    fn from_str(value: &str) -> Result<FirstScreen, InvalidSignInOption> {
        FirstScreen::parse(value)
    }
}

/// Why a sign-in option was refused; as a [`LogtoError`] it is a 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSignInOption(String);

impl fmt::Display for InvalidSignInOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidSignInOption {}

impl From<InvalidSignInOption> for LogtoError {
    fn from(e: InvalidSignInOption) -> LogtoError {
        LogtoError::BadRequest(format!("The sign-in link is refused: {e}."))
    }
}

fn refuse(why: impl Into<String>) -> InvalidSignInOption {
    InvalidSignInOption(why.into())
}

/// A connector id, organization id or similar: letters, digits, `-`, `_` and `.`, so
/// that it can be neither a URL nor carry spaces or control characters.
fn check_name(key: &str, value: &str) -> Result<(), InvalidSignInOption> {
    if value.is_empty() || value.chars().count() > MAX_OPTION {
        return Err(refuse(format!(
            "`{key}` must have 1 to {MAX_OPTION} characters"
        )));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(refuse(format!(
            "`{key}` may only hold letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}

fn check_max_age(secs: u64) -> Result<u64, InvalidSignInOption> {
    if secs > MAX_MAX_AGE_SECS {
        return Err(refuse(format!(
            "`max_age` must be at most {MAX_MAX_AGE_SECS} seconds (a year)"
        )));
    }
    Ok(secs)
}

/// `max_age` from a query string: decimal digits only (no sign, no spaces), as OIDC Core
/// 3.1.2.1 defines it.
fn parse_max_age(value: &str) -> Result<u64, InvalidSignInOption> {
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse(
            "`max_age` must be a whole number of seconds, e.g. `300`",
        ));
    }
    check_max_age(
        value
            .parse()
            .map_err(|_| refuse("`max_age` is too large"))?,
    )
}

fn check_login_hint(value: &str) -> Result<(), InvalidSignInOption> {
    if value.is_empty() || value.chars().count() > MAX_LOGIN_HINT {
        return Err(refuse(format!(
            "`login_hint` must have 1 to {MAX_LOGIN_HINT} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse("`login_hint` must not contain control characters"));
    }
    Ok(())
}

/// `ui_locales`: space-separated language tags (BCP 47 shapes: `en`, `pt-BR`, `zh-Hant-TW`).
fn check_ui_locales(value: &str) -> Result<(), InvalidSignInOption> {
    let tag_ok = |tag: &str| {
        let mut parts = tag.split('-');
        let first = parts.next().unwrap_or_default();
        (2..=8).contains(&first.len())
            && first.chars().all(|c| c.is_ascii_alphabetic())
            && parts
                .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    if value.is_empty() || value.len() > MAX_OPTION || !value.split(' ').all(tag_ok) {
        return Err(refuse(
            "`ui_locales` must be language tags separated by single spaces, e.g. `en` or `fr-CA en`",
        ));
    }
    Ok(())
}

/// Where `direct_sign_in` sends the user: `social:<target>` or `sso:<connector-id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectSignIn(String);

impl DirectSignIn {
    /// Straight to a social connector, e.g. `DirectSignIn::social("google")`.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] for an empty target, one over 128 characters, or one with
    /// characters other than letters, digits, `-`, `_` and `.`.
    pub fn social(target: &str) -> Result<DirectSignIn, InvalidSignInOption> {
        check_name("direct_sign_in", target)?;
        Ok(DirectSignIn(format!("social:{target}")))
    }

    /// Straight to an enterprise SSO connector, by its id.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`], as for [`social`](Self::social).
    pub fn sso(connector_id: &str) -> Result<DirectSignIn, InvalidSignInOption> {
        check_name("direct_sign_in", connector_id)?;
        Ok(DirectSignIn(format!("sso:{connector_id}")))
    }

    /// Reads `social:<target>` or `sso:<connector-id>`.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] for another shape, or a target that
    /// [`social`](Self::social) refuses.
    pub fn parse(value: &str) -> Result<DirectSignIn, InvalidSignInOption> {
        match value.split_once(':') {
            Some(("social", target)) => DirectSignIn::social(target),
            Some(("sso", id)) => DirectSignIn::sso(id),
            _ => Err(refuse(
                "`direct_sign_in` must be `social:<target>` or `sso:<connector-id>`",
            )),
        }
    }

    /// The value sent to Logto.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DirectSignIn {
    /// The value sent to Logto, as [`DirectSignIn::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DirectSignIn {
    type Err = InvalidSignInOption;

    fn from_str(value: &str) -> Result<DirectSignIn, InvalidSignInOption> {
        DirectSignIn::parse(value)
    }
}

/// The options of one sign-in, each already checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SignInOptions {
    pub return_to: Option<ReturnPath>,
    pub first_screen: Option<FirstScreen>,
    pub login_hint: Option<String>,
    pub direct_sign_in: Option<DirectSignIn>,
    pub organization_id: Option<String>,
    pub ui_locales: Option<String>,
    /// Seconds since the user last really signed in at Logto, at most (OIDC `max_age`).
    pub max_age: Option<u64>,
    /// Logto must ask for the credentials again (`prompt=login`), whatever its session.
    pub prompt_login: bool,
}

/// The query parameters `/logto/sign-in` and `/logto/sign-up` accept.
pub(crate) const QUERY_PARAMS: [&str; 8] = [
    "return_to",
    "first_screen",
    "login_hint",
    "direct_sign_in",
    "organization_id",
    "ui_locales",
    "max_age",
    "prompt",
];

impl SignInOptions {
    /// Reads the options from decoded query pairs; `get(name)` gives the one value of a
    /// parameter (refusing repeats), `names` every parameter name present.
    pub fn from_query<'a>(
        names: impl Iterator<Item = &'a str>,
        get: impl Fn(&str) -> Result<Option<&'a str>, LogtoError>,
    ) -> Result<SignInOptions, LogtoError> {
        for name in names {
            if !QUERY_PARAMS.contains(&name) {
                return Err(LogtoError::BadRequest(format!(
                    "The sign-in link is refused: `{}` is not a sign-in option (expected {}).",
                    crate::util::logsafe::for_log(name),
                    QUERY_PARAMS.join(", ")
                )));
            }
        }
        let mut options = SignInOptions::default();
        if let Some(path) = get("return_to")? {
            options.return_to = Some(ReturnPath::parse(path).map_err(|e| {
                LogtoError::BadRequest(format!("The `return_to` path is refused: it {e}."))
            })?);
        }
        if let Some(screen) = get("first_screen")? {
            options.first_screen = Some(FirstScreen::parse(screen)?);
        }
        if let Some(hint) = get("login_hint")? {
            check_login_hint(hint)?;
            options.login_hint = Some(hint.to_string());
        }
        if let Some(direct) = get("direct_sign_in")? {
            options.direct_sign_in = Some(DirectSignIn::parse(direct)?);
        }
        if let Some(org) = get("organization_id")? {
            check_name("organization_id", org)?;
            options.organization_id = Some(org.to_string());
        }
        if let Some(locales) = get("ui_locales")? {
            check_ui_locales(locales)?;
            options.ui_locales = Some(locales.to_string());
        }
        if let Some(secs) = get("max_age")? {
            options.max_age = Some(parse_max_age(secs)?);
        }
        match get("prompt")? {
            None => {}
            Some("login") => options.prompt_login = true,
            // The configured `prompt` covers the others; only a link's step-up adds to it.
            Some(_) => {
                return Err(InvalidSignInOption(
                    "`prompt` may only be `login` in a sign-in link (the others are set by the `prompt` config)".into(),
                )
                .into())
            }
        }
        Ok(options)
    }

    /// The query string of a link to the sign-in route carrying these options.
    fn to_query(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(path) = &self.return_to {
            query.append_pair("return_to", path.as_str());
        }
        if let Some(screen) = self.first_screen {
            query.append_pair("first_screen", screen.as_str());
        }
        if let Some(hint) = &self.login_hint {
            query.append_pair("login_hint", hint);
        }
        if let Some(direct) = &self.direct_sign_in {
            query.append_pair("direct_sign_in", direct.as_str());
        }
        if let Some(org) = &self.organization_id {
            query.append_pair("organization_id", org);
        }
        if let Some(locales) = &self.ui_locales {
            query.append_pair("ui_locales", locales);
        }
        if let Some(secs) = self.max_age {
            query.append_pair("max_age", &secs.to_string());
        }
        if self.prompt_login {
            query.append_pair("prompt", "login");
        }
        query.finish()
    }
}

/// A sign-in with options chosen by the route, like `@logto/express`'s
/// `signIn(res, options)`. As a [`Responder`](rocket::response::Responder) it sends the browser (303) to this app's
/// `/logto/sign-in` with the options, which starts the sign-in; [`SignIn::href`] gives the
/// same link for a page.
///
/// ```
/// use rocket::get;
/// use rocket_logto::{DirectSignIn, FirstScreen, LogtoError, ReturnPath, SignIn};
///
/// /// An invitation link: the registration form, with the address filled in.
/// #[get("/invite?<email>")]
/// fn invite(email: &str) -> Result<SignIn, LogtoError> {
///     Ok(SignIn::new()
///         .first_screen(FirstScreen::Register)
///         .login_hint(email)?
///         .return_to(ReturnPath::parse("/welcome")?))
/// }
///
/// /// "Continue with Google": straight to the social connector.
/// #[get("/sign-in/google")]
/// fn google() -> Result<SignIn, LogtoError> {
///     Ok(SignIn::new().direct_sign_in(DirectSignIn::social("google")?))
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "a SignIn does nothing until a route returns it"]
pub struct SignIn {
    options: SignInOptions,
}

impl SignIn {
    /// A sign-in with the configured options only.
    pub fn new() -> SignIn {
        SignIn::default()
    }

    /// Where the browser lands after signing in.
    pub fn return_to(mut self, path: ReturnPath) -> SignIn {
        self.options.return_to = Some(path);
        self
    }

    /// The screen Logto opens on.
    pub fn first_screen(mut self, screen: FirstScreen) -> SignIn {
        self.options.first_screen = Some(screen);
        self
    }

    /// Pre-fills the identifier (an email address, phone number or username). At most
    /// [`MAX_LOGIN_HINT`] characters, no control characters.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] for an empty or longer hint, or one with control characters.
    pub fn login_hint(mut self, hint: &str) -> Result<SignIn, InvalidSignInOption> {
        check_login_hint(hint)?;
        self.options.login_hint = Some(hint.to_string());
        Ok(self)
    }

    /// Skips Logto's page for a social or SSO connector.
    pub fn direct_sign_in(mut self, direct: DirectSignIn) -> SignIn {
        self.options.direct_sign_in = Some(direct);
        self
    }

    /// Signs in to an organization's sign-in experience (Logto's `organization_id`).
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] for an empty id, one over 128 characters, or one with
    /// characters other than letters, digits, `-`, `_` and `.`.
    pub fn organization_id(mut self, id: &str) -> Result<SignIn, InvalidSignInOption> {
        check_name("organization_id", id)?;
        self.options.organization_id = Some(id.to_string());
        Ok(self)
    }

    /// The languages of Logto's pages, most preferred first (`"fr-CA en"`).
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] unless `locales` is language tags separated by single spaces.
    pub fn ui_locales(mut self, locales: &str) -> Result<SignIn, InvalidSignInOption> {
        check_ui_locales(locales)?;
        self.options.ui_locales = Some(locales.to_string());
        Ok(self)
    }

    /// Asks Logto for a sign-in at most `secs` seconds old (OIDC `max_age`): when the
    /// user's session at Logto is older, Logto asks for the password (or MFA) again. The
    /// callback then refuses an ID token whose `auth_time` is missing or older, so the
    /// return path is reached only after a recent sign-in. This is what
    /// [`RecentSignIn`](crate::RecentSignIn) sends a browser to.
    ///
    /// # Errors
    ///
    /// [`InvalidSignInOption`] for more than [`MAX_MAX_AGE_SECS`] (a year).
    pub fn max_age(mut self, secs: u64) -> Result<SignIn, InvalidSignInOption> {
        self.options.max_age = Some(check_max_age(secs)?);
        Ok(self)
    }

    /// Makes Logto ask for the credentials again whatever its own session (OIDC
    /// `prompt=login`, added to the configured `prompt`).
    pub fn prompt_login(mut self) -> SignIn {
        self.options.prompt_login = true;
        self
    }

    /// The link to this sign-in under the routes' base path (`/logto` by default), e.g.
    /// `/logto/sign-in?first_screen=register&login_hint=...`, for an `href`.
    pub fn href(&self, routes_base: &str) -> String {
        let query = self.options.to_query();
        let base = routes_base.trim_end_matches('/');
        if query.is_empty() {
            format!("{base}/sign-in")
        } else {
            format!("{base}/sign-in?{query}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_logto_accepts_pass_and_others_are_refused_with_the_reason() {
        assert_eq!(FirstScreen::parse("register"), Ok(FirstScreen::Register));
        assert!(FirstScreen::parse("welcome")
            .unwrap_err()
            .to_string()
            .contains("first_screen"));
        assert_eq!(
            DirectSignIn::parse("social:google").unwrap().as_str(),
            "social:google"
        );
        assert_eq!(
            DirectSignIn::sso("abc-123").unwrap().as_str(),
            "sso:abc-123"
        );
        for bad in [
            "google",
            "social:",
            "social:go ogle",
            "social:https://evil.example",
            "sso:a/b",
            "oauth:google",
            "social:\r\nx",
        ] {
            assert!(DirectSignIn::parse(bad).is_err(), "{bad:?}");
        }
        assert!(check_login_hint("a@example.com").is_ok());
        assert!(check_login_hint(&"a".repeat(MAX_LOGIN_HINT + 1)).is_err());
        assert!(check_login_hint("a@example.com\r\nX: y").is_err());
        assert!(check_ui_locales("fr-CA en").is_ok());
        assert!(check_ui_locales("zh-Hant-TW").is_ok());
        for bad in [
            "",
            "en  fr",
            "en_US",
            "<script>",
            "e n",
            "x-".repeat(50).as_str(),
        ] {
            assert!(check_ui_locales(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_carry_the_options_percent_encoded() {
        let link = SignIn::new()
            .first_screen(FirstScreen::Register)
            .login_hint("a+b@example.com")
            .unwrap()
            .return_to(ReturnPath::parse("/welcome?x=1").unwrap())
            .href("/logto");
        assert_eq!(
            link,
            "/logto/sign-in?return_to=%2Fwelcome%3Fx%3D1&first_screen=register&login_hint=a%2Bb%40example.com"
        );
        assert_eq!(SignIn::new().href("/app/logto/"), "/app/logto/sign-in");
        assert_eq!(
            SignIn::new()
                .max_age(300)
                .unwrap()
                .prompt_login()
                .href("/logto"),
            "/logto/sign-in?max_age=300&prompt=login"
        );
    }

    #[test]
    fn max_age_and_prompt_are_checked() {
        assert_eq!(parse_max_age("300"), Ok(300));
        assert_eq!(parse_max_age("0"), Ok(0));
        for bad in [
            "",
            "-1",
            "+5",
            " 5",
            "5s",
            "1e3",
            "99999999999999999999",
            "31708801",
        ] {
            assert!(parse_max_age(bad).is_err(), "{bad:?}");
        }
        assert!(SignIn::new().max_age(MAX_MAX_AGE_SECS + 1).is_err());
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            SignInOptions::from_query(pairs.iter().map(|(k, _)| *k), move |name| {
                Ok(pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
            })
        };
        let options = get(&[("max_age", "60"), ("prompt", "login")]).unwrap();
        assert_eq!((options.max_age, options.prompt_login), (Some(60), true));
        let refused = get(&[("prompt", "none")]).unwrap_err();
        assert!(refused.to_string().contains("`prompt`"), "{refused}");
    }
}
