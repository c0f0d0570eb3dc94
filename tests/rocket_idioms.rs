//! The crate composes with Rocket the way Rocket's own guide does (issue 10): the app owns
//! the catchers, guards forward when nobody is signed in, an app can be served under a
//! path, request-time conditions are never a 500, and a session changed by a request
//! reaches the browser whatever answers it (issue 9, item 6).

#[path = "support/app.rs"]
mod app;
#[path = "support/fake_flow.rs"]
mod fake_flow;
#[path = "support/fake_provider.rs"]
mod fake_provider;

use app::*;
use fake_flow::*;
use fake_provider::{FakeProvider, Fault, TokenStatus};
use rocket::figment::Figment;
use rocket::http::{Accept, Cookie, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use rocket::request::Outcome;
use rocket::serde::json::{json, Json, Value};
use rocket::{catch, catchers, get, routes, Build, Rocket};
use rocket_logto::{
    AuthenticatedUser, FetchedUserInfo, Logto, LogtoError, LogtoUser, ResourceToken, UserInfo,
};

// ---- A test app with the routes of the Rocket idioms ------------------------------------

/// Rank 1: signed-in users.
#[get("/dash")]
fn dash_user(user: AuthenticatedUser) -> String {
    format!("user {}", user.id())
}

/// Rank 2: everyone else.
#[get("/dash", rank = 2)]
fn dash_public(user: LogtoUser) -> Json<Value> {
    Json(json!({ "public": true, "authenticated": user.is_authenticated() }))
}

#[get("/shop")]
fn shop_token(token: ResourceToken<Shopping>) -> String {
    format!("token {}", token.scopes().collect::<Vec<_>>().join(" "))
}

#[get("/shop", rank = 2)]
fn shop_public(user: LogtoUser) -> Json<Value> {
    Json(json!({ "public": true, "authenticated": user.is_authenticated() }))
}

#[get("/optional-user")]
fn optional_user(user: Option<AuthenticatedUser>) -> String {
    match user {
        Some(user) => format!("some {}", user.id()),
        None => "none".into(),
    }
}

#[get("/optional-token")]
fn optional_token(token: Option<ResourceToken<Shopping>>) -> &'static str {
    if token.is_some() {
        "some"
    } else {
        "none"
    }
}

#[get("/result-token")]
fn result_token(token: Result<ResourceToken<Shopping>, LogtoError>) -> String {
    match token {
        Ok(_) => "ok".into(),
        Err(e) => format!("err {}", e.status().code),
    }
}

#[get("/outcome-token")]
fn outcome_token(token: Outcome<ResourceToken<Shopping>, LogtoError>) -> String {
    match token {
        Outcome::Success(_) => "success".into(),
        Outcome::Forward(status) => format!("forward {}", status.code),
        Outcome::Error((status, _)) => format!("error {}", status.code),
    }
}

/// A handler that answers 403 itself, after a crate guard failed with 403 in the same
/// request.
#[get("/own-403")]
fn own_403(token: Option<ResourceToken<ShoppingWriter>>) -> (Status, &'static str) {
    assert!(token.is_none(), "the test makes this guard fail");
    (Status::Forbidden, "the handler's own 403")
}

/// A handler that leaves its 403 to the catcher.
#[get("/bare-403")]
fn bare_403() -> Status {
    Status::Forbidden
}

#[get("/me")]
fn me(user: AuthenticatedUser) -> String {
    user.id().to_string()
}

#[get("/")]
fn home(user: LogtoUser) -> Json<Value> {
    Json(
        json!({ "authenticated": user.is_authenticated(), "sub": user.claims().map(|c| c.sub.clone()) }),
    )
}

#[get("/userinfo")]
fn userinfo(info: FetchedUserInfo) -> Json<UserInfo> {
    Json(info.into_inner())
}

#[catch(401)]
fn own_401() -> &'static str {
    "the app's own 401 page"
}

fn idioms_routes() -> Vec<rocket::Route> {
    routes![
        dash_user,
        dash_public,
        shop_token,
        shop_public,
        optional_user,
        optional_token,
        result_token,
        outcome_token,
        own_403,
        bare_403,
        me,
        home,
        userinfo
    ]
}

/// The app without catchers: each test registers the ones it is about.
fn bare_rocket(logto: Value) -> Rocket<Build> {
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"));
    rocket::custom(figment).attach(Logto::fairing())
}

