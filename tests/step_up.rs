//! Issue 25, part 1: step-up sign-in for sensitive routes. `RecentSignIn<N>` yields the
//! user when the session's `auth_time` is recent enough; otherwise a browser is sent to
//! sign-in with `max_age` (Logto asks for the password again) and comes back, and a JSON
//! client gets 401 with RFC 9470's `WWW-Authenticate`. The callback refuses an ID token
//! whose `auth_time` is missing or too old when `max_age` was sent. Against the real,
//! Logto-like provider (tests/provider, `npm ci --prefix tests/provider` once), and the
//! fake provider for what a real one does not do (omit or backdate `auth_time`).

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/process.rs"]
mod process;
#[path = "support/real_provider.rs"]
mod real_provider;

use app::*;
use fake_provider::FakeProvider;
use real_provider::{ProviderBrowser, ProviderOptions, RealProvider, ALICE};
use rocket::http::{Accept, Status};
use rocket::local::asynchronous::Client;
use rocket::serde::json::{json, Json, Value};
use rocket::{get, routes};
use rocket_logto::RecentSignIn;

/// The sensitive page: a sign-in at most 5 minutes old.
#[get("/sensitive")]
fn sensitive(user: RecentSignIn<'_, 300>) -> Json<Value> {
    Json(json!({ "sub": user.id(), "auth_time": user.auth_time() }))
}

fn app_rocket(logto: Value) -> rocket::Rocket<rocket::Build> {
    rocket_with(logto, SECRET_KEY).mount("/", routes![sensitive])
}

async fn real_app(provider: &RealProvider) -> Client {
    let table = logto_table(&provider.endpoint, "sample-app", "sample-secret");
    Client::tracked(app_rocket(table))
        .await
        .expect("valid rocket")
}

/// Signs in at the real provider through `link` (the app's sign-in route with options).
async fn real_sign_in(client: &Client, browser: &ProviderBrowser, link: &str) -> String {
    let authorize = start_sign_in(client, link).await;
    let callback = browser.sign_in(&authorize, ALICE.0, ALICE.1).await;
    let response = client.get(path_and_query(&callback)).dispatch().await;
    let status = response.status();
    let landing = response.headers().get_one("Location").map(str::to_string);
    let body = response.into_string().await.unwrap_or_default();
    assert_eq!(status, Status::SeeOther, "the callback: {body}");
    landing.expect("the callback redirects")
}

/// A session whose sign-in is 10 minutes old is sent by `RecentSignIn<300>` to sign-in with
/// `max_age=300`; the provider shows the login form again (it does not approve silently
/// with its session), and after the password the browser lands back on the route, whose
/// session kept its tokens.
#[rocket::async_test]
async fn a_ten_minute_old_sign_in_is_asked_for_the_password_again_and_lands_back() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = real_app(&provider).await;
    let browser = ProviderBrowser::new();
    // Signed in 10 minutes ago (the provider backdates the login, and says so in
    // `auth_time`, which it sends because this sign-in asked for a `max_age`).
    provider.set_next_login_age(600).await;
    real_sign_in(&client, &browser, "/logto/sign-in?max_age=3600").await;
    let (status, _) = get_json(&client, "/me").await;
    assert_eq!(status, Status::Ok, "signed in");
    let (status, before) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok, "a token for the shopping API: {before}");
    provider.reset_stats().await;

    // A JSON client: 401 with the step-up challenge.
    let response = client
        .get("/sensitive")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    let challenge = response
        .headers()
        .get_one("WWW-Authenticate")
        .unwrap_or_default()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\"")
            && challenge.contains("max_age=300"),
        "{challenge}"
    );

    // A browser: to sign-in with max_age, coming back here.
    let response = client
        .get("/sensitive")
        .header(html_accept())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    let sign_in = location(&response);
    assert_eq!(sign_in, "/logto/sign-in?return_to=%2Fsensitive&max_age=300");
    let authorize = start_sign_in(&client, &sign_in).await;
    assert_eq!(param(&authorize, "max_age").as_deref(), Some("300"));

    // The provider asks for the password again: a wrong one is refused on its form (with
    // its session still fresh enough, no form would show and this would pass).
    let refused = browser.try_sign_in(&authorize, ALICE.0, "wrong").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("rejected the credentials")),
        "the login form was shown again: {refused:?}"
    );
    let callback = browser.sign_in(&authorize, ALICE.0, ALICE.1).await;
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(location(&response), "/sensitive", "back on the route");

    let (status, body) = get_json(&client, "/sensitive").await;
    assert_eq!(status, Status::Ok, "{body}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let auth_time = body["auth_time"].as_i64().expect("auth_time");
    assert!(
        (now - 120..=now + 60).contains(&auth_time),
        "the new sign-in: {auth_time} vs {now}"
    );
    // The session kept its tokens: the same shopping token, with no token request.
    let (status, after) = get_json(&client, "/shopping").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(after["access_token"], before["access_token"], "kept");
    let stats = provider.stats().await;
    assert_eq!(
        stats["token_requests"]["refresh_token"], 0,
        "no refresh after the step-up: {stats}"
    );
}

