//! Issue 13 against the real, Logto-like `oidc-provider` (tests/provider): a user's tokens
//! for a resource, an organization and an organization-level resource (fetched by the web
//! side of the same app, as the sample does), and a machine-to-machine token (client
//! credentials), each accepted by its guard and refused by the others. The guards are the
//! routes of `examples/api`, mounted in-process and run as the example binary, configured
//! as the contract says. Needs `npm ci --prefix tests/provider` once.

#[path = "../examples/api/routes.rs"]
mod api;
#[path = "support/process.rs"]
mod process;
#[path = "support/real_provider.rs"]
mod real_provider;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::Shopping;
use real_provider::{ProviderBrowser, ProviderOptions, RealProvider, ACME_ORG, ALICE, BOB};
use rocket::figment::Figment;
use rocket::http::{Header, Status};
use rocket::local::asynchronous::Client;
use rocket::{get, routes};
use rocket_logto::{AuthenticatedUser, Logto, LogtoError, ResourceToken};
use serde_json::{json, Value};

const SHOPPING: &str = "https://shopping.example.com/api";
const SECRET_KEY: &str =
    "w5IlXRemiq3AU6m7JjbnxfPSfpcDPs79isJU0BUjcBhBcaoPas/GsnhoFOLC8mZ18Iawc1t1+5n1Jn4kl/eLUg==";
const M2M: (&str, &str) = ("m2m-app", "m2m-secret");

/// What the web side asks for at sign-in: the shopping scopes and the organizations.
const SCOPES: [&str; 5] = [
    "urn:logto:scope:organizations",
    "shopping:read",
    "shopping:write",
    "read:members",
    "invite:members",
];

// The web side: the access tokens a signed-in user's session gets, as plain text.

#[get("/token/shopping")]
fn shopping_token(token: ResourceToken<Shopping>) -> String {
    token.secret().to_string()
}

#[get("/token/organizations/<id>")]
async fn organization_token(user: AuthenticatedUser<'_>, id: &str) -> Result<String, LogtoError> {
    Ok(user.organization_token(id).await?.secret().to_string())
}

#[get("/token/organizations/<id>/shopping")]
async fn organization_shopping_token(
    user: AuthenticatedUser<'_>,
    id: &str,
) -> Result<String, LogtoError> {
    let token = user.organization_resource_token(id, SHOPPING).await?;
    Ok(token.secret().to_string())
}

/// A web app and its API at once, like the sample: sign-in routes, the token routes above,
/// and the API's routes under `/api`.
async fn app(provider: &RealProvider) -> Client {
    let logto = json!({
        "endpoint": provider.endpoint,
        "app_id": provider.options.app_id,
        "app_secret": provider.options.app_secret,
        "base_url": "http://localhost:8000",
        "scopes": SCOPES,
        "resources": [SHOPPING],
    });
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("secret_key", SECRET_KEY))
        .merge(("log_level", "off"));
    let rocket = rocket::custom(figment)
        .attach(Logto::fairing())
        .register("/", Logto::catchers())
        .mount(
            "/",
            routes![
                shopping_token,
                organization_token,
                organization_shopping_token
            ],
        )
        .mount("/api", api::routes());
    Client::tracked(rocket).await.expect("valid rocket")
}

async fn sign_in(client: &Client, user: (&str, &str)) {
    let response = client.get("/logto/sign-in").dispatch().await;
    assert_eq!(response.status(), Status::SeeOther);
    let authorize = response.headers().get_one("Location").unwrap().to_string();
    let callback = ProviderBrowser::new()
        .sign_in(&authorize, user.0, user.1)
        .await;
    let url = url::Url::parse(&callback).unwrap();
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let response = client.get(path).dispatch().await;
    assert_eq!(response.status(), Status::SeeOther, "callback");
}

async fn text(client: &Client, path: &str) -> String {
    let response = client.get(path.to_string()).dispatch().await;
    assert_eq!(response.status(), Status::Ok, "{path}");
    response.into_string().await.unwrap()
}

/// A machine-to-machine token from the provider (client credentials).
async fn m2m_token(provider: &RealProvider, scope: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(provider.url("/oidc/token"))
        .basic_auth(M2M.0, Some(M2M.1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", SHOPPING),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {answer}"))
        .to_string()
}

/// The API's routes: (method, path).
const ROUTES: [(&str, &str); 5] = [
    ("GET", "/api/whoami"),
    ("GET", "/api/organizations/org_acme/whoami"),
    ("GET", "/api/organizations/org_acme/shopping/whoami"),
    ("POST", "/api/orders"),
    ("GET", "/api/organizations/org_globex/whoami"),
];

async fn call(client: &Client, (method, path): (&str, &str), token: &str) -> (Status, Value) {
    let request = match method {
        "POST" => client.post(path),
        _ => client.get(path),
    };
    let response = request
        .header(Header::new("Authorization", format!("Bearer {token}")))
        .header(Header::new("Accept", "text/html"))
        .dispatch()
        .await;
    let status = response.status();
    if matches!(status.code, 401 | 403) {
        let challenge = response
            .headers()
            .get_one("WWW-Authenticate")
            .unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm="),
            "{path}: {challenge}"
        );
    }
    let body = response.into_string().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Checks each token against every route: `expected` gives the status per route of