async fn idioms_app(fp: &FakeProvider) -> Client {
    let rocket = bare_rocket(table(fp))
        .register("/", Logto::catchers())
        .mount("/", idioms_routes());
    Client::tracked(rocket).await.expect("valid rocket")
}

async fn signed_in_idioms_app(fp: &FakeProvider, sub: &str) -> Client {
    let client = idioms_app(fp).await;
    let (status, body, _) = sign_in(&client, fp, sub).await;
    assert_eq!(status, Status::SeeOther, "sign-in failed: {body}");
    client
}

async fn get_html<'c>(client: &'c Client, path: &str) -> LocalResponse<'c> {
    client
        .get(path.to_string())
        .header(html_accept())
        .dispatch()
        .await
}

async fn text(client: &Client, path: &str) -> (Status, String) {
    let response = client
        .get(path.to_string())
        .header(Accept::JSON)
        .dispatch()
        .await;
    (
        response.status(),
        response.into_string().await.unwrap_or_default(),
    )
}

fn is_session_write(line: &str) -> bool {
    line.starts_with("logto_session=") && !line.contains("Max-Age=0")
}

// ---- 1. Catchers belong to the app -------------------------------------------------------

#[rocket::async_test]
async fn the_apps_own_401_catcher_is_used() {
    let fp = FakeProvider::start().await;
    let others: Vec<_> = Logto::catchers()
        .into_iter()
        .filter(|c| c.code != Some(401))
        .collect();
    let rocket = bare_rocket(table(&fp))
        .register("/", others)
        .register("/", catchers![own_401])
        .mount("/", routes![me]);
    let client = Client::tracked(rocket).await.unwrap();
    for accept in [
        html_accept(),
        rocket::http::Header::new("Accept", "application/json"),
    ] {
        let response = client.get("/me").header(accept).dispatch().await;
        assert_eq!(response.status(), Status::Unauthorized);
        assert_eq!(
            response.into_string().await.as_deref(),
            Some("the app's own 401 page")
        );
    }
}

#[rocket::async_test]
async fn an_apps_catcher_for_a_longer_base_wins_over_the_crates() {
    let fp = FakeProvider::start().await;
    let rocket = bare_rocket(table(&fp))
        .register("/", Logto::catchers())
        .register("/api", catchers![own_401])
        .mount("/", routes![me])
        .mount("/api", routes![me]);
    let client = Client::tracked(rocket).await.unwrap();
    let api = get_html(&client, "/api/me").await;
    assert_eq!(api.status(), Status::Unauthorized);
    assert_eq!(
        api.into_string().await.as_deref(),
        Some("the app's own 401 page")
    );
    let page = get_html(&client, "/me").await;
    assert_eq!(
        page.status(),
        Status::SeeOther,
        "the crate's catcher elsewhere"
    );
}

#[rocket::async_test]
async fn a_handler_answering_403_itself_is_not_rewritten() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.resource_scopes
            .insert(SHOPPING.into(), vec!["shopping:read".into()]);
    });
    let client = signed_in_idioms_app(&fp, "user-1").await;
    // A crate guard failed with 403 (lacking shopping:write), then the handler answered
    // its own 403: its body goes out as it is, for browsers and JSON clients alike.
    for accept in [
        html_accept(),
        rocket::http::Header::new("Accept", "application/json"),
    ] {
        let response = client.get("/own-403").header(accept).dispatch().await;
        assert_eq!(response.status(), Status::Forbidden);
        assert_eq!(
            response.into_string().await.as_deref(),
            Some("the handler's own 403")
        );
    }
    // A bare status goes to the catcher, which knows of no crate failure in that request:
    // a generic page, not some guard's message.
    let (status, body) = get_json(&client, "/bare-403").await;
    assert_eq!(status, Status::Forbidden);
    assert_eq!(body["error"], "Forbidden");
    assert_eq!(body["message"], "You are not allowed to see this page.");
}

