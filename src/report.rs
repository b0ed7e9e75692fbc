//! Reports: the whole matrix, rebuilt from the result files of a run directory.
//!
//! [`build`] is a pure function of the run directory ([`RunDir`]: the cell results, the
//! optimizer's search records and the sessions): it [`aggregate`]s the cell results into one
//! [`Report`] and hands it to one [`ReportWriter`] per format — [`JsonReport`] for bots,
//! [`CsvReport`] for spreadsheets, [`MarkdownReport`] for people, [`HtmlReport`] for people with
//! a browser (charts, one self-contained page) — and, when the run has
//! searches, rebuilds the use-case recommendations, which weigh the sessions
//! ([`crate::optimize::outputs::write_recommendations`]). It also writes the per-trial figures
//! in the Go benchmark format ([`bench`], `bench.txt`) and, when the run names a baseline
//! (`baseline.json`, [`crate::baseline`]), the comparison with it ([`regression`]). Each file lands atomically in
//! `<run>/comparative_analysis/`. Nothing here reads clocks, hostnames or other in-memory state,
//! so the same cells always give the same bytes (which is what the goldens rely on), and reports
//! work the same under `cargo test` and under nextest's process-per-test model.

pub mod bench;
pub mod charts;
mod csv_report;
mod definitions;
pub mod html;
mod json_report;
mod markdown;
pub mod regression;

use std::path::PathBuf;

use serde::Serialize;

use crate::gates::{Gate, Judgement};
use crate::output::{self, Output, OutputFile, WriteError};
use crate::results::{
    CellResult, CellSpec, Fidelity, Host, StabilityBreakdown, StopReason, Verdict,
};
use crate::rundir::{RunDir, StoreError, Unreadable, read_json_dir};
use crate::stats::Summary;

pub use self::csv_report::{COLUMNS as CSV_COLUMNS, CsvReport};
pub use self::definitions::{Definition, definitions};
pub use self::html::{HtmlInput, HtmlReport};
pub use self::json_report::JsonReport;
pub use self::markdown::MarkdownReport;

/// Version of the report format (JSON keys, CSV columns). Bumped whenever one changes meaning.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// Errors of the report module. Each carries the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run directory does not exist or is not a directory.
    #[error("run directory {path} does not exist or is not a directory")]
    NoRunDir {
        /// The path given.
        path: PathBuf,
    },
    /// The cell results of the run could not be read.
    #[error("failed to read the cell results of run {run_dir}: {source}")]
    ReadCells {
        /// The run directory.
        run_dir: PathBuf,
        /// The cause (carries the file that failed).
        source: StoreError,
    },
    /// A report file could not be written.
    #[error("failed to write report {0}")]
    Write(#[from] WriteError),
}

/// One output format: a file name and a pure rendering of the [`Report`]. Every report writer is
/// an [`Output`] of the report, one file under `comparative_analysis/`.
pub trait ReportWriter {
    /// File name inside `<run>/comparative_analysis/`, e.g. `performance_matrix.md`.
    fn file_name(&self) -> &'static str;
    /// The complete file content. Deterministic: the same report gives the same bytes.
    fn text(&self, report: &Report) -> String;
}

impl<W: ReportWriter> Output<Report> for W {
    fn render(&self, report: &Report) -> Vec<OutputFile> {
        vec![OutputFile::new(
            RunDir::relative().report_path(self.file_name()),
            self.text(report),
        )]
    }
}

/// Every writer [`build`] runs, in the order it writes them (JSON, CSV, Markdown).
pub fn writers() -> [&'static dyn Output<Report>; 3] {
    [&JsonReport, &CsvReport, &MarkdownReport]
}

