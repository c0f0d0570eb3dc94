//! Sign users in to a [Rocket](https://rocket.rs) application with
//! [Logto](https://logto.io) (OpenID Connect), the way Logto's Express SDK does for Express:
//! attach a fairing, add guards to your route signatures, and configure it in `Rocket.toml`.
//!
//! ```no_run
//! use rocket::http::RawStr;
//! use rocket::response::content::RawHtml;
//! use rocket::serde::json::Json;
//! use rocket::{get, launch, routes, Build, Rocket};
//! use rocket_logto::{AuthenticatedUser, IdTokenClaims, Logto, LogtoUser, Resource, ResourceToken};
//!
//! /// An API resource registered in Logto.
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.example.com/api";
//! }
//!
//! /// Everyone: a "Sign In" link, or a greeting and a "Sign Out" link.
//! #[get("/")]
//! fn home(user: LogtoUser) -> RawHtml<String> {
//!     RawHtml(match user.claims() {
//!         Some(claims) => {
//!             // `name` may be empty: fall back to the user's id.
//!             let name = claims.name.as_deref().unwrap_or(&claims.sub);
//!             // Claims are the user's own text: escape them before they go into HTML.
//!             let name = RawStr::new(name).html_escape();
//!             format!(r#"Hello {name}, <a href="/logto/sign-out">Sign Out</a>"#)
//!         }
//!         None => r#"<a href="/logto/sign-in">Sign In</a>"#.to_string(),
//!     })
//! }
//!
//! /// Signed-in users only. A browser that is signed out is sent to sign-in first (by the
//! /// crate's 401 catcher).
//! #[get("/me")]
//! fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
//!     Json(user.claims())
//! }
//!
//! /// An access token for the shopping API, cached in the session and refreshed when needed.
//! #[get("/shopping")]
//! fn shopping(token: ResourceToken<Shopping>) -> String {
//!     format!("Bearer token with scopes {:?}", token.scopes())
//! }
//!
//! /// The app, with the fairing to attach: `Logto::fairing()` here, and in tests
//! /// `Logto::fairing().trust_test_key()` (see [Testing your routes](#testing-your-routes)).
//! fn app(logto: Logto) -> Rocket<Build> {
//!     rocket::build()
//!         .attach(logto)
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![home, me, shopping])
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     app(Logto::fairing())
//! }
//! ```
//!
//! ```toml
//! # Rocket.toml
//! [default.logto]
//! endpoint = "http://localhost:3001"              # your Logto endpoint
//! app_id = "<your-application-id>"
//! app_secret = "<your-application-secret>"        # better: LOGTO_APP_SECRET in the environment
//! base_url = "http://localhost:8000"              # where this app is served
//! scopes = ["email", "phone", "shopping:read"]
//! resources = ["https://shopping.example.com/api"]
//! ```
//!
//! In Logto Console, create a *traditional web* application and register
//! `http://localhost:8000/logto/sign-in-callback` as its redirect URI and
//! `http://localhost:8000/` as its post sign-out redirect URI.
//!
//! To try it without a Logto tenant, the repository's `scripts/demo --provider-only` runs a
//! local Logto-like provider at `http://localhost:3001` with an application `sample-app`
//! (secret `sample-secret`), the API `https://shopping.example.com/api`, a
//! machine-to-machine app and test users; its README's "Use the demo provider with your own
//! app" lists them all.
//!
//! The sections below follow Logto's guide "Integrate Logto with Express" in the same order,
//! with the Rocket way to do each step.
//!
//! # Prepare config
//!
//! The guide builds a `LogtoExpressConfig` object and sets up `express-session`. Here the
//! configuration is the `logto` table of Rocket's own configuration, and sessions need no
//! setup: they live in encrypted cookies (see [Sessions and cookies](#sessions-and-cookies)).
//! Every key of `LogtoExpressConfig` has a snake_case counterpart: `appId` is `app_id`,
//! `baseUrl` is `base_url`, and so on. [Configuration](#configuration) lists every key.
//!
//! - **`Rocket.toml`**: put the keys under `[default.logto]`. Rocket profiles work as usual:
//!   `[release.logto]` overrides `[default.logto]` when the release profile is selected (for
//!   example to set the production `base_url`).
//! - **Environment**: with `rocket::build()`, `LOGTO_ENDPOINT`, `LOGTO_APP_ID`,
//!   `LOGTO_APP_SECRET` and `LOGTO_BASE_URL` (and `LOGTO_REDIS_URL`, `LOGTO_SESSION_STORE`)
//!   win over the file. Any key can also be given with Rocket's own variable,
//!   `ROCKET_LOGTO={app_id="...", scopes=["email"]}`. With `rocket::custom(figment)`, the
//!   crate reads only that figment, as Rocket does: merge [`LogtoEnv`] into it for the
//!   `LOGTO_*` variables (below). The [`testing`](crate::testing) helpers' figment never
//!   reads them, so your tests never reach the tenant your shell points at.
//! - **The secret**: keep `app_secret` out of files you commit and set `LOGTO_APP_SECRET`
//!   instead.
//!
//! A missing or malformed key stops the launch with one log line that names the key and
//! says how to fix it, for example
//! ``logto config: `app_id` is missing: set it under [default.logto] in Rocket.toml or in LOGTO_APP_ID``.
//!
//! The configuration can also come from code, through the figment you give Rocket. The
//! crate then reads that figment only: merge [`LogtoEnv`] where the `LOGTO_*` variables
//! should count (last, to win over the code and the file):
//!
//! ```no_run
//! use rocket::launch;
//! use rocket_logto::{Logto, LogtoEnv, UserScope};
//!
//! #[launch]
//! fn rocket() -> _ {
//!     let figment = rocket::Config::figment()
//!         .merge(("logto.endpoint", "http://localhost:3001"))
//!         .merge(("logto.app_id", "<your-application-id>"))
//!         .merge(("logto.base_url", "http://localhost:8000"))
//!         .merge(("logto.scopes", [UserScope::Email.as_str(), UserScope::Phone.as_str()]))
//!         // app_secret comes from LOGTO_APP_SECRET.
//!         .merge(LogtoEnv::new());
//!     rocket::custom(figment).attach(Logto::fairing())
//! }
//! ```
//!
//! [`LogtoConfig::from_figment`] is what the fairing runs at launch (on Rocket's figment,
//! with [`LogtoEnv`] on top for `rocket::build()`); you can call it to check a
//! configuration, for example in a test. It reads only the figment it is given:
//!
//! ```
//! use rocket::figment::Figment;
//! use rocket::figment::providers::{Format, Toml};
//! use rocket_logto::LogtoConfig;
//!
//! let figment = Figment::from(Toml::string(r#"
//!     [logto]
//!     endpoint = "http://localhost:3001"
//!     app_id = "my-app"
//!     app_secret = "my-secret"
//!     base_url = "http://localhost:8000"
//! "#));
//! let config = LogtoConfig::from_figment(&figment).expect("a valid configuration");
//! assert!(config.redirect_uri().ends_with("/logto/sign-in-callback"));
//! assert_eq!(config.requested_scopes()[..3], ["openid", "offline_access", "profile"]);
//! ```
//!
//! # Register routes
//!
//! The guide's `handleAuthRoutes` is the fairing: [`Logto::fairing()`] mounts these routes
//! under `/logto` (change the prefix with `routes_prefix`; an app served under a path has
//! them under that path, see [Apps under a path](#apps-under-a-path)):
//!
//! | route | what it does |
//! |---|---|
//! | `GET /logto/sign-in` | starts a sign-in: redirects (303) to Logto's sign-in page. Takes an optional `return_to` path. |
//! | `GET /logto/sign-up` | the same, opening Logto's registration screen (`first_screen=register`). |
//! | `GET /logto/sign-in-callback` | where Logto sends the browser back: checks the answer, exchanges the code, starts the session, redirects to the return path. |
//! | `GET` or `POST /logto/sign-out` | ends the session: clears the session cookies, revokes the refresh token, redirects to Logto's sign-out, which sends the browser to `post_sign_out_redirect`. A request from another site only gets a page asking to confirm. |
//! | `POST /logto/backchannel-logout` | Logto's back-channel logout: a verified logout token ends that Logto session's (or that user's) sessions in this app. |
//!
//! Attach the fairing once; it reads the configuration when Rocket ignites. A guard used
//! without the fairing stops the launch with a message saying so. Register the crate's
//! catchers too, `.register("/", Logto::catchers())`: they are what sends a signed-out
//! browser to sign-in (see [Composing with Rocket](#composing-with-rocket)).
//!
//! In Logto Console, on the application's page, register:
//!
//! - the **redirect URI** `<base_url>/<routes_prefix>/sign-in-callback`, e.g.
//!   `http://localhost:8000/logto/sign-in-callback` (the guide's `/callback`);
//! - the **post sign-out redirect URI**: `post_sign_out_redirect`, which defaults to
//!   `base_url` written as a URL, e.g. `http://localhost:8000/` (with the trailing slash);
//! - optionally, the **back-channel logout URI** `<base_url>/<routes_prefix>/backchannel-logout`,
//!   so that signing out at Logto (or in another app) signs the user out here too;
//! - optionally, the sign-in experience's **unknown session redirect URL** (advanced
//!   settings): your `base_url`, so that pressing Back after signing in returns to the app
//!   rather than to Logto's "session not found" page.
//!
//! **Back-channel logout to a loopback or private address** (local development, an app on
//! a private network): a self-hosted Logto 1.42 must be started with
//! `OIDC_PROVIDER_SSRF_PROTECTION_DISABLED=true`. Otherwise its OIDC provider refuses to
//! post the logout token to `localhost`, `127.0.0.1`, `10.x`, `192.168.x`... as a guard
//! against server-side request forgery, and says nothing about it: signing out at Logto
//! then leaves the user signed in here, and this app logs no `back-channel logout` line
//! because nothing reached it. The variable lifts that guard for every request Logto's
//! OIDC provider makes, so set it only where Logto's outgoing requests should reach the
//! private network; an app at a public address needs nothing.
//!
//! The fairing logs the redirect URI at launch. You can also read it from the loaded
//! configuration with [`Logto::config`]:
//!
//! ```no_run
//! use rocket::fairing::AdHoc;
//! use rocket::launch;
//! use rocket_logto::Logto;
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .attach(AdHoc::on_liftoff("Show the redirect URI", |rocket| {
//!             Box::pin(async move {
//!                 if let Some(config) = Logto::config(rocket) {
//!                     println!("register {} in Logto", config.redirect_uri());
//!                 }
//!             })
//!         }))
//! }
//! ```
//!
//! # Sign-in and sign-out
//!
//! Sign-in and sign-out are plain links to the routes above. The guide's
//! `withLogto(config)` middleware and `req.user` are the [`LogtoUser`] guard: it never
//! fails, and tells whether someone is signed in ([`LogtoUser::is_authenticated`]) and
//! who ([`LogtoUser::claims`]).
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket::http::RawStr;
//! use rocket::response::content::RawHtml;
//! use rocket_logto::{AuthenticatedUser, Logto, LogtoUser};
//!
//! #[get("/")]
//! fn home(user: LogtoUser) -> RawHtml<String> {
//!     RawHtml(if user.is_authenticated() {
//!         let claims = user.claims().expect("signed in");
//!         let name = claims.name.as_deref().unwrap_or(&claims.sub);
//!         format!(r#"<div>Hello {}, <a href="/logto/sign-out">Sign Out</a></div>"#,
//!             RawStr::new(name).html_escape())
//!     } else {
//!         // Come back to /orders?page=2 after signing in.
//!         let return_to = RawStr::new("/orders?page=2").percent_encode();
//!         format!(r#"<div><a href="/logto/sign-in?return_to={return_to}">Sign In</a>
//!             or <a href="/logto/sign-up">Sign Up</a></div>"#)
//!     })
//! }
//!
//! /// Only for signed-in users: a browser that is signed out is redirected to sign-in and
//! /// brought back here afterwards; other clients get 401.
//! #[get("/orders?<page>")]
//! fn orders(user: AuthenticatedUser, page: Option<u32>) -> String {
//!     format!("Orders of {}, page {}", user.id(), page.unwrap_or(1))
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![home, orders])
//! }
//! ```
//!
//! - `return_to` must be a relative path on this site (`/orders?page=2`); anything else
//!   (`//evil.example`, `https://...`, backslashes, control characters, their encoded forms)
//!   is refused with 400. Without it, the browser lands on `post_sign_in_redirect` (the
//!   path of `base_url` by default). An [`on_sign_in`](Logto::on_sign_in) hook can choose
//!   another landing page.
//! - [`AuthenticatedUser`] is the guard for routes that need a signed-in user. When nobody
//!   is signed in it forwards with 401: a route with a later rank (`rank = 2`) can serve the visitor,
//!   and with none the crate's 401 catcher sends a browser `GET` (its `Accept` header
//!   includes HTML) to `/logto/sign-in?return_to=<this page>` (303); other requests get
//!   401. Its methods fetch tokens and user info, described below.
//! - Several tabs can sign in at the same time: each sign-in keeps its own `state` in its
//!   own cookie.
//! - Sign-out ends the session here, revokes the refresh token at Logto and sends the
//!   browser to Logto's sign-out page with `client_id` and `post_logout_redirect_uri`;
//!   Logto then sends it to `post_sign_out_redirect`. The ID token is not sent as
//!   `id_token_hint`: in a URL it would leave the user's claims in the browser history,
//!   proxy logs and `Referer` headers, and Logto does not need it (`client_id` names the
//!   app, Logto's own cookie names its session). Posting it instead is no option, since
//!   Logto's end-session endpoint answers GET only. If Logto cannot be reached, the user
//!   is signed out here only and sent straight to `post_sign_out_redirect`.
//! - Any site can link to `/logto/sign-out`, so a cross-site request (the browser says
//!   `Sec-Fetch-Site: cross-site`, or, without that header, the `Origin` is not
//!   `base_url`'s) does not sign out: it gets a small page with a "Sign out" button that
//!   posts back. Links and forms in the app's own pages sign out at once.
//!
//! ## Sign-in options per link
//!
//! `/logto/sign-in` (and `/logto/sign-up`) take the options that `@logto/express`'s
//! `signIn(res, options)` takes per call, so one page can offer "Sign up", "Continue with
//! Google" and an invitation link with the address filled in. A link's option wins over
//! the same key in the configuration.
//!
//! | query parameter | what it does | accepted values |
//! |---|---|---|
//! | `return_to` | where the browser lands afterwards | a path on this site |
//! | `first_screen` | the screen Logto opens on | [`FirstScreen`]: `sign_in`, `register`, `reset_password`, `identifier:sign_in`, `identifier:register`, `single_sign_on` |
//! | `login_hint` | pre-fills the identifier | 1 to 256 characters, no control characters |
//! | `direct_sign_in` | skips Logto's page for a connector | [`DirectSignIn`]: `social:<target>` or `sso:<connector-id>`, ids of letters, digits, `-`, `_`, `.` |
//! | `organization_id` | the organization's sign-in experience | letters, digits, `-`, `_`, `.` |
//! | `ui_locales` | the languages of Logto's pages | language tags separated by spaces (`fr-CA en`) |
//! | `max_age` | how old Logto's sign-in may be, in seconds (a step-up; see [Sensitive routes](#sensitive-routes)) | `0` to `31622400` (a year), digits only |
//! | `prompt` | Logto asks for the credentials again, whatever its session (added to the configured `prompt`) | `login` |
//!
//! Any other parameter, a repeated one or a bad value is refused with 400 and the reason,
//! before a sign-in starts. In a route, [`SignIn`] builds the same sign-in with typed
//! values; as a responder it redirects to the link, and [`SignIn::href`] gives the link
//! for a page:
//!
//! ```
//! use rocket::get;
//! use rocket_logto::{FirstScreen, LogtoError, SignIn};
//!
//! #[get("/invite?<email>")]
//! fn invite(email: &str) -> Result<SignIn, LogtoError> {
//!     Ok(SignIn::new().first_screen(FirstScreen::Register).login_hint(email)?)
//! }
//! ```
//!
//! Anyone can send a user a link to `/logto/sign-in` with any of these options. Each is
//! harmless, because none of them can change what the sign-in grants or where its answer
//! goes: the redirect URI, the scopes, the resources, `prompt`, `state`, the nonce and the
//! PKCE challenge come from the configuration and from fresh randomness, and a link
//! cannot add any other parameter.
//!
//! - `return_to` only leads to a path on this site.
//! - `first_screen` and `ui_locales` only change which of Logto's screens shows, and in
//!   which language.
//! - `login_hint` only pre-fills the identifier: the user still proves who they are, so
//!   a link pre-filled with someone else's address cannot sign the user in as them.
//! - `direct_sign_in` only reaches connectors enabled in the Logto tenant, and the user
//!   still authenticates there.
//! - `organization_id` only selects an organization's sign-in experience; tokens for an
//!   organization still require membership.
//! - `max_age` and `prompt=login` only make Logto ask for the credentials again: they
//!   make a sign-in harder, never easier.
//!
//! ## Sensitive routes
//!
//! Changing an email, deleting an account or paying should need a recent sign-in, not one
//! from 29 days ago. [`RecentSignIn<'_, N>`](RecentSignIn) is [`AuthenticatedUser`] for
//! users who signed in at most `N` seconds ago, going by the ID token's `auth_time` (when
//! the user last entered a password or passed MFA at Logto):
//!
//! ```
//! use rocket::{launch, post, routes};
//! use rocket_logto::{Logto, RecentSignIn};
//!
//! /// Needs a sign-in from the last 5 minutes.
//! #[post("/account/delete")]
//! fn delete_account(user: RecentSignIn<'_, 300>) -> String {
//!     format!("deleting {}", user.id())
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![delete_account])
//! }
//! ```
//!
//! - An older sign-in fails with 401 [`LogtoError::RecentSignInRequired`]. A browser's
//!   `GET` is sent to `/logto/sign-in?return_to=<this page>&max_age=N`: Logto asks for the
//!   password again (its own session is too old), and the browser comes back. Other
//!   clients get 401 with `WWW-Authenticate: Bearer
//!   error="insufficient_user_authentication", max_age=N` (RFC 9470).
//! - When a sign-in sent `max_age`, the callback checks the ID token's `auth_time` (OIDC
//!   Core 3.1.2.1): missing, or older than `max_age` plus `clock_skew_secs`, and the
//!   sign-in is refused with 400. A Logto that ignored `max_age` cannot pass an old
//!   sign-in off as a new one.
//! - The step-up keeps the session: the same user's access tokens stay, and the ID token
//!   (with `auth_time`) is the new one.
//! - `N` is at most a year ([`MAX_MAX_AGE_SECS`]); a longer one stops the launch.
//! - `N` is at most a year ([`MAX_MAX_AGE_SECS`]); a longer one stops the launch.
//! - Logto puts `auth_time` in the ID token only when the sign-in asked for `max_age`.
//!   After an ordinary sign-in, the first visit to a sensitive route asks once; link to
//!   sign-in with `?max_age=...` (or [`SignIn::max_age`]) where the user signs in right
//!   before a sensitive step.
//! - A refresh may bring an ID token without `auth_time`; the next sensitive route then
//!   asks again.
//!
//! # Get user information
//!
//! The guide's `req.user.claims` is [`LogtoUser::claims`] or [`AuthenticatedUser::claims`]:
//! the claims of the ID token verified at sign-in, typed as [`IdTokenClaims`]. Reading them
//! costs no network request and no signature check.
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket::serde::json::Json;
//! use rocket_logto::{AuthenticatedUser, IdTokenClaims, Logto, LogtoUser};
//!
//! /// The guide's `response.json(request.user.claims)`; `null` when signed out.
//! #[get("/claims")]
//! fn claims(user: LogtoUser) -> Json<Option<IdTokenClaims>> {
//!     Json(user.claims().cloned())
//! }
//!
//! #[get("/profile")]
//! fn profile(user: AuthenticatedUser) -> String {
//!     let claims = user.claims();
//!     format!(
//!         "id {}, username {:?}, name {:?}, given name {:?}, created at {:?} ms",
//!         claims.sub,
//!         claims.username,
//!         claims.name,
//!         claims.profile.given_name,
//!         claims.created_at,
//!     )
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build().attach(Logto::fairing()).mount("/", routes![claims, profile])
//! }
//! ```
//!
//! As in the guide, `name`, `username` and `picture` are `None` when empty; the other
//! standard `profile` claims are in [`IdTokenClaims::profile`]; `created_at` and
//! `updated_at` are milliseconds since the epoch. Claims the struct does not name (custom
//! claims) are kept in [`IdTokenClaims::extra`].
//!
//! The claims are those of the ID token at sign-in (or at the last refresh that returned a
//! new ID token). After a user's profile changes in Logto,
//! [`AuthenticatedUser::force_refresh`] gets a fresh one.
//!
//! # Request additional claims
//!
//! The SDK always requests `openid`, `profile` and `offline_access`. Add more with the
//! `scopes` key; [`UserScope`] names the guide's scopes, and `scopes` takes the same strings
//! as [`UserScope::as_str`]:
//!
//! ```toml
//! [default.logto]
//! # ...
//! scopes = ["email", "phone"]   # UserScope::Email, UserScope::Phone
//! ```
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket_logto::{AuthenticatedUser, Logto, UserScope};
//!
//! #[get("/email")]
//! fn email(user: AuthenticatedUser) -> String {
//!     match &user.claims().email {
//!         Some(email) => format!("User email: {email}"),
//!         None => "No email address (is the `email` scope configured?)".into(),
//!     }
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     // The same as `scopes = ["email", "phone"]` in Rocket.toml.
//!     let scopes = [UserScope::Email, UserScope::Phone].map(UserScope::as_str);
//!     rocket::custom(rocket::Config::figment().merge(("logto.scopes", scopes)))
//!         .attach(Logto::fairing())
//!         .mount("/", routes![email])
//! }
//! ```
//!
//! | scope | [`UserScope`] | claims in [`IdTokenClaims`] |
//! |---|---|---|
//! | `openid` | `OpenId` (always) | `sub` |
//! | `profile` | `Profile` (always) | `name`, `username`, `picture`, `created_at`, `updated_at`, [`profile`](IdTokenClaims::profile) |
//! | `offline_access` | `OfflineAccess` (always) | none: it gets the refresh token |
//! | `email` | `Email` | `email`, `email_verified` |
//! | `phone` | `Phone` | `phone_number`, `phone_number_verified` |
//! | `address` | `Address` | `address` |
//! | `roles` | `Roles` | `roles` |
//! | `custom_data` | `CustomData` | none: userinfo only |
//! | `identities` | `Identities` | none: userinfo only |
//! | `urn:logto:scope:organizations` | `Organizations` | `organizations` (`organization_data` in userinfo) |
//! | `urn:logto:scope:organization_roles` | `OrganizationRoles` | `organization_roles` |
//!
//! # Claims that need network requests
//!
//! Some claims (`custom_data`, `identities`, `sso_identities`, `organization_data`) are
//! never in the ID token; Logto returns them only from its userinfo endpoint. There are three
//! ways to get them:
//!
//! - the [`FetchedUserInfo`] guard, which calls the userinfo endpoint for the request and
//!   gives a [`UserInfo`];
//! - [`AuthenticatedUser::user_info`], the same from inside a handler;
//! - the guide's `fetchUserInfo`: with `fetch_user_info = true`, the answer is fetched once
//!   right after sign-in and kept in the session. [`LogtoUser::user_info`] then returns it,
//!   and the guard and the method above return it without a request. It is not updated
//!   until the next sign-in, and it makes the session cookies bigger. An answer too large
//!   for the session's store (the cookies' budget, or the 64 KiB limit below; 1 MiB with
//!   the Redis store) is left out (with a warning in the log) rather than failing the
//!   sign-in; [`LogtoUser::user_info`] is then `None` and the other two fetch it.
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket::serde::json::{Json, Value};
//! use rocket_logto::{AuthenticatedUser, FetchedUserInfo, Logto, LogtoError};
//!
//! /// The user's custom data (needs the `custom_data` scope).
//! #[get("/custom-data")]
//! fn custom_data(info: FetchedUserInfo) -> Json<Option<Value>> {
//!     Json(info.custom_data.clone())
//! }
//!
//! /// The organizations with their names (needs `urn:logto:scope:organizations`).
//! #[get("/organizations")]
//! async fn organizations(user: AuthenticatedUser<'_>) -> Result<String, LogtoError> {
//!     let info = user.user_info().await?;
//!     let names: Vec<String> = info.organization_data.unwrap_or_default()
//!         .into_iter().map(|org| org.name).collect();
//!     Ok(names.join(", "))
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build().attach(Logto::fairing()).mount("/", routes![custom_data, organizations])
//! }
//! ```
//!
//! The userinfo answer is checked to be about the signed-in user (same `sub`); one about
//! someone else gives 502.
//!
//! # API resources
//!
//! API resources work as in the guide. List their indicators in `resources`, and the
//! permissions you want in `scopes`. Logto issues the cartesian product of the two:
//! `scopes = ["read", "write"]` asks for both on every resource. Scopes that a resource does
//! not define are ignored.
//!
//! ```toml
//! [default.logto]
//! # ...
//! scopes = ["shopping:read", "shopping:write", "store:read", "store:write"]
//! resources = ["https://shopping.your-app.com/api", "https://store.your-app.com/api"]
//! ```
//!
//! In code, a resource is a type that implements [`Resource`]: its indicator, and the
//! scopes a route needs. A [`ResourceToken`] guard whose token lacks one of
//! [`Resource::REQUIRED_SCOPES`] answers 403. A resource missing from `resources` stops the
//! launch: Logto only issues tokens for resources requested at sign-in. The type is a
//! route's requirement: routes that need different scopes of one API use one type each,
//! with the same `INDICATOR`.
//!
//! ```
//! use rocket_logto::Resource;
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
//!     const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read"];
//! }
//!
//! /// The same API, for the routes that change it.
//! struct ShoppingWrite;
//!
//! impl Resource for ShoppingWrite {
//!     const INDICATOR: &'static str = Shopping::INDICATOR;
//!     const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:write"];
//! }
//!
//! struct Store;
//!
//! impl Resource for Store {
//!     const INDICATOR: &'static str = "https://store.your-app.com/api";
//! }
//! ```
//!
//! # Access tokens
//!
//! The guide's `getAccessToken: true, resource: ...` is the [`ResourceToken<R>`] guard. It
//! gives a valid access token (a JWT) for the resource `R`, which you send to your API as
//! `Authorization: Bearer <token>`. For a resource chosen at run time, call
//! [`AuthenticatedUser::access_token`] with its indicator.
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket::serde::json::Json;
//! use rocket_logto::{AccessToken, AuthenticatedUser, Logto, LogtoError, Resource, ResourceToken};
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
//!     const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read"];
//! }
//!
//! /// 401 when signed out, 403 without `shopping:read`.
//! #[get("/fetch-access-token")]
//! fn fetch_access_token(token: ResourceToken<Shopping>) -> Json<AccessToken> {
//!     // token.secret() is the bearer token; token.claims() its decoded claims. As JSON,
//!     // the token shows what it grants, not itself.
//!     Json(token.into_inner())
//! }
//!
//! /// The same for a resource named at run time, e.g. from the path: one that is not in
//! /// `resources` answers 404.
//! #[get("/token/<api>")]
//! async fn token_for(user: AuthenticatedUser<'_>, api: &str) -> Result<String, LogtoError> {
//!     let indicator = format!("https://{api}.your-app.com/api");
//!     let token = user.access_token(&indicator).await?;
//!     Ok(format!("expires at {}, scopes {:?}", token.expires_at(), token.scopes()))
//! }
//!
//! /// After the user's roles changed in Logto: new tokens that show it.
//! #[get("/reload")]
//! async fn reload(user: AuthenticatedUser<'_>) -> Result<String, LogtoError> {
//!     let token = user.force_refresh(Some(Shopping::INDICATOR)).await?;
//!     Ok(format!("scopes now: {:?}", token.scopes()))
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .mount("/", routes![fetch_access_token, token_for, reload])
//! }
//! ```
//!
//! How tokens are kept:
//!
//! - Each token is cached in the session cookies, one per (resource, organization), and
//!   served from there while it has more than `token_refresh_margin_secs` (60 s by default)
//!   of life left. Serving a cached token costs no request to Logto.
//! - Past the margin, the refresh token gets a new one, and the new tokens are written to
//!   the cookies of the same response. Logto may rotate the refresh token on each use;
//!   concurrent requests of one browser that need the same token share one refresh.
//! - A refresh token that Logto refuses (`invalid_grant`: revoked, expired) ends the session:
//!   the request is signed out from then on (a guard forwards; a method returns
//!   [`LogtoError::Unauthenticated`], which sends a browser to sign-in). When Logto is
//!   unreachable, the request gets 503 and the session is kept.
//! - A session without a refresh token (Logto grants `offline_access` only with
//!   `prompt=consent`) cannot get any token: 401 [`LogtoError::SignInAgain`], whose page
//!   says why and links to sign-in (no automatic redirect, which could loop).
//! - The new tokens reach the browser whatever answers the request: when a guard fails
//!   after refreshing (a token without the required scopes, a failed userinfo call) and a
//!   catcher answers, the fairing puts the session cookies Rocket dropped back into the
//!   answer, so the rotated-out refresh token is never sent again.
//! - [`AuthenticatedUser::force_refresh`] refreshes now, whatever the cache holds, for
//!   example after a change of roles. With `None` it refreshes the token used for userinfo.
//!   A refresh that returns a new ID token updates the claims too, from the next request on.
//!
//! # Organization tokens
//!
//! Add the organizations scope, as in the guide. The resource
//! `urn:logto:resource:organizations` ([`ORGANIZATIONS_RESOURCE`]) is then requested
//! for you:
//!
//! ```toml
//! [default.logto]
//! # ...
//! scopes = ["urn:logto:scope:organizations", "urn:logto:scope:organization_roles"]
//! ```
//!
//! The guide's `getOrganizationToken` and `organizationTokens` are methods of
//! [`AuthenticatedUser`]:
//!
//! - [`organization_token(id)`](AuthenticatedUser::organization_token): a token for one
//!   organization (`aud` is `urn:logto:organization:<id>`); 403 when the user is not a member;
//! - [`organization_tokens()`](AuthenticatedUser::organization_tokens): a token for each
//!   organization in the user's `organizations` claim, keyed by organization id;
//! - [`organization_resource_token(id, indicator)`](AuthenticatedUser::organization_resource_token):
//!   a token for an API resource, limited to the user's roles in that organization.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//!
//! use rocket::{get, launch, routes};
//! use rocket::serde::json::Json;
//! use rocket_logto::{AccessToken, AuthenticatedUser, Logto, LogtoError};
//!
//! #[get("/fetch-organization-token")]
//! async fn all_tokens(
//!     user: AuthenticatedUser<'_>,
//! ) -> Result<Json<BTreeMap<String, AccessToken>>, LogtoError> {
//!     Ok(Json(user.organization_tokens().await?))
//! }
//!
//! #[get("/organizations/<id>")]
//! async fn one(user: AuthenticatedUser<'_>, id: &str) -> Result<String, LogtoError> {
//!     let token = user.organization_token(id).await?;
//!     let roles: Vec<&str> = user.claims().roles_in_organization(id).collect();
//!     Ok(format!("organization {id}: scopes {:?}, roles {roles:?}", token.scopes()))
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build().attach(Logto::fairing()).mount("/", routes![all_tokens, one])
//! }
//! ```
//!
//! Without the organizations scope in `scopes`, `organization_token` and
//! `organization_resource_token` return a configuration error (500) that says so, and
//! `organization_tokens` returns no tokens (there is no `organizations` claim). An
//! organization id that is malformed (empty, control characters, over 128 bytes) is a 400;
//! a session whose sign-in did not grant the organizations scope (it was added since)
//! gets 401 [`LogtoError::SignInAgain`].
//!
//! # Tokens for the app itself
//!
//! A backend often calls APIs as itself, not as a user: Logto's Management API (to read a
//! user's roles, update `custom_data`), or another service protected by Logto. Logto gives
//! such tokens to a machine-to-machine app (`client_credentials`), separate from the web
//! app: set `m2m_app_id` and `m2m_app_secret` (`LOGTO_M2M_APP_SECRET`). Then
//! [`AppToken<R>`](AppToken) is a guard that yields the app's token for the
//! [`Resource`] `R`, with `R::REQUIRED_SCOPES` asked for and checked (403 when the app's
//! roles lack them), and [`AppTokens`] in managed state gives the same to background
//! tasks:
//!
//! ```
//! use rocket::{get, launch, routes, State};
//! use rocket_logto::{AppToken, AuthenticatedUser, Logto, LogtoError, ManagementApi};
//!
//! /// The signed-in user's roles, from Logto's Management API (`GET /api/users/{id}/roles`).
//! #[get("/admin/roles")]
//! async fn roles(
//!     user: AuthenticatedUser<'_>,
//!     token: AppToken<ManagementApi>,
//! ) -> Result<String, LogtoError> {
//!     let url = format!("https://your-tenant.logto.app/api/users/{}/roles", user.id());
//!     let roles = reqwest::Client::new()
//!         .get(url)
//!         .bearer_auth(token.secret())
//!         .send()
//!         .await
//!         .and_then(|r| r.error_for_status())
//!         .map_err(|e| LogtoError::bad_gateway(format!("the Management API: {e}")))?
//!         .text()
//!         .await
//!         .map_err(|e| LogtoError::bad_gateway(format!("the Management API: {e}")))?;
//!     Ok(roles)
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .mount("/", routes![roles])
//! }
//! ```
//!
//! - **Cached**: a token is kept until it has less than `token_refresh_margin_secs` of life
//!   left, then renewed.
//! - **One request at a time** per resource and scopes: concurrent requests share one
//!   call to Logto; with `redis_url`, one across every instance (the lease that refreshes
//!   use).
//! - **[`ManagementApi`]** is Logto's Management API: its indicator is
//!   `management_api_resource` (Logto OSS's `https://default.logto.app/api` by default; on
//!   Logto Cloud `https://<tenant-id>.logto.app/api`), and it asks for the scope `all`. The
//!   machine-to-machine app needs Logto's "Logto Management API access" role.
//! - **Faults**: Logto (or Redis) unreachable is a 503 with `Retry-After`; Logto refusing
//!   the credentials is a 502 whose logged message names `m2m_app_id` and
//!   `m2m_app_secret` (never the secret). A route with `AppToken` in an app without
//!   `m2m_app_id` stops the launch.
//!
//! # Hooks
//!
//! Two hooks are set on the fairing.
//!
//! [`Logto::on_sign_in`] runs your async code after each successful sign-in, once the ID
//! token is verified and before the session starts. It receives [`SignedIn`] (the claims,
//! the userinfo answer with `fetch_user_info = true`, the return path) and the callback's
//! request, through which it reaches what a handler reaches: managed state, a
//! `rocket_db_pools` database, request guards. It can:
//!
//! - create or update your own user record;
//! - refuse the sign-in with a [`SignInRefusal`]: the user sees 403 with your message, no
//!   session starts, and the refresh token is revoked (the browser is not sent back to
//!   sign-in, so a refusal cannot loop);
//! - choose where the browser lands with [`SignInDecision::RedirectTo`].
//!
//! The hook returns a boxed future that may borrow the request, as Rocket's `AdHoc`
//! fairings do. With a `rocket_db_pools` database (the sample app, `examples/sample`,
//! keeps its users in SQLite this way):
//!
//! ```no_run
//! use rocket::fairing::AdHoc;
//! use rocket::launch;
//! use rocket_db_pools::{sqlx, Database};
//! use rocket_logto::{Logto, ReturnPath, SignInDecision, SignInRefusal, SignedIn};
//!
//! /// Your own user table (`[default.databases.users]` in Rocket.toml).
//! #[derive(Database)]
//! #[database("users")]
//! struct Users(sqlx::SqlitePool);
//!
//! #[launch]
//! fn rocket() -> _ {
//!     let logto = Logto::fairing().on_sign_in(|user: SignedIn, request| {
//!         Box::pin(async move {
//!             if user.claims.email_verified == Some(false) {
//!                 return Err(SignInRefusal::new("Verify your email address first."));
//!             }
//!             let Some(db) = Users::fetch(request.rocket()) else {
//!                 return Err(SignInRefusal::new("Sign-in is not available right now."));
//!             };
//!             let inserted = sqlx::query("INSERT OR IGNORE INTO users (sub) VALUES (?)")
//!                 .bind(&user.claims.sub)
//!                 .execute(&**db)
//!                 .await
//!                 .map_err(|_| SignInRefusal::new("Your account could not be saved; try again."))?;
//!             if inserted.rows_affected() == 1 {
//!                 // First visit: show the welcome page instead of the return path.
//!                 let welcome = ReturnPath::parse("/welcome").expect("a relative path");
//!                 return Ok(SignInDecision::RedirectTo(welcome));
//!             }
//!             Ok(SignInDecision::Continue)
//!         })
//!     });
//!     rocket::build()
//!         .attach(Users::init())
//!         .attach(AdHoc::try_on_ignite("users table", |rocket| async move {
//!             let Some(db) = Users::fetch(&rocket) else { return Err(rocket) };
//!             let created = sqlx::query("CREATE TABLE IF NOT EXISTS users (sub TEXT PRIMARY KEY)")
//!                 .execute(&**db)
//!                 .await;
//!             match created {
//!                 Ok(_) => Ok(rocket),
//!                 Err(_) => Err(rocket),
//!             }
//!         }))
//!         .attach(logto)
//! }
//! ```
//!
//! [`Logto::error_page`] renders the crate's error pages with your own responder, for
//! example a template: the pages of the crate's catchers ([`Logto::catchers`]), of a failed
//! sign-in, and of a [`LogtoError`] your handler returns. The status and the
//! `Cache-Control`, `Referrer-Policy` and `Retry-After` headers stay the error's. If your
//! responder fails (say, the template is missing), the built-in page is used. Clients that
//! ask for JSON always get the JSON body. Your own catchers and responses are never
//! touched: to style every error page of the app, write your own catchers and leave the
//! crate's out (see [Composing with Rocket](#composing-with-rocket)).
//!
//! ```no_run
//! use rocket::launch;
//! use rocket::response::Responder;
//! use rocket_dyn_templates::{context, Template};
//! use rocket_logto::Logto;
//!
//! #[launch]
//! fn rocket() -> _ {
//!     let logto = Logto::fairing().error_page(|error, request| {
//!         // templates/error.html.j2 gets `status` and `message`.
//!         Template::render("error", context! {
//!             status: error.status().code,
//!             message: error.message(),
//!         })
//!         .respond_to(request)
//!     });
//!     rocket::build()
//!         .attach(Template::fairing())
//!         .attach(logto)
//!         .register("/", Logto::catchers())
//! }
//! ```
//!
//! # Errors and statuses
//!
//! Every failure is a [`LogtoError`], whose [`status`](LogtoError::status) is:
//!
//! | status | variant | when |
//! |---|---|---|
//! | 400 | [`BadRequest`](LogtoError::BadRequest) | a refused `return_to` or sign-in option; a callback with an unknown, expired (10 min) or reused `state`; an `auth_time` missing or too old for the `max_age` the sign-in sent; Logto's `error` in the callback; an ID token that fails a check; a malformed organization id |
//! | 401 | [`Unauthenticated`](LogtoError::Unauthenticated) | nobody is signed in, or the session ended (expired, refresh token refused). The guards forward instead of failing with it; as a responder it sends a browser's `GET` to sign-in (303). |
//! | 401 | [`RecentSignInRequired`](LogtoError::RecentSignInRequired) | [`RecentSignIn<'_, N>`](RecentSignIn): the sign-in is older than `N` seconds, or its time is unknown. A browser's `GET` is sent to sign-in with `max_age`; other clients get `WWW-Authenticate` with `error="insufficient_user_authentication"` and `max_age` (RFC 9470). |
//! | 401 | [`SignInAgain`](LogtoError::SignInAgain) | signed in, but the session cannot get tokens: no refresh token (`offline_access` not granted), or an organization token without the organizations scope granted at sign-in. The page says why and links to sign-in. |
//! | 403 | [`Forbidden`](LogtoError::Forbidden) | a token lacks [`Resource::REQUIRED_SCOPES`]; not a member of the organization; your `on_sign_in` hook refused |
//! | 404 | [`NotFound`](LogtoError::NotFound) | [`AuthenticatedUser::access_token`] (or `organization_resource_token`) for a resource that is not in `resources`, e.g. one named by the path |
//! | 500 | [`Config`](LogtoError::Config) | the app's configuration does not allow the call: an organization token without the organizations scope in `scopes`; a session too large for the cookies |
//! | 502 | [`BadGateway`](LogtoError::BadGateway) | Logto answered with something unusable: HTML, truncated JSON, an HTTP 5xx, a refusal, userinfo about another user |
//! | 503 | [`Unavailable`](LogtoError::Unavailable) | Logto cannot be reached or did not answer within `http_timeout_secs`; or it rate-limited us (HTTP 429), then with `Retry-After` when Logto sent one |
//!
//! An error has two texts. [`LogtoError::message`] is for the end user, and is what the
//! page shows: for a 500 or a 502 it is a generic sentence, so a page never shows the app's
//! setup. `Display` is the developer's message, for logs: lower-case, without a trailing
//! period, naming what went wrong. A failed call to Logto also carries a typed
//! [`ProviderFailure`] ([`LogtoError::provider_failure`], and the error's `source()`): a
//! timeout, a refusal with its [`OAuthErrorCode`], or Logto's HTTP status.
//!
//! What only the configuration decides is checked at launch instead: a [`ResourceToken<R>`]
//! whose `R::INDICATOR` is not in `resources`, or a guard without the fairing, stops the
//! launch.
//!
//! As a responder (return it from a handler), a `LogtoError` answers as the crate's
//! catcher for its status does: a short HTML page, or JSON
//! (`{"error": "Unauthorized", "message": "..."}`) for clients whose `Accept` prefers
//! JSON, with `Cache-Control: no-store`; `Unauthenticated` sends a browser's `GET` to
//! sign-in.
//!
//! Every refusal is logged through Rocket's logging with its reason (and the user id when
//! known); tokens and secrets never are.
//!
//! # Composing with Rocket
//!
//! The guards behave like the ones in Rocket's guide, so they combine with catchers,
//! ranked routes and Rocket's `Option`, `Result` and `Outcome` wrappers.
//!
//! ## Catchers belong to the app
//!
//! A guard that fails hands the request to the catcher for its status, as any Rocket
//! guard does. The crate's pages are catchers that you register: [`Logto::catchers()`]
//! (400, 401, 403, 500, 502, 503).
//!
//! - The **401** catcher sends a browser's `GET` (it accepts HTML and does not prefer
//!   JSON) to `/logto/sign-in?return_to=<this page>` with a 303, and answers 401 (JSON or
//!   HTML) to other clients.
//! - The **others** show the [`LogtoError`] a guard of the crate failed with in this
//!   request, when it has the catcher's status, else a generic page for the status: HTML
//!   or JSON by `Accept`, with `Retry-After` when Logto sent one, through
//!   [`error_page`](Logto::error_page) when set.
//!
//! Nothing else rewrites answers: a response your handler produced (a `(Status, body)`,
//! your own responder) goes out as it is, and your own catchers answer wherever you
//! register them. Without the crate's catchers, Rocket's defaults (or yours) answer, so a
//! signed-out browser on an `AuthenticatedUser` route gets a plain 401 page: registering
//! `Logto::catchers()` is what gives the redirect to sign-in, and the fairing logs a
//! warning at launch when no catcher handles 401. Rocket picks the catcher with the
//! longest matching base, so yours for `/api` win there over the crate's at `/`; for the
//! same status and base, two catchers collide at launch, so leave that status out of the
//! crate's:
//!
//! ```no_run
//! use rocket::serde::json::{json, Value};
//! use rocket::{catch, catchers, get, launch, routes};
//! use rocket_logto::{AuthenticatedUser, Logto};
//!
//! #[get("/me")]
//! fn me(user: AuthenticatedUser) -> String {
//!     user.id().to_string()
//! }
//!
//! /// The API's own 401, instead of a redirect to sign-in.
//! #[catch(401)]
//! fn api_unauthorized() -> Value {
//!     json!({ "error": "sign in first" })
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/", Logto::catchers())
//!         .register("/api", catchers![api_unauthorized])
//!         .mount("/", routes![me])
//!         .mount("/api", routes![me])
//! }
//! ```
//!
//! ## Forwarding and ranked routes
//!
//! When nobody is signed in, [`AuthenticatedUser`], [`ResourceToken<R>`] and
//! [`FetchedUserInfo`] **forward** with `Status::Unauthorized`: Rocket tries the next
//! route that matches the request, by rank, and when none is left, calls the 401 catcher.
//! A session that ends during the request (Logto refused the refresh token) counts as
//! signed out from then on. Real failures stay errors and go to the catcher at once:
//! missing scopes (403), Logto unusable or unreachable (502, 503), a session that must
//! sign in again (401 [`SignInAgain`](LogtoError::SignInAgain)).
//!
//! So the ranked routes of Rocket's guide work: an admin page, the same page for other
//! users, and a public one. The `Admin` guard builds on `AuthenticatedUser`:
//!
//! ```no_run
//! use rocket::http::Status;
//! use rocket::outcome::try_outcome;
//! use rocket::request::{FromRequest, Outcome, Request};
//! use rocket::{get, launch, routes};
//! use rocket_logto::{AuthenticatedUser, Logto, LogtoError};
//!
//! /// A signed-in user with Logto's `admin` role.
//! struct Admin<'r>(AuthenticatedUser<'r>);
//!
//! #[rocket::async_trait]
//! impl<'r> FromRequest<'r> for Admin<'r> {
//!     type Error = LogtoError;
//!
//!     async fn from_request(request: &'r Request<'_>) -> Outcome<Self, LogtoError> {
//!         let user = try_outcome!(AuthenticatedUser::from_request(request).await);
//!         let admin = user.claims().roles.iter().flatten().any(|r| r == "admin");
//!         if admin {
//!             Outcome::Success(Admin(user))
//!         } else {
//!             Outcome::Forward(Status::Forbidden)
//!         }
//!     }
//! }
//!
//! #[get("/")]
//! fn admin_home(admin: Admin<'_>) -> String {
//!     format!("Admin panel for {}", admin.0.id())
//! }
//!
//! #[get("/", rank = 2)]
//! fn user_home(user: AuthenticatedUser) -> String {
//!     format!("Hello {}", user.id())
//! }
//!
//! #[get("/", rank = 3)]
//! fn public_home() -> &'static str {
//!     r#"<a href="/logto/sign-in">Sign In</a>"#
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![admin_home, user_home, public_home])
//! }
//! ```
//!
//! ## `Option`, `Result` and `Outcome`
//!
//! Rocket's wrappers turn a forward and an error into different things: `Option<G>` turns
//! both into `None`, while `Result<G, E>` turns only the error into `Err` and still
//! **forwards** on a forward (so the handler never runs for a signed-out visitor).
//! `rocket::request::Outcome<G, LogtoError>` gives all three to the handler.
//!
//! | parameter | signed in, guard succeeds | nobody signed in | guard fails (403, 502, 503, 401 `SignInAgain`) |
//! |---|---|---|---|
//! | `G` | `G` | forwards: next rank, else the 401 catcher | the catcher for the error's status |
//! | `Option<G>` | `Some(G)` | `None` | `None` |
//! | `Result<G, LogtoError>` | `Ok(G)` | forwards, as `G` does | `Err(error)` |
//! | `Outcome<G, LogtoError>` | `Success(G)` | `Forward(Status::Unauthorized)` | `Error((status, error))` |
//!
//! [`AuthenticatedUser`] reads only the session, never Logto, so once the fairing is
//! attached it cannot fail: `Option<AuthenticatedUser>` is exactly "signed in or not". To
//! tell "Logto is down" apart, call its methods, which return `Result<_, LogtoError>`
//! ([`LogtoError::Unavailable`] when Logto cannot be reached). For the token guards,
//! `Option<ResourceToken<R>>` also hides Logto's failures; `Result<ResourceToken<R>,
//! LogtoError>` shows them, and leaves signed-out visitors to the next rank or the 401
//! catcher. Returning the `Err` from the handler answers just as the crate's catcher
//! would.
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket_logto::{AuthenticatedUser, Logto, LogtoError, Resource, ResourceToken};
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
//! }
//!
//! /// Signed in or not: `None` only when nobody is signed in.
//! #[get("/dashboard")]
//! fn dashboard(user: Option<AuthenticatedUser>) -> String {
//!     match user {
//!         Some(user) => format!("Dashboard of {}", user.id()),
//!         None => "Public dashboard".into(),
//!     }
//! }
//!
//! /// "Signed out" and "Logto down" told apart.
//! #[get("/orders")]
//! async fn orders(user: Option<AuthenticatedUser<'_>>) -> Result<String, LogtoError> {
//!     let Some(user) = user else {
//!         return Ok("Sign in to see your orders.".into());
//!     };
//!     match user.access_token(Shopping::INDICATOR).await {
//!         Ok(token) => Ok(format!("orders, with scopes {:?}", token.scopes())),
//!         Err(LogtoError::Unavailable { .. }) => Ok("Orders are unavailable right now.".into()),
//!         Err(other) => Err(other),
//!     }
//! }
//!
//! /// Signed-out visitors never get here (the guard forwards to the 401 catcher); Logto's
//! /// failures do.
//! #[get("/cart")]
//! fn cart(token: Result<ResourceToken<Shopping>, LogtoError>) -> Result<String, LogtoError> {
//!     match token {
//!         Ok(token) => Ok(format!("cart with scopes {:?}", token.scopes())),
//!         // Logto is down: show something rather than an error page.
//!         Err(LogtoError::Unavailable { .. }) => Ok("The cart is unavailable right now.".into()),
//!         Err(other) => Err(other),
//!     }
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![dashboard, orders, cart])
//! }
//! ```
//!
//! [`LogtoUser`] never fails nor forwards: it is the guard for pages that show either
//! state, and it costs nothing more than `Option<AuthenticatedUser>`.
//!
//! # Apps under a path
//!
//! With `base_url = "https://example.com/app"`, Rocket itself serves the app under
//! `/app`: the proxy in front forwards `/app/...` unchanged (it must not strip the
//! prefix). Then:
//!
//! - the fairing mounts its routes under `/app/logto` ([`LogtoConfig::routes_base`]),
//!   and the redirect URI to register is `https://example.com/app/logto/sign-in-callback`;
//! - you mount your routes under `/app` too, and register the crate's catchers there or
//!   at `/`;
//! - every redirect the crate makes is a full path: the 401 catcher sends a browser to
//!   `/app/logto/sign-in?return_to=%2Fapp%2Forders`; without `return_to`, sign-in lands on
//!   `/app` (the path of `base_url`); `return_to` and `post_sign_in_redirect` are full
//!   paths as the browser sees them (`/app/orders`); `post_sign_out_redirect` defaults to
//!   `https://example.com/app`;
//! - session cookies keep `Path=/`;
//! - links in your pages come from [`LogtoConfig::routes_base`] (the sample app keeps it in
//!   managed state, set at ignite with [`Logto::config`]).
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket_logto::{AuthenticatedUser, Logto};
//!
//! /// `https://example.com/app/orders`
//! #[get("/orders")]
//! fn orders(user: AuthenticatedUser) -> String {
//!     format!("Orders of {}", user.id())
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     // Rocket.toml: base_url = "https://example.com/app"
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         .register("/app", Logto::catchers())
//!         .mount("/app", routes![orders])
//! }
//! ```
//!
//! # Protecting an API
//!
//! The other half of a Logto-based product is the API that its web apps, SPAs, mobile apps
//! and services call with a Logto access token (`Authorization: Bearer <token>`). Logto's
//! guide "Protect your API" has each API fetch Logto's keys and check the JWT and its scopes
//! by hand, for three permission models. Here each model is a guard:
//!
//! | Logto's model | the token | guard |
//! |---|---|---|
//! | global API resources | `aud` is the API's indicator | [`BearerToken<R>`] |
//! | organization (non-API) permissions | `aud` is `urn:logto:organization:<id>`, organization scopes | [`OrganizationToken<R = Organizations>`](OrganizationToken) |
//! | organization-level API resources | `aud` is the indicator, `organization_id` is `<id>` | [`OrganizationResourceToken<R>`] |
//!
//! ```no_run
//! use rocket::{get, launch, routes};
//! use rocket::serde::json::{Json, Value};
//! use rocket_logto::{BearerToken, Logto, OrganizationToken, Resource};
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
//!     const REQUIRED_SCOPES: &'static [&'static str] = &["read:orders"];
//! }
//!
//! /// 401 without a valid token for the shopping API, 403 without `read:orders`.
//! #[get("/orders")]
//! fn orders(token: BearerToken<Shopping>) -> Json<Value> {
//!     Json(Value::Object(token.claims().clone()))
//! }
//!
//! /// Only an organization token of this very organization opens it.
//! #[get("/organizations/<organization_id>/members")]
//! fn members(organization_id: &str, token: OrganizationToken) -> String {
//!     format!("members of {organization_id}, asked by {}", token.sub())
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Logto::fairing())
//!         // RFC 6750 answers for the guards' refusals.
//!         .register("/", Logto::catchers())
//!         .mount("/api", routes![orders, members])
//! }
//! ```
//!
//! ```toml
//! # Rocket.toml of an API that signs nobody in: no app_id, app_secret or base_url.
//! [default.logto]
//! endpoint = "https://your-tenant.logto.app"
//! resources = ["https://shopping.your-app.com/api"]
//! ```
//!
//! **Configuration.** With `app_id` and `app_secret` absent the app is an API only
//! ([`LogtoConfig::is_api_only`]): the fairing mounts no sign-in routes, and a guard that
//! signs users in ([`AuthenticatedUser`] and the others) stops the launch. It needs the
//! resources it serves in `resources` (`urn:logto:resource:organizations` for an API that
//! takes organization tokens only); a configuration that is neither a web app nor an API
//! stops the launch with a message saying what to add. An app can be both: the sample web
//! app serves its own API. Every resource of a [`BearerToken<R>`] or
//! [`OrganizationResourceToken<R>`] must be in `resources`, else the launch stops.
//!
//! **What is checked**, by the same code as ID tokens at sign-in: the signature with
//! Logto's published keys (the key set shared with sign-in, fetched again when a token names
//! an unknown key id, at most every 10 s whatever the key ids), an algorithm Logto signs with
//! (RS256 or ES384, never `none` or a shared secret), `typ` `at+jwt` when the header has a
//! `typ` (so an ID token is refused), `iss`, `exp`, `iat` and `nbf` within
//! `clock_skew_secs`, a `sub`, `client_id` and `jti`; then what the route accepts: the
//! audience, the organization, every scope of `R::REQUIRED_SCOPES`. A token for a global
//! resource that is narrowed to an organization (it carries the user's roles *in* that
//! organization) opens only [`OrganizationResourceToken`] routes. The guards deref to
//! [`VerifiedToken`]: `sub()`, `client_id()`, `user_id()` (`None` for a machine-to-machine
//! token: Logto's client credentials give `sub` = `client_id`), `scopes()`, `has_scope()`,
//! `organization_id()`, `expires_at()`, `secret()` and `claims()`: the same names as
//! [`AccessToken`], which [`ResourceToken<R>`] derefs to.
//!
//! **The route's organization.** [`OrganizationToken`] and [`OrganizationResourceToken`]
//! read the organization from the route's `<organization_id>` path segment and check the
//! token against it: there is no comparison for the handler to write, so none to forget. A
//! route that uses them without that segment fails every request with 500 (and the log says
//! why) rather than accept a token of any organization.
//!
//! **Errors, not forwards.** An API route has no signed-out version to fall back to, so
//! these guards never forward: a missing or bad token fails at once with a [`BearerError`],
//! and the crate's catchers ([`Logto::catchers`]) answer it as RFC 6750 says, in JSON
//! whatever the `Accept` header, never with a redirect to sign-in:
//!
//! | case | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token (no `Authorization`, another scheme) | 401 | `Bearer realm="<resource>"` |
//! | malformed, forged, expired, not yet valid, another issuer, audience or organization, several `Authorization` headers, over 8 KB | 401 | `error="invalid_token"` with a description |
//! | an opaque token (Logto's answer when no resource was asked for) | 401 | `error="invalid_token"`, saying to request a token for the resource |
//! | valid, but without the required scopes | 403 | `error="insufficient_scope"`, `scope="<required scopes>"` |
//! | Logto's keys cannot be fetched | 503 (or 502) | none |
//!
//! The body is `{"error": ..., "error_description": ...}` (and `scope` for 403; `error` is
//! `missing_token` when there is no token). An app's own catcher for a status and base
//! still wins, as always. For a route that serves anonymous callers too,
//! `Option<BearerToken<R>>` is `None` without a token *or* with a bad one, and
//! `Result<BearerToken<R>, BearerError>` tells [`BearerError::Missing`] from a refused
//! token.
//!
//! **The cache.** Checking an ES384 signature costs far more than the rest of a request,
//! so a token that opened a route is kept, by its exact bytes, until its `exp` (an hour at
//! most), up to `bearer_cache_entries` tokens (10000 by default; the oldest go first).
//! A client that repeats its token pays for one verification. A forged token is never
//! kept (only a verified one gets in), nor one for another audience or organization, and a
//! kept token is still checked against each route's audience, organization and scopes.
//!
//! **Calling your API from the web app.** [`ResourceToken<R>`] gives the signed-in user's
//! token for `R`; send it as `Authorization: Bearer <token>`. The API answers with its
//! verified claims:
//!
//! ```no_run
//! use rocket::get;
//! use rocket_logto::{LogtoError, Resource, ResourceToken};
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.your-app.com/api";
//! }
//!
//! #[get("/my-orders")]
//! async fn my_orders(token: ResourceToken<Shopping>) -> Result<String, LogtoError> {
//!     let answer = reqwest::Client::new()
//!         .get("https://shopping.your-app.com/api/orders")
//!         .bearer_auth(token.secret())
//!         .send()
//!         .await
//!         .and_then(|r| r.error_for_status())
//!         .map_err(|e| LogtoError::bad_gateway(format!("the shopping API: {e}")))?;
//!     answer.text().await.map_err(|e| LogtoError::bad_gateway(e.to_string()))
//! }
//! ```
//!
//! **Testing API routes.** With the `testing` feature, a fairing built with
//! [`Logto::trust_test_key`] accepts tokens made by [`testing::TestToken`], in debug
//! builds only: see [Testing your routes](#testing-your-routes).
//!
//! `examples/api` is a small API with one route per model and one that needs a scope
//! (`cargo run --example api`).
//!
//! # Security
//!
//! What the library checks, in short:
//!
//! - **Sign-in**: a fresh random `state`, `nonce` and PKCE verifier (S256) per sign-in,
//!   kept in an encrypted cookie named after the `state`, usable once, for 10 minutes. The
//!   redirect URI comes from `base_url`, never from request headers.
//! - **Callback**: the `state` must match a sign-in in progress; duplicate parameters are
//!   refused; `iss` must be Logto's issuer (RFC 9207); Logto's `error` is shown escaped. The
//!   code is exchanged with the PKCE verifier and `client_secret_basic`.
//! - **ID token**: signature with Logto's published keys (fetched again once when a key id
//!   is unknown), algorithm from the allow-list in Logto's discovery (never `none`), `iss`,
//!   `aud` (the app id, no other audience), `exp` and `iat` within `clock_skew_secs`,
//!   `nonce`. Discovery must name the issuer `<endpoint>/oidc`. A refreshed ID token must
//!   name the same issuer, user and app; userinfo must name the same user.
//! - **Sessions**: a new session on every sign-in; encrypted, `HttpOnly`, `SameSite=Lax`
//!   cookies, `Secure` with an https `base_url`; a tampered, truncated or expired cookie
//!   means signed out; lifetimes enforced from inside the encrypted payload; a sign-out
//!   ends its session, so a copy of its cookies taken before is refused (on every
//!   instance, with Redis).
//! - **Redirects**: return paths are same-origin relative paths only ([`ReturnPath`]); the
//!   post sign-out URI comes from the configuration.
//! - **Tokens**: never in URLs or logs; auth responses carry `Cache-Control: no-store` and
//!   `Referrer-Policy: no-referrer`; one refresh at a time per refresh token.
//! - **Pages**: a response to a request whose guards read the session gets
//!   `Cache-Control: private, no-store` unless the route set its own, so no shared cache
//!   keeps a user's page and Back never shows a stale one.
//! - **API access tokens**: the same signature, key and claim checks as ID tokens, RS256 or
//!   ES384 only, `typ` `at+jwt` when present, the route's audience, organization and scopes;
//!   RFC 6750 errors, never a redirect; verified tokens cached by their exact bytes only
//!   after they opened a route (see [Protecting an API](#protecting-an-api)).
//! - **Back-channel logout**: the logout token must be posted form-encoded and is checked
//!   for signature, algorithm, `iss`, `aud`, `iat`, `exp`, the back-channel event, `sub` or
//!   `sid`, no `nonce`, and an unused `jti`.
//!
//! The full list, with the attack each line stops, is the repository's `SECURITY.md`, which
//! names the test covering each line.
//!
//! # Configuration
//!
//! The `logto` table of Rocket's configuration (`[default.logto]`, or a profile's). The
//! variables in the last column win over the file with `rocket::build()`, and with a
//! figment of your own (`rocket::custom`) when it merges [`LogtoEnv`]; any key can also be
//! set through `ROCKET_LOGTO={key=value, ...}`. The loaded configuration is
//! [`LogtoConfig`] ([`Logto::config`]), read through its methods.
//!
//! | key | type | default | environment |
//! |---|---|---|---|
//! | `endpoint` | http(s) URL | required | `LOGTO_ENDPOINT` |
//! | `app_id` | string | required to sign users in; absent for an API only | `LOGTO_APP_ID` |
//! | `app_secret` | string | required to sign users in; absent for an API only | `LOGTO_APP_SECRET` |
//! | `base_url` | http(s) URL, where this app is served; its path (segments of letters, digits, `-`, `_`, `.`, `~`) is where Rocket serves it | required to sign users in; optional for an API only | `LOGTO_BASE_URL` |
//! | `scopes` | list of strings, each one word | `[]` (`openid offline_access profile` are always requested) | |
//! | `resources` | list of absolute URIs: requested at sign-in, and accepted by the API guards | `[]` (plus `urn:logto:resource:organizations` with the organizations scope); at least one for an API only | |
//! | `prompt` | space-separated `none`, `login`, `consent`, `select_account` | `"consent"` | |
//! | `fetch_user_info` | bool | `false` | |
//! | `routes_prefix` | path segments of letters, digits, `-`, `_`, `.`: the auth routes' place under the path of `base_url` | `"logto"` | |
//! | `post_sign_in_redirect` | full path, or a URL on `base_url`'s origin | the path of `base_url` (`/`) | |
//! | `post_sign_out_redirect` | http(s) URL | `base_url` (as a URL: `http://localhost:8000/`) | |
//! | `first_screen` | `sign_in`, `register`, `reset_password`, `identifier:sign_in`, `identifier:register`, `single_sign_on` | none | |
//! | `identifiers` | list of `email`, `phone`, `username` | `[]` | |
//! | `direct_sign_in` | `social:<target>` or `sso:<connector-id>` | none | |
//! | `login_hint` | string | none | |
//! | `extra_params` | table of strings, added to the authorize URL; not a parameter the library sets | `{}` | |
//! | `clock_skew_secs` | integer, 0 to 600 | `60` | |
//! | `http_timeout_secs` | integer, 1 to 120: timeout of each request to Logto | `10` | |
//! | `token_refresh_margin_secs` | integer, 0 to 3599 (below Logto's 3600 s access-token lifetime; a warning is logged above 600) | `60` | |
//! | `rotation_grace_secs` | integer, 1 to 600: how long a request carrying a rotated-out refresh token still follows the rotation | `60` | |
//! | `session_inactivity_secs` | integer, 1 to 34560000 (400 days) | `1209600` (14 days) | |
//! | `session_lifetime_secs` | integer, 1 to 34560000 (400 days) | `2592000` (30 days) | |
//! | `refresh_cache_entries` | integer, 1 to 10000000 | `10000` | |
//! | `session_cache_entries` | integer, 1 to 10000000 | `4096` | |
//! | `bearer_cache_entries` | integer, 1 to 10000000: verified access tokens the API guards keep | `10000` | |
//! | `spent_state_entries` | integer, 1 to 10000000 | `100000` | |
//! | `redis_url` | `redis://` or `rediss://` URL (user and password allowed, `/N` for a database); with `redis_cluster`, a list of nodes (or one string, comma-separated); with `redis_sentinel_master`, the sentinels. Needs the cargo feature `redis` | none: everything in process | `LOGTO_REDIS_URL` |
//! | `redis_cluster` | bool: the URLs are Redis Cluster nodes | `false` | |
//! | `redis_sentinel_master` | string: the URLs are Redis Sentinels, and this is the name of the master they watch | none | |
//! | `redis_key_prefix` | 1 to 64 printable ASCII characters, no spaces or braces | `"rocket_logto:"` | |
//! | `redis_timeout_ms` | integer, 10 to 60000: longest wait for one Redis operation | `1000` | |
//! | `redis_fail_closed` | bool: refuse sessions while the ended sessions cannot be kept current | `false` | |
//! | `session_store` | `"cookie"` or `"redis"` (needs `redis_url`): where sessions live, see [Where sessions live](#where-sessions-live) | `"cookie"` | `LOGTO_SESSION_STORE` |
//! | `m2m_app_id` | string: a machine-to-machine app, for the app's own tokens ([Tokens for the app itself](#tokens-for-the-app-itself)); with `m2m_app_secret` | none | `LOGTO_M2M_APP_ID` |
//! | `m2m_app_secret` | string, never logged; with `m2m_app_id` | none | `LOGTO_M2M_APP_SECRET` |
//! | `management_api_resource` | absolute URI: the Management API's resource indicator, [`ManagementApi`]'s | `"https://default.logto.app/api"` (Logto OSS; on Logto Cloud, `"https://<tenant-id>.logto.app/api"`) | |
//!
//! Notes:
//!
//! - `endpoint` may carry a path (a tenant); the issuer is `<endpoint>/oidc`.
//! - The guide's `scopes` and `resources` are the same keys; duplicates and the three
//!   default scopes are dropped from `scopes`.
//! - `prompt = "consent"` is what makes Logto issue a refresh token for `offline_access`;
//!   without a refresh token no access token can be fetched.
//! - `first_screen`, `identifiers`, `direct_sign_in` and `login_hint` are Logto's sign-in
//!   experience parameters. `/logto/sign-up` sets `first_screen=register` for that
//!   sign-in.
//! - `refresh_cache_entries` bounds the in-memory record of recent refreshes (each entry
//!   lives 2 minutes); `spent_state_entries` bounds the record of used `state` values (each
//!   lives 10 minutes) that refuses replayed callbacks; `session_cache_entries` bounds the
//!   decoded sessions kept so that a browser repeating the same cookies costs no decryption
//!   (each lives 5 minutes). Rotations of refresh tokens are followed for
//!   `rotation_grace_secs`; rotated-out tokens, and tokens a failed refresh may have spent,
//!   are remembered as never to be sent again (by a SHA-256 of the token, never the token)
//!   for `session_lifetime_secs`, within `refresh_cache_entries`; back-channel logouts and
//!   sign-outs for `session_lifetime_secs`, within `spent_state_entries` per kind (Logto
//!   session, user, app session). That list never forgets silently: when it is full, the
//!   record that makes room sets a floor, and every session started at or before it is
//!   refused (its user signs in again), with a warning. Give it more entries than the
//!   sign-outs and back-channel logouts of one session lifetime.
//! - Sizing `session_cache_entries`: a decoded session costs about 5 KB of memory (one
//!   with an ID token, a refresh token and two access tokens, as measured by
//!   `tests/session_cache_memory.rs`), so the default 4096 entries take about 20 MiB once
//!   full, and memory stays flat from then on. Give it at least as many entries as users
//!   active within 5 minutes (an entry's lifetime). A session enters the cache at the
//!   second sight of its cookies, not the first, and only when fewer new cookies than
//!   twice the cache's entries came in between: a browser's first two requests decode its
//!   cookies, the following ones hit. So traffic that cycles through more sessions than
//!   that (each seen once in a long while) decodes every request but evicts nothing: a
//!   decode costs a few µs more server time than a hit (BENCHMARKS.md, the
//!   distinct-cookies row), while inserting and evicting an entry for a cookie that would
//!   not come back before its eviction cost as much again. The window is a fixed table of
//!   16 bytes per cache entry.
//! - `rotation_grace_secs`: when Logto rotates a refresh token, the parallel requests of a
//!   browser that still carry the old one follow the rotation for this long, and get the
//!   new tokens without sending the old one again. After it, the old token ends the session
//!   it is in (401, cookies cleared; a page load goes to sign-in) and is still not sent, so
//!   an old, copied or stolen cookie gets nothing and the grant of the browser holding the
//!   new token is untouched. The trade-off: a browser that lost the response carrying the
//!   new token (a dropped connection), or kept an older cookie because responses arrived
//!   out of order, signs in again at its next refresh. A rotation this process no longer
//!   remembers (evicted, or after a restart) reaches Logto, whose reuse detection then ends
//!   the grant.
//! - The `redis_*` keys: see [Running several instances](#running-several-instances). The
//!   other `redis_*` keys without `redis_url` are refused; the URL is never printed with its
//!   password.
//! - Unknown keys are refused, so a typo does not go unnoticed.
//! - Rocket's own `secret_key` matters too: see below.
//!
//! # Cargo features
//!
//! | feature | what it adds |
//! |---|---|
//! | `redis` | several instances of the app share refreshes and sign-outs through Redis or Redis Cluster ([Running several instances](#running-several-instances)). Without it, a configured `redis_url` refuses to launch. |
//! | `metrics` | records what the crate does (sign-ins, calls to Logto, caches, bearer tokens, Redis) through the `metrics` facade, for the exporter the app installs ([Operating it](#operating-it)). |
//! | `testing` | [`testing`]: helpers for an app's own route tests, signed-in users and bearer tokens (see "Testing your routes"). Use it from `[dev-dependencies]`. |
//!
//! The crate enables Rocket's `secrets` (private cookies) and `json` features, and uses
//! `rustls` for its HTTPS client (and, with `redis`, for `rediss://`). `secrets` means that a release build needs a
//! `secret_key`, an API that signs nobody in too.
//!
//! # Testing your routes
//!
//! An app's own tests check its protected routes with Rocket's local client and the
//! `testing` feature, without a provider or a network. Add the feature to the
//! dev-dependencies, then sign a request in as a [`testing::TestUser`]:
//!
//! ```toml
//! [dev-dependencies]
//! rocket_logto = { version = "0.1", features = ["testing"] }
//! ```
//!
//! Build the app in a function that takes the fairing, as in the first example of this
//! page: `#[launch]` passes `Logto::fairing()`, and a test passes the one it needs, with
//! [`Logto::trust_test_key`] for the API routes (below).
//!
// The example needs the `testing` feature: a doctest with it (scripts/test), ignored without.
#![cfg_attr(feature = "testing", doc = "```")]
#![cfg_attr(not(feature = "testing"), doc = "```ignore")]
//! use rocket::http::Status;
//! use rocket::local::asynchronous::Client;
//! use rocket::{get, launch, routes, Build, Rocket};
//! use rocket_logto::testing::{SignedInRequest, TestUser};
//! use rocket_logto::{AuthenticatedUser, Logto, Resource, ResourceToken};
//!
//! struct Shopping;
//!
//! impl Resource for Shopping {
//!     const INDICATOR: &'static str = "https://shopping.example.com/api";
//! }
//!
//! #[get("/orders")]
//! fn orders(user: AuthenticatedUser<'_>, token: ResourceToken<Shopping>) -> String {
//!     format!("orders of {}, scopes {:?}", user.id(), token.scopes())
//! }
//!
//! fn app(logto: Logto) -> Rocket<Build> {
//!     rocket::build()
//!         .attach(logto)
//!         .register("/", Logto::catchers())
//!         .mount("/", routes![orders])
//! }
//!
//! #[launch]
//! fn rocket() -> _ {
//!     app(Logto::fairing())
//! }
//!
//! // A test of the app, in its `#[cfg(test)] mod tests` under `#[rocket::async_test]`.
//! async fn orders_are_for_signed_in_users() {
//!     # let app = |logto| app(logto).configure(rocket_logto::testing::figment()
//!     #     .merge(("logto.resources", [Shopping::INDICATOR])));
//!     let client = Client::untracked(app(Logto::fairing())).await.unwrap();
//!     let alice = TestUser::new("alice")
//!         .claim("email", "alice@example.com")
//!         .resource_token::<Shopping>(&["shopping:read"]);
//!     let response = client.get("/orders").signed_in_as(&alice).dispatch().await;
//!     assert_eq!(response.status(), Status::Ok);
//!     // Signed out: the route forwards, and the 401 catcher answers.
//!     let response = client.get("/orders").dispatch().await;
//!     assert_eq!(response.status(), Status::Unauthorized);
//! }
//! # rocket::execute(orders_are_for_signed_in_users());
//! ```
//!
//! [`testing::TestUser`] chooses the ID token's claims, the access tokens of the session
//! (per resource, per organization, per organization and resource) and the kept userinfo
//! answer. Its tokens live a day, so no test refreshes them, and the session holds no
//! refresh token: a route that would refresh answers 401 "sign in again" rather than
//! calling Logto. [`testing::figment`] is a configuration whose `endpoint` is a closed
//! port, for apps that do not want their `Rocket.toml` in tests. Its `secret_key` is drawn
//! at random once per process (the same for every app of one test run, never the same in
//! two runs), so an app that used it outside its tests by mistake would not have sessions
//! that anyone can forge with a key written in this crate.
//!
//! API routes are tested with bearer tokens: attach the fairing with
//! [`Logto::trust_test_key`] (test mode: the API guards trust the feature's test key
//! instead of Logto's), with the layout above `app(Logto::fairing().trust_test_key())`, and send a [`testing::TestToken`] with
//! [`testing::BearerRequest::bearer`]; see [Testing API routes](testing#testing-api-routes).
//! The test key is generated per process and never stored, only a fairing built with that
//! call trusts it (no configuration key does), and a release build with it stops at launch.
//! "Release" means a build without `debug_assertions`, the flag Rust sets in the `dev` and
//! `test` profiles: a release profile that turns `debug-assertions = true` on (some do, to
//! keep overflow checks in production) launches in test mode too. So a fairing that trusts
//! the test key always logs a warning at launch (`logto: TEST MODE: ...`, at `warn`);
//! a production log should never show it. Keep the `testing` feature in
//! `[dev-dependencies]`, so that no production build carries the method at all.
//!
//! It is safe to ship: the helpers hold no secret and switch nothing on. They write the
//! session cookies a real sign-in writes, sealed with the app's own `secret_key` through
//! the local client, so they work only where the test already holds that key, and whoever
//! holds it can forge sessions without them.
//!
//! # Sessions and cookies
//!
//! The guide needs `express-session`; here the session is in the browser, in Rocket
//! [private cookies](https://rocket.rs/guide/v0.5/requests/#private-cookies):
//!
//! - **Contents**: the ID token, the refresh token, the cached access tokens and, with
//!   `fetch_user_info`, the userinfo answer, encrypted and authenticated with AES-256-GCM
//!   under Rocket's `secret_key`. The cookie name is bound into the encryption, so a value
//!   cannot be moved to another cookie. Nothing about sessions is stored on the server.
//! - **Names and size**: `logto_session`, then `logto_session_1` ... `logto_session_7`
//!   when the session outgrows one cookie, so that each `Set-Cookie` line stays under the
//!   4096 bytes browsers accept. A session that needs more than 8 cookies is refused, and
//!   so is one over 64 KiB before compression (the most a reader decompresses: a large
//!   but compressible userinfo answer could fit the cookies and never read back). A
//!   session is written only if it reads back. When a refreshed session no longer fits,
//!   the other cached access tokens are dropped, organization tokens first and oldest
//!   first, then the user info (all can be fetched again), rather than the sign-in.
//!   Sign-ins in progress use
//!   `logto_tx_<id>` cookies, each for 10 minutes; a browser starting a seventh sign-in
//!   while six are unfinished loses all six.
//! - **`__Host-` names on https**: when `base_url` is `https://`, every name above starts
//!   with `__Host-` (`__Host-logto_session`, `__Host-logto_tx_<id>`). Browsers accept such
//!   a cookie only with `Secure`, `Path=/` and no `Domain`, so a sibling subdomain
//!   (`evil.example.com` next to `app.example.com`) cannot plant its own session or
//!   sign-in cookie in this app. On `http://` (local development) the names are plain,
//!   since browsers refuse `__Host-` cookies there. Changing `base_url` between http and
//!   https signs everyone out.
//! - **Attributes**: `Path=/`, `HttpOnly`, `SameSite=Lax` (Rocket's default, `Strict`,
//!   would drop the sign-in cookie when Logto redirects back), and `Secure` when
//!   `base_url` is `https://`.
//! - **`secret_key`**: set one (`openssl rand -base64 32`) as `secret_key` in
//!   `Rocket.toml` or `ROCKET_SECRET_KEY`. Rocket refuses to launch in release without one.
//!   In debug it makes up a random key at each launch, so every restart signs everyone out.
//!   Changing the key signs everyone out too.
//! - **Lifetimes**: a session unused for `session_inactivity_secs` (14 days) or older than
//!   `session_lifetime_secs` (30 days) is signed out. Both are checked from timestamps inside
//!   the encrypted payload, not from the cookie's expiry; the cookie's `Max-Age` is the
//!   absolute lifetime. The last-use timestamp is rewritten only once it is older than a
//!   tenth of the inactivity lifetime (at most an hour), so most requests set no cookie.
//! - **Reading**: the cookies are decrypted once per request, whatever the number of guards.
//!   A cookie that cannot be read (tampered, truncated, from an older key, expired) means
//!   signed out, and the response removes it.
//!
//! # Running several instances
//!
//! Sessions live in cookies, so instances of the app behind a load balancer need the same
//! `secret_key` and the same `logto` table, and nothing else to share sessions. What each
//! instance keeps in memory is another matter:
//!
//! - **refresh coordination**: one refresh at a time per refresh token, rotations followed
//!   for `rotation_grace_secs`, tokens never to be sent again (rotated out, or possibly
//!   spent by a failed refresh);
//! - **ended sessions**: sign-outs (a copy of a signed-out session's cookies is refused)
//!   and back-channel logouts, and the logout tokens' `jti`s.
//!
//! With one instance that is all there is. With several, a browser's parallel requests land
//! on different instances, each would spend the same refresh token, and Logto revokes the
//! whole grant when a rotated-out refresh token comes back: the user is signed out
//! everywhere. A back-channel logout would reach one instance only. So, with the cargo
//! feature `redis`, set `redis_url` and the instances share all of the above through Redis:
//!
//! ```toml
//! # Cargo.toml: rocket_logto = { version = "0.1", features = ["redis"] }
//! # Rocket.toml
//! [default]
//! secret_key = "<openssl rand -base64 32>"   # the same on every instance
//!
//! [default.logto]
//! redis_url = "redis://127.0.0.1:6379"       # or LOGTO_REDIS_URL; rediss://user:password@host:6380/0
//! # redis_key_prefix = "rocket_logto:"       # when several apps share one Redis
//! # redis_timeout_ms = 1000
//! # redis_fail_closed = false
//! ```
//!
//! **The cookie stays the source of truth.** Redis holds coordination, never the only copy
//! of a session: losing Redis loses no session, and a request whose session needs no
//! refresh makes no Redis round trip. Each instance checks requests against its own copy
//! of the ended sessions, loaded when it connects (and after every reconnection) and kept
//! current through pub/sub. Round trips: a sign-in 0; a refresh 2 (check and take a short
//! lease, then write the outcome); an instance that follows a refresh made elsewhere 2, or 3
//! when it waited for it; a sign-out 1; a back-channel logout 2.
//!
//! **One refresh across instances.** Before a refresh token this instance knows nothing
//! about is sent, one atomic script looks at what the others did with it: refreshed for
//! this target (the result is used), rotated (the successor is followed, the old token is
//! never sent again), spent, or being refreshed right now (wait for the outcome, announced
//! on pub/sub, at most the lease). Otherwise it takes the lease (`SET NX PX`; twice
//! `http_timeout_secs` plus a second) and calls Logto. An instance that dies while it holds
//! a lease leaves a marker behind: once the lease has expired, the others take the token
//! for spent (it may have reached Logto) and end that session (the user signs in again)
//! rather than resend it, which would revoke the grant. The same happens if Redis fails
//! between the lease and the outcome for longer than the lease.
//!
//! **Shared**: refresh results and rotations (for `rotation_grace_secs`), tokens never to
//! be sent again, ended sessions, logout `jti`s. **Not shared**: sessions themselves (in
//! cookies), used sign-in `state`s (a callback replayed on another instance still fails:
//! Logto accepts a code once), caches of decoded cookies, discovery and keys.
//!
//! **Nothing secret in the clear.** Key names carry keyed hashes (HMAC-SHA256) of refresh
//! tokens, `sid`s, `sub`s and `jti`s, never the values; values holding tokens are sealed with
//! AES-256-GCM under a key derived from `secret_key` (HKDF) and bound to their key name, so
//! whoever reads or writes Redis can neither read a token nor plant a result (a value that
//! fails to open is ignored, and the token it concerns is not sent). Every key has a TTL.
//!
//! **When Redis is down or hangs** (each operation waits at most `redis_timeout_ms`):
//! - routes that only read the session answer from the cookie, as without Redis (a warning
//!   is logged);
//! - a route that needs a refresh serves the cached access token while it is valid;
//!   otherwise it answers 503 with `Retry-After`. Either way it keeps the session and sends
//!   nothing to Logto: spending a token twice is worse than a short wait;
//! - a sign-out or back-channel logout is enforced by the instance that got it at once, and
//!   by the others once Redis is back (it is kept and sent then);
//! - when Redis is back, everything works again without a restart, and the ended sessions
//!   are reloaded (and written back if Redis lost them in a restart).
//!
//! During an outage the other instances cannot learn of new sign-outs. To refuse sessions
//! instead while the list of ended sessions cannot be kept current, set `redis_fail_closed
//! = true`: requests are then treated as signed out (the cookies are kept, and work again
//! once Redis is back).
//!
//! **What Redis is trusted with.** Whoever can reach the Redis server (another app under
//! another prefix, a client with its password) can delete what the crate stored, which
//! signs users out or makes refreshes wait; nothing more. Values are sealed and names are
//! keyed hashes, and every announcement on `<prefix>events` and every member of the list of
//! ended sessions carries a MAC under a key derived from `secret_key`: messages and
//! members that lack it, were made under another `secret_key`, are dated in the future or
//! carry more members than the crate sends are ignored, counted and warned about once a
//! minute. So all instances of an app must share one `secret_key`. The threat model is in
//! `SECURITY.md`.
//!
//! **Without `SUBSCRIBE`.** An instance that cannot subscribe to the channel while its
//! commands work (a Redis proxy without pub/sub, an ACL that denies `SUBSCRIBE`) hears of no
//! change made elsewhere. It says so in a warning at launch and, until it can subscribe,
//! reads every session of the Redis session store from Redis (no cache) and reloads the
//! list of ended sessions every 400 ms: a sign-out elsewhere is refused within a second.
//!
//! **Redis Cluster**: set `redis_cluster = true` and list some nodes in `redis_url`
//! (`["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]`, or one comma-separated string). The keys of one
//! refresh share a hash tag (`{<hash of the token>}`), so its script runs on one node;
//! pub/sub messages cross the cluster. The prefix may not contain braces.
//!
//! **Redis Sentinel**: set `redis_sentinel_master` to the master's name (the `<name>` of
//! `sentinel monitor <name> ...`) and list the sentinels in `redis_url`
//! (`["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]`; their user, password and TLS are
//! used for the master too). Each instance asks a sentinel where the master is, and asks again
//! as soon as its connection fails or the server answers as a replica (`READONLY`): a failover
//! is followed without a restart.
//!
//! # Where sessions live
//!
//! `session_store = "cookie"` (the default) keeps each session in the browser's cookies, as
//! described in [Sessions and cookies](#sessions-and-cookies). `session_store = "redis"`
//! (with `redis_url` and the cargo feature `redis`; env `LOGTO_SESSION_STORE`) keeps it in
//! Redis, and the browser holds one private (encrypted) cookie, `logto_sid`
//! (`__Host-logto_sid` on https), with a random id of 256 bits: its `Cookie` header is about
//! 115 bytes whatever the session holds. Guards, routes, refreshes and hooks work the same;
//! switching is a `Rocket.toml` change.
//!
//! | | cookie | redis |
//! |---|---|---|
//! | size | at most 8 cookies of about 3.5 kB, and 64 KiB before compression, sent with every request | up to 1 MiB before compression; the browser sends about 115 bytes (a user in 50 organizations with 55 tokens: about 11 kB in Redis; one in 130 organizations with every organization token: 67 kB before compression, 29 kB in Redis) |
//! | server state | none | one sealed value per session, with a TTL |
//! | list and end one session | no | [`Sessions::list`], [`Sessions::end`] |
//! | end every session of a user | [`Sessions::end_all`] (through the list of ended sessions) | [`Sessions::end_all`] (deleted) |
//! | Redis down | sessions work (refreshes wait) | sessions this instance has cached work; the others get 503 with `Retry-After` (the cookie is kept) |
//!
//! **How it works.** The session lives under `ses:{<hash>}`, where `<hash>` is a keyed hash
//! (HMAC-SHA256 under a key derived from `secret_key`) of the id, never the id: reading
//! Redis gives no usable cookie. Its value is sealed (AES-256-GCM, bound to its key name) and
//! holds a version number, the session, and the browser's `User-Agent` at sign-in (200
//! characters at most); created and last seen are the session's own timestamps. Its TTL is
//! the shorter of what is left of `session_lifetime_secs` and of `session_inactivity_secs`,
//! renewed when the last-use time is rewritten (a tenth of the inactivity lifetime, at most
//! an hour). A set per user (`user:{<hash of sub>}`) lists the user's sessions. The key
//! layout is in `src/store/redis/sessions.rs`.
//!
//! - **Hot path**: each instance keeps up to `session_cache_entries` sessions it served, each
//!   for 5 minutes. Every write and deletion publishes `s <hash> <version>` or `d <hash>` on
//!   the `<prefix>events` channel, and every instance drops its stale copy: a request whose
//!   session is cached and unchanged makes **no Redis call**; the next request after a change
//!   elsewhere reads it once. When the subscription is lost and made again, the cache is
//!   emptied (messages may have been missed); while there is none, the cache is not used.
//! - **Sign-in** always creates a new id (no session fixation) and deletes the browser's
//!   previous session. **Sign-out** deletes the session and removes the cookie. A refresh
//!   writes the session in place: no `Set-Cookie`.
//! - **An id Redis does not know** (expired, deleted, flushed) means signed out: the cookie
//!   is removed and the guards answer as for nobody signed in (401, or a redirect to
//!   sign-in), never 500. An instance that cached the session before a `FLUSHALL` (which
//!   announces nothing) serves it until its cache entry expires (5 minutes) or its
//!   subscription is made again.
//! - **Size**: a session is written only if it reads back, up to 1 MiB before compression
//!   (what an instance decompresses at most). A refreshed session that outgrows it drops
//!   cached tokens, organization tokens first and oldest first, then the user info (all can
//!   be fetched again); a userinfo answer that does not fit at sign-in is left out and
//!   fetched on demand, as with the cookie store.
//! - **Redis Cluster**: the session and its user's set live in different slots, so they are
//!   written one command at a time.
//!
//! **Switching stores** keeps users signed in. With `session_store = "redis"`, a browser
//! still carrying cookie-store session cookies is read once, moved into Redis under a new id,
//! and its session cookies are removed. A session moves in once: the same cookies sent again
//! within `rotation_grace_secs` (the browser's parallel requests) join the session they
//! were moved to, and later (or once it ended) they are refused, so an old copy of them is
//! worth nothing. (The new id is a keyed hash of the exact cookie moved, as unpredictable as
//! a random one to whoever lacks `secret_key`.) With `session_store = "cookie"` and `redis_url`, a
//! browser carrying a `logto_sid` cookie has its session read from Redis once, written into
//! session cookies and deleted from Redis (a session too large for the cookies keeps its ID
//! and refresh tokens only, the access tokens are fetched again). Without `redis_url` the
//! `logto_sid` cookie is removed and the user signs in again.
//!
//! **Ending sessions from the app's code**: the fairing puts a [`Sessions`] handle in
//! Rocket's managed state, for routes (`&State<Sessions>`) and background tasks
//! (`rocket.state::<Sessions>()`). [`AuthenticatedUser::session_handle`] names the request's
//! own session, to mark it in a list. The sample app's `/sessions` page lists the user's
//! sessions with "sign out other sessions".

