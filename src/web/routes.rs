//! The auth routes the fairing mounts under `/<routes_prefix>`: sign-in, sign-up, the
//! sign-in callback and sign-out.

use std::io::Cursor;

use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use percent_encoding::percent_decode_str;
use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};
use rocket::{get, post, Route, State};
use url::Url;

use crate::config::LogtoConfig;
use crate::error::LogtoError;
use crate::oidc::provider::{Discovery, ProviderError};
use crate::session::{self, CachedToken, Session};
use crate::sign_in_options::{DirectSignIn, FirstScreen, SignInOptions};
use crate::util::clock::now;
use crate::util::log_limit::{limited, LogLimit};
use crate::util::logsafe::for_log;
use crate::util::telemetry::{self, SignInFailure};
use crate::web::context::RequestSession;
use crate::web::hooks::{SignInDecision, SignedIn};
use crate::web::session_cookies;
use crate::web::state::LogtoState;
use crate::web::transaction::{self, TakeError, Transaction};
use crate::web::user_tokens;

pub(crate) fn routes() -> Vec<Route> {
    rocket::routes![
        sign_in,
        sign_up,
        sign_in_callback,
        sign_out,
        sign_out_post,
        backchannel_logout
    ]
}

/// A 303 redirect that must not be cached nor leak its URL through `Referer`.
pub(crate) struct AuthRedirect(pub String);

impl<'r> Responder<'r, 'static> for AuthRedirect {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .status(Status::SeeOther)
            .header(Header::new("Location", self.0))
            .header(Header::new("Cache-Control", "no-store"))
            .header(Header::new("Referrer-Policy", "no-referrer"))
            .sized_body(0, Cursor::new(Vec::new()))
            .ok()
    }
}

/// The query string decoded strictly: every value UTF-8, duplicates kept so that callers
/// can refuse them.
pub(crate) struct Query(Result<Vec<(String, String)>, &'static str>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| "a query parameter is not UTF-8")
            };
            match (decode(k), decode(v)) {
                (Ok(k), Ok(v)) => pairs.push((k, v)),
                (Err(e), _) | (_, Err(e)) => return Query(Err(e)),
            }
        }
        Query(Ok(pairs))
    }

    /// The names of the parameters present (none when the query is malformed: then
    /// [`Query::single`] tells why).
    fn names(&self) -> impl Iterator<Item = &str> {
        self.0
            .as_ref()
            .map(|pairs| pairs.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| k.as_str())
    }

    /// The one value of `name`: `Ok(None)` when absent, an error when repeated.
    fn single(&self, name: &str) -> Result<Option<&str>, LogtoError> {
        let pairs = self
            .0
            .as_ref()
            .map_err(|e| LogtoError::BadRequest(format!("The request is malformed: {e}.")))?;
        let mut values = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(LogtoError::BadRequest(format!(
                "The parameter `{name}` appears more than once."
            )));
        }
        Ok(first)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Query {
    type Error = std::convert::Infallible;
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(Query::parse(request.uri().query().map(|q| q.as_str())))
    }
}

/// `GET /logto/sign-in`, with the options of [`SignInOptions::from_query`].
#[get("/sign-in")]
async fn sign_in(
    query: Query,
    state: &State<LogtoState>,
    jar: &CookieJar<'_>,
) -> Result<AuthRedirect, LogtoError> {
    let options = SignInOptions::from_query(query.names(), |name| query.single(name))?;
    start_sign_in(options, state, jar).await
}

/// `GET /logto/sign-up`: the same, opening Logto's registration screen.
#[get("/sign-up")]
async fn sign_up(
    query: Query,
    state: &State<LogtoState>,
    jar: &CookieJar<'_>,
) -> Result<AuthRedirect, LogtoError> {
    let mut options = SignInOptions::from_query(query.names(), |name| query.single(name))?;
    match options.first_screen {
        None | Some(FirstScreen::Register) => options.first_screen = Some(FirstScreen::Register),
        Some(other) => {
            return Err(LogtoError::BadRequest(format!(
                "The sign-up link is refused: it opens the registration screen, not `{}`; use /sign-in for that.",
                other.as_str()
            )))
        }
    }
    start_sign_in(options, state, jar).await
}