/// Rebuilds every report file of the run from its cell results (and, when the run has search
/// records, `use_case_recommendations.md` from them and the sessions); returns the paths
/// written.
///
/// A run directory without cells is not an error: the reports then say that there are no cells.
/// A file of `cells/` or of the optimizer's records that cannot be read (a foreign or old-format
/// file) does not stop the reports: it is left out and listed in [`Report::files_not_read`]
/// with the reason, which every report shows.
pub fn build(run: &RunDir) -> Result<Vec<PathBuf>, ReportError> {
    if !run.root().is_dir() {
        return Err(ReportError::NoRunDir {
            path: run.root().to_path_buf(),
        });
    }
    let read_error = |source| ReportError::ReadCells {
        run_dir: run.root().to_path_buf(),
        source,
    };
    let cells = run.read_cells_lenient().map_err(read_error)?;
    let mut report = aggregate(&cells.items);
    // Configurations the optimizer recommends (`cargo test --test optimize`) are marked.
    let records = read_json_dir::<crate::optimize::record::SearchRecord>(&run.records_dir())
        .map_err(read_error)?;
    let targets: Vec<String> = records
        .items
        .iter()
        .filter_map(|r| r.recommended.as_ref())
        .flat_map(|rec| std::iter::once(rec.test_name.clone()).chain(rec.matrix_test_name.clone()))
        .collect();
    mark_targets(&mut report, &targets);
    // Phase 2: the sessions of the run (src/agentic), by model.
    let (sessions, sessions_unreadable) = crate::agentic::report::read(run).map_err(read_error)?;
    report.phase2 = sessions.iter().map(Phase2::of).collect();
    report
        .phase2
        .sort_by(|a, b| (&a.model, &a.test_name).cmp(&(&b.model, &b.test_name)));
    let quality_results =
        read_json_dir::<crate::quality::QualityResult>(&run.quality_dir()).map_err(read_error)?;
    let rag_results =
        read_json_dir::<crate::quality::rag::RagResult>(&run.rag_dir()).map_err(read_error)?;
    let probed = cells.items.iter().any(|c| !c.probes.is_empty());
    let quality = (!quality_results.items.is_empty() || !rag_results.items.is_empty() || probed)
        .then(|| {
            crate::quality::report::of(&quality_results.items, &rag_results.items, &cells.items)
        });
    if let Some(q) = &quality {
        attach_quality(&mut report, q);
    }
    report.files_not_read = cells
        .unreadable
        .into_iter()
        .chain(records.unreadable)
        .chain(sessions_unreadable)
        .chain(quality_results.unreadable)
        .chain(rag_results.unreadable)
        .map(|u| Unreadable {
            // Relative to the run directory, so the same files give the same bytes anywhere.
            path: u
                .path
                .strip_prefix(run.root())
                .map(|p| p.to_path_buf())
                .unwrap_or(u.path),
            why: u.why,
        })
        .collect();
    let mut written = output::write_all(run.root(), &writers(), &report)?;
    // The HTML page draws the sessions' curves too.
    written.extend(output::write_all(
        run.root(),
        &[&HtmlReport],
        &HtmlInput {
            report: &report,
            sessions: &sessions,
            quality: quality.as_ref(),
        },
    )?);
    // The quality sweeps (`cargo test --test quality`), when the run has any.
    if let Some(q) = &quality {
        written.extend(output::write_all(
            run.root(),
            &crate::quality::report::writers(),
            q,
        )?);
    }
    // The per-trial figures for benchstat, and, when the run names a baseline, the comparison.
    written.extend(output::write_all(
        run.root(),
        &[&bench::BenchFormat],
        &cells.items[..],
    )?);
    if let Some(regression) = regression::of_run(run, &cells.items) {
        written.extend(output::write_all(
            run.root(),
            &[&regression::RegressionWriter],
            &regression,
        )?);
    }
    // The recommendations weigh the sessions: rebuilt with the reports whenever the run has
    // searches, so a session that ends after them still counts.
    if !records.items.is_empty() {
        written.extend(crate::optimize::outputs::write_recommendations(
            run,
            &records.items,
            &sessions,
            quality.as_ref().map_or(&[][..], |q| &q.models[..]),
        )?);
    }
    Ok(written)
}

/// Marks the rows whose test names are in `targets` as recommended configurations.
pub fn mark_targets(report: &mut Report, targets: &[String]) {
    for row in &mut report.rows {
        row.target = targets.contains(&row.cell.test_name);
    }
}

/// Whether a test name is an optimizer probe (`<name>::opt::…`) rather than a matrix cell.
pub fn is_probe(test_name: &str) -> bool {
    test_name.contains("::opt::")
}

