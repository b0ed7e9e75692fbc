//! The judgement of a cell: its verdict and everything the verdict rests on — each gate
//! checked (which gate, state, value, interval, limit), the cell's problems, the invalid trials
//! counted, the notes, why it was skipped — as typed values, with the sentences the reports
//! print rendered from them ([`GateCheck::describe`], [`Judgement::reasons`]). Nothing parses
//! them back. How a judgement is reached is [`crate::gates`].

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The outcome of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every gate passed, with the confidence interval clear of each limit.
    Pass,
    /// The mean passes every gate but an interval straddles a limit after the maximum trials.
    Marginal,
    /// At least one gate failed (measured value vs limit in the reasons).
    Fail,
    /// The numbers cannot be trusted (truncation, reload, broken stream, too few valid trials).
    Invalid,
    /// The cell could not run here (server unreachable, model not pulled).
    Skipped,
    /// The gates pass, but a figure is significantly worse than the same cell of the baseline
    /// run, beyond the noise threshold ([`crate::baseline`]); the changes are in
    /// [`Judgement::regressions`].
    Regressed,
}

impl Verdict {
    /// Upper-case label as used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Marginal => "MARGINAL",
            Verdict::Fail => "FAIL",
            Verdict::Invalid => "INVALID",
            Verdict::Skipped => "SKIPPED",
            Verdict::Regressed => "REGRESSED",
        }
    }
}

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
    /// Sessions ([`crate::agentic`]): the share of turns that succeeded above `success_min`,
    /// judged on its Wilson interval.
    Success,
    /// Sessions: p95 TTFT below `ttft_p95_max_s`.
    TtftP95,
    /// Sessions: RSS growth over the session (% of the loaded size) below `rss_growth_max_pct`.
    RssGrowth,
    /// Sessions: the share of answers with the expected fact above `accuracy_min`, judged on
    /// its Wilson interval.
    Accuracy,
}

impl Gate {
    /// Every gate, in the order reports list them.
    pub const ALL: [Gate; 4] = [Gate::Ttft, Gate::TokS, Gate::Stability, Gate::Ram];

    /// Every gate of a session ([`crate::agentic`]), in the order reports list them.
    pub const SESSION: [Gate; 7] = [
        Gate::Success,
        Gate::TokS,
        Gate::TtftP95,
        Gate::RssGrowth,
        Gate::Stability,
        Gate::Accuracy,
        Gate::Ram,
    ];

    /// Short label as the reports print it (`TTFT`, `tok/s`, `stability`, `RAM`).
    pub fn label(self) -> &'static str {
        match self {
            Gate::Ttft => "TTFT",
            Gate::TokS => "tok/s",
            Gate::Stability => "stability",
            Gate::Ram => "RAM",
            Gate::Success => "success",
            Gate::TtftP95 => "TTFT p95",
            Gate::RssGrowth => "RSS growth",
            Gate::Accuracy => "accuracy",
        }
    }

    /// The table column that sets the limit.
    pub fn column(self) -> &'static str {
        match self {
            Gate::Ttft => "ttft_max_s",
            Gate::TokS => "tok_s_min",
            Gate::Stability => "stability_min",
            Gate::Ram => "ram_max_pct",
            Gate::Success => "success_min",
            Gate::TtftP95 => "ttft_p95_max_s",
            Gate::RssGrowth => "rss_growth_max_pct",
            Gate::Accuracy => "accuracy_min",
        }
    }

    /// Whether smaller values pass.
    pub fn lower_is_better(self) -> bool {
        matches!(
            self,
            Gate::Ttft | Gate::Ram | Gate::TtftP95 | Gate::RssGrowth
        )
    }

    /// Whether the gate is judged on its interval alone: it fails only when the whole interval
    /// lies on the failing side (stability's bootstrap, the Wilson intervals of proportions).
    pub fn judged_on_interval(self) -> bool {
        matches!(self, Gate::Stability | Gate::Success | Gate::Accuracy)
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
    /// A check of `value` and its interval against `limit`.
    pub fn from_interval(
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

    /// A check of a summary's mean and interval against `limit`.
    pub fn of_summary(gate: Gate, s: Option<&Summary>, limit: f64) -> GateCheck {
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
            GateState::FailsStraddling => !self.gate.judged_on_interval(),
            GateState::Pass | GateState::Straddles => false,
        }
    }

    /// Whether this check makes a cell that fails no gate MARGINAL.
    pub fn straddles(&self) -> bool {
        match self.state {
            GateState::Straddles => true,
            GateState::FailsStraddling => self.gate.judged_on_interval(),
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
                Gate::Success => "success",
                Gate::TtftP95 => "TTFT p95",
                Gate::RssGrowth => "RSS growth",
                Gate::Accuracy => "accuracy",
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
        // A limit computed from the engine's figures (`engine*F`) has every digit of a float:
        // two decimals at most, as the value beside it, trailing zeros dropped (30, 0.6, 21.4).
        let limit = crate::text::short_number(self.limit);
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
            Gate::Success => format!(
                "success {:.1}% of turns{} {cmp} limit {:.1}%",
                v * 100.0,
                self.percent_interval(),
                self.limit * 100.0
            ),
            Gate::Accuracy => format!(
                "accuracy {:.1}% of answers{} {cmp} limit {:.1}%",
                v * 100.0,
                self.percent_interval(),
                self.limit * 100.0
            ),
            Gate::TtftP95 => {
                format!("TTFT p95 {v:.2} s (n={}) {cmp} limit {limit} s", self.n)
            }
            Gate::RssGrowth => format!(
                "RSS growth {v:.1}% of the loaded size (n={}) {cmp} limit {limit}%",
                self.n
            ),
        }
    }
}

