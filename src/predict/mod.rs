//! Performance prediction: TTFT, decode tok/s and RAM Δ of a cell before it runs, from the model
//! (`/api/show`) and the host's measured bandwidth and compute, with efficiencies calibrated on
//! every measured cell of the host — and checked against each measurement.
//!
//! - [`model`]: the model's geometry from `/api/show` (layers, heads, KV heads, head
//!   dimensions, sliding-window layout, parameters, bits per weight).
//! - [`host`]: the host model (read bandwidth and multiply-add rate, one thread and all),
//!   measured once and cached in `<results dir>/predict/host.json`.
//! - [`estimate`]: a cell's costs ([`estimate::Breakdown`]) and figures at given efficiencies.
//! - [`calibrate`]: observations of measured cells in `<results dir>/predict/calibration.json`,
//!   the fitted efficiencies, leave-one-out errors.
//! - [`report`]: `comparative_analysis/prediction.md` and `.json` (`cargo test --test
//!   predict`), and the "Predicted vs measured" section of the performance matrix.
//!
//! A prediction is never a measurement: it is stored beside the measurement in the cell
//! result ([`CellPrediction`]), shown as a prediction, and judged by no gate.

pub mod calibrate;
pub mod estimate;
pub mod host;
pub mod model;
pub mod report;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::backend::ShowResponse;
use crate::config::{Config, ConfigError, parse_bool};
use crate::date::rfc3339;
use crate::results::{CellResult, CellSpec, Verdict};

use self::calibrate::{Calibration, Fitted, Observation};
use self::estimate::{
    Breakdown, CellInputs, FigureErrors, Figures, Measured, breakdown, errors, figures,
};
use self::host::HostModel;
use self::model::{KvType, ModelShape};

/// Directory of the host model and the calibration, in the results directory.
pub const STORE_DIR: &str = "predict";

/// `<results dir>/predict/host.json`.
pub fn host_path(results_dir: &Path) -> PathBuf {
    results_dir.join(STORE_DIR).join("host.json")
}

/// `<results dir>/predict/calibration.json`.
pub fn calibration_path(results_dir: &Path) -> PathBuf {
    results_dir.join(STORE_DIR).join("calibration.json")
}

/// Prediction settings, from the environment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PredictConfig {
    /// `O3_PREDICT_REMEASURE=1`: measure the host again instead of using the cached model.
    pub remeasure: bool,
    /// `O3_PREDICT_HOST_MODEL`: a host model (`host.json`) measured on the server's machine,
    /// for a server that is not on this one.
    pub host_model: Option<PathBuf>,
    /// `O3_PREDICT_KV_TYPE` (`f16`, `q8_0`, `q4_0`), else `OLLAMA_KV_CACHE_TYPE`, else f16: the
    /// server's KV cache type.
    pub kv_type: KvType,
    /// Where the KV type came from, in words.
    pub kv_type_from: String,
}

impl PredictConfig {
    /// From the process environment.
    pub fn from_env() -> Result<PredictConfig, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PredictConfig, ConfigError> {
        let mut c = PredictConfig {
            kv_type_from:
                "f16 (llama.cpp's default; set O3_PREDICT_KV_TYPE when the server uses another)"
                    .into(),
            ..PredictConfig::default()
        };
        if let Some(v) = get("O3_PREDICT_REMEASURE") {
            c.remeasure = parse_bool("O3_PREDICT_REMEASURE", &v)?;
        }
        if let Some(v) = get("O3_PREDICT_HOST_MODEL").filter(|v| !v.is_empty()) {
            c.host_model = Some(PathBuf::from(v));
        }
        for var in ["O3_PREDICT_KV_TYPE", "OLLAMA_KV_CACHE_TYPE"] {
            if let Some(v) = get(var).filter(|v| !v.trim().is_empty()) {
                c.kv_type = KvType::parse(&v).ok_or_else(|| ConfigError {
                    var: var.into(),
                    value: v.clone(),
                    allowed: "one of f16, q8_0, q4_0".into(),
                })?;
                c.kv_type_from = format!("{var}={v}");
                break;
            }
        }
        Ok(c)
    }
}

