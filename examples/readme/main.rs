use rocket::http::RawStr;
use rocket::response::content::RawHtml;
use rocket::serde::json::Json;
use rocket::{get, launch, routes, Build, Rocket};
use rocket_logto::{
    AuthenticatedUser, BearerToken, IdTokenClaims, Logto, LogtoUser, Resource, ResourceToken,
};

/// The shopping API, as registered in Logto: any token for it.
struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// The same API for routes that need `shopping:read`: one type per requirement.
struct ShoppingRead;

impl Resource for ShoppingRead {
    const INDICATOR: &'static str = Shopping::INDICATOR;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read"];
}

#[get("/")]
fn home(user: LogtoUser) -> RawHtml<String> {
    RawHtml(match user.claims() {
        Some(claims) => {
            // `name` may be empty: fall back to the user's id.
            let name = claims.name.as_deref().unwrap_or(&claims.sub);
            // Claims are the user's own text: escape them before they go into HTML.
            let name = RawStr::new(name).html_escape();
            format!(r#"Hello {name}, <a href="/logto/sign-out">Sign Out</a>"#)
        }
        None => r#"<a href="/logto/sign-in">Sign In</a>"#.to_string(),
    })
}

/// Signed-in users only: browsers that are signed out are sent to sign-in first
/// (by the crate's 401 catcher).
#[get("/me")]
fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
    Json(user.claims())
}

/// A valid access token for the shopping API, cached and refreshed as needed.
#[get("/shopping")]
fn shopping(token: ResourceToken<Shopping>) -> String {
    format!("scopes: {:?}", token.scopes())
}

/// This app's own API: a caller sends `Authorization: Bearer <token>`, a token for the
/// shopping API with `shopping:read` (a user's, or a machine-to-machine client's).
#[get("/api/orders")]
fn orders(token: BearerToken<ShoppingRead>) -> String {
    format!("orders of {}", token.sub())
}

/// The app, with the fairing to attach: tests attach `Logto::fairing().trust_test_key()`.
fn app(logto: Logto) -> Rocket<Build> {
    rocket::build()
        .attach(logto)
        .register("/", Logto::catchers())
        .mount("/", routes![home, me, shopping, orders])
}

#[launch]
fn rocket() -> _ {
    app(Logto::fairing())
}

#[cfg(test)]
mod tests {
    use rocket::http::Status;
    use rocket::local::asynchronous::Client;
    use rocket_logto::testing::{BearerRequest, SignedInRequest, TestToken, TestUser};

    use super::*;

    #[rocket::async_test]
    async fn pages_for_signed_in_users() {
        let client = Client::untracked(app(Logto::fairing())).await.unwrap();
        let alice = TestUser::new("user_alice")
            .claim("name", "Alice")
            .resource_token::<Shopping>(&["shopping:read"]);

        let home = client.get("/").signed_in_as(&alice).dispatch().await;
        assert!(home.into_string().await.unwrap().contains("Hello Alice"));
        let shopping = client.get("/shopping").signed_in_as(&alice);
        let body = shopping.dispatch().await.into_string().await;
        assert_eq!(body.unwrap(), r#"scopes: ["shopping:read"]"#);

        // Signed out: the guard forwards, and the 401 catcher answers.
        let me = client.get("/me").dispatch().await;
        assert_eq!(me.status(), Status::Unauthorized);
    }

    #[rocket::async_test]
    async fn the_api_wants_a_token_with_shopping_read() {
        // Test mode: the API guards trust the `testing` feature's key instead of Logto's.
        let rocket = app(Logto::fairing().trust_test_key());
        let client = Client::untracked(rocket).await.unwrap();

        let token = TestToken::for_resource::<ShoppingRead>().machine("m2m-app");
        let orders = client.get("/api/orders").bearer(&token).dispatch().await;
        assert_eq!(orders.into_string().await.unwrap(), "orders of m2m-app");

        let no_scope = TestToken::for_resource::<ShoppingRead>().scopes(&[]);
        let orders = client.get("/api/orders").bearer(&no_scope).dispatch().await;
        assert_eq!(orders.status(), Status::Forbidden);
    }
}
