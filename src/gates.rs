//! Verdicts: PASS, MARGINAL, FAIL, INVALID or SKIPPED, as a typed [`Judgement`].
//!
//! Gates (from the table): TTFT mean < `ttft_max_s`; client decode tok/s mean > `tok_s_min`;
//! stability score > `stability_min`; system RAM peak ≤ `ram_max_pct`.
//!
//! Order of precedence: RAM over its limit → FAIL; too few valid trials or a cell-level
//! validity problem → INVALID; any gate whose mean fails → FAIL; a gate whose mean passes but
//! whose 95 % interval straddles the limit → MARGINAL; otherwise PASS. The stability score is
//! judged on its bootstrap interval ([`crate::stability`]): it FAILs only when the whole
//! interval lies on the failing side, and is MARGINAL whenever the interval straddles the limit.
//!
//! Everything a report says about a verdict comes from the [`Judgement`]'s typed fields; the
//! sentences are rendered here ([`GateCheck::describe`], [`Judgement::reasons`]) and nothing
//! parses them back.

use serde::{Deserialize, Serialize};

use crate::results::{CellSpec, CellSummaries, HardwareSummary, StabilityBreakdown, Verdict};
use crate::stats::Summary;

/// A gate of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Client TTFT mean below `ttft_max_s`.
    Ttft,
    /// Client decode rate mean above `tok_s_min`.
    TokS,
    /// Stability score above `stability_min`.
    Stability,
    /// System RAM peak at or below `ram_max_pct`.
    Ram,
}

impl Gate {
    /// Every gate, in the order reports list them.
    pub const ALL: [Gate; 4] = [Gate::Ttft, Gate::TokS, Gate::Stability, Gate::Ram];

    /// Short label as the reports print it (`TTFT`, `tok/s`, `stability`, `RAM`).
    pub fn label(self) -> &'static str {
        match self {
            Gate::Ttft => "TTFT",
            Gate::TokS => "tok/s",
            Gate::Stability => "stability",
            Gate::Ram => "RAM",
        }
    }

    /// The table column that sets the limit.
    pub fn column(self) -> &'static str {
        match self {
            Gate::Ttft => "ttft_max_s",
            Gate::TokS => "tok_s_min",
            Gate::Stability => "stability_min",
            Gate::Ram => "ram_max_pct",
        }
    }

    /// Whether smaller values pass.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Gate::Ttft | Gate::Ram)
    }

    /// The limit of this gate in `spec`.
    pub fn limit(self, spec: &CellSpec) -> f64 {
        let g = &spec.gates;
        match self {
            Gate::Ttft => g.ttft_max_s,
            Gate::TokS => g.tok_s_min,
            Gate::Stability => g.stability_min,
            Gate::Ram => g.ram_max_pct,
        }
    }
}

/// Where one gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// The interval lies on the passing side of the limit.
    Pass,
    /// The mean passes, the interval straddles the limit.
    Straddles,
    /// The mean fails, the interval straddles the limit.
    FailsStraddling,
    /// The interval lies on the failing side of the limit.
    Fail,
    /// No data.
    Unknown,
}

/// One gate's check: the measured figure, its interval and the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    /// Which gate.
    pub gate: Gate,
    /// Its state.
    pub state: GateState,
    /// The figure judged (the mean; the point score for stability; the peak for RAM); absent
    /// when nothing valid was measured.
    pub value: Option<f64>,
    /// Lower end of the 95 % interval of `value`, when it has one.
    pub ci_low: Option<f64>,
    /// Upper end of the 95 % interval of `value`, when it has one.
    pub ci_high: Option<f64>,
    /// Sample size behind `value` (trials; RAM: hardware samples).
    pub n: usize,
    /// The limit from the table.
    pub limit: f64,
}