/// Whether the server of `config` runs on this machine: a loopback address, or a process of
/// this machine holds its listening socket.
pub fn server_is_local(config: &Config) -> bool {
    let label = config.host_label();
    let host = match label.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => label,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(host, "localhost" | "::1" | "0.0.0.0")
        || host.starts_with("127.")
        || crate::monitor::find_server_pid(&config.origin()).is_some()
}

/// Bits per weight of a GGUF quantization type, when only `/api/show` is known (the weights
/// are then parameters × this). llama.cpp's block sizes; the K-quant mixes as llama.cpp
/// reports them for 7–8B models (`llama-quantize --help`). Small models keep their embedding
/// tables at higher precision, so their files are larger than this says.
pub fn bits_per_weight(quantization: &str) -> Option<f64> {
    Some(match quantization.to_ascii_uppercase().as_str() {
        "F32" => 32.0,
        "F16" | "BF16" => 16.0,
        "Q8_0" => 8.5,
        "Q6_K" => 6.56,
        "Q5_K_M" => 5.69,
        "Q5_K_S" => 5.54,
        "Q5_0" => 5.5,
        "Q5_1" => 6.0,
        "Q4_K_M" => 4.89,
        "Q4_K_S" => 4.58,
        "Q4_0" => 4.5,
        "Q4_1" => 5.0,
        "IQ4_XS" => 4.25,
        "IQ4_NL" => 4.5,
        "Q3_K_L" => 4.27,
        "Q3_K_M" => 3.91,
        "Q3_K_S" => 3.5,
        "Q2_K" => 3.35,
        _ => return None,
    })
}

/// The system's memory against the RAM limit, for a prediction's RAM Δ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RamCheck {
    /// Total system memory (bytes).
    pub system_total_bytes: u64,
    /// System memory in use when the prediction was made (bytes).
    pub system_used_bytes: u64,
    /// The limit (percent of total).
    pub ram_limit_pct: f64,
    /// Whether used + predicted RAM Δ crosses the limit.
    pub crosses: bool,
}

impl RamCheck {
    /// The check of `ram_delta_bytes` against the system's memory now.
    pub fn now(ram_delta_bytes: f64, ram_limit_pct: f64) -> Option<RamCheck> {
        let (total, used) = crate::monitor::system_memory()?;
        Some(RamCheck::of(total, used, ram_delta_bytes, ram_limit_pct))
    }

    /// The check of `ram_delta_bytes` with `used` of `total` in use.
    pub fn of(total: u64, used: u64, ram_delta_bytes: f64, ram_limit_pct: f64) -> RamCheck {
        RamCheck {
            system_total_bytes: total,
            system_used_bytes: used,
            ram_limit_pct,
            crosses: used as f64 + ram_delta_bytes > total as f64 * ram_limit_pct / 100.0,
        }
    }
}

/// A prediction of one cell, made before it ran, with every input it used; after the cell,
/// what it measured and the error of each figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// When it was made (RFC 3339, UTC).
    pub made_at: String,
    /// Model as the server knows it.
    pub model: String,
    /// The model's geometry.
    pub shape: ModelShape,
    /// Where the weights' size came from.
    pub weights_from: String,
    /// The host model used.
    pub host: HostModel,
    /// How the host model was found (cached, measured, a file).
    pub host_from: String,
    /// The cell's options.
    pub inputs: CellInputs,
    /// KV cache type assumed.
    pub kv_type: KvType,
    /// Where it came from.
    pub kv_type_from: String,
    /// Efficiencies used and what they were fitted on.
    pub fitted: Fitted,
    /// The costs.
    pub breakdown: Breakdown,
    /// The predicted figures.
    pub figures: Figures,
    /// The RAM limit check, when the system's memory is known.
    #[serde(default)]
    pub ram: Option<RamCheck>,
    /// What the cell measured (after it ran).
    #[serde(default)]
    pub measured: Option<Measured>,
    /// (predicted − measured) ÷ measured per figure (after it ran).
    #[serde(default)]
    pub errors: Option<FigureErrors>,
    /// What a reader should know of this prediction (a context beyond the trained one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What a cell's prediction became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CellPrediction {
    /// Made.
    Made(Box<Prediction>),
    /// Not made, and why (a server on another machine without its host model, a model whose
    /// `/api/show` lacks a figure).
    Declined {
        /// Why.
        why: String,
    },
}

