//! `cargo test --test predict`: the predicted matrix, one test per cell of the matrix table
//! (`O3_MATRIX`, default `harness/matrix.csv`; the same names as `context_scaling`), without
//! running any: each test asks the server for `/api/show` of its model only (no model is
//! loaded) and predicts TTFT, decode tok/s and RAM Δ from it and the host's measured bandwidth
//! (`o3_suite::predict`). Writes `<run>/predictions/<cell>.json` and
//! `comparative_analysis/prediction.md` and `.json`, and prints each prediction.
//!
//! - `-- --list` reads the table only: no server is contacted, nothing is measured.
//! - The host is measured once (under a second) and cached in `<results dir>/predict/host.json`.
//! - Optional rows are predicted too: a prediction costs nothing.
//! - A model the server does not have, or a server that cannot be reached, is ignored with the
//!   reason (failed with `O3_REQUIRE_SERVER=1`); a server not on this machine is declined
//!   unless `O3_PREDICT_HOST_MODEL` names a host model measured on its machine.

use std::process::ExitCode;

use libtest_mimic::{Completion, Failed};
use o3_suite::backend::{BackendError, OllamaClient};
use o3_suite::harness::{self, RunEnv, Test};
use o3_suite::matrix;
use o3_suite::predict::report::{PredictedCell, build, save_predicted};
use o3_suite::predict::{CellPrediction, Predictor};
use o3_suite::results::CellSpec;
use o3_suite::runner::RUNTIME;

fn main() -> ExitCode {
    harness::main("prediction.md", |config| {
        let cells =
            matrix::load(&config.matrix_path, config.ram_limit_pct).map_err(|e| e.to_string())?;
        Ok(cells
            .into_iter()
            .map(|spec| Test {
                name: spec.test_name.clone(),
                ignored: false,
                run: Box::new(move |env| predict(&spec, env)),
            })
            .collect())
    })
}

fn predict(spec: &CellSpec, env: &RunEnv) -> Result<Completion, Failed> {
    let client = OllamaClient::new(&env.config);
    let show = match RUNTIME.block_on(client.show(&spec.model)) {
        Ok(s) => s,
        Err(e) if e.is_unreachable() => return harness::cannot_run(&env.config, &e.to_string()),
        Err(BackendError::Http { status: 404, .. }) => {
            let why = format!(
                "model {} is not pulled on {}: run `ollama pull {}` there",
                spec.model,
                env.config.display_url(),
                spec.model
            );
            return harness::cannot_run(&env.config, &why);
        }
        Err(e) => return Err(format!("/api/show of {} failed: {e}", spec.model).into()),
    };
    let (prediction, calibration) = match Predictor::open(&env.config) {
        // The weights from the quantization type: this test asks for /api/show only.
        Ok(p) => match p.predict(spec, &show, None) {
            Ok(pred) => (CellPrediction::Made(Box::new(pred)), Some(p.calibration)),
            Err(why) => (CellPrediction::Declined { why }, Some(p.calibration)),
        },
        Err(why) => (CellPrediction::Declined { why }, None),
    };
    eprintln!("[{}] {}", spec.test_name, prediction.describe());
    let cell = PredictedCell {
        cell: spec.clone(),
        prediction: prediction.clone(),
    };
    save_predicted(&env.run_dir, &cell, calibration.as_ref())
        .map_err(|e| format!("the prediction was not written: {e}"))?;
    build(&env.run_dir).map_err(|e| format!("prediction.md not written: {e}"))?;
    match prediction {
        CellPrediction::Declined { why } => harness::cannot_run(&env.config, &why),
        CellPrediction::Made(p) => {
            let f = p.figures;
            let sane = [f.ttft_s, f.decode_tps, f.ram_delta_bytes]
                .iter()
                .all(|x| x.is_finite() && *x > 0.0);
            if sane {
                Ok(Completion::Completed)
            } else {
                Err(format!("the prediction is not a positive finite figure: {f:?}").into())
            }
        }
    }
}
