//! RAG against direct prompting (`<name>::rag_vs_direct_<K>k` in `cargo test --test quality`):
//! the same questions over the same documents ([`super::collection`]), asked with the same
//! model and options two ways — **direct**, every document that fits `fill × num_ctx` in the
//! prompt, and **RAG**, only the `top_k` passages a real retriever ([`super::retrieve`]) picks
//! from those same documents: BM25 always, the server's embeddings too where the table names
//! an embedding model.
//!
//! Per approach: accuracy with its Wilson interval, TTFT, decode rate, prompt tokens, RAM Δ
//! and (RAG) the retriever's recall. The [`Comparison`] says which approach wins, by accuracy
//! first (a two-proportion test), then by latency (Welch on TTFT), and whether the difference
//! is significant; the [`Judgement`] holds the gates and the validity, by the cells' rules.
//!
//! [`table`] (the RAG table), [`run`] (one test end to end).

pub mod run;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::judgement::{Gate, GateCheck, Judgement, Verdict, group_reasons, too_few_valid};
use crate::results::{HardwareSummary, RunMetadata, TrialRecord};
use crate::stats::{self, Summary, TwoProportion, Welch};
pub use run::run_rag;
pub use table::RagSpec;

use super::QualityFacts;

/// Format of the RAG result files.
pub const FORMAT_VERSION: u32 = 1;

/// The default RAG table.
pub const DEFAULT_TABLE: &str = "harness/rag.csv";

/// Significance level of the comparison's tests.
pub const ALPHA: f64 = 0.05;

/// How a question was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Approach {
    /// Every document that fits in the prompt.
    Direct,
    /// The top-k passages by BM25.
    RagBm25,
    /// The top-k passages by the server's embeddings.
    RagEmbed,
}

impl Approach {
    /// `direct`, `rag_bm25`, `rag_embed`.
    pub fn label(self) -> &'static str {
        match self {
            Approach::Direct => "direct",
            Approach::RagBm25 => "rag_bm25",
            Approach::RagEmbed => "rag_embed",
        }
    }

    /// Whether a retriever chose the prompt's passages.
    pub fn retrieves(self) -> bool {
        self != Approach::Direct
    }
}

/// One question asked one way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// 0-based, in the order asked.
    pub index: u32,
    /// How it was asked.
    pub approach: Approach,
    /// The question's id in the collection.
    pub question: u32,
    /// The id of the document that answers it.
    pub document: u32,
    /// Where that document sits in the direct prompt (share of the documents before it).
    pub depth: f64,
    /// The expected value.
    pub expected: String,
    /// The answer (at most [`super::ANSWER_KEPT_CHARS`] characters).
    pub answer: String,
    /// Whether the answer holds the expected value; `None` when the request failed.
    pub correct: Option<bool>,
    /// Why the request failed.
    pub failure: Option<String>,
    /// The documents in the prompt, by the retriever's rank (RAG only).
    pub retrieved: Vec<u32>,
    /// Whether the answering document was among them (RAG only).
    pub recalled: Option<bool>,
    /// Server RSS after the answer minus its RSS once the model was loaded (bytes).
    pub ram_delta_bytes: Option<i64>,
    /// The figures of the request (TTFT, decode, prompt tokens).
    pub trial: TrialRecord,
}

/// What one approach's answers add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmAnalysis {
    /// The approach.
    pub approach: Approach,
    /// Questions asked this way.
    pub asked: usize,
    /// Answered (failed requests are not counted).
    pub answered: usize,
    /// Right answers.
    pub correct: usize,
    /// `correct / answered`.
    pub accuracy: Option<f64>,
    /// 95 % Wilson interval of `accuracy`.
    pub accuracy_ci: Option<(f64, f64)>,
    /// Client TTFT of the answered requests (s).
    pub ttft_s: Option<Summary>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Summary>,
    /// Prompt tokens the server evaluated.
    pub prompt_tokens: Option<Summary>,
    /// Server RSS over its loaded size after each answer (bytes).
    pub ram_delta_bytes: Option<Summary>,
    /// RAG: questions whose document the retriever put in the prompt.
    pub recalled: Option<usize>,
    /// RAG: `recalled / asked`.
    pub recall: Option<f64>,
}

/// Which criterion decided the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The accuracies differ significantly.
    Accuracy,
    /// The accuracies do not differ significantly; the lower mean TTFT wins.
    Latency,
}

