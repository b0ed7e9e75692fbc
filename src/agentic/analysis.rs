//! What a session's turns mean, as pure functions of the turn records: each turn's processed
//! share, cache reuse and label, silent truncation, and per session the fits over history size
//! and time, the leak detector, success and accuracy with their Wilson intervals, the stability
//! score — and the typed judgement ([`judge`]).
//!
//! **Processed share.** Ollama's `prompt_eval_count` counts the whole prompt, cached or not;
//! `prompt_eval_duration` covers only what was processed. The first turn of every conversation
//! is uncached by construction (its system prompt opens with a nonce), so its
//! `prompt_eval_count / prompt_eval_duration` is the session's uncached prefill rate. A later
//! turn processed about `prompt_eval_duration × that rate` tokens: its processed share is that
//! over `prompt_eval_count`, clamped to [0, 1].
//!
//! **Cache reuse.** The prefix the server could have kept is the previous successful turn's
//! prompt plus its answer (`prompt_eval_count + eval_count`): everything but this turn's new
//! messages. Processed tokens beyond the new ones were a reprocessed prefix; reuse is
//! `1 − reprocessed / prefix`, clamped to [0, 1]: 1 for a perfect cache, 0 for none. A turn is
//! HIT at reuse ≥ [`HIT_MIN_REUSE`], MISS at ≤ [`MISS_MAX_REUSE`], PARTIAL between.
//!
//! **Silent truncation.** Within a conversation the history only grows, so the server must
//! count at least the previous prompt plus its answer; fewer (beyond [`PREFIX_SLACK`]) means
//! it dropped or shifted history. And a prompt counted more than
//! [`crate::measure::FILL_TOLERANCE`] below the history's calibrated size is cut too. Either
//! makes the session INVALID, naming the turn and the sizes.
//!
//! **Leak detector.** RSS after each turn, from the turn after the first [`RSS_WARMUP_TURNS`]
//! on, against wall-clock time: its growth (% of the RSS right after the load), a fitted MB per
//! minute, and the slope in each half of that span. Growth up to [`RSS_FLAT_PCT`] % is *flat*.
//! Above it, growth that levels off — the second half's slope below half the first's, or an
//! interval that reaches 0 — is *bounded* (a cache filling up to its limit, as llama.cpp's
//! host-memory prompt cache does); growth that keeps its pace, with the second half's
//! interval above 0, is *steady*: a leak, or a cache far from its limit.

use serde::{Deserialize, Serialize};

use super::table::SessionSpec;
use super::workload::Expected;
use crate::judgement::{
    Gate, GateCheck, GateState, Judgement, Verdict, group_reasons, too_few_valid,
};
use crate::results::{HardwareSummary, StabilityBreakdown, TrialKind, TrialRecord};
use crate::stability;
use crate::stats::{self, LineFit, Summary};

/// Reuse at or above which a turn is a HIT.
pub const HIT_MIN_REUSE: f64 = 0.8;
/// Reuse at or below which a turn is a MISS.
pub const MISS_MAX_REUSE: f64 = 0.2;
/// Tokens a prompt may count below the previous prompt plus its answer before it is taken for
/// a cut history: relative (a template may trim whitespace of an answer) …
pub const PREFIX_SLACK: f64 = 0.02;
/// … and absolute (end-of-turn markers).
pub const PREFIX_SLACK_TOKENS: u64 = 16;
/// Turns whose RSS the leak detector leaves out (the first allocations of a loaded model).
pub const RSS_WARMUP_TURNS: usize = 2;
/// Growth (% of the loaded RSS) up to which memory is flat.
pub const RSS_FLAT_PCT: f64 = 1.0;
/// Points the leak detector needs to tell bounded from steady growth.
pub const RSS_MIN_POINTS: usize = 6;

/// How much of a turn's reusable prefix the server reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CacheLabel {
    /// Reuse ≥ [`HIT_MIN_REUSE`].
    Hit,
    /// Between.
    Partial,
    /// Reuse ≤ [`MISS_MAX_REUSE`].
    Miss,
}