async fn start_sign_in(
    options: SignInOptions,
    state: &LogtoState,
    jar: &CookieJar<'_>,
) -> Result<AuthRedirect, LogtoError> {
    let config = &state.config;
    let return_to = options
        .return_to
        .clone()
        .unwrap_or_else(|| config.post_sign_in_redirect.clone());
    let discovery = state.provider.discovery().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let tx = Transaction {
        state: CsrfToken::new_random().secret().clone(),
        nonce: Nonce::new_random().secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        return_to,
        created_at: now(),
        max_age: options.max_age,
    };
    let url = authorize_url(config, &discovery, &tx, challenge.as_str(), &options);
    transaction::store(jar, &tx, config);
    telemetry::sign_in_started();
    log::info!("logto: event=sign_in outcome=started: sign-in started");
    Ok(AuthRedirect(url.into()))
}

/// The authorize URL, with the parameters in the order Logto's JS SDK sends them (see
/// LOGTO_WIRE.md); a link's options win over the configured ones.
fn authorize_url(
    config: &LogtoConfig,
    d: &Discovery,
    tx: &Transaction,
    challenge: &str,
    options: &SignInOptions,
) -> Url {
    let mut url = d.doc.authorization_endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &config.app_id)
            .append_pair("redirect_uri", &config.redirect_uri())
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &tx.state)
            .append_pair("nonce", &tx.nonce)
            .append_pair("response_type", "code")
            .append_pair("prompt", &prompt(&config.prompt, options.prompt_login))
            .append_pair("scope", &config.requested_scopes().join(" "));
        if let Some(hint) = options.login_hint.as_ref().or(config.login_hint.as_ref()) {
            q.append_pair("login_hint", hint);
        }
        let direct = options
            .direct_sign_in
            .as_ref()
            .or(config.direct_sign_in.as_ref());
        if let Some(direct) = direct.map(DirectSignIn::as_str) {
            q.append_pair("direct_sign_in", direct);
        }
        for resource in &config.resources {
            q.append_pair("resource", resource);
        }
        if let Some(screen) = options.first_screen.or(config.first_screen) {
            q.append_pair("first_screen", screen.as_str());
        }
        if !config.identifiers.is_empty() {
            q.append_pair("identifier", &config.identifiers.join(" "));
        }
        let max_age = options.max_age.map(|secs| secs.to_string());
        let per_link = [
            ("organization_id", options.organization_id.as_deref()),
            ("ui_locales", options.ui_locales.as_deref()),
            ("max_age", max_age.as_deref()),
        ];
        for (key, value) in per_link {
            if let Some(value) = value {
                q.append_pair(key, value);
            }
        }
        for (k, v) in &config.extra_params {
            if !per_link
                .iter()
                .any(|(key, value)| key == k && value.is_some())
            {
                q.append_pair(k, v);
            }
        }
    }
    url
}

