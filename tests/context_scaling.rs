//! `cargo test --test context_scaling`: one test per cell of the matrix table, named
//! `<name>::ctx_<K>k`, run against a live Ollama server (`OLLAMA_HOST`).
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A cell that cannot run here (server unreachable, model not pulled) is ignored with the
//!   reason, or fails with `O3_REQUIRE_SERVER=1`; it leaves a result file either way.
//! - PASS passes; MARGINAL passes with a warning; FAIL and INVALID fail with their reasons.
//! - Rows marked `optional` are ignored unless `-- --include-ignored`.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Completion, Trial};
use o3_suite::config::Config;
use o3_suite::matrix;
use o3_suite::results::{CellSpec, Verdict};
use o3_suite::runner::{Outcome, RunEnv, cannot_run, run_cell, shared_env};

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One server: cells run one at a time unless the user asks otherwise.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cells = match matrix::load(&config.matrix_path, config.ram_limit_pct) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `--exact NAME` (how nextest runs each test): build only that cell.
    if args.exact
        && let Some(name) = &args.filter
    {
        cells.retain(|c| &c.test_name == name);
    }
    let env: Arc<OnceLock<Result<RunEnv, String>>> = Arc::new(OnceLock::new());
    let trials: Vec<Trial> = cells
        .into_iter()
        .map(|spec| trial(spec, config.clone(), Arc::clone(&env)))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = env.get() {
        eprintln!(
            "results: {}\nreport:  {}",
            env.run_dir.display(),
            env.run_dir
                .join("comparative_analysis")
                .join("performance_matrix.md")
                .display()
        );
    }
    conclusion.exit_code()
}

fn trial(spec: CellSpec, config: Config, env: Arc<OnceLock<Result<RunEnv, String>>>) -> Trial {
    let optional = spec.optional;
    Trial::ignorable_test(spec.test_name.clone(), move || {
        let env = shared_env(&env, &config)?;
        match run_cell(&spec, env) {
            Outcome::CannotRun(r) => cannot_run(&env.config, &r.reasons.join("; ")),
            Outcome::Ran(r) => {
                let reasons = r.reasons.join("\n  ");
                match r.verdict {
                    Verdict::Pass => Ok(Completion::Completed),
                    Verdict::Marginal => {
                        eprintln!("warning: {} is MARGINAL:\n  {reasons}", spec.test_name);
                        Ok(Completion::Completed)
                    }
                    Verdict::Skipped => Ok(Completion::ignored_with(reasons)),
                    Verdict::Fail | Verdict::Invalid => {
                        Err(format!("{}:\n  {reasons}", r.verdict.label()).into())
                    }
                }
            }
        }
    })
    .with_ignored_flag(optional)
}
