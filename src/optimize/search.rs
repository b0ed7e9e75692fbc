//! The search logic (see the [module docs](super) for the rules). It talks to a [`Prober`]
//! only, so it runs the same against a live server and against [`super::sim::SimServer`].

use std::collections::HashMap;
use std::time::Instant;

use super::plan::ModelPlan;
use super::record::{
    Candidate, ChoiceOutcome, ContextOutcome, Evidence, ProbeRecord, RECORD_FORMAT_VERSION,
    Recommendation, SearchRecord, measured_nothing, why_not_run,
};
use super::{ALPHA, LoadOptions, MAX_REPEATS, OptConfig, Phase, Prober, optimize_test_name};
use crate::matrix;
use crate::results::{CellResult, HARNESS_VERSION, Host, Verdict};
use crate::stats::{mean, welch};

/// What a search starts from.
#[derive(Debug, Clone)]
pub struct SearchInput<'a> {
    /// The model's plan (rows, cap, thread range).
    pub plan: &'a ModelPlan,
    /// Settings.
    pub cfg: &'a OptConfig,
    /// Cell results already on disk (any; only this model's probe names are used).
    pub existing: Vec<CellResult>,
    /// Host facts for the record.
    pub host: Host,
    /// Server address for the record.
    pub server: String,
}

/// Why a search stopped before its end.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    /// The probe or time budget ran out.
    Budget(String),
    /// The server or the model went away.
    CannotRun(String),
}

impl Stop {
    fn text(&self) -> &str {
        match self {
            Stop::Budget(s) | Stop::CannotRun(s) => s,
        }
    }
}

/// Where a grid point or setting stands after its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Class {
    pub(super) pass: bool,
    pub(super) verdict: Verdict,
}

/// Majority rule over the runs of one point: PASS when at least `k` runs passed and more passed
/// than failed; FAIL when at least `k` runs failed and more failed than passed; otherwise unclear
/// (`None`). MARGINAL and INVALID runs count for neither side (INVALID numbers cannot be
/// trusted either way), so such a point is probed again. A REGRESSED run passed its gates (it
/// is only worse than the baseline run) and counts as a PASS.
pub(super) fn classify(runs: &[Verdict], k: usize) -> Option<Class> {
    let p = runs
        .iter()
        .filter(|v| matches!(v, Verdict::Pass | Verdict::Regressed))
        .count();
    let f = runs.iter().filter(|v| **v == Verdict::Fail).count();
    if p >= k && p > f {
        Some(Class {
            pass: true,
            verdict: Verdict::Pass,
        })
    } else if f >= k && f > p {
        Some(Class {
            pass: false,
            verdict: Verdict::Fail,
        })
    } else {
        None
    }
}

/// The settled class of a point: [`classify`] with `k = 1`; unclear → INVALID when every run
/// was INVALID, else MARGINAL. Neither passes.
pub(super) fn final_class(runs: &[Verdict]) -> Class {
    classify(runs, 1).unwrap_or(Class {
        pass: false,
        verdict: if !runs.is_empty() && runs.iter().all(|v| *v == Verdict::Invalid) {
            Verdict::Invalid
        } else {
            Verdict::Marginal
        },
    })
}

struct Engine<'a> {
    plan: &'a ModelPlan,
    cfg: &'a OptConfig,
    prober: &'a mut dyn Prober,
    existing: HashMap<String, CellResult>,
    probes: Vec<ProbeRecord>,
    spent_s: f64,
    new: u32,
    resumed: u32,
    tag: String,
}

