//! Issue 14, sign-in options per link: `/logto/sign-in?first_screen=...&login_hint=...`
//! and the `SignIn` responder, each option checked and passed on to Logto in the order of
//! LOGTO_WIRE.md, bad values refused with 400 and the reason.

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use app::*;
use fake_flow::*;
use fake_provider::FakeProvider;
use proptest::prelude::*;
use rocket::http::{Accept, Status};
use rocket::local::asynchronous::Client;
use rocket::{get, routes};
use rocket_logto::{DirectSignIn, FirstScreen, LogtoError, ReturnPath, SignIn};
use serde_json::json;

/// An invitation link, built with the typed builder.
#[get("/invite?<email>")]
fn invite(email: &str) -> Result<SignIn, LogtoError> {
    Ok(SignIn::new()
        .first_screen(FirstScreen::Register)
        .login_hint(email)?
        .return_to(ReturnPath::parse("/welcome")?))
}

#[get("/google")]
fn google() -> Result<SignIn, LogtoError> {
    Ok(SignIn::new().direct_sign_in(DirectSignIn::social("google")?))
}

async fn app(fp: &FakeProvider, patch: serde_json::Value) -> Client {
    let mut t = table(fp);
    merge(&mut t, &patch);
    Client::tracked(rocket_with(t, SECRET_KEY).mount("/", routes![invite, google]))
        .await
        .unwrap()
}

fn keys(url: &str) -> Vec<String> {
    query(url).into_iter().map(|(k, _)| k).collect()
}

#[rocket::async_test]
async fn every_option_is_passed_on_in_the_wire_order() {
    let fp = FakeProvider::start().await;
    let client = app(
        &fp,
        json!({ "identifiers": ["email"], "extra_params": { "ui_locales": "de", "one_time_token": "t" } }),
    )
    .await;
    let authorize = start_sign_in(
        &client,
        "/logto/sign-in?return_to=%2Forders&first_screen=identifier%3Asign_in&login_hint=a%2Bb%40example.com&direct_sign_in=social%3Agoogle&organization_id=org_acme&ui_locales=fr-CA%20en",
    )
    .await;
    assert_eq!(
        keys(&authorize),
        [
            "client_id",
            "redirect_uri",
            "code_challenge",
            "code_challenge_method",
            "state",
            "nonce",
            "response_type",
            "prompt",
            "scope",
            "login_hint",
            "direct_sign_in",
            "resource",
            "resource",
            "resource",
            "first_screen",
            "identifier",
            "organization_id",
            "ui_locales",
            "one_time_token",
        ]
    );
    assert_eq!(
        param(&authorize, "login_hint").as_deref(),
        Some("a+b@example.com")
    );
    assert_eq!(
        param(&authorize, "direct_sign_in").as_deref(),
        Some("social:google")
    );
    assert_eq!(
        param(&authorize, "first_screen").as_deref(),
        Some("identifier:sign_in")
    );
    assert_eq!(
        param(&authorize, "organization_id").as_deref(),
        Some("org_acme")
    );
    // The link's `ui_locales` replaces the configured one: sent once.
    assert_eq!(param(&authorize, "ui_locales").as_deref(), Some("fr-CA en"));
    // And the return path holds through the callback.
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(location(&response), "/orders");
}

#[rocket::async_test]
async fn bad_options_are_refused_with_the_reason_and_start_nothing() {
    let fp = FakeProvider::start().await;
    let client = app(&fp, json!({})).await;
    let long = "a".repeat(rocket_logto::MAX_LOGIN_HINT + 1);
    for (query, reason) in [
        ("first_screen=welcome", "first_screen"),
        ("direct_sign_in=social%3Ago%20ogle", "direct_sign_in"),
        (
            "direct_sign_in=social%3Ahttps%3A%2F%2Fevil.example",
            "direct_sign_in",
        ),
        ("direct_sign_in=google", "direct_sign_in"),
        (&format!("login_hint={long}"), "login_hint"),
        (
            "login_hint=a%40b.c%0D%0ASet-Cookie%3A%20x%3Dy",
            "login_hint",
        ),
        ("organization_id=..%2Fadmin", "organization_id"),
        ("ui_locales=%3Cscript%3E", "ui_locales"),
        ("prompt=none", "prompt"),
        ("redirect_uri=https%3A%2F%2Fevil.example", "redirect_uri"),
        ("scope=openid%20admin", "scope"),
        ("login_hint=a&login_hint=b", "more than once"),
        ("return_to=%2F%2Fevil.example", "return_to"),
    ] {
        let response = client
            .get(format!("/logto/sign-in?{query}"))
            .header(Accept::JSON)
            .dispatch()
            .await;
        assert_eq!(response.status(), Status::BadRequest, "{query}");
        assert!(
            set_cookies(&response).is_empty(),
            "{query}: nothing started"
        );
        let body = response.into_string().await.unwrap_or_default();
        assert!(body.contains(reason), "{query}: {body}");
    }
    assert!(fp.authorize_requests().is_empty());
}

