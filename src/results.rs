//! Result records: what one cell leaves on disk.
//!
//! Every cell writes `<run>/cells/<file>.json` atomically ([`crate::rundir`]), so a killed test
//! never leaves half a JSON behind. Reports are built from these files only (see
//! [`crate::report`]), never from in-memory state.
//!
//! Units are in the field names: `_s` seconds, `_tps` tokens per second, `_bytes` bytes,
//! `_pct` percent (0–100).

use serde::{Deserialize, Serialize};

use crate::judgement::Judgement;
use crate::stats::Summary;

fn yes() -> bool {
    true
}

/// Version of the on-disk format of [`CellResult`]. Bumped whenever a field changes meaning.
/// 2: the typed `judgement` replaces `verdict` and `reasons`; `fidelity` is typed.
pub const FORMAT_VERSION: u32 = 2;

/// The harness's own version, recorded in every result.
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

pub use crate::judgement::Verdict;

/// Gates of a cell, from the matrix table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// TTFT must stay below this (seconds).
    pub ttft_max_s: f64,
    /// Client-side decode rate must stay above this (tokens/s).
    pub tok_s_min: f64,
    /// Stability score must stay above this (0–1).
    pub stability_min: f64,
    /// System RAM use must stay at or below this share of total memory (percent).
    pub ram_max_pct: f64,
}

/// The cell as it was specified (a copy of its matrix row, plus where it came from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// Test name, `<name>::ctx_<K>k`.
    pub test_name: String,
    /// Slug used in test names, e.g. `gemma3_tools_27b`.
    pub name: String,
    /// Model as the server knows it, e.g. `orieg/gemma3-tools:27b-it-qat`.
    pub model: String,
    /// Free-form category from the table (e.g. `tools`, `rag`, `small`).
    pub category: String,
    /// Allocated context (`num_ctx`, tokens).
    pub num_ctx: u32,
    /// Prompt size the harness fills (tokens).
    pub fill_tokens: u32,
    /// `num_batch` load-time option.
    pub num_batch: u32,
    /// `num_thread` load-time option.
    pub num_thread: u32,
    /// Output token cap per trial (`num_predict`).
    pub num_predict: u32,
    /// Gates of this cell.
    pub gates: Gates,
    /// Use case this cell speaks for.
    pub use_case: String,
    /// Whether the table marks the cell optional (statically ignored unless asked for).
    pub optional: bool,
    /// Whether the optimizer searches this row's model (the table's `optimize`, default true).
    #[serde(default = "yes")]
    pub optimize: bool,
    /// Table file and line the cell came from.
    pub source: String,
    /// Gates the table gave relative to the engine (`engine*F`); `None` when both are absolute.
    /// Resolved into [`CellSpec::gates`] by [`crate::engine::resolve_gates`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_gates: Option<RelativeGates>,
    /// The retrieval probe the cell asks after its measured trials (the table's `probe` and
    /// `probe_depths`, [`crate::quality::cell`]); `None`: no probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::quality::cell::CellProbe>,
}

/// Gates relative to the engine's own speed on this machine (the table's `engine*F`), and once
/// resolved, the engine figures they were computed from. See [`crate::engine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeGates {
    /// `ttft_max_s = engine*F`: the TTFT limit is F × the engine's time to first token, plus
    /// the load a valid trial may contain.
    pub ttft_factor: Option<f64>,
    /// `tok_s_min = engine*F`: the decode limit is F × the engine's decode rate.
    pub tok_s_factor: Option<f64>,
    /// The engine figures the limits in [`CellSpec::gates`] were computed from (`None` until
    /// resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineFigures>,
}

/// One `llama-bench` test: mean rate, spread and the per-repetition rates (tokens/s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchFigure {
    /// `llama-bench`'s test label, e.g. `pp1024` or `tg128 @ d1024`.
    pub test: String,
    /// Mean tokens/s (`avg_ts`).
    pub mean_tps: f64,
    /// Standard deviation of tokens/s over the repetitions (`stddev_ts`).
    pub stddev_tps: f64,
    /// Tokens/s of each repetition (`samples_ts`).
    pub samples_tps: Vec<f64>,
}

