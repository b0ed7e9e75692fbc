//! What predictions look like to a reader: `comparative_analysis/prediction.md` and
//! `prediction.json` (`cargo test --test predict`, the table to read before committing an hour
//! to a cell), and the "Predicted vs measured" section of the performance matrix.
//!
//! Both are pure functions of the run directory: the predicted cells in `predictions/`, the
//! calibration snapshot beside them, and the cell results.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::calibrate::{Calibration, ErrorSummary, leave_one_out, summarize_errors};
use super::estimate::FigureErrors;
use super::{CellPrediction, Prediction};
use crate::output::{self, Output, OutputFile, WriteError};
use crate::results::CellSpec;
use crate::rundir::{RunDir, StoreError, Unreadable, read_json_dir, save_json};
use crate::text::{MISSING, bytes, cell, ctx_label, fixed, out, signed_pct, thousands};

/// Version of `prediction.json`.
pub const PREDICTION_REPORT_VERSION: u32 = 1;

/// A cell of the table and its prediction (`<run>/predictions/<cell>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedCell {
    /// The cell as specified.
    pub cell: CellSpec,
    /// Its prediction, or why there is none.
    pub prediction: CellPrediction,
}

/// `prediction.json`: every predicted cell and the calibration's leave-one-out quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionReport {
    /// [`PREDICTION_REPORT_VERSION`].
    pub format_version: u32,
    /// Cells, by model, then `num_ctx`, then test name.
    pub cells: Vec<PredictedCell>,
    /// Observations of the host's calibration when the predictions were made.
    pub calibration_cells: usize,
    /// Each observation predicted from the others (leave-one-out), summarized.
    pub leave_one_out: ErrorSummary,
    /// Files of `predictions/` that could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_not_read: Vec<Unreadable>,
}

/// `<run>/predictions/`.
pub fn predictions_dir(run: &RunDir) -> PathBuf {
    run.root().join("predictions")
}

/// `<run>/predictions_calibration.json`: the calibration the predictions were made with.
pub fn calibration_snapshot_path(run: &RunDir) -> PathBuf {
    run.root().join("predictions_calibration.json")
}

/// Saves a predicted cell (and the calibration it used) in the run directory.
pub fn save_predicted(
    run: &RunDir,
    c: &PredictedCell,
    calibration: Option<&Calibration>,
) -> Result<(), StoreError> {
    let path = predictions_dir(run).join(crate::rundir::cell_file_name(&c.cell.test_name));
    save_json(&path, c)?;
    match calibration {
        Some(cal) => save_json(&calibration_snapshot_path(run), cal),
        None => Ok(()),
    }
}

/// The prediction report of a run (pure function of its directory).
pub fn read_report(run: &RunDir) -> Result<PredictionReport, StoreError> {
    let found = read_json_dir::<PredictedCell>(&predictions_dir(run))?;
    let mut cells = found.items;
    cells.sort_by(|a, b| {
        (&a.cell.model, a.cell.num_ctx, &a.cell.test_name).cmp(&(
            &b.cell.model,
            b.cell.num_ctx,
            &b.cell.test_name,
        ))
    });
    let snapshot = calibration_snapshot_path(run);
    let cal: Option<Calibration> = if snapshot.exists() {
        Some(crate::rundir::load_json(&snapshot)?)
    } else {
        None
    };
    let (n, loo) = match &cal {
        Some(c) => {
            let e = leave_one_out(&c.observations);
            (
                c.observations.len(),
                summarize_errors(e.iter().map(|(_, _, e)| e)),
            )
        }
        None => (0, ErrorSummary::default()),
    };
    Ok(PredictionReport {
        format_version: PREDICTION_REPORT_VERSION,
        cells,
        calibration_cells: n,
        leave_one_out: loo,
        files_not_read: found.unreadable,
    })
}

/// Writes `prediction.json`.
pub struct PredictionJson;
/// Writes `prediction.md`.
pub struct PredictionMarkdown;