#[rocket::async_test]
async fn sign_up_opens_registration_and_refuses_another_first_screen() {
    let fp = FakeProvider::start().await;
    let client = app(&fp, json!({})).await;
    let authorize = start_sign_in(&client, "/logto/sign-up?login_hint=new%40example.com").await;
    assert_eq!(
        param(&authorize, "first_screen").as_deref(),
        Some("register")
    );
    assert_eq!(
        param(&authorize, "login_hint").as_deref(),
        Some("new@example.com")
    );
    let response = client
        .get("/logto/sign-up?first_screen=sign_in")
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadRequest);
}

#[rocket::async_test]
async fn the_sign_in_responder_starts_the_same_sign_in() {
    let fp = FakeProvider::start().await;
    let client = app(&fp, json!({})).await;
    let response = client
        .get("/invite?email=new%2Buser%40example.com")
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    let link = location(&response);
    assert_eq!(
        link,
        "/logto/sign-in?return_to=%2Fwelcome&first_screen=register&login_hint=new%2Buser%40example.com"
    );
    let authorize = start_sign_in(&client, &link).await;
    assert_eq!(
        param(&authorize, "login_hint").as_deref(),
        Some("new+user@example.com")
    );
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(location(&response), "/welcome");

    let response = client.get("/google").dispatch().await;
    assert_eq!(
        location(&response),
        "/logto/sign-in?direct_sign_in=social%3Agoogle"
    );
    // A bad value from the request is a 400 from the route, not a 500.
    let response = client.get("/invite?email=a%0Ab").dispatch().await;
    assert_eq!(response.status(), Status::BadRequest);
}

fn option_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[a-z_:]{0,24}",
        Just("register".to_string()),
        Just("social:google".to_string()),
        Just("sso:abc".to_string()),
        Just("en fr-CA".to_string()),
        "[A-Za-z0-9._-]{1,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the values, a link either starts a sign-in that carries exactly them (and
    /// nothing else a link could add), or is refused with 400; never a 500.
    #[test]
    fn arbitrary_options_start_exactly_that_sign_in_or_are_refused(
        values in proptest::collection::vec((0usize..7, option_value()), 0..5),
    ) {
        const NAMES: [&str; 7] = ["first_screen", "login_hint", "direct_sign_in", "organization_id", "ui_locales", "return_to", "resource"];
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fp = FakeProvider::start().await;
            let client = untracked(table(&fp)).await;
            let query: String = values
                .iter()
                .map(|(i, v)| format!("{}={}", NAMES[*i], url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
                .collect::<Vec<_>>()
                .join("&");
            let response = client.get(format!("/logto/sign-in?{query}")).dispatch().await;
            let status = response.status();
            prop_assert!(status == Status::SeeOther || status == Status::BadRequest, "{query}: {status}");
            if status == Status::SeeOther {
                let authorize = location(&response);
                for (i, v) in &values {
                    let name = NAMES[*i];
                    prop_assert_ne!(name, "resource", "a link cannot add a resource");
                    if name != "return_to" {
                        let sent = param(&authorize, name);
                        prop_assert_eq!(sent.as_deref(), Some(v.as_str()), "{}", query);
                    }
                }
                let resources = query_pairs_named(&authorize, "resource");
                prop_assert_eq!(resources.len(), 3, "only the configured resources");
            }
            Ok(())
        })?;
    }
}

fn query_pairs_named(url: &str, name: &str) -> Vec<String> {
    query(url)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}
