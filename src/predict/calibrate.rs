//! Calibration: every measured cell of a host leaves an [`Observation`] — the costs its
//! prediction rested on ([`Breakdown`]) and what it measured — in
//! `<results dir>/predict/calibration.json`, beside the host model. The efficiencies of a new
//! prediction are the medians of the efficiencies those observations imply ([`implied`]):
//! those of the same model family and quantization when there are any, else those of every
//! model of the host, else the documented defaults ([`DEFAULTS`]).
//!
//! The error of a prediction is only ever computed against a cell that was not among the
//! observations it was fitted on: a cell is predicted before it runs, and the calibration's own
//! quality is reported leave-one-out ([`leave_one_out`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::estimate::{Breakdown, Efficiencies, FigureErrors, Measured, errors, figures, implied};
use crate::results::Host;
use crate::rundir::{StoreError, load_json, save_json};

/// Efficiencies before any cell of the host was measured:
/// - decode 0.6 of the measured read bandwidth (llama.cpp reaches 60–95 % of STREAM bandwidth
///   on x86: `/work/shared/reference/next-capabilities.md` §3.2, llama.cpp#25976);
/// - prefill 1.0 × the probe's multiply-add rate (the probe is plain Rust, the engine's kernels
///   are SIMD; no default is better than the first measurement, which replaces it);
/// - RAM offset 64 MiB (a llama-server runner's own code, libraries and threads).
pub const DEFAULTS: Efficiencies = Efficiencies {
    decode: 0.6,
    prefill: 1.0,
    ram_offset_bytes: 64.0 * 1024.0 * 1024.0,
};

/// Version of the calibration file.
pub const CALIBRATION_VERSION: u32 = 1;

/// One measured cell of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Run that measured it.
    pub run_id: String,
    /// Test name of the cell.
    pub test_name: String,
    /// Model as the server knows it.
    pub model: String,
    /// Model family.
    pub family: String,
    /// Quantization.
    pub quantization: String,
    /// `num_thread` of the cell.
    pub num_thread: u32,
    /// What the prediction's figures rested on.
    pub breakdown: Breakdown,
    /// What the cell measured.
    pub measured: Measured,
}

impl Observation {
    fn same_group(&self, family: &str, quantization: &str) -> bool {
        self.family == family && self.quantization == quantization
    }
}

/// Where a fitted efficiency came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Basis {
    /// The documented default ([`DEFAULTS`]): nothing measured yet.
    Default,
    /// Median of `n` cells of the same family and quantization.
    Group {
        /// Cells.
        n: usize,
    },
    /// Median of `n` cells of other models of the host.
    Host {
        /// Cells.
        n: usize,
    },
}

impl Basis {
    /// In words: `default`, `3 cells of this family`, `5 cells of the host`.
    pub fn describe(&self) -> String {
        match self {
            Basis::Default => "default".into(),
            Basis::Group { n } => format!("{n} cell(s) of this family and quantization"),
            Basis::Host { n } => format!("{n} cell(s) of other models of the host"),
        }
    }
}

/// The efficiencies of a prediction and where each came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// The values.
    pub efficiencies: Efficiencies,
    /// Basis of the decode efficiency.
    pub decode_basis: Basis,
    /// Basis of the prefill efficiency.
    pub prefill_basis: Basis,
    /// Basis of the RAM offset.
    pub ram_basis: Basis,
}

impl Fitted {
    /// The cells the least-calibrated figure rests on (0 when one is a default).
    pub fn cells(&self) -> usize {
        [&self.decode_basis, &self.prefill_basis, &self.ram_basis]
            .iter()
            .map(|b| match b {
                Basis::Default => 0,
                Basis::Group { n } | Basis::Host { n } => *n,
            })
            .min()
            .unwrap_or(0)
    }
}

/// The calibration of one host: its observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// [`CALIBRATION_VERSION`].
    pub format_version: u32,
    /// The host the observations were made on.
    pub host: Host,
    /// Every measured cell, oldest first.
    pub observations: Vec<Observation>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    crate::stats::percentile(&v, 0.5)
}

