//! Long-context quality (`cargo test --test quality`): does the model still find what is in
//! its context? One test per model × context of the quality table, each a sweep of retrieval
//! probes ([`needle`]) at chosen depths of a deep fill, scored per depth with a Wilson interval,
//! the **effective context** (the largest filled length at which accuracy stays at or above
//! `accuracy_min`, after RULER), and the TTFT measured beside it; judged with the cells' typed
//! judgement.
//!
//! [`needle`] (the facts and the answer match), [`table`] (the quality table), [`sweep`] (one
//! test end to end), [`cell`] (the probe a `context_scaling` cell may carry), [`report`]
//! (`comparative_analysis/quality.{md,csv,json}`).

pub mod cell;
pub mod collection;
pub mod needle;
pub mod rag;
pub mod report;
pub mod retrieve;
pub mod sweep;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::harness::{self, Test};
use crate::judgement::{Gate, GateCheck, Judgement, Verdict, group_reasons, too_few_valid};
use crate::results::{HardwareSummary, RunMetadata, TrialRecord};
use crate::stats::{self, Summary};
pub use needle::ProbeKind;
pub use sweep::run_quality;
pub use table::QualitySpec;

/// Format of the quality result files.
pub const FORMAT_VERSION: u32 = 1;

/// The default quality table.
pub const DEFAULT_TABLE: &str = "harness/quality.csv";

/// Characters of an answer kept in the result file.
pub const ANSWER_KEPT_CHARS: usize = 200;

/// One probe asked: where its fact was, what came back, whether it was right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// 0-based, in the order asked.
    pub index: u32,
    /// The stated depth of the asked fact.
    pub depth: f64,
    /// Tokens of fill before the asked fact, by the ratios (its depth × the fill, within a word).
    pub fill_before: f64,
    /// The expected value.
    pub expected: String,
    /// The answer (at most [`ANSWER_KEPT_CHARS`] characters).
    pub answer: String,
    /// Whether the answer holds the expected value; `None` when the request failed.
    pub correct: Option<bool>,
    /// Why the request failed.
    pub failure: Option<String>,
    /// The figures of the request (TTFT, decode, prompt tokens).
    pub trial: TrialRecord,
}

/// Accuracy at one depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthScore {
    /// The depth.
    pub depth: f64,
    /// Right answers.
    pub correct: usize,
    /// Probes answered (failed requests are not counted).
    pub n: usize,
    /// `correct / n`.
    pub accuracy: Option<f64>,
    /// 95 % Wilson interval.
    pub ci: Option<(f64, f64)>,
}

/// What the probes of a test add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QualityAnalysis {
    /// Per depth, ascending.
    pub depths: Vec<DepthScore>,
    /// Right answers over every depth.
    pub correct: usize,
    /// Probes answered.
    pub answered: usize,
    /// Probes asked.
    pub asked: usize,
    /// `correct / answered`.
    pub accuracy: Option<f64>,
    /// 95 % Wilson interval of `accuracy`.
    pub accuracy_ci: Option<(f64, f64)>,
    /// The filled length: the mean prompt tokens the server counted (the fill, the question
    /// and the template), or the planned fill when it counted none.
    pub filled_tokens: Option<f64>,
    /// Client TTFT of the answered probes (s).
    pub ttft_s: Option<Summary>,
    /// Client decode rate of the answered probes (tokens/s).
    pub decode_tps: Option<Summary>,
}

