//! The guide's sample app, in Rocket: `cargo run --example sample`.
//!
//! Configured by `Rocket.toml` (`[default.logto]`) and the `LOGTO_*` variables; the
//! README's demo command starts a local Logto-like provider that matches it.

use std::collections::BTreeMap;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rocket::response::Responder;
use rocket::serde::json::Json;
use rocket::{get, launch, routes};
use rocket_dyn_templates::{context, Template};
use rocket_logto::{
    AccessToken, AuthenticatedUser, IdTokenClaims, Logto, LogtoError, LogtoUser, Resource,
    ResourceToken, SignInDecision, SignedIn, UserInfo, UserInfoClaims,
};

/// The shopping API of the guide.
struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// Signed out: a "Sign In" link. Signed in: "Hello <sub>" and a "Sign Out" link.
#[get("/")]
fn home(user: LogtoUser) -> Template {
    Template::render("index", context! { user: user.claims() })
}

/// The claims as JSON; 401 when signed out.
#[get("/me")]
fn me(user: AuthenticatedUser) -> Json<IdTokenClaims> {
    Json(user.claims().clone())
}

/// The userinfo answer, with `custom_data` and `organization_data`.
#[get("/userinfo")]
fn userinfo(info: UserInfo) -> Json<UserInfoClaims> {
    Json(info.0)
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
        // The library's error pages, in this app's own template.
        .error_page(|error, request| {
            Template::render(
                "error",
                context! { status: error.status().code, reason: error.status().reason_lossy(), message: error.message() },
            )
            .respond_to(request)
        });
    rocket::build()
        .attach(Template::fairing())
        .attach(logto)
        .manage(users)
        .mount(
            "/",
            routes![
                home,
                me,
                userinfo,
                fetch_access_token,
                fetch_organization_token
            ],
        )
}