/// One efficiency fitted on `obs`: the median of what the group's observations imply, else
/// the host's, else the default.
fn fit_one(
    obs: &[&Observation],
    family: &str,
    quantization: &str,
    pick: impl Fn(&Observation) -> Option<f64>,
    default: f64,
) -> (f64, Basis) {
    let group: Vec<f64> = obs
        .iter()
        .filter(|o| o.same_group(family, quantization))
        .filter_map(|o| pick(o))
        .collect();
    let n = group.len();
    if let Some(m) = median(group) {
        return (m, Basis::Group { n });
    }
    let all: Vec<f64> = obs.iter().filter_map(|o| pick(o)).collect();
    let n = all.len();
    match median(all) {
        Some(m) => (m, Basis::Host { n }),
        None => (default, Basis::Default),
    }
}

/// The efficiencies for a model of `family` and `quantization`, fitted on `obs`.
pub fn fit(obs: &[&Observation], family: &str, quantization: &str) -> Fitted {
    let imp = |o: &Observation| implied(&o.breakdown, &o.measured);
    let (decode, decode_basis) = fit_one(
        obs,
        family,
        quantization,
        |o| imp(o).decode,
        DEFAULTS.decode,
    );
    let (prefill, prefill_basis) = fit_one(
        obs,
        family,
        quantization,
        |o| imp(o).prefill,
        DEFAULTS.prefill,
    );
    let (ram, ram_basis) = fit_one(
        obs,
        family,
        quantization,
        |o| imp(o).ram_offset_bytes,
        DEFAULTS.ram_offset_bytes,
    );
    Fitted {
        efficiencies: Efficiencies {
            decode,
            prefill,
            ram_offset_bytes: ram,
        },
        decode_basis,
        prefill_basis,
        ram_basis,
    }
}

impl Calibration {
    /// An empty calibration of `host`.
    pub fn new(host: Host) -> Calibration {
        Calibration {
            format_version: CALIBRATION_VERSION,
            host,
            observations: Vec::new(),
        }
    }

    /// The calibration stored at `path` when it is of `host`; an empty one when there is no
    /// file or it is of another host. A file that cannot be read is an error naming it.
    pub fn load(path: &Path, host: &Host) -> Result<Calibration, StoreError> {
        if !path.exists() {
            return Ok(Calibration::new(host.clone()));
        }
        let c: Calibration = load_json(path)?;
        if c.host.hostname == host.hostname && c.host.cpu_model == host.cpu_model {
            Ok(c)
        } else {
            Ok(Calibration::new(host.clone()))
        }
    }

    /// Saves it at `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        save_json(path, self)
    }

    /// The efficiencies for a model of `family` and `quantization`, fitted on every
    /// observation.
    pub fn fit(&self, family: &str, quantization: &str) -> Fitted {
        let all: Vec<&Observation> = self.observations.iter().collect();
        fit(&all, family, quantization)
    }

    /// Adds `o`, replacing an observation of the same run and test (a cell run again).
    pub fn add(&mut self, o: Observation) {
        self.observations
            .retain(|x| !(x.run_id == o.run_id && x.test_name == o.test_name));
        self.observations.push(o);
    }
}

/// Each observation predicted from efficiencies fitted on all the others (leave-one-out): its
/// test name, run and errors.
pub fn leave_one_out(obs: &[Observation]) -> Vec<(String, String, FigureErrors)> {
    (0..obs.len())
        .map(|i| {
            let others: Vec<&Observation> = obs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| o)
                .collect();
            let o = &obs[i];
            let f = fit(&others, &o.family, &o.quantization);
            let p = figures(&o.breakdown, &f.efficiencies);
            (
                o.test_name.clone(),
                o.run_id.clone(),
                errors(&p, &o.measured),
            )
        })
        .collect()
}

/// Median and worst absolute relative error of each figure over `errs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorSummary {
    /// TTFT: (median, worst, cells).
    pub ttft: Option<(f64, f64, usize)>,
    /// Decode rate.
    pub decode: Option<(f64, f64, usize)>,
    /// RAM Δ.
    pub ram: Option<(f64, f64, usize)>,
}

/// The [`ErrorSummary`] of `errs`.
pub fn summarize_errors<'a>(errs: impl IntoIterator<Item = &'a FigureErrors>) -> ErrorSummary {
    let errs: Vec<&FigureErrors> = errs.into_iter().collect();
    let one = |pick: fn(&FigureErrors) -> Option<f64>| {
        let v: Vec<f64> = errs.iter().filter_map(|e| pick(e)).map(f64::abs).collect();
        let worst = v.iter().copied().fold(0.0, f64::max);
        median(v.clone()).map(|m| (m, worst, v.len()))
    };
    ErrorSummary {
        ttft: one(|e| e.ttft),
        decode: one(|e| e.decode),
        ram: one(|e| e.ram),
    }
}
