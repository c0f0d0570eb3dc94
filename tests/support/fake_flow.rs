//! Sign-in through the fake provider, shared by the tier-1 test files.
#![allow(dead_code)]

use rocket::http::{Cookie, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::Value;

use crate::app::{client, get_json, location, logto_table, path_and_query, start_sign_in};
use crate::fake_provider::FakeProvider;

/// The `logto` table for the fake provider.
pub fn table(fp: &FakeProvider) -> Value {
    logto_table(&fp.endpoint, fp.client_id(), fp.client_secret())
}

/// A tracked client for an app pointed at `fp`.
pub async fn app_for(fp: &FakeProvider) -> Client {
    client(table(fp)).await
}

/// Runs sign-in through the fake provider as `sub`; returns the callback's status, body
/// and `Location`.
pub async fn sign_in(
    client: &Client,
    fp: &FakeProvider,
    sub: &str,
) -> (Status, String, Option<String>) {
    let authorize = start_sign_in(client, "/logto/sign-in").await;
    let callback = fp.authorize(&authorize, sub);
    let response = client.get(path_and_query(&callback)).dispatch().await;
    let status = response.status();
    let location = response.headers().get_one("Location").map(str::to_string);
    (
        status,
        response.into_string().await.unwrap_or_default(),
        location,
    )
}

/// A client signed in as `sub` (asserting that sign-in succeeded).
pub async fn signed_in(fp: &FakeProvider, logto: Value, sub: &str) -> Client {
    let client = client(logto).await;
    let (status, body, _) = sign_in(&client, fp, sub).await;
    assert_eq!(status, Status::SeeOther, "sign-in failed: {body}");
    client
}

/// The `sub` the app sees, if signed in.
pub async fn signed_in_sub(client: &Client) -> Option<String> {
    let (_, body) = get_json(client, "/").await;
    body["sub"].as_str().map(str::to_string)
}

/// The cookies `response` sets whose names start with `prefix`, as a browser keeps them.
pub fn cookies_set(response: &LocalResponse<'_>, prefix: &str) -> Vec<Cookie<'static>> {
    response
        .cookies()
        .iter()
        .filter(|c| c.name().starts_with(prefix))
        .map(|c| c.clone().into_owned())
        .collect()
}

/// For an untracked client: starts a sign-in, has the fake provider authorize `sub`, and
/// returns the callback URL with the transaction cookies the browser would send with it.
pub async fn authorized_callback(
    client: &Client,
    fp: &FakeProvider,
    sub: &str,
) -> (String, Vec<Cookie<'static>>) {
    let response = client.get("/logto/sign-in").dispatch().await;
    let cookies = cookies_set(&response, "");
    (fp.authorize(&location(&response), sub), cookies)
}

/// Whether the app sees someone signed in for this request to `/` (as JSON).
pub async fn signed_in_with(request: rocket::local::asynchronous::LocalRequest<'_>) -> bool {
    let response = request.header(rocket::http::Accept::JSON).dispatch().await;
    assert_ne!(response.status(), Status::InternalServerError);
    let body: Value = response
        .into_json()
        .await
        .expect("the home page answers JSON");
    body["authenticated"] == true
}