/// Accuracy per depth and overall of `probes` (depths in the order of `depths`).
pub fn analyse(probes: &[ProbeRecord], depths: &[f64], fill_tokens: u32) -> QualityAnalysis {
    let score = |ps: &[&ProbeRecord]| {
        let n = ps.iter().filter(|p| p.correct.is_some()).count();
        let k = ps.iter().filter(|p| p.correct == Some(true)).count();
        (k, n)
    };
    let per: Vec<DepthScore> = depths
        .iter()
        .map(|&d| {
            let at: Vec<&ProbeRecord> = probes.iter().filter(|p| p.depth == d).collect();
            let (k, n) = score(&at);
            DepthScore {
                depth: d,
                correct: k,
                n,
                accuracy: (n > 0).then(|| k as f64 / n as f64),
                ci: stats::wilson(k, n),
            }
        })
        .collect();
    let all: Vec<&ProbeRecord> = probes.iter().collect();
    let (k, n) = score(&all);
    let answered: Vec<&ProbeRecord> = probes.iter().filter(|p| p.correct.is_some()).collect();
    let counted: Vec<f64> = answered
        .iter()
        .filter_map(|p| p.trial.prompt_tokens_evaluated.map(f64::from))
        .collect();
    let of = |f: fn(&TrialRecord) -> Option<f64>| {
        let v: Vec<f64> = answered.iter().filter_map(|p| f(&p.trial)).collect();
        stats::summarize(&v)
    };
    QualityAnalysis {
        depths: per,
        correct: k,
        answered: n,
        asked: probes.len(),
        accuracy: (n > 0).then(|| k as f64 / n as f64),
        accuracy_ci: stats::wilson(k, n),
        filled_tokens: stats::mean(&counted)
            .or((!probes.is_empty()).then_some(f64::from(fill_tokens))),
        ttft_s: of(|t| t.ttft_s),
        decode_tps: of(|t| t.decode_tps),
    }
}

/// A note when wrong answers stopped at `num_predict` (`done_reason` `length`): the value may
/// have been cut off after the words before it, and the test scored the length limit rather
/// than the model. `answers` are (correct, done_reason) pairs.
pub fn cut_answers_note<'a>(
    answers: impl IntoIterator<Item = (Option<bool>, Option<&'a str>)>,
    num_predict: u32,
) -> Option<String> {
    let (mut cut, mut wrong) = (0, 0);
    for (correct, done) in answers {
        if correct == Some(false) {
            wrong += 1;
            if done == Some("length") {
                cut += 1;
            }
        }
    }
    (cut > 0).then(|| {
        format!(
            "{cut} of {wrong} wrong answers stopped at num_predict {num_predict} (done_reason length): their value may have been cut off; a larger num_predict would tell"
        )
    })
}

/// One filled length and how the probes fared there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillPoint {
    /// The `num_ctx` of the test.
    pub num_ctx: u32,
    /// The filled length (tokens).
    pub filled_tokens: f64,
    /// Right answers.
    pub correct: usize,
    /// Probes answered.
    pub n: usize,
}

/// The effective context of a model (RULER): the largest filled length at which accuracy is
/// at least `min`, every shorter length too; `None` when even the shortest falls short (or
/// nothing was answered).
pub fn effective_context(points: &[FillPoint], min: f64) -> Option<f64> {
    effective_point(points, min).map(|p| p.filled_tokens)
}

/// The point of [`effective_context`]: the longest fill at which accuracy is at least `min`,
/// every shorter fill too (its `num_ctx` is the largest context verified to keep accuracy).
pub fn effective_point(points: &[FillPoint], min: f64) -> Option<FillPoint> {
    let mut pts: Vec<&FillPoint> = points.iter().filter(|p| p.n > 0).collect();
    pts.sort_by(|a, b| a.filled_tokens.total_cmp(&b.filled_tokens));
    let mut best = None;
    for p in pts {
        if p.correct as f64 / p.n as f64 >= min {
            best = Some(*p);
        } else {
            break;
        }
    }
    best
}

/// Problems and notes of a test's phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QualityFacts {
    /// What makes the numbers untrustworthy (INVALID).
    pub problems: Vec<String>,
    /// What does not change the verdict.
    pub notes: Vec<String>,
}

