//! How a cell is judged: its gates checked against the table's limits, then the verdict.
//!
//! Gates (from the table): TTFT mean < `ttft_max_s`; client decode tok/s mean > `tok_s_min`;
//! stability score > `stability_min`; system RAM peak ≤ `ram_max_pct`.
//!
//! Order of precedence: RAM over its limit → FAIL; too few valid trials or a cell-level
//! validity problem → INVALID; any gate whose mean fails → FAIL; a gate whose mean passes but
//! whose 95 % interval straddles the limit → MARGINAL; otherwise PASS. The stability score is
//! judged on its bootstrap interval ([`crate::stability`]): it FAILs only when the whole
//! interval lies on the failing side, and is MARGINAL whenever the interval straddles the limit.
//! The result is a typed [`Judgement`] ([`crate::judgement`]).

pub use crate::judgement::{
    Gate, GateCheck, GateState, Judgement, ReasonCount, group_reasons, hopelessly_invalid,
    too_few_valid,
};
use crate::results::{CellSpec, CellSummaries, HardwareSummary, StabilityBreakdown, Verdict};

/// The limit of `gate` in `spec`.
pub fn limit(gate: Gate, spec: &CellSpec) -> f64 {
    let g = &spec.gates;
    match gate {
        Gate::Ttft => g.ttft_max_s,
        Gate::TokS => g.tok_s_min,
        Gate::Stability => g.stability_min,
        Gate::Ram => g.ram_max_pct,
        // Session gates live in the session table (crate::agentic::table), not in a cell's.
        Gate::Success | Gate::TtftP95 | Gate::RssGrowth | Gate::Accuracy => f64::NAN,
    }
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

/// Checks every gate of a cell, in [`Gate::ALL`] order.
pub fn check_gates(
    spec: &CellSpec,
    summaries: &CellSummaries,
    stability: &StabilityBreakdown,
    hardware: &HardwareSummary,
) -> Vec<GateCheck> {
    let ram = ram_check(hardware, limit(Gate::Ram, spec));
    vec![
        GateCheck::of_summary(
            Gate::Ttft,
            summaries.ttft_s.as_ref(),
            limit(Gate::Ttft, spec),
        ),
        GateCheck::of_summary(
            Gate::TokS,
            summaries.decode_tps.as_ref(),
            limit(Gate::TokS, spec),
        ),
        GateCheck::from_interval(
            Gate::Stability,
            Some(stability.score),
            stability.ci_low.zip(stability.ci_high),
            stability.n,
            limit(Gate::Stability, spec),
        ),
        ram,
    ]
}

/// The system RAM gate of what the sampler saw, against `limit` (%): the peak; without samples
/// there is nothing to hold against the limit (not a failure); the RAM guard stops a cell or a
/// session on a sample above the limit, which fails whatever the peak.
pub fn ram_check(hardware: &HardwareSummary, limit: f64) -> GateCheck {
    let ram_value =
        (hardware.samples > 0 || hardware.ram_guard_tripped).then_some(hardware.system_peak_pct);
    let mut ram =
        GateCheck::from_interval(Gate::Ram, ram_value, None, hardware.samples as usize, limit);
    if ram_value.is_none() {
        ram.state = GateState::Pass;
    }
    if hardware.ram_guard_tripped {
        ram.state = GateState::Fail;
    }
    ram
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
        regressions: Vec::new(),
        baseline_run_id: None,
    };
    j.verdict = j.verdict_of_checks(j.too_few_valid());
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
            relative_gates: None,
            probe: None,
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

    /// Judges three valid trials of `ttft` and `tps` with `st` on a quiet host.
    fn judge3(ttft: &[f64], tps: &[f64], st: &StabilityBreakdown) -> Judgement {
        judge(&spec(), &sums(ttft, tps), st, &hw(40.0), &facts(3, 3))
    }

    #[test]
    fn clear_pass() {
        let j = judge3(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], &stab(0.95));
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
        let j = judge3(&[9.3, 9.4, 9.2], &[10.0, 10.1, 9.9], &stab(0.95));
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
        let j = judge3(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9], &stab(0.95));
        assert_eq!(j.verdict, Verdict::Marginal, "{j:?}");
        assert!(j.reasons()[0].contains("straddles"), "{j:?}");
    }

    #[test]
    fn stability_whose_interval_lies_below_fails() {
        let j = judge3(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], &stab(0.62));
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
        let j = judge3(
            &[4.0, 4.1, 3.9],
            &[10.0, 10.1, 9.9],
            &stab_ci(0.58, 0.41, 0.97),
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
        let j = judge3(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9], &stab(0.95));
        let back: Judgement = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