impl GateCheck {
    fn from_interval(
        gate: Gate,
        value: Option<f64>,
        ci: Option<(f64, f64)>,
        n: usize,
        limit: f64,
    ) -> GateCheck {
        let Some(v) = value else {
            return GateCheck {
                gate,
                state: GateState::Unknown,
                value: None,
                ci_low: None,
                ci_high: None,
                n,
                limit,
            };
        };
        let passes = |x: f64| {
            if gate.lower_is_better() {
                x < limit
            } else {
                x > limit
            }
        };
        // The interval end on the failing side, and on the passing side.
        let (worst, best) = match ci {
            Some((lo, hi)) if gate.lower_is_better() => (hi, lo),
            Some((lo, hi)) => (lo, hi),
            None => (v, v),
        };
        let state = match (passes(v), passes(worst), passes(best)) {
            (true, true, _) => GateState::Pass,
            (true, false, _) => GateState::Straddles,
            (false, _, true) => GateState::FailsStraddling,
            (false, _, false) => GateState::Fail,
        };
        GateCheck {
            gate,
            state,
            value,
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            n,
            limit,
        }
    }

    fn of_summary(gate: Gate, s: Option<&Summary>, limit: f64) -> GateCheck {
        let ci = s.and_then(|s| s.ci_low.zip(s.ci_high));
        GateCheck::from_interval(gate, s.map(|s| s.mean), ci, s.map_or(0, |s| s.n), limit)
    }

    /// Whether the interval exists (n ≥ 2 for means, a bootstrap for stability).
    pub fn has_interval(&self) -> bool {
        self.ci_low.is_some() && self.ci_high.is_some()
    }

    /// Whether this check makes the cell FAIL. A mean on the failing side fails, except for
    /// stability, which fails only when its whole interval does.
    pub fn fails(&self) -> bool {
        match self.state {
            GateState::Fail | GateState::Unknown => true,
            GateState::FailsStraddling => self.gate != Gate::Stability,
            GateState::Pass | GateState::Straddles => false,
        }
    }

    /// Whether this check makes a cell that fails no gate MARGINAL.
    pub fn straddles(&self) -> bool {
        match self.state {
            GateState::Straddles => true,
            GateState::FailsStraddling => self.gate == Gate::Stability,
            _ => false,
        }
    }

    /// The check in words: `TTFT mean 4.00 s (95% CI 3.75–4.25, n=3) < limit 8 s`.
    pub fn describe(&self) -> String {
        let Some(v) = self.value else {
            let what = match self.gate {
                Gate::Ttft => "TTFT",
                Gate::TokS => "decode",
                Gate::Stability => "stability",
                Gate::Ram => "system RAM",
            };
            return format!("{what}: no valid measurement");
        };
        let passing = matches!(self.state, GateState::Pass | GateState::Straddles);
        let cmp = match (passing, self.gate.lower_is_better()) {
            (true, true) => "<",
            (true, false) => ">",
            (false, true) => "≥",
            (false, false) => "≤",
        };
        let interval = |digits: usize| match (self.ci_low, self.ci_high) {
            (Some(lo), Some(hi)) => format!(" (95% CI {lo:.digits$}–{hi:.digits$}, n={})", self.n),
            _ => format!(" (n={})", self.n),
        };
        let limit = self.limit;
        match self.gate {
            Gate::Ttft => format!("TTFT mean {v:.2} s{} {cmp} limit {limit} s", interval(2)),
            Gate::TokS => format!(
                "decode mean {v:.2} tok/s{} {cmp} limit {limit} tok/s",
                interval(2)
            ),
            Gate::Stability => format!("stability {v:.2}{} {cmp} limit {limit}", interval(2)),
            Gate::Ram => {
                let cmp = if passing { "≤" } else { ">" };
                format!("system RAM peaked at {v:.1}% {cmp} limit {limit}%")
            }
        }
    }
}

/// An invalid-trial reason and how many measured trials gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// The reason, as the trial recorded it.
    pub reason: String,
    /// Measured trials that gave it.
    pub count: usize,
}

impl ReasonCount {
    /// `reason` or `reason (×n)`.
    pub fn describe(&self) -> String {
        if self.count > 1 {
            format!("{} (×{})", self.reason, self.count)
        } else {
            self.reason.clone()
        }
    }
}

/// Reasons of invalid trials with repeats counted, in first-seen order.
pub fn group_reasons<'a>(reasons: impl IntoIterator<Item = &'a String>) -> Vec<ReasonCount> {
    let mut groups: Vec<ReasonCount> = Vec::new();
    for r in reasons {
        match groups.iter_mut().find(|g| &g.reason == r) {
            Some(g) => g.count += 1,
            None => groups.push(ReasonCount {
                reason: r.clone(),
                count: 1,
            }),
        }
    }
    groups
}