/// The verdict of a quality test, by the cells' rules ([`Judgement::verdict_of_checks`]):
/// RAM over its limit → FAIL; a problem, or too few answered probes → INVALID; accuracy whose
/// whole Wilson interval lies below `accuracy_min`, or a mean TTFT over `ttft_max_s` → FAIL; an
/// interval straddling a limit → MARGINAL; otherwise PASS.
pub fn judge(
    spec: &QualitySpec,
    a: &QualityAnalysis,
    probes: &[ProbeRecord],
    hardware: &HardwareSummary,
    facts: &QualityFacts,
) -> Judgement {
    let g = &spec.gates;
    let checks = vec![
        GateCheck::from_interval(
            Gate::Accuracy,
            a.accuracy,
            a.accuracy_ci,
            a.answered,
            g.accuracy_min,
        ),
        GateCheck::of_summary(Gate::Ttft, a.ttft_s.as_ref(), g.ttft_max_s),
        crate::gates::ram_check(hardware, g.ram_max_pct),
    ];
    let failures: Vec<String> = probes.iter().filter_map(|p| p.failure.clone()).collect();
    let mut j = Judgement {
        verdict: Verdict::Pass,
        checks,
        problems: facts.problems.clone(),
        valid_trials: a.answered,
        attempted_trials: a.asked,
        invalid_trials: group_reasons(&failures),
        ram_guard_tripped: hardware.ram_guard_tripped,
        skipped: None,
        notes: facts.notes.clone(),
        regressions: Vec::new(),
        baseline_run_id: None,
    };
    let too_few = a.asked == 0 || too_few_valid(a.answered, a.asked);
    j.verdict = j.verdict_of_checks(too_few);
    j
}

/// What a quality test leaves in `<run>/quality/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The row.
    pub spec: QualitySpec,
    /// The verdict and everything it rests on.
    pub judgement: Judgement,
    /// What the probes add up to.
    pub analysis: QualityAnalysis,
    /// The effective context of this test alone: its filled length when its accuracy is at
    /// least `accuracy_min`.
    pub effective_tokens: Option<f64>,
    /// Every probe.
    pub probes: Vec<ProbeRecord>,
    /// The server's `load_duration` of the load (s).
    pub load_s: Option<f64>,
    /// What the sampler saw.
    pub hardware: HardwareSummary,
    /// Host, server and model facts.
    pub metadata: RunMetadata,
    /// Wall time of the test (s).
    pub wall_s: f64,
}

impl QualityResult {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }

    /// This test as a point of its model's effective context.
    pub fn fill_point(&self) -> Option<FillPoint> {
        Some(FillPoint {
            num_ctx: self.spec.num_ctx,
            filled_tokens: self.analysis.filled_tokens?,
            correct: self.analysis.correct,
            n: self.analysis.answered,
        })
    }
}

/// What the phases of a quality test produced.
#[derive(Debug, Clone, PartialEq)]
pub enum QualityRun {
    /// It could not run here.
    Skipped {
        /// Facts recorded before the preflight failed.
        meta: Box<RunMetadata>,
        /// Why.
        why: String,
    },
    /// It ran (perhaps stopped early).
    Ran(Box<sweep::Ran>),
}

/// The pure part: the result of a test from what its phases produced.
pub fn assemble(spec: &QualitySpec, run: QualityRun, wall_s: f64) -> QualityResult {
    let ran = match run {
        QualityRun::Ran(r) => *r,
        QualityRun::Skipped { meta, why } => {
            return QualityResult {
                format_version: FORMAT_VERSION,
                spec: spec.clone(),
                judgement: Judgement::skipped(why),
                analysis: QualityAnalysis::default(),
                effective_tokens: None,
                probes: Vec::new(),
                load_s: None,
                hardware: HardwareSummary::default(),
                metadata: *meta,
                wall_s,
            };
        }
    };
    let a = analyse(&ran.probes, &spec.depths, spec.fill_tokens);
    let mut facts = ran.facts.clone();
    facts.notes.extend(cut_answers_note(
        ran.probes
            .iter()
            .map(|p| (p.correct, p.trial.done_reason.as_deref())),
        spec.num_predict,
    ));
    let judgement = judge(spec, &a, &ran.probes, &ran.hardware, &facts);
    let point = FillPoint {
        num_ctx: spec.num_ctx,
        filled_tokens: a.filled_tokens.unwrap_or(0.0),
        correct: a.correct,
        n: a.answered,
    };
    QualityResult {
        format_version: FORMAT_VERSION,
        spec: spec.clone(),
        judgement,
        effective_tokens: effective_context(&[point], spec.gates.accuracy_min),
        analysis: a,
        probes: ran.probes,
        load_s: ran.load_s,
        hardware: ran.hardware,
        metadata: ran.meta,
        wall_s,
    }
}

