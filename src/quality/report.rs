//! `comparative_analysis/quality.{md,csv,json}`: written by [`crate::report::build`] from the
//! quality results of the run directory (`quality/*.json`), per model: the depth × context
//! accuracy table (✓/✗ counts per depth, with the accuracy and its Wilson interval), the TTFT
//! measured beside it, and the model's effective context over its tests (RULER: the largest
//! filled length at which accuracy stays at or above `accuracy_min`, every shorter one too);
//! the RAG-against-direct tests (`rag/*.json`, [`super::rag`]), per test and approach (also as
//! `rag_vs_direct.csv`); and the retrieval probes of the `context_scaling` cells
//! (`cells/*.json`, [`super::cell`]), per cell and depth.
//!
//! A pure function of the results, like every report: the same results give the same bytes.

use serde::Serialize;

use super::rag::{ArmAnalysis, Comparison, RagResult};
use super::{DepthScore, QualityResult};
use crate::output::{Output, OutputFile};
use crate::results::{CellResult, Verdict};
use crate::rundir::RunDir;
use crate::text::{MISSING, ctx_label, fixed, out};

/// Version of the quality report's format.
pub const FORMAT_VERSION: u32 = 1;

/// The whole quality report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// One entry per model, by model.
    pub models: Vec<ModelQuality>,
    /// The RAG-against-direct tests, by model and context.
    pub rag: Vec<RagRow>,
    /// The retrieval probes of the cells that carry one, by model and context.
    pub cells: Vec<CellProbeRow>,
}

/// The retrieval probes of one `context_scaling` cell ([`super::cell`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellProbeRow {
    /// The cell's test name, `<name>::ctx_<K>k`.
    pub test_name: String,
    /// The model.
    pub model: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// The cell's fill (tokens of document, facts included).
    pub fill_tokens: u32,
    /// Mean prompt tokens the server evaluated for the probes.
    pub filled_tokens: Option<f64>,
    /// The probe kind.
    pub probe: String,
    /// Right answers.
    pub correct: usize,
    /// Probes answered (a failed or cut probe is not).
    pub answered: usize,
    /// Probes asked.
    pub asked: usize,
    /// `correct / answered`.
    pub accuracy: Option<f64>,
    /// Its 95 % Wilson interval.
    pub accuracy_ci: Option<(f64, f64)>,
    /// Per depth.
    pub depths: Vec<DepthScore>,
    /// Mean client TTFT of the probes (s): the probe's own figure, not the cell's.
    pub ttft_s: Option<f64>,
    /// The cell's verdict (on its speed trials; the probe is judged by no gate).
    pub cell_verdict: Verdict,
}

impl CellProbeRow {
    /// The row of a cell's probes; `None` when the cell has no probe or asked none.
    pub fn of(r: &CellResult) -> Option<CellProbeRow> {
        let probe = r.cell.probe.as_ref()?;
        if r.probes.is_empty() {
            return None;
        }
        let a = super::analyse(&r.probes, &probe.depths, r.cell.fill_tokens);
        Some(CellProbeRow {
            test_name: r.cell.test_name.clone(),
            model: r.cell.model.clone(),
            num_ctx: r.cell.num_ctx,
            fill_tokens: r.cell.fill_tokens,
            filled_tokens: a.filled_tokens,
            probe: probe.kind.label().to_string(),
            correct: a.correct,
            answered: a.answered,
            asked: a.asked,
            accuracy: a.accuracy,
            accuracy_ci: a.accuracy_ci,
            depths: a.depths,
            ttft_s: a.ttft_s.as_ref().map(|s| s.mean),
            cell_verdict: r.verdict(),
        })
    }
}

/// One RAG-against-direct test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RagRow {
    /// Test name, `<name>::rag_vs_direct_<K>k`.
    pub test_name: String,
    /// The model.
    pub model: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Documents in the direct prompt (the retrievers chose from these).
    pub documents: usize,
    /// Their tokens, by the calibrated ratio.
    pub documents_tokens: Option<f64>,
    /// Passages in a RAG prompt.
    pub top_k: u32,
    /// The verdict.
    pub verdict: Verdict,
    /// Per approach.
    pub arms: Vec<ArmAnalysis>,
    /// Which approach wins.
    pub comparison: Option<Comparison>,
    /// The test's reasons, for people.
    pub reasons: Vec<String>,
}

