//! The search record: every probe, the answer, what was not searched, what it cost. Written to
//! `<run>/comparative_analysis/optimize/<name>.json`; the other outputs are built from these
//! files only.
//!
//! For the performance matrix's `[TARGET]` marks: [`SearchRecord::recommended`]`.test_name` is
//! the probe cell (`<name>::opt::ctx_…`) of the recommended configuration, and
//! `matrix_test_name` the matrix cell (`<name>::ctx_<K>k`) with the same slug and context, when
//! the matrix has one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::ContextCap;
use super::{LoadOptions, OptConfig, Phase, options_of};
use crate::results::{CellResult, Gates, Host, Verdict};
use crate::rundir::{RunDir, StoreError, load_json_dir, save_json};
use crate::stats::Summary;
use crate::text::{MISSING, mean_interval};

/// Version of the [`SearchRecord`] format. Bumped whenever a field changes meaning.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// One probe as the search saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Cell test name (`<name>::opt::ctx_12k_t2_b512[_r2]`); the result file is
    /// `cells/<test name with :: → __>.json`.
    pub test_name: String,
    /// Search part.
    pub phase: Phase,
    /// Options probed.
    pub options: LoadOptions,
    /// Run of these options (1, 2, 3).
    pub run: u32,
    /// Prompt tokens filled.
    pub fill_tokens: u32,
    /// The gates the cell was judged against (absent in records written before they were kept).
    #[serde(default)]
    pub gates: Option<Gates>,
    /// `/api/version` of the server that ran the cell, when it answered.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Why the search probed this.
    pub why: String,
    /// The cell's verdict.
    pub verdict: Verdict,
    /// The cell's reasons.
    pub reasons: Vec<String>,
    /// Client TTFT summary (s).
    pub ttft_s: Option<Summary>,
    /// Client decode rate summary (tokens/s).
    pub decode_tps: Option<Summary>,
    /// Per-trial client decode rates of the valid measured trials (tokens/s).
    pub decode_samples_tps: Vec<f64>,
    /// Per-trial client TTFTs of the valid measured trials (s).
    pub ttft_samples_s: Vec<f64>,
    /// Stability score (0–1).
    pub stability: f64,
    /// Peak system RAM during the cell (percent).
    pub system_peak_pct: f64,
    /// Wall time of the cell (s).
    pub wall_s: f64,
    /// Whether the result was read from disk rather than run by this search.
    pub resumed: bool,
}

// Every field of a cell result the optimizer reads is read in this block.

/// Whether a cell result on disk measured nothing (SKIPPED: the server was away), so the search
/// probes it again rather than resuming from it.
pub(crate) fn measured_nothing(r: &CellResult) -> bool {
    r.verdict() == Verdict::Skipped
}

/// Why a cell could not run, from its result.
pub(crate) fn why_not_run(r: &CellResult) -> String {
    r.judgement.reasons().join("; ")
}

impl ProbeRecord {
    /// The probe record of a cell result.
    pub fn from_result(
        r: &CellResult,
        phase: Phase,
        run: u32,
        why: String,
        resumed: bool,
    ) -> ProbeRecord {
        ProbeRecord {
            test_name: r.cell.test_name.clone(),
            phase,
            options: options_of(&r.cell),
            run,
            fill_tokens: r.cell.fill_tokens,
            gates: Some(r.cell.gates.clone()),
            server_version: r.metadata.server_version.clone(),
            why,
            verdict: r.verdict(),
            reasons: r.judgement.reasons(),
            ttft_s: r.summaries.ttft_s.clone(),
            decode_tps: r.summaries.decode_tps.clone(),
            decode_samples_tps: r.valid_measured().filter_map(|t| t.decode_tps).collect(),
            ttft_samples_s: r.valid_measured().filter_map(|t| t.ttft_s).collect(),
            stability: r.stability.score,
            system_peak_pct: r.hardware.system_peak_pct,
            wall_s: r.wall_s,
            resumed,
        }
    }

    /// One line for progress and reports: verdict and figures.
    pub fn figures(&self) -> String {
        let s = |x: &Option<Summary>, unit: &str, digits: usize| match x {
            Some(s) => format!("{} {unit} n={}", mean_interval(Some(s), digits), s.n),
            None => MISSING.to_string(),
        };
        format!(
            "{}: TTFT {}, decode {}, stability {:.2}",
            self.verdict.label(),
            s(&self.ttft_s, "s", 2),
            s(&self.decode_tps, "tok/s", 1),
            self.stability
        )
    }
}

/// A grid point of the context search with its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Context (tokens).
    pub num_ctx: u32,
    /// The point's verdict over its runs (PASS, FAIL or MARGINAL; INVALID when every run was).
    pub verdict: Verdict,
    /// Test names of the runs.
    pub test_names: Vec<String>,
    /// Verdict of each run.
    pub verdicts: Vec<Verdict>,
    /// Mean TTFT over the valid trials of every run (s).
    pub ttft_mean_s: Option<f64>,
    /// Mean client decode rate over the valid trials of every run (tokens/s).
    pub decode_mean_tps: Option<f64>,
    /// Reasons of the runs that did not pass (deduplicated).
    pub reasons: Vec<String>,
}

