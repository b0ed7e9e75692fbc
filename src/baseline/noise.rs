//! The machine's own noise floor, learned from an A/A run (`O3_NOISE_FLOOR`).
//!
//! Trials of one run are not independent draws: a shared machine drifts through slower and
//! faster spells that last several trials, so two runs of the same cells differ by more than
//! their per-trial spreads say (the README's A/A measurement, "The machine's noise floor": run
//! means with a spread of 3–6 % where the trials gave standard errors of 1.5–2.1 %). The per-trial test cannot see that part of the
//! noise; two runs of the same cells with nothing changed in between can.
//!
//! An **A/A run** is a run made against a baseline (`O3_BASELINE`) of the same cells while
//! nothing changed: same machine, server, models and options. Its changes are the machine's
//! own run-to-run noise. Per figure, the floor is the 95 % prediction bound of one more such
//! change: with the log changes `dᵢ` of the `n` cells compared (their true value is 0), `d/RMS`
//! of a further one follows Student's t with `n` degrees of freedom, so the floor is
//! `exp(t(0.975, n) · RMS(d)) − 1`. Few cells give a wide floor (t = 4.30 at n = 2, 2.23 at
//! n = 10), as they should.
//!
//! A change of the A/A run that the host's own speed accounts for ([`Outcome::WithHost`]: the
//! kernel read beside the trials slowed or sped up with it) is left out: the comparison puts
//! such changes down to the host already, so the floor is for the noise the host's reading
//! does not explain (the README's example: a kernel 9 % slower, and TTFT +12.6 % and decode
//! −17.6 % with it, would have made floors of 43 % and 81 %).
//!
//! A run that names a floor compares each figure with the threshold `max(O3_BASELINE_THRESHOLD,
//! floor)`: a change the machine makes by itself is "no change", and a verdict needs its whole
//! interval beyond that. The floor is learned once, when the run starts, and kept in its
//! `baseline.json`, so the reports stay a function of the run directory.

use serde::{Deserialize, Serialize};

use super::{Figure, Outcome, Thresholds, comparable, compare_cells, read_record, same_cell};
use crate::rundir::RunDir;
use crate::stats::{CONFIDENCE, t_critical};

/// What one figure's A/A changes give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureFloor {
    /// The figure.
    pub figure: Figure,
    /// A/A changes behind it (one per cell compared).
    pub n: usize,
    /// Root mean square of their log ratios `ln(current / baseline)`.
    pub rms_log: f64,
    /// The largest of them in magnitude, as a relative change (0.05 = +5 %).
    pub largest: f64,
    /// The floor, relative: one more A/A change stays within ± it with 95 % probability.
    pub floor: f64,
}

/// The floor learned from one A/A run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// The A/A run's id (its directory's name).
    pub run_id: String,
    /// The run it was compared with.
    pub baseline_run_id: String,
    /// Per figure with at least one A/A change.
    pub figures: Vec<FigureFloor>,
    /// The A/A changes left out because the host's speed accounted for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with_host: Vec<LeftOut>,
}

/// An A/A change the floor left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The A/A run's test name of the cell.
    pub test_name: String,
    /// The figure.
    pub figure: Figure,
}

/// Why a floor could not be learned.
#[derive(Debug, thiserror::Error)]
#[error("O3_NOISE_FLOOR={run}: {why}")]
pub struct NoiseFloorError {
    /// The A/A run named.
    pub run: String,
    /// What was wrong.
    pub why: String,
}

