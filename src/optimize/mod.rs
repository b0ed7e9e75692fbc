//! The optimizer: per model, the largest context that passes its gates, then the thread count
//! with the best decode rate and the batch size with the lowest TTFT at that context — with
//! statistics that refuse to pick a winner that is only noise.
//!
//! `cargo test --test optimize` runs one search per model slug of the matrix (`<name>::optimize`).
//! Every probe is a real cell (a [`CellSpec`] with changed `num_ctx` / `num_thread` /
//! `num_batch`, named `<name>::opt::ctx_<K>k_t<T>_b<B>[_r<N>]`) run through
//! [`crate::runner::run_cell_with`], so each probe leaves `<run>/cells/<name>__opt__….json`
//! behind and a search resumes from those files when the run directory is reused (`O3_RUN_ID`).
//!
//! The search logic ([`search`]) only talks to a [`Prober`]; [`live::LiveProber`] runs cells on
//! the server, [`sim::SimServer`] is a deterministic model of a server (options → figures with
//! seeded noise) that the unit tests search against.
//!
//! ## The search, step by step
//!
//! 1. **Cap** ([`plan::ContextCap`]): min(trained context from `/api/show`, the largest context
//!    whose predicted RAM Δ ([`crate::predict`]: weights + KV cache at the server's KV type with
//!    the sliding-window saving + compute buffer + the RAM offset calibrated on the host's
//!    measured cells) keeps system RAM at or below the row's RAM limit (80 %) given the memory
//!    in use now). Nothing above the cap is ever probed, and a probe predicted to cross the
//!    limit when it comes to run is skipped with that reason rather than loaded.
//! 2. **Grid**: the model's smallest matrix context, then every multiple of
//!    [`OptConfig::grid_tokens`] (4096) above it up to the cap.
//! 3. **Context**: first the largest grid context predicted to pass its gates (when the gates
//!    are absolute and a prediction can be made; else the top of the grid), then bisection
//!    between the largest known PASS and the smallest known non-PASS. A MARGINAL or INVALID
//!    probe is repeated (at most [`MAX_REPEATS`] more runs) until PASS or FAIL has the majority;
//!    the two grid points either side of the boundary are confirmed by a second run (and a
//!    third when the two disagree). A point that stays unclear is MARGINAL (INVALID when every
//!    run was) and counts as not passing. Probes use the matrix row of the nearest context (the
//!    largest matrix context ≤ the probe's, else the smallest): its gates, `num_predict`,
//!    `num_thread`, `num_batch`, and its fill, capped so that fill + `num_predict` ≤ `num_ctx`.
//! 4. **Threads** at the chosen context: ternary search over `1..=logical cores` for the highest
//!    client decode tok/s. Two settings differ only when Welch's t-test on the per-trial decode
//!    rates of their valid measured trials gives p < [`ALPHA`]. The winner is the fewest threads
//!    not significantly slower than the best mean among the PASS probes.
//! 5. **Batch** at the chosen context and threads: ternary search over [`DEFAULT_BATCHES`]
//!    (restricted to ≤ `num_ctx`) for the lowest TTFT, same test. Tie rule: the smallest batch
//!    not significantly slower than the best mean wins (a smaller batch needs a smaller compute
//!    buffer, so the smaller memory footprint wins a tie).
//! 6. **Bounds**: at most [`OptConfig::max_probes`] probes and [`OptConfig::budget_s`] seconds of
//!    probe wall time per model (probes resumed from disk count with their recorded wall time,
//!    so a resumed search stops where the first one would have). What the budget cut off is
//!    listed in [`record::SearchRecord::not_searched`].
//!
//! ## Outputs (see [`outputs`])
//!
//! In `<run>/comparative_analysis/`: `optimize/<name>.json` (the [`record::SearchRecord`]),
//! `integration_configs/<name>_<K>k.yaml` and `.Modelfile` per recommended configuration,
//! `integration_configs/continue-config.yaml`, and `use_case_recommendations.md` (which also
//! weighs the run's Phase 2 sessions, and is rebuilt with the reports).

pub mod live;
pub mod outputs;
pub mod plan;
pub mod record;
pub mod search;
pub mod sim;

#[cfg(test)]
mod tests;

use std::ops::Bound::{Excluded, Included};

use serde::{Deserialize, Serialize};

use crate::backend::LoadOptions;
use crate::config::{ConfigError, NumberIn};
use crate::matrix::ctx_label;
use crate::results::{CellResult, CellSpec};

pub use plan::{ContextCap, MemoryEstimate, ModelPlan};
pub use record::SearchRecord;
pub use search::run_search;

/// Significance level of the Welch test that decides whether two settings differ.
pub const ALPHA: f64 = 0.05;

/// Most extra runs of one probe point (so at most 1 + 2 runs).
pub const MAX_REPEATS: u32 = 2;

/// The `num_batch` values the batch search chooses from (those ≤ `num_ctx`).
pub const DEFAULT_BATCHES: [u32; 9] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048];

