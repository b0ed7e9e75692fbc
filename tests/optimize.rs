//! `cargo test --test optimize`: one search per model slug of the matrix, named
//! `<name>::optimize`, against a live Ollama server (`OLLAMA_HOST`). See `o3_suite::optimize`
//! for the search rules and outputs.
//!
//! - `-- --list` reads the table only: no server is contacted.
//! - A model that cannot be searched here (server unreachable, model not pulled) is ignored with
//!   the reason, or fails with `O3_REQUIRE_SERVER=1`.
//! - The test passes when a passing context was found (a budget that cut the thread or batch
//!   search short is printed as a warning); it fails when no context passed.
//! - Slugs whose rows are all `optional` are ignored unless `-- --include-ignored`.
//! - Budgets: `O3_OPT_MAX_PROBES` (12), `O3_OPT_BUDGET_S` (1800), grid step
//!   `O3_OPT_GRID_TOKENS` (4096), `O3_OPT_BATCHES`, `O3_OPT_MAX_THREADS`.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Completion, Trial};
use o3_suite::config::Config;
use o3_suite::matrix;
use o3_suite::optimize::live::{ModelOutcome, optimize_model};
use o3_suite::optimize::plan::group_by_name;
use o3_suite::optimize::search::summary_line;
use o3_suite::optimize::{OptConfig, optimize_test_name};
use o3_suite::results::CellSpec;
use o3_suite::runner::{RunEnv, cannot_run, shared_env};

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One server: searches run one at a time unless the user asks otherwise.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let (config, opt) = match (Config::from_env(), OptConfig::from_env()) {
        (Ok(c), Ok(o)) => (c, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cells = match matrix::load(&config.matrix_path, config.ram_limit_pct) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut models = group_by_name(&cells);
    // `--exact NAME` (how nextest runs each test): build only that model.
    if args.exact
        && let Some(name) = &args.filter
    {
        models.retain(|(n, _)| &optimize_test_name(n) == name);
    }
    let env: Arc<OnceLock<Result<RunEnv, String>>> = Arc::new(OnceLock::new());
    let trials: Vec<Trial> = models
        .into_iter()
        .map(|(name, rows)| trial(name, rows, config.clone(), opt.clone(), Arc::clone(&env)))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = env.get() {
        eprintln!(
            "results: {}\nrecommendations: {}",
            env.run_dir.display(),
            env.run_dir
                .join("comparative_analysis")
                .join("use_case_recommendations.md")
                .display()
        );
    }
    conclusion.exit_code()
}

fn trial(
    name: String,
    rows: Vec<CellSpec>,
    config: Config,
    opt: OptConfig,
    env: Arc<OnceLock<Result<RunEnv, String>>>,
) -> Trial {
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
    Trial::ignorable_test(optimize_test_name(&name), move || {
        let env = shared_env(&env, &config)?;
        match optimize_model(rows, env, &opt) {
            ModelOutcome::CannotRun(why) => cannot_run(&env.config, &why),
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
                        optimize_test_name(&name),
                        record.not_searched.join("\n  ")
                    );
                }
                Ok(Completion::Completed)
            }
        }
    })
    .with_ignored_flag(all_optional || not_searched)
}