impl Engine<'_> {
    /// Verdicts of the runs of `opts` so far, in run order.
    fn runs(&self, opts: &LoadOptions) -> Vec<Verdict> {
        let mut r: Vec<(u32, Verdict)> = self
            .probes
            .iter()
            .filter(|p| p.options == *opts)
            .map(|p| (p.run, p.verdict))
            .collect();
        r.sort_by_key(|(run, _)| *run);
        r.into_iter().map(|(_, v)| v).collect()
    }

    /// Runs (or reads back) run `run` of `opts`.
    fn probe(&mut self, opts: LoadOptions, run: u32, phase: Phase, why: &str) -> Result<(), Stop> {
        let spec = self.plan.spec_for(&opts, run);
        if self.probes.iter().any(|p| p.test_name == spec.test_name) {
            return Ok(());
        }
        let total = self.new + self.resumed;
        if total >= self.cfg.max_probes {
            return Err(Stop::Budget(format!(
                "probe budget of {} probes reached (O3_OPT_MAX_PROBES)",
                self.cfg.max_probes
            )));
        }
        if self.spent_s >= self.cfg.budget_s {
            return Err(Stop::Budget(format!(
                "time budget of {:.0} s reached after {:.0} s of probes (O3_OPT_BUDGET_S)",
                self.cfg.budget_s, self.spent_s
            )));
        }
        let (result, resumed) = match self.existing.remove(&spec.test_name) {
            Some(r) => (r, true),
            None => {
                let r = self.prober.probe(&spec);
                if r.verdict() == Verdict::Skipped {
                    return Err(Stop::CannotRun(format!(
                        "{} could not run: {}",
                        spec.test_name,
                        why_not_run(&r)
                    )));
                }
                (r, false)
            }
        };
        if resumed {
            self.resumed += 1;
        } else {
            self.new += 1;
        }
        self.spent_s += result.wall_s;
        let rec = ProbeRecord::from_result(&result, phase, run, why.to_string(), resumed);
        eprintln!(
            "[{}] probe {}/{} {}{} ({}: {}) → {}",
            self.tag,
            self.new + self.resumed,
            self.cfg.max_probes,
            rec.test_name,
            if resumed { " [resumed from disk]" } else { "" },
            phase.name(),
            why,
            rec.figures()
        );
        self.probes.push(rec);
        Ok(())
    }

    /// Probes `opts` until its class is clear with `k` agreeing runs, at most `max_runs` runs;
    /// a point still unclear then is MARGINAL.
    fn settle(
        &mut self,
        opts: LoadOptions,
        k: usize,
        max_runs: u32,
        phase: Phase,
        why: &str,
    ) -> Result<Class, Stop> {
        loop {
            let runs = self.runs(&opts);
            if !runs.is_empty() {
                if let Some(c) = classify(&runs, k) {
                    return Ok(c);
                }
                if runs.len() as u32 >= max_runs {
                    return Ok(final_class(&runs));
                }
            }
            let run = runs.len() as u32 + 1;
            let why = if run == 1 {
                why.to_string()
            } else {
                format!("{why}; run {run}: runs so far {}", labels(&runs))
            };
            self.probe(opts, run, phase, &why)?;
        }
    }

    fn ctx_opts(&self, num_ctx: u32) -> LoadOptions {
        self.plan.row_options(num_ctx)
    }

    fn class_at(&self, num_ctx: u32) -> Option<Class> {
        let runs = self.runs(&self.ctx_opts(num_ctx));
        (!runs.is_empty()).then(|| final_class(&runs))
    }

    /// The context search: top of the grid, bisection, boundary confirmation.
    fn context(&mut self, grid: &[u32]) -> Result<(), Stop> {
        let n = grid.len();
        if n == 0 {
            return Ok(());
        }
        let all = 1 + MAX_REPEATS;
        // The first probe: where the predictions say the boundary is, else the top of the grid.
        let (top, why) = match &self.plan.start {
            Some((ctx, why)) => match grid.iter().rposition(|g| g <= ctx) {
                Some(i) => (i, format!("{why} ({} tokens)", grid[i])),
                None => (
                    0,
                    format!("{why} (below the grid: its bottom, {} tokens)", grid[0]),
                ),
            },
            None => (n - 1, format!("top of the grid ({} tokens)", grid[n - 1])),
        };
        let c = self.settle(self.ctx_opts(grid[top]), 1, all, Phase::Context, &why)?;
        let (mut lo, mut hi): (isize, usize) = if c.pass { (top as isize, n) } else { (-1, top) };
        for _ in 0..4 * n + 4 {
            while hi as isize - lo > 1 {
                let mid = ((lo + hi as isize).div_euclid(2)) as usize;
                let why = format!(
                    "bisect between {} and {}",
                    if lo < 0 {
                        "below the grid".to_string()
                    } else {
                        format!("PASS at {}", grid[lo as usize])
                    },
                    if hi >= n {
                        "the cap".to_string()
                    } else {
                        format!("non-PASS at {}", grid[hi])
                    }
                );
                let c = self.settle(self.ctx_opts(grid[mid]), 1, all, Phase::Context, &why)?;
                if c.pass {
                    lo = mid as isize;
                } else {
                    hi = mid;
                }
            }
            let mut changed = false;
            if lo >= 0 {
                let ctx = grid[lo as usize];
                let c = self.settle(
                    self.ctx_opts(ctx),
                    2,
                    all,
                    Phase::Context,
                    &format!("confirm the largest PASS ({ctx} tokens)"),
                )?;
                if !c.pass {
                    hi = lo as usize;
                    lo = (0..hi)
                        .rev()
                        .find(|&i| self.class_at(grid[i]).is_some_and(|c| c.pass))
                        .map_or(-1, |i| i as isize);
                    changed = true;
                }
            }
            if !changed && hi < n {
                let ctx = grid[hi];
                let c = self.settle(
                    self.ctx_opts(ctx),
                    2,
                    all,
                    Phase::Context,
                    &format!("confirm the smallest non-PASS ({ctx} tokens)"),
                )?;
                if c.pass {
                    lo = hi as isize;
                    hi = (hi + 1..n)
                        .find(|&i| self.class_at(grid[i]).is_some_and(|c| !c.pass))
                        .unwrap_or(n);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(())
    }

    /// The context outcome from the probes so far.
    fn context_outcome(&self, grid: &[u32], complete: bool) -> ContextOutcome {
        let classes: Vec<Option<Class>> = grid.iter().map(|&c| self.class_at(c)).collect();
        let lp = (0..grid.len())
            .rev()
            .find(|&i| classes[i].is_some_and(|c| c.pass));
        let sf =
            (lp.map_or(0, |i| i + 1)..grid.len()).find(|&i| classes[i].is_some_and(|c| !c.pass));
        let marginal = grid
            .iter()
            .zip(&classes)
            .filter(|(_, c)| c.is_some_and(|c| c.verdict == Verdict::Marginal))
            .map(|(g, _)| *g)
            .collect();
        ContextOutcome {
            largest_pass: lp.map(|i| self.evidence(grid[i])),
            smallest_fail: sf.map(|i| self.evidence(grid[i])),
            marginal,
            complete,
        }
    }

    fn evidence(&self, num_ctx: u32) -> Evidence {
        let opts = self.ctx_opts(num_ctx);
        let mut runs: Vec<&ProbeRecord> =
            self.probes.iter().filter(|p| p.options == opts).collect();
        runs.sort_by_key(|p| p.run);
        let verdicts: Vec<Verdict> = runs.iter().map(|p| p.verdict).collect();
        let ttft: Vec<f64> = runs
            .iter()
            .flat_map(|p| p.ttft_samples_s.iter().copied())
            .collect();
        let decode: Vec<f64> = runs
            .iter()
            .flat_map(|p| p.decode_samples_tps.iter().copied())
            .collect();
        let mut reasons: Vec<String> = Vec::new();
        for p in runs.iter().filter(|p| p.verdict != Verdict::Pass) {
            for r in &p.reasons {
                if !reasons.contains(r) {
                    reasons.push(r.clone());
                }
            }
        }
        Evidence {
            num_ctx,
            verdict: final_class(&verdicts).verdict,
            test_names: runs.iter().map(|p| p.test_name.clone()).collect(),
            verdicts,
            ttft_mean_s: mean(&ttft),
            decode_mean_tps: mean(&decode),
            reasons,
        }
    }

    /// Ternary search over `values` (ascending) of `knob` from `base` for the best metric, then
    /// every value left in the final bracket. One run per setting.
    fn choice(&mut self, knob: &Knob, base: LoadOptions, values: &[u32]) -> Result<(), Stop> {
        if values.is_empty() {
            return Ok(());
        }
        let opts_of = |v: u32| (knob.set)(base, v);
        let (mut lo, mut hi) = (0usize, values.len() - 1);
        while hi - lo > 2 {
            let m1 = lo + (hi - lo) / 3;
            let m2 = hi - (hi - lo) / 3;
            let why = format!(
                "ternary search over {}..={}: compare {} with {}",
                values[lo], values[hi], values[m1], values[m2]
            );
            self.settle(opts_of(values[m1]), 1, 1, knob.phase, &why)?;
            self.settle(opts_of(values[m2]), 1, 1, knob.phase, &why)?;
            let a = self.samples(knob, &opts_of(values[m1]));
            let b = self.samples(knob, &opts_of(values[m2]));
            match compare(&a, &b, knob.higher_is_better) {
                Cmp::FirstBetter | Cmp::Same => hi = m2 - 1,
                Cmp::SecondBetter => lo = m1 + 1,
            }
        }
        for &v in &values[lo..=hi] {
            let why = format!("final bracket {}..={}", values[lo], values[hi]);
            self.settle(opts_of(v), 1, 1, knob.phase, &why)?;
        }
        Ok(())
    }

    /// Pooled samples of `knob`'s metric over every run of `opts`.
    fn samples(&self, knob: &Knob, opts: &LoadOptions) -> Vec<f64> {
        self.probes
            .iter()
            .filter(|p| p.options == *opts)
            .flat_map(|p| (knob.samples)(p).iter().copied())
            .collect()
    }

    /// Every probed value of `values` as a candidate, with its pooled samples.
    fn candidates(
        &self,
        knob: &Knob,
        base: LoadOptions,
        values: &[u32],
    ) -> Vec<(Candidate, Vec<f64>)> {
        let mut out = Vec::new();
        for &v in values {
            let opts = (knob.set)(base, v);
            let runs: Vec<&ProbeRecord> =
                self.probes.iter().filter(|p| p.options == opts).collect();
            if runs.is_empty() {
                continue;
            }
            let verdicts: Vec<Verdict> = runs.iter().map(|p| p.verdict).collect();
            let s = self.samples(knob, &opts);
            out.push((
                Candidate {
                    value: v,
                    test_names: runs.iter().map(|p| p.test_name.clone()).collect(),
                    passed: final_class(&verdicts).pass,
                    mean: mean(&s),
                    n: s.len(),
                    p_vs_best: None,
                },
                s,
            ));
        }
        out
    }

    /// The winner among the probed `values`: the smallest passing value not significantly worse
    /// than the passing value with the best mean.
    fn choice_outcome(
        &self,
        knob: &Knob,
        base: LoadOptions,
        values: &[u32],
        complete: bool,
    ) -> ChoiceOutcome {
        let mut candidates = self.candidates(knob, base, values);
        let better = |a: f64, b: f64| {
            if knob.higher_is_better { a > b } else { a < b }
        };
        let best = candidates
            .iter()
            .filter(|(c, _)| c.passed && c.mean.is_some())
            .fold(None::<&(Candidate, Vec<f64>)>, |acc, x| match acc {
                Some(a) if !better(x.0.mean.unwrap_or(0.0), a.0.mean.unwrap_or(0.0)) => Some(a),
                _ => Some(x),
            })
            .map(|(c, s)| (c.value, c.mean.unwrap_or(0.0), s.clone()));
        let Some((best_v, best_mean, best_s)) = best else {
            return ChoiceOutcome {
                metric: knob.metric.into(),
                chosen: None,
                best_mean: None,
                candidates: candidates.into_iter().map(|(c, _)| c).collect(),
                why: "no setting passed its gates".into(),
                complete,
            };
        };
        for (c, s) in &mut candidates {
            if c.value != best_v {
                c.p_vs_best = welch(s, &best_s).map(|w| w.p_value);
            }
        }
        let candidates: Vec<Candidate> = candidates.into_iter().map(|(c, _)| c).collect();
        let chosen = candidates
            .iter()
            .filter(|c| c.passed && c.mean.is_some())
            .find(|c| c.value == best_v || c.p_vs_best.is_none_or(|p| p >= ALPHA))
            .map_or(best_v, |c| c.value);
        ChoiceOutcome {
            metric: knob.metric.into(),
            chosen: Some(chosen),
            best_mean: Some(best_v),
            why: why_chosen(knob.what, &candidates, chosen, best_v, best_mean),
            candidates,
            complete,
        }
    }

    /// Searches `knob` from `base` over `values` unless `blocked` says why not (an earlier part
    /// stopped), and judges the candidates — `values` plus `base`'s own value. Returns the
    /// outcome and the stop that cut this part short, if any.
    fn tune(
        &mut self,
        knob: &Knob,
        base: LoadOptions,
        values: Vec<u32>,
        blocked: Option<String>,
        notes: &mut Notes,
    ) -> (ChoiceOutcome, Option<Stop>) {
        let part = knob.phase.name();
        let (complete, stop) = match blocked {
            None => match self.choice(knob, base, &values) {
                Ok(()) => (true, None),
                Err(s) => {
                    notes.stopped(&s, part);
                    (false, Some(s))
                }
            },
            Some(why) => {
                notes.skipped(part, &why);
                (false, None)
            }
        };
        // The row's own value is a candidate too when it lies outside the searched range.
        let mut candidates = values;
        let own = (knob.get)(&base);
        if !candidates.contains(&own) {
            candidates.push(own);
            candidates.sort_unstable();
        }
        (self.choice_outcome(knob, base, &candidates, complete), stop)
    }

    /// The context search, with what it could not do noted; returns the stop that cut it short.
    fn search_context(&mut self, grid: &[u32], notes: &mut Notes) -> Option<Stop> {
        if grid.is_empty() {
            notes.not_searched.push(format!(
                "context: the cap ({} tokens) is below the smallest matrix context ({} tokens): nothing to probe",
                self.plan.cap.tokens.unwrap_or(0),
                self.plan.min_ctx()
            ));
            return None;
        }
        let stop = self.context(grid).err();
        if let Some(s) = &stop {
            notes.stopped(s, "context");
        }
        stop
    }

    /// Threads, then batch at the chosen context `ctx`, and the recommendation.
    fn tune_at(
        &mut self,
        ctx: u32,
        ctx_stop: Option<Stop>,
        context: &ContextOutcome,
        notes: &mut Notes,
    ) -> (ChoiceOutcome, ChoiceOutcome, Option<Recommendation>) {
        let row = self.plan.row_options(ctx);
        let (threads, t_stop) = self.tune(
            &THREADS,
            row,
            (1..=self.plan.max_threads).collect(),
            ctx_stop
                .as_ref()
                .map(|_| "the context search was cut short".to_string()),
            notes,
        );
        let stop = ctx_stop.or(t_stop);
        let base = (THREADS.set)(row, threads.chosen.unwrap_or(row.num_thread));
        let (batch, _) = self.tune(
            &BATCH,
            base,
            self.plan.batches(self.cfg, ctx),
            stop.as_ref().map(|s| s.text().to_string()),
            notes,
        );
        let best = (BATCH.set)(base, batch.chosen.unwrap_or(base.num_batch));
        let recommended = self.recommend(ctx, best, row, context, &threads, &batch);
        (threads, batch, recommended)
    }

    /// The recommendation: the first passing run of `best`, else of the confirmed context probe
    /// `row`, with every probe behind the choice as evidence.
    fn recommend(
        &self,
        ctx: u32,
        best: LoadOptions,
        row: LoadOptions,
        context: &ContextOutcome,
        threads: &ChoiceOutcome,
        batch: &ChoiceOutcome,
    ) -> Option<Recommendation> {
        let first_pass = |opts: LoadOptions| {
            self.probes
                .iter()
                .filter(|p| p.options == opts && p.verdict == Verdict::Pass)
                .min_by_key(|p| p.run)
        };
        let p = first_pass(best).or_else(|| first_pass(row))?;
        let mut evidence: Vec<String> = Vec::new();
        let mut add = |names: &[String]| {
            for n in names {
                if !evidence.contains(n) {
                    evidence.push(n.clone());
                }
            }
        };
        if let Some(ev) = &context.largest_pass {
            add(&ev.test_names);
        }
        if let Some(ev) = &context.smallest_fail {
            add(&ev.test_names);
        }
        for c in threads.candidates.iter().chain(&batch.candidates) {
            if Some(c.value) == threads.chosen || Some(c.value) == batch.chosen {
                add(&c.test_names);
            }
        }
        add(std::slice::from_ref(&p.test_name));
        Some(Recommendation {
            test_name: p.test_name.clone(),
            matrix_test_name: self
                .plan
                .rows
                .iter()
                .find(|r| r.num_ctx == ctx)
                .map(|r| matrix::test_name(&r.name, ctx)),
            options: p.options,
            fill_tokens: p.fill_tokens,
            verdict: p.verdict,
            ttft_s: p.ttft_s.clone(),
            decode_tps: p.decode_tps.clone(),
            stability: p.stability,
            gates: p.gates.clone(),
            server_version: p.server_version.clone(),
            evidence,
        })
    }
}

/// Why `chosen` won among `candidates` (`best_v` has the best mean, `best_mean`).
fn why_chosen(
    what: &str,
    candidates: &[Candidate],
    chosen: u32,
    best_v: u32,
    best_mean: f64,
) -> String {
    if chosen == best_v {
        let others: Vec<String> = candidates
            .iter()
            .filter(|c| c.value < best_v && c.passed)
            .map(|c| {
                format!(
                    "{} (p = {})",
                    c.value,
                    c.p_vs_best.map_or("n/a".into(), |p| format!("{p:.3}"))
                )
            })
            .collect();
        if others.is_empty() {
            format!(
                "{best_v} has the best mean ({best_mean:.2}) and no smaller passing {what} was probed"
            )
        } else {
            format!(
                "{best_v} has the best mean ({best_mean:.2}) and every smaller passing {what} is significantly worse (Welch p < {ALPHA}): {}",
                others.join(", ")
            )
        }
    } else {
        let c = candidates.iter().find(|c| c.value == chosen);
        format!(
            "{best_v} has the best mean ({best_mean:.2}) but {chosen} ({:.2}) is not significantly different (Welch p = {}); the smaller {what} wins the tie",
            c.and_then(|c| c.mean).unwrap_or(f64::NAN),
            c.and_then(|c| c.p_vs_best)
                .map_or("n/a (too few trials)".into(), |p| format!("{p:.3}"))
        )
    }
}

/// A load option searched after the context, for its best figure.
struct Knob {
    /// Search part.
    phase: Phase,
    /// What a value is called in the why texts.
    what: &'static str,
    /// [`ChoiceOutcome::metric`].
    metric: &'static str,
    /// Whether a higher metric is better.
    higher_is_better: bool,
    /// The option's value.
    get: fn(&LoadOptions) -> u32,
    /// The options with the value changed.
    set: fn(LoadOptions, u32) -> LoadOptions,
    /// The per-trial metric of a probe.
    samples: fn(&ProbeRecord) -> &[f64],
}

/// `num_thread` for the highest client decode rate.
const THREADS: Knob = Knob {
    phase: Phase::Threads,
    what: "thread count",
    metric: "decode_tps (higher is better)",
    higher_is_better: true,
    get: |o| o.num_thread,
    set: |o, v| LoadOptions { num_thread: v, ..o },
    samples: |p| &p.decode_samples_tps,
};

/// `num_batch` for the lowest TTFT.
const BATCH: Knob = Knob {
    phase: Phase::Batch,
    what: "batch",
    metric: "ttft_s (lower is better)",
    higher_is_better: false,
    get: |o| o.num_batch,
    set: |o, v| LoadOptions { num_batch: v, ..o },
    samples: |p| &p.ttft_samples_s,
};

/// What a search did not do, and why it stopped early.
#[derive(Debug, Default)]
struct Notes {
    not_searched: Vec<String>,
    stopped: Option<String>,
}

impl Notes {
    /// `part` was cut short by `stop`.
    fn stopped(&mut self, stop: &Stop, part: &str) {
        if let Stop::CannotRun(s) = stop {
            self.stopped = Some(s.clone());
        }
        self.not_searched
            .push(format!("{part}: stopped, {}", stop.text()));
    }

    /// `part` did not run, because of `why`.
    fn skipped(&mut self, part: &str, why: &str) {
        self.not_searched
            .push(format!("{part}: not searched ({why})"));
    }
}

fn labels(v: &[Verdict]) -> String {
    v.iter().map(|v| v.label()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmp {
    FirstBetter,
    SecondBetter,
    Same,
}

/// Compares two samples: different only when Welch's p < [`ALPHA`]; fewer than 2 values on a
/// side means "same" (nothing can be shown).
pub(super) fn compare(a: &[f64], b: &[f64], higher_is_better: bool) -> Cmp {
    match (welch(a, b), mean(a), mean(b)) {
        (Some(w), Some(ma), Some(mb)) if w.p_value < ALPHA => {
            if (ma > mb) == higher_is_better {
                Cmp::FirstBetter
            } else {
                Cmp::SecondBetter
            }
        }
        _ => Cmp::Same,
    }
}

/// Runs one model's search (context, threads, batch) with `prober` and returns its record.
/// `started_at` and `finished_at` are left empty for the caller to stamp.
pub fn run_search(input: SearchInput<'_>, prober: &mut dyn Prober) -> SearchRecord {
    let started = Instant::now();
    let (plan, cfg) = (input.plan, input.cfg);
    let mut e = Engine {
        plan,
        cfg,
        prober,
        existing: resumable(plan, input.existing),
        probes: Vec::new(),
        spent_s: 0.0,
        new: 0,
        resumed: 0,
        tag: optimize_test_name(&plan.name),
    };
    let grid = plan.grid(cfg.grid_tokens);
    eprintln!(
        "[{}] context grid {:?} (cap {}), threads 1..={}, batches {:?}, at most {} probes / {:.0} s",
        e.tag,
        grid,
        plan.cap.tokens.map_or("unknown".into(), |t| t.to_string()),
        plan.max_threads,
        cfg.batches,
        cfg.max_probes,
        cfg.budget_s
    );
    let mut notes = Notes::default();

    // 1. Context.
    let ctx_stop = e.search_context(&grid, &mut notes);
    let context = e.context_outcome(&grid, ctx_stop.is_none() && !grid.is_empty());

    // 2. Threads and 3. batch, at the chosen context.
    let (threads, batch, recommended) = match context.largest_pass.as_ref().map(|ev| ev.num_ctx) {
        Some(ctx) => e.tune_at(ctx, ctx_stop, &context, &mut notes),
        None => {
            if !grid.is_empty() {
                let why = if ctx_stop.is_none() {
                    "no context passed"
                } else {
                    "the context search was cut short"
                };
                notes.skipped("threads", why);
                notes.skipped("batch", why);
            }
            (ChoiceOutcome::default(), ChoiceOutcome::default(), None)
        }
    };

    let first_row = &plan.rows[0];
    let record = SearchRecord {
        format_version: RECORD_FORMAT_VERSION,
        name: plan.name.clone(),
        model: plan.model.clone(),
        category: first_row.category.clone(),
        use_cases: plan.use_cases(),
        harness_version: HARNESS_VERSION.to_string(),
        host: input.host,
        server: input.server,
        started_at: String::new(),
        finished_at: String::new(),
        config: cfg.clone(),
        cap: plan.cap.clone(),
        grid,
        max_threads: plan.max_threads,
        probes: e.probes.clone(),
        context,
        threads,
        batch,
        recommended,
        not_searched: notes.not_searched,
        stopped: notes.stopped,
        probes_new: e.new,
        probes_resumed: e.resumed,
        probe_wall_s: e.spent_s,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    eprintln!("[{}] {}", e.tag, summary_line(&record));
    record
}

/// The results on disk a search may resume from: this model's probes that measured something
/// (a SKIPPED result — the server was away — is probed again), by test name.
fn resumable(plan: &ModelPlan, existing: Vec<CellResult>) -> HashMap<String, CellResult> {
    let prefix = format!("{}::opt::", plan.name);
    existing
        .into_iter()
        .filter(|r| {
            r.cell.test_name.starts_with(&prefix)
                && r.cell.model == plan.model
                && !measured_nothing(r)
        })
        .map(|r| (r.cell.test_name.clone(), r))
        .collect()
}

/// One line that says what a search found.
pub fn summary_line(r: &SearchRecord) -> String {
    let ctx = match (&r.context.largest_pass, &r.context.smallest_fail) {
        (Some(p), Some(f)) => format!(
            "largest PASS {} tokens, smallest {} {} tokens",
            p.num_ctx,
            f.verdict.label(),
            f.num_ctx
        ),
        (Some(p), None) => format!("largest PASS {} tokens (top of the grid)", p.num_ctx),
        (None, Some(f)) => format!(
            "no context passed (smallest {} {} tokens)",
            f.verdict.label(),
            f.num_ctx
        ),
        (None, None) => "no context probed".to_string(),
    };
    let rec = r
        .recommended
        .as_ref()
        .map_or("no recommendation".to_string(), |rec| {
            format!(
                "recommended num_ctx {} num_thread {} num_batch {} ({})",
                rec.options.num_ctx, rec.options.num_thread, rec.options.num_batch, rec.test_name
            )
        });
    format!(
        "{ctx}; {rec}; {} probes ({} new, {} resumed), {:.0} s of probes{}",
        r.probes.len(),
        r.probes_new,
        r.probes_resumed,
        r.probe_wall_s,
        if r.not_searched.is_empty() {
            String::new()
        } else {
            format!("; not searched: {}", r.not_searched.join("; "))
        }
    )
}
