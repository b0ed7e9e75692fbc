//! `comparative_analysis/regression.md` and `regression.json`: the run against the baseline it
//! recorded (`<run>/baseline.json`, [`crate::baseline`]) — the comparison of every figure of
//! every cell, a geometric-mean summary per figure, the smallest changes the sample sizes could
//! detect, and the **re-optimization triggers**: the models whose optimizer results are stale
//! because a figure regressed, or the host, the server version or the model's digest changed,
//! with the command that re-runs the optimizer for just those models; and the host's own speed
//! beside the trials, which tells the changes of the machine from those of the server.
//!
//! A pure function of the two runs' cell results and the record: the same files give the same
//! bytes (no paths, no clocks).

use serde::Serialize;

use crate::baseline::{
    BaselineRecord, CellKey, Figure, FigureChange, NoiseFloor, Outcome, comparable, compare_cells,
    geomean_change, same_cell, signed,
};
use crate::output::{Output, OutputFile};
use crate::results::{CellResult, Host, Verdict};
use crate::rundir::RunDir;
use crate::stats::percentile;
use crate::text::{cell, out};

/// Version of `regression.json`.
pub const REGRESSION_FORMAT_VERSION: u32 = 1;

/// The whole comparison (serialized as `regression.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionReport {
    /// [`REGRESSION_FORMAT_VERSION`].
    pub format_version: u32,
    /// The baseline's run id.
    pub baseline_run_id: String,
    /// Noise threshold (percent).
    pub threshold_pct: f64,
    /// Significance level.
    pub alpha: f64,
    /// Power of the minimum detectable change.
    pub power: f64,
    /// The machine's noise floor the thresholds were raised to, when the run named an A/A run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<NoiseFloor>,
    /// Why the baseline's cells could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_error: Option<String>,
    /// One entry per cell compared, in test-name order.
    pub cells: Vec<CellComparison>,
    /// Cells of this run that could not be compared, with why.
    pub not_compared: Vec<NotCompared>,
    /// Test names of baseline cells this run has no cell for.
    pub only_in_baseline: Vec<String>,
    /// Per figure: the geometric mean change, the outcomes counted and the MDE.
    pub figures: Vec<FigureSummary>,
    /// The models whose optimizer results are stale, with why.
    pub triggers: Vec<Trigger>,
    /// The command that re-runs the optimizer for just the triggered models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reoptimize_command: Option<String>,
}

/// One cell against the same cell of the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellComparison {
    /// This run's test name.
    pub test_name: String,
    /// The baseline's test name for the same cell (usually the same).
    pub baseline_test_name: String,
    /// What makes it the same cell.
    pub key: CellKey,
    /// This run's verdict.
    pub verdict: Verdict,
    /// The figures compared.
    pub changes: Vec<FigureChange>,
    /// The host's own speed against the baseline's, when both runs read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<FigureChange>,
}

impl CellComparison {
    /// The cell's worst outcome (regressed, improved, moved with the host, can't tell, no
    /// change) over the server's figures.
    pub fn outcome(&self) -> Option<Outcome> {
        self.changes.iter().map(|c| c.outcome).min()
    }
}

/// A cell of this run that was not compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotCompared {
    /// Test name.
    pub test_name: String,
    /// Why.
    pub why: String,
}

/// A figure over every cell compared (for [`Figure::HostSpeed`], regressed means the host was
/// slower and improved faster).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureSummary {
    /// The figure.
    pub figure: Figure,
    /// Cells whose figure was compared.
    pub cells: usize,
    /// Geometric mean of current / baseline, minus 1.
    pub geomean_change: Option<f64>,
    /// Cells regressed.
    pub regressed: usize,
    /// Cells improved.
    pub improved: usize,
    /// Cells whose change the host's own speed accounts for.
    pub with_host: usize,
    /// Cells where the samples could not tell.
    pub inconclusive: usize,
    /// Cells without change.
    pub no_change: usize,
    /// Median minimum detectable change over the cells (fraction).
    pub mde_median: Option<f64>,
    /// Smallest minimum detectable change.
    pub mde_min: Option<f64>,
    /// Largest minimum detectable change.
    pub mde_max: Option<f64>,
}

