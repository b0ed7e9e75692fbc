//! One cell end to end: preflight, clean slate, load, calibrate, warm up, measure until the
//! stopping rule says enough, judge, write the result file, rebuild the reports.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{
    BackendError, GenerateRequest, LoadOptions, OllamaClient, same_model, supports_truncate_flag,
};
use crate::config::Config;
use crate::gates::{self, CellFacts};
use crate::measure::{self, TrialPlan};
use crate::monitor::{self, Monitor, MonitorConfig};
use crate::results::{
    self, CellResult, CellSpec, CellSummaries, FORMAT_VERSION, HARNESS_VERSION, HardwareSummary,
    RunMetadata, StabilityBreakdown, StopReason, TrialKind, TrialRecord, Verdict,
};
use crate::stats::{self, summarize};
use crate::{report, stability, workload};

/// The tokio runtime shared by every cell of a test process (libtest-mimic trials are
/// synchronous; each one blocks on this runtime).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("o3-io")
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
});

/// Relative half-width of the 95 % intervals (decode tok/s and TTFT) at which measuring stops.
pub const TIGHT_REL_HALF_WIDTH: f64 = 0.05;

/// Tokens of the calibration prompt (at most; less when the fill or context is smaller).
pub const CALIBRATION_TOKENS: u32 = 512;

/// Where a run's files go, and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// Configuration.
    pub config: Config,
    /// `<results_dir>/<run_id>`.
    pub run_dir: PathBuf,
    /// The run id (directory name).
    pub run_id: String,
}

impl RunEnv {
    /// Resolves the run id (`O3_RUN_ID`, else nextest's `NEXTEST_RUN_ID` so that every test
    /// process of one nextest run shares a directory, else a timestamp and the process id),
    /// creates the run directory and points `<results_dir>/latest` at it.
    pub fn new(config: Config) -> std::io::Result<RunEnv> {
        let run_id = config
            .run_id
            .clone()
            .or_else(|| {
                std::env::var("NEXTEST_RUN_ID")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| {
                let now = rfc3339(SystemTime::now());
                // 2026-11-27T09:12:56Z → 20261127-091256
                let compact: String = now
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == 'T')
                    .collect::<String>()
                    .replace('T', "-");
                format!("{compact}-{}", std::process::id())
            });
        let run_dir = config.results_dir.join(&run_id);
        std::fs::create_dir_all(run_dir.join("cells"))?;
        point_latest(&config.results_dir, &run_id);
        Ok(RunEnv {
            config,
            run_dir,
            run_id,
        })
    }
}

/// The run environment shared by every trial of a test process, created on first use (so that
/// `--list` creates nothing). The error says which directory could not be made.
pub fn shared_env<'a>(
    once: &'a std::sync::OnceLock<Result<RunEnv, String>>,
    config: &Config,
) -> Result<&'a RunEnv, libtest_mimic::Failed> {
    once.get_or_init(|| {
        RunEnv::new(config.clone()).map_err(|e| {
            format!(
                "cannot create the run directory under {}: {e}",
                config.results_dir.display()
            )
        })
    })
    .as_ref()
    .map_err(|e| libtest_mimic::Failed::from(e.as_str()))
}

/// How a test reports a cell (or a model) that could not run here: ignored with the reason, or
/// failed when `O3_REQUIRE_SERVER=1`.
pub fn cannot_run(
    config: &Config,
    why: &str,
) -> Result<libtest_mimic::Completion, libtest_mimic::Failed> {
    if config.require_server {
        Err(format!("cannot run (O3_REQUIRE_SERVER=1): {why}").into())
    } else {
        Ok(libtest_mimic::Completion::ignored_with(why))
    }
}