/// The rule that makes a cell INVALID for its trials: fewer than 2 valid, or more than half of
/// the attempted trials invalid. The trial loop stops early by the same rule
/// ([`hopelessly_invalid`]).
pub fn too_few_valid(valid: usize, attempted: usize) -> bool {
    valid < 2 || valid * 2 < attempted
}

/// Whether so many trials are invalid that no further trial can make the cell valid: more
/// than half of `max_trials` already invalid.
pub fn hopelessly_invalid(invalid: usize, max_trials: u32) -> bool {
    invalid * 2 > max_trials as usize
}

/// Inputs of a verdict beyond the summaries.
#[derive(Debug, Clone, Default)]
pub struct CellFacts {
    /// Valid measured trials.
    pub valid: usize,
    /// Attempted measured trials.
    pub attempted: usize,
    /// Reasons of the invalid measured trials (one per reason per trial).
    pub trial_reasons: Vec<String>,
    /// Problems that make the whole cell untrustworthy (context clamped, server error, …).
    pub cell_invalid: Vec<String>,
    /// Notes: facts worth knowing that do not change the verdict.
    pub notes: Vec<String>,
}

/// The verdict of a cell and everything it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Every gate checked, in [`Gate::ALL`] order (empty when the cell was not judged on its
    /// gates: skipped, or invalid before any gate could be read).
    pub checks: Vec<GateCheck>,
    /// Cell-level problems that make its numbers untrustworthy (INVALID): the context was
    /// clamped, a request failed, … Too few valid trials is read from the counts below.
    pub problems: Vec<String>,
    /// Valid and attempted measured trials.
    pub valid_trials: usize,
    /// Attempted measured trials.
    pub attempted_trials: usize,
    /// Why measured trials were invalid, counted.
    pub invalid_trials: Vec<ReasonCount>,
    /// Whether the RAM guard stopped the cell.
    pub ram_guard_tripped: bool,
    /// Why the cell could not run here (SKIPPED).
    pub skipped: Option<String>,
    /// Notes that do not change the verdict.
    pub notes: Vec<String>,
}

impl Judgement {
    /// The judgement of a cell that could not run here.
    pub fn skipped(why: String) -> Judgement {
        Judgement {
            verdict: Verdict::Skipped,
            checks: Vec::new(),
            problems: Vec::new(),
            valid_trials: 0,
            attempted_trials: 0,
            invalid_trials: Vec::new(),
            ram_guard_tripped: false,
            skipped: Some(why),
            notes: Vec::new(),
        }
    }

    /// The check of `gate`, when it was checked.
    pub fn check(&self, gate: Gate) -> Option<&GateCheck> {
        self.checks.iter().find(|c| c.gate == gate)
    }

    /// The gates that made the cell FAIL (empty for any other verdict), in [`Gate::ALL`] order.
    pub fn failed_gates(&self) -> Vec<Gate> {
        if self.verdict != Verdict::Fail {
            return Vec::new();
        }
        // RAM over its limit fails the cell before any other gate is read.
        if self.ram_failed() {
            return vec![Gate::Ram];
        }
        self.checks
            .iter()
            .filter(|c| c.fails())
            .map(|c| c.gate)
            .collect()
    }

    /// The summary of the invalid measured trials: `only 1 of 3 measured trials valid: …`.
    fn trials_sentence(&self) -> String {
        let grouped: Vec<String> = self.invalid_trials.iter().map(|r| r.describe()).collect();
        let mut msg = format!(
            "only {} of {} measured trials valid",
            self.valid_trials, self.attempted_trials
        );
        if !grouped.is_empty() {
            msg.push_str(": ");
            msg.push_str(&grouped.join("; "));
        }
        msg
    }