impl NoiseFloor {
    /// Learns the floor from the A/A run `aa`: its cells against those of the baseline it
    /// recorded. An error when it recorded none, or when no cell of it could be compared.
    pub fn learn(aa: &RunDir) -> Result<NoiseFloor, NoiseFloorError> {
        let err = |why: String| NoiseFloorError {
            run: aa.root().display().to_string(),
            why,
        };
        let rec = read_record(aa)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| {
                err(
                    "this run names no baseline: an A/A run is one made with O3_BASELINE \
                     naming an earlier run of the same cells, with nothing changed between \
                     them"
                        .into(),
                )
            })?;
        let cells = aa.read_cells_lenient().map_err(|e| err(e.to_string()))?;
        let base = RunDir::at(&rec.run_dir)
            .read_cells_lenient()
            .map_err(|e| err(format!("its baseline {}: {e}", rec.run_dir.display())))?;
        let flat = Thresholds::flat(rec.threshold());
        let mut logs: Vec<(Figure, f64)> = Vec::new();
        let mut with_host = Vec::new();
        for c in cells.items.iter().filter(|c| comparable(c)) {
            let Some(b) = same_cell(&base.items, &c.cell).filter(|b| comparable(b)) else {
                continue;
            };
            let changes = compare_cells(b, c, &flat);
            for f in changes.figures.iter().chain(&changes.host) {
                if f.outcome == Outcome::WithHost {
                    with_host.push(LeftOut {
                        test_name: c.cell.test_name.clone(),
                        figure: f.figure,
                    });
                } else {
                    logs.push((f.figure, (1.0 + f.change).ln()));
                }
            }
        }
        let figures: Vec<FigureFloor> = Figure::ALL
            .iter()
            .chain(&[Figure::HostSpeed])
            .filter_map(|&figure| {
                let d: Vec<f64> = logs
                    .iter()
                    .filter(|(f, _)| *f == figure)
                    .map(|(_, l)| *l)
                    .collect();
                FigureFloor::of(figure, &d)
            })
            .collect();
        if figures.is_empty() {
            return Err(err(format!(
                "no cell of it could be compared with the same cell of its baseline {}",
                rec.run_id
            )));
        }
        Ok(NoiseFloor {
            run_id: aa
                .root()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            baseline_run_id: rec.run_id,
            figures,
            with_host,
        })
    }

    /// What the A/A run gave for `figure`, when it had changes of it.
    pub fn figure(&self, figure: Figure) -> Option<&FigureFloor> {
        self.figures.iter().find(|f| f.figure == figure)
    }

    /// The floor of `figure`, relative, when the A/A run had one.
    pub fn of(&self, figure: Figure) -> Option<f64> {
        self.figure(figure).map(|f| f.floor)
    }
}

impl FigureFloor {
    /// The floor of the log changes `d`; `None` when there are none.
    pub fn of(figure: Figure, d: &[f64]) -> Option<FigureFloor> {
        if d.is_empty() {
            return None;
        }
        let n = d.len();
        let rms_log = (d.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
        let largest = d
            .iter()
            .copied()
            .fold(0.0_f64, |m, x| if x.abs() > m.abs() { x } else { m });
        Some(FigureFloor {
            figure,
            n,
            rms_log,
            largest: largest.exp() - 1.0,
            floor: (t_critical(CONFIDENCE, n as f64) * rms_log).exp() - 1.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SplitMix64;

    #[test]
    fn the_floor_is_a_prediction_bound_of_one_more_aa_change() {
        // Two cells' A/A changes of +3 % and −4 %: RMS of the logs 3.55 %, t(0.975, 2) = 4.30.
        let d = [1.03_f64.ln(), 0.96_f64.ln()];
        let f = FigureFloor::of(Figure::Ttft, &d).unwrap();
        assert_eq!(f.n, 2);
        assert!((f.rms_log - 0.0355).abs() < 5e-4, "{f:?}");
        assert!((f.largest + 0.04).abs() < 1e-12, "{f:?}");
        assert!((f.floor - 0.165).abs() < 0.002, "{f:?}");
        assert!(FigureFloor::of(Figure::Ttft, &[]).is_none());
        // Drawn from a run-to-run noise of 3 % (in logs): a further A/A change stays within
        // the floor of the ten before it about 95 % of the time, and beyond 3 % often.
        let mut rng = SplitMix64::new(3);
        let (mut within, mut beyond_3pct, rounds) = (0, 0, 2000);
        for _ in 0..rounds {
            let d: Vec<f64> = (0..10).map(|_| 0.03 * rng.next_normal()).collect();
            let f = FigureFloor::of(Figure::DecodeTps, &d).unwrap();
            let next = (0.03 * rng.next_normal()).exp() - 1.0;
            within += usize::from(next.abs() <= f.floor);
            beyond_3pct += usize::from(next.abs() > 0.03);
        }
        let share = within as f64 / rounds as f64;
        assert!((0.93..0.97).contains(&share), "{share}");
        assert!(beyond_3pct > rounds / 5, "{beyond_3pct}");
    }
}