/// Which approach wins, and how surely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The winner.
    pub winner: Approach,
    /// The best of the others.
    pub runner_up: Approach,
    /// What decided it.
    pub decided_by: DecidedBy,
    /// Whether the deciding difference is significant at [`ALPHA`].
    pub significant: bool,
    /// Two-proportion test of the winner's accuracy against the runner-up's.
    pub accuracy_test: Option<TwoProportion>,
    /// Welch's test of the winner's TTFT against the runner-up's.
    pub latency_test: Option<Welch>,
    /// Share of questions direct and BM25 RAG got both right or both wrong (Li et al. found
    /// most questions answered alike).
    pub agreement: Option<f64>,
    /// The same sentence the reports print.
    pub summary: String,
}

/// What the answers of a test add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RagAnalysis {
    /// Per approach, in the order of [`Approach`].
    pub arms: Vec<ArmAnalysis>,
    /// The comparison, when at least two approaches were answered.
    pub comparison: Option<Comparison>,
}

impl RagAnalysis {
    /// The analysis of one approach.
    pub fn arm(&self, a: Approach) -> Option<&ArmAnalysis> {
        self.arms.iter().find(|x| x.approach == a)
    }
}

fn arm(a: Approach, answers: &[&AnswerRecord]) -> ArmAnalysis {
    let answered: Vec<&&AnswerRecord> = answers.iter().filter(|r| r.correct.is_some()).collect();
    let k = answered.iter().filter(|r| r.correct == Some(true)).count();
    let n = answered.len();
    let of = |f: &dyn Fn(&AnswerRecord) -> Option<f64>| {
        let v: Vec<f64> = answered.iter().filter_map(|r| f(r)).collect();
        stats::summarize(&v)
    };
    let recalled = a
        .retrieves()
        .then(|| answers.iter().filter(|r| r.recalled == Some(true)).count());
    ArmAnalysis {
        approach: a,
        asked: answers.len(),
        answered: n,
        correct: k,
        accuracy: (n > 0).then(|| k as f64 / n as f64),
        accuracy_ci: stats::wilson(k, n),
        ttft_s: of(&|r| r.trial.ttft_s),
        decode_tps: of(&|r| r.trial.decode_tps),
        prompt_tokens: of(&|r| r.trial.prompt_tokens_evaluated.map(f64::from)),
        ram_delta_bytes: of(&|r| r.ram_delta_bytes.map(|b| b as f64)),
        recalled,
        recall: recalled
            .filter(|_| !answers.is_empty())
            .map(|r| r as f64 / answers.len() as f64),
    }
}

fn ttfts(answers: &[AnswerRecord], a: Approach) -> Vec<f64> {
    answers
        .iter()
        .filter(|r| r.approach == a && r.correct.is_some())
        .filter_map(|r| r.trial.ttft_s)
        .collect()
}

/// The comparison of the answered approaches: accuracy first (the two best by accuracy, then
/// by mean TTFT, a two-proportion test between them); when their accuracies do not differ
/// significantly, the one with the lower mean TTFT wins, significantly when Welch's test says
/// so. `None` with fewer than two answered approaches.
pub fn compare(arms: &[ArmAnalysis], answers: &[AnswerRecord]) -> Option<Comparison> {
    let mut ranked: Vec<&ArmAnalysis> = arms.iter().filter(|a| a.answered > 0).collect();
    if ranked.len() < 2 {
        return None;
    }
    let mean_ttft = |a: &ArmAnalysis| a.ttft_s.as_ref().map_or(f64::INFINITY, |s| s.mean);
    ranked.sort_by(|a, b| {
        b.accuracy
            .unwrap_or(0.0)
            .total_cmp(&a.accuracy.unwrap_or(0.0))
            .then(mean_ttft(a).total_cmp(&mean_ttft(b)))
            .then(a.approach.cmp(&b.approach))
    });
    let (first, second) = (ranked[0], ranked[1]);
    let accuracy_test = stats::two_proportion(
        first.correct,
        first.answered,
        second.correct,
        second.answered,
    );
    let accuracy_significant = accuracy_test
        .as_ref()
        .is_some_and(|t| t.p_value < ALPHA && t.difference != 0.0);
    let (winner, runner_up, decided_by) = if accuracy_significant {
        (first, second, DecidedBy::Accuracy)
    } else if mean_ttft(second) < mean_ttft(first) {
        (second, first, DecidedBy::Latency)
    } else {
        (first, second, DecidedBy::Latency)
    };
    let latency_test = stats::welch(
        &ttfts(answers, winner.approach),
        &ttfts(answers, runner_up.approach),
    );
    let significant = match decided_by {
        DecidedBy::Accuracy => true,
        DecidedBy::Latency => latency_test.as_ref().is_some_and(|t| t.p_value < ALPHA),
    };
    let agreement = agreement(answers);
    let pct = |a: &ArmAnalysis| {
        a.accuracy
            .map_or("–".into(), |x| format!("{:.0} %", 100.0 * x))
    };
    let secs = |a: &ArmAnalysis| {
        a.ttft_s
            .as_ref()
            .map_or("–".into(), |s| format!("{:.2} s", s.mean))
    };
    let p = |v: Option<f64>| v.map_or("–".into(), |p| format!("{p:.3}"));
    let summary = match decided_by {
        DecidedBy::Accuracy => format!(
            "{} wins on accuracy: {} against {}'s {} (two-proportion p = {})",
            winner.approach.label(),
            pct(winner),
            runner_up.approach.label(),
            pct(runner_up),
            p(accuracy_test.as_ref().map(|t| t.p_value)),
        ),
        DecidedBy::Latency => format!(
            "{} wins on latency{}: mean TTFT {} against {}'s {} (Welch p = {}), accuracy {} against {} (p = {}, not significant)",
            winner.approach.label(),
            if significant {
                ""
            } else {
                " (not significant)"
            },
            secs(winner),
            runner_up.approach.label(),
            secs(runner_up),
            p(latency_test.as_ref().map(|t| t.p_value)),
            pct(winner),
            pct(runner_up),
            p(accuracy_test.as_ref().map(|t| t.p_value)),
        ),
    };
    Some(Comparison {
        winner: winner.approach,
        runner_up: runner_up.approach,
        decided_by,
        significant,
        accuracy_test,
        latency_test,
        agreement,
        summary,
    })
}