#[rocket::async_test]
async fn the_crates_catchers_answer_json_to_json_clients_and_keep_retry_after() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.resource_scopes
            .insert(SHOPPING.into(), vec!["shopping:read".into()]);
    });
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, body) = get_json(&client, "/shopping-write").await;
    assert_eq!(status, Status::Forbidden);
    assert!(
        body["message"].as_str().unwrap().contains("shopping:write"),
        "the guard's own message: {body}"
    );

    // Logto rate-limits the refresh: 503 with Logto's Retry-After, as JSON.
    fp.set(|b| b.access_token_ttl = 30);
    let signed = signed_in(&fp, table(&fp), "user-2").await;
    fp.set(|b| b.faults.token = Fault::status(429).with_header("Retry-After", "7"));
    let response = signed
        .get("/shopping")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::ServiceUnavailable);
    assert_eq!(response.headers().get_one("Retry-After"), Some("7"));
    let body: Value = response.into_json().await.expect("a JSON body");
    assert_eq!(body["error"], "Service Unavailable");

    // Signed out: 401 as JSON, no redirect.
    let fresh = app_for(&fp).await;
    let (status, body) = get_json(&fresh, "/me").await;
    assert_eq!(status, Status::Unauthorized);
    assert_eq!(body["message"], "You are not signed in.");
}

#[rocket::async_test]
async fn without_the_crates_catchers_a_signed_out_browser_gets_rockets_401() {
    let fp = FakeProvider::start().await;
    let rocket = bare_rocket(table(&fp)).mount("/", routes![me]);
    let client = Client::tracked(rocket).await.unwrap();
    let response = get_html(&client, "/me").await;
    assert_eq!(response.status(), Status::Unauthorized);
    assert!(response.headers().get_one("Location").is_none());
    let body = response.into_string().await.unwrap();
    assert!(body.contains("Rocket"), "Rocket's default catcher: {body}");
}

// ---- 2. Guards that forward --------------------------------------------------------------

#[rocket::async_test]
async fn ranked_routes_serve_signed_out_visitors_and_signed_in_users() {
    let fp = FakeProvider::start().await;
    let client = idioms_app(&fp).await;
    let (status, body) = get_json(&client, "/dash").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(body, json!({ "public": true, "authenticated": false }));
    // The same for a browser: the fallback route, not a redirect.
    assert_eq!(get_html(&client, "/dash").await.status(), Status::Ok);

    let (status, _, _) = sign_in(&client, &fp, "user-1").await;
    assert_eq!(status, Status::SeeOther);
    assert_eq!(
        text(&client, "/dash").await,
        (Status::Ok, "user user-1".into())
    );
    // A token guard forwards too.
    let (status, body) = text(&client, "/shop").await;
    assert_eq!(status, Status::Ok);
    assert!(body.starts_with("token "), "{body}");
}

#[rocket::async_test]
async fn option_result_and_outcome_say_what_rocket_says_they_do() {
    let fp = FakeProvider::start().await;
    let client = idioms_app(&fp).await;
    // Signed out.
    assert_eq!(text(&client, "/optional-user").await.1, "none");
    assert_eq!(text(&client, "/optional-token").await.1, "none");
    assert_eq!(text(&client, "/outcome-token").await.1, "forward 401");
    // `Result` forwards a forward: no route left, so the 401 catcher answers.
    assert_eq!(text(&client, "/result-token").await.0, Status::Unauthorized);
    let browser = get_html(&client, "/result-token").await;
    assert_eq!(browser.status(), Status::SeeOther);
    assert_eq!(
        location(&browser),
        "/logto/sign-in?return_to=%2Fresult-token"
    );

    // Signed in, then Logto goes down and the access token needs a refresh.
    fp.set(|b| b.access_token_ttl = 30);
    assert_eq!(sign_in(&client, &fp, "user-1").await.0, Status::SeeOther);
    assert_eq!(text(&client, "/result-token").await.1, "ok");
    fp.stop().await;
    assert_eq!(
        text(&client, "/optional-user").await.1,
        "some user-1",
        "signed in, whatever Logto's state"
    );
    assert_eq!(text(&client, "/optional-token").await.1, "none");
    assert_eq!(text(&client, "/result-token").await.1, "err 503");
    assert_eq!(text(&client, "/outcome-token").await.1, "error 503");
    fp.restart().await;
}

#[rocket::async_test]
async fn a_session_that_ends_while_refreshing_forwards_as_signed_out() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.access_token_ttl = 30);
    let client = signed_in_idioms_app(&fp, "user-1").await;
    fp.revoke_all_grants();
    let response = client.get("/shop").header(Accept::JSON).dispatch().await;
    assert_eq!(response.status(), Status::Ok);
    let cleared = set_cookies(&response)
        .iter()
        .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0"));
    assert!(cleared, "the ended session's cookies are removed");
    let body: Value = response.into_json().await.unwrap();
    assert_eq!(
        body,
        json!({ "public": true, "authenticated": false }),
        "the fallback route sees nobody signed in"
    );
    assert_eq!(text(&client, "/optional-user").await.1, "none");
}