    /// The reasons for the verdict in words, then the notes (each prefixed `note: `): what the
    /// reports and the test output print. Rendered from the typed fields, never stored.
    pub fn reasons(&self) -> Vec<String> {
        let mut out: Vec<String> = match self.verdict {
            Verdict::Skipped => self.skipped.iter().cloned().collect(),
            Verdict::Invalid => {
                let mut v = self.problems.clone();
                if self.too_few_valid() {
                    v.push(self.trials_sentence());
                }
                v
            }
            Verdict::Fail if self.ram_failed() => {
                let ram = self.check(Gate::Ram).expect("ram_failed checks it");
                let mut line = ram.describe();
                if self.ram_guard_tripped {
                    line.push_str("; the cell was stopped");
                }
                vec![line]
            }
            Verdict::Fail => self
                .checks
                .iter()
                .filter(|c| c.fails())
                .map(GateCheck::describe)
                .collect(),
            Verdict::Marginal => self
                .checks
                .iter()
                .filter(|c| c.straddles())
                .map(|c| format!("{}: the 95% interval straddles the limit", c.describe()))
                .collect(),
            Verdict::Pass => {
                let mut v: Vec<String> = self
                    .checks
                    .iter()
                    .filter(|c| c.gate != Gate::Ram)
                    .map(GateCheck::describe)
                    .collect();
                if self.valid_trials < self.attempted_trials {
                    let grouped: Vec<String> =
                        self.invalid_trials.iter().map(|r| r.describe()).collect();
                    v.push(format!(
                        "{} of {} measured trials invalid and not scored: {}",
                        self.attempted_trials - self.valid_trials,
                        self.attempted_trials,
                        grouped.join("; ")
                    ));
                }
                v
            }
        };
        out.extend(self.notes.iter().map(|n| format!("note: {n}")));
        out
    }

    /// Whether the trials alone make the cell INVALID ([`too_few_valid`]).
    pub fn too_few_valid(&self) -> bool {
        too_few_valid(self.valid_trials, self.attempted_trials)
    }

    fn ram_failed(&self) -> bool {
        self.check(Gate::Ram).is_some_and(GateCheck::fails)
    }
}

/// Checks every gate of a cell, in [`Gate::ALL`] order.
pub fn check_gates(
    spec: &CellSpec,
    summaries: &CellSummaries,
    stability: &StabilityBreakdown,
    hardware: &HardwareSummary,
) -> Vec<GateCheck> {
    let ram_value =
        (hardware.samples > 0 || hardware.ram_guard_tripped).then_some(hardware.system_peak_pct);
    let mut ram = GateCheck::from_interval(
        Gate::Ram,
        ram_value,
        None,
        hardware.samples as usize,
        Gate::Ram.limit(spec),
    );
    // Without samples there is nothing to hold against the limit: not a failure.
    if ram_value.is_none() {
        ram.state = GateState::Pass;
    }
    // The RAM guard stops a cell on a sample above the limit: that fails whatever the peak.
    if hardware.ram_guard_tripped {
        ram.state = GateState::Fail;
    }
    vec![
        GateCheck::of_summary(
            Gate::Ttft,
            summaries.ttft_s.as_ref(),
            Gate::Ttft.limit(spec),
        ),
        GateCheck::of_summary(
            Gate::TokS,
            summaries.decode_tps.as_ref(),
            Gate::TokS.limit(spec),
        ),
        GateCheck::from_interval(
            Gate::Stability,
            Some(stability.score),
            stability.ci_low.zip(stability.ci_high),
            stability.n,
            Gate::Stability.limit(spec),
        ),
        ram,
    ]
}

/// Whether the verdict is already clear from the intervals: some gate clearly fails, or every
/// gate clearly passes. A gate without an interval is never clear (RAM aside, which is a peak).
pub fn verdict_clear(checks: &[GateCheck]) -> bool {
    let with_interval = |c: &&GateCheck| c.gate == Gate::Ram || c.has_interval();
    checks
        .iter()
        .filter(with_interval)
        .any(|c| c.state == GateState::Fail)
        || checks
            .iter()
            .all(|c| with_interval(&c) && c.state == GateState::Pass)
}