/// The engine's own speed at a cell's options, measured by `llama-bench` on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineFigures {
    /// The GGUF file measured.
    pub model_file: String,
    /// `-t`.
    pub threads: u32,
    /// `-b` (`-ub` is min(batch, 512), as the reference server runs llama-server).
    pub batch: u32,
    /// Prompt tokens of the prefill test, and the depth of the decode test (the cell's fill).
    pub fill_tokens: u32,
    /// Tokens of the decode test (the cell's `num_predict`).
    pub num_predict: u32,
    /// Prefill of `fill_tokens` from an empty cache.
    pub prefill: BenchFigure,
    /// Decode of `num_predict` tokens after `fill_tokens` of context.
    pub decode: BenchFigure,
    /// The engine's time to first token: `fill_tokens / prefill + 1 / decode` (seconds).
    pub ttft_s: f64,
    /// Load a valid trial's TTFT may contain on top (seconds), added unscaled to the TTFT limit.
    pub load_allowance_s: f64,
    /// The command lines run.
    pub commands: Vec<String>,
    /// `llama-bench`'s build: `<commit> (<build number>)`.
    pub build: String,
    /// When it was measured (seconds since the Unix epoch).
    pub measured_at_unix_s: u64,
    /// Wall time of the `llama-bench` runs (seconds).
    pub wall_s: f64,
}

/// Which phase a trial belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrialKind {
    /// Short request that calibrates characters per token; never scored.
    Calibration,
    /// Untimed warm-up of the same shape; never scored.
    Warmup,
    /// Measured trial.
    #[default]
    Measured,
}

/// One request's raw figures and validity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrialRecord {
    /// 0-based index within the cell (warm-up first).
    pub index: u32,
    /// Calibration, warm-up or measured.
    pub kind: TrialKind,
    /// Characters of prompt sent.
    pub prompt_chars: usize,
    /// Prompt tokens the harness meant to send (from the calibrated characters per token).
    pub prompt_tokens_intended: u32,
    /// The server's `prompt_eval_count`.
    pub prompt_tokens_evaluated: Option<u32>,
    /// The server's `eval_count`.
    pub output_tokens: Option<u32>,
    /// Number of chunks with non-empty answer content.
    pub content_chunks: u32,
    /// Number of chunks with non-empty thinking content.
    pub thinking_chunks: u32,
    /// Client TTFT: request written → first chunk with answer content (s).
    pub ttft_s: Option<f64>,
    /// Client TTFT to the first chunk with any content, thinking included (s).
    pub ttft_any_s: Option<f64>,
    /// Client decode rate `(eval_count − 1) / (t_last − t_first)`, the first and last chunk
    /// with any content, thinking included, as `eval_count` counts thinking tokens (tokens/s).
    pub decode_tps: Option<f64>,
    /// Server decode rate `eval_count / eval_duration` (tokens/s).
    pub decode_tps_server: Option<f64>,
    /// Server prefill rate `prompt_eval_count / prompt_eval_duration` (tokens/s).
    pub prefill_tps_server: Option<f64>,
    /// The server's `load_duration` (s).
    pub load_s: Option<f64>,
    /// Median gap between consecutive chunks with any content, thinking included (s).
    pub itl_p50_s: Option<f64>,
    /// 95th percentile gap between consecutive chunks with any content (s).
    pub itl_p95_s: Option<f64>,
    /// Largest gap between consecutive chunks (s).
    pub itl_max_s: Option<f64>,
    /// Request start → `done:true` (s).
    pub e2e_s: Option<f64>,
    /// The server's `done_reason`.
    pub done_reason: Option<String>,
    /// Whether the trial counts. Invalid trials are never scored or gated.
    pub valid: bool,
    /// Why the trial does not count (empty when valid).
    pub invalid_reasons: Vec<String>,
    /// Runner process id seen during the trial, when found.
    pub runner_pid: Option<u32>,
    /// Server process-tree RSS right after the trial (bytes).
    pub rss_after_bytes: Option<u64>,
    /// Retries of the request after 429/503 with `Retry-After`, and the time waited (absent
    /// when there were none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<crate::backend::Retried>,
    /// CPU used during the trial by everything but the server's process tree and the harness,
    /// as a share of the machine's total CPU (percent, 0–100); absent when the server is not a
    /// process proven to be on this host (see [`crate::monitor::CpuUsage::foreign_pct`]).
    #[serde(default)]
    pub foreign_cpu_pct: Option<f64>,
    /// CPU of the server's process tree in a short window just before the trial, with no
    /// request of ours in flight (percent of one core); absent as `foreign_cpu_pct` is.
    #[serde(default)]
    pub server_idle_cpu_pct: Option<f64>,
}