// ---- 3. Apps served under a path -----------------------------------------------------------

const APP_BASE: &str = "http://localhost:8000/app";

#[rocket::async_test]
async fn an_app_under_a_path_signs_in_and_out_under_it() {
    let fp = FakeProvider::start().await;
    let callback_uri = format!("{APP_BASE}/logto/sign-in-callback");
    fp.set(|b| b.redirect_uris = Some(vec![callback_uri.clone()]));
    let mut logto = table(&fp);
    logto["base_url"] = json!(APP_BASE);
    let rocket = bare_rocket(logto)
        .register("/app", Logto::catchers())
        .mount("/app", routes![me, home]);
    let client = Client::tracked(rocket).await.unwrap();

    // Signed out: the 401 catcher sends the browser to the sign-in under /app, with the
    // full return path.
    let response = get_html(&client, "/app/me?x=1").await;
    assert_eq!(response.status(), Status::SeeOther);
    let sign_in_path = location(&response);
    assert_eq!(
        sign_in_path,
        "/app/logto/sign-in?return_to=%2Fapp%2Fme%3Fx%3D1"
    );
    // Nothing is mounted outside /app.
    assert_eq!(
        client.get("/logto/sign-in").dispatch().await.status(),
        Status::NotFound
    );

    let authorize = start_sign_in(&client, &sign_in_path).await;
    assert_eq!(
        param(&authorize, "redirect_uri"),
        Some(callback_uri.clone())
    );
    let callback = fp.authorize(&authorize, "user-1");
    assert!(
        callback.starts_with(&callback_uri),
        "Logto sends the browser to {callback}"
    );
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    assert_eq!(location(&response), "/app/me?x=1", "the return path");
    assert!(set_cookies(&response)
        .iter()
        .any(|l| l.starts_with("logto_session=") && l.contains("Path=/;")));
    drop(response);
    assert_eq!(
        text(&client, "/app/me").await,
        (Status::Ok, "user-1".into())
    );

    // Without return_to, sign-in lands on the app's home, /app.
    let authorize = start_sign_in(&client, "/app/logto/sign-in").await;
    let callback = fp.authorize(&authorize, "user-1");
    let response = client.get(path_and_query(&callback)).dispatch().await;
    assert_eq!(location(&response), "/app");
    drop(response);

    // Sign-out under /app, back to the app's home after Logto.
    let response = client.get("/app/logto/sign-out").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let end_session = location(&response);
    assert_eq!(
        param(&end_session, "post_logout_redirect_uri").as_deref(),
        Some(APP_BASE)
    );
    assert!(set_cookies(&response)
        .iter()
        .any(|l| l.starts_with("logto_session=") && l.contains("Max-Age=0")));
    drop(response);
    let (_, body) = get_json(&client, "/app/").await;
    assert_eq!(body["authenticated"], false);
    assert_eq!(fp.revoked_tokens().len(), 1);
}

// ---- 4. No 500 for request-time conditions -------------------------------------------------

#[rocket::async_test]
async fn no_refresh_token_asks_to_sign_in_again_without_a_redirect_loop() {
    let fp = FakeProvider::start().await;
    let mut logto = table(&fp);
    // Logto grants offline_access only with prompt=consent: this sign-in gets no refresh
    // token.
    logto["prompt"] = json!("login");
    let client = signed_in(&fp, logto, "user-1").await;
    assert_eq!(signed_in_sub(&client).await.as_deref(), Some("user-1"));

    for path in [
        "/shopping",
        &format!("/token?resource={}", urlencode(SHOPPING)),
    ] {
        let (status, body) = get_json(&client, path).await;
        assert_eq!(status, Status::Unauthorized, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("sign in again"), "{message}");
        assert!(message.contains("refresh token"), "{message}");
    }
    // A browser sees why, with a link to sign in, and is not redirected (signing in the
    // same way would not help, and would loop).
    let response = get_html(&client, "/shopping").await;
    assert_eq!(response.status(), Status::Unauthorized);
    assert!(response.headers().get_one("Location").is_none());
    let page = response.into_string().await.unwrap();
    assert!(page.contains("sign in again"), "{page}");
    assert!(
        page.contains("href=\"&#x2F;logto&#x2F;sign-in?return_to=%2Fshopping\""),
        "{page}"
    );
}