impl Output<PredictionReport> for PredictionJson {
    fn render(&self, r: &PredictionReport) -> Vec<OutputFile> {
        let mut json = serde_json::to_string_pretty(r).unwrap_or_default();
        json.push('\n');
        vec![OutputFile::new(
            RunDir::relative().report_path("prediction.json"),
            json,
        )]
    }
}

impl Output<PredictionReport> for PredictionMarkdown {
    fn render(&self, r: &PredictionReport) -> Vec<OutputFile> {
        vec![OutputFile::new(
            RunDir::relative().report_path("prediction.md"),
            markdown(r),
        )]
    }
}

/// Rebuilds `prediction.md` and `.json` of the run.
pub fn build(run: &RunDir) -> Result<Vec<PathBuf>, String> {
    let r = read_report(run).map_err(|e| e.to_string())?;
    output::write_all(run.root(), &[&PredictionJson, &PredictionMarkdown], &r)
        .map_err(|e: WriteError| e.to_string())
}

fn mib(b: f64) -> String {
    if b < 0.0 {
        format!("-{}", bytes((-b) as u64))
    } else {
        bytes(b as u64)
    }
}

fn basis_cells(p: &Prediction) -> String {
    let basis = if p.fitted.cells() == 0 {
        "defaults".into()
    } else {
        format!("{} cell(s)", p.fitted.cells())
    };
    if p.notes.is_empty() {
        basis
    } else {
        format!("{basis}; {}", cell(&p.notes.join("; ")))
    }
}

fn ram_limit(p: &Prediction) -> String {
    match &p.ram {
        Some(r) if r.crosses => format!("**crosses {}%**", fixed(r.ram_limit_pct, 0)),
        Some(r) => format!("fits ({}%)", fixed(r.ram_limit_pct, 0)),
        None => MISSING.into(),
    }
}

/// `prediction.md`.
pub fn markdown(r: &PredictionReport) -> String {
    let mut o = String::new();
    out!(o, "# Predicted matrix");
    out!(o);
    out!(
        o,
        "Predictions, not measurements: made from `/api/show` and the host's measured bandwidth before any cell runs; no gate judges them. Figures: TTFT of a trial with the model loaded, client decode rate at the fill's depth, RAM Δ of the server's process tree."
    );
    out!(o);
    for u in &r.files_not_read {
        out!(o, "- not read: `{}`: {}", u.path.display(), cell(&u.why));
    }
    if let Some(p) = r.cells.iter().find_map(|c| c.prediction.made()) {
        out!(o, "Host: {} ({}).", p.host.describe(), p.host_from);
        out!(o);
        out!(
            o,
            "KV cache type: {} ({}).",
            p.kv_type.name(),
            p.kv_type_from
        );
        out!(o);
    }
    out!(
        o,
        "| Test | Model | Context | Threads | TTFT (s) | Decode (tok/s) | RAM Δ | KV cache (without window) | RAM limit | Efficiencies from |"
    );
    out!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &r.cells {
        let s = &c.cell;
        let ctx = format!(
            "{} (fill {})",
            ctx_label(s.num_ctx),
            thousands(u64::from(s.fill_tokens))
        );
        match &c.prediction {
            CellPrediction::Declined { why } => out!(
                o,
                "| `{}` | {} | {ctx} | {} | {MISSING} | {MISSING} | {MISSING} | {MISSING} | {MISSING} | not predicted: {} |",
                s.test_name,
                cell(&s.model),
                s.num_thread,
                cell(why)
            ),
            CellPrediction::Made(p) => out!(
                o,
                "| `{}` | {} | {ctx} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                s.test_name,
                cell(&s.model),
                s.num_thread,
                fixed(p.figures.ttft_s, 2),
                fixed(p.figures.decode_tps, 1),
                mib(p.figures.ram_delta_bytes),
                mib(p.breakdown.kv_cache_bytes),
                mib(p.breakdown.kv_cache_full_bytes),
                ram_limit(p),
                basis_cells(p)
            ),
        }
    }
    out!(o);
    out!(o, "## Models");
    out!(o);
    let mut seen: Vec<&str> = Vec::new();
    for p in r.cells.iter().filter_map(|c| c.prediction.made()) {
        if seen.contains(&p.model.as_str()) {
            continue;
        }
        seen.push(&p.model);
        let notes = if p.shape.notes.is_empty() {
            String::new()
        } else {
            format!("; {}", p.shape.notes.join("; "))
        };
        out!(
            o,
            "- `{}`: {}; weights from {}{notes}.",
            p.model,
            p.shape.describe(),
            p.weights_from
        );
    }
    out!(o);
    out!(o, "## Calibration");
    out!(o);
    out!(
        o,
        "{} measured cell(s) of this host calibrate the efficiencies (decode: share of the read bandwidth; prefill: engine FLOP rate over the probe's; RAM: bytes beyond the geometry), per model family and quantization, else over the host. Each cell predicted from the others (leave-one-out):",
        r.calibration_cells
    );
    out!(o);
    error_table(&mut o, &r.leave_one_out);
    o
}