/// One model's sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelQuality {
    /// The model.
    pub model: String,
    /// The accuracy threshold of its effective context (the smallest `accuracy_min` of its
    /// tests, which is what every test of it was held to at least).
    pub accuracy_min: f64,
    /// Its effective context (filled tokens), when even the shortest fill reached the threshold.
    pub effective_context_tokens: Option<f64>,
    /// The `num_ctx` of the test at which the effective context was measured: the largest
    /// context verified to keep accuracy.
    pub effective_num_ctx: Option<u32>,
    /// Probes answered over all its tests.
    pub probes_answered: usize,
    /// Its tests, by context.
    pub tests: Vec<QualityRow>,
}

/// One quality test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityRow {
    /// Test name, `<name>::quality_<K>k`.
    pub test_name: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Mean prompt tokens the server evaluated for the probes.
    pub filled_tokens: Option<f64>,
    /// The probe kind.
    pub probe: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Right answers, probes answered.
    pub correct: usize,
    /// Probes answered.
    pub answered: usize,
    /// Accuracy over every depth.
    pub accuracy: Option<f64>,
    /// Its 95 % Wilson interval.
    pub accuracy_ci: Option<(f64, f64)>,
    /// Per depth.
    pub depths: Vec<DepthScore>,
    /// Mean client TTFT of the probes (s).
    pub ttft_s: Option<f64>,
    /// The test's reasons, for people.
    pub reasons: Vec<String>,
}

