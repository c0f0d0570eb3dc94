//! A test app: rocket_logto attached to a Rocket instance pointed at a provider, driven by
//! Rocket's local client (no socket needed for the app itself).
#![allow(dead_code)]

use rocket::figment::Figment;
use rocket::http::{Accept, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use rocket::serde::json::{json, Json, Value};
use rocket::{get, post, routes, Build, Rocket, State};
use rocket_logto::{
    AccessToken, AppTokens, AuthenticatedUser, FetchedUserInfo, IdTokenClaims, Logto, LogtoError,
    LogtoUser, Resource, ResourceToken, SessionHandle, Sessions,
};

/// A fixed key so that cookies can be crafted; tests for "old key" use another one.
pub const SECRET_KEY: &str =
    "w5IlXRemiq3AU6m7JjbnxfPSfpcDPs79isJU0BUjcBhBcaoPas/GsnhoFOLC8mZ18Iawc1t1+5n1Jn4kl/eLUg==";
/// Another valid key: cookies written under [`SECRET_KEY`] must not open with it.
pub const OTHER_SECRET_KEY: &str =
    "B9ESs3UdLEWDQKdPsR/4B8O2CxaCAs3o5eNp0eNzhivE/p3GMGsD0v0l+zwjzlY9GQqTwSOyyfpf2QJaogyNug==";
pub const BASE_URL: &str = "http://localhost:8000";
pub const SHOPPING: &str = "https://shopping.example.com/api";
pub const STORE: &str = "https://store.example.com/api";

pub struct Shopping;
impl Resource for Shopping {
    const INDICATOR: &'static str = SHOPPING;
}

pub struct ShoppingWriter;
impl Resource for ShoppingWriter {
    const INDICATOR: &'static str = SHOPPING;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:write"];
}

/// The shopping API as the machine-to-machine app reaches it (its role: `shopping:read`).
pub struct MachineShopping;
impl Resource for MachineShopping {
    const INDICATOR: &'static str = SHOPPING;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:read"];
}

/// The app's own token (client credentials), through the managed `AppTokens`: no
/// `AppToken` guard here, whose launch check would stop apps without `m2m_app_id`.
#[get("/app-token")]
async fn app_token(tokens: &State<AppTokens>) -> Result<Json<Value>, LogtoError> {
    Ok(token_json(&tokens.token::<MachineShopping>().await?))
}

#[get("/")]
fn home(user: LogtoUser) -> Json<Value> {
    Json(
        json!({ "authenticated": user.is_authenticated(), "sub": user.claims().map(|c| c.sub.clone()), "user_info": user.user_info() }),
    )
}

#[get("/me")]
fn me(user: AuthenticatedUser<'_>) -> Json<&IdTokenClaims> {
    Json(user.claims())
}

/// A token as JSON for the tests to read: what it grants (`AccessToken`'s own
/// serialisation, which leaves the token out) and the token itself.
fn token_json(token: &AccessToken) -> Json<Value> {
    let mut json = json!(token);
    json["access_token"] = token.secret().into();
    Json(json)
}

#[get("/shopping")]
fn shopping(token: ResourceToken<Shopping>) -> Json<Value> {
    token_json(&token)
}

#[get("/shopping-write")]
fn shopping_write(token: ResourceToken<ShoppingWriter>) -> Json<Value> {
    token_json(&token)
}

#[get("/token?<resource>")]
async fn token(user: AuthenticatedUser<'_>, resource: &str) -> Result<Json<Value>, LogtoError> {
    Ok(token_json(&user.access_token(resource).await?))
}

#[get("/org/<id>")]
async fn org(user: AuthenticatedUser<'_>, id: &str) -> Result<Json<Value>, LogtoError> {
    Ok(token_json(&user.organization_token(id).await?))
}

#[get("/orgs")]
async fn orgs(user: AuthenticatedUser<'_>) -> Result<Json<Value>, LogtoError> {
    let tokens = user.organization_tokens().await?;
    Ok(Json(Value::Object(
        tokens
            .iter()
            .map(|(id, token)| (id.clone(), token_json(token).0))
            .collect(),
    )))
}

#[get("/userinfo")]
fn userinfo(info: FetchedUserInfo) -> Json<Value> {
    Json(json!(info.0))
}

#[get("/force-refresh")]
async fn force_refresh(user: AuthenticatedUser<'_>) -> Result<Json<Value>, LogtoError> {
    Ok(token_json(&user.force_refresh(Some(SHOPPING)).await?))
}

#[get("/org/<id>/resource?<resource>")]
async fn org_resource(
    user: AuthenticatedUser<'_>,
    id: &str,
    resource: &str,
) -> Result<Json<Value>, LogtoError> {
    Ok(token_json(
        &user.organization_resource_token(id, resource).await?,
    ))
}

/// The signed-in user's sessions (Redis session store), this one marked.
#[get("/sessions")]
async fn sessions_list(
    user: AuthenticatedUser<'_>,
    sessions: &State<Sessions>,
) -> Result<Json<Value>, LogtoError> {
    let current = user.session_handle();
    let list = sessions.list(user.id()).await?;
    Ok(Json(json!(list
        .iter()
        .map(|s| json!({
            "handle": s.handle,
            "current": Some(&s.handle) == current.as_ref(),
            "created": s.created.unix_timestamp(),
            "last_seen": s.last_seen.unix_timestamp(),
            "user_agent": s.user_agent,
        }))
        .collect::<Vec<_>>())))
}

/// Ends one of the signed-in user's sessions.
#[post("/sessions/end/<handle>")]
async fn sessions_end(
    user: AuthenticatedUser<'_>,
    handle: SessionHandle,
    sessions: &State<Sessions>,
) -> Result<Json<bool>, LogtoError> {
    let mine = sessions
        .list(user.id())
        .await?
        .iter()
        .any(|s| s.handle == handle);
    if !mine {
        return Err(LogtoError::NotFound("No such session of yours.".into()));
    }
    Ok(Json(sessions.end(&handle).await?))
}

/// An admin ends every session of `sub` (no sign-in needed: a test app).
#[post("/admin/end-all/<sub>")]
async fn admin_end_all(sub: &str, sessions: &State<Sessions>) -> Result<&'static str, LogtoError> {
    sessions.end_all(sub).await?;
    Ok("ended")
}