/// Why a model's optimizer results are stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TriggerReason {
    /// A figure of a cell regressed.
    Regressed {
        /// The cell.
        test_name: String,
        /// The figure.
        figure: Figure,
        /// The change (fraction).
        change: f64,
    },
    /// The cells ran on a different machine.
    HostChanged {
        /// The baseline's host.
        from: String,
        /// This run's.
        to: String,
    },
    /// The server's version changed.
    ServerVersionChanged {
        /// The baseline's.
        from: String,
        /// This run's.
        to: String,
    },
    /// The model's digest changed (a new build or quantization under the same name).
    ModelDigestChanged {
        /// The baseline's.
        from: String,
        /// This run's.
        to: String,
    },
}

impl TriggerReason {
    /// In words.
    pub fn describe(&self) -> String {
        match self {
            TriggerReason::Regressed {
                test_name,
                figure,
                change,
            } => format!(
                "{} regressed {} at `{test_name}`",
                figure.label(),
                signed(*change)
            ),
            TriggerReason::HostChanged { from, to } => format!("host changed: {from} → {to}"),
            TriggerReason::ServerVersionChanged { from, to } => {
                format!("server version changed: {from} → {to}")
            }
            TriggerReason::ModelDigestChanged { from, to } => {
                format!("model digest changed: {from} → {to}")
            }
        }
    }
}

/// A model (a slug of the table, the optimizer's unit) to search again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    /// The slug (`<name>::optimize` is its optimizer test).
    pub name: String,
    /// The model.
    pub model: String,
    /// The table its cells came from, when they say.
    pub matrix: Option<String>,
    /// Why.
    pub reasons: Vec<TriggerReason>,
}

/// A host in a line: `bench-host (AMD EPYC, 16 CPUs, 64 GiB)`.
pub fn host_line(h: &Host) -> String {
    format!(
        "{} ({}, {} CPUs, {:.0} GiB)",
        h.hostname,
        h.cpu_model,
        h.cpu_logical,
        h.ram_total_bytes as f64 / (1u64 << 30) as f64
    )
}

/// The machine facts that make optimizer results stale when they change (not the host name
/// alone: a renamed machine is the same machine).
fn same_machine(a: &Host, b: &Host) -> bool {
    (&a.cpu_model, a.cpu_logical, a.ram_total_bytes)
        == (&b.cpu_model, b.cpu_logical, b.ram_total_bytes)
}

/// Compares `current` with `baseline` (cells of the two runs) under `rec`.
pub fn compare_runs(
    rec: &BaselineRecord,
    current: &[CellResult],
    baseline: Result<&[CellResult], String>,
) -> RegressionReport {
    let mut report = RegressionReport {
        format_version: REGRESSION_FORMAT_VERSION,
        baseline_run_id: rec.run_id.clone(),
        threshold_pct: rec.threshold_pct,
        alpha: rec.alpha,
        power: rec.power,
        noise_floor: rec.noise_floor.clone(),
        baseline_error: None,
        cells: Vec::new(),
        not_compared: Vec::new(),
        only_in_baseline: Vec::new(),
        figures: Vec::new(),
        triggers: Vec::new(),
        reoptimize_command: None,
    };
    let base = match baseline {
        Ok(b) => b,
        Err(e) => {
            report.baseline_error = Some(e);
            return report;
        }
    };
    let mut current: Vec<&CellResult> = current.iter().collect();
    current.sort_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name));
    for c in &current {
        let not = |why: String| NotCompared {
            test_name: c.cell.test_name.clone(),
            why,
        };
        let Some(b) = same_cell(base, &c.cell) else {
            report
                .not_compared
                .push(not("no such cell in the baseline".into()));
            continue;
        };
        if !comparable(c) || !comparable(b) {
            report.not_compared.push(not(format!(
                "{} here, {} in the baseline",
                c.verdict().label(),
                b.verdict().label()
            )));
            continue;
        }
        let changes = compare_cells(b, c, &rec.thresholds());
        report.cells.push(CellComparison {
            test_name: c.cell.test_name.clone(),
            baseline_test_name: b.cell.test_name.clone(),
            key: CellKey::of(&c.cell),
            verdict: c.verdict(),
            changes: changes.figures,
            host: changes.host,
        });
    }
    let mut only: Vec<String> = base
        .iter()
        .filter(|b| {
            let k = CellKey::of(&b.cell);
            !current.iter().any(|c| CellKey::of(&c.cell) == k)
        })
        .map(|b| b.cell.test_name.clone())
        .collect();
    only.sort();
    only.dedup();
    report.only_in_baseline = only;
    report.figures = Figure::ALL
        .iter()
        .map(|&f| summarize_figure(f, &report.cells))
        .collect();
    if report.cells.iter().any(|c| c.host.is_some()) {
        report
            .figures
            .push(summarize_figure(Figure::HostSpeed, &report.cells));
    }
    report.triggers = triggers(&current, base, &report.cells);
    report.reoptimize_command = reoptimize_command(&report.triggers);
    report
}

