//! The layout test: `src/` is in layers (see ARCHITECTURE.md), and imports run downward.
//! It reads every source file and fails, naming the file, the line and the rule, when an
//! import crosses a layer the wrong way, when Rocket's request-time types appear outside
//! `web/`, or when two modules' names differ only by a suffix. It keeps the layout from
//! decaying; change ARCHITECTURE.md and this file together.
//!
//! Layers, lowest first (a module may use its own layer and those listed for it):
//!
//! | layer | path | may use |
//! |---|---|---|
//! | util | `src/util/` | util |
//! | vocabulary | `src/{config,error,claims,return_path,sign_in_options}.rs` | util, vocabulary |
//! | oidc | `src/oidc/` | util, vocabulary, oidc |
//! | session | `src/session/` | util, vocabulary, session |
//! | store | `src/store/` | util, vocabulary, session, store |
//! | tokens | `src/tokens/` | util, vocabulary, oidc, session, store, tokens |
//! | web | `src/web/` | everything |
//! | face | `src/lib.rs`, `src/testing.rs` | everything |

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Util,
    Vocabulary,
    Oidc,
    Session,
    Store,
    Tokens,
    Web,
    Face,
}

const VOCABULARY: [&str; 5] = [
    "config",
    "error",
    "claims",
    "return_path",
    "sign_in_options",
];

/// The layer of a top-level module of the crate (the first segment after `crate::`).
fn layer_of_module(name: &str) -> Option<Layer> {
    Some(match name {
        "util" => Layer::Util,
        "oidc" => Layer::Oidc,
        "session" => Layer::Session,
        "store" => Layer::Store,
        "tokens" => Layer::Tokens,
        "web" => Layer::Web,
        "testing" => Layer::Face,
        n if VOCABULARY.contains(&n) => Layer::Vocabulary,
        _ => return None,
    })
}

/// The layer of a file under `src/`.
fn layer_of_file(relative: &Path) -> Layer {
    let mut parts = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy());
    let first = parts.next().expect("a path under src/").to_string();
    let name = first.trim_end_matches(".rs");
    if name == "lib" {
        return Layer::Face;
    }
    layer_of_module(name).unwrap_or_else(|| {
        panic!("src/{first}: a module of no layer; add it to tests/layout.rs and ARCHITECTURE.md")
    })
}

fn may_use(from: Layer, to: Layer) -> bool {
    use Layer::*;
    match from {
        Util => to == Util,
        Vocabulary => matches!(to, Util | Vocabulary),
        Oidc => matches!(to, Util | Vocabulary | Oidc),
        Session => matches!(to, Util | Vocabulary | Session),
        Store => matches!(to, Util | Vocabulary | Session | Store),
        Tokens => matches!(to, Util | Vocabulary | Oidc | Session | Store | Tokens),
        Web | Face => true,
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: without its `//` comment (doc comments included: they may name any
/// path in links), and empty inside string literals' lines is not attempted (none of the
/// checked patterns appear in this crate's strings).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// The top-level modules a line of code names through `crate::`, including each item of
/// a grouped `crate::{a, b::c}`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

/// Rocket's request-time types, named outside `web/`.
const REQUEST_TIME: [&str; 4] = ["Request", "CookieJar", "Outcome", "FromRequest"];

fn names_request_time_type(line: &str) -> Option<&'static str> {
    REQUEST_TIME.iter().copied().find(|name| {
        line.match_indices(name).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + name.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            boundary(before) && boundary(after)
        })
    })
}

