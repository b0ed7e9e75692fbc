//! `comparative_analysis/quality.{md,csv,json}`: written by [`crate::report::build`] from the
//! quality results of the run directory (`quality/*.json`), per model: the depth × context
//! accuracy table (✓/✗ counts per depth, with the accuracy and its Wilson interval), the TTFT
//! measured beside it, and the model's effective context over its tests (RULER: the largest
//! filled length at which accuracy stays at or above `accuracy_min`, every shorter one too).
//!
//! A pure function of the results, like every report: the same results give the same bytes.

use serde::Serialize;

use super::{DepthScore, QualityResult, effective_context};
use crate::output::{Output, OutputFile};
use crate::results::Verdict;
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

/// The report of `results` (any order).
pub fn of(results: &[QualityResult]) -> QualityReport {
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
        m.effective_context_tokens = effective_context(&points, m.accuracy_min);
        m.probes_answered = m.tests.iter().map(|t| t.answered).sum();
    }
    QualityReport {
        format_version: FORMAT_VERSION,
        models,
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
    let mut d: Vec<f64> = m
        .tests
        .iter()
        .flat_map(|t| t.depths.iter().map(|s| s.depth))
        .collect();
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
                let cell = t.depths.iter().find(|s| s.depth == *d).map_or_else(
                    || MISSING.to_string(),
                    |s| format!("✓{} ✗{} ({})", s.correct, s.n - s.correct, pct(s.accuracy)),
                );
                line.push_str(&format!(" {cell} |"));
            }
            line.push_str(&format!(
                " {}{} ({}/{}) | {} | {} |",
                pct(t.accuracy),
                interval(t.accuracy_ci),
                t.correct,
                t.answered,
                t.ttft_s.map_or(MISSING.to_string(), |s| fixed(s, 2)),
                t.verdict.label()
            ));
            out!(o, "{line}");
        }
        out!(o);
    }
    if r.models.is_empty() {
        out!(o, "No quality results in this run (`quality/*.json`).");
        out!(o);
    }
    o
}

/// `quality.csv`: one row per test and depth.
#[derive(Debug, Clone, Copy, Default)]
pub struct QualityCsv;

/// The columns of `quality.csv`.
pub const CSV_COLUMNS: [&str; 12] = [
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
];

impl Output<QualityReport> for QualityCsv {
    fn render(&self, r: &QualityReport) -> Vec<OutputFile> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS).expect("in memory");
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        for m in &r.models {
            for t in &m.tests {
                for d in &t.depths {
                    w.write_record([
                        m.model.clone(),
                        t.test_name.clone(),
                        t.num_ctx.to_string(),
                        opt(t.filled_tokens),
                        t.probe.clone(),
                        d.depth.to_string(),
                        d.correct.to_string(),
                        d.n.to_string(),
                        opt(d.accuracy),
                        opt(d.ci.map(|c| c.0)),
                        opt(d.ci.map(|c| c.1)),
                        t.verdict.label().to_string(),
                    ])
                    .expect("in memory");
                }
            }
        }
        let bytes = w.into_inner().expect("in memory");
        vec![OutputFile::new(
            RunDir::relative().report_path("quality.csv"),
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
pub fn writers() -> [&'static dyn Output<QualityReport>; 3] {
    [&QualityJson, &QualityCsv, &QualityMarkdown]
}
