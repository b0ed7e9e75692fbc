//! `cargo test --test agentic`: one test per row of the session table (`harness/agentic.csv`,
//! or `O3_AGENTIC_MATRIX`), named `<name>::agentic_<workload>_<K>k`, each a sustained
//! multi-turn session against a live Ollama server (`OLLAMA_HOST`).
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A session that cannot run here (server unreachable, model not pulled) is ignored with the
//!   reason, or fails with `O3_REQUIRE_SERVER=1`; it leaves a result file either way.
//! - PASS passes; MARGINAL passes with a warning; FAIL and INVALID fail with their reasons.
//! - `O3_AGENTIC_DURATION_S` overrides every row's duration.

use std::process::ExitCode;

use o3_suite::{agentic, harness};

fn main() -> ExitCode {
    harness::main("agentic_sessions.md", agentic::tests)
}
