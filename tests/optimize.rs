//! `cargo test --test optimize`: one search per model slug of the matrix, named
//! `<name>::optimize`, against a live Ollama server (`OLLAMA_HOST`). See `o3_suite::optimize`
//! for the search rules and outputs.
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A model that cannot be searched here (server unreachable, model not pulled) is ignored with
//!   the reason, or fails with `O3_REQUIRE_SERVER=1`; a server that answers wrongly fails it.
//! - The test passes when a passing context was found (a budget that cut the thread or batch
//!   search short is printed as a warning); it fails when no context passed.
//! - Slugs whose rows are all `optional` are ignored unless `-- --include-ignored`.
//! - Budgets: `O3_OPT_MAX_PROBES` (12), `O3_OPT_BUDGET_S` (1800), grid step
//!   `O3_OPT_GRID_TOKENS` (4096), `O3_OPT_BATCHES`, `O3_OPT_MAX_THREADS`.

use std::process::ExitCode;

use libtest_mimic::{Completion, Failed};
use o3_suite::harness::{self, RunEnv, Test};
use o3_suite::matrix;
use o3_suite::optimize::live::{ModelOutcome, optimize_model};
use o3_suite::optimize::plan::group_by_name;
use o3_suite::optimize::search::summary_line;
use o3_suite::optimize::{OptConfig, optimize_test_name};
use o3_suite::results::CellSpec;

fn main() -> ExitCode {
    harness::main("use_case_recommendations.md", |config| {
        let opt = OptConfig::from_env().map_err(|e| e.to_string())?;
        let cells =
            matrix::load(&config.matrix_path, config.ram_limit_pct).map_err(|e| e.to_string())?;
        Ok(group_by_name(&cells)
            .into_iter()
            .map(|(name, rows)| test(name, rows, opt.clone()))
            .collect())
    })
}

fn test(name: String, rows: Vec<CellSpec>, opt: OptConfig) -> Test {
    let all_optional = rows.iter().all(|r| r.optional);
    // Rows marked `optimize = false` (e.g. deep-fill probes) are measured, not searched: the
    // model's test is listed but ignored unless asked for with --include-ignored.
    let not_searched = rows.iter().all(|r| !r.optimize);
    // Optional rows take part only when the whole slug is asked for.
    let rows: Vec<CellSpec> = if all_optional {
        rows
    } else {
        rows.into_iter().filter(|r| !r.optional).collect()
    };
    Test {
        name: optimize_test_name(&name),
        ignored: all_optional || not_searched,
        run: Box::new(move |env| search(&name, rows, env, &opt)),
    }
}

fn search(
    name: &str,
    rows: Vec<CellSpec>,
    env: &RunEnv,
    opt: &OptConfig,
) -> Result<Completion, Failed> {
    match optimize_model(rows, env, opt) {
        ModelOutcome::CannotRun(why) => harness::cannot_run(&env.config, &why),
        ModelOutcome::Broken(why) => Err(why.into()),
        ModelOutcome::Searched(record) => {
            let line = summary_line(&record);
            if let Some(why) = &record.stopped {
                return Err(format!("the search stopped: {why}\n  {line}").into());
            }
            if record.recommended.is_none() {
                return Err(format!("no context passed its gates:\n  {line}").into());
            }
            if !record.not_searched.is_empty() {
                eprintln!(
                    "warning: {} did not search everything:\n  {}",
                    optimize_test_name(name),
                    record.not_searched.join("\n  ")
                );
            }
            Ok(Completion::Completed)
        }
    }
}