/// Share of questions answered both ways (direct and BM25 RAG) on which the two agree (both
/// right or both wrong).
fn agreement(answers: &[AnswerRecord]) -> Option<f64> {
    let of = |a: Approach, q: u32| {
        answers
            .iter()
            .find(|r| r.approach == a && r.question == q)
            .and_then(|r| r.correct)
    };
    let mut questions: Vec<u32> = answers.iter().map(|r| r.question).collect();
    questions.sort_unstable();
    questions.dedup();
    let pairs: Vec<bool> = questions
        .iter()
        .filter_map(|&q| Some(of(Approach::Direct, q)? == of(Approach::RagBm25, q)?))
        .collect();
    (!pairs.is_empty()).then(|| pairs.iter().filter(|&&x| x).count() as f64 / pairs.len() as f64)
}

/// Per approach and the comparison.
pub fn analyse(answers: &[AnswerRecord]) -> RagAnalysis {
    let mut approaches: Vec<Approach> = answers.iter().map(|r| r.approach).collect();
    approaches.sort();
    approaches.dedup();
    let arms: Vec<ArmAnalysis> = approaches
        .into_iter()
        .map(|a| {
            let of: Vec<&AnswerRecord> = answers.iter().filter(|r| r.approach == a).collect();
            arm(a, &of)
        })
        .collect();
    let comparison = compare(&arms, answers);
    RagAnalysis { arms, comparison }
}

/// The verdict of a RAG test, by the cells' rules ([`Judgement::verdict_of_checks`]): RAM over
/// its limit → FAIL; a problem, or too few answers in any approach → INVALID; the winner's
/// accuracy whose whole Wilson interval lies below `accuracy_min`, or direct prompting's mean
/// TTFT over `ttft_max_s` → FAIL; an interval straddling a limit → MARGINAL; otherwise PASS.
pub fn judge(
    spec: &RagSpec,
    a: &RagAnalysis,
    answers: &[AnswerRecord],
    hardware: &HardwareSummary,
    facts: &QualityFacts,
) -> Judgement {
    let g = &spec.gates;
    let best = a
        .comparison
        .as_ref()
        .and_then(|c| a.arm(c.winner))
        .or_else(|| a.arms.first());
    let direct = a.arm(Approach::Direct);
    let checks = vec![
        GateCheck::from_interval(
            Gate::Accuracy,
            best.and_then(|b| b.accuracy),
            best.and_then(|b| b.accuracy_ci),
            best.map_or(0, |b| b.answered),
            g.accuracy_min,
        ),
        GateCheck::of_summary(
            Gate::Ttft,
            direct.and_then(|d| d.ttft_s.as_ref()),
            g.ttft_max_s,
        ),
        crate::gates::ram_check(hardware, g.ram_max_pct),
    ];
    let failures: Vec<String> = answers
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{}: {f}", r.approach.label()))
        })
        .collect();
    let asked = answers.len();
    let answered = answers.iter().filter(|r| r.correct.is_some()).count();
    let mut problems = facts.problems.clone();
    for x in &a.arms {
        if too_few_valid(x.answered, x.asked) {
            problems.push(format!(
                "{}: {} of {} questions answered, too few to judge",
                x.approach.label(),
                x.answered,
                x.asked
            ));
        }
    }
    if asked > 0 && a.arms.len() < 2 {
        problems.push("only one approach was asked: nothing to compare".into());
    }
    let mut j = Judgement {
        verdict: Verdict::Pass,
        checks,
        problems,
        valid_trials: answered,
        attempted_trials: asked,
        invalid_trials: group_reasons(&failures),
        ram_guard_tripped: hardware.ram_guard_tripped,
        skipped: None,
        notes: facts.notes.clone(),
        regressions: Vec::new(),
        baseline_run_id: None,
    };
    j.verdict = j.verdict_of_checks(asked == 0);
    j
}