/// The `logto` table for a provider at `endpoint`.
pub fn logto_table(endpoint: &str, app_id: &str, app_secret: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "app_id": app_id,
        "app_secret": app_secret,
        "base_url": BASE_URL,
        "scopes": ["email", "custom_data", "urn:logto:scope:organizations", "urn:logto:scope:organization_roles",
                   "shopping:read", "shopping:write", "store:read"],
        "resources": [SHOPPING, STORE],
    })
}

/// Merges `patch` into `table` (objects merge, other values replace).
pub fn merge(table: &mut Value, patch: &Value) {
    match (table, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub fn rocket_with(logto: Value, secret_key: &str) -> Rocket<Build> {
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("secret_key", secret_key))
        .merge(("log_level", "off"));
    rocket::custom(figment)
        .attach(Logto::fairing())
        .register("/", Logto::catchers())
        .mount(
            "/",
            routes![
                home,
                me,
                shopping,
                shopping_write,
                token,
                org,
                orgs,
                userinfo,
                force_refresh,
                org_resource,
                sessions_list,
                sessions_end,
                admin_end_all,
                app_token
            ],
        )
}

pub async fn client(logto: Value) -> Client {
    Client::tracked(rocket_with(logto, SECRET_KEY))
        .await
        .expect("valid rocket")
}

pub async fn untracked(logto: Value) -> Client {
    Client::untracked(rocket_with(logto, SECRET_KEY))
        .await
        .expect("valid rocket")
}

pub fn location(response: &LocalResponse<'_>) -> String {
    response
        .headers()
        .get_one("Location")
        .expect("a Location header")
        .to_string()
}

/// `path?query` of an absolute URL.
pub fn path_and_query(url: &str) -> String {
    let url = url::Url::parse(url).expect("absolute URL");
    match url.query() {
        Some(q) => format!("{}?{}", url.path(), q),
        None => url.path().to_string(),
    }
}

/// Starts a sign-in and returns the authorize URL.
pub async fn start_sign_in(client: &Client, path: &str) -> String {
    let response = client.get(path.to_string()).dispatch().await;
    assert_eq!(
        response.status(),
        Status::SeeOther,
        "{:?}",
        response.into_string().await
    );
    location(&response)
}

/// The query parameters of a URL.
pub fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .expect("URL")
        .query_pairs()
        .into_owned()
        .collect()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` lines of a response.
pub fn set_cookies(response: &LocalResponse<'_>) -> Vec<String> {
    response
        .headers()
        .get("Set-Cookie")
        .map(str::to_string)
        .collect()
}

pub async fn get_json(client: &Client, path: &str) -> (Status, Value) {
    let response = client
        .get(path.to_string())
        .header(Accept::JSON)
        .dispatch()
        .await;
    let status = response.status();
    let body = response.into_string().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub fn html_accept() -> Header<'static> {
    Header::new("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
}