/// The `prompt` sent: the configured one, with `login` first when the link asks Logto to
/// ask again (`none` dropped: Logto refuses it next to another value).
fn prompt(configured: &str, login: bool) -> String {
    if !login || configured.split(' ').any(|p| p == "login") {
        return configured.to_string();
    }
    std::iter::once("login")
        .chain(
            configured
                .split(' ')
                .filter(|p| *p != "none" && !p.is_empty()),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// OIDC Core 3.1.2.1 and 3.1.3.7: when the sign-in asked for `max_age`, the ID token must
/// say when the user signed in (`auth_time`), and that must be within `max_age` (plus the
/// allowed clock skew). Otherwise a provider that ignored `max_age` would pass a stale
/// sign-in off as the step-up the route asked for.
fn check_auth_time(
    max_age: Option<u64>,
    auth_time: Option<i64>,
    now: i64,
    skew: i64,
) -> Result<(), LogtoError> {
    let Some(max_age) = max_age else {
        return Ok(());
    };
    let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
    match auth_time {
        None => Err(LogtoError::BadRequest(
            "The sign-in asked for a recent sign-in (`max_age`), but Logto's ID token does not say when you signed in (`auth_time`); start again.".into(),
        )),
        Some(t) if t > now.saturating_add(skew) => Err(LogtoError::BadRequest(
            "The sign-in is refused: Logto's ID token says you signed in in the future (`auth_time`); start again.".into(),
        )),
        Some(t) if now.saturating_sub(t) > max_age.saturating_add(skew) => {
            Err(LogtoError::BadRequest(format!(
                "The sign-in is refused: it needed a sign-in within the last {max_age} seconds (`max_age`), but Logto's ID token says you signed in {} seconds ago (`auth_time`); start again.",
                now.saturating_sub(t)
            )))
        }
        Some(_) => Ok(()),
    }
}

#[get("/sign-in-callback")]
async fn sign_in_callback(
    query: Query,
    state: &State<LogtoState>,
    jar: &CookieJar<'_>,
    agent: UserAgent,
    request: TheRequest<'_>,
) -> Result<AuthRedirect, LogtoError> {
    // Set before each step, so that a failure is counted under the step that failed.
    let mut step = SignInFailure::BadAnswer;
    let result = complete_sign_in(&query, state, jar, agent.0, request.0, &mut step).await;
    match &result {
        Ok(_) => telemetry::sign_in_completed(),
        Err(e) => {
            telemetry::sign_in_failed(step);
            // Anyone can send a callback: rate-limited.
            limited!(
                CALLBACK_REFUSED,
                warn,
                "logto: event=sign_in outcome=refused reason={}: sign-in callback refused: {}",
                step.label(),
                for_log(e.detail())
            );
        }
    }
    result
}

/// The log lines of refused sign-in callbacks.
static CALLBACK_REFUSED: LogLimit = LogLimit::new("sign_in_refused");
/// The log lines of refused back-channel logouts.
static LOGOUT_REFUSED: LogLimit = LogLimit::new("backchannel_logout_refused");

/// The request itself, for the app's sign-in hook (which reaches state and guards through it).
struct TheRequest<'r>(&'r Request<'r>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for TheRequest<'r> {
    type Error = std::convert::Infallible;
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(TheRequest(request))
    }
}

/// The browser's `User-Agent` (200 characters at most), kept with a Redis session.
struct UserAgent(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for UserAgent {
    type Error = std::convert::Infallible;
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(UserAgent(crate::web::redis_session::user_agent(request)))
    }
}

async fn complete_sign_in(
    query: &Query,
    state: &LogtoState,
    jar: &CookieJar<'_>,
    user_agent: Option<String>,
    request: &Request<'_>,
    step: &mut SignInFailure,
) -> Result<AuthRedirect, LogtoError> {
    let config = &state.config;
    // Read every parameter first: a repeated one fails before anything else happens.
    let state_param = query.single("state")?;
    let code = query.single("code")?;
    let iss = query.single("iss")?;
    let error = query.single("error")?;
    let error_description = query.single("error_description")?;

    let state_param = state_param
        .ok_or_else(|| LogtoError::BadRequest("The sign-in answer has no `state`.".into()))?;
    *step = SignInFailure::State;
    let tx = transaction::take(jar, state_param, &state.spent, config).map_err(|e| {
        LogtoError::BadRequest(
            match e {
                TakeError::Missing => "No sign-in is in progress for this answer (unknown or used `state`); start again.",
                TakeError::Expired => "This sign-in took too long (more than 10 minutes); start again.",
                TakeError::Replayed => "This sign-in answer was already used; start again.",
            }
            .into(),
        )
    })?;
    if let Some(error) = error {
        *step = SignInFailure::ProviderError;
        // Both come from the query string: escaped and bounded before they reach the
        // message, which is logged.
        let detail = error_description
            .map(|d| format!(": {}", for_log(d)))
            .unwrap_or_default();
        return Err(LogtoError::BadRequest(format!(
            "Logto did not sign you in ({}{detail}).",
            for_log(error)
        )));
    }
    *step = SignInFailure::BadAnswer;
    let code =
        code.ok_or_else(|| LogtoError::BadRequest("The sign-in answer has no `code`.".into()))?;

    *step = SignInFailure::Unavailable;
    let discovery = state.provider.discovery().await?;
    *step = SignInFailure::Issuer;
    match iss {
        Some(iss) if iss != state.provider.issuer() => {
            return Err(LogtoError::BadRequest(
                "The sign-in answer comes from another issuer (`iss`).".into(),
            ))
        }
        None if discovery.doc.authorization_response_iss_parameter_supported => {
            return Err(LogtoError::BadRequest(
                "The sign-in answer lacks the `iss` Logto always sends.".into(),
            ))
        }
        _ => {}
    }

    let tokens = state
        .provider
        .exchange_code(&discovery, code, &tx.pkce_verifier)
        .await
        .map_err(|e| match e {
            e if e.is_invalid_grant() => {
                *step = SignInFailure::Code;
                LogtoError::BadRequest(
                    "Logto refused the sign-in code (used or expired); start again.".into(),
                )
            }
            e => {
                *step = match e {
                    ProviderError::Refused { .. } => SignInFailure::Code,
                    _ => SignInFailure::Unavailable,
                };
                LogtoError::from(e)
            }
        })?;
    *step = SignInFailure::IdToken;
    let id_token = tokens.id_token.ok_or_else(|| {
        LogtoError::bad_gateway("Logto returned no ID token; is the `openid` scope granted?")
    })?;
    let claims = state
        .provider
        .verify_id_token(&discovery, &id_token, Some(&tx.nonce))
        .await?;
    let now = now();
    let skew = i64::try_from(config.clock_skew.as_secs()).unwrap_or(60);
    check_auth_time(tx.max_age, claims.auth_time(), now, skew)?;

    // A step-up of the same user keeps the tokens already fetched (they were issued to
    // this user and are no less valid for the new sign-in); any other sign-in starts
    // from scratch, so nothing of a previous session (another user's tokens) survives.
    let kept = match tx.max_age {
        Some(_) => {
            let previous = RequestSession::of(request, state).await;
            match previous.claims() {
                Some(old) if old.sub == claims.sub && old.iss == claims.iss => {
                    previous.session.lock().await.clone()
                }
                _ => None,
            }
        }
        None => None,
    };
    session_cookies::clear(jar, config);
    let mut new_session = Session {
        id_token: id_token.into(),
        refresh_token: tokens.refresh_token,
        userinfo_token: Some(CachedToken {
            resource: None,
            organization: None,
            token: tokens.access_token.into(),
            expires_at: now + tokens.expires_in.unwrap_or(3600) as i64,
        }),
        tokens: Vec::new(),
        user_info: None,
        created_at_ms: crate::util::clock::now_ms(),
        seen_at: now,
    };
    if let Some(kept) = kept {
        new_session.tokens = kept.tokens.clone();
        if new_session.refresh_token.is_none() {
            new_session.refresh_token = kept.refresh_token.clone();
        }
        if new_session.user_info.is_none() {
            new_session.user_info = kept.user_info.clone();
        }
        log::info!(
            "logto: user {} signed in again (step-up); the session keeps its tokens",
            for_log(&claims.sub)
        );
    }
    if config.fetch_user_info {
        let token = new_session
            .userinfo_token
            .as_ref()
            .map(|t| t.token.to_string())
            .unwrap_or_default();
        match state.provider.userinfo(&discovery, &token).await {
            Ok(value) => match user_tokens::user_info_for(value.clone(), &claims) {
                Ok(_) => new_session.user_info = Some(value),
                Err(e) => log::warn!("logto: user info after sign-in discarded: {}", e.detail()),
            },
            Err(e) => log::warn!(
                "logto: fetching user info after sign-in failed: {}",
                LogtoError::from(e).detail()
            ),
        }
    }
    let mut return_to = tx.return_to;
    if let Some(hook) = &state.on_sign_in {
        let signed_in = SignedIn {
            user_info: new_session
                .user_info
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            claims: claims.clone(),
            return_to: return_to.clone(),
            has_refresh_token: new_session.refresh_token.is_some(),
        };
        match hook(signed_in, request).await {
            Ok(SignInDecision::Continue) => {}
            Ok(SignInDecision::RedirectTo(path)) => return_to = path,
            Err(refusal) => {
                *step = SignInFailure::App;
                log::warn!(
                    "logto: event=sign_in outcome=refused reason=app_refused user={}: the app refused the sign-in: {}",
                    for_log(&claims.sub),
                    for_log(refusal.message())
                );
                if let Some(rt) = &new_session.refresh_token {
                    state.provider.revoke(&discovery, rt).await;
                }
                // Its own status (403): a 401 would send the browser back to sign-in, and
                // so back to this refusal.
                return Err(refusal.into());
            }
        }
    }
    *step = SignInFailure::Session;
    if config.session_store == crate::config::SessionStoreKind::Redis {
        // A new id whatever the browser sent (session fixation); a session over its limit
        // is written without its user info (see `start`).
        crate::web::redis_session::start(state, jar, &new_session, user_agent).await?;
        log::info!(
            "logto: event=sign_in outcome=ok user={}: user signed in",
            for_log(&claims.sub)
        );
        return Ok(AuthRedirect(return_to.as_str().to_string()));
    }
    let _ = user_agent;
    if session_cookies::store(jar, &new_session, config, state.decoded.cipher()).is_err()
        && new_session.user_info.is_some()
    {
        // A large userinfo answer (custom data, many identities) must not cost the
        // sign-in: it is left out and fetched when asked for.
        log::warn!(
            "logto: the user info of user {} does not fit in the session cookies; it is left out and fetched on demand",
            for_log(&claims.sub)
        );
        new_session.user_info = None;
    }
    if let Err(session::TooLarge(bytes)) =
        session_cookies::store(jar, &new_session, config, state.decoded.cipher())
    {
        return Err(LogtoError::Config(format!(
            "The session ({bytes} bytes) does not fit in cookies."
        )));
    }
    log::info!(
        "logto: event=sign_in outcome=ok user={}: user signed in",
        for_log(&claims.sub)
    );
    Ok(AuthRedirect(return_to.as_str().to_string()))
}

/// `GET /logto/sign-out`: a link in the app's own pages. A cross-site GET (any site can
/// link or embed it) only shows a page asking to confirm, which posts back here.
#[get("/sign-out")]
async fn sign_out(
    context: SignOutContext<'_>,
    site: RequestSite,
    jar: &CookieJar<'_>,
) -> SignOutAnswer {
    end_session(context, site, jar).await
}

/// `POST /logto/sign-out`: a sign-out form of the app, or the confirmation page's.
#[post("/sign-out")]
async fn sign_out_post(
    context: SignOutContext<'_>,
    site: RequestSite,
    jar: &CookieJar<'_>,
) -> SignOutAnswer {
    end_session(context, site, jar).await
}

async fn end_session(
    context: SignOutContext<'_>,
    site: RequestSite,
    jar: &CookieJar<'_>,
) -> SignOutAnswer {
    let SignOutContext {
        state,
        session,
        path,
    } = context;
    let config = &state.config;
    let mut guard = session.session.lock().await;
    if guard.is_some() && site == RequestSite::CrossSite {
        log::info!("logto: cross-site sign-out refused; asking the user to confirm");
        return SignOutAnswer::Confirm { action: path };
    }
    let ended = guard.take();
    session.sign_out(&mut guard, jar, state).await;
    let Some(ended) = ended else {
        return SignOutAnswer::Redirect(AuthRedirect(config.post_sign_out_redirect.to_string()));
    };
    let claims = crate::util::jose::decode_jwt_payload::<crate::IdTokenClaims>(&ended.id_token);
    let sub = claims.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
    if let Ok(claims) = &claims {
        // Copies of this session's cookies (taken before, or still in flight) are refused
        // from now on, on every instance.
        state.logouts.end_session(claims, ended.created_at_ms).await;
    }
    telemetry::sign_out();
    log::info!(
        "logto: event=sign_out user={}: user signed out",
        for_log(&sub)
    );
    let discovery = match state.provider.discovery().await {
        Ok(d) => d,
        Err(e) => {
            log::warn!(
                "logto: sign-out could not reach Logto ({}); signed out locally only",
                e.detail()
            );
            return SignOutAnswer::Redirect(AuthRedirect(
                config.post_sign_out_redirect.to_string(),
            ));
        }
    };
    if let Some(rt) = &ended.refresh_token {
        state.provider.revoke(&discovery, rt).await;
    }
    match &discovery.doc.end_session_endpoint {
        // No `id_token_hint`: it is the ID token, with the user's claims, and a URL would
        // leave it in the history, proxy logs and `Referer` headers. Logto does not need
        // it: `client_id` names the app, the post-logout URI is checked against it, and
        // Logto's own cookie names its session. Posting the hint instead is no option:
        // Logto's end-session endpoint answers GET only (oidc-provider serves POST only
        // with `SameSite=None` cookies, which Logto does not use).
        Some(endpoint) => {
            let mut url = endpoint.clone();
            url.query_pairs_mut()
                .append_pair("client_id", &config.app_id)
                .append_pair(
                    "post_logout_redirect_uri",
                    config.post_sign_out_redirect.as_str(),
                );
            SignOutAnswer::Redirect(AuthRedirect(url.into()))
        }
        None => SignOutAnswer::Redirect(AuthRedirect(config.post_sign_out_redirect.to_string())),
    }
}

/// Where a request comes from, as far as the browser says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestSite {
    /// Same origin or site, typed in, or a client that says nothing (curl, old browsers).
    Ours,
    /// `Sec-Fetch-Site: cross-site`, or an `Origin` other than `base_url`'s.
    CrossSite,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for RequestSite {
    type Error = std::convert::Infallible;
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(state) = request.rocket().state::<LogtoState>() else {
            return Outcome::Success(RequestSite::Ours);
        };
        let headers = request.headers();
        // The browser's own word first: pages cannot set `Sec-Fetch-Site`. Without it
        // (older browsers), a foreign `Origin`; `Origin: null` (a sandboxed frame, a
        // redirect chain) is foreign too. A client sending neither is not a browser
        // driven by another site.
        let cross_site = match headers.get_one("Sec-Fetch-Site") {
            Some(site) => site.eq_ignore_ascii_case("cross-site"),
            None => {
                let ours = state.config.base_url.origin().ascii_serialization();
                headers
                    .get_one("Origin")
                    .is_some_and(|origin| !origin.eq_ignore_ascii_case(&ours))
            }
        };
        Outcome::Success(if cross_site {
            RequestSite::CrossSite
        } else {
            RequestSite::Ours
        })
    }
}