//!
//! # Operating it
//!
//! Three things for whoever runs the app: metrics, health routes, and log lines.
//!
//! ## Metrics
//!
//! With the cargo feature `metrics`, the crate records through the
//! [`metrics`](https://docs.rs/metrics) facade, into whatever recorder the app installs
//! (`metrics-exporter-prometheus`, OpenTelemetry, statsd, ...). Without the feature nothing is
//! recorded and nothing of it is compiled in. Install the recorder before the app serves
//! requests (at the top of `main` or of the `#[launch]` function): the crate keeps handles to
//! its hot-path metrics from their first use. The sample app (`examples/sample`, built with
//! `--features metrics`) serves them as Prometheus text at `/metrics`.
//!
//! Names are stable. Labels take values from the short lists below only (never a user id, a
//! token or a URL path), so every metric has a bounded number of series.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `logto_sign_ins_started_total` | counter | |
//! | `logto_sign_ins_completed_total` | counter | |
//! | `logto_sign_ins_failed_total` | counter | `reason`: `bad_answer`, `state` (unknown, used or expired), `provider_error` (Logto answered `error=`), `issuer`, `unavailable` (Logto unreachable), `code` (refused by Logto), `id_token`, `app_refused` (the sign-in hook), `session` |
//! | `logto_sign_outs_total` | counter | |
//! | `logto_backchannel_logouts_total` | counter | `outcome`: `accepted`, `refused`; `reason`: `none`, `replayed`, `signature`, `expired`, `audience`, `unavailable`, `invalid` |
//! | `logto_provider_requests_total` | counter | `endpoint`: `token`, `userinfo`, `revocation`, `introspection`, `discovery`, `jwks`; `outcome`: `ok`, `timeout`, `unreachable`, `no_answer`, `rate_limited`, `malformed`, `server_error`, `refused` |
//! | `logto_provider_request_duration_seconds` | histogram | `endpoint` |
//! | `logto_refresh_grants_total` | counter | |
//! | `logto_refresh_joined_total` | counter | `via`: `process` (another request of this instance), `redis` (another instance, through the Redis lease) |
//! | `logto_refresh_taken_over_total` | counter | `outcome`: `resent` (Logto still took the token a killed instance was sending), `ended` (Logto had used it up: that session ended), `undecided` (Logto could not be asked: 503, asked again next request) |
//! | `logto_session_cache_lookups_total` | counter | `result`: `hit`, `miss` |
//! | `logto_session_cache_admissions_total` | counter | |
//! | `logto_sessions_refused_total` | counter | `reason`: `ended` (signed out or logged out), `rotated` (an old copy: its refresh token was rotated out), `too_old` (lifetime or inactivity), `unreadable`, `unknown` (a session id the Redis session store does not know) |
//! | `logto_bearer_verifications_total` | counter | `outcome`: `ok`, `missing`, `invalid`, `insufficient_scope`, `unavailable`, `config` |
//! | `logto_bearer_cache_hits_total` | counter | |
//! | `logto_jwks_refetches_total` | counter | |
//! | `logto_redis_operations_total` | counter | `kind`: `refresh_begin`, `refresh_finish`, `refresh_abandon`, `rotation`, `logout_jti`, `ended_write`, `ended_load`, `session_read`, `session_write`, `session_index`, `session_announce`, `session_delete`, `session_move`, `session_list`, `ping`; `outcome`: `ok`, `error`, `timeout` |
//! | `logto_redis_operation_duration_seconds` | histogram | `kind` |
//! | `logto_redis_connected` | gauge | 1 while the last Redis operation succeeded, else 0 |
//! | `logto_redis_subscribed` | gauge | 1 while the pub/sub subscription is up and the ended sessions are loaded, else 0 |
//! | `logto_redis_announcements_received_total` | counter | |
//! | `logto_redis_announcements_ignored_total` | counter | (unsigned or forged announcements, and shared records refused) |
//! | `logto_ended_records` | gauge | records of ended sessions held in memory |
//! | `logto_ended_records_dropped_total` | counter | |
//! | `logto_log_lines_suppressed_total` | counter | `event`: `sign_in_refused`, `backchannel_logout_refused`, `session_refused`, `bearer_refused`, `readiness` |
//!
//! ## Health and readiness
//!
//! [`Logto::health_routes`] are two routes for load balancers and Kubernetes probes, mounted
//! where the app likes (`.mount("/health", Logto::health_routes())`): `GET /health/live`
//! answers 200 whenever the process serves; `GET /health/ready` answers 200 when Logto's
//! discovery document and keys are loaded and fresh and, with `redis_url`, Redis answers and
//! the subscription is up, else 503 with a JSON body naming each check and its state.
//!
//! ## Log lines
//!
//! Through the [`log`](https://docs.rs/log) facade Rocket uses, one line per event, as
//! `logto: event=<event> key=value ...: <text>`, so that a log tool can parse the fields and a
//! person can read the rest. Never a token, a secret or a URL with its query; a user id
//! (`user=`) is logged at `info`, a session id only as a short hash.
//!
//! | event | level | fields |
//! |---|---|---|
//! | `sign_in` | info (`outcome=started`, `ok`), warn (`outcome=refused`) | `outcome`, `reason`, `user` |
//! | `sign_out` | info | `user` |
//! | `backchannel_logout` | info (`accepted`), warn (`refused`) | `outcome`, `user`, `session` (hash) |
//! | `refresh` | info (`outcome=ok`, once per call to Logto), warn (`outcome=failed`) | `outcome`, `reason`, `user` |
//! | `session_refused` | info | `reason` |
//! | `bearer` | info (`refused`), warn (`unavailable`), error (`config`) | `outcome`, `path` |
//! | `discovery` | warn | `outcome=failed`, `cached`, `retry_in_s` |
//! | `jwks_refetch` | info | `outcome` |
//! | `logto_call` | warn | `endpoint=revocation`, `outcome`, `status` |
//! | `redis` | warn | `outcome` (`error`, `timeout`), `kind` |
//! | `refresh_taken_over` | warn | `outcome` (`resent`, `ended`, `undecided`), `reason` |
//! | `redis_subscription` | info (first `up`), warn (`down`, `up` again) | `outcome` |
//! | `redis_ignored` | warn (at most once a minute) | `total` |
//! | `ended_records_full` | warn (at most once a minute) | `dropped` |
//! | `readiness` | warn | `outcome=not_ready`, `checks` |
//!
//! Lines that anyone can cause are rate-limited: a refused sign-in callback, a refused
//! back-channel logout (forged logout tokens), a refused session cookie, a refused bearer token
//! and a failed readiness probe get ten lines a minute each; the rest are counted in
//! `logto_log_lines_suppressed_total`, and the next line written ends with `suppressed=N`.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod claims;
mod config;
mod error;
mod oidc;
mod return_path;
mod session;
mod sign_in_options;
mod store;
// Documented without the feature too (`cfg(doc)`), so that `cargo doc` shows it.
#[cfg(any(feature = "testing", doc))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod tokens;
mod util;
mod web;

