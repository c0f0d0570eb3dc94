//! The README's own app, `examples/readme`: its `main.rs` is the README's Usage code followed
//! by the test module of "Testing your routes", and its `Rocket.toml` the Usage
//! `Rocket.toml`, byte for byte, so that the app `scripts/demo --check` runs against the demo
//! provider is the one a newcomer copies. The app's own tests run here too (the README's Rust
//! blocks are also compiled as doctests, see `src/lib.rs`).

#[allow(dead_code)]
#[path = "../examples/readme/main.rs"]
mod readme_app;

const README: &str = include_str!("../README.md");

/// The body of the first fenced block of `lang` after the heading `heading` whose first line
/// starts with `first`.
fn block_after(heading: &str, lang: &str, first: &str) -> String {
    let start = README
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"));
    let fence = format!("```{lang}\n");
    let mut rest = &README[start..];
    loop {
        let open = rest.find(&fence).unwrap_or_else(|| {
            panic!("no ```{lang} block starting with {first:?} after {heading:?}")
        });
        let body = &rest[open + fence.len()..];
        let close = body.find("\n```\n").expect("an unterminated block") + 1;
        if body.starts_with(first) {
            return body[..close].to_owned();
        }
        rest = &body[close..];
    }
}

#[test]
fn the_readme_app_is_the_readme_code() {
    let usage = block_after("## Usage", "rust", "use ");
    let tests = block_after("## Testing your routes", "rust", "#[cfg(test)]");
    let main = include_str!("../examples/readme/main.rs");
    assert!(
        main == format!("{usage}\n{tests}"),
        "examples/readme/main.rs differs from the README's Usage code followed by the test \
         module of \"Testing your routes\": change both together"
    );

    let toml = block_after("## Usage", "toml", "# Rocket.toml");
    assert!(
        include_str!("../examples/readme/Rocket.toml") == toml,
        "examples/readme/Rocket.toml differs from the README's Usage Rocket.toml: change both together"
    );
}
