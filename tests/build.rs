//! Builds the example apps and the test guests to wasm32-wasip2 components
//! and exports their paths to the tests as `env!` constants
//! (e.g. `PROCESS_ORDER_WASM`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    for dir in [
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
        "examples",
        "tests/guests",
    ] {
        rerun_if_changed(&root.join(dir));
    }
    build(
        &root.join("examples"),
        &[
            "process-order",
            "fan-out-loop",
            "flaky-retry",
            "sync-crm",
            "index-product",
            "generate-report",
            "risky-transfer",
            "fetch-parallel",
            "daily-digest",
        ],
    );
    build(
        &root.join("tests/guests"),
        &[
            "probe",
            "not-an-app",
            "flow",
            "ticker",
            "bad-config",
            "hostile",
            "trap-start",
            "foreign-import",
            "order-compatible",
            "order-breaking",
        ],
    );
}

fn rerun_if_changed(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rerun_if_changed(&path);
        }
    } else {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn build(workspace: &Path, crates: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        // The outer build's settings are for the host, not for wasm guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .expect("running cargo to build the guests");
    assert!(
        status.success(),
        "building the guests in {} failed (is the wasm32-wasip2 target installed? rustup target add wasm32-wasip2)",
        workspace.display()
    );
    for name in crates {
        let file = workspace
            .join("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let file = if file.exists() {
            file
        } else {
            workspace
                .join("target/wasm32-wasip2/release")
                .join(format!("{name}.wasm"))
        };
        assert!(file.exists(), "missing {}", file.display());
        let var = format!("{}_WASM", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", file.display());
    }
}