#[rocket::async_test]
async fn request_named_resources_and_organizations_are_never_a_500() {
    let fp = FakeProvider::start().await;
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let (status, body) = get_json(&client, "/token?resource=https%3A%2F%2Fnope.example").await;
    assert_eq!(status, Status::NotFound, "{body}");
    let long = "x".repeat(5000);
    let (status, body) = get_json(&client, &format!("/token?resource={long}")).await;
    assert_eq!(status, Status::NotFound);
    assert!(
        body["message"].as_str().unwrap().len() < 300,
        "a long value is not echoed whole"
    );
    let (status, _) = get_json(&client, &format!("/org/{}", "o".repeat(200))).await;
    assert_eq!(status, Status::BadRequest);
}

#[rocket::async_test]
async fn an_organization_scope_missing_from_the_sign_in_asks_to_sign_in_again() {
    let fp = FakeProvider::start().await;
    // Signed in while the app did not ask for organizations...
    let mut before = table(&fp);
    before["scopes"] = json!(["email"]);
    let old = signed_in(&fp, before, "user-1").await;
    let cookies: Vec<Cookie<'static>> = old.cookies().iter().cloned().collect();
    // ...then the app added the scope: the session's grant lacks it.
    let now = untracked(table(&fp)).await;
    let response = now
        .get("/org/org_acme")
        .header(Accept::JSON)
        .cookies(cookies)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Unauthorized);
    let body: Value = response.into_json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("sign in again"),
        "{body}"
    );
}

struct Unconfigured;
impl rocket_logto::Resource for Unconfigured {
    const INDICATOR: &'static str = "https://unconfigured.example.com/api";
}

#[get("/unconfigured")]
fn unconfigured(token: ResourceToken<Unconfigured>) -> String {
    token.secret().len().to_string()
}

#[rocket::async_test]
async fn a_resource_token_for_an_unconfigured_resource_still_stops_the_launch() {
    let fp = FakeProvider::start().await;
    let rocket = bare_rocket(table(&fp)).mount("/", routes![unconfigured]);
    match Client::untracked(rocket).await {
        Ok(_) => panic!("launch-time configuration errors stay launch-time"),
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::SentinelAborts(_)),
            "{e:?}"
        ),
    }
}

// ---- 5. Names --------------------------------------------------------------------------------

#[test]
fn userinfo_has_every_claim_the_id_token_has() {
    let info: UserInfo = serde_json::from_value(json!({
        "sub": "user-1", "created_at": 1_700_000_000_123_i64, "updated_at": 1_700_000_000_456_i64,
        "given_name": "Alice", "address": { "country": "FR" }, "custom": 1
    }))
    .unwrap();
    assert_eq!(info.created_at, Some(1_700_000_000_123));
    assert_eq!(info.updated_at, Some(1_700_000_000_456));
    assert_eq!(info.profile.given_name.as_deref(), Some("Alice"));
    assert_eq!(
        info.address.as_ref().and_then(|a| a.country.as_deref()),
        Some("FR")
    );
    assert_eq!(
        info.extra.len(),
        1,
        "only the custom claim is left over: {:?}",
        info.extra
    );
    assert_eq!(UserInfo::new("user-1").sub, "user-1");
}

// ---- Issue 9, item 6: rotations survive error answers ---------------------------------------

/// The refresh tokens presented to Logto so far, oldest first.
fn presented_refresh_tokens(fp: &FakeProvider) -> Vec<String> {
    fp.requests_to("/token")
        .iter()
        .filter_map(|r| r.form_value("refresh_token").map(str::to_string))
        .collect()
}

/// Sends the browser's cookies to a second instance of the app, which has no memory of
/// the first one's rotations (as after a restart, or on another instance): it can only
/// use the refresh token the cookies carry.
async fn next_request_elsewhere(fp: &FakeProvider, browser: &Client, path: &str) -> Status {
    let cookies: Vec<Cookie<'static>> = browser.cookies().iter().cloned().collect();
    let elsewhere = untracked(table(fp)).await;
    let response = elsewhere
        .get(path.to_string())
        .header(Accept::JSON)
        .cookies(cookies)
        .dispatch()
        .await;
    response.status()
}