fn error_row(o: &mut String, name: &str, e: Option<(f64, f64, usize)>) {
    match e {
        Some((median, worst, n)) => out!(
            o,
            "| {name} | {} | {} | {n} |",
            fixed(median * 100.0, 1) + " %",
            fixed(worst * 100.0, 1) + " %"
        ),
        None => out!(o, "| {name} | {MISSING} | {MISSING} | 0 |"),
    }
}

/// The median and worst absolute error per figure, as a table.
pub fn error_table(o: &mut String, s: &ErrorSummary) {
    out!(
        o,
        "| Figure | Median abs. error | Worst abs. error | Cells |"
    );
    out!(o, "|---|---|---|---|");
    error_row(o, "TTFT", s.ttft);
    error_row(o, "Decode tok/s", s.decode);
    error_row(o, "RAM Δ", s.ram);
    out!(o);
}

fn err(e: Option<f64>) -> String {
    e.map_or(MISSING.into(), signed_pct)
}

/// The performance matrix's "Predicted vs measured" section: one row per cell with a
/// prediction, and the median and worst absolute error per figure. Nothing when no cell has
/// a prediction.
pub fn matrix_section<'a>(
    o: &mut String,
    rows: impl Iterator<Item = (&'a str, Option<&'a CellPrediction>)>,
) {
    let rows: Vec<(&str, &CellPrediction)> = rows.filter_map(|(t, p)| p.map(|p| (t, p))).collect();
    if rows.is_empty() {
        return;
    }
    out!(o, "## Predicted vs measured");
    out!(o);
    out!(
        o,
        "Each prediction was made before its cell ran (`src/predict`), with efficiencies fitted on earlier cells only; it is never judged by a gate. Error = (predicted − measured) ÷ measured."
    );
    out!(o);
    out!(
        o,
        "| Test | TTFT measured | predicted | error | Decode measured | predicted | error | RAM Δ measured | predicted | error | Efficiencies from |"
    );
    out!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut errs: Vec<FigureErrors> = Vec::new();
    for (test, pred) in &rows {
        match pred {
            CellPrediction::Declined { why } => out!(
                o,
                "| `{test}` | | {MISSING} | | | {MISSING} | | | {MISSING} | | not predicted: {} |",
                cell(why)
            ),
            CellPrediction::Made(p) => {
                let m = p.measured.unwrap_or_default();
                let e = p.errors.unwrap_or_default();
                errs.push(e);
                out!(
                    o,
                    "| `{test}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    m.ttft_s.map_or(MISSING.into(), |v| fixed(v, 2)),
                    fixed(p.figures.ttft_s, 2),
                    err(e.ttft),
                    m.decode_tps.map_or(MISSING.into(), |v| fixed(v, 1)),
                    fixed(p.figures.decode_tps, 1),
                    err(e.decode),
                    m.ram_delta_bytes.map_or(MISSING.into(), mib),
                    mib(p.figures.ram_delta_bytes),
                    err(e.ram),
                    basis_cells(p)
                );
            }
        }
    }
    out!(o);
    out!(o, "Prediction error over these cells:");
    out!(o);
    error_table(o, &summarize_errors(errs.iter()));
}