fn summarize_figure(figure: Figure, cells: &[CellComparison]) -> FigureSummary {
    let changes: Vec<&FigureChange> = cells
        .iter()
        .flat_map(|c| c.changes.iter().chain(&c.host))
        .filter(|c| c.figure == figure)
        .collect();
    let count = |o: Outcome| changes.iter().filter(|c| c.outcome == o).count();
    let mdes: Vec<f64> = changes.iter().filter_map(|c| c.mde).collect();
    FigureSummary {
        figure,
        cells: changes.len(),
        geomean_change: geomean_change(changes.iter().copied()),
        regressed: count(Outcome::Regressed),
        improved: count(Outcome::Improved),
        with_host: count(Outcome::WithHost),
        inconclusive: count(Outcome::Inconclusive),
        no_change: count(Outcome::NoChange),
        mde_median: percentile(&mdes, 0.5),
        mde_min: mdes.iter().copied().reduce(f64::min),
        mde_max: mdes.iter().copied().reduce(f64::max),
    }
}

/// The models to search again, by slug, in slug order.
fn triggers(
    current: &[&CellResult],
    base: &[CellResult],
    cells: &[CellComparison],
) -> Vec<Trigger> {
    let mut names: Vec<&str> = current.iter().map(|c| c.cell.name.as_str()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mine: Vec<&&CellResult> = current.iter().filter(|c| c.cell.name == name).collect();
        let mut reasons = Vec::new();
        for cmp in cells {
            if !mine.iter().any(|c| c.cell.test_name == cmp.test_name) {
                continue;
            }
            for ch in cmp
                .changes
                .iter()
                .filter(|c| c.outcome == Outcome::Regressed)
            {
                reasons.push(TriggerReason::Regressed {
                    test_name: cmp.test_name.clone(),
                    figure: ch.figure,
                    change: ch.change,
                });
            }
        }
        // The facts of the first comparable cell of the model in each run.
        let facts = |cells: &mut dyn Iterator<Item = &CellResult>| {
            cells
                .filter(|c| comparable(c))
                .min_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name))
                .map(|c| c.metadata.clone())
        };
        let model = mine
            .first()
            .map(|c| c.cell.model.clone())
            .unwrap_or_default();
        let now = facts(&mut mine.iter().map(|c| **c));
        let then = facts(&mut base.iter().filter(|b| b.cell.name == name));
        if let (Some(now), Some(then)) = (now, then) {
            if !same_machine(&now.host, &then.host) {
                reasons.push(TriggerReason::HostChanged {
                    from: host_line(&then.host),
                    to: host_line(&now.host),
                });
            }
            if let (Some(a), Some(b)) = (&then.server_version, &now.server_version)
                && a != b
            {
                reasons.push(TriggerReason::ServerVersionChanged {
                    from: a.clone(),
                    to: b.clone(),
                });
            }
            if let (Some(a), Some(b)) = (&then.model_digest, &now.model_digest)
                && a != b
            {
                reasons.push(TriggerReason::ModelDigestChanged {
                    from: a.clone(),
                    to: b.clone(),
                });
            }
        }
        if reasons.is_empty() {
            continue;
        }
        let matrix = mine
            .iter()
            .filter_map(|c| c.cell.source.rsplit_once(':').map(|(f, _)| f.to_string()))
            .next();
        out.push(Trigger {
            name: name.to_string(),
            model,
            matrix,
            reasons,
        });
    }
    out
}