/// Summaries of the valid measured trials. Each interval is a 95 % Student-t interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CellSummaries {
    /// Client TTFT (s).
    pub ttft_s: Option<Summary>,
    /// Client TTFT to any content (s).
    pub ttft_any_s: Option<Summary>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Summary>,
    /// Server decode rate (tokens/s).
    pub decode_tps_server: Option<Summary>,
    /// Server prefill rate (tokens/s).
    pub prefill_tps_server: Option<Summary>,
    /// Median inter-chunk gap per trial (s).
    pub itl_p50_s: Option<Summary>,
    /// 95th percentile inter-chunk gap per trial (s).
    pub itl_p95_s: Option<Summary>,
    /// End to end (s).
    pub e2e_s: Option<Summary>,
    /// Prompt tokens evaluated by the server.
    pub prompt_tokens: Option<Summary>,
    /// Output tokens.
    pub output_tokens: Option<Summary>,
}

/// Memory figures of a process set (bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemoryFigures {
    /// Resident set size.
    pub rss_bytes: u64,
    /// Anonymous resident memory (`RssAnon`), when the OS tells.
    pub anon_bytes: Option<u64>,
    /// File-backed resident memory (`RssFile`), when the OS tells.
    pub file_bytes: Option<u64>,
    /// Swapped-out memory (`VmSwap`), when the OS tells.
    pub swap_bytes: Option<u64>,
}

/// What the hardware sampler saw during a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HardwareSummary {
    /// How the server's processes were found, or why system-wide figures are used instead.
    pub source: String,
    /// Process ids that were sampled (server and runners), last seen.
    pub pids: Vec<u32>,
    /// Samples taken.
    pub samples: u64,
    /// Achieved sampling rate (Hz).
    pub sample_hz: f64,
    /// Process-tree memory before the model was loaded.
    pub baseline: MemoryFigures,
    /// Process-tree memory at its peak (peak RSS sample).
    pub peak: MemoryFigures,
    /// `peak.rss_bytes − baseline.rss_bytes` (may be negative when memory was freed).
    pub rss_delta_bytes: i64,
    /// Mean CPU use of the process tree over the cell (percent of one core × cores, 0–100·cores).
    pub cpu_mean_pct: f64,
    /// Peak CPU use of the process tree over windows of at least 0.5 s (same unit).
    pub cpu_peak_pct: f64,
    /// Total system memory (bytes).
    pub system_total_bytes: u64,
    /// System memory in use before the cell (bytes).
    pub system_baseline_used_bytes: u64,
    /// Peak system memory in use during the cell (bytes).
    pub system_peak_used_bytes: u64,
    /// Peak system memory in use as a share of total (percent).
    pub system_peak_pct: f64,
    /// Whether the RAM guard stopped the cell.
    pub ram_guard_tripped: bool,
    /// CPU used by the monitor's own sampler thread over the cell (percent of one core): the
    /// harness's monitoring overhead.
    pub harness_cpu_pct: f64,
    /// Notes (fallbacks, processes that vanished, …).
    pub notes: Vec<String>,
}

/// The named components of the stability score (see [`crate::stability`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StabilityBreakdown {
    /// The 0–1 score.
    pub score: f64,
    /// Lower end of the score's 95 % bootstrap interval; absent with fewer than 3 valid trials.
    #[serde(default)]
    pub ci_low: Option<f64>,
    /// Upper end of the score's 95 % bootstrap interval.
    #[serde(default)]
    pub ci_high: Option<f64>,
    /// Valid measured trials behind the score.
    #[serde(default)]
    pub n: usize,
    /// Valid measured trials / attempted measured trials.
    pub success_rate: f64,
    /// Coefficient of variation of client decode rate across valid trials.
    pub decode_cv: Option<f64>,
    /// Component from `decode_cv` (0–1).
    pub consistency: f64,
    /// Relative change of decode rate across the cell, from a least-squares slope.
    pub decode_drift: Option<f64>,
    /// Component from `decode_drift` (0–1).
    pub drift: f64,
    /// Relative growth of server RSS from the first to the last measured trial.
    pub memory_growth: Option<f64>,
    /// Component from `memory_growth` (0–1).
    pub memory: f64,
}

