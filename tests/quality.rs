//! `cargo test --test quality`: one test per row of the quality table (`harness/quality.csv`,
//! or `O3_QUALITY_MATRIX`), named `<name>::quality_<K>k`, each a sweep of retrieval probes at
//! chosen depths of a deep fill against a live Ollama server (`OLLAMA_HOST`).
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A test that cannot run here (server unreachable, model not pulled) is ignored with the
//!   reason, or fails with `O3_REQUIRE_SERVER=1`; it leaves a result file either way.
//! - PASS passes; MARGINAL passes with a warning; FAIL and INVALID fail with their reasons.

use std::process::ExitCode;

use o3_suite::{harness, quality};

fn main() -> ExitCode {
    harness::main("quality.md", quality::tests)
}