/// The report of the sweeps' `results`, the RAG tests' `rag` and the probes of the `cells`
/// (any order).
pub fn of(results: &[QualityResult], rag: &[RagResult], cells: &[CellResult]) -> QualityReport {
    let mut sorted: Vec<&QualityResult> = results.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.spec.model, a.spec.num_ctx, &a.spec.test_name).cmp(&(
            &b.spec.model,
            b.spec.num_ctx,
            &b.spec.test_name,
        ))
    });
    let mut models: Vec<ModelQuality> = Vec::new();
    for r in sorted {
        let row = QualityRow {
            test_name: r.spec.test_name.clone(),
            num_ctx: r.spec.num_ctx,
            filled_tokens: r.analysis.filled_tokens,
            probe: r.spec.probe.label().to_string(),
            verdict: r.verdict(),
            correct: r.analysis.correct,
            answered: r.analysis.answered,
            accuracy: r.analysis.accuracy,
            accuracy_ci: r.analysis.accuracy_ci,
            depths: r.analysis.depths.clone(),
            ttft_s: r.analysis.ttft_s.as_ref().map(|s| s.mean),
            reasons: r.judgement.reasons(),
        };
        match models.iter_mut().find(|m| m.model == r.spec.model) {
            Some(m) => {
                m.accuracy_min = m.accuracy_min.min(r.spec.gates.accuracy_min);
                m.tests.push(row);
            }
            None => models.push(ModelQuality {
                model: r.spec.model.clone(),
                accuracy_min: r.spec.gates.accuracy_min,
                effective_context_tokens: None,
                effective_num_ctx: None,
                probes_answered: 0,
                tests: vec![row],
            }),
        }
    }
    for m in &mut models {
        let points: Vec<super::FillPoint> = results
            .iter()
            .filter(|r| r.spec.model == m.model)
            .filter_map(QualityResult::fill_point)
            .collect();
        let best = super::effective_point(&points, m.accuracy_min);
        m.effective_context_tokens = best.map(|p| p.filled_tokens);
        m.effective_num_ctx = best.map(|p| p.num_ctx);
        m.probes_answered = m.tests.iter().map(|t| t.answered).sum();
    }
    let mut rag_rows: Vec<RagRow> = rag
        .iter()
        .map(|r| RagRow {
            test_name: r.spec.test_name.clone(),
            model: r.spec.model.clone(),
            num_ctx: r.spec.num_ctx,
            documents: r.documents,
            documents_tokens: r.documents_tokens,
            top_k: r.spec.top_k,
            verdict: r.verdict(),
            arms: r.analysis.arms.clone(),
            comparison: r.analysis.comparison.clone(),
            reasons: r.judgement.reasons(),
        })
        .collect();
    rag_rows.sort_by(|a, b| {
        (&a.model, a.num_ctx, &a.test_name).cmp(&(&b.model, b.num_ctx, &b.test_name))
    });
    let mut cell_rows: Vec<CellProbeRow> = cells.iter().filter_map(CellProbeRow::of).collect();
    cell_rows.sort_by(|a, b| {
        (&a.model, a.num_ctx, &a.test_name).cmp(&(&b.model, b.num_ctx, &b.test_name))
    });
    QualityReport {
        format_version: FORMAT_VERSION,
        models,
        rag: rag_rows,
        cells: cell_rows,
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or(MISSING.to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn interval(ci: Option<(f64, f64)>) -> String {
    ci.map_or(String::new(), |(lo, hi)| {
        format!(" [{:.0}–{:.0}%]", lo * 100.0, hi * 100.0)
    })
}

fn tokens(x: Option<f64>) -> String {
    x.map_or(MISSING.to_string(), |t| format!("{t:.0}"))
}

/// The depths shown as columns: every depth any test of the model asked at, in order.
pub fn depth_columns(m: &ModelQuality) -> Vec<f64> {
    depths_of(m.tests.iter().map(|t| t.depths.as_slice()))
}

/// Every depth of `scores`, ascending, once.
fn depths_of<'a>(scores: impl Iterator<Item = &'a [DepthScore]>) -> Vec<f64> {
    let mut d: Vec<f64> = scores.flatten().map(|s| s.depth).collect();
    d.sort_by(f64::total_cmp);
    d.dedup();
    d
}

/// `quality.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QualityMarkdown;

impl Output<QualityReport> for QualityMarkdown {
    fn render(&self, r: &QualityReport) -> Vec<OutputFile> {
        vec![OutputFile::new(
            RunDir::relative().report_path("quality.md"),
            markdown(r),
        )]
    }
}

/// The Markdown text.
pub fn markdown(r: &QualityReport) -> String {
    let mut o = String::new();
    out!(o, "# Long-context quality");
    out!(o);
    out!(
        o,
        "Retrieval probes (facts placed at a depth of a deep fill, asked for at the end; \
         `cargo test --test quality`). Each cell: ✓ right / ✗ wrong answers at that depth, and \
         the accuracy. The effective context is the largest filled length at which accuracy \
         stays at or above the threshold, every shorter fill too."
    );
    out!(o);
    for m in &r.models {
        out!(o, "## {}", m.model);
        out!(o);
        out!(
            o,
            "Effective context: **{}** (accuracy ≥ {}), on {} probes answered.",
            m.effective_context_tokens.map_or_else(
                || "none (the shortest fill already falls short)".to_string(),
                |t| format!("{t:.0} tokens")
            ),
            fixed(m.accuracy_min, 2),
            m.probes_answered
        );
        out!(o);
        let depths = depth_columns(m);
        let mut header = "| Test | Context | Filled tokens | Probe |".to_string();
        let mut rule = "|---|---|---|---|".to_string();
        for d in &depths {
            header.push_str(&format!(" depth {d} |"));
            rule.push_str("---|");
        }
        header.push_str(" Accuracy [95 % CI] | TTFT s | Verdict |");
        rule.push_str("---|---|---|");
        out!(o, "{header}");
        out!(o, "{rule}");
        for t in &m.tests {
            let mut line = format!(
                "| `{}` | {} | {} | {} |",
                t.test_name,
                ctx_label(t.num_ctx),
                tokens(t.filled_tokens),
                t.probe
            );
            for d in &depths {
                line.push_str(&format!(" {} |", depth_cell(&t.depths, *d)));
            }
            line.push_str(&format!(
                " {} ({}/{}) | {} | {} |",
                accuracy_cell(t.accuracy, t.accuracy_ci),
                t.correct,
                t.answered,
                seconds(t.ttft_s),
                t.verdict.label()
            ));
            out!(o, "{line}");
        }
        out!(o);
    }
    if r.models.is_empty() {
        out!(o, "No quality sweeps in this run (`quality/*.json`).");
        out!(o);
    }
    rag_markdown(&mut o, &r.rag);
    cells_markdown(&mut o, &r.cells);
    o
}

/// The depths of the cells' probes, every one any cell asked at, in order.
pub fn cell_depth_columns(rows: &[CellProbeRow]) -> Vec<f64> {
    depths_of(rows.iter().map(|t| t.depths.as_slice()))
}

/// The probes of the `context_scaling` cells, in `quality.md`.
fn cells_markdown(o: &mut String, rows: &[CellProbeRow]) {
    if rows.is_empty() {
        return;
    }
    out!(o, "## Retrieval probes in the cells");
    out!(o);
    out!(
        o,
        "One probe per depth after each cell's measured trials (the matrix's `probe` and \
         `probe_depths`), at the cell's own fill: the same model and options as its speed \
         figures, in the same run. A probe is judged by no gate, and its requests are not among \
         the cell's trials. The verdict is the cell's, on its speed trials."
    );
    out!(o);
    let depths = cell_depth_columns(rows);
    let mut header = "| Cell | Model | Context | Fill | Filled tokens | Probe |".to_string();
    let mut rule = "|---|---|---|---|---|---|".to_string();
    for d in &depths {
        header.push_str(&format!(" depth {d} |"));
        rule.push_str("---|");
    }
    header.push_str(" Accuracy [95 % CI] | Probe TTFT s | Cell verdict |");
    rule.push_str("---|---|---|");
    out!(o, "{header}");
    out!(o, "{rule}");
    for t in rows {
        let mut line = format!(
            "| `{}` | {} | {} | {} | {} | {} |",
            t.test_name,
            t.model,
            ctx_label(t.num_ctx),
            t.fill_tokens,
            tokens(t.filled_tokens),
            t.probe
        );
        for d in &depths {
            line.push_str(&format!(" {} |", depth_cell(&t.depths, *d)));
        }
        line.push_str(&format!(
            " {} ({}/{} of {}) | {} | {} |",
            accuracy_cell(t.accuracy, t.accuracy_ci),
            t.correct,
            t.answered,
            t.asked,
            seconds(t.ttft_s),
            t.cell_verdict.label()
        ));
        out!(o, "{line}");
    }
    out!(o);
}

/// `83% [44–97%]`.
fn accuracy_cell(accuracy: Option<f64>, ci: Option<(f64, f64)>) -> String {
    format!("{}{}", pct(accuracy), interval(ci))
}

/// `8.78`, or `–`.
fn seconds(s: Option<f64>) -> String {
    s.map_or(MISSING.to_string(), |s| fixed(s, 2))
}

/// A depth's cell: `✓2 ✗1 (67%)`, or `–` when nothing was asked there.
fn depth_cell(scores: &[DepthScore], depth: f64) -> String {
    scores.iter().find(|s| s.depth == depth).map_or_else(
        || MISSING.to_string(),
        |s| format!("✓{} ✗{} ({})", s.correct, s.n - s.correct, pct(s.accuracy)),
    )
}

fn mean(s: Option<&crate::stats::Summary>, digits: usize) -> String {
    s.map_or(MISSING.to_string(), |s| fixed(s.mean, digits))
}

/// The RAG-against-direct section of `quality.md`.
fn rag_markdown(o: &mut String, rows: &[RagRow]) {
    if rows.is_empty() {
        return;
    }
    out!(o, "## RAG against direct prompting");
    out!(o);
    out!(
        o,
        "The same questions over the same documents (`harness/rag/`), asked **direct** (every \
         document that fits the fill in the prompt) and by **RAG** (only the top-k passages a \
         retriever chose from those documents). The winner is decided by accuracy first \
         (two-proportion test), then by mean TTFT (Welch), at p < {}. Recall: questions whose \
         document the retriever put in the prompt.",
        super::rag::ALPHA
    );
    out!(o);
    out!(
        o,
        "| Test | Context | Documents (tokens) | Approach | Accuracy [95 % CI] | Recall | TTFT s | Decode tok/s | Prompt tokens | RAM Δ MiB |"
    );
    out!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for t in rows {
        for a in &t.arms {
            let approach = if a.approach.retrieves() {
                format!("{} (k = {})", a.approach.label(), t.top_k)
            } else {
                a.approach.label().to_string()
            };
            out!(
                o,
                "| `{}` | {} | {} ({}) | {} | {}{} ({}/{}) | {} | {} | {} | {} | {} |",
                t.test_name,
                ctx_label(t.num_ctx),
                t.documents,
                tokens(t.documents_tokens),
                approach,
                pct(a.accuracy),
                interval(a.accuracy_ci),
                a.correct,
                a.answered,
                a.recalled
                    .map_or(MISSING.to_string(), |r| format!("{r}/{}", a.asked)),
                mean(a.ttft_s.as_ref(), 2),
                mean(a.decode_tps.as_ref(), 1),
                mean(a.prompt_tokens.as_ref(), 0),
                a.ram_delta_bytes
                    .as_ref()
                    .map_or(MISSING.to_string(), |s| fixed(s.mean / 1_048_576.0, 0)),
            );
        }
    }
    out!(o);
    for t in rows {
        let agreement =
            t.comparison
                .as_ref()
                .and_then(|c| c.agreement)
                .map_or(String::new(), |a| {
                    format!(
                        " Direct and BM25 RAG agree on {:.0} % of the questions.",
                        100.0 * a
                    )
                });
        out!(
            o,
            "- `{}`: **{}** — {}.{}",
            t.test_name,
            t.verdict.label(),
            t.comparison
                .as_ref()
                .map_or("no comparison (fewer than two approaches answered)", |c| c
                    .summary
                    .as_str()),
            agreement
        );
    }
    out!(o);
}

/// `quality.csv`: one row per test and depth, the sweeps' (`source` `sweep`) and the cells'
/// probes (`source` `cell`, with the cell's verdict).
#[derive(Debug, Clone, Copy, Default)]
pub struct QualityCsv;

/// The columns of `quality.csv`.
pub const CSV_COLUMNS: [&str; 13] = [
    "model",
    "test_name",
    "num_ctx",
    "filled_tokens",
    "probe",
    "depth",
    "correct",
    "answered",
    "accuracy",
    "ci_low",
    "ci_high",
    "verdict",
    "source",
];

/// What a `quality.csv` row says of its test, beside the depth.
struct CsvTest<'a> {
    model: &'a str,
    test_name: &'a str,
    num_ctx: u32,
    filled_tokens: Option<f64>,
    probe: &'a str,
    verdict: Verdict,
    source: &'static str,
}