/// `O3_MATRIX=<table> cargo test --release --test optimize -- --exact a::optimize && …`: one
/// `--exact` run per model (the test binary takes one filter), with the table the cells came
/// from.
fn reoptimize_command(triggers: &[Trigger]) -> Option<String> {
    if triggers.is_empty() {
        return None;
    }
    let runs: Vec<String> = triggers
        .iter()
        .map(|t| {
            let matrix = t
                .matrix
                .as_ref()
                .map(|m| format!("O3_MATRIX={m} "))
                .unwrap_or_default();
            format!(
                "{matrix}cargo test --release --test optimize -- --exact {}",
                crate::optimize::optimize_test_name(&t.name)
            )
        })
        .collect();
    Some(runs.join(" && "))
}

/// The comparison of the run in `run` with its recorded baseline, or `None` when it records
/// none.
pub fn of_run(run: &RunDir, current: &[CellResult]) -> Option<RegressionReport> {
    let rec = match crate::baseline::read_record(run) {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            return Some(RegressionReport {
                baseline_error: Some(e.to_string()),
                ..compare_runs(
                    &BaselineRecord {
                        run_dir: Default::default(),
                        run_id: "?".into(),
                        threshold_pct: crate::baseline::DEFAULT_THRESHOLD_PCT,
                        warn_only: false,
                        alpha: crate::baseline::ALPHA,
                        power: crate::baseline::POWER,
                        noise_floor: None,
                    },
                    &[],
                    Ok(&[]),
                )
            });
        }
    };
    let base = RunDir::at(&rec.run_dir)
        .read_cells_lenient()
        .map(|c| c.items)
        .map_err(|e| e.to_string());
    Some(compare_runs(
        &rec,
        current,
        base.as_deref().map_err(Clone::clone),
    ))
}

/// Writes `regression.md` and `regression.json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegressionWriter;

