//! Example binaries run as processes of their own by the tests, on free loopback ports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;

/// A child process, killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example `name` built next to this test binary:
/// target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The example `name` built with `features`, next to this test binary: cargo is asked to
/// bring it up to date (quick when it is), with the profile of this test binary, because
/// another test may have built the same example with other features since `cargo test`
/// built it. The variables cargo set for this test process are left out: some build scripts
/// watch them, and a changed value would rebuild half the tree.
pub fn build_example(name: &str, features: &str) -> PathBuf {
    let binary = example_binary(name);
    let profile_dir = binary.parent().unwrap().parent().unwrap();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--features",
            features,
        ])
        .arg("--manifest-path")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_BIN_")
            || var.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&var.as_ref())
        {
            command.env_remove(var.as_ref());
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the example {name}: {e}"));
    assert!(
        status.success(),
        "`cargo build --example {name} --features {features}` failed ({status})"
    );
    assert!(binary.is_file(), "no example at {}", binary.display());
    binary
}