impl CsvTest<'_> {
    fn record(&self, d: &DepthScore) -> [String; 13] {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        [
            self.model.to_string(),
            self.test_name.to_string(),
            self.num_ctx.to_string(),
            opt(self.filled_tokens),
            self.probe.to_string(),
            d.depth.to_string(),
            d.correct.to_string(),
            d.n.to_string(),
            opt(d.accuracy),
            opt(d.ci.map(|c| c.0)),
            opt(d.ci.map(|c| c.1)),
            self.verdict.label().to_string(),
            self.source.to_string(),
        ]
    }
}

impl Output<QualityReport> for QualityCsv {
    fn render(&self, r: &QualityReport) -> Vec<OutputFile> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS).expect("in memory");
        let sweeps = r.models.iter().flat_map(|m| {
            m.tests.iter().map(|t| {
                let test = CsvTest {
                    model: &m.model,
                    test_name: &t.test_name,
                    num_ctx: t.num_ctx,
                    filled_tokens: t.filled_tokens,
                    probe: &t.probe,
                    verdict: t.verdict,
                    source: "sweep",
                };
                (test, &t.depths)
            })
        });
        let cells = r.cells.iter().map(|t| {
            let test = CsvTest {
                model: &t.model,
                test_name: &t.test_name,
                num_ctx: t.num_ctx,
                filled_tokens: t.filled_tokens,
                probe: &t.probe,
                verdict: t.cell_verdict,
                source: "cell",
            };
            (test, &t.depths)
        });
        for (test, depths) in sweeps.chain(cells) {
            for d in depths {
                w.write_record(test.record(d)).expect("in memory");
            }
        }
        let bytes = w.into_inner().expect("in memory");
        vec![OutputFile::new(
            RunDir::relative().report_path("quality.csv"),
            String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out"),
        )]
    }
}