impl Output<RegressionReport> for RegressionWriter {
    fn render(&self, r: &RegressionReport) -> Vec<OutputFile> {
        let mut json = serde_json::to_string_pretty(r).expect("the report serializes");
        json.push('\n');
        vec![
            OutputFile::new(RunDir::relative().report_path("regression.json"), json),
            OutputFile::new(RunDir::relative().report_path("regression.md"), markdown(r)),
        ]
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// The Markdown.
pub fn markdown(r: &RegressionReport) -> String {
    let mut o = String::new();
    out!(o, "# Regression against the baseline");
    out!(o);
    out!(
        o,
        "Baseline run `{}` (named in `baseline.json`). Noise threshold {}%{}: a smaller change \
         is \"no change\". Significance α = {} (two-sided); minimum detectable change (MDE) at \
         power {}.",
        r.baseline_run_id,
        r.threshold_pct,
        if r.noise_floor.is_some() {
            ", raised per figure to the machine's noise floor (below)"
        } else {
            ""
        },
        r.alpha,
        r.power
    );
    out!(o);
    if let Some(e) = &r.baseline_error {
        out!(o, "**The baseline could not be read:** {e}");
        out!(o);
        return o;
    }
    let outcome = |o: Outcome| r.cells.iter().filter(|c| c.outcome() == Some(o)).count();
    out!(
        o,
        "{} cell(s) compared: {} REGRESSED, {} improved,{} {} can't tell, {} no change; {} not \
         compared; {} only in the baseline.",
        r.cells.len(),
        outcome(Outcome::Regressed),
        outcome(Outcome::Improved),
        match outcome(Outcome::WithHost) {
            0 => String::new(),
            n => format!(" {n} moved with the host,"),
        },
        outcome(Outcome::Inconclusive),
        outcome(Outcome::NoChange),
        r.not_compared.len(),
        r.only_in_baseline.len()
    );
    out!(o);

    if let Some(nf) = &r.noise_floor {
        out!(o, "## The machine's noise floor");
        out!(o);
        out!(
            o,
            "Learned from the A/A run `{}` against `{}` (the same cells with nothing changed): \
             per figure, the 95% bound of one more such run-to-run change, t(0.975, n) × the \
             RMS of the n log changes. Each figure is compared with the larger of it and the \
             {}% threshold.",
            nf.run_id,
            nf.baseline_run_id,
            r.threshold_pct
        );
        out!(o);
        out!(
            o,
            "| Figure | A/A changes | Largest | Floor | Threshold applied |"
        );
        out!(o, "|---|---:|---:|---:|---:|");
        let applied = crate::baseline::Thresholds {
            threshold: r.threshold_pct / 100.0,
            floor: Some(nf.clone()),
        };
        for f in &nf.figures {
            out!(
                o,
                "| {} | {} | {} | ±{} | ±{} |",
                f.figure.label(),
                f.n,
                signed(f.largest),
                pct(Some(f.floor)),
                pct(Some(applied.of(f.figure)))
            );
        }
        out!(o);
        if !nf.with_host.is_empty() {
            out!(
                o,
                "Left out, as the host's own speed accounted for them in the A/A run: {}.",
                nf.with_host
                    .iter()
                    .map(|l| format!("`{}` {}", l.test_name, l.figure.label()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out!(o);
        }
    }

    out!(o, "## Summary per figure");
    out!(o);
    out!(
        o,
        "| Figure | Cells | Geomean change | Regressed | Improved | With the host | Can't tell | No change | MDE median (range) |"
    );
    out!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for f in r.figures.iter().filter(|f| f.figure != Figure::HostSpeed) {
        let mde = match (f.mde_median, f.mde_min, f.mde_max) {
            (Some(m), Some(lo), Some(hi)) => {
                format!("{} ({}–{})", pct(Some(m)), pct(Some(lo)), pct(Some(hi)))
            }
            _ => "–".into(),
        };
        out!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.figure.label(),
            f.cells,
            f.geomean_change.map_or("–".into(), signed),
            f.regressed,
            f.improved,
            f.with_host,
            f.inconclusive,
            f.no_change,
            mde
        );
    }
    out!(o);
    match r.figures.iter().find(|f| f.figure == Figure::HostSpeed) {
        Some(h) => out!(
            o,
            "Host speed (the compute kernel read beside every trial, both runs): geometric-mean \
             change {} over {} cell(s); slower in {}, faster in {}, can't tell in {}, no change \
             in {}.",
            h.geomean_change.map_or("–".into(), signed),
            h.cells,
            h.regressed,
            h.improved,
            h.inconclusive,
            h.no_change
        ),
        None => out!(
            o,
            "Host speed: not compared (it is read only when the server is a process of the \
             harness's machine, and compared only between builds of the same kind), so no \
             change here can be told from a change of the machine."
        ),
    }
    out!(o);

    out!(o, "## Re-optimization triggers");
    out!(o);
    if r.triggers.is_empty() {
        out!(
            o,
            "None: no figure regressed, and host, server version and model digests are the \
             baseline's."
        );
        out!(o);
    } else {
        for t in &r.triggers {
            let why: Vec<String> = t.reasons.iter().map(TriggerReason::describe).collect();
            out!(o, "- `{}` (`{}`): {}", t.name, t.model, why.join("; "));
        }
        out!(o);
        if let Some(cmd) = &r.reoptimize_command {
            out!(o, "Re-run the optimizer for just these models:");
            out!(o);
            out!(o, "```sh");
            out!(o, "{cmd}");
            out!(o, "```");
            out!(o);
        }
    }

    let with_host: Vec<String> = r
        .cells
        .iter()
        .flat_map(|c| {
            c.changes
                .iter()
                .filter(|ch| ch.outcome == Outcome::WithHost)
                .map(move |ch| format!("`{}` {}", c.test_name, ch.figure.label()))
        })
        .collect();
    if !with_host.is_empty() {
        out!(
            o,
            "Moved with the host: {}. The machine itself was slower or faster than during the \
             baseline (its own speed, read beside the trials, changed the same way), so these \
             say nothing of the server: run both again on a quiet machine to tell.",
            with_host.join(", ")
        );
        out!(o);
    }

    out!(o, "## Comparison");
    out!(o);
    if r.cells.is_empty() {
        out!(
            o,
            "No cell of this run has a comparable cell in the baseline."
        );
        out!(o);
    } else {
        out!(
            o,
            "| Cell | Figure | Baseline | Current | Change (95% CI) | Test | MDE | Outcome |"
        );
        out!(o, "|---|---|---:|---:|---|---|---:|---|");
        for c in &r.cells {
            for ch in c.host.iter().chain(&c.changes) {
                let mark = match (ch.figure, ch.outcome) {
                    (Figure::HostSpeed, _) => ch.outcome_label(),
                    (_, Outcome::Regressed) => "**REGRESSED**",
                    (_, other) => other.label(),
                };
                out!(
                    o,
                    "| `{}` | {} | {} (n={}) | {} (n={}) | {} | {} | {} | {} |",
                    c.test_name,
                    ch.figure.label(),
                    ch.figure.format(ch.baseline),
                    ch.baseline_n,
                    ch.figure.format(ch.current),
                    ch.current_n,
                    cell(&ch.change_text()),
                    ch.test_text(),
                    pct(ch.mde),
                    mark
                );
            }
        }
        out!(o);
    }

    if !r.not_compared.is_empty() || !r.only_in_baseline.is_empty() {
        out!(o, "## Not compared");
        out!(o);
        for n in &r.not_compared {
            out!(o, "- `{}`: {}", n.test_name, n.why);
        }
        for t in &r.only_in_baseline {
            out!(o, "- `{t}`: only in the baseline");
        }
        out!(o);
    }

    out!(o, "## How to read this");
    out!(o);
    out!(
        o,
        "- Change: current mean / baseline mean − 1, with a 95% interval on the log ratio \
         (delta method, Welch–Satterthwaite df). RAM Δ is the server's RSS after each trial \
         minus before the load."
    );
    out!(
        o,
        "- Test: Welch's t on the per-trial values; Mann–Whitney U when a sample is skewed \
         (|G1| > {}) and both have at least {} values (below 4 a side U cannot reach p < 0.05); \
         stability: its two bootstrap intervals overlap or not.",
        crate::baseline::SKEW_LIMIT,
        crate::baseline::MW_MIN_N
    );
    out!(
        o,
        "- Outcome: within the threshold → no change; beyond it, significant with the whole \
         95% interval beyond the threshold too → REGRESSED or improved, otherwise → can't tell \
         (the MDE says how large a change these samples could have seen)."
    );
    out!(
        o,
        "- Noise floor (`O3_NOISE_FLOOR=<A/A run>`): two runs of the same cells differ by more \
         than their trials' spreads say, since a shared machine drifts through slower and \
         faster spells; an A/A run (run against a baseline with nothing changed) measures that, \
         and each figure's threshold is raised to the 95% bound of one more A/A change."
    );
    out!(
        o,
        "- Host speed: a multiply-add kernel on the engine's thread count, read right before \
         each measured trial and after the last, compared like a figure. A TTFT or decode \
         change that would be REGRESSED or improved *moved with the host* when the host's speed \
         changed significantly the same way, by at least 1/{} of the figure's change (in \
         logs): the machine changed, not necessarily the server. Figures are never divided by \
         it: the engine does not slow in proportion to the kernel.",
        crate::baseline::HOST_SPAN
    );
    out!(
        o,
        "- A REGRESSED figure fails the cell's test (verdict REGRESSED) unless \
         `O3_BASELINE_WARN_ONLY=1`; a FAIL or INVALID verdict stays as it is."
    );
    o
}
