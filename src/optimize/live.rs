//! The optimizer against a live server: preflight (`/api/version`, `/api/tags`, `/api/show`,
//! `/proc/meminfo`), the cap, the search with [`LiveProber`], then the record, the outputs and
//! the reports.

use std::time::SystemTime;

use super::plan::{ContextCap, MemoryEstimate, ModelPlan, kv_bytes_per_token};
use super::record::{HostFacts, SearchRecord, write_record};
use super::search::{SearchInput, run_search};
use super::{MEMORY_SAFETY, OptConfig, Prober, optimize_test_name, outputs};
use crate::backend::{BackendError, OllamaClient, same_model};
use crate::results::{self, CellSpec};
use crate::runner::{CellOptions, Outcome, RUNTIME, RunEnv, rfc3339, run_cell_with};
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
    fn probe(&mut self, spec: &CellSpec) -> Outcome {
        run_cell_with(spec, self.env, &self.options)
    }
}

/// What became of one model's optimize test.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutcome {
    /// The model cannot be searched here (server unreachable, model not pulled).
    CannotRun(String),
    /// The search ran (possibly cut short: see the record).
    Searched(Box<SearchRecord>),
}

struct Preflight {
    trained: Option<u64>,
    weights_bytes: Option<u64>,
    model_info: serde_json::Map<String, serde_json::Value>,
}

async fn preflight(client: &OllamaClient, model: &str) -> Result<Preflight, String> {
    let host = client.host().to_string();
    client.version().await.map_err(|e| {
        format!(
            "{e}; start Ollama there (`ollama serve`, or `bash harness/refserver.sh start` for the reference server) or point OLLAMA_HOST at a running one"
        )
    })?;
    let tags = client
        .tags()
        .await
        .map_err(|e| format!("cannot list models on {host}: {e}"))?;
    let Some(tag) = tags.iter().find(|t| same_model(&t.name, model)) else {
        return Err(format!(
            "model {model} is not pulled on {host}: run `ollama pull {model}` there"
        ));
    };
    let show = match client.show(model).await {
        Ok(s) => s,
        Err(BackendError::Http { status: 404, .. }) => {
            return Err(format!(
                "model {model} is not pulled on {host}: run `ollama pull {model}` there"
            ));
        }
        Err(e) => return Err(format!("cannot inspect {model} on {host}: {e}")),
    };
    Ok(Preflight {
        trained: show.trained_context(),
        weights_bytes: tag.size,
        model_info: show.model_info,
    })
}

/// The cap from the preflight facts and the system's memory now.
fn cap_of(pre: &Preflight, ram_limit_pct: f64) -> ContextCap {
    let mut notes = Vec::new();
    let kv = match kv_bytes_per_token(&pre.model_info) {
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
    if pre.weights_bytes.is_none() {
        notes.push("weights size unknown (/api/tags has no size): counted as 0".into());
    }
    let estimate = match (kv, mem) {
        (Some(kv), Some((total, used))) => Some(MemoryEstimate {
            weights_bytes: pre.weights_bytes.unwrap_or(0),
            kv_bytes_per_token: kv,
            safety: MEMORY_SAFETY,
            system_total_bytes: total,
            system_used_bytes: used,
            ram_limit_pct,
        }),
        _ => None,
    };
    ContextCap::new(pre.trained, estimate, notes)
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
        Err(why) => return ModelOutcome::CannotRun(why),
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
    let existing = match results::read_cells(&env.run_dir) {
        Ok(c) => c,
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
            host: HostFacts {
                cpu_model: host.cpu_model.clone(),
                cpu_logical: host.cpu_logical,
                ram_total_bytes: host.ram_total_bytes,
            },
            server: env.config.base_url.clone(),
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