/// The sign-out answers.
enum SignOutAnswer {
    /// To Logto's end-session endpoint, or back to the app.
    Redirect(AuthRedirect),
    /// Ask before signing out: the request came from another site.
    Confirm { action: String },
}

impl<'r> Responder<'r, 'static> for SignOutAnswer {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let action = match self {
            SignOutAnswer::Redirect(redirect) => return redirect.respond_to(request),
            SignOutAnswer::Confirm { action } => action,
        };
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign out?</title></head>\
             <body><h1>Sign out?</h1><p>Another site asked to sign you out of this app.</p>\
             <form method=\"post\" action=\"{action}\"><button type=\"submit\" id=\"confirm-sign-out\">Sign out</button></form>\
             <p><a href=\"/\">Stay signed in</a></p></body></html>",
            action = crate::web::error_page::html_escape(&action)
        );
        Response::build()
            .status(Status::Ok)
            .header(rocket::http::ContentType::HTML)
            .header(Header::new("Cache-Control", "no-store"))
            .header(Header::new("Referrer-Policy", "no-referrer"))
            .header(Header::new(
                "Content-Security-Policy",
                "default-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ))
            .sized_body(html.len(), Cursor::new(html))
            .ok()
    }
}

/// The state and this request's session, for sign-out.
struct SignOutContext<'r> {
    state: &'r LogtoState,
    session: &'r RequestSession,
    /// This route's path, where the confirmation form posts back.
    path: String,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SignOutContext<'r> {
    type Error = LogtoError;
    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
        match request.rocket().state::<LogtoState>() {
            Some(state) => {
                let session = RequestSession::of(request, state).await;
                // A Redis-stored session this instance cannot read now (Redis unreachable,
                // not cached here): signing out would only drop the id cookie, leaving the
                // session alive in Redis for any copy of the cookie, its refresh token
                // unrevoked and Logto's session open. 503, the cookie kept, so the user
                // can sign out once Redis answers.
                if session.unavailable {
                    return crate::web::guards::fail(
                        request,
                        crate::web::redis_session::unavailable_error(),
                    );
                }
                Outcome::Success(SignOutContext {
                    state,
                    session,
                    path: request.uri().path().to_string(),
                })
            }
            None => Outcome::Error((
                Status::InternalServerError,
                LogtoError::Config("fairing state missing".into()),
            )),
        }
    }
}