impl GateCheck {
    /// ` (95% Wilson CI 80.0–99.0%, n=20)` for a proportion.
    fn percent_interval(&self) -> String {
        match (self.ci_low, self.ci_high) {
            (Some(lo), Some(hi)) => format!(
                " (95% CI {:.1}–{:.1}%, n={})",
                lo * 100.0,
                hi * 100.0,
                self.n
            ),
            _ => format!(" (n={})", self.n),
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
    /// The figures significantly worse than the same cell of the baseline run, beyond the
    /// noise threshold ([`crate::baseline`]); they make a PASS or MARGINAL cell REGRESSED
    /// unless `O3_BASELINE_WARN_ONLY=1`. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regressions: Vec<crate::baseline::FigureChange>,
    /// The run id of the baseline the cell was compared with, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_run_id: Option<String>,
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
            regressions: Vec::new(),
            baseline_run_id: None,
        }
    }

    /// Records the comparison with the baseline run `baseline_run_id`: the regressed figures
    /// of `changes` are kept, and make a PASS or MARGINAL verdict REGRESSED unless `warn_only`
    /// (a FAIL, INVALID or SKIPPED verdict already says more and stays).
    pub fn apply_regressions(
        &mut self,
        changes: &[crate::baseline::FigureChange],
        baseline_run_id: &str,
        warn_only: bool,
    ) {
        self.baseline_run_id = Some(baseline_run_id.to_string());
        self.regressions = changes
            .iter()
            .filter(|c| c.outcome == crate::baseline::Outcome::Regressed)
            .cloned()
            .collect();
        if !self.regressions.is_empty()
            && !warn_only
            && matches!(self.verdict, Verdict::Pass | Verdict::Marginal)
        {
            self.verdict = Verdict::Regressed;
        }
    }

    /// The regressions in words: `TTFT REGRESSED +25.0% … (baseline r1)`.
    fn regression_lines(&self) -> Vec<String> {
        let base = self.baseline_run_id.as_deref().unwrap_or("?");
        self.regressions
            .iter()
            .map(|c| format!("{} (baseline run {base})", c.describe()))
            .collect()
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
        let mut out = self.verdict_reasons();
        if self.verdict != Verdict::Regressed {
            // Warn-only, or a verdict that says more: the regressions are still shown.
            out.extend(
                self.regression_lines()
                    .into_iter()
                    .map(|l| format!("warning: {l}")),
            );
        }
        out.extend(self.notes.iter().map(|n| format!("note: {n}")));
        out
    }

    /// The reasons for the verdict in words, without the notes ([`Judgement::reasons`]).
    pub fn verdict_reasons(&self) -> Vec<String> {
        match self.verdict {
            Verdict::Skipped => self.skipped.iter().cloned().collect(),
            Verdict::Regressed => self.regression_lines(),
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
        }
    }

    /// Whether the trials alone make the cell INVALID ([`too_few_valid`]).
    pub fn too_few_valid(&self) -> bool {
        too_few_valid(self.valid_trials, self.attempted_trials)
    }

    /// Whether the system RAM gate failed (which fails the cell before anything else).
    pub fn ram_failed(&self) -> bool {
        self.check(Gate::Ram).is_some_and(GateCheck::fails)
    }

    /// The verdict of the checks and problems, in the one order cells and sessions share: the
    /// RAM gate failing → FAIL; a problem, or `too_few` valid measurements → INVALID; a gate
    /// failing → FAIL; one straddling its limit → MARGINAL; otherwise PASS.
    pub fn verdict_of_checks(&self, too_few: bool) -> Verdict {
        if self.ram_failed() {
            Verdict::Fail
        } else if !self.problems.is_empty() || too_few {
            Verdict::Invalid
        } else if self.checks.iter().any(GateCheck::fails) {
            Verdict::Fail
        } else if self.checks.iter().any(GateCheck::straddles) {
            Verdict::Marginal
        } else {
            Verdict::Pass
        }
    }
}
