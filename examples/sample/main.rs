//! The guide's sample app, in Rocket: `cargo run --example sample`.
//!
//! Configured by `Rocket.toml` (`[default.logto]`) and the `LOGTO_*` variables; the
//! README's demo command starts a local Logto-like provider that matches it.

use std::collections::BTreeMap;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rocket::fairing::AdHoc;
use rocket::response::Responder;
use rocket::serde::json::Json;
use rocket::{get, launch, routes, State};
use rocket_dyn_templates::{context, Template};
use rocket_logto::{
    AccessToken, AuthenticatedUser, FetchedUserInfo, IdTokenClaims, Logto, LogtoError, Resource,
    ResourceToken, SignInDecision, SignedIn, UserInfo,
};

/// The shopping API of the guide.
struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// Where the crate's routes are (`/logto`, or `/app/logto` with `base_url` under `/app`),
/// for the links of the templates.
struct Links {
    logto: String,
}

/// Signed in: "Hello <sub>" and a "Sign Out" link. `AuthenticatedUser` forwards when
/// nobody is signed in, so the next rank serves the visitor.
#[get("/")]
fn home(user: AuthenticatedUser, links: &State<Links>) -> Template {
    Template::render(
        "index",
        context! { user: user.claims(), logto: &links.logto },
    )
}

/// Signed out: a "Sign In" link.
#[get("/", rank = 2)]
fn public_home(links: &State<Links>) -> Template {
    Template::render("index", context! { logto: &links.logto })
}

/// The claims as JSON; signed-out browsers are sent to sign-in (the crate's 401 catcher).
#[get("/me")]
fn me(user: AuthenticatedUser) -> Json<IdTokenClaims> {
    Json(user.claims().clone())
}

/// The userinfo answer, with `custom_data` and `organization_data`.
#[get("/userinfo")]
fn userinfo(info: FetchedUserInfo) -> Json<UserInfo> {
    Json(info.into_inner())
}

/// A token for the shopping API (the guide's `getAccessToken`).
#[get("/fetch-access-token")]
fn fetch_access_token(token: ResourceToken<Shopping>) -> Json<AccessToken> {
    Json(token.token().clone())
}

/// Tokens of every organization of the user (the guide's `organizationTokens`).
#[get("/fetch-organization-token")]
async fn fetch_organization_token(
    user: AuthenticatedUser<'_>,
) -> Result<Json<BTreeMap<String, AccessToken>>, LogtoError> {
    Ok(Json(user.organization_tokens().await?))
}

/// The app's own user records, created at first sign-in (a database in a real app).
type Users = Arc<Mutex<BTreeSet<String>>>;

#[launch]
fn rocket() -> _ {
    let users = Users::default();
    let known = users.clone();
    let logto = Logto::fairing()
        // After each sign-in: create the app's own record of the user.
        .on_sign_in(move |signed_in: SignedIn| {
            let users = known.clone();
            async move {
                if users.lock().unwrap().insert(signed_in.claims.sub.clone()) {
                    rocket::info!("sample: first sign-in of {}", signed_in.claims.sub);
                }
                Ok(SignInDecision::Continue)
            }
        })
        // The crate's error pages, in this app's own template.
        .error_page(|error, request| {
            let logto = Logto::config(request.rocket()).map(|c| c.routes_base());
            Template::render(
                "error",
                context! {
                    status: error.status().code,
                    reason: error.status().reason_lossy(),
                    message: error.message(),
                    logto,
                },
            )
            .respond_to(request)
        });
    rocket::build()
        .attach(Template::fairing())
        .attach(logto)
        // After the Logto fairing has read its configuration.
        .attach(AdHoc::on_ignite("Links", |rocket| async move {
            let logto = Logto::config(&rocket).map(|c| c.routes_base());
            rocket.manage(Links {
                logto: logto.unwrap_or_default(),
            })
        }))
        .manage(users)
        // The crate's catchers: 401 sends browsers to sign-in, the others show its pages.
        .register("/", Logto::catchers())
        .mount(
            "/",
            routes![
                home,
                public_home,
                me,
                userinfo,
                fetch_access_token,
                fetch_organization_token
            ],
        )
}