/// A recent sign-in passes straight through, with no trip to Logto.
#[rocket::async_test]
async fn a_recent_sign_in_passes() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = real_app(&provider).await;
    let browser = ProviderBrowser::new();
    real_sign_in(&client, &browser, "/logto/sign-in?max_age=60").await;
    let (status, body) = get_json(&client, "/sensitive").await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body["sub"], "user_alice");
}

/// `prompt=login` in a link makes the provider ask again, whatever its session.
#[rocket::async_test]
async fn prompt_login_asks_for_the_password_again() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let client = real_app(&provider).await;
    let browser = ProviderBrowser::new();
    real_sign_in(&client, &browser, "/logto/sign-in").await;
    // Without it, the provider's session signs in silently.
    let authorize = start_sign_in(&client, "/logto/sign-in").await;
    assert!(browser
        .try_sign_in(&authorize, ALICE.0, "wrong")
        .await
        .is_ok());
    let authorize = start_sign_in(&client, "/logto/sign-in?prompt=login").await;
    assert_eq!(
        param(&authorize, "prompt").as_deref(),
        Some("login consent")
    );
    let refused = browser.try_sign_in(&authorize, ALICE.0, "wrong").await;
    assert!(
        refused.is_err_and(|e| e.contains("rejected the credentials")),
        "the login form was shown"
    );
}

// ---------------------------------------------------------------------------------------
// Fake provider: what a real one does not do.
// ---------------------------------------------------------------------------------------

async fn fake_app(fp: &FakeProvider) -> Client {
    Client::tracked(app_rocket(fake_flow::table(fp)))
        .await
        .expect("valid rocket")
}

/// The callback of a sign-in started at `link`, as the fake provider answers it for `sub`.
async fn fake_callback(client: &Client, fp: &FakeProvider, link: &str) -> (Status, String) {
    let authorize = start_sign_in(client, link).await;
    let callback = fp.authorize(&authorize, "user_1");
    let response = client
        .get(path_and_query(&callback))
        .header(Accept::JSON)
        .dispatch()
        .await;
    let status = response.status();
    (status, response.into_string().await.unwrap_or_default())
}