/// The whole matrix: one [`Row`] per cell plus what the rows share. Serialized as the JSON report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// Number of cell result files the report was built from.
    pub generated_from_cells: usize,
    /// Cells per verdict.
    pub verdict_counts: VerdictCounts,
    /// One row per cell, ordered by model, then `num_ctx`, then test name.
    pub rows: Vec<Row>,
    /// Distinct hosts the cells ran on (cells that recorded no host facts are left out).
    pub hosts: Vec<Host>,
    /// Distinct servers (address and version) the cells talked to.
    pub servers: Vec<Server>,
    /// Distinct harness versions that wrote the cells.
    pub harness_versions: Vec<String>,
    /// Distinct run identifiers recorded in the cells.
    pub run_ids: Vec<String>,
    /// Earliest cell start recorded (RFC 3339, UTC, as in the cells).
    pub first_started_at: Option<String>,
    /// Latest cell start recorded.
    pub last_started_at: Option<String>,
    /// Facts per model, ordered by model.
    pub models: Vec<ModelInfo>,
    /// What every metric means (the "Metric definitions" section of the Markdown).
    pub definitions: Vec<Definition>,
    /// Files of the run directory the report could not read and left out (paths relative to
    /// the run directory), with why: a foreign or old-format file in `cells/` or among the
    /// optimizer's records. Absent from the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_not_read: Vec<Unreadable>,
    /// Phase 2: the run's sustained sessions (`cargo test --test agentic`), one per session
    /// test, by model; the Markdown's summary gains a "Phase 2" column per model when there are
    /// any. Absent from the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase2: Vec<Phase2>,
}

/// One session test of the run, as the performance matrix shows it (details in
/// `agentic_sessions.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase2 {
    /// The model.
    pub model: String,
    /// The session test.
    pub test_name: String,
    /// `coding`, `rag` or `chat`.
    pub workload: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Wall time (s).
    pub wall_s: f64,
    /// The session's verdict.
    pub verdict: Verdict,
    /// Share of turns that succeeded.
    pub success_rate: Option<f64>,
    /// Share of answers with the expected fact.
    pub accuracy: Option<f64>,
    /// Mean prompt-cache reuse.
    pub cache_reuse: Option<f64>,
    /// TTFT seconds per 1K tokens of history.
    pub ttft_s_per_1k: Option<f64>,
    /// RSS growth, % of the loaded size.
    pub rss_growth_pct: Option<f64>,
}

impl Phase2 {
    /// From a session result.
    pub fn of(r: &crate::agentic::SessionResult) -> Phase2 {
        let a = &r.analysis;
        Phase2 {
            model: r.session.model.clone(),
            test_name: r.session.test_name.clone(),
            workload: r.session.workload.label().to_string(),
            num_ctx: r.session.num_ctx,
            wall_s: r.wall_s,
            verdict: r.verdict(),
            success_rate: a.success_rate,
            accuracy: a.accuracy,
            cache_reuse: a.cache_reuse,
            ttft_s_per_1k: a.ttft_per_1k.as_ref().map(|l| l.slope),
            rss_growth_pct: a.rss.growth_pct,
        }
    }
}

/// Number of cells per verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct VerdictCounts {
    /// All cells.
    pub total: usize,
    /// PASS cells.
    pub pass: usize,
    /// MARGINAL cells.
    pub marginal: usize,
    /// FAIL cells.
    pub fail: usize,
    /// INVALID cells.
    pub invalid: usize,
    /// SKIPPED cells.
    pub skipped: usize,
    /// REGRESSED cells (against the run's baseline); absent from the JSON when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub regressed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl VerdictCounts {
    /// Counts the verdicts of `rows`.
    fn of(rows: &[Row]) -> Self {
        let mut c = VerdictCounts {
            total: rows.len(),
            ..Default::default()
        };
        for row in rows {
            match row.verdict() {
                Verdict::Pass => c.pass += 1,
                Verdict::Marginal => c.marginal += 1,
                Verdict::Fail => c.fail += 1,
                Verdict::Invalid => c.invalid += 1,
                Verdict::Skipped => c.skipped += 1,
                Verdict::Regressed => c.regressed += 1,
            }
        }
        c
    }
}

