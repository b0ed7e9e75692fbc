//! The optimizer against a live server: preflight (`/api/version`, `/api/tags`, `/api/show`,
//! `/proc/meminfo`), the cap, the search with [`LiveProber`], then the record, the outputs and
//! the reports.

use std::time::SystemTime;

use super::plan::{ContextCap, MemoryEstimate, ModelPlan};
use super::record::{SearchRecord, write_record};
use super::search::{SearchInput, run_search};
use super::{OptConfig, Prober, optimize_test_name, outputs};
use crate::backend::OllamaClient;
use crate::date::rfc3339;
use crate::predict::Predictor;
use crate::preflight::{ModelFacts, preflight};
use crate::results::{CellResult, CellSpec};
use crate::rundir::RunEnv;
use crate::runner::{CellOptions, RUNTIME, run_cell_with};
use crate::{monitor, report};

/// Runs probes as real cells on the server ([`run_cell_with`]): each writes its result file and
/// rebuilds the reports.
pub struct LiveProber<'a> {
    /// The run.
    pub env: &'a RunEnv,
    /// Cell options.
    pub options: CellOptions,
}

impl Prober for LiveProber<'_> {
    fn probe(&mut self, spec: &CellSpec) -> CellResult {
        run_cell_with(spec, self.env, &self.options)
    }
}

/// What became of one model's optimize test.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutcome {
    /// The model cannot be searched here (server unreachable, model not pulled).
    CannotRun(String),
    /// The server answers wrongly (an error status, a body that is not Ollama's, no answer in
    /// time): the preflight error, which fails the test.
    Broken(String),
    /// The search ran (possibly cut short: see the record).
    Searched(Box<SearchRecord>),
}

/// The cap from the preflight facts, the prediction of the largest matrix row (its RAM Δ as a
/// fixed part plus KV per context token) and the system's memory now.
fn cap_of(
    pre: &ModelFacts,
    rows: &[CellSpec],
    predictor: &Result<Predictor, String>,
    ram_limit_pct: f64,
) -> ContextCap {
    let mut notes = Vec::new();
    let mem = monitor::system_memory();
    if mem.is_none() {
        notes.push("system memory unknown (/proc/meminfo unreadable)".into());
    }
    let row = rows
        .iter()
        .max_by_key(|r| r.num_ctx)
        .expect("a model has rows");
    let prediction = predictor
        .as_ref()
        .map_err(String::clone)
        .and_then(|p| p.predict(row, &pre.show, pre.tag.size));
    let estimate = match (prediction, mem) {
        (Ok(p), Some((total, used))) => {
            notes.extend(p.shape.notes.iter().cloned());
            let per_token = p.shape.kv_bytes_per_token_global(p.kv_type);
            let fixed = p.figures.ram_delta_bytes - per_token * f64::from(row.num_ctx);
            Some(MemoryEstimate {
                fixed_bytes: fixed.max(0.0) as u64,
                kv_bytes_per_token: per_token.ceil() as u64,
                basis: format!(
                    "predicted: {} KV, RAM offset from {}",
                    p.kv_type.name(),
                    p.fitted.ram_basis.describe()
                ),
                system_total_bytes: total,
                system_used_bytes: used,
                ram_limit_pct,
            })
        }
        (Err(e), _) => {
            notes.push(format!("no memory prediction: {e}"));
            None
        }
        _ => None,
    };
    ContextCap::new(pre.show.trained_context(), estimate, notes)
}

/// Where the context search starts: the largest grid context whose predicted TTFT and decode
/// rate meet the row's absolute gates (engine-relative gates are not known before the run);
/// `None` when nothing can be predicted.
fn start_of(
    plan: &ModelPlan,
    pre: &ModelFacts,
    predictor: &Predictor,
    cfg: &OptConfig,
) -> Option<(u32, String)> {
    let grid = plan.grid(cfg.grid_tokens);
    let mut predicted_pass = None;
    for &ctx in &grid {
        let spec = plan.spec_for(&plan.row_options(ctx), 1);
        if spec.relative_gates.is_some() {
            return None;
        }
        let p = predictor.predict(&spec, &pre.show, pre.tag.size).ok()?;
        if p.figures.ttft_s <= spec.gates.ttft_max_s && p.figures.decode_tps >= spec.gates.tok_s_min
        {
            predicted_pass = Some(ctx);
        }
    }
    Some(match predicted_pass {
        Some(c) => (c, "the largest context predicted to pass".to_string()),
        None => (
            grid.first().copied()?,
            "no context is predicted to pass: the bottom of the grid".to_string(),
        ),
    })
}