/// With `max_age` sent, an ID token without `auth_time`, or with one older than `max_age`
/// (beyond the skew), is refused with 400 naming the problem, and no session starts.
/// Without `max_age`, neither is checked.
#[rocket::async_test]
async fn the_callback_refuses_a_missing_or_old_auth_time_when_max_age_was_sent() {
    let fp = FakeProvider::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (patch, why) in [
        (
            json!({ "auth_time": null }),
            "does not say when you signed in",
        ),
        (
            json!({ "auth_time": now - 3600 }),
            "within the last 300 seconds",
        ),
        (json!({ "auth_time": now + 3600 }), "in the future"),
        (
            json!({ "auth_time": "recently" }),
            "does not say when you signed in",
        ),
    ] {
        fp.set(|b| b.id_token_patch = Some(patch.clone()));
        let client = fake_app(&fp).await;
        let (status, body) = fake_callback(
            &client,
            &fp,
            "/logto/sign-in?max_age=300&return_to=/sensitive",
        )
        .await;
        assert_eq!(status, Status::BadRequest, "{patch}: {body}");
        assert!(body.contains(why), "{patch}: {body}");
        let (status, _) = get_json(&client, "/me").await;
        assert_eq!(status, Status::Unauthorized, "{patch}: no session");

        // The same ID token without `max_age` in the sign-in: accepted, but not recent.
        let (status, body) = fake_callback(&client, &fp, "/logto/sign-in").await;
        assert_eq!(status, Status::SeeOther, "{patch}: {body}");
        let (status, _) = get_json(&client, "/sensitive").await;
        assert_eq!(
            status,
            Status::Unauthorized,
            "{patch}: not a recent sign-in"
        );
    }
    // Within max_age plus the skew (60 s): accepted.
    fp.set(|b| b.id_token_patch = Some(json!({ "auth_time": now - 330 })));
    let client = fake_app(&fp).await;
    let (status, body) = fake_callback(&client, &fp, "/logto/sign-in?max_age=300").await;
    assert_eq!(status, Status::SeeOther, "{body}");
}

/// `max_age` and `prompt` are checked like the other options: bad values are a 400 that
/// names the option, and nothing reaches Logto.
#[rocket::async_test]
async fn bad_max_age_or_prompt_in_a_link_is_refused_with_the_reason() {
    let fp = FakeProvider::start().await;
    let client = fake_app(&fp).await;
    for (query, names) in [
        ("max_age=-1", "`max_age`"),
        ("max_age=5m", "`max_age`"),
        ("max_age=99999999999", "`max_age`"),
        ("max_age=1&max_age=2", "`max_age`"),
        ("prompt=none", "`prompt`"),
        ("prompt=consent", "`prompt`"),
    ] {
        let response = client
            .get(format!("/logto/sign-in?{query}"))
            .header(Accept::JSON)
            .dispatch()
            .await;
        assert_eq!(response.status(), Status::BadRequest, "{query}");
        let body = response.into_string().await.unwrap_or_default();
        assert!(body.contains(names), "{query}: {body}");
    }
    assert!(fp.authorize_requests().is_empty());
}

/// A session without `auth_time` (an ordinary sign-in) is not a recent one: the browser is
/// sent to the step-up; nobody signed in gets the ordinary sign-in.
#[rocket::async_test]
async fn without_auth_time_the_session_is_not_recent() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.id_token_patch = Some(json!({ "auth_time": null })));
    let client = fake_app(&fp).await;
    let (status, body) = fake_callback(&client, &fp, "/logto/sign-in").await;
    assert_eq!(status, Status::SeeOther, "{body}");
    let response = client
        .get("/sensitive")
        .header(html_accept())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(
        location(&response),
        "/logto/sign-in?return_to=%2Fsensitive&max_age=300"
    );
    // Nobody signed in: the ordinary sign-in, no max_age.
    let fresh = fake_app(&fp).await;
    let response = fresh
        .get("/sensitive")
        .header(html_accept())
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(location(&response), "/logto/sign-in?return_to=%2Fsensitive");
}

/// An age no sign-in link accepts (over a year) stops the launch instead of a route that
/// can never be reached.
#[rocket::async_test]
async fn an_age_over_a_year_stops_the_launch() {
    #[get("/forever")]
    fn forever(user: RecentSignIn<'_, 40_000_000>) -> String {
        user.id().to_string()
    }
    let fp = FakeProvider::start().await;
    let rocket = rocket_with(fake_flow::table(&fp), SECRET_KEY).mount("/", routes![forever]);
    match Client::tracked(rocket).await {
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{e}"
        ),
        Ok(_) => panic!("RecentSignIn over a year must stop the launch"),
    }
}