impl CacheLabel {
    /// `HIT`, `PARTIAL`, `MISS`.
    pub fn label(self) -> &'static str {
        match self {
            CacheLabel::Hit => "HIT",
            CacheLabel::Partial => "PARTIAL",
            CacheLabel::Miss => "MISS",
        }
    }

    fn of(reuse: f64) -> CacheLabel {
        if reuse >= HIT_MIN_REUSE {
            CacheLabel::Hit
        } else if reuse <= MISS_MAX_REUSE {
            CacheLabel::Miss
        } else {
            CacheLabel::Partial
        }
    }
}

/// A turn whose history the server cut: the sizes that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncation {
    /// The turn (1-based in the session test).
    pub turn: u32,
    /// The conversation it belongs to (1-based).
    pub conversation: u32,
    /// Messages sent.
    pub messages: u32,
    /// Characters of history sent.
    pub history_chars: usize,
    /// The history's calibrated size (tokens).
    pub history_tokens_est: u64,
    /// The server's `prompt_eval_count`.
    pub prompt_tokens: u64,
    /// The previous prompt plus its answer, which the history contains (absent on the first
    /// turn of a conversation).
    pub prefix_tokens: Option<u64>,
}

impl Truncation {
    /// In words, for the judgement.
    pub fn describe(&self) -> String {
        let prefix = self.prefix_tokens.map_or(String::new(), |p| {
            format!(", less than the {p} tokens of the previous prompt and its answer")
        });
        format!(
            "silent truncation at turn {} (conversation {}): the server counted {} prompt tokens for a history of {} messages, {} characters, about {} tokens{prefix}; the server dropped or shifted history",
            self.turn,
            self.conversation,
            self.prompt_tokens,
            self.messages,
            self.history_chars,
            self.history_tokens_est
        )
    }
}

/// One turn of a session: what was sent, what came back, what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// 1-based in the session test.
    pub turn: u32,
    /// 1-based conversation (a new one starts when the history reaches its budget).
    pub conversation: u32,
    /// 1-based within the conversation.
    pub turn_in_conversation: u32,
    /// What the turn did ([`super::workload::Turn::label`]).
    pub label: String,
    /// Seconds since the session's first turn was sent, at this turn's send.
    pub at_s: f64,
    /// Messages sent (the whole history).
    pub messages: u32,
    /// Characters of the messages sent.
    pub history_chars: usize,
    /// Characters of this turn's new messages.
    pub new_chars: usize,
    /// Characters per token used to size the history (calibrated from the server's counts).
    pub chars_per_token: f64,
    /// `history_chars / chars_per_token`.
    pub history_tokens_est: u64,
    /// The request's figures (TTFT, decode, the server's counts and durations, RSS after the
    /// turn, the busy-host guard's CPU figures); `valid` false when they cannot be trusted.
    pub trial: TrialRecord,
    /// The server's `prompt_eval_duration` (s).
    pub prompt_eval_s: Option<f64>,
    /// The server tree's CPU during the turn (percent of one core).
    pub server_cpu_pct: Option<f64>,
    /// A complete, valid response: `done: true`, no error, no stall, non-empty answer.
    pub success: bool,
    /// Why not, when the turn failed.
    pub failure: Option<String>,
    /// The expected fact.
    pub expected: Expected,
    /// The answer (at most [`ANSWER_KEPT_CHARS`] characters kept).
    pub answer: String,
    /// Whether the answer held the expected fact (absent when the turn failed).
    pub correct: Option<bool>,
    /// Derived ([`derive`]): the first turn of its conversation, whose prefill rate is the
    /// uncached reference.
    pub uncached_reference: bool,
    /// Derived: the uncached prefill rate used (tokens/s).
    pub reference_prefill_tps: Option<f64>,
    /// Derived: share of the prompt the server processed.
    pub processed_share: Option<f64>,
    /// Derived: the prefix the server could have kept (tokens).
    pub prefix_tokens: Option<u64>,
    /// Derived: share of that prefix not reprocessed.
    pub cache_reuse: Option<f64>,
    /// Derived: HIT, PARTIAL or MISS.
    pub cache: Option<CacheLabel>,
    /// Derived: the history was cut.
    pub truncation: Option<Truncation>,
}

