//! Verdicts: PASS, MARGINAL, FAIL, INVALID, each with its reasons.
//!
//! Gates (from the table): TTFT mean < `ttft_max_s`; client decode tok/s mean > `tok_s_min`;
//! stability score > `stability_min`; system RAM peak ≤ `ram_max_pct`.
//!
//! Order of precedence: RAM over its limit → FAIL; too few valid trials or a cell-level
//! validity problem → INVALID; any gate whose mean fails → FAIL; a gate whose mean passes but
//! whose 95 % interval straddles the limit → MARGINAL; otherwise PASS.

use crate::results::{CellSpec, CellSummaries, HardwareSummary, StabilityBreakdown, Verdict};
use crate::stats::Summary;

/// Where one gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One gate's check.
#[derive(Debug, Clone, PartialEq)]
pub struct GateCheck {
    /// Gate name (`ttft`, `tok_s`, `stability`).
    pub gate: &'static str,
    /// Its state.
    pub state: GateState,
    /// Measured value vs limit, in words.
    pub text: String,
}

fn interval(s: &Summary) -> String {
    match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) => format!(" (95% CI {lo:.2}–{hi:.2}, n={})", s.n),
        _ => format!(" (n={})", s.n),
    }
}

/// Checks a lower-is-better metric (`value < limit`) or a higher-is-better one.
fn check(
    gate: &'static str,
    label: &str,
    unit: &str,
    summary: Option<&Summary>,
    limit: f64,
    lower_is_better: bool,
) -> GateCheck {
    let Some(s) = summary else {
        return GateCheck {
            gate,
            state: GateState::Unknown,
            text: format!("{label}: no valid measurement"),
        };
    };
    let passes = |v: f64| {
        if lower_is_better {
            v < limit
        } else {
            v > limit
        }
    };
    let mean_ok = passes(s.mean);
    // The interval end on the failing side, and on the passing side.
    let (worst, best) = match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) if lower_is_better => (hi, lo),
        (Some(lo), Some(hi)) => (lo, hi),
        _ => (s.mean, s.mean),
    };
    let state = match (mean_ok, passes(worst), passes(best)) {
        (true, true, _) => GateState::Pass,
        (true, false, _) => GateState::Straddles,
        (false, _, true) => GateState::FailsStraddling,
        (false, _, false) => GateState::Fail,
    };
    let cmp = match (mean_ok, lower_is_better) {
        (true, true) => "<",
        (true, false) => ">",
        (false, true) => "≥",
        (false, false) => "≤",
    };
    GateCheck {
        gate,
        state,
        text: format!(
            "{label} mean {:.2} {unit}{} {cmp} limit {limit} {unit}",
            s.mean,
            interval(s)
        ),
    }
}

/// Checks every measured gate of a cell.
pub fn check_gates(
    spec: &CellSpec,
    summaries: &CellSummaries,
    stability: &StabilityBreakdown,
) -> Vec<GateCheck> {
    let g = &spec.gates;
    let mut out = vec![
        check(
            "ttft",
            "TTFT",
            "s",
            summaries.ttft_s.as_ref(),
            g.ttft_max_s,
            true,
        ),
        check(
            "tok_s",
            "decode",
            "tok/s",
            summaries.decode_tps.as_ref(),
            g.tok_s_min,
            false,
        ),
    ];
    let st_ok = stability.score > g.stability_min;
    out.push(GateCheck {
        gate: "stability",
        state: if st_ok {
            GateState::Pass
        } else {
            GateState::Fail
        },
        text: format!(
            "stability {:.2} {} limit {}",
            stability.score,
            if st_ok { ">" } else { "≤" },
            g.stability_min
        ),
    });
    out
}

/// Whether the verdict is already clear from the intervals: some gate clearly fails, or every
/// gate clearly passes.
pub fn verdict_clear(checks: &[GateCheck]) -> bool {
    checks.iter().any(|c| c.state == GateState::Fail)
        || checks.iter().all(|c| c.state == GateState::Pass)
}

/// Reasons of invalid trials with repeats folded into `(×n)`, in first-seen order.
pub fn group_reasons<'a>(reasons: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for r in reasons {
        // Identical reasons are counted once with a multiplier.
        match groups.iter_mut().find(|(k, _)| k == r) {
            Some((_, n)) => *n += 1,
            None => groups.push((r.clone(), 1)),
        }
    }
    groups
        .into_iter()
        .map(|(r, n)| if n > 1 { format!("{r} (×{n})") } else { r })
        .collect()
}

/// Inputs of a verdict beyond the summaries.
#[derive(Debug, Clone, Default)]
pub struct CellFacts {
    /// Valid measured trials.
    pub valid: usize,
    /// Attempted measured trials.
    pub attempted: usize,
    /// Reasons of the invalid measured trials.
    pub trial_reasons: Vec<String>,
    /// Problems that make the whole cell untrustworthy (context clamped, server error, …).
    pub cell_invalid: Vec<String>,
}