/// Points `<results_dir>/latest` at `run_id` (a relative symlink, replaced atomically).
fn point_latest(results_dir: &Path, run_id: &str) {
    #[cfg(unix)]
    {
        let tmp = results_dir.join(format!(".latest.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(run_id, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, results_dir.join("latest"));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = std::fs::write(results_dir.join("latest.txt"), run_id);
    }
}

/// Formats a time as RFC 3339 UTC with second precision.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Knobs of a cell beyond its table row (used by tests of the harness itself).
#[derive(Debug, Clone, PartialEq)]
pub struct CellOptions {
    /// Send `truncate: false` where the server supports it, so an overlong prompt is an error
    /// rather than silently cut. Default true.
    pub truncate_false: bool,
    /// Skip the fill-vs-context check of the table (to probe what the server does with an
    /// overlong prompt). Default false.
    pub allow_overfill: bool,
}

impl Default for CellOptions {
    fn default() -> Self {
        CellOptions {
            truncate_false: true,
            allow_overfill: false,
        }
    }
}

/// What became of a cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The cell ran; the verdict is in the result.
    Ran(CellResult),
    /// The cell could not run here (server unreachable, model not pulled); the result says
    /// why (verdict SKIPPED, first reason).
    CannotRun(CellResult),
}

impl Outcome {
    /// The result, either way.
    pub fn result(&self) -> &CellResult {
        match self {
            Outcome::Ran(r) | Outcome::CannotRun(r) => r,
        }
    }
}

/// Runs one cell with default options. Blocks; writes `<run>/cells/<name>.json` and rebuilds
/// the reports whatever happens.
pub fn run_cell(spec: &CellSpec, env: &RunEnv) -> Outcome {
    run_cell_with(spec, env, &CellOptions::default())
}

/// Runs one cell with `opts`.
pub fn run_cell_with(spec: &CellSpec, env: &RunEnv, opts: &CellOptions) -> Outcome {
    let started = Instant::now();
    // ---- engine-relative gates (src/engine.rs): resolved before the cell runs, because the
    // stopping rule reads the gates too; a gate that cannot be resolved makes the cell INVALID.
    let engine = crate::engine::resolve_spec(spec, &env.run_dir);
    let spec = engine.as_ref().map_or(spec, |s| s.as_ref());
    if let Some(line) = crate::engine::describe(spec) {
        progress(spec, &line);
    }
    let mut cell = Cell::new(spec, env, opts);
    let cannot_run = match &engine {
        Err(e) => {
            cell.cell_invalid.push(e.to_string());
            false
        }
        Ok(_) => RUNTIME.block_on(cell.run()),
    };
    // ---- end of engine-relative gates
    let result = cell.finish(started.elapsed().as_secs_f64());
    match results::write_cell(&env.run_dir, &result) {
        Ok(path) => progress(spec, &format!("result written to {}", path.display())),
        Err(e) => progress(spec, &format!("warning: {e}")),
    }
    if let Err(e) = report::build(&env.run_dir) {
        progress(spec, &format!("warning: reports not rebuilt: {e}"));
    }
    if cannot_run {
        Outcome::CannotRun(result)
    } else {
        Outcome::Ran(result)
    }
}

fn progress(spec: &CellSpec, msg: &str) {
    eprintln!("[{}] {msg}", spec.test_name);
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |x| format!("{x:.digits$}"))
}

/// The state of one cell while it runs.
struct Cell<'a> {
    spec: &'a CellSpec,
    env: &'a RunEnv,
    opts: &'a CellOptions,
    client: OllamaClient,
    meta: RunMetadata,
    trials: Vec<TrialRecord>,
    reasons: Vec<String>,
    cell_invalid: Vec<String>,
    load_s: Option<f64>,
    load_wall_s: Option<f64>,
    stop_reason: StopReason,
    hardware: HardwareSummary,
    skipped: bool,
    think_false: bool,
    truncate_false: bool,
    ratios: workload::Ratios,
}

impl<'a> Cell<'a> {
    fn new(spec: &'a CellSpec, env: &'a RunEnv, opts: &'a CellOptions) -> Self {
        let cfg = &env.config;
        let mut meta = RunMetadata {
            run_id: env.run_id.clone(),
            started_at: rfc3339(SystemTime::now()),
            harness_version: HARNESS_VERSION.to_string(),
            server: cfg.base_url.clone(),
            env: Config::recorded_env(),
            ..RunMetadata::default()
        };
        monitor::host_info().fill(&mut meta);
        Cell {
            spec,
            env,
            opts,
            client: OllamaClient::new(cfg),
            meta,
            trials: Vec::new(),
            reasons: Vec::new(),
            cell_invalid: Vec::new(),
            load_s: None,
            load_wall_s: None,
            stop_reason: StopReason::NotStarted,
            hardware: HardwareSummary::default(),
            skipped: false,
            think_false: false,
            truncate_false: false,
            ratios: workload::Ratios::default(),
        }
    }

