//! What every `harness = false` test target shares: the run environment, the cannot-run rule
//! and one `main`.
//!
//! A target is a table and a per-row function: it hands [`main`] a closure that reads its table
//! into [`Test`]s (name, whether statically ignored, the function that runs the row), and
//! [`main`] does the rest — arguments, the configuration, `--exact` (how nextest runs each
//! test), one run directory per process created on first use (so `--list` creates nothing), and
//! where the results went.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::config::Config;
use crate::date;
use crate::results::{CellResult, Verdict};
use crate::rundir::RunDir;

/// Where a run's files go, and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// Configuration.
    pub config: Config,
    /// `<results_dir>/<run_id>`.
    pub run_dir: RunDir,
    /// The run id (directory name).
    pub run_id: String,
}

impl RunEnv {
    /// Resolves the run id (`O3_RUN_ID`, else nextest's `NEXTEST_RUN_ID` so that every test
    /// process of one nextest run shares a directory, else a timestamp and the process id),
    /// creates the run directory and points `<results_dir>/latest` at it.
    pub fn new(config: Config) -> std::io::Result<RunEnv> {
        let run_id = config
            .run_id
            .clone()
            .or_else(|| {
                std::env::var("NEXTEST_RUN_ID")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    date::compact(SystemTime::now()),
                    std::process::id()
                )
            });
        let run_dir = RunDir::create(&config.results_dir, &run_id)?;
        Ok(RunEnv {
            config,
            run_dir,
            run_id,
        })
    }
}

/// The run environment of a test process, created on first use.
pub type SharedEnv = Arc<OnceLock<Result<RunEnv, String>>>;

/// The run environment shared by every trial of a test process, created on first use. The
/// error says which directory could not be made.
pub fn shared_env<'a>(
    once: &'a OnceLock<Result<RunEnv, String>>,
    config: &Config,
) -> Result<&'a RunEnv, Failed> {
    once.get_or_init(|| {
        RunEnv::new(config.clone()).map_err(|e| {
            format!(
                "cannot create the run directory under {}: {e}",
                config.results_dir.display()
            )
        })
    })
    .as_ref()
    .map_err(|e| Failed::from(e.as_str()))
}

/// How a test reports a cell (or a model) that could not run here: ignored with the reason, or
/// failed when `O3_REQUIRE_SERVER=1`.
pub fn cannot_run(config: &Config, why: &str) -> Result<Completion, Failed> {
    if config.require_server {
        Err(format!("cannot run (O3_REQUIRE_SERVER=1): {why}").into())
    } else {
        Ok(Completion::ignored_with(why))
    }
}

/// The test outcome of a cell: PASS passes; MARGINAL passes with a warning; FAIL and INVALID
/// fail with their reasons; SKIPPED follows [`cannot_run`].
pub fn cell_outcome(config: &Config, r: &CellResult) -> Result<Completion, Failed> {
    let reasons = r.judgement.reasons();
    match r.verdict() {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Marginal => {
            eprintln!(
                "warning: {} is MARGINAL:\n  {}",
                r.cell.test_name,
                reasons.join("\n  ")
            );
            Ok(Completion::Completed)
        }
        Verdict::Skipped => cannot_run(config, &reasons.join("; ")),
        Verdict::Fail | Verdict::Invalid => {
            Err(format!("{}:\n  {}", r.verdict().label(), reasons.join("\n  ")).into())
        }
    }
}

/// The function that runs one row.
pub type RunRow = Box<dyn FnOnce(&RunEnv) -> Result<Completion, Failed> + Send>;

/// One test of a target: a row of its table.
pub struct Test {
    /// Test name, e.g. `gemma3_tools_27b::ctx_128k`.
    pub name: String,
    /// Ignored unless `--include-ignored` (optional rows).
    pub ignored: bool,
    /// Runs the row.
    pub run: RunRow,
}

/// The `main` of a target: `tests` reads the table (an error exits with code 2 and the
/// message); `report` names the file under `comparative_analysis/` to point the user at.
pub fn main(report: &str, tests: impl FnOnce(&Config) -> Result<Vec<Test>, String>) -> ExitCode {
    let mut args = Arguments::from_args();
    // One server: tests run one at a time unless the user asks otherwise.
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
    let mut tests = match tests(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `--exact NAME` (how nextest runs each test): keep only that test.
    if args.exact
        && let Some(name) = &args.filter
    {
        tests.retain(|t| &t.name == name);
    }
    let env: SharedEnv = Arc::new(OnceLock::new());
    let trials: Vec<Trial> = tests
        .into_iter()
        .map(|t| {
            let env = Arc::clone(&env);
            let config = config.clone();
            let run = t.run;
            Trial::ignorable_test(t.name, move || run(shared_env(&env, &config)?))
                .with_ignored_flag(t.ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(env)) = env.get() {
        eprintln!(
            "results: {}\nreport:  {}",
            env.run_dir.root().display(),
            env.run_dir.report_path(report).display()
        );
    }
    conclusion.exit_code()
}