/// Every breach of the rules in the tree at `src`, one line each.
fn breaches(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    let mut modules: Vec<((PathBuf, String), String)> = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src).unwrap();
        let shown = format!("src/{}", relative.display());
        let from = layer_of_file(relative);
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anything (from `#[cfg(test)] mod` to the end of the file).
        let lines: Vec<&str> = text.lines().collect();
        let mut in_tests = false;
        for (n, line) in lines.iter().enumerate() {
            let test_module = line.trim_start().starts_with("#[cfg(test)]")
                && lines
                    .get(n + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod "));
            in_tests |= test_module;
            if in_tests {
                continue;
            }
            let code = code(line);
            for module in crate_paths(code) {
                let Some(to) = layer_of_module(&module) else {
                    continue;
                };
                if !may_use(from, to) {
                    found.push(format!(
                        "{shown}:{}: the {from:?} layer uses crate::{module} ({to:?} layer)",
                        n + 1
                    ));
                }
            }
            if from < Layer::Web {
                if let Some(name) = names_request_time_type(code) {
                    found.push(format!(
                        "{shown}:{}: names Rocket's `{name}` outside web/",
                        n + 1
                    ));
                }
            }
        }
        if let Some(module) = module_of(relative) {
            modules.push((module, shown));
        }
    }
    // Two modules whose names differ only by a suffix in one folder (`api`, `api_error`), or
    // that have the same name anywhere (`sessions`, `store/sessions`).
    for (a, (parent_a, name_a)) in modules.iter().map(|(m, s)| (s, m)) {
        for (b, (parent_b, name_b)) in modules.iter().map(|(m, s)| (s, m)) {
            if a >= b {
                continue;
            }
            let suffixed = parent_a == parent_b
                && (name_b.starts_with(&format!("{name_a}_"))
                    || name_a.starts_with(&format!("{name_b}_")));
            if suffixed {
                found.push(format!("{a} and {b}: names that differ only by a suffix"));
            } else if name_a == name_b {
                found.push(format!("{a} and {b}: two modules of one name"));
            }
        }
    }
    found
}

/// The folder a module is declared in and its name (`x/mod.rs` is `x` in the folder above).
fn module_of(relative: &Path) -> Option<(PathBuf, String)> {
    let stem = relative.file_stem()?.to_string_lossy().to_string();
    let parent = relative.parent()?.to_path_buf();
    match stem.as_str() {
        "lib" => None,
        "mod" => Some((
            parent.parent()?.to_path_buf(),
            parent.file_name()?.to_string_lossy().to_string(),
        )),
        _ => Some((parent, stem)),
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn imports_run_downward_and_request_types_stay_in_web() {
    let found = breaches(&src());
    assert!(
        found.is_empty(),
        "layout rules broken (see ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

/// The test catches what it is for: a copy of `src/` with one forbidden import added to
/// each lower layer is refused, line by line.
#[test]
fn a_forbidden_import_is_caught() {
    let copy = std::env::temp_dir().join(format!("rocket_logto-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&src(), &copy);
    let plant = |file: &str, line: &str| {
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{line}\n{text}")).unwrap();
    };
    plant("oidc/jwt.rs", "use crate::session::Session;");
    plant("session/codec.rs", "use crate::oidc::provider::Provider;");
    plant(
        "store/memory.rs",
        "use crate::{util::bounded::ExpiringMap, tokens::refresh};",
    );
    plant("tokens/refresh.rs", "use crate::web::fairing::LogtoState;");
    plant("util/bounded.rs", "use crate::config::LogtoConfig;");
    plant("config.rs", "use rocket::http::CookieJar;");
    std::fs::write(copy.join("web/bearer_error.rs"), "").unwrap();
    std::fs::write(copy.join("store/claims.rs"), "").unwrap();
    let found = breaches(&copy);
    let _ = std::fs::remove_dir_all(&copy);
    for expected in [
        "src/oidc/jwt.rs:1: the Oidc layer uses crate::session",
        "src/session/codec.rs:1: the Session layer uses crate::oidc",
        "src/store/memory.rs:1: the Store layer uses crate::tokens",
        "src/tokens/refresh.rs:1: the Tokens layer uses crate::web",
        "src/util/bounded.rs:1: the Util layer uses crate::config",
        "src/config.rs:1: names Rocket's `CookieJar` outside web/",
        "src/web/bearer/mod.rs and src/web/bearer_error.rs: names that differ only by a suffix",
        "src/claims.rs and src/store/claims.rs: two modules of one name",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(expected)),
            "not caught: {expected}\nfound:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), 8, "{}", found.join("\n"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