    fn skip(&mut self, why: String) -> bool {
        self.reasons.push(why);
        self.skipped = true;
        true
    }

    fn request(&self, prompt: String, num_predict: u32) -> GenerateRequest {
        let cfg = &self.env.config;
        // keep_alive covers the longest the cell can take between two requests.
        let keep_alive_s =
            (cfg.trial_timeout.as_secs() + cfg.first_chunk_timeout.as_secs()).max(600);
        GenerateRequest {
            model: self.spec.model.clone(),
            prompt,
            load: LoadOptions {
                num_ctx: self.spec.num_ctx,
                num_batch: self.spec.num_batch,
                num_thread: self.spec.num_thread,
            },
            num_predict,
            seed: cfg.seed,
            keep_alive_s,
            think_false: self.think_false,
            truncate_false: self.truncate_false,
        }
    }

    /// Runs the cell; returns true when it could not run here.
    async fn run(&mut self) -> bool {
        let host = self.client.host().to_string();
        let model = self.spec.model.clone();
        // Preflight: the server and the model.
        let version = match self.client.version().await {
            Ok(v) => v,
            Err(e) => {
                return self.skip(format!(
                    "{e}; start Ollama there (`ollama serve`, or `bash harness/refserver.sh start` for the reference server) or point OLLAMA_HOST at a running one"
                ));
            }
        };
        self.meta.server_version = Some(version.clone());
        let tags = match self.client.tags().await {
            Ok(t) => t,
            Err(e) => return self.skip(format!("cannot list models on {host}: {e}")),
        };
        let Some(tag) = tags.iter().find(|t| same_model(&t.name, &model)) else {
            return self.skip(format!(
                "model {model} is not pulled on {host}: run `ollama pull {model}` there ({} model(s) available: {})",
                tags.len(),
                tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        };
        self.meta.model_digest = tag.digest.clone();
        let show = match self.client.show(&model).await {
            Ok(s) => s,
            Err(BackendError::Http { status: 404, .. }) => {
                return self.skip(format!(
                    "model {model} is not pulled on {host}: run `ollama pull {model}` there"
                ));
            }
            Err(e) => return self.skip(format!("cannot inspect {model} on {host}: {e}")),
        };
        self.meta.quantization = show.details.quantization_level.clone();
        self.meta.parameter_size = show.details.parameter_size.clone();
        self.meta.family = show.details.family.clone();
        self.meta.trained_context = show.trained_context();
        self.think_false = show.can_think();
        self.truncate_false = self.opts.truncate_false && supports_truncate_flag(&version);
        self.meta.think_false_sent = self.think_false;
        self.meta.truncate_false_sent = self.truncate_false;
        self.meta.options_sent = self.request(String::new(), self.spec.num_predict).options();

        if let Some(trained) = self.meta.trained_context
            && (self.spec.num_ctx as u64) > trained
        {
            self.cell_invalid.push(format!(
                "num_ctx {} exceeds {model}'s trained context {trained}: Ollama clamps it, so this cell would measure a smaller context",
                self.spec.num_ctx
            ));
            progress(self.spec, &self.cell_invalid[0]);
            return false;
        }
        if !self.opts.allow_overfill
            && self.spec.fill_tokens as u64 + self.spec.num_predict as u64
                > self.spec.num_ctx as u64
        {
            self.cell_invalid.push(format!(
                "fill_tokens {} + num_predict {} exceed num_ctx {}",
                self.spec.fill_tokens, self.spec.num_predict, self.spec.num_ctx
            ));
            return false;
        }

        // A clean slate: nothing loaded, no runner alive, then the baseline.
        if let Err(e) = self.clean_slate().await {
            self.cell_invalid
                .push(format!("could not unload models before the cell: {e}"));
            return false;
        }
        let monitor = Monitor::start(&MonitorConfig {
            base_url: self.env.config.base_url.clone(),
            sample_hz: self.env.config.sample_hz,
            ram_limit_pct: self.spec.gates.ram_max_pct,
        });
        self.measure(&monitor).await;
        // Free the memory for whatever comes next; the next cell checks again.
        let _ = self.client.unload(&model).await;
        self.hardware = monitor.stop();
        false
    }

    async fn clean_slate(&mut self) -> Result<(), BackendError> {
        let cfg = &self.env.config;
        self.client.unload_all(cfg.unload_timeout).await?;
        // Wait for runner processes to exit too (the server kills them asynchronously).
        if let Some(server) = monitor::find_server_pid(&cfg.base_url) {
            let deadline = Instant::now() + cfg.unload_timeout;
            loop {
                let runners = monitor::find_runners(server);
                if runners.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BackendError::Timeout {
                        phase: format!("runner process(es) {runners:?} to exit after unload"),
                        after_s: cfg.unload_timeout.as_secs_f64(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn measure(&mut self, monitor: &Monitor) {
        let spec = self.spec;
        let cfg = self.env.config.clone();
        let guard = monitor.guard();

        // Load with the cell's options.
        progress(
            spec,
            &format!(
                "loading {} (num_ctx {}, num_batch {}, num_thread {})",
                spec.model, spec.num_ctx, spec.num_batch, spec.num_thread
            ),
        );
        let t = Instant::now();
        match self
            .client
            .generate(&self.request(String::new(), 1), |_| {})
            .await
        {
            Ok(c) => {
                self.load_s = c.metrics.load_duration.map(|ns| ns as f64 / 1e9);
                self.load_wall_s = Some(t.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.cell_invalid
                    .push(format!("loading the model failed: {e}"));
                self.stop_reason = StopReason::Error;
                return;
            }
        }
        let runner_at_load = monitor.runner_pid();
        match self.client.ps().await {
            Ok(ps) => {
                if let Some(m) = ps.iter().find(|m| same_model(&m.name, &spec.model)) {
                    self.meta.ps_context_length = m.context_length;
                    self.meta.ps_size_bytes = m.size;
                    if let Some(ctx) = m.context_length
                        && ctx != spec.num_ctx as u64
                    {
                        self.cell_invalid.push(format!(
                            "the server runs the model at context {ctx}, not the cell's num_ctx {} (/api/ps context_length)",
                            spec.num_ctx
                        ));
                    }
                } else {
                    self.cell_invalid
                        .push("the model is not in /api/ps after loading it".to_string());
                }
            }
            Err(e) => self.reasons.push(format!("note: /api/ps failed: {e}")),
        }
        progress(
            spec,
            &format!(
                "loaded in {} s (wall {} s), runner pid {}",
                fmt_opt(self.load_s, 2),
                fmt_opt(self.load_wall_s, 2),
                runner_at_load.map_or("not found".into(), |p| p.to_string())
            ),
        );
        if !self.cell_invalid.is_empty() {
            self.stop_reason = StopReason::Error;
            return;
        }

        // Calibrate characters per token, for prose and for code, on short prompts well
        // inside the context.
        let calib_tokens = CALIBRATION_TOKENS
            .min(spec.fill_tokens)
            .min(spec.num_ctx / 4)
            .max(16);
        for (i, kind) in [workload::Kind::Prose, workload::Kind::Code]
            .into_iter()
            .enumerate()
        {
            let key = format!("{}/{}/calibration-{i}", self.env.run_id, spec.test_name);
            let p = workload::prompt_of(&key, calib_tokens, self.ratios, Some(kind));
            let plan = TrialPlan {
                index: self.trials.len() as u32,
                kind: TrialKind::Calibration,
                prompt_chars: p.text.len(),
                intended_tokens: p.intended_tokens,
                num_predict: 1,
            };
            match self
                .client
                .generate(&self.request(p.text.clone(), 1), |_| {})
                .await
            {
                Ok(c) => {
                    match c
                        .metrics
                        .prompt_eval_count
                        .and_then(|n| workload::calibrate(p.text.len(), n))
                    {
                        Some(r) if kind == workload::Kind::Prose => self.ratios.prose = r,
                        Some(r) => self.ratios.code = r,
                        None => self.reasons.push(format!(
                            "note: calibration gave an implausible {:?} tokens for {} characters of {kind:?}; kept the default ratio",
                            c.metrics.prompt_eval_count,
                            p.text.len(),
                        )),
                    }
                    self.trials.push(measure::from_completed(&plan, &c));
                }
                Err(e) => {
                    self.trials.push(measure::from_error(&plan, &e));
                    self.cell_invalid
                        .push(format!("calibration request failed: {e}"));
                    self.stop_reason = StopReason::Error;
                    return;
                }
            }
        }

        let (chars, tokens) = self
            .trials
            .iter()
            .filter(|t| t.kind == TrialKind::Calibration)
            .fold((0usize, 0u64), |(c, n), t| {
                (
                    c + t.prompt_chars,
                    n + u64::from(t.prompt_tokens_evaluated.unwrap_or(0)),
                )
            });
        self.meta.chars_per_token = workload::calibrate(chars, tokens);

        // Warm-up of the same shape; refines the calibration at the real size.
        let key = format!("{}/{}/warmup", self.env.run_id, spec.test_name);
        let p = workload::prompt(&key, spec.fill_tokens, self.ratios);
        let plan = TrialPlan {
            index: self.trials.len() as u32,
            kind: TrialKind::Warmup,
            prompt_chars: p.text.len(),
            intended_tokens: p.intended_tokens,
            num_predict: spec.num_predict,
        };
        progress(
            spec,
            &format!("warm-up ({} prompt tokens)", spec.fill_tokens),
        );
        match self
            .client
            .generate(&self.request(p.text.clone(), spec.num_predict), |_| {})
            .await
        {
            Ok(c) => {
                let rec = measure::from_completed(&plan, &c);
                if let Some(n) = c.metrics.prompt_eval_count {
                    let factor = p.estimated_tokens / n as f64;
                    // Refine only from a prompt that was not cut (close to the intended size).
                    if (0.75..=1.33).contains(&factor) {
                        self.ratios = self.ratios.scaled(factor);
                        self.meta.chars_per_token = workload::calibrate(p.text.len(), n);
                    }
                }
                self.trials.push(rec);
            }
            Err(e) => {
                self.trials.push(measure::from_error(&plan, &e));
                if matches!(e, BackendError::Http { .. } | BackendError::Timeout { .. }) {
                    self.cell_invalid
                        .push(format!("warm-up request failed: {e}"));
                    self.stop_reason = StopReason::Error;
                    return;
                }
            }
        }

        // Measured trials, sequentially, until the stopping rule is met.
        let mut consecutive_failures = 0;
        let mut measured = 0u32;
        self.stop_reason = StopReason::MaxTrials;
        while measured < cfg.max_trials {
            if guard.load(Ordering::SeqCst) {
                self.stop_reason = StopReason::RamGuard;
                progress(spec, "RAM guard tripped: stopping the cell");
                break;
            }
            let index = self.trials.len() as u32;
            measured += 1;
            let key = format!("{}/{}/trial-{measured}", self.env.run_id, spec.test_name);
            let p = workload::prompt(&key, spec.fill_tokens, self.ratios);
            let plan = TrialPlan {
                index,
                kind: TrialKind::Measured,
                prompt_chars: p.text.len(),
                intended_tokens: p.intended_tokens,
                num_predict: spec.num_predict,
            };
            let outcome = self
                .client
                .generate(&self.request(p.text, spec.num_predict), |_| {})
                .await;
            let mut rec = match &outcome {
                Ok(c) => measure::from_completed(&plan, c),
                Err(e) => measure::from_error(&plan, e),
            };
            measure::check_runner(&mut rec, runner_at_load, monitor.runner_pid());
            rec.rss_after_bytes = monitor.current_memory().map(|m| m.rss_bytes);
            progress(
                spec,
                &format!(
                    "trial {measured}/{}: ttft {} s, decode {} tok/s (server {}), prefill {} tok/s, prompt {}/{} tokens{}",
                    cfg.max_trials,
                    fmt_opt(rec.ttft_s, 2),
                    fmt_opt(rec.decode_tps, 1),
                    fmt_opt(rec.decode_tps_server, 1),
                    fmt_opt(rec.prefill_tps_server, 0),
                    rec.prompt_tokens_evaluated
                        .map_or("–".into(), |v| v.to_string()),
                    rec.prompt_tokens_intended,
                    if rec.valid {
                        String::new()
                    } else {
                        format!(" — INVALID: {}", rec.invalid_reasons.join("; "))
                    }
                ),
            );
            let fatal = matches!(
                outcome,
                Err(BackendError::Http { .. })
                    | Err(BackendError::Timeout { .. })
                    | Err(BackendError::Unreachable { .. })
            );
            consecutive_failures = if outcome.is_err() {
                consecutive_failures + 1
            } else {
                0
            };
            self.trials.push(rec);
            if fatal || consecutive_failures >= 2 {
                self.stop_reason = StopReason::Error;
                break;
            }
            let (valid, invalid) = self.counts();
            if invalid * 2 > cfg.max_trials as usize {
                self.stop_reason = StopReason::TooManyInvalid;
                break;
            }
            if valid >= cfg.min_trials as usize {
                let summaries = self.summaries();
                let tight = [&summaries.decode_tps, &summaries.ttft_s].iter().all(|s| {
                    s.as_ref()
                        .and_then(|s| s.rel_half_width)
                        .is_some_and(|w| w <= TIGHT_REL_HALF_WIDTH)
                });
                if tight {
                    self.stop_reason = StopReason::IntervalsTight;
                    break;
                }
                let st = stability::score(&self.trials);
                if gates::verdict_clear(&gates::check_gates(spec, &summaries, &st)) {
                    self.stop_reason = StopReason::VerdictClear;
                    break;
                }
            }
        }
    }

    fn measured(&self) -> impl Iterator<Item = &TrialRecord> {
        self.trials.iter().filter(|t| t.kind == TrialKind::Measured)
    }

    fn counts(&self) -> (usize, usize) {
        let valid = self.measured().filter(|t| t.valid).count();
        (valid, self.measured().count() - valid)
    }

    fn summaries(&self) -> CellSummaries {
        let valid: Vec<&TrialRecord> = self.measured().filter(|t| t.valid).collect();
        let s = |f: &dyn Fn(&TrialRecord) -> Option<f64>| {
            let v: Vec<f64> = valid.iter().filter_map(|t| f(t)).collect();
            summarize(&v)
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

    fn finish(self, wall_s: f64) -> CellResult {
        let summaries = self.summaries();
        let stability: StabilityBreakdown = stability::score(&self.trials);
        let (valid, invalid) = self.counts();
        let mut fidelity = Vec::new();
        if let (Some(c), Some(s)) = (&summaries.decode_tps, &summaries.decode_tps_server)
            && s.mean > 0.0
        {
            fidelity.push(("decode_client_over_server".to_string(), c.mean / s.mean));
        }
        let (verdict, mut reasons) = if self.skipped {
            (Verdict::Skipped, Vec::new())
        } else {
            let facts = CellFacts {
                valid,
                attempted: valid + invalid,
                trial_reasons: self
                    .measured()
                    .filter(|t| !t.valid)
                    .flat_map(|t| t.invalid_reasons.iter().cloned())
                    .collect(),
                cell_invalid: self.cell_invalid.clone(),
            };
            gates::judge(self.spec, &summaries, &stability, &self.hardware, &facts)
        };
        // Cell-level notes and skip reasons come after (or, for a skip, are) the verdict's.
        reasons.extend(self.reasons.iter().cloned());
        eprintln!(
            "[{}] {}: {}",
            self.spec.test_name,
            verdict.label(),
            reasons.join(" | ")
        );
        CellResult {
            format_version: FORMAT_VERSION,
            cell: self.spec.clone(),
            verdict,
            reasons,
            load_s: self.load_s,
            load_wall_s: self.load_wall_s,
            trials: self.trials,
            summaries,
            stop_reason: self.stop_reason,
            hardware: self.hardware,
            stability,
            metadata: self.meta,
            fidelity,
            wall_s,
        }
    }
}

/// Mean of a field over the valid measured trials of a result (for callers that need one
/// figure, e.g. the optimizer).
pub fn mean_of(result: &CellResult, f: impl Fn(&TrialRecord) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = result
        .trials
        .iter()
        .filter(|t| t.kind == TrialKind::Measured && t.valid)
        .filter_map(f)
        .collect();
    stats::mean(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(0, "1970-01-01T00:00:00Z")]
    #[case(951_782_400, "2000-02-29T00:00:00Z")]
    #[case(1_795_770_776, "2026-11-27T09:12:56Z")]
    fn rfc3339_dates(#[case] secs: u64, #[case] expected: &str) {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), expected);
    }
}