/// The verdict of a cell, with everything it rests on.
pub fn judge(
    spec: &CellSpec,
    summaries: &CellSummaries,
    stability: &StabilityBreakdown,
    hardware: &HardwareSummary,
    facts: &CellFacts,
) -> Judgement {
    let checks = check_gates(spec, summaries, stability, hardware);
    let mut j = Judgement {
        verdict: Verdict::Pass,
        checks,
        problems: facts.cell_invalid.clone(),
        valid_trials: facts.valid,
        attempted_trials: facts.attempted,
        invalid_trials: group_reasons(&facts.trial_reasons),
        ram_guard_tripped: hardware.ram_guard_tripped,
        skipped: None,
        notes: facts.notes.clone(),
    };
    if j.ram_failed() {
        j.verdict = Verdict::Fail;
        return j;
    }
    j.verdict = if !j.problems.is_empty() || j.too_few_valid() {
        Verdict::Invalid
    } else if j.checks.iter().any(GateCheck::fails) {
        Verdict::Fail
    } else if j.checks.iter().any(GateCheck::straddles) {
        Verdict::Marginal
    } else {
        Verdict::Pass
    };
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Gates;
    use crate::stats::summarize;
    use rstest::rstest;

    fn spec() -> CellSpec {
        CellSpec {
            test_name: "m::ctx_64k".into(),
            name: "m".into(),
            model: "m".into(),
            category: "c".into(),
            num_ctx: 65536,
            fill_tokens: 1024,
            num_batch: 8,
            num_thread: 16,
            num_predict: 128,
            gates: Gates {
                ttft_max_s: 8.0,
                tok_s_min: 6.0,
                stability_min: 0.8,
                ram_max_pct: 80.0,
            },
            use_case: "u".into(),
            optional: false,
            optimize: true,
            source: "m.csv:2".into(),
        }
    }

    fn sums(ttft: &[f64], tps: &[f64]) -> CellSummaries {
        CellSummaries {
            ttft_s: summarize(ttft),
            decode_tps: summarize(tps),
            ..CellSummaries::default()
        }
    }

    /// A stability score with a narrow interval around it.
    fn stab(score: f64) -> StabilityBreakdown {
        StabilityBreakdown {
            score,
            ci_low: Some(score - 0.01),
            ci_high: Some(score + 0.01),
            n: 3,
            ..StabilityBreakdown::default()
        }
    }

    fn stab_ci(score: f64, lo: f64, hi: f64) -> StabilityBreakdown {
        StabilityBreakdown {
            ci_low: Some(lo),
            ci_high: Some(hi),
            ..stab(score)
        }
    }

    fn facts(valid: usize, attempted: usize) -> CellFacts {
        CellFacts {
            valid,
            attempted,
            ..CellFacts::default()
        }
    }

    fn hw(peak: f64) -> HardwareSummary {
        HardwareSummary {
            system_peak_pct: peak,
            samples: 10,
            ..HardwareSummary::default()
        }
    }

    #[test]
    fn clear_pass() {
        let j = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        let r = j.reasons();
        assert!(r[0].starts_with("TTFT mean 4.00 s (95% CI"), "{r:?}");
        assert_eq!(
            j.checks.iter().map(|c| c.gate).collect::<Vec<_>>(),
            Gate::ALL
        );
        assert!(j.failed_gates().is_empty());
    }

    #[test]
    fn ttft_over_limit_fails_with_value_and_limit() {
        let j = judge(
            &spec(),
            &sums(&[9.3, 9.4, 9.2], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.failed_gates(), [Gate::Ttft]);
        let r = j.reasons();
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("TTFT mean 9.30 s") && r[0].contains("≥ limit 8 s"),
            "{r:?}"
        );
        let c = j.check(Gate::Ttft).unwrap();
        assert_eq!((c.state, c.limit, c.n), (GateState::Fail, 8.0, 3));
        assert!((c.value.unwrap() - 9.3).abs() < 1e-9);
    }

    #[test]
    fn straddling_interval_is_marginal() {
        // Mean 7.5 < 8 but the interval reaches past 8.
        let j = judge(
            &spec(),
            &sums(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Marginal, "{j:?}");
        assert!(j.reasons()[0].contains("straddles"), "{j:?}");
    }

    #[test]
    fn stability_whose_interval_lies_below_fails() {
        let j = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(0.62),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.failed_gates(), [Gate::Stability]);
        assert_eq!(
            j.reasons(),
            ["stability 0.62 (95% CI 0.61–0.63, n=3) ≤ limit 0.8"]
        );
    }

    /// The case of a quiet CI machine: one slow first trial gives a point score below the
    /// limit while its interval reaches above it. That is MARGINAL, not FAIL.
    #[test]
    fn stability_below_the_limit_with_an_interval_above_is_marginal() {
        let j = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab_ci(0.58, 0.41, 0.97),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Marginal, "{j:?}");
        assert!(j.failed_gates().is_empty());
        assert_eq!(
            j.reasons(),
            [
                "stability 0.58 (95% CI 0.41–0.97, n=3) ≤ limit 0.8: the 95% interval straddles the limit"
            ]
        );
    }

    #[test]
    fn ram_over_limit_fails_first() {
        let mut h = hw(83.0);
        h.ram_guard_tripped = true;
        let j = judge(&spec(), &sums(&[], &[]), &stab(0.0), &h, &facts(0, 1));
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.failed_gates(), [Gate::Ram]);
        let r = j.reasons();
        assert_eq!(
            r,
            ["system RAM peaked at 83.0% > limit 80%; the cell was stopped"]
        );
    }

    #[test]
    fn unsampled_hardware_is_no_ram_failure() {
        let j = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &HardwareSummary::default(),
            &facts(3, 3),
        );
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        assert_eq!(j.check(Gate::Ram).unwrap().value, None);
    }

    #[rstest]
    #[case(1, 1)]
    #[case(2, 5)]
    #[case(0, 0)]
    fn too_few_valid_trials_is_invalid(#[case] valid: usize, #[case] attempted: usize) {
        let mut f = facts(valid, attempted);
        f.trial_reasons = vec!["prompt truncated: x".into(), "prompt truncated: x".into()];
        let j = judge(&spec(), &sums(&[4.0], &[10.0]), &stab(1.0), &hw(10.0), &f);
        assert_eq!(j.verdict, Verdict::Invalid);
        let r = j.reasons();
        assert!(
            r[0].starts_with(&format!("only {valid} of {attempted}")),
            "{r:?}"
        );
        assert!(r[0].contains("prompt truncated: x (×2)"), "{r:?}");
        assert_eq!(
            j.invalid_trials,
            [ReasonCount {
                reason: "prompt truncated: x".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn cell_level_problems_are_invalid_and_notes_stay_apart() {
        let mut f = facts(3, 3);
        f.cell_invalid = vec!["server clamped num_ctx".into()];
        f.notes = vec!["/api/ps failed".into()];
        let j = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(1.0),
            &hw(10.0),
            &f,
        );
        assert_eq!(j.verdict, Verdict::Invalid);
        assert_eq!(j.problems, ["server clamped num_ctx"]);
        assert_eq!(j.notes, ["/api/ps failed"]);
        assert_eq!(
            j.reasons(),
            ["server clamped num_ctx", "note: /api/ps failed"]
        );
    }

    #[test]
    fn the_invalid_rule_is_one_rule() {
        assert!(too_few_valid(1, 1));
        assert!(too_few_valid(2, 5));
        assert!(!too_few_valid(2, 4));
        assert!(!too_few_valid(3, 3));
        assert!(hopelessly_invalid(6, 10));
        assert!(!hopelessly_invalid(5, 10));
    }

    #[rstest]
    #[case(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], 0.9, true)] // all clear pass
    #[case(&[9.0, 9.1, 8.9], &[10.0, 10.1, 9.9], 0.9, true)] // clear fail
    #[case(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9], 0.9, false)] // straddles
    #[case(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], 0.5, true)] // stability interval fails
    fn clearness(#[case] ttft: &[f64], #[case] tps: &[f64], #[case] st: f64, #[case] clear: bool) {
        let checks = check_gates(&spec(), &sums(ttft, tps), &stab(st), &hw(10.0));
        assert_eq!(verdict_clear(&checks), clear, "{checks:?}");
    }

    #[test]
    fn a_point_estimate_is_never_clear() {
        // A stability score without an interval cannot stop the loop, whichever side it is on.
        let point = StabilityBreakdown {
            score: 0.2,
            ..StabilityBreakdown::default()
        };
        let checks = check_gates(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &point,
            &hw(10.0),
        );
        assert!(!verdict_clear(&checks), "{checks:?}");
    }

    #[test]
    fn judgements_round_trip_through_json() {
        let j = judge(
            &spec(),
            &sums(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        let back: Judgement = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