/// Characters of an answer kept in the record.
pub const ANSWER_KEPT_CHARS: usize = 600;

impl TurnRecord {
    /// A successful turn with figures that can be trusted and an uncut history.
    pub fn measurable(&self) -> bool {
        self.success && self.trial.valid && self.truncation.is_none()
    }

    /// The server's prompt count.
    pub fn prompt_tokens(&self) -> Option<u64> {
        self.trial.prompt_tokens_evaluated.map(u64::from)
    }
}

/// Fills the derived fields of every turn, in order (each depends on the turns before it in
/// its conversation).
pub fn derive(turns: &mut [TurnRecord]) {
    let mut reference: Option<f64> = None;
    let mut last_ok: Option<(u32, u64)> = None; // (conversation, prompt + answer tokens)
    for t in turns.iter_mut() {
        t.uncached_reference = t.turn_in_conversation == 1;
        if t.uncached_reference {
            last_ok = None;
        }
        let count = t.prompt_tokens();
        if t.uncached_reference && t.success {
            reference = t.trial.prefill_tps_server.or(reference);
        }
        t.reference_prefill_tps = reference;
        t.prefix_tokens = last_ok
            .filter(|(c, _)| *c == t.conversation)
            .map(|(_, p)| p);
        t.processed_share = None;
        t.cache_reuse = None;
        t.cache = None;
        t.truncation = None;
        if !t.success {
            continue;
        }
        let Some(count) = count else { continue };
        // Truncation: the prefix the history holds, and the calibrated size.
        let short_of_prefix = t.prefix_tokens.is_some_and(|p| {
            (count as f64) < p as f64 * (1.0 - PREFIX_SLACK) - PREFIX_SLACK_TOKENS as f64
        });
        let short_of_estimate = t.turn > 1
            && (count as f64)
                < t.history_tokens_est as f64 * (1.0 - crate::measure::FILL_TOLERANCE);
        if short_of_prefix || short_of_estimate {
            t.truncation = Some(Truncation {
                turn: t.turn,
                conversation: t.conversation,
                messages: t.messages,
                history_chars: t.history_chars,
                history_tokens_est: t.history_tokens_est,
                prompt_tokens: count,
                prefix_tokens: t.prefix_tokens.filter(|_| short_of_prefix),
            });
        }
        if t.uncached_reference {
            t.processed_share = Some(1.0);
        } else if let (Some(rate), Some(d)) = (reference, t.prompt_eval_s)
            && count > 0
        {
            let processed = d * rate;
            t.processed_share = Some((processed / count as f64).clamp(0.0, 1.0));
            if let Some(prefix) = t.prefix_tokens.filter(|&p| p > 0) {
                let new = count.saturating_sub(prefix) as f64;
                let reprocessed = (processed - new).max(0.0);
                let reuse = (1.0 - reprocessed / prefix as f64).clamp(0.0, 1.0);
                t.cache_reuse = Some(reuse);
                t.cache = Some(CacheLabel::of(reuse));
            }
        }
        if t.truncation.is_none() {
            let answer = t.trial.output_tokens.map_or(0, u64::from);
            last_ok = Some((t.conversation, count + answer));
        } else {
            // A cut history breaks the prefix for the turns after it.
            last_ok = None;
        }
    }
}

/// The first turn from which every turn with a cache label missed, and what that costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheCliff {
    /// The turn (1-based).
    pub turn: u32,
    /// Labelled turns from it on (all MISS).
    pub misses: usize,
    /// Mean seconds per turn spent reprocessing the prefix (reprocessed tokens / the uncached
    /// prefill rate) from the cliff on.
    pub ttft_cost_s_per_turn: f64,
}