/// One cell of the matrix, machine-friendly: the cell as specified, its judgement, and raw
/// numbers in the units their names say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The cell as specified (test name, model, options, gates, use case, …).
    #[serde(flatten)]
    pub cell: CellSpec,
    /// Whether the optimizer recommends this configuration (`[TARGET]`).
    pub target: bool,
    /// The verdict and what it rests on.
    #[serde(flatten)]
    pub judgement: Judgement,
    /// The judgement in words ([`Judgement::reasons`]), for people reading the JSON.
    pub reasons: Vec<String>,
    /// The gates that made a FAIL cell fail.
    pub failed_gates: Vec<Gate>,
    /// The use case judged by the verdict, e.g. `❌ complex refactoring (fails TTFT)`.
    pub use_case_fit: String,
    /// Client TTFT (s) of the valid measured trials.
    pub ttft_s: Option<Summary>,
    /// Client TTFT to any content (s).
    pub ttft_any_s: Option<Summary>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Summary>,
    /// Server decode rate (tokens/s).
    pub decode_tps_server: Option<Summary>,
    /// Server prefill rate (tokens/s).
    pub prefill_tps_server: Option<Summary>,
    /// Request start → `done:true` (s).
    pub e2e_s: Option<Summary>,
    /// Peak minus baseline RSS of the server's process tree (bytes); absent when not sampled.
    pub ram_delta_bytes: Option<i64>,
    /// Peak RSS of the server's process tree (bytes); absent when not sampled.
    pub peak_rss_bytes: Option<u64>,
    /// Anonymous part of the peak RSS (bytes), when the OS tells.
    pub peak_anon_bytes: Option<u64>,
    /// File-backed part of the peak RSS (bytes), when the OS tells.
    pub peak_file_bytes: Option<u64>,
    /// Peak system memory in use (percent of total); absent when not sampled.
    pub system_peak_pct: Option<f64>,
    /// Notes of the hardware sampler.
    pub hardware_notes: Vec<String>,
    /// Stability score and components; absent when no measured trial was attempted.
    pub stability: Option<StabilityBreakdown>,
    /// Why the trial loop stopped.
    pub stop_reason: StopReason,
    /// Load time of the model with the cell's options (s).
    pub load_s: Option<f64>,
    /// Wall time of the whole cell (s).
    pub wall_s: f64,
    /// When the cell started (RFC 3339, as recorded in the cell).
    pub started_at: String,
    /// Request options sent on every request of the cell.
    pub options_sent: serde_json::Value,
    /// Whether `think: false` was sent.
    pub think_false_sent: bool,
    /// Whether `truncate: false` was sent.
    pub truncate_false_sent: bool,
    /// Client/server and harness/reference ratios, when measured.
    pub fidelity: Vec<Fidelity>,
    /// The cell's performance prediction and its errors ([`crate::predict`]); absent when the
    /// cell has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::predict::CellPrediction>,
    /// The long-context quality of the cell ([`crate::quality`]): an accuracy (its model's
    /// sweep at the cell's `num_ctx`, else the cell's own retrieval probes) and the model's
    /// effective context when the run swept it. Absent when the run says neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<RowQuality>,
}

/// What the run says of a cell's long-context quality ([`Row::quality`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowQuality {
    /// The accuracy shown for the cell; `None` when neither a sweep at its context nor its own
    /// probes answered.
    pub accuracy: Option<RowAccuracy>,
    /// The model's effective context by its sweeps; `None` when the run did not sweep it.
    pub sweep: Option<SweptContext>,
}

/// An accuracy shown for a cell and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowAccuracy {
    /// Its source.
    pub from: AccuracyFrom,
    /// The test it comes from: the sweep (`<name>::quality_<K>k`) or the cell itself.
    pub test_name: String,
    /// Right answers.
    pub correct: usize,
    /// Probes answered.
    pub answered: usize,
    /// `correct / answered`.
    pub accuracy: Option<f64>,
}

/// Where a cell's accuracy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyFrom {
    /// The model's quality sweep at the cell's `num_ctx` (a deep fill).
    Sweep,
    /// The cell's own retrieval probes, at the cell's fill ([`crate::quality::cell`]).
    CellProbe,
}

/// What a model's quality sweeps say of its effective context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweptContext {
    /// The effective context (filled tokens); `None` when no fill reached the threshold.
    pub effective_context_tokens: Option<f64>,
    /// The `num_ctx` at which it was measured: the largest context verified to keep accuracy.
    pub effective_num_ctx: Option<u32>,
    /// The threshold of the effective context.
    pub accuracy_min: f64,
}

impl SweptContext {
    /// Whether `num_ctx` is beyond what the sweeps verified: larger than the context of the
    /// effective context, or no fill reached the threshold at all.
    pub fn beyond_effective(&self, num_ctx: u32) -> bool {
        self.effective_num_ctx.is_none_or(|c| num_ctx > c)
    }
}

