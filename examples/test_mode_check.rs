//! For `tests/test_mode_builds.rs`, not an example to copy: ignites an app whose fairing
//! trusts the `testing` feature's key, prints `IGNITED` and exits 0, or exits 3 when the
//! launch is refused (as it must be in a release build).

use rocket_logto::Logto;

#[rocket::main]
async fn main() {
    let figment = rocket_logto::testing::figment()
        .merge(("log_level", "normal"))
        .merge(("cli_colors", false));
    let ignited = rocket::custom(figment)
        .attach(Logto::fairing().trust_test_key())
        .ignite()
        .await;
    match ignited {
        Ok(_) => println!("IGNITED"),
        Err(e) => {
            println!("REFUSED: {e}");
            std::process::exit(3);
        }
    }
}
