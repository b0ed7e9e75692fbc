//! The built test binaries, for tests that run them as a user would: `context_scaling`
//! (`tests/harness_cli.rs`, `tests/data_loss.rs`) and `predict` (`tests/predict_offline.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of the built `context_scaling` test binary (built by cargo with this test's profile).
#[allow(dead_code)]
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("context_scaling"))
}

/// Path of the built `predict` test binary.
#[allow(dead_code)]
pub fn predict_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("predict"))
}

/// Builds the test target `target` (with this test's profile) and returns its executable.
fn built(target: &str) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "test",
        "--test",
        target,
        "--no-run",
        "--message-format=json",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo test --no-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == target)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {target} executable"))
}
