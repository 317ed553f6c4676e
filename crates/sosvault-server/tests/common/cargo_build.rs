//! Builds the workspace's other binaries a test runs, which Cargo does not
//! build for a test of another package.
//!
//! Shared by the dispatch service's test harness
//! (`crates/sosvault-server/tests/common`) and the CLI's demo test
//! (`crates/sosvault-cli/tests/demo.rs`, which includes this file by path).

#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cargo build --quiet ARGS` on the workspace (a no-op when up to
/// date), into the profile directory of `bin`, one of the test's own binaries.
pub fn cargo_build(args: &[&str], bin: PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let status = Command::new(cargo)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        // Build into the same profile directory as this test's binaries.
        .args(same_profile(bin))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// `--release` when the test's own binaries were built in release mode.
fn same_profile(bin: PathBuf) -> Vec<&'static str> {
    let profile = bin
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str());
    if profile == Some("release") {
        vec!["--release"]
    } else {
        Vec::new()
    }
}