/// Result of the context search.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContextOutcome {
    /// The largest grid point that passed.
    pub largest_pass: Option<Evidence>,
    /// The smallest grid point above it that did not pass (FAIL, MARGINAL or INVALID).
    pub smallest_fail: Option<Evidence>,
    /// Points that stayed MARGINAL after their repeats.
    pub marginal: Vec<u32>,
    /// Whether the boundary was found and confirmed within the budget.
    pub complete: bool,
}

/// One candidate setting of the thread or batch search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `num_thread` or `num_batch`.
    pub value: u32,
    /// Test names of its runs.
    pub test_names: Vec<String>,
    /// Whether every run passed (only passing settings can win).
    pub passed: bool,
    /// Mean of the compared metric over the pooled valid trials.
    pub mean: Option<f64>,
    /// Trials pooled.
    pub n: usize,
    /// Welch p-value against the best mean (absent for the best itself or with too few trials).
    pub p_vs_best: Option<f64>,
}

/// Result of the thread or batch search.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChoiceOutcome {
    /// The compared metric (`decode_tps` higher is better, `ttft_s` lower is better).
    pub metric: String,
    /// The winner.
    pub chosen: Option<u32>,
    /// The setting with the best mean (may differ from the winner when not significantly better).
    pub best_mean: Option<u32>,
    /// Every setting probed, ascending.
    pub candidates: Vec<Candidate>,
    /// Why the winner won.
    pub why: String,
    /// Whether the search ran to its end within the budget.
    pub complete: bool,
}

/// The recommended configuration of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Probe cell of the configuration (`<name>::opt::ctx_…`): the row to mark `[TARGET]`.
    pub test_name: String,
    /// The matrix cell with the same slug and context (`<name>::ctx_<K>k`), when there is one.
    pub matrix_test_name: Option<String>,
    /// Options.
    pub options: LoadOptions,
    /// Prompt tokens filled in the probe.
    pub fill_tokens: u32,
    /// Verdict of the probe.
    pub verdict: Verdict,
    /// Client TTFT (s).
    pub ttft_s: Option<Summary>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Summary>,
    /// Stability score.
    pub stability: f64,
    /// The gates the probe was judged against (absent in records written before they were kept).
    #[serde(default)]
    pub gates: Option<Gates>,
    /// `/api/version` of the server that ran the probe, when it answered.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Every probe cell behind the choice (context, threads, batch).
    pub evidence: Vec<String>,
}

/// Everything one model's search leaves behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// [`RECORD_FORMAT_VERSION`].
    pub format_version: u32,
    /// Slug.
    pub name: String,
    /// Model.
    pub model: String,
    /// Category of the slug's rows.
    pub category: String,
    /// Use cases of the slug's matrix rows, with the largest context each was asked at.
    pub use_cases: Vec<(String, u32)>,
    /// Harness version.
    pub harness_version: String,
    /// Host.
    pub host: Host,
    /// Server address.
    pub server: String,
    /// When the search started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// The settings it ran with.
    pub config: OptConfig,
    /// The context cap.
    pub cap: ContextCap,
    /// The context grid (tokens).
    pub grid: Vec<u32>,
    /// Thread search range, 1 to this.
    pub max_threads: u32,
    /// Every probe, in order.
    pub probes: Vec<ProbeRecord>,
    /// Context search result.
    pub context: ContextOutcome,
    /// Thread search result.
    pub threads: ChoiceOutcome,
    /// Batch search result.
    pub batch: ChoiceOutcome,
    /// The recommended configuration (absent when no context passed).
    pub recommended: Option<Recommendation>,
    /// Parts not searched and why (budget, no passing context, …).
    pub not_searched: Vec<String>,
    /// Why the search stopped early, when the server or model went away.
    pub stopped: Option<String>,
    /// Probes run by this search.
    pub probes_new: u32,
    /// Probes read back from disk.
    pub probes_resumed: u32,
    /// Sum of the probes' wall times (s): what the budget counts.
    pub probe_wall_s: f64,
    /// Wall time of this search (s), resumed probes not included.
    pub elapsed_s: f64,
}

/// Writes a record atomically; returns its path.
pub fn write_record(run: &RunDir, record: &SearchRecord) -> Result<PathBuf, StoreError> {
    let path = run.record_path(&record.name);
    save_json(&path, record)?;
    Ok(path)
}

/// Reads every search record of a run, sorted by name.
pub fn read_records(run: &RunDir) -> Result<Vec<SearchRecord>, StoreError> {
    read_records_in(&run.records_dir())
}

/// Reads every `*.json` search record in `dir`, sorted by name.
pub fn read_records_in(dir: &Path) -> Result<Vec<SearchRecord>, StoreError> {
    let mut out: Vec<SearchRecord> = load_json_dir(dir)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