pub use claims::{
    organization_urn, Address, IdTokenClaims, OrganizationData, ProfileClaims, Scopes, UserInfo,
    UserScope, ORGANIZATIONS_RESOURCE,
};
pub use config::{
    AppSecret, ConfigError, LogtoConfig, LogtoEnv, RedisSettings, RedisUrl, SessionStoreKind,
    DEFAULT_MANAGEMENT_API_RESOURCE,
};
pub use error::{LogtoError, OAuthErrorCode, ProviderFailure};
pub use return_path::{InvalidReturnPath, ReturnPath};
pub use sign_in_options::{
    DirectSignIn, FirstScreen, InvalidSignInOption, SignIn, MAX_LOGIN_HINT, MAX_MAX_AGE_SECS,
};
pub use web::app_tokens::{AppToken, AppTokens, ManagementApi};
pub use web::bearer::rejection::BearerError;
pub use web::bearer::{
    BearerToken, OrganizationResourceToken, OrganizationToken, Organizations, VerifiedToken,
};
pub use web::fairing::Logto;
pub use web::guards::{
    AuthenticatedUser, FetchedUserInfo, LogtoUser, RecentSignIn, Resource, ResourceToken,
};
pub use web::hooks::{SignInDecision, SignInFuture, SignInRefusal, SignedIn};
pub use web::sessions_admin::{InvalidSessionHandle, SessionHandle, SessionInfo, Sessions};
pub use web::user_tokens::AccessToken;

/// The README's Rust blocks, compiled (and run) as doctests so that they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
