//! What one model's search works with: its matrix rows, the context cap (trained context and
//! memory), the grid, and the cell spec of each probe.

use serde::{Deserialize, Serialize};

use super::{LoadOptions, OptConfig, probe_test_name};
use crate::results::CellSpec;

/// One model slug of the matrix and everything its search needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    /// Slug (`name` column).
    pub name: String,
    /// Model as the server knows it.
    pub model: String,
    /// The slug's matrix rows, sorted by `num_ctx` (at least one).
    pub rows: Vec<CellSpec>,
    /// Upper end of the context search.
    pub cap: ContextCap,
    /// Upper end of the thread search (the host's logical CPUs, at least 1).
    pub max_threads: u32,
    /// Where the context search starts, when predictions say: the largest grid context
    /// predicted to pass its gates, and why ([`crate::predict`]). `None`: the top of the grid.
    pub start: Option<(u32, String)>,
}

/// Groups matrix rows by slug, in first-seen order; each group sorted by `num_ctx`.
pub fn group_by_name(cells: &[CellSpec]) -> Vec<(String, Vec<CellSpec>)> {
    let mut groups: Vec<(String, Vec<CellSpec>)> = Vec::new();
    for c in cells {
        match groups.iter_mut().find(|(n, _)| *n == c.name) {
            Some((_, rows)) => rows.push(c.clone()),
            None => groups.push((c.name.clone(), vec![c.clone()])),
        }
    }
    for (_, rows) in &mut groups {
        rows.sort_by_key(|r| r.num_ctx);
    }
    groups
}

/// The context cap of a model and how it was found.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContextCap {
    /// The cap (tokens): the smaller of the trained context and the memory limit; absent when
    /// neither is known (then the largest matrix context is the top of the grid).
    pub tokens: Option<u32>,
    /// `<arch>.context_length` from `/api/show`.
    pub trained_context: Option<u64>,
    /// Largest context whose estimated memory keeps system RAM under the limit.
    pub memory_limit_tokens: Option<u32>,
    /// The memory estimate, when `/api/show` and `/proc/meminfo` gave one.
    pub estimate: Option<MemoryEstimate>,
    /// How the figures were found (fallbacks used, what was missing).
    pub notes: Vec<String>,
}

impl ContextCap {
    /// Combines a trained context and a memory estimate into a cap.
    pub fn new(
        trained_context: Option<u64>,
        estimate: Option<MemoryEstimate>,
        mut notes: Vec<String>,
    ) -> ContextCap {
        let memory_limit_tokens = estimate.as_ref().map(MemoryEstimate::max_tokens);
        let trained = trained_context.map(|t| t.min(u32::MAX as u64) as u32);
        let tokens = match (trained, memory_limit_tokens) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (a, b) => a.or(b),
        };
        if trained.is_none() {
            notes.push("trained context unknown (/api/show has no <arch>.context_length)".into());
        }
        if estimate.is_none() {
            notes.push("no memory estimate: the cap is the trained context only".into());
        }
        ContextCap {
            tokens,
            trained_context,
            memory_limit_tokens,
            estimate,
            notes,
        }
    }
}

/// Predicted memory of the model at a context ([`crate::predict`]: weights, KV cache at the
/// server's KV type with the sliding-window saving, compute buffer, and the RAM offset
/// calibrated on the host's measured cells), against the system's RAM limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// Predicted RAM Δ that does not grow with the context (bytes): weights, compute buffer,
    /// the calibrated offset and the cache of sliding-window layers.
    pub fixed_bytes: u64,
    /// Predicted KV cache per context token of the layers that hold the whole context (bytes).
    pub kv_bytes_per_token: u64,
    /// How the figures were predicted (KV type, what the RAM offset was fitted on).
    pub basis: String,
    /// Total system memory (bytes).
    pub system_total_bytes: u64,
    /// System memory in use before the search (bytes).
    pub system_used_bytes: u64,
    /// RAM limit (percent of total).
    pub ram_limit_pct: f64,
}

impl MemoryEstimate {
    /// `fixed + kv_per_token × num_ctx` (bytes).
    pub fn bytes_at(&self, num_ctx: u32) -> f64 {
        self.fixed_bytes as f64 + self.kv_bytes_per_token as f64 * num_ctx as f64
    }

    /// Whether `num_ctx` keeps used + estimate at or below the limit.
    pub fn fits(&self, num_ctx: u32) -> bool {
        self.system_used_bytes as f64 + self.bytes_at(num_ctx) <= self.limit_bytes()
    }

