//! Sustained agentic sessions (`cargo test --test agentic`): multi-turn `/api/chat` workloads
//! that run for minutes, the history growing turn by turn towards the context limit, measured
//! for prompt-cache reuse, TTFT against history size, decode drift, memory growth, query
//! success and answer accuracy, and judged with the cells' typed judgement.
//!
//! [`table`] (the session table), [`workload`] (turns from the texts in `harness/agentic/`),
//! [`session`] (one session end to end), [`analysis`] (what the turns mean, and the verdict),
//! [`report`] (`agentic_sessions.{md,csv,json}`, `agentic_turns.csv`).

pub mod analysis;
pub mod report;
pub mod session;
pub mod table;
pub mod workload;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::harness::{self, Test};
use crate::judgement::{Judgement, Verdict};
use crate::results::{HardwareSummary, RunMetadata};
pub use analysis::{SessionAnalysis, TurnRecord};
pub use session::{SessionOptions, run_session, run_session_with};
pub use table::{SessionSpec, WorkloadKind};

/// Format of the session result files.
pub const FORMAT_VERSION: u32 = 1;

/// The default session table.
pub const DEFAULT_TABLE: &str = "harness/agentic.csv";

/// Why a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionStop {
    /// `duration_s` was spent (and the turn in flight ended).
    Duration,
    /// The turn limit of the options was reached (tests of the harness).
    MaxTurns,
    /// The RAM guard stopped it.
    RamGuard,
    /// Too many turns failed in a row.
    Failures,
    /// Something ended it early (the problem says what).
    Error,
    /// It never started.
    #[default]
    NotStarted,
}

/// What a session test leaves in `<run>/sessions/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The row.
    pub session: SessionSpec,
    /// The verdict and everything it rests on.
    pub judgement: Judgement,
    /// What the turns add up to.
    pub analysis: SessionAnalysis,
    /// Every turn.
    pub turns: Vec<TurnRecord>,
    /// Why it stopped.
    pub stop: SessionStop,
    /// The server's `load_duration` of the load (s).
    pub load_s: Option<f64>,
    /// What the sampler saw.
    pub hardware: HardwareSummary,
    /// Host, server and model facts.
    pub metadata: RunMetadata,
    /// Wall time of the test (s).
    pub wall_s: f64,
}

impl SessionResult {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }
}

/// What the phases of a session produced.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionRun {
    /// It could not run here.
    Skipped {
        /// Facts recorded before the preflight failed.
        meta: Box<RunMetadata>,
        /// Why.
        why: String,
    },
    /// It ran (perhaps stopped early).
    Ran(Box<session::Ran>),
}

/// The pure part: the result of a session from what its phases produced.
pub fn assemble(spec: &SessionSpec, run: SessionRun, wall_s: f64) -> SessionResult {
    let ran = match run {
        SessionRun::Ran(r) => *r,
        SessionRun::Skipped { meta, why } => {
            return SessionResult {
                format_version: FORMAT_VERSION,
                session: spec.clone(),
                judgement: Judgement::skipped(why),
                analysis: analysis::analyse(&[], None, 0),
                turns: Vec::new(),
                stop: SessionStop::NotStarted,
                load_s: None,
                hardware: HardwareSummary::default(),
                metadata: *meta,
                wall_s,
            };
        }
    };
    let mut turns = ran.turns;
    analysis::derive(&mut turns);
    let a = analysis::analyse(&turns, ran.loaded_rss_bytes, ran.conversations_completed);
    let judgement = analysis::judge(spec, &a, &turns, &ran.hardware, &ran.facts);
    SessionResult {
        format_version: FORMAT_VERSION,
        session: spec.clone(),
        judgement,
        analysis: a,
        turns,
        stop: ran.stop,
        load_s: ran.load_s,
        hardware: ran.hardware,
        metadata: ran.meta,
        wall_s,
    }
}

/// `O3_AGENTIC_MATRIX`: the session table (relative paths from the crate root).
pub fn table_path() -> std::path::PathBuf {
    let p = std::env::var_os("O3_AGENTIC_MATRIX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| DEFAULT_TABLE.into());
    if p.is_relative() {
        crate::config::crate_root().join(p)
    } else {
        p
    }
}

/// `O3_AGENTIC_DURATION_S`, when set: every row's duration.
pub fn duration_override() -> Result<Option<f64>, String> {
    match std::env::var("O3_AGENTIC_DURATION_S") {
        Ok(v) => table::DURATION_OVERRIDE
            .parse_var("O3_AGENTIC_DURATION_S", &v)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(_) => Ok(None),
    }
}

/// The tests of `cargo test --test agentic`: one per row of the session table, read offline.
pub fn tests(config: &Config) -> Result<Vec<Test>, String> {
    let specs = table::load(&table_path(), config.ram_limit_pct, duration_override()?)
        .map_err(|e| e.to_string())?;
    Ok(specs
        .into_iter()
        .map(|spec| Test {
            name: spec.test_name.clone(),
            ignored: spec.optional,
            run: Box::new(move |env| {
                let r = run_session(&spec, env);
                outcome(&env.config, &r)
            }),
        })
        .collect())
}

/// The test outcome of a session: as a cell's ([`harness::cell_outcome`]).
pub fn outcome(
    config: &Config,
    r: &SessionResult,
) -> Result<libtest_mimic::Completion, libtest_mimic::Failed> {
    harness::judged_outcome(config, &r.session.test_name, &r.judgement)
}
