//! The built `context_scaling` test binary, for tests that run it as a user would
//! (`tests/harness_cli.rs`, `tests/data_loss.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of the built `context_scaling` test binary (built by cargo with this test's profile).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "test",
            "--test",
            "context_scaling",
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
            .filter(|v| v["target"]["name"] == "context_scaling")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the context_scaling executable")
    })
}