    /// The RAM limit (bytes).
    pub fn limit_bytes(&self) -> f64 {
        self.system_total_bytes as f64 * self.ram_limit_pct / 100.0
    }

    /// Largest context that [`fits`](Self::fits) (0 when even the fixed part does not).
    pub fn max_tokens(&self) -> u32 {
        let room = self.limit_bytes() - self.system_used_bytes as f64 - self.fixed_bytes as f64;
        if room <= 0.0 {
            return 0;
        }
        if self.kv_bytes_per_token == 0 {
            return u32::MAX;
        }
        let mut n = (room / self.kv_bytes_per_token as f64)
            .floor()
            .min(u32::MAX as f64) as u32;
        // Guard against rounding at the edge.
        while n > 0 && !self.fits(n) {
            n -= 1;
        }
        n
    }
}

impl ModelPlan {
    /// A plan from the slug's rows (sorted here), a cap and the thread range.
    pub fn new(mut rows: Vec<CellSpec>, cap: ContextCap, max_threads: u32) -> ModelPlan {
        assert!(
            !rows.is_empty(),
            "a model plan needs at least one matrix row"
        );
        rows.sort_by_key(|r| r.num_ctx);
        ModelPlan {
            name: rows[0].name.clone(),
            model: rows[0].model.clone(),
            rows,
            cap,
            max_threads: max_threads.max(1),
            start: None,
        }
    }

    /// The model's smallest matrix context.
    pub fn min_ctx(&self) -> u32 {
        self.rows[0].num_ctx
    }

    /// The context grid: the smallest matrix context, then every multiple of `step` above it
    /// up to the cap (the largest matrix context when there is no cap). Empty when the cap is
    /// below the smallest matrix context.
    pub fn grid(&self, step: u32) -> Vec<u32> {
        let top = self
            .cap
            .tokens
            .unwrap_or_else(|| self.rows.iter().map(|r| r.num_ctx).max().unwrap_or(0));
        let min = self.min_ctx();
        if top < min {
            return Vec::new();
        }
        let mut g = vec![min];
        let mut k = min / step + 1;
        while let Some(v) = k.checked_mul(step).filter(|&v| v <= top) {
            g.push(v);
            k += 1;
        }
        g
    }

    /// The matrix row that speaks for a context: the largest matrix context ≤ `num_ctx`, else
    /// the smallest.
    pub fn row_for(&self, num_ctx: u32) -> &CellSpec {
        self.rows
            .iter()
            .rev()
            .find(|r| r.num_ctx <= num_ctx)
            .unwrap_or(&self.rows[0])
    }

    /// The options the matrix row of `num_ctx` would use.
    pub fn row_options(&self, num_ctx: u32) -> LoadOptions {
        let r = self.row_for(num_ctx);
        LoadOptions {
            num_ctx,
            num_thread: r.num_thread,
            num_batch: r.num_batch,
        }
    }

    /// The cell of a probe: the nearest row with the probe's options, its fill capped so that
    /// fill + `num_predict` ≤ `num_ctx`, named by [`probe_test_name`].
    pub fn spec_for(&self, opts: &LoadOptions, run: u32) -> CellSpec {
        let row = self.row_for(opts.num_ctx);
        let room = opts.num_ctx.saturating_sub(row.num_predict).max(1);
        CellSpec {
            test_name: probe_test_name(&self.name, opts, run),
            num_ctx: opts.num_ctx,
            num_thread: opts.num_thread,
            num_batch: opts.num_batch,
            fill_tokens: row.fill_tokens.min(room),
            optional: false,
            optimize: true,
            // The search measures speed; a retrieval probe is the matrix cell's to ask.
            probe: None,
            source: format!(
                "optimize {} (gates, fill and num_predict from {})",
                self.name, row.source
            ),
            ..row.clone()
        }
    }

    /// Distinct use cases of the slug's rows, with the largest context each was asked at, in
    /// row order.
    pub fn use_cases(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = Vec::new();
        for r in &self.rows {
            match out.iter_mut().find(|(u, _)| *u == r.use_case) {
                Some((_, c)) => *c = (*c).max(r.num_ctx),
                None => out.push((r.use_case.clone(), r.num_ctx)),
            }
        }
        out
    }

    /// The batch sizes the search chooses from at `num_ctx`.
    pub fn batches(&self, cfg: &OptConfig, num_ctx: u32) -> Vec<u32> {
        cfg.batches
            .iter()
            .copied()
            .filter(|&b| b <= num_ctx)
            .collect()
    }
}