/// What a RAG test leaves in `<run>/rag/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagResult {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The row.
    pub spec: RagSpec,
    /// The verdict and everything it rests on.
    pub judgement: Judgement,
    /// Per approach and the comparison.
    pub analysis: RagAnalysis,
    /// Documents in the direct prompt (the collection the retrievers chose from).
    pub documents: usize,
    /// Their tokens, by the calibrated ratio.
    pub documents_tokens: Option<f64>,
    /// Every answer.
    pub answers: Vec<AnswerRecord>,
    /// The server's `load_duration` of the load (s).
    pub load_s: Option<f64>,
    /// Seconds the server took to embed the documents (the embedding retriever's index).
    pub embed_index_s: Option<f64>,
    /// What the sampler saw.
    pub hardware: HardwareSummary,
    /// Host, server and model facts.
    pub metadata: RunMetadata,
    /// Wall time of the test (s).
    pub wall_s: f64,
}

impl RagResult {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }
}

/// What the phases of a RAG test that ran produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RagRan {
    /// Host, server and model facts.
    pub meta: RunMetadata,
    /// The server's `load_duration` (s).
    pub load_s: Option<f64>,
    /// Documents in the direct prompt.
    pub documents: usize,
    /// Their tokens, by the calibrated ratio.
    pub documents_tokens: Option<f64>,
    /// Seconds the server took to embed the documents.
    pub embed_index_s: Option<f64>,
    /// Every answer, in the order asked.
    pub answers: Vec<AnswerRecord>,
    /// What the sampler saw.
    pub hardware: HardwareSummary,
    /// Problems and notes.
    pub facts: QualityFacts,
}

/// What the phases of a RAG test produced.
#[derive(Debug, Clone, PartialEq)]
pub enum RagRun {
    /// It could not run here.
    Skipped {
        /// Facts recorded before the preflight failed.
        meta: Box<RunMetadata>,
        /// Why.
        why: String,
    },
    /// It ran (perhaps stopped early).
    Ran(Box<RagRan>),
}

/// The pure part: the result of a test from what its phases produced.
pub fn assemble(spec: &RagSpec, run: RagRun, wall_s: f64) -> RagResult {
    let (ran, skipped) = match run {
        RagRun::Ran(r) => (*r, None),
        RagRun::Skipped { meta, why } => (
            RagRan {
                meta: *meta,
                ..RagRan::default()
            },
            Some(why),
        ),
    };
    let analysis = analyse(&ran.answers);
    let mut facts = ran.facts.clone();
    facts.notes.extend(super::cut_answers_note(
        ran.answers
            .iter()
            .map(|r| (r.correct, r.trial.done_reason.as_deref())),
        spec.num_predict,
    ));
    let judgement = match skipped {
        Some(why) => Judgement::skipped(why),
        None => judge(spec, &analysis, &ran.answers, &ran.hardware, &facts),
    };
    RagResult {
        format_version: FORMAT_VERSION,
        spec: spec.clone(),
        judgement,
        analysis,
        documents: ran.documents,
        documents_tokens: ran.documents_tokens,
        answers: ran.answers,
        load_s: ran.load_s,
        embed_index_s: ran.embed_index_s,
        hardware: ran.hardware,
        metadata: ran.meta,
        wall_s,
    }
}

/// `O3_RAG_MATRIX`: the RAG table (relative paths from the crate root).
pub fn table_path() -> std::path::PathBuf {
    let p = std::env::var_os("O3_RAG_MATRIX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| DEFAULT_TABLE.into());
    if p.is_relative() {
        crate::config::crate_root().join(p)
    } else {
        p
    }
}

#[cfg(test)]
mod tests;