/// The verdict of a cell, with its reasons.
pub fn judge(
    spec: &CellSpec,
    summaries: &CellSummaries,
    stability: &StabilityBreakdown,
    hardware: &HardwareSummary,
    facts: &CellFacts,
) -> (Verdict, Vec<String>) {
    let g = &spec.gates;
    if hardware.ram_guard_tripped || hardware.system_peak_pct > g.ram_max_pct {
        return (
            Verdict::Fail,
            vec![format!(
                "system RAM peaked at {:.1}% > limit {}%{}",
                hardware.system_peak_pct,
                g.ram_max_pct,
                if hardware.ram_guard_tripped {
                    "; the cell was stopped"
                } else {
                    ""
                }
            )],
        );
    }
    let mut invalid = facts.cell_invalid.clone();
    let too_few = facts.valid < 2;
    let mostly_invalid = facts.valid * 2 < facts.attempted;
    if too_few || mostly_invalid {
        let mut msg = format!(
            "only {} of {} measured trials valid",
            facts.valid, facts.attempted
        );
        let grouped = group_reasons(&facts.trial_reasons);
        if !grouped.is_empty() {
            msg.push_str(": ");
            msg.push_str(&grouped.join("; "));
        }
        invalid.push(msg);
    }
    if !invalid.is_empty() {
        return (Verdict::Invalid, invalid);
    }
    let checks = check_gates(spec, summaries, stability);
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| {
            matches!(
                c.state,
                GateState::Fail | GateState::FailsStraddling | GateState::Unknown
            )
        })
        .map(|c| c.text.clone())
        .collect();
    if !failed.is_empty() {
        return (Verdict::Fail, failed);
    }
    let straddling: Vec<String> = checks
        .iter()
        .filter(|c| c.state == GateState::Straddles)
        .map(|c| format!("{}: the 95% interval straddles the limit", c.text))
        .collect();
    if !straddling.is_empty() {
        return (Verdict::Marginal, straddling);
    }
    let mut reasons: Vec<String> = checks.iter().map(|c| c.text.clone()).collect();
    if facts.valid < facts.attempted {
        reasons.push(format!(
            "{} of {} measured trials invalid and not scored: {}",
            facts.attempted - facts.valid,
            facts.attempted,
            group_reasons(&facts.trial_reasons).join("; ")
        ));
    }
    (Verdict::Pass, reasons)
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
        }
    }

    fn sums(ttft: &[f64], tps: &[f64]) -> CellSummaries {
        CellSummaries {
            ttft_s: summarize(ttft),
            decode_tps: summarize(tps),
            ..CellSummaries::default()
        }
    }

    fn stab(score: f64) -> StabilityBreakdown {
        StabilityBreakdown {
            score,
            ..StabilityBreakdown::default()
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
            ..HardwareSummary::default()
        }
    }

    #[test]
    fn clear_pass() {
        let (v, r) = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(v, Verdict::Pass, "{r:?}");
        assert!(r[0].starts_with("TTFT mean 4.00 s (95% CI"), "{r:?}");
    }

    #[test]
    fn ttft_over_limit_fails_with_value_and_limit() {
        let (v, r) = judge(
            &spec(),
            &sums(&[9.3, 9.4, 9.2], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(v, Verdict::Fail);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("TTFT mean 9.30 s") && r[0].contains("≥ limit 8 s"),
            "{r:?}"
        );
    }

    #[test]
    fn straddling_interval_is_marginal() {
        // Mean 7.5 < 8 but the interval reaches past 8.
        let (v, r) = judge(
            &spec(),
            &sums(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9]),
            &stab(0.95),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(v, Verdict::Marginal, "{r:?}");
        assert!(r[0].contains("straddles"), "{r:?}");
    }

    #[test]
    fn low_stability_fails() {
        let (v, r) = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(0.62),
            &hw(40.0),
            &facts(3, 3),
        );
        assert_eq!(v, Verdict::Fail);
        assert_eq!(r, ["stability 0.62 ≤ limit 0.8"]);
    }

    #[test]
    fn ram_over_limit_fails_first() {
        let mut h = hw(83.0);
        h.ram_guard_tripped = true;
        let (v, r) = judge(&spec(), &sums(&[], &[]), &stab(0.0), &h, &facts(0, 1));
        assert_eq!(v, Verdict::Fail);
        assert!(
            r[0].contains("83.0% > limit 80%; the cell was stopped"),
            "{r:?}"
        );
    }

    #[rstest]
    #[case(1, 1)]
    #[case(2, 5)]
    #[case(0, 0)]
    fn too_few_valid_trials_is_invalid(#[case] valid: usize, #[case] attempted: usize) {
        let mut f = facts(valid, attempted);
        f.trial_reasons = vec!["prompt truncated: x".into(), "prompt truncated: x".into()];
        let (v, r) = judge(&spec(), &sums(&[4.0], &[10.0]), &stab(1.0), &hw(10.0), &f);
        assert_eq!(v, Verdict::Invalid);
        assert!(
            r[0].starts_with(&format!("only {valid} of {attempted}")),
            "{r:?}"
        );
        assert!(r[0].contains("prompt truncated: x (×2)"), "{r:?}");
    }

    #[test]
    fn cell_level_problems_are_invalid() {
        let mut f = facts(3, 3);
        f.cell_invalid = vec!["server clamped num_ctx".into()];
        let (v, r) = judge(
            &spec(),
            &sums(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9]),
            &stab(1.0),
            &hw(10.0),
            &f,
        );
        assert_eq!(v, Verdict::Invalid);
        assert_eq!(r, ["server clamped num_ctx"]);
    }

    #[rstest]
    #[case(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], 0.9, true)] // all clear pass
    #[case(&[9.0, 9.1, 8.9], &[10.0, 10.1, 9.9], 0.9, true)] // clear fail
    #[case(&[6.5, 7.5, 8.5], &[10.0, 10.1, 9.9], 0.9, false)] // straddles
    #[case(&[4.0, 4.1, 3.9], &[10.0, 10.1, 9.9], 0.5, true)] // stability fails
    fn clearness(#[case] ttft: &[f64], #[case] tps: &[f64], #[case] st: f64, #[case] clear: bool) {
        let checks = check_gates(&spec(), &sums(ttft, tps), &stab(st));
        assert_eq!(verdict_clear(&checks), clear, "{checks:?}");
    }
}