/// How the server tree's RSS moved over the session (the leak detector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryPattern {
    /// Growth up to [`RSS_FLAT_PCT`] % of the loaded size.
    Flat,
    /// Grew, then levelled off (a cache reaching its size).
    Bounded,
    /// Kept growing at its pace to the end: a leak, or a cache far from its limit.
    Steady,
    /// Too few turns with RSS figures to tell bounded from steady growth.
    TooFewTurns,
    /// No RSS figures (the server is not a process on this machine).
    NotMeasured,
}

impl MemoryPattern {
    /// For reports.
    pub fn label(self) -> &'static str {
        match self {
            MemoryPattern::Flat => "flat",
            MemoryPattern::Bounded => "bounded",
            MemoryPattern::Steady => "steady",
            MemoryPattern::TooFewTurns => "too few turns",
            MemoryPattern::NotMeasured => "not measured",
        }
    }
}

/// The leak detector's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RssGrowth {
    /// RSS right after the load (bytes): the loaded size.
    pub loaded_bytes: Option<u64>,
    /// RSS after the last warm-up turn (bytes).
    pub start_bytes: Option<u64>,
    /// RSS after the last turn (bytes).
    pub end_bytes: Option<u64>,
    /// `(end − start) / loaded × 100`.
    pub growth_pct: Option<f64>,
    /// MB (10^6 bytes) per minute over the span, with its interval.
    pub mb_per_min: Option<LineFit>,
    /// MB per minute in the first half of the span.
    pub first_half_mb_per_min: Option<LineFit>,
    /// MB per minute in the second half.
    pub second_half_mb_per_min: Option<LineFit>,
    /// The verdict of the detector.
    pub pattern: MemoryPattern,
}

/// Everything a session's turns add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAnalysis {
    /// Turns sent.
    pub turns: usize,
    /// Conversations started.
    pub conversations: u32,
    /// Conversations that reached the history budget.
    pub conversations_completed: u32,
    /// Turns that succeeded.
    pub succeeded: usize,
    /// Successful turns whose answer held the expected fact.
    pub correct: usize,
    /// Turns that succeeded with trustworthy figures and an uncut history.
    pub measurable: usize,
    /// `succeeded / turns`.
    pub success_rate: Option<f64>,
    /// Its 95 % Wilson interval.
    pub success_ci: Option<(f64, f64)>,
    /// `correct / succeeded`.
    pub accuracy: Option<f64>,
    /// Its 95 % Wilson interval.
    pub accuracy_ci: Option<(f64, f64)>,
    /// Client TTFT over measurable turns (s).
    pub ttft_s: Option<Summary>,
    /// p95 TTFT (linear interpolation; s).
    pub ttft_p95_s: Option<f64>,
    /// Client decode tok/s over measurable turns.
    pub decode_tps: Option<Summary>,
    /// Server decode tok/s over measurable turns.
    pub decode_tps_server: Option<Summary>,
    /// The deepest prompt the server counted (tokens).
    pub deepest_history_tokens: Option<u64>,
    /// TTFT against the server's prompt count: seconds per 1K tokens.
    pub ttft_per_1k: Option<LineFit>,
    /// Decode tok/s against the prompt count: tok/s per 1K tokens.
    pub decode_per_1k: Option<LineFit>,
    /// Decode tok/s against wall-clock minutes.
    pub decode_per_min: Option<LineFit>,
    /// Decode drift over the session: the fitted change from first to last turn, % of the mean.
    pub decode_drift_pct: Option<f64>,
    /// Uncached prefill rate, mean over the conversations' first turns (tokens/s).
    pub uncached_prefill_tps: Option<f64>,
    /// Mean cache reuse over labelled turns.
    pub cache_reuse: Option<f64>,
    /// Labelled turns: HIT, PARTIAL, MISS.
    pub hits: usize,
    /// See `hits`.
    pub partials: usize,
    /// See `hits`.
    pub misses: usize,
    /// The cache cliff, when every turn from some turn on missed.
    pub cache_cliff: Option<CacheCliff>,
    /// The leak detector.
    pub rss: RssGrowth,
    /// The stability score over the turns, by [`crate::stability`] (each turn a trial).
    pub stability: StabilityBreakdown,
    /// Turns whose history was cut.
    pub truncations: Vec<Truncation>,
}