/// `O3_QUALITY_MATRIX`: the quality table (relative paths from the crate root).
pub fn table_path() -> std::path::PathBuf {
    let p = std::env::var_os("O3_QUALITY_MATRIX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| DEFAULT_TABLE.into());
    if p.is_relative() {
        crate::config::crate_root().join(p)
    } else {
        p
    }
}

/// The tests of `cargo test --test quality`: one per row of the quality table and one per row
/// of the RAG table ([`rag`]), both read offline.
pub fn tests(config: &Config) -> Result<Vec<Test>, String> {
    let specs = table::load(&table_path(), config.ram_limit_pct).map_err(|e| e.to_string())?;
    let rag =
        rag::table::load(&rag::table_path(), config.ram_limit_pct).map_err(|e| e.to_string())?;
    let sweeps = specs.into_iter().map(|spec| Test {
        name: spec.test_name.clone(),
        ignored: spec.optional,
        run: Box::new(move |env| {
            let r = run_quality(&spec, env);
            harness::judged_outcome(&env.config, &r.spec.test_name, &r.judgement)
        }),
    });
    let rags = rag.into_iter().map(|spec| Test {
        name: spec.test_name.clone(),
        ignored: spec.optional,
        run: Box::new(move |env| {
            let r = rag::run_rag(&spec, env);
            harness::judged_outcome(&env.config, &r.spec.test_name, &r.judgement)
        }),
    });
    Ok(sweeps.chain(rags).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> QualitySpec {
        let t = "name,model,num_ctx,fill,depths,trials,probe,num_batch,num_thread,accuracy_min,ttft_max_s\n\
                 a,m,4K,0.75,0 0.5 1,2,needle,512,2,0.5,30\n";
        table::parse(Path::new("q.csv"), t, 80.0).unwrap().remove(0)
    }

    fn probe(i: u32, depth: f64, correct: Option<bool>, ttft: f64) -> ProbeRecord {
        ProbeRecord {
            index: i,
            depth,
            fill_before: depth * 3000.0,
            expected: "1234567".into(),
            answer: String::new(),
            correct,
            failure: correct.is_none().then(|| "HTTP 500".to_string()),
            trial: TrialRecord {
                ttft_s: correct.map(|_| ttft),
                prompt_tokens_evaluated: correct.map(|_| 3100),
                ..TrialRecord::default()
            },
        }
    }

    fn result(ctx: &str, fill_tokens: u32, answers: &[(f64, bool)]) -> QualityResult {
        let t = format!(
            "name,model,num_ctx,fill,depths,trials,probe,num_batch,num_thread,accuracy_min,ttft_max_s\n\
             a,m,{ctx},0.75,0 0.5 1,2,needle,512,2,0.5,30\n"
        );
        let spec = table::parse(Path::new("q.csv"), &t, 80.0)
            .unwrap()
            .remove(0);
        let probes: Vec<ProbeRecord> = answers
            .iter()
            .enumerate()
            .map(|(i, &(d, ok))| {
                let mut p = probe(i as u32, d, Some(ok), 1.0);
                p.trial.prompt_tokens_evaluated = Some(fill_tokens);
                p
            })
            .collect();
        let analysis = analyse(&probes, &spec.depths, spec.fill_tokens);
        let judgement = judge(
            &spec,
            &analysis,
            &probes,
            &HardwareSummary::default(),
            &QualityFacts::default(),
        );
        QualityResult {
            format_version: FORMAT_VERSION,
            effective_tokens: None,
            spec,
            judgement,
            analysis,
            probes,
            load_s: None,
            hardware: HardwareSummary::default(),
            metadata: RunMetadata::default(),
            wall_s: 1.0,
        }
    }

    #[test]
    fn quality_report_tables_and_effective_context() {
        // 2K: all right; 4K: right only near the end of the prompt (the last half seen).
        let short = result(
            "2K",
            1500,
            &[(0.0, true), (0.5, true), (1.0, true), (0.0, true)],
        );
        let long = result(
            "4K",
            3000,
            &[(0.0, false), (0.5, false), (1.0, true), (0.0, false)],
        );
        let r = report::of(&[long.clone(), short.clone()], &[], &[]);
        assert_eq!(r, report::of(&[short, long], &[], &[]), "order-independent");
        let m = &r.models[0];
        assert_eq!(m.effective_context_tokens, Some(1500.0));
        assert_eq!(m.effective_num_ctx, Some(2048));
        assert_eq!(m.probes_answered, 8);
        assert_eq!(
            m.tests.iter().map(|t| t.num_ctx).collect::<Vec<_>>(),
            [2048, 4096]
        );
        let md = report::markdown(&r);
        assert!(
            md.contains("Effective context: **1500 tokens** (accuracy ≥ 0.50)"),
            "{md}"
        );
        assert!(md.contains("| depth 0 | depth 0.5 | depth 1 |"), "{md}");
        assert!(
            md.contains("✓0 ✗2 (0%)") && md.contains("✓2 ✗0 (100%)"),
            "{md}"
        );
        let csv = &crate::output::Output::render(&report::QualityCsv, &r)[0].content;
        assert_eq!(csv.lines().count(), 1 + 2 * 3, "{csv}");
        assert!(csv.starts_with(&report::CSV_COLUMNS.join(",")));
    }

    #[test]
    fn accuracy_per_depth_with_wilson_intervals() {
        let probes = vec![
            probe(0, 0.0, Some(false), 1.0),
            probe(1, 0.5, Some(true), 1.1),
            probe(2, 1.0, Some(true), 0.9),
            probe(3, 0.0, Some(false), 1.0),
            probe(4, 0.5, Some(false), 1.2),
            probe(5, 1.0, None, 0.0),
        ];
        let a = analyse(&probes, &[0.0, 0.5, 1.0], 3072);
        let k: Vec<(usize, usize)> = a.depths.iter().map(|d| (d.correct, d.n)).collect();
        assert_eq!(k, vec![(0, 2), (1, 2), (1, 1)]);
        assert_eq!((a.correct, a.answered, a.asked), (2, 5, 6));
        assert_eq!(a.depths[1].ci, stats::wilson(1, 2));
        assert_eq!(a.filled_tokens, Some(3100.0));
        assert_eq!(a.ttft_s.as_ref().map(|s| s.n), Some(5));
    }

    #[test]
    fn effective_context_is_the_longest_fill_before_the_first_shortfall() {
        let p = |f: f64, k: usize, n: usize| FillPoint {
            num_ctx: (f * 4.0 / 3.0) as u32,
            filled_tokens: f,
            correct: k,
            n,
        };
        let pts = [
            p(32_000.0, 9, 10),
            p(8_000.0, 10, 10),
            p(64_000.0, 6, 10),
            p(96_000.0, 9, 10),
        ];
        // 96K passes again, but 64K fell short first: the model is not trusted beyond 32K.
        assert_eq!(effective_context(&pts, 0.85), Some(32_000.0));
        assert_eq!(effective_context(&pts, 0.5), Some(96_000.0));
        assert_eq!(effective_context(&[p(8_000.0, 1, 10)], 0.85), None);
        assert_eq!(effective_context(&[p(8_000.0, 0, 0)], 0.85), None);
        assert_eq!(effective_point(&pts, 0.85).map(|p| p.num_ctx), Some(42_666));
    }

    #[test]
    fn verdicts_follow_accuracy_ttft_and_failed_requests() {
        let s = spec();
        let hw = HardwareSummary::default();
        let facts = QualityFacts::default();
        let good: Vec<ProbeRecord> = (0..6)
            .map(|i| probe(i, 0.5, Some(true), 1.0 + i as f64 * 0.01))
            .collect();
        let a = analyse(&good, &s.depths, s.fill_tokens);
        let j = judge(&s, &a, &good, &hw, &facts);
        assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons());
        let bad: Vec<ProbeRecord> = (0..6)
            .map(|i| probe(i, 0.5, Some(false), 1.0 + i as f64 * 0.01))
            .collect();
        let a = analyse(&bad, &s.depths, s.fill_tokens);
        let j = judge(&s, &a, &bad, &hw, &facts);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.failed_gates(), vec![Gate::Accuracy]);
        let failed: Vec<ProbeRecord> = (0..6).map(|i| probe(i, 0.5, None, 0.0)).collect();
        let a = analyse(&failed, &s.depths, s.fill_tokens);
        let j = judge(&s, &a, &failed, &hw, &facts);
        assert_eq!(j.verdict, Verdict::Invalid);
        assert!(
            j.reasons().iter().any(|r| r.contains("HTTP 500")),
            "{:?}",
            j.reasons()
        );
    }
}
