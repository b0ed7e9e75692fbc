//! The optimizer against a live server: preflight (`/api/version`, `/api/tags`, `/api/show`,
//! `/proc/meminfo`), the cap, the search with [`LiveProber`], then the record, the outputs and
//! the reports.

use std::time::SystemTime;

use super::plan::{ContextCap, MemoryEstimate, ModelPlan, kv_bytes_per_token};
use super::record::{SearchRecord, write_record};
use super::search::{SearchInput, run_search};
use super::{MEMORY_SAFETY, OptConfig, Prober, optimize_test_name, outputs};
use crate::backend::OllamaClient;
use crate::date::rfc3339;
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

/// The cap from the preflight facts and the system's memory now.
fn cap_of(pre: &ModelFacts, ram_limit_pct: f64) -> ContextCap {
    let mut notes = Vec::new();
    let weights_bytes = pre.tag.size;
    let kv = match kv_bytes_per_token(&pre.show.model_info) {
        Ok((b, n)) => {
            notes.extend(n);
            Some(b)
        }
        Err(e) => {
            notes.push(format!("no KV-cache estimate: {e}"));
            None
        }
    };
    let mem = monitor::system_memory();
    if mem.is_none() {
        notes.push("system memory unknown (/proc/meminfo unreadable)".into());
    }
    if weights_bytes.is_none() {
        notes.push("weights size unknown (/api/tags has no size): counted as 0".into());
    }
    let estimate = match (kv, mem) {
        (Some(kv), Some((total, used))) => Some(MemoryEstimate {
            weights_bytes: weights_bytes.unwrap_or(0),
            kv_bytes_per_token: kv,
            safety: MEMORY_SAFETY,
            system_total_bytes: total,
            system_used_bytes: used,
            ram_limit_pct,
        }),
        _ => None,
    };
    ContextCap::new(pre.show.trained_context(), estimate, notes)
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
    let cap = cap_of(&pre, ram_limit);
    if let Some(e) = &cap.estimate {
        eprintln!(
            "[{tag}] cap: trained {:?}, memory limit {:?} tokens (weights {} MiB, KV {} KiB/token, ×{}, {:.1} of {:.1} GiB used, limit {}%)",
            cap.trained_context,
            cap.memory_limit_tokens,
            e.weights_bytes >> 20,
            e.kv_bytes_per_token >> 10,
            e.safety,
            e.system_used_bytes as f64 / (1u64 << 30) as f64,
            e.system_total_bytes as f64 / (1u64 << 30) as f64,
            e.ram_limit_pct
        );
    }
    let plan = ModelPlan::new(rows, cap, max_threads);
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
        options: CellOptions::default(),
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