/// Every turn as a measured trial of the stability score (valid = measurable).
pub fn as_trials(turns: &[TurnRecord]) -> Vec<TrialRecord> {
    turns
        .iter()
        .map(|t| TrialRecord {
            kind: TrialKind::Measured,
            valid: t.measurable(),
            ..t.trial.clone()
        })
        .collect()
}

fn rss_growth(turns: &[TurnRecord], loaded: Option<u64>) -> RssGrowth {
    let points: Vec<(f64, f64)> = turns
        .iter()
        .skip(RSS_WARMUP_TURNS)
        .filter_map(|t| {
            t.trial
                .rss_after_bytes
                .map(|b| (t.at_s / 60.0, b as f64 / 1e6))
        })
        .collect();
    let mut g = RssGrowth {
        loaded_bytes: loaded,
        start_bytes: points.first().map(|p| (p.1 * 1e6).round() as u64),
        end_bytes: points.last().map(|p| (p.1 * 1e6).round() as u64),
        growth_pct: None,
        mb_per_min: None,
        first_half_mb_per_min: None,
        second_half_mb_per_min: None,
        pattern: MemoryPattern::NotMeasured,
    };
    let base = loaded.or(g.start_bytes).filter(|&b| b > 0);
    let (Some(s), Some(e), Some(base)) = (g.start_bytes, g.end_bytes, base) else {
        return g;
    };
    let growth = (e as f64 - s as f64) / base as f64 * 100.0;
    g.growth_pct = Some(growth);
    let fit = |p: &[(f64, f64)]| {
        let (x, y): (Vec<f64>, Vec<f64>) = p.iter().copied().unzip();
        stats::line_fit(&x, &y)
    };
    g.mb_per_min = fit(&points);
    if points.len() < RSS_MIN_POINTS {
        g.pattern = if growth <= RSS_FLAT_PCT {
            MemoryPattern::Flat
        } else {
            MemoryPattern::TooFewTurns
        };
        return g;
    }
    let half = points.len() / 2;
    g.first_half_mb_per_min = fit(&points[..half]);
    g.second_half_mb_per_min = fit(&points[half..]);
    g.pattern = if growth <= RSS_FLAT_PCT {
        MemoryPattern::Flat
    } else {
        match (&g.first_half_mb_per_min, &g.second_half_mb_per_min) {
            (Some(a), Some(b))
                if b.ci_low.is_some_and(|lo| lo > 0.0) && b.slope >= 0.5 * a.slope =>
            {
                MemoryPattern::Steady
            }
            _ => MemoryPattern::Bounded,
        }
    };
    g
}