impl CellPrediction {
    /// The prediction, when made.
    pub fn made(&self) -> Option<&Prediction> {
        match self {
            CellPrediction::Made(p) => Some(p),
            CellPrediction::Declined { .. } => None,
        }
    }

    /// One line for the progress output.
    pub fn describe(&self) -> String {
        match self {
            CellPrediction::Declined { why } => format!("no prediction: {why}"),
            CellPrediction::Made(p) => format!(
                "predicted (not measured): TTFT {:.2} s, decode {:.1} tok/s, RAM Δ {:.0} MiB{} — efficiencies from {}",
                p.figures.ttft_s,
                p.figures.decode_tps,
                p.figures.ram_delta_bytes / (1u64 << 20) as f64,
                match &p.ram {
                    Some(r) if r.crosses =>
                        format!(" (crosses the {}% RAM limit)", r.ram_limit_pct),
                    _ => String::new(),
                },
                if p.fitted.cells() == 0 {
                    "defaults".to_string()
                } else {
                    format!("≥ {} measured cell(s)", p.fitted.cells())
                }
            ),
        }
    }
}

/// The host model and calibration of a run's results directory.
#[derive(Debug, Clone)]
pub struct Predictor {
    /// The host model.
    pub host: HostModel,
    /// How it was found.
    pub host_from: String,
    /// The host's calibration.
    pub calibration: Calibration,
    /// Settings.
    pub config: PredictConfig,
}

impl Predictor {
    /// The predictor for the server of `config`: the host model cached in the results directory
    /// (measured now when there is none), or the file of `O3_PREDICT_HOST_MODEL`; declined with
    /// the reason when the server is not on this machine and no host model of its machine is
    /// given — never this machine's figures for another.
    pub fn open(config: &Config) -> Result<Predictor, String> {
        let pc = PredictConfig::from_env().map_err(|e| e.to_string())?;
        let (host, host_from) = match &pc.host_model {
            Some(path) => {
                let m = host::from_file(path)?;
                (
                    m,
                    format!("host model of the server's machine from {}", path.display()),
                )
            }
            None if !server_is_local(config) => {
                return Err(format!(
                    "the server {} is not on this machine: measure its host there (`cargo test --test predict` on it writes <results dir>/predict/host.json) and point O3_PREDICT_HOST_MODEL at that file",
                    config.display_url()
                ));
            }
            None => host::load_or_measure(
                &host_path(&config.results_dir),
                crate::monitor::host_info(),
                pc.remeasure,
            )?,
        };
        let calibration = Calibration::load(&calibration_path(&config.results_dir), &host.host)
            .map_err(|e| e.to_string())?;
        Ok(Predictor {
            host,
            host_from,
            calibration,
            config: pc,
        })
    }