/// Optimizer settings, from the environment (defaults in each field's doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptConfig {
    /// `O3_OPT_GRID_TOKENS`: step of the context grid (tokens). Default 4096.
    pub grid_tokens: u32,
    /// `O3_OPT_MAX_PROBES`: probes per model at most (resumed ones included). Default 12.
    pub max_probes: u32,
    /// `O3_OPT_BUDGET_S`: probe wall time per model at most (seconds). Default 1800.
    pub budget_s: f64,
    /// `O3_OPT_BATCHES`: comma-separated `num_batch` values. Default [`DEFAULT_BATCHES`].
    pub batches: Vec<u32>,
    /// `O3_OPT_MAX_THREADS`: the thread search's upper end. Default: the host's logical CPUs.
    pub max_threads: Option<u32>,
}

impl Default for OptConfig {
    fn default() -> Self {
        OptConfig {
            grid_tokens: 4096,
            max_probes: 12,
            budget_s: 1800.0,
            batches: DEFAULT_BATCHES.to_vec(),
            max_threads: None,
        }
    }
}

impl OptConfig {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests). A value that does
    /// not parse is an error naming the variable, the value and what is allowed.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Every setting has a range (README, "The optimizer").
        const GRID: NumberIn<u32> = NumberIn::new(
            Included(256),
            Included(1 << 20),
            "a whole number from 256 to 1048576 (tokens)",
        );
        const BUDGET: NumberIn<f64> = NumberIn::new(
            Excluded(0.0),
            Included(604_800.0),
            "a positive number of seconds up to 604800 (one week)",
        );
        const PROBES: NumberIn<u32> =
            NumberIn::new(Included(1), Included(1000), "a whole number from 1 to 1000");
        const THREADS: NumberIn<u32> =
            NumberIn::new(Included(1), Included(1024), "a whole number from 1 to 1024");
        const BATCH: NumberIn<u32> = NumberIn::new(Included(1), Included(1 << 20), "");
        let mut c = OptConfig::default();
        if let Some(v) = get("O3_OPT_GRID_TOKENS") {
            c.grid_tokens = GRID.parse_var("O3_OPT_GRID_TOKENS", &v)?;
        }
        if let Some(v) = get("O3_OPT_MAX_PROBES") {
            c.max_probes = PROBES.parse_var("O3_OPT_MAX_PROBES", &v)?;
        }
        if let Some(v) = get("O3_OPT_BUDGET_S") {
            c.budget_s = BUDGET.parse_var("O3_OPT_BUDGET_S", &v)?;
        }
        if let Some(v) = get("O3_OPT_MAX_THREADS") {
            c.max_threads = Some(THREADS.parse_var("O3_OPT_MAX_THREADS", &v)?);
        }
        if let Some(v) = get("O3_OPT_BATCHES") {
            let mut batches = v
                .split(',')
                .map(|part| BATCH.parse(part))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| ConfigError {
                    var: "O3_OPT_BATCHES".into(),
                    value: v.clone(),
                    allowed: "comma-separated whole numbers from 1 to 1048576, e.g. 64,256,512"
                        .into(),
                })?;
            batches.sort_unstable();
            batches.dedup();
            c.batches = batches;
        }
        Ok(c)
    }
}

/// Label of a probe's options in its test name: `ctx_12k_t2_b512`.
pub fn probe_label(opts: &LoadOptions) -> String {
    format!(
        "{}_t{}_b{}",
        ctx_label(opts.num_ctx),
        opts.num_thread,
        opts.num_batch
    )
}

/// The load-time options of a cell.
pub fn options_of(spec: &CellSpec) -> LoadOptions {
    LoadOptions {
        num_ctx: spec.num_ctx,
        num_batch: spec.num_batch,
        num_thread: spec.num_thread,
    }
}

/// Test name of a probe: `<name>::opt::ctx_12k_t2_b512`, with `_r<run>` from the second run of
/// the same options on.
pub fn probe_test_name(name: &str, opts: &LoadOptions, run: u32) -> String {
    if run <= 1 {
        format!("{name}::opt::{}", probe_label(opts))
    } else {
        format!("{name}::opt::{}_r{run}", probe_label(opts))
    }
}

/// Test name of a model's optimize test: `<name>::optimize`.
pub fn optimize_test_name(name: &str) -> String {
    format!("{name}::optimize")
}

/// Which part of the search a probe belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Largest passing context.
    Context,
    /// Best thread count.
    Threads,
    /// Best batch size.
    Batch,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Context => "context",
            Phase::Threads => "threads",
            Phase::Batch => "batch",
        }
    }
}

/// Runs one probe cell. The live implementation runs it on the server and writes its result
/// file; the simulated one computes it.
pub trait Prober {
    /// Runs the cell `spec` and returns its result (SKIPPED when it could not run).
    fn probe(&mut self, spec: &CellSpec) -> CellResult;
}

impl<P: Prober + ?Sized> Prober for &mut P {
    fn probe(&mut self, spec: &CellSpec) -> CellResult {
        (**self).probe(spec)
    }
}