/// The analysis of a session's turns (derived fields filled by [`derive`] first).
pub fn analyse(
    turns: &[TurnRecord],
    loaded_rss: Option<u64>,
    conversations_completed: u32,
) -> SessionAnalysis {
    let ok: Vec<&TurnRecord> = turns.iter().filter(|t| t.measurable()).collect();
    let succeeded = turns.iter().filter(|t| t.success).count();
    let correct = turns.iter().filter(|t| t.correct == Some(true)).count();
    let of = |f: fn(&TurnRecord) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|t| f(t)).collect()
    };
    let ttft = of(|t| t.trial.ttft_s);
    let decode = of(|t| t.trial.decode_tps);
    let xy = |f: fn(&TurnRecord) -> Option<f64>, x: fn(&TurnRecord) -> Option<f64>| {
        let (xs, ys): (Vec<f64>, Vec<f64>) = ok.iter().filter_map(|t| Some((x(t)?, f(t)?))).unzip();
        stats::line_fit(&xs, &ys)
    };
    let k_tokens = |t: &TurnRecord| t.prompt_tokens().map(|n| n as f64 / 1000.0);
    let minutes = |t: &TurnRecord| Some(t.at_s / 60.0);
    let decode_per_min = xy(|t| t.trial.decode_tps, minutes);
    let span_min = match (ok.first(), ok.last()) {
        (Some(a), Some(b)) => (b.at_s - a.at_s) / 60.0,
        _ => 0.0,
    };
    let decode_summary = stats::summarize(&decode);
    let decode_drift_pct = match (&decode_per_min, &decode_summary) {
        (Some(f), Some(s)) if s.mean > 0.0 => Some(f.slope * span_min / s.mean * 100.0),
        _ => None,
    };
    let labelled: Vec<&TurnRecord> = turns.iter().filter(|t| t.cache.is_some()).collect();
    let count = |l| labelled.iter().filter(|t| t.cache == Some(l)).count();
    let reuse: Vec<f64> = labelled.iter().filter_map(|t| t.cache_reuse).collect();
    let references: Vec<f64> = turns
        .iter()
        .filter(|t| t.uncached_reference && t.success)
        .filter_map(|t| t.trial.prefill_tps_server)
        .collect();
    SessionAnalysis {
        turns: turns.len(),
        conversations: turns.iter().map(|t| t.conversation).max().unwrap_or(0),
        conversations_completed,
        succeeded,
        correct,
        measurable: ok.len(),
        success_rate: (!turns.is_empty()).then(|| succeeded as f64 / turns.len() as f64),
        success_ci: stats::wilson(succeeded, turns.len()),
        accuracy: (succeeded > 0).then(|| correct as f64 / succeeded as f64),
        accuracy_ci: stats::wilson(correct, succeeded),
        ttft_p95_s: stats::percentile(&ttft, 0.95),
        ttft_s: stats::summarize(&ttft),
        decode_tps: decode_summary,
        decode_tps_server: stats::summarize(&of(|t| t.trial.decode_tps_server)),
        deepest_history_tokens: ok.iter().filter_map(|t| t.prompt_tokens()).max(),
        ttft_per_1k: xy(|t| t.trial.ttft_s, k_tokens),
        decode_per_1k: xy(|t| t.trial.decode_tps, k_tokens),
        decode_per_min,
        decode_drift_pct,
        uncached_prefill_tps: stats::mean(&references),
        cache_reuse: stats::mean(&reuse),
        hits: count(CacheLabel::Hit),
        partials: count(CacheLabel::Partial),
        misses: count(CacheLabel::Miss),
        cache_cliff: cache_cliff(&labelled),
        rss: rss_growth(turns, loaded_rss),
        stability: stability::score(&as_trials(turns)),
        truncations: turns.iter().filter_map(|t| t.truncation.clone()).collect(),
    }
}

fn cache_cliff(labelled: &[&TurnRecord]) -> Option<CacheCliff> {
    let tail = labelled
        .iter()
        .rev()
        .take_while(|t| t.cache == Some(CacheLabel::Miss))
        .count();
    if tail == 0 {
        return None;
    }
    let from = &labelled[labelled.len() - tail..];
    let costs: Vec<f64> = from
        .iter()
        .filter_map(|t| {
            let (share, count, prefix, rate) = (
                t.processed_share?,
                t.prompt_tokens()?,
                t.prefix_tokens?,
                t.reference_prefill_tps?,
            );
            let new = count.saturating_sub(prefix) as f64;
            let reprocessed = (share * count as f64 - new).max(0.0);
            Some(reprocessed / rate)
        })
        .collect();
    Some(CacheCliff {
        turn: from[0].turn,
        misses: tail,
        ttft_cost_s_per_turn: stats::mean(&costs).unwrap_or(0.0),
    })
}

