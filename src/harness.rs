//! What every `harness = false` test target shares: the run environment (from
//! [`crate::rundir`]), the cannot-run rule and one `main`.
//!
//! A target is a table and a per-row function: it hands [`main`] a closure that reads its table
//! into [`Test`]s (name, whether statically ignored, the function that runs the row), and
//! [`main`] does the rest — arguments, the configuration, `--exact` (how nextest runs each
//! test), one run directory per process created on first use (so `--list` creates nothing), and
//! where the results went.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::config::Config;
use crate::judgement::Judgement;
use crate::lock::{self, Holder, Lock};
use crate::results::{CellResult, Verdict};
use crate::runner;

pub use crate::rundir::{RunEnv, run_id};

/// The run environment of a test process, created on first use.
pub type SharedEnv = Arc<OnceLock<Result<RunEnv, String>>>;

/// The run environment shared by every trial of a test process, created on first use. The
/// error says which directory could not be made.
pub fn shared_env<'a>(
    once: &'a OnceLock<Result<RunEnv, String>>,
    config: &Config,
) -> Result<&'a RunEnv, Failed> {
    once.get_or_init(|| locked_run_env(config))
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
    judged_outcome(config, &r.cell.test_name, &r.judgement)
}

/// The test outcome of a judgement of test `name` (a cell, or a session of
/// [`crate::agentic`]), by the rules of [`cell_outcome`].
pub fn judged_outcome(config: &Config, name: &str, j: &Judgement) -> Result<Completion, Failed> {
    let reasons = j.reasons();
    match j.verdict {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Marginal => {
            eprintln!("warning: {name} is MARGINAL:\n  {}", reasons.join("\n  "));
            Ok(Completion::Completed)
        }
        Verdict::Skipped => cannot_run(config, &reasons.join("; ")),
        Verdict::Fail | Verdict::Invalid | Verdict::Regressed => {
            Err(format!("{}:\n  {}", j.verdict.label(), reasons.join("\n  ")).into())
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
            Trial::ignorable_test(t.name, move || {
                runner::take_unsaved_results();
                let outcome = run(shared_env(&env, &config)?);
                fail_when_unsaved(outcome)
            })
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

// ---------------------------------------------------------------------------------------------
// Run locks and lost results (issue 7): what keeps two runs apart and fails a test whose result
// could not be written.

/// The locks this process holds for its run, kept until the process ends (the OS releases them
/// then, however it ends).
static HELD: Mutex<Vec<Lock>> = Mutex::new(Vec::new());

/// Takes the locks of a run — first the server's (`<results dir>/.locks/<host>_<port>.lock`), so
/// a refused run creates nothing, then the run directory's (`<run>/.lock`) — and creates the run
/// directory between the two. A lock this process already holds is not taken again (each
/// nextest process of one run takes them for itself, one after another). The error names the
/// holder, or the directory that could not be made.
pub fn locked_run_env(config: &Config) -> Result<RunEnv, String> {
    let run_id = run_id(config);
    let holder = Holder::this_process(&run_id);
    let server = lock::server_lock_path(&config.results_dir, &config.base_url);
    let what = format!("server {}", lock::server_key(&config.base_url));
    hold(&server, &what, &holder)?;
    let env = RunEnv::with_run_id(config.clone(), run_id.clone()).map_err(|e| {
        format!(
            "cannot create the run directory under {}: {e}",
            config.results_dir.display()
        )
    })?;
    let what = format!("run directory {}", env.run_dir.root().display());
    hold(&lock::run_lock_path(env.run_dir.root()), &what, &holder)?;
    Ok(env)
}

fn hold(path: &std::path::Path, what: &str, holder: &Holder) -> Result<(), String> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|l| l.path() == path) {
        return Ok(());
    }
    let lock = lock::try_acquire(path, what, holder).map_err(|e| e.to_string())?;
    held.push(lock);
    Ok(())
}

/// A test whose run lost a result file fails, whatever its own outcome: the file's path and
/// the cause are in the message.
fn fail_when_unsaved(outcome: Result<Completion, Failed>) -> Result<Completion, Failed> {
    let unsaved = runner::take_unsaved_results();
    if unsaved.is_empty() {
        return outcome;
    }
    let was = match &outcome {
        Ok(Completion::Completed) => "passed".to_string(),
        Ok(Completion::Ignored { reason }) => {
            format!("ignored: {}", reason.as_deref().unwrap_or("no reason"))
        }
        Err(f) => format!("failed: {}", f.message().unwrap_or("no message")),
    };
    Err(format!(
        "the result was not written, so the run lost it:\n  {}\n(fix the results directory or choose \
         another with O3_RESULTS_DIR; without the file the test would have {was})",
        unsaved.join("\n  ")
    )
    .into())
}
