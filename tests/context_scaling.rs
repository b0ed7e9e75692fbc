//! `cargo test --test context_scaling`: one test per cell of the matrix table, named
//! `<name>::ctx_<K>k`, run against a live Ollama server (`OLLAMA_HOST`).
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A cell that cannot run here (server unreachable, model not pulled) is ignored with the
//!   reason, or fails with `O3_REQUIRE_SERVER=1`; it leaves a result file either way.
//! - PASS passes; MARGINAL passes with a warning; FAIL and INVALID fail with their reasons.
//! - Rows marked `optional` are ignored unless `-- --include-ignored`.

use std::process::ExitCode;

use o3_suite::harness::{self, Test};
use o3_suite::matrix;
use o3_suite::runner::run_cell;

fn main() -> ExitCode {
    harness::main("performance_matrix.md", |config| {
        let cells =
            matrix::load(&config.matrix_path, config.ram_limit_pct).map_err(|e| e.to_string())?;
        Ok(cells
            .into_iter()
            .map(|spec| Test {
                name: spec.test_name.clone(),
                ignored: spec.optional,
                run: Box::new(move |env| harness::cell_outcome(&env.config, &run_cell(&spec, env))),
            })
            .collect())
    })
}