/// Facts of the session beyond its turns that its verdict rests on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFacts {
    /// Problems that make the session's figures untrustworthy (the run could not go on, …).
    pub problems: Vec<String>,
    /// Notes that change nothing.
    pub notes: Vec<String>,
}

/// Turns a session needs before its figures mean anything.
pub const MIN_TURNS: usize = 2;

/// The verdict of a session, by the cells' rules: system RAM over its limit → FAIL; silent
/// truncation, a problem, fewer than [`MIN_TURNS`] turns, or too few measurable turns among
/// the successful ones → INVALID; a gate that fails → FAIL (success, accuracy and stability
/// only when their whole interval does); an interval that straddles a limit → MARGINAL;
/// otherwise PASS.
pub fn judge(
    spec: &SessionSpec,
    a: &SessionAnalysis,
    turns: &[TurnRecord],
    hardware: &HardwareSummary,
    facts: &SessionFacts,
) -> Judgement {
    let g = &spec.gates;
    let mut checks = vec![
        GateCheck::from_interval(
            Gate::Success,
            a.success_rate,
            a.success_ci,
            a.turns,
            g.success_min,
        ),
        GateCheck::of_summary(Gate::TokS, a.decode_tps.as_ref(), g.tok_s_min),
        GateCheck::from_interval(
            Gate::TtftP95,
            a.ttft_p95_s,
            None,
            a.measurable,
            g.ttft_p95_max_s,
        ),
    ];
    let mut rss = GateCheck::from_interval(
        Gate::RssGrowth,
        a.rss.growth_pct,
        None,
        turns.len().saturating_sub(RSS_WARMUP_TURNS),
        g.rss_growth_max_pct,
    );
    let mut notes = facts.notes.clone();
    if a.rss.growth_pct.is_none() {
        // Nothing to hold against the limit (a remote server): not a failure, but said.
        rss.state = GateState::Pass;
        notes.push(format!(
            "RSS growth not measured: no RSS figures of the server's processes after the first {RSS_WARMUP_TURNS} turns"
        ));
    }
    checks.push(rss);
    let st = &a.stability;
    checks.push(GateCheck::from_interval(
        Gate::Stability,
        Some(st.score),
        st.ci_low.zip(st.ci_high),
        st.n,
        g.stability_min,
    ));
    if let Some(min) = g.accuracy_min {
        checks.push(GateCheck::from_interval(
            Gate::Accuracy,
            a.accuracy,
            a.accuracy_ci,
            a.succeeded,
            min,
        ));
    }
    checks.push(crate::gates::ram_check(hardware, g.ram_max_pct));
    let mut problems = facts.problems.clone();
    problems.extend(a.truncations.iter().map(Truncation::describe));
    if a.turns < MIN_TURNS {
        problems.push(format!(
            "only {} turn(s) in the session: at least {MIN_TURNS} are needed (a longer duration_s?)",
            a.turns
        ));
    }
    let invalid_reasons: Vec<String> = turns
        .iter()
        .filter(|t| t.success && !t.trial.valid)
        .flat_map(|t| t.trial.invalid_reasons.iter().cloned())
        .collect();
    let mut j = Judgement {
        verdict: Verdict::Pass,
        checks,
        problems,
        valid_trials: a.measurable,
        attempted_trials: a.succeeded,
        invalid_trials: group_reasons(&invalid_reasons),
        ram_guard_tripped: hardware.ram_guard_tripped,
        skipped: None,
        notes,
        regressions: Vec::new(),
        baseline_run_id: None,
    };
    // Turns that failed count against success, not as invalid measurements; a session with
    // fewer than two successes fails on success instead of being INVALID.
    let too_few = a.succeeded >= 2 && too_few_valid(a.measurable, a.succeeded);
    j.verdict = j.verdict_of_checks(too_few);
    j
}