/// The form Logto posts to the back-channel logout URI.
#[derive(FromForm)]
struct LogoutForm<'r> {
    logout_token: &'r str,
}

/// The answer to a back-channel logout: 200, or 400 with an OAuth error body.
struct LogoutAnswer(Result<(), String>);

impl<'r> Responder<'r, 'static> for LogoutAnswer {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let (status, body) = match self.0 {
            Ok(()) => (Status::Ok, String::new()),
            Err(why) => (
                Status::BadRequest,
                serde_json::json!({ "error": "invalid_request", "error_description": format!("The logout token is refused: {why}.") })
                    .to_string(),
            ),
        };
        Response::build()
            .status(status)
            .header(rocket::http::ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .sized_body(body.len(), Cursor::new(body))
            .ok()
    }
}

/// Logto's back-channel logout: register `<base_url>/<routes_prefix>/backchannel-logout`
/// as the app's back-channel logout URI.
#[post(
    "/backchannel-logout",
    format = "application/x-www-form-urlencoded",
    data = "<form>"
)]
async fn backchannel_logout(form: Form<LogoutForm<'_>>, state: &State<LogtoState>) -> LogoutAnswer {
    let discovery = match state.provider.discovery().await {
        Ok(d) => d,
        Err(e) => {
            telemetry::backchannel_logout(Some("unavailable"));
            return LogoutAnswer(Err(e.detail().to_string()));
        }
    };
    let result = crate::tokens::logout::accept(
        form.logout_token,
        &state.provider,
        &discovery,
        &state.logouts,
    )
    .await;
    match &result {
        // Logto's session id names a live sign-in at Logto, and logs are read more widely
        // than sessions are guarded: only a short hash of it is logged, which still follows
        // one session through the log. The user id stays (apps audit by it).
        Ok(logout) => log::info!(
            "logto: event=backchannel_logout outcome=accepted user={} session={}: back-channel logout of user {0}",
            for_log(logout.sub.as_deref().unwrap_or("?")),
            logout
                .sid
                .as_deref()
                .map_or_else(|| "any".to_string(), crate::util::logsafe::short_hash)
        ),
        Err(why) => limited!(
            LOGOUT_REFUSED,
            warn,
            "logto: event=backchannel_logout outcome=refused: back-channel logout refused: {why}"
        ),
    }
    telemetry::backchannel_logout(result.as_ref().err().map(|why| logout_reason(why)));
    LogoutAnswer(result.map(|_| ()))
}

/// The `reason` label of a refused back-channel logout, from the refusal's text (a short
/// fixed list: the text itself may quote the token's claims).
fn logout_reason(why: &str) -> &'static str {
    if why.contains("already used") {
        "replayed"
    } else if why.contains("signature") || why.contains("key id") || why.contains("algorithm") {
        "signature"
    } else if why.contains("expired") || why.contains("issue time") || why.contains("future") {
        "expired"
    } else if why.contains("issuer") || why.contains("(aud)") {
        "audience"
    } else if why.starts_with("Logto") {
        "unavailable"
    } else {
        "invalid"
    }
}