/// Gives each row its quality from the run's quality report: the accuracy of its model's sweep
/// at the row's `num_ctx`, else of the row's own probes, and its model's effective context.
pub fn attach_quality(report: &mut Report, q: &crate::quality::report::QualityReport) {
    for row in &mut report.rows {
        let model = q
            .models
            .iter()
            .find(|m| crate::backend::same_model(&m.model, &row.cell.model));
        let swept = model
            .and_then(|m| m.tests.iter().find(|t| t.num_ctx == row.cell.num_ctx))
            .filter(|t| t.answered > 0)
            .map(|t| RowAccuracy {
                from: AccuracyFrom::Sweep,
                test_name: t.test_name.clone(),
                correct: t.correct,
                answered: t.answered,
                accuracy: t.accuracy,
            });
        let probed = || {
            q.cells
                .iter()
                .find(|c| c.test_name == row.cell.test_name && c.answered > 0)
                .map(|c| RowAccuracy {
                    from: AccuracyFrom::CellProbe,
                    test_name: c.test_name.clone(),
                    correct: c.correct,
                    answered: c.answered,
                    accuracy: c.accuracy,
                })
        };
        let quality = RowQuality {
            accuracy: swept.or_else(probed),
            sweep: model.map(|m| SweptContext {
                effective_context_tokens: m.effective_context_tokens,
                effective_num_ctx: m.effective_num_ctx,
                accuracy_min: m.accuracy_min,
            }),
        };
        row.quality = (quality.accuracy.is_some() || quality.sweep.is_some()).then_some(quality);
    }
}

impl Row {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }
}

/// A server the cells talked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Address.
    pub address: String,
    /// `/api/version`, when it answered.
    pub version: Option<String>,
}

/// Facts of one model, merged over its cells (first value recorded, in row order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Model as the server knows it.
    pub model: String,
    /// Distinct digests seen (more than one means the model changed during the run).
    pub digests: Vec<String>,
    /// Quantization.
    pub quantization: Option<String>,
    /// Parameter size.
    pub parameter_size: Option<String>,
    /// Model family.
    pub family: Option<String>,
    /// Trained context (tokens).
    pub trained_context: Option<u64>,
    /// Calibrated characters per token.
    pub chars_per_token: Option<f64>,
}

/// Builds the aggregate model from cell results (pure; the input order does not matter).
pub fn aggregate(cells: &[CellResult]) -> Report {
    let mut sorted: Vec<&CellResult> = cells.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.cell.model, a.cell.num_ctx, &a.cell.test_name).cmp(&(
            &b.cell.model,
            b.cell.num_ctx,
            &b.cell.test_name,
        ))
    });
    let rows: Vec<Row> = sorted.iter().map(|c| row(c)).collect();

    let mut hosts: Vec<Host> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    let mut harness_versions: Vec<String> = Vec::new();
    let mut run_ids: Vec<String> = Vec::new();
    let mut models: Vec<ModelInfo> = Vec::new();
    for c in &sorted {
        let m = &c.metadata;
        let host = m.host.clone();
        let has_host = !(host.cpu_model.is_empty() && host.ram_total_bytes == 0);
        if has_host && !hosts.contains(&host) {
            hosts.push(host);
        }
        if !m.server.is_empty() {
            let server = Server {
                address: m.server.clone(),
                version: m.server_version.clone(),
            };
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        if !m.harness_version.is_empty() && !harness_versions.contains(&m.harness_version) {
            harness_versions.push(m.harness_version.clone());
        }
        if !m.run_id.is_empty() && !run_ids.contains(&m.run_id) {
            run_ids.push(m.run_id.clone());
        }
        let info = match models.iter_mut().find(|i| i.model == c.cell.model) {
            Some(info) => info,
            None => {
                models.push(ModelInfo {
                    model: c.cell.model.clone(),
                    digests: Vec::new(),
                    quantization: None,
                    parameter_size: None,
                    family: None,
                    trained_context: None,
                    chars_per_token: None,
                });
                models.last_mut().expect("just pushed")
            }
        };
        if let Some(d) = &m.model_digest
            && !info.digests.contains(d)
        {
            info.digests.push(d.clone());
        }
        info.quantization = info.quantization.take().or_else(|| m.quantization.clone());
        info.parameter_size = info
            .parameter_size
            .take()
            .or_else(|| m.parameter_size.clone());
        info.family = info.family.take().or_else(|| m.family.clone());
        info.trained_context = info.trained_context.or(m.trained_context);
        info.chars_per_token = info.chars_per_token.or(m.chars_per_token);
    }
    // A server seen only without a version (e.g. by a skipped cell) adds nothing when the same
    // address also answered with one.
    let answered: Vec<String> = servers
        .iter()
        .filter(|s| s.version.is_some())
        .map(|s| s.address.clone())
        .collect();
    servers.retain(|s| s.version.is_some() || !answered.contains(&s.address));

    // RFC 3339 UTC timestamps order as strings.
    let starts = || {
        cells
            .iter()
            .map(|c| c.metadata.started_at.as_str())
            .filter(|s| !s.is_empty())
    };
    let first_started_at = starts().min().map(str::to_string);
    let last_started_at = starts().max().map(str::to_string);

    Report {
        format_version: REPORT_FORMAT_VERSION,
        generated_from_cells: cells.len(),
        verdict_counts: VerdictCounts::of(&rows),
        rows,
        hosts,
        servers,
        harness_versions,
        run_ids,
        first_started_at,
        last_started_at,
        models,
        definitions: definitions(),
        files_not_read: Vec::new(),
        phase2: Vec::new(),
    }
}