/// [`ROUTES`].
async fn matrix(client: &Client, name: &str, token: &str, expected: [u16; 5]) -> Vec<Value> {
    let mut bodies = Vec::new();
    for (route, want) in ROUTES.into_iter().zip(expected) {
        let (status, body) = call(client, route, token).await;
        assert_eq!(status.code, want, "{name} on {route:?}: {body}");
        bodies.push(body);
    }
    bodies
}

#[rocket::async_test]
async fn each_model_is_accepted_by_its_guard_and_refused_by_the_others() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let alice = app(&provider).await;
    sign_in(&alice, ALICE).await;
    let user = text(&alice, "/token/shopping").await;
    let organization = text(&alice, &format!("/token/organizations/{ACME_ORG}")).await;
    let organization_shopping =
        text(&alice, &format!("/token/organizations/{ACME_ORG}/shopping")).await;
    let machine = m2m_token(&provider, "shopping:read shopping:write").await;

    // routes: whoami, org whoami, org shopping whoami, POST orders, other org's whoami
    let bodies = matrix(&alice, "user token", &user, [200, 401, 401, 201, 401]).await;
    assert_eq!(bodies[0]["sub"], "user_alice");
    assert_eq!(bodies[0]["aud"], SHOPPING);
    assert_eq!(bodies[0]["client_id"], provider.options.app_id);
    assert_eq!(bodies[3]["created_by"], "user_alice");
    let bodies = matrix(
        &alice,
        "organization token",
        &organization,
        [401, 200, 401, 401, 401],
    )
    .await;
    assert_eq!(bodies[1]["aud"], "urn:logto:organization:org_acme");
    assert_eq!(bodies[1]["sub"], "user_alice");
    let bodies = matrix(
        &alice,
        "organization-level token",
        &organization_shopping,
        [401, 401, 200, 401, 401],
    )
    .await;
    assert_eq!(bodies[2]["organization_id"], ACME_ORG);
    assert_eq!(bodies[2]["aud"], SHOPPING);
    // The machine role grants shopping:read only: the write route answers 403.
    let bodies = matrix(
        &alice,
        "machine-to-machine token",
        &machine,
        [200, 401, 401, 403, 401],
    )
    .await;
    assert_eq!(bodies[0]["sub"], M2M.0);
    assert_eq!(bodies[0]["client_id"], M2M.0);
    assert_eq!(bodies[0]["scope"], "shopping:read");
    assert_eq!(bodies[3]["error"], "insufficient_scope");
    assert_eq!(bodies[3]["scope"], "shopping:write");

    // Bob is a viewer: his token opens the read route only.
    let bob = app(&provider).await;
    sign_in(&bob, BOB).await;
    let token = text(&bob, "/token/shopping").await;
    let bodies = matrix(&bob, "viewer's token", &token, [200, 401, 401, 403, 401]).await;
    assert_eq!(bodies[0]["sub"], "user_bob");
}

#[rocket::async_test]
async fn the_api_example_keeps_its_contract() {
    let provider = RealProvider::start(ProviderOptions::default()).await;
    let port = process::free_port();
    let child = Command::new(process::example_binary("api"))
        .env("LOGTO_ENDPOINT", &provider.endpoint)
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_LOGTO", format!("{{resources=[\"{SHOPPING}\"]}}"))
        .env("ROCKET_LOG_LEVEL", "critical")
        .env_remove("LOGTO_APP_ID")
        .env_remove("LOGTO_APP_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo test builds examples/api first");
    let _example = process::Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if http.get(format!("{base}/api/whoami")).send().await.is_ok() {
            break;
        }
        assert!(
            // A ceiling for a broken example, not for a busy runner: the poll ends when it answers.
            started.elapsed() < Duration::from_secs(120),
            "the example did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // No token: 401 and the challenge; no sign-in routes in an API-only app.
    let r = get("/api/whoami", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"{SHOPPING}\"").as_str()
    );
    assert_eq!(get("/logto/sign-in", None).await.unwrap().status(), 404);

    // A machine-to-machine token: its verified claims.
    let machine = m2m_token(&provider, "shopping:read").await;
    let r = get("/api/whoami", Some(&machine)).await.unwrap();
    assert_eq!(r.status(), 200);
    let claims: Value = r.json().await.unwrap();
    assert_eq!(claims["sub"], M2M.0);
    assert_eq!(claims["aud"], SHOPPING);
    assert_eq!(claims["iss"], provider.issuer());

    // A user's organization token for organization <id>, and for another one.
    let alice = app(&provider).await;
    sign_in(&alice, ALICE).await;
    let organization = text(&alice, &format!("/token/organizations/{ACME_ORG}")).await;
    let r = get("/api/organizations/org_acme/whoami", Some(&organization))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let claims: Value = r.json().await.unwrap();
    assert_eq!(claims["aud"], "urn:logto:organization:org_acme");
    let r = get("/api/organizations/org_globex/whoami", Some(&organization))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}
