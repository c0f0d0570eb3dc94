//! The API's routes, one per permission model of Logto's "Protect your API" guide, and one
//! that needs a scope. `main.rs` mounts them under `/api`; another app (the sample web app)
//! can mount its own copy with `#[path = "../api/routes.rs"] mod api;`.
//!
//! Each answers the verified claims of the token as JSON.

use rocket::http::Status;
use rocket::serde::json::{Json, Value};
use rocket::{get, post, routes, Route};
use rocket_logto::{
    BearerToken, OrganizationResourceToken, OrganizationToken, Resource, VerifiedToken,
};

/// The shopping API, registered in Logto as an API resource with this indicator.
pub struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// The same API, for routes that need the `shopping:write` permission.
pub struct ShoppingWriter;

impl Resource for ShoppingWriter {
    const INDICATOR: &'static str = Shopping::INDICATOR;
    const REQUIRED_SCOPES: &'static [&'static str] = &["shopping:write"];
}

fn claims(token: &VerifiedToken) -> Json<Value> {
    Json(Value::Object(token.claims().clone()))
}

/// Global API resource: a token whose `aud` is the shopping API.
#[get("/whoami")]
pub fn whoami(token: BearerToken<Shopping>) -> Json<Value> {
    claims(&token)
}

/// Organization (non-API) permissions: an organization token of this organization
/// (`aud` = `urn:logto:organization:<organization_id>`).
#[get("/organizations/<organization_id>/whoami")]
pub fn organization_whoami(organization_id: &str, token: OrganizationToken) -> Json<Value> {
    // The guard checked the token against `organization_id`: nothing to compare here.
    let _ = organization_id;
    claims(&token)
}

/// Organization-level API resource: a shopping-API token narrowed to this organization
/// (its `organization_id` claim).
#[get("/organizations/<organization_id>/shopping/whoami")]
pub fn organization_shopping_whoami(
    organization_id: &str,
    token: OrganizationResourceToken<Shopping>,
) -> Json<Value> {
    let _ = organization_id;
    claims(&token)
}

/// A route that needs a permission: 403 `insufficient_scope` without `shopping:write`.
#[post("/orders")]
pub fn create_order(token: BearerToken<ShoppingWriter>) -> (Status, Json<Value>) {
    let by = token.user_id().unwrap_or(token.client_id());
    (
        Status::Created,
        Json(rocket::serde::json::json!({ "created_by": by })),
    )
}

/// Every route above, to mount under `/api`.
pub fn routes() -> Vec<Route> {
    routes![
        whoami,
        organization_whoami,
        organization_shopping_whoami,
        create_order
    ]
}