/// One row from one cell.
fn row(c: &CellResult) -> Row {
    let hw = &c.hardware;
    let sampled = hw.samples > 0;
    let failed_gates = c.judgement.failed_gates();
    let s = &c.summaries;
    Row {
        cell: c.cell.clone(),
        target: false,
        judgement: c.judgement.clone(),
        reasons: c.judgement.reasons(),
        use_case_fit: use_case_fit(c.verdict(), &c.cell.use_case, &failed_gates),
        failed_gates,
        ttft_s: s.ttft_s.clone(),
        ttft_any_s: s.ttft_any_s.clone(),
        decode_tps: s.decode_tps.clone(),
        decode_tps_server: s.decode_tps_server.clone(),
        prefill_tps_server: s.prefill_tps_server.clone(),
        e2e_s: s.e2e_s.clone(),
        ram_delta_bytes: sampled.then_some(hw.rss_delta_bytes),
        peak_rss_bytes: sampled.then_some(hw.peak.rss_bytes),
        peak_anon_bytes: if sampled { hw.peak.anon_bytes } else { None },
        peak_file_bytes: if sampled { hw.peak.file_bytes } else { None },
        system_peak_pct: sampled.then_some(hw.system_peak_pct),
        hardware_notes: hw.notes.clone(),
        stability: (c.verdict() != Verdict::Skipped && c.judgement.attempted_trials > 0)
            .then(|| c.stability.clone()),
        stop_reason: c.stop_reason,
        load_s: c.load_s,
        wall_s: c.wall_s,
        started_at: c.metadata.started_at.clone(),
        options_sent: c.metadata.options_sent.clone(),
        think_false_sent: c.metadata.think_false_sent,
        truncate_false_sent: c.metadata.truncate_false_sent,
        fidelity: c.fidelity.clone(),
        prediction: c.prediction.clone(),
        quality: None,
    }
}

/// The use case judged by the verdict: `✅ complex refactoring`, `⚠️ … (marginal)`,
/// `❌ … (fails TTFT, tok/s)`, `— (invalid)`, `— (not run)`.
pub fn use_case_fit(verdict: Verdict, use_case: &str, failed: &[Gate]) -> String {
    let use_case = use_case.trim();
    let with = |mark: &str, note: &str| match (use_case.is_empty(), note.is_empty()) {
        (true, true) => format!("{mark} {}", verdict.label().to_lowercase()),
        (true, false) => format!("{mark} {note}"),
        (false, true) => format!("{mark} {use_case}"),
        (false, false) => format!("{mark} {use_case} ({note})"),
    };
    match verdict {
        Verdict::Pass => with("✅", ""),
        Verdict::Marginal => with("⚠️", "marginal"),
        Verdict::Fail if failed.is_empty() => with("❌", "fails"),
        Verdict::Fail => {
            let labels: Vec<&str> = failed.iter().map(|g| g.label()).collect();
            with("❌", &format!("fails {}", labels.join(", ")))
        }
        Verdict::Invalid => "— (invalid)".to_string(),
        Verdict::Skipped => "— (not run)".to_string(),
        Verdict::Regressed => with("📉", "regressed against the baseline"),
    }
}

#[cfg(test)]
mod tests;