/// Why the sequential trial loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The 95 % intervals of decode tok/s and TTFT are within 5 % of their means.
    IntervalsTight,
    /// The intervals already lie clear of every gate.
    VerdictClear,
    /// The maximum number of trials was reached.
    MaxTrials,
    /// The RAM guard stopped the cell.
    RamGuard,
    /// Too many trials were invalid to go on.
    TooManyInvalid,
    /// A request failed in a way that ends the cell (server error, timeout).
    Error,
    /// The cell never reached the measured phase.
    #[default]
    NotStarted,
}

/// Facts about a machine (from [`crate::monitor::host_info`]): the one type for them, in the
/// cell results (flattened into [`RunMetadata`]), the reports and the optimizer's records.
/// Fields a file does not hold read as their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// Host name; `unknown` when not found.
    pub hostname: String,
    /// CPU model string, e.g. `AMD Ryzen 9 7950X 16-Core Processor`; `unknown` when not found.
    pub cpu_model: String,
    /// Logical CPUs of the host (at least 1).
    pub cpu_logical: usize,
    /// Physical cores, when the OS tells.
    pub cpu_physical: Option<usize>,
    /// Total memory (bytes); 0 when unknown.
    pub ram_total_bytes: u64,
    /// OS name and version, e.g. `Linux (Ubuntu 24.04)`.
    pub os: String,
    /// Kernel version, e.g. `6.8.0-48-generic`.
    pub kernel: String,
}

/// Host, server and model facts recorded with every result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunMetadata {
    /// Run identifier (directory name).
    pub run_id: String,
    /// When the cell started (RFC 3339, UTC).
    pub started_at: String,
    /// Harness version.
    pub harness_version: String,
    /// The host.
    #[serde(flatten)]
    pub host: Host,
    /// Server address used.
    pub server: String,
    /// `/api/version` of the server.
    pub server_version: Option<String>,
    /// Model digest from `/api/tags`.
    pub model_digest: Option<String>,
    /// Quantization from `/api/show`.
    pub quantization: Option<String>,
    /// Parameter size from `/api/show`.
    pub parameter_size: Option<String>,
    /// Model family from `/api/show`.
    pub family: Option<String>,
    /// Trained context of the model from `/api/show`.
    pub trained_context: Option<u64>,
    /// Effective context reported by `/api/ps` after load.
    pub ps_context_length: Option<u64>,
    /// Memory the server says the loaded model takes (`/api/ps` `size`, bytes).
    pub ps_size_bytes: Option<u64>,
    /// Request options sent on every request of the cell (JSON object).
    pub options_sent: serde_json::Value,
    /// Whether `think: false` was sent.
    pub think_false_sent: bool,
    /// Whether `truncate: false` was sent.
    pub truncate_false_sent: bool,
    /// Calibrated characters per token for this model.
    pub chars_per_token: Option<f64>,
    /// Environment variables that shaped the run (`OLLAMA_HOST`, `O3_*`).
    pub env: Vec<(String, String)>,
}

/// A ratio of two measurements of the same figure, recorded to show the harness measures what
/// the engine does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FidelityKind {
    /// Client decode rate ÷ the server's own (`eval_count / eval_duration`).
    DecodeClientOverServer,
    /// Client decode rate ÷ `llama-bench` tg at the same threads and depth.
    DecodeClientOverLlamaBench,
    /// Server decode rate ÷ `llama-bench` tg.
    DecodeServerOverLlamaBench,
    /// Server prefill rate ÷ `llama-bench` pp.
    PrefillServerOverLlamaBench,
}