    /// The prediction of `spec` from `/api/show` and, when known, the blob size.
    pub fn predict(
        &self,
        spec: &CellSpec,
        show: &ShowResponse,
        blob_bytes: Option<u64>,
    ) -> Result<Prediction, String> {
        let (weights, weights_from) = match blob_bytes.filter(|b| *b > 0) {
            Some(b) => (b, "blob size (/api/tags)".to_string()),
            None => {
                let quant = show.details.quantization_level.clone().unwrap_or_default();
                let bits = bits_per_weight(&quant).ok_or_else(|| {
                    format!("no blob size and no bits per weight known for quantization {quant:?}")
                })?;
                let params = ModelShape::from_show(show, Some(1))?.parameters;
                (
                    (params as f64 * bits / 8.0) as u64,
                    format!("parameters × {bits} bits ({quant})"),
                )
            }
        };
        let shape = ModelShape::from_show(show, Some(weights))?;
        let inputs = CellInputs::from(spec);
        let b = breakdown(&shape, &self.host, &inputs, self.config.kv_type);
        let fitted = self.calibration.fit(&shape.family, &shape.quantization);
        let f = figures(&b, &fitted.efficiencies);
        let mut notes = Vec::new();
        if let Some(t) = shape
            .trained_context
            .filter(|t| *t < u64::from(spec.num_ctx))
        {
            notes.push(format!(
                "num_ctx {} is beyond the trained context {t}: Ollama clamps it, and the cell is refused",
                spec.num_ctx
            ));
        }
        Ok(Prediction {
            notes,
            made_at: rfc3339(SystemTime::now()),
            model: spec.model.clone(),
            // This machine's memory says nothing of another's.
            ram: match self.host.source {
                host::HostSource::MeasuredHere => {
                    RamCheck::now(f.ram_delta_bytes, spec.gates.ram_max_pct)
                }
                host::HostSource::File { .. } => None,
            },
            shape,
            weights_from,
            host: self.host.clone(),
            host_from: self.host_from.clone(),
            inputs,
            kv_type: self.config.kv_type,
            kv_type_from: self.config.kv_type_from.clone(),
            fitted,
            breakdown: b,
            figures: f,
            measured: None,
            errors: None,
        })
    }
}

/// The prediction of a cell about to run, or why there is none.
pub fn predict_cell(
    config: &Config,
    spec: &CellSpec,
    show: &ShowResponse,
    blob_bytes: Option<u64>,
) -> CellPrediction {
    match Predictor::open(config).and_then(|p| p.predict(spec, show, blob_bytes)) {
        Ok(p) => CellPrediction::Made(Box::new(p)),
        Err(why) => CellPrediction::Declined { why },
    }
}

/// What a cell measured, in the figures a prediction makes: nothing of a SKIPPED or INVALID
/// cell (its numbers are not to be trusted); RAM Δ only from the server's own process tree.
pub fn measured_of(r: &CellResult) -> Option<Measured> {
    if matches!(r.verdict(), Verdict::Skipped | Verdict::Invalid) {
        return None;
    }
    let m = Measured {
        ttft_s: r.summaries.ttft_s.as_ref().map(|s| s.mean),
        decode_tps: r.summaries.decode_tps.as_ref().map(|s| s.mean),
        ram_delta_bytes: (!r.hardware.pids.is_empty() && r.hardware.samples > 0)
            .then_some(r.hardware.rss_delta_bytes as f64),
    };
    (m.ttft_s.is_some() || m.decode_tps.is_some() || m.ram_delta_bytes.is_some()).then_some(m)
}

/// After a cell ran: its prediction gets what was measured and the errors, and the measurement
/// joins the host's calibration (`<results dir>/predict/calibration.json`), for the cells after
/// it. Returns a note when the calibration could not be saved.
pub fn check_cell(config: &Config, r: &mut CellResult) -> Option<String> {
    let measured = measured_of(r)?;
    let Some(CellPrediction::Made(p)) = &mut r.prediction else {
        return None;
    };
    p.errors = Some(errors(&p.figures, &measured));
    p.measured = Some(measured);
    let path = calibration_path(&config.results_dir);
    let mut cal = match Calibration::load(&path, &p.host.host) {
        Ok(c) => c,
        Err(e) => return Some(format!("calibration not updated: {e}")),
    };
    cal.add(Observation {
        run_id: r.metadata.run_id.clone(),
        test_name: r.cell.test_name.clone(),
        model: r.cell.model.clone(),
        family: p.shape.family.clone(),
        quantization: p.shape.quantization.clone(),
        num_thread: p.inputs.num_thread,
        breakdown: p.breakdown.clone(),
        measured,
    });
    cal.save(&path)
        .err()
        .map(|e| format!("calibration not updated: {e}"))
}