/// Searches one model slug (its matrix rows) on the live server of `env`, resuming from the
/// probe results already in the run directory; writes the record, rebuilds the optimizer's
/// outputs and the reports.
pub fn optimize_model(rows: Vec<CellSpec>, env: &RunEnv, cfg: &OptConfig) -> ModelOutcome {
    assert!(!rows.is_empty(), "a model has at least one matrix row");
    let tag = optimize_test_name(&rows[0].name);
    let model = rows[0].model.clone();
    let client = OllamaClient::new(&env.config);
    let pre = match RUNTIME.block_on(preflight(&client, &model)) {
        Ok(p) => p,
        Err(e) if e.skips() => return ModelOutcome::CannotRun(e.to_string()),
        Err(e) => return ModelOutcome::Broken(e.to_string()),
    };
    let host = monitor::host_info();
    let max_threads = cfg.max_threads.unwrap_or(host.cpu_logical as u32).max(1);
    let ram_limit = rows
        .iter()
        .map(|r| r.gates.ram_max_pct)
        .fold(f64::INFINITY, f64::min);
    let predictor = Predictor::open(&env.config);
    let cap = cap_of(&pre, &rows, &predictor, ram_limit);
    if let Some(e) = &cap.estimate {
        eprintln!(
            "[{tag}] cap: trained {:?}, memory limit {:?} tokens (predicted RAM Δ {} MiB + {} KiB/token, {}; {:.1} of {:.1} GiB used, limit {}%)",
            cap.trained_context,
            cap.memory_limit_tokens,
            e.fixed_bytes >> 20,
            e.kv_bytes_per_token >> 10,
            e.basis,
            e.system_used_bytes as f64 / (1u64 << 30) as f64,
            e.system_total_bytes as f64 / (1u64 << 30) as f64,
            e.ram_limit_pct
        );
    }
    let mut plan = ModelPlan::new(rows, cap, max_threads);
    if let Ok(p) = &predictor {
        plan.start = start_of(&plan, &pre, p, cfg);
        if let Some((ctx, why)) = &plan.start {
            eprintln!("[{tag}] context search starts at {ctx} tokens: {why}");
        }
    }
    // Earlier probes to resume from; a file that cannot be read is named and left out.
    let existing = match env.run_dir.read_cells_lenient() {
        Ok(c) => {
            for u in &c.unreadable {
                eprintln!(
                    "[{tag}] warning: not resuming from {}: {}",
                    u.path.display(),
                    u.why
                );
            }
            c.items
        }
        Err(e) => {
            eprintln!("[{tag}] warning: cannot read earlier probes, starting afresh: {e}");
            Vec::new()
        }
    };
    let started_at = rfc3339(SystemTime::now());
    let mut prober = LiveProber {
        env,
        // A probe predicted to cross the RAM limit is skipped with that reason, not loaded.
        options: CellOptions {
            skip_predicted_over_ram: true,
            ..CellOptions::default()
        },
    };
    let mut record = run_search(
        SearchInput {
            plan: &plan,
            cfg,
            existing,
            host,
            server: env.config.display_url(),
        },
        &mut prober,
    );
    record.started_at = started_at;
    record.finished_at = rfc3339(SystemTime::now());
    match write_record(&env.run_dir, &record) {
        Ok(p) => eprintln!("[{tag}] search record written to {}", p.display()),
        Err(e) => eprintln!("[{tag}] warning: {e}"),
    }
    if let Err(e) = outputs::build(&env.run_dir) {
        eprintln!("[{tag}] warning: optimizer outputs not rebuilt: {e}");
    }
    if let Err(e) = report::build(&env.run_dir) {
        eprintln!("[{tag}] warning: reports not rebuilt: {e}");
    }
    ModelOutcome::Searched(Box::new(record))
}