impl FidelityKind {
    /// The name as the JSON and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            FidelityKind::DecodeClientOverServer => "decode_client_over_server",
            FidelityKind::DecodeClientOverLlamaBench => "decode_client_over_llama_bench",
            FidelityKind::DecodeServerOverLlamaBench => "decode_server_over_llama_bench",
            FidelityKind::PrefillServerOverLlamaBench => "prefill_server_over_llama_bench",
        }
    }
}

/// One fidelity ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// What is compared.
    pub kind: FidelityKind,
    /// The ratio.
    pub ratio: f64,
}

/// Everything one cell leaves behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// [`FORMAT_VERSION`] of this record.
    pub format_version: u32,
    /// The cell as specified.
    pub cell: CellSpec,
    /// The verdict and everything it rests on: each gate checked, the invalid reasons, the
    /// notes, why the cell was skipped.
    pub judgement: Judgement,
    /// Load time of the cell's model with its options (s), from the load request.
    pub load_s: Option<f64>,
    /// Client wall time of the load request (s).
    pub load_wall_s: Option<f64>,
    /// Every request of the cell: calibration, warm-up and measured.
    pub trials: Vec<TrialRecord>,
    /// Summaries of the valid measured trials.
    pub summaries: CellSummaries,
    /// Why the trial loop stopped.
    pub stop_reason: StopReason,
    /// Hardware figures.
    pub hardware: HardwareSummary,
    /// Stability score and its components.
    pub stability: StabilityBreakdown,
    /// Host, server and model facts.
    pub metadata: RunMetadata,
    /// Client/server and harness/reference ratios, when measured.
    pub fidelity: Vec<Fidelity>,
    /// Wall time of the whole cell (s).
    pub wall_s: f64,
    /// The cell's performance prediction, made before it ran, with the error of each figure
    /// after ([`crate::predict`]); a prediction, never a measurement, and judged by no gate.
    /// Absent in results written before predictions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::predict::CellPrediction>,
    /// The cell's retrieval probes ([`CellSpec::probe`]), one per depth, asked after the
    /// measured trials and kept apart from them: never in [`CellResult::trials`], the summaries
    /// or the stability score. Empty when the cell has no probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<crate::quality::ProbeRecord>,
    /// The host's own speed around the measured trials ([`crate::monitor::host_speed`]): what
    /// tells a slower machine from a slower server against a baseline. Absent when the server
    /// is not a process on this machine, and in results written before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_speed: Option<crate::monitor::host_speed::HostSpeed>,
}

impl CellResult {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }

    /// The valid measured trials, in order.
    pub fn valid_measured(&self) -> impl Iterator<Item = &TrialRecord> {
        self.trials
            .iter()
            .filter(|t| t.kind == TrialKind::Measured && t.valid)
    }

    /// Measured trials: (valid, attempted).
    pub fn measured_counts(&self) -> (usize, usize) {
        let measured = self.trials.iter().filter(|t| t.kind == TrialKind::Measured);
        let attempted = measured.clone().count();
        (measured.filter(|t| t.valid).count(), attempted)
    }
}

/// Summaries of the valid measured trials of `trials`.
pub fn summarize_trials(trials: &[TrialRecord]) -> CellSummaries {
    let valid: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.kind == TrialKind::Measured && t.valid)
        .collect();
    let s = |f: &dyn Fn(&TrialRecord) -> Option<f64>| {
        let v: Vec<f64> = valid.iter().filter_map(|t| f(t)).collect();
        crate::stats::summarize(&v)
    };
    CellSummaries {
        ttft_s: s(&|t| t.ttft_s),
        ttft_any_s: s(&|t| t.ttft_any_s),
        decode_tps: s(&|t| t.decode_tps),
        decode_tps_server: s(&|t| t.decode_tps_server),
        prefill_tps_server: s(&|t| t.prefill_tps_server),
        itl_p50_s: s(&|t| t.itl_p50_s),
        itl_p95_s: s(&|t| t.itl_p95_s),
        e2e_s: s(&|t| t.e2e_s),
        prompt_tokens: s(&|t| t.prompt_tokens_evaluated.map(f64::from)),
        output_tokens: s(&|t| t.output_tokens.map(f64::from)),
    }
}