#[rocket::async_test]
async fn a_rotation_before_a_403_for_missing_scopes_reaches_the_browser() {
    let fp = FakeProvider::start().await;
    fp.set(|b| {
        b.access_token_ttl = 30; // every request refreshes
        b.resource_scopes
            .insert(SHOPPING.into(), vec!["shopping:read".into()]);
    });
    let client = signed_in(&fp, table(&fp), "user-1").await;
    let response = client
        .get("/shopping-write")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::Forbidden);
    assert!(
        set_cookies(&response).iter().any(|l| is_session_write(l)),
        "the refreshed session is in the 403 answer: {:?}",
        set_cookies(&response)
    );
    drop(response);
    let spent = presented_refresh_tokens(&fp);
    let spent = spent.last().expect("the 403 request refreshed").clone();
    assert_eq!(fp.refresh_token_status(&spent), TokenStatus::RotatedOut);

    assert_eq!(
        next_request_elsewhere(&fp, &client, "/shopping").await,
        Status::Ok
    );
    let next = presented_refresh_tokens(&fp).last().unwrap().clone();
    assert_ne!(next, spent, "the rotated-out token is never sent again");
    assert_eq!(
        fp.refresh_token_status(&spent),
        TokenStatus::RotatedOut,
        "the grant was not revoked (that would mark every token revoked)"
    );
}

#[rocket::async_test]
async fn a_rotation_before_a_failed_userinfo_call_reaches_the_browser() {
    let fp = FakeProvider::start().await;
    fp.set(|b| b.access_token_ttl = 30); // the userinfo token needs a refresh
    let client = signed_in(&fp, table(&fp), "user-1").await;
    fp.set(|b| b.faults.userinfo = Fault::status(500));
    let response = client
        .get("/userinfo")
        .header(Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(response.status(), Status::BadGateway);
    assert!(
        set_cookies(&response).iter().any(|l| is_session_write(l)),
        "the refreshed session is in the 502 answer: {:?}",
        set_cookies(&response)
    );
    drop(response);
    let spent = presented_refresh_tokens(&fp)
        .last()
        .expect("the userinfo request refreshed")
        .clone();

    fp.set(|b| b.faults.userinfo = Fault::None);
    assert_eq!(
        next_request_elsewhere(&fp, &client, "/userinfo").await,
        Status::Ok
    );
    let next = presented_refresh_tokens(&fp).last().unwrap().clone();
    assert_ne!(next, spent, "the rotated-out token is never sent again");
    assert_eq!(
        fp.refresh_token_status(&spent),
        TokenStatus::RotatedOut,
        "the grant was not revoked (that would mark every token revoked)"
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- Issue 27: parsing and form fields ------------------------------------------------------

#[get("/go?<next>")]
fn go(next: rocket_logto::ReturnPath) -> String {
    next.to_string()
}

#[rocket::async_test]
async fn a_return_path_is_a_form_field_that_refuses_other_hosts() {
    let client = Client::untracked(rocket::build().mount("/", routes![go]))
        .await
        .unwrap();
    let ok = client.get("/go?next=%2Forders%3Fpage%3D2").dispatch().await;
    assert_eq!(ok.status(), Status::Ok);
    assert_eq!(ok.into_string().await.unwrap(), "/orders?page=2");
    for bad in [
        "https%3A%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "%2F%5Cevil",
    ] {
        let refused = client.get(format!("/go?next={bad}")).dispatch().await;
        assert_eq!(refused.status(), Status::UnprocessableEntity, "{bad}");
    }
}

#[test]
fn options_parse_with_from_str_and_print_as_logto_spells_them() {
    use rocket_logto::{DirectSignIn, FirstScreen, ReturnPath};
    let screen: FirstScreen = "identifier:register".parse().unwrap();
    assert_eq!(screen, FirstScreen::IdentifierRegister);
    assert_eq!(screen.to_string(), "identifier:register");
    assert!("nope".parse::<FirstScreen>().is_err());
    let direct: DirectSignIn = "social:google".parse().unwrap();
    assert_eq!(direct.to_string(), "social:google");
    assert!("social:".parse::<DirectSignIn>().is_err());
    assert_eq!("/a".parse::<ReturnPath>().unwrap().as_str(), "/a");
    assert!("//evil".parse::<ReturnPath>().is_err());
    assert_eq!(FirstScreen::ALL.len(), 6);
}
