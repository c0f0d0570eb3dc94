//! A Rocket API protected by Logto access tokens: `cargo run --example api`.
//!
//! It signs nobody in: its `logto` configuration has only `endpoint` and `resources`
//! (`examples/api/Rocket.toml`, or `ROCKET_CONFIG`), so the fairing mounts no sign-in
//! routes. The environment wins over the file, as for the sample (this figment of its own
//! merges `LogtoEnv` for the `LOGTO_*` variables): `LOGTO_ENDPOINT`,
//! `ROCKET_ADDRESS`, `ROCKET_PORT`, `ROCKET_LOGTO='{resources=["https://shopping.example.com/api"]}'`.
//!
//! ```sh
//! TOKEN=...   # a Logto access token for https://shopping.example.com/api
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/api/whoami
//! ```
//!
//! | route | guard | accepts |
//! |---|---|---|
//! | `GET /api/whoami` | `BearerToken<Shopping>` | a token for the shopping API |
//! | `GET /api/organizations/<id>/whoami` | `OrganizationToken` | an organization token of `<id>` |
//! | `GET /api/organizations/<id>/shopping/whoami` | `OrganizationResourceToken<Shopping>` | a shopping token narrowed to `<id>` |
//! | `POST /api/orders` | `BearerToken<ShoppingWriter>` | a shopping token with `shopping:write` |
//!
//! Each `whoami` answers the token's verified claims as JSON; refusals are RFC 6750 JSON
//! with `WWW-Authenticate`.

use rocket::figment::providers::{Env, Format, Toml};
use rocket::figment::{Figment, Profile};
use rocket::launch;
use rocket_logto::{Logto, LogtoEnv};

mod routes;

/// Rocket's own configuration sources, with this example's `Rocket.toml` (the one at the
/// repository's root configures the sample web app), and the `LOGTO_*` variables on top:
/// a figment of the app's own gets them only by merging `LogtoEnv`.
fn figment() -> Figment {
    let file = Env::var("ROCKET_CONFIG")
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/api/Rocket.toml").into());
    Figment::from(rocket::Config::default())
        .merge(Toml::file(file).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global())
        .merge(LogtoEnv::new())
        .select(Profile::from_env_or(
            "ROCKET_PROFILE",
            rocket::Config::DEFAULT_PROFILE,
        ))
}

#[launch]
fn rocket() -> _ {
    rocket::custom(figment())
        .attach(Logto::fairing())
        // RFC 6750 answers (401/403 with WWW-Authenticate, JSON) for the guards' refusals.
        .register("/", Logto::catchers())
        .mount("/api", routes::routes())
}