/// `rag_vs_direct.csv`: one row per RAG test and approach.
#[derive(Debug, Clone, Copy, Default)]
pub struct RagCsv;

/// The columns of `rag_vs_direct.csv`.
pub const RAG_CSV_COLUMNS: [&str; 20] = [
    "model",
    "test_name",
    "num_ctx",
    "documents",
    "top_k",
    "approach",
    "correct",
    "answered",
    "accuracy",
    "ci_low",
    "ci_high",
    "recall",
    "ttft_mean_s",
    "decode_tps_mean",
    "prompt_tokens_mean",
    "ram_delta_bytes_mean",
    "winner",
    "decided_by",
    "significant",
    "verdict",
];

impl Output<QualityReport> for RagCsv {
    fn render(&self, r: &QualityReport) -> Vec<OutputFile> {
        if r.rag.is_empty() {
            return Vec::new();
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(RAG_CSV_COLUMNS).expect("in memory");
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        for t in &r.rag {
            for a in &t.arms {
                let c = t.comparison.as_ref();
                w.write_record([
                    t.model.clone(),
                    t.test_name.clone(),
                    t.num_ctx.to_string(),
                    t.documents.to_string(),
                    t.top_k.to_string(),
                    a.approach.label().to_string(),
                    a.correct.to_string(),
                    a.answered.to_string(),
                    opt(a.accuracy),
                    opt(a.accuracy_ci.map(|c| c.0)),
                    opt(a.accuracy_ci.map(|c| c.1)),
                    opt(a.recall),
                    opt(a.ttft_s.as_ref().map(|s| s.mean)),
                    opt(a.decode_tps.as_ref().map(|s| s.mean)),
                    opt(a.prompt_tokens.as_ref().map(|s| s.mean)),
                    opt(a.ram_delta_bytes.as_ref().map(|s| s.mean)),
                    c.map_or(String::new(), |c| c.winner.label().to_string()),
                    c.map_or(String::new(), |c| {
                        match c.decided_by {
                            super::rag::DecidedBy::Accuracy => "accuracy",
                            super::rag::DecidedBy::Latency => "latency",
                        }
                        .to_string()
                    }),
                    c.map_or(String::new(), |c| c.significant.to_string()),
                    t.verdict.label().to_string(),
                ])
                .expect("in memory");
            }
        }
        let bytes = w.into_inner().expect("in memory");
        vec![OutputFile::new(
            RunDir::relative().report_path("rag_vs_direct.csv"),
            String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out"),
        )]
    }
}

/// `quality.json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QualityJson;

impl Output<QualityReport> for QualityJson {
    fn render(&self, r: &QualityReport) -> Vec<OutputFile> {
        let json = serde_json::to_string_pretty(r).expect("the report serializes") + "\n";
        vec![OutputFile::new(
            RunDir::relative().report_path("quality.json"),
            json,
        )]
    }
}

/// Every writer of the quality report.
pub fn writers() -> [&'static dyn Output<QualityReport>; 4] {
    [&QualityJson, &QualityCsv, &RagCsv, &QualityMarkdown]
}
