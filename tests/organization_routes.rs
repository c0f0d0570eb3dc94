//! Issue 27: the organization guards read the route's path segment named `<organization_id>`.
//! An app whose routes name it otherwise stops at launch, with the guard's Sentinel, instead
//! of answering 500 to every request.

use rocket::error::ErrorKind;
use rocket::figment::Figment;
use rocket::{get, routes, Build, Rocket};
use rocket_logto::{Logto, OrganizationResourceToken, OrganizationToken, Resource};
use serde_json::json;

struct Shopping;

impl Resource for Shopping {
    const INDICATOR: &'static str = "https://shopping.example.com/api";
}

/// The line of `members`' signature, where Rocket locates its guard.
const MEMBERS_LINE: u32 = line!() + 2;
#[get("/orgs/<org>/members")]
fn members(org: &str, token: OrganizationToken) -> String {
    format!("{org} {}", token.sub())
}

#[get("/orgs/<org>/orders")]
fn orders(org: &str, token: OrganizationResourceToken<Shopping>) -> String {
    format!("{org} {}", token.sub())
}

#[get("/organizations/<organization_id>/members")]
fn named_members(organization_id: &str, token: OrganizationToken) -> String {
    format!("{organization_id} {}", token.sub())
}

/// An API that signs nobody in; nothing listens on its endpoint (launch needs no call).
fn api() -> Rocket<Build> {
    let logto = json!({
        "endpoint": "http://127.0.0.1:9",
        "resources": [Shopping::INDICATOR, "urn:logto:resource:organizations"],
    });
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("log_level", "off"));
    rocket::custom(figment).attach(Logto::fairing())
}

/// The guards' types and the file and line of each route that uses them, as Rocket reports
/// an aborted launch.
async fn aborted_by(rocket: Rocket<Build>) -> Vec<(String, String, u32)> {
    match rocket.ignite().await {
        Ok(_) => Vec::new(),
        Err(e) => match e.kind() {
            ErrorKind::SentinelAborts(sentries) => sentries
                .iter()
                .map(|s| {
                    (
                        s.type_name.to_string(),
                        s.location.0.to_string(),
                        s.location.1,
                    )
                })
                .collect(),
            other => panic!("another launch error: {other:?}"),
        },
    }
}

#[rocket::async_test]
async fn a_route_that_names_the_organization_segment_otherwise_stops_the_launch() {
    let aborted = aborted_by(api().mount("/api", routes![members])).await;
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    let (guard, file, line) = &aborted[0];
    assert!(guard.contains("OrganizationToken"), "{guard}");
    // The route: this file, the line of `members`' signature.
    assert!(file.ends_with("organization_routes.rs"), "{file}");
    assert_eq!(*line, MEMBERS_LINE);

    let aborted = aborted_by(api().mount("/api", routes![orders])).await;
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert!(
        aborted[0].0.contains("OrganizationResourceToken"),
        "{aborted:?}"
    );
}

#[rocket::async_test]
async fn a_route_with_the_organization_segment_launches() {
    assert_eq!(
        aborted_by(api().mount("/api", routes![named_members])).await,
        []
    );
}
