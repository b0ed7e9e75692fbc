//! One cell end to end, in phases that return values: preflight, admission, clean slate, load,
//! calibration, warm-up, the measuring loop; then [`assemble`], a pure function from their
//! outputs to the [`CellResult`], which is written and the reports rebuilt.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{
    BackendError, Completed, GenerateRequest, LoadOptions, OllamaClient, same_model,
    supports_truncate_flag,
};
use crate::config::Config;
use crate::date::rfc3339;
use crate::gates::{self, CellFacts, Judgement};
use crate::measure::{self, TrialPlan};
use crate::monitor::host_speed::{self, HostSpeed, threads_for};
use crate::monitor::{self, Monitor, MonitorConfig};
use crate::preflight::{ModelFacts, preflight};
use crate::results::{
    CellResult, CellSpec, FORMAT_VERSION, Fidelity, FidelityKind, HARNESS_VERSION, HardwareSummary,
    RunMetadata, StopReason, TrialKind, TrialRecord, summarize_trials,
};
use crate::rundir::{RunEnv, save_json};
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

/// Knobs of a cell beyond its table row (used by tests of the harness itself).
#[derive(Debug, Clone, PartialEq)]
pub struct CellOptions {
    /// Send `truncate: false` where the server supports it, so an overlong prompt is an error
    /// rather than silently cut. Default true.
    pub truncate_false: bool,
    /// Skip the fill-vs-context check of the table (to probe what the server does with an
    /// overlong prompt). Default false.
    pub allow_overfill: bool,
    /// Skip the cell, without loading the model, when its predicted RAM Δ crosses the RAM limit
    /// ([`crate::predict`]); the optimizer's probes do. Default false.
    pub skip_predicted_over_ram: bool,
}

impl Default for CellOptions {
    fn default() -> Self {
        CellOptions {
            truncate_false: true,
            allow_overfill: false,
            skip_predicted_over_ram: false,
        }
    }
}

/// Runs one cell with default options. Blocks; writes `<run>/cells/<name>.json` and rebuilds
/// the reports whatever happens. A cell that could not run here has the verdict SKIPPED.
pub fn run_cell(spec: &CellSpec, env: &RunEnv) -> CellResult {
    run_cell_with(spec, env, &CellOptions::default())
}

/// Runs one cell with `opts`.
pub fn run_cell_with(spec: &CellSpec, env: &RunEnv, opts: &CellOptions) -> CellResult {
    let started = Instant::now();
    let meta = run_metadata(env);
    let _progress = crate::progress::start(
        &env.run_dir,
        &env.run_id,
        &spec.test_name,
        crate::progress::TestKind::Cell,
    );
    let run = RUNTIME.block_on(phases(spec, env, opts, meta));
    let mut result = assemble(spec, run, started.elapsed().as_secs_f64());
    // The prediction gets its errors, and the measurement calibrates the cells after it.
    if let Some(note) = crate::predict::check_cell(&env.config, &mut result) {
        progress(spec, &format!("warning: {note}"));
    }
    // Compared with the same cell of the run's baseline (`O3_BASELINE`): REGRESSED when a
    // figure got significantly worse beyond the noise threshold.
    if let Some(line) = crate::baseline::judge_against_baseline(&env.run_dir, &mut result) {
        progress(spec, &line);
    }
    let verdict_line = format!(
        "{}: {}",
        result.verdict().label(),
        result.judgement.reasons().join(" | ")
    );
    eprintln!("[{}] {verdict_line}", spec.test_name);
    crate::progress::finish(&verdict_line);
    let path = env.run_dir.cell_path(&spec.test_name);
    match save_json(&path, &result) {
        Ok(()) => progress(spec, &format!("result written to {}", path.display())),
        Err(e) => unsaved_result(spec, e),
    }
    if let Err(e) = report::build(&env.run_dir) {
        progress(spec, &format!("warning: reports not rebuilt: {e}"));
    }
    result
}

/// What a test of the run records before it contacts the server: run id, start, harness
/// version, the server (redacted: no userinfo, no query value, config::redact_url), the
/// recorded environment and the host.
pub(crate) fn run_metadata(env: &RunEnv) -> RunMetadata {
    RunMetadata {
        run_id: env.run_id.clone(),
        started_at: rfc3339(SystemTime::now()),
        harness_version: HARNESS_VERSION.to_string(),
        server: env.config.display_url(),
        env: Config::recorded_env(),
        host: monitor::host_info(),
        ..RunMetadata::default()
    }
}

// --- A result that cannot be written (issue 7): the test fails with the path and the cause ---

std::thread_local! {
    /// The result files this thread could not write, since [`take_unsaved_results`] last ran.
    static UNSAVED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn unsaved_result(spec: &CellSpec, e: crate::rundir::StoreError) {
    progress(spec, &format!("error: the result was not written: {e}"));
    record_unsaved(&e);
}

/// Records a result file that could not be written, for [`take_unsaved_results`] (the
/// sessions of [`crate::agentic`] use it too).
pub(crate) fn record_unsaved(e: &crate::rundir::StoreError) {
    UNSAVED.with(|u| u.borrow_mut().push(e.to_string()));
}

/// The result files [`run_cell_with`] could not write on this thread since the last call, each
/// as "failed to write `<path>`: `<cause>`", and forgets them. The test harness
/// ([`crate::harness::main`]) fails a test for which this is not empty, whatever its verdict.
pub fn take_unsaved_results() -> Vec<String> {
    UNSAVED.with(|u| std::mem::take(&mut *u.borrow_mut()))
}

/// A cell's line on stderr: `[<test>] <msg>`.
pub(crate) fn progress(spec: &CellSpec, msg: &str) {
    eprintln!("[{}] {msg}", spec.test_name);
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |x| format!("{x:.digits$}"))
}

/// What the phases of a cell produced.
#[derive(Debug, Clone, PartialEq)]
pub enum CellRun {
    /// The cell could not run here: the reason.
    Skipped {
        /// Facts recorded before the preflight failed.
        meta: Box<RunMetadata>,
        /// Why.
        why: String,
        /// The prediction, when one was made before the cell was skipped.
        prediction: Option<crate::predict::CellPrediction>,
    },
    /// The cell ran (perhaps stopped early by a problem).
    Ran(Box<Ran>),
}

/// The outputs of the phases of a cell that ran.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ran {
    /// The cell as measured, when it differs from the table's row: its engine-relative gates
    /// resolved to limits ([`crate::engine`]).
    pub spec: Option<CellSpec>,
    /// Host, server and model facts.
    pub meta: RunMetadata,
    /// The load, when it succeeded.
    pub load: Option<Loaded>,
    /// Every request: calibration, warm-up, measured.
    pub trials: Vec<TrialRecord>,
    /// Why the measuring loop stopped (or that it never started).
    pub stop_reason: StopReason,
    /// What the sampler saw.
    pub hardware: HardwareSummary,
    /// Problems that make the cell's numbers untrustworthy.
    pub problems: Vec<String>,
    /// Notes that change nothing.
    pub notes: Vec<String>,
    /// The performance prediction made before the load ([`crate::predict`]).
    pub prediction: Option<crate::predict::CellPrediction>,
    /// The retrieval probes asked after the measured trials ([`crate::quality::cell`]).
    pub probes: Vec<crate::quality::ProbeRecord>,
    /// The host's speed around the measured trials ([`crate::monitor::host_speed`]).
    pub host_speed: Option<HostSpeed>,
}

/// The load of the cell's model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Loaded {
    /// The server's `load_duration` (s).
    pub load_s: Option<f64>,
    /// Client wall time of the load request (s).
    pub load_wall_s: Option<f64>,
    /// The runner process right after the load.
    pub runner_pid: Option<u32>,
}

/// The pure part: the result of a cell from what its phases produced.
pub fn assemble(spec: &CellSpec, run: CellRun, wall_s: f64) -> CellResult {
    let ran = match run {
        CellRun::Skipped {
            meta,
            why,
            prediction,
        } => {
            return CellResult {
                format_version: FORMAT_VERSION,
                cell: spec.clone(),
                judgement: Judgement::skipped(why),
                load_s: None,
                load_wall_s: None,
                trials: Vec::new(),
                summaries: Default::default(),
                stop_reason: StopReason::NotStarted,
                hardware: HardwareSummary::default(),
                stability: stability::score(&[]),
                metadata: *meta,
                fidelity: Vec::new(),
                wall_s,
                prediction,
                probes: Vec::new(),
                host_speed: None,
            };
        }
        CellRun::Ran(r) => *r,
    };
    let spec = ran.spec.as_ref().unwrap_or(spec);
    let summaries = summarize_trials(&ran.trials);
    let stability = stability::score(&ran.trials);
    let measured = || ran.trials.iter().filter(|t| t.kind == TrialKind::Measured);
    let facts = CellFacts {
        valid: measured().filter(|t| t.valid).count(),
        attempted: measured().count(),
        trial_reasons: measured()
            .filter(|t| !t.valid)
            .flat_map(|t| t.invalid_reasons.iter().cloned())
            .collect(),
        cell_invalid: ran.problems.clone(),
        notes: ran.notes.clone(),
    };
    let judgement = gates::judge(spec, &summaries, &stability, &ran.hardware, &facts);
    let mut fidelity = Vec::new();
    if let (Some(c), Some(s)) = (&summaries.decode_tps, &summaries.decode_tps_server)
        && s.mean > 0.0
    {
        fidelity.push(Fidelity {
            kind: FidelityKind::DecodeClientOverServer,
            ratio: c.mean / s.mean,
        });
    }
    let load = ran.load.unwrap_or_default();
    CellResult {
        format_version: FORMAT_VERSION,
        cell: spec.clone(),
        judgement,
        load_s: load.load_s,
        load_wall_s: load.load_wall_s,
        trials: ran.trials,
        summaries,
        stop_reason: ran.stop_reason,
        hardware: ran.hardware,
        stability,
        metadata: ran.meta,
        fidelity,
        wall_s,
        prediction: ran.prediction,
        probes: ran.probes,
        host_speed: ran.host_speed,
    }
}

/// The result judged again from what it recorded (trials, hardware, problems, notes), keeping
/// its fidelity ratios: fixtures are made this way, so their judgements follow the judge's
/// wording. A SKIPPED result stays as it is.
pub fn rejudge(r: &CellResult) -> CellResult {
    if r.verdict() == crate::results::Verdict::Skipped {
        return r.clone();
    }
    let ran = Ran {
        spec: None,
        meta: r.metadata.clone(),
        load: Some(Loaded {
            load_s: r.load_s,
            load_wall_s: r.load_wall_s,
            runner_pid: None,
        }),
        trials: r.trials.clone(),
        stop_reason: r.stop_reason,
        hardware: r.hardware.clone(),
        problems: r.judgement.problems.clone(),
        notes: r.judgement.notes.clone(),
        prediction: None,
        probes: r.probes.clone(),
        host_speed: r.host_speed.clone(),
    };
    CellResult {
        fidelity: r.fidelity.clone(),
        prediction: r.prediction.clone(),
        ..assemble(&r.cell, CellRun::Ran(Box::new(ran)), r.wall_s)
    }
}

/// A phase that ended the cell early: the problem in words.
type Problem = String;

/// The requests of one cell: its model, options and flags.
struct Requests<'a> {
    spec: &'a CellSpec,
    config: &'a Config,
    think_false: bool,
    truncate_false: bool,
}

impl Requests<'_> {
    fn request(&self, prompt: String, num_predict: u32) -> GenerateRequest {
        let cfg = self.config;
        // keep_alive covers the longest the cell can take between two requests.
        let keep_alive_s = cfg
            .trial_timeout
            .as_secs()
            .saturating_add(cfg.first_chunk_timeout.as_secs())
            .max(600);
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
}

/// Runs the phases in order; a phase that fails ends the cell with its problem.
async fn phases(
    spec: &CellSpec,
    env: &RunEnv,
    opts: &CellOptions,
    mut meta: RunMetadata,
) -> CellRun {
    let client = OllamaClient::new(&env.config);
    // Preflight (issue 7 item 3): only an unreachable server or a model not pulled skips the
    // cell; a server that answers wrongly makes it INVALID with what it answered.
    let facts = match preflight(&client, &spec.model).await {
        Ok(f) => f,
        Err(e) if e.skips() => {
            return CellRun::Skipped {
                meta: Box::new(meta),
                why: e.to_string(),
                prediction: None,
            };
        }
        Err(e) => {
            progress(spec, &e.to_string());
            return CellRun::Ran(Box::new(Ran {
                meta,
                problems: vec![e.to_string()],
                notes: client.take_retry_notes(),
                ..Ran::default()
            }));
        }
    };
    record_facts(&mut meta, &facts);
    let mut ran = Ran {
        meta,
        ..Ran::default()
    };
    if let Err(p) = admit(spec, &ran.meta, opts) {
        progress(spec, &p);
        ran.problems.push(p);
        return CellRun::Ran(Box::new(ran));
    }
    // Performance prediction before anything is loaded (src/predict): stored, never judged.
    let prediction = crate::predict::predict_cell(&env.config, spec, &facts.show, facts.tag.size);
    progress(spec, &prediction.describe());
    if opts.skip_predicted_over_ram
        && let Some(p) = prediction.made()
        && let Some(r) = p.ram.as_ref().filter(|r| r.crosses)
    {
        let why = format!(
            "predicted RAM Δ {:.0} MiB with {:.1} of {:.1} GiB in use crosses the {}% RAM limit: not loaded",
            p.figures.ram_delta_bytes / (1u64 << 20) as f64,
            r.system_used_bytes as f64 / (1u64 << 30) as f64,
            r.system_total_bytes as f64 / (1u64 << 30) as f64,
            r.ram_limit_pct
        );
        return CellRun::Skipped {
            meta: Box::new(ran.meta),
            why,
            prediction: Some(prediction),
        };
    }
    ran.prediction = Some(prediction);
    // Engine-relative gates (src/engine.rs) are resolved once the server is known to be there
    // and before anything is measured: the stopping rule reads the gates too. A gate that
    // cannot be resolved makes the cell INVALID.
    let resolved = match crate::engine::resolve_spec(spec, &env.run_dir) {
        Ok(s) => s,
        Err(e) => {
            ran.problems.push(e.to_string());
            return CellRun::Ran(Box::new(ran));
        }
    };
    let spec: &CellSpec = &resolved;
    if let Some(line) = crate::engine::describe(spec) {
        progress(spec, &line);
    }
    ran.spec = Some(spec.clone());
    let req = Requests {
        spec,
        config: &env.config,
        think_false: facts.show.can_think(),
        truncate_false: opts.truncate_false && supports_truncate_flag(&facts.version),
    };
    ran.meta.think_false_sent = req.think_false;
    ran.meta.truncate_false_sent = req.truncate_false;
    ran.meta.options_sent = req.request(String::new(), spec.num_predict).options();
    if let Err(e) = clean_slate(&client, &env.config).await {
        ran.problems
            .push(format!("could not unload models before the cell: {e}"));
        ran.notes.extend(client.take_retry_notes());
        return CellRun::Ran(Box::new(ran));
    }
    let monitor = Monitor::start(&MonitorConfig {
        base_url: env.config.origin(),
        sample_hz: env.config.sample_hz,
        ram_limit_pct: spec.gates.ram_max_pct,
    });
    if let Err(p) = measure_cell(&client, &req, env, &monitor, &mut ran).await {
        ran.problems.push(p);
        ran.stop_reason = StopReason::Error;
    }
    // Free the memory for whatever comes next; the next cell checks again.
    let _ = client.unload(&spec.model).await;
    ran.hardware = monitor.stop();
    // Info requests that needed a retry (429/503 with Retry-After) say so in the notes.
    ran.notes.extend(client.take_retry_notes());
    CellRun::Ran(Box::new(ran))
}

/// The load, calibration, warm-up and measuring phases, on a clean slate with the monitor on.
async fn measure_cell(
    client: &OllamaClient,
    req: &Requests<'_>,
    env: &RunEnv,
    monitor: &Monitor,
    ran: &mut Ran,
) -> Result<(), Problem> {
    let spec = req.spec;
    let busy_limit = env.config.busy_cpu_pct;
    let loaded = load(client, req, monitor).await?;
    let runner_at_load = loaded.runner_pid;
    ran.load = Some(loaded);
    check_loaded(client, spec, ran).await?;
    let calibration = calibrate(client, req, &mut ran.trials).await?;
    ran.notes.extend(calibration.notes);
    ran.meta.chars_per_token = calibration.chars_per_token;
    let mut ratios = calibration.ratios;
    if let Some((refined, cpt)) = warm_up(client, req, ratios, &mut ran.trials).await? {
        ratios = refined;
        ran.meta.chars_per_token = Some(cpt);
    }
    // The host's own speed beside the trials (src/monitor/host_speed.rs), when the server is a
    // process of this machine: a remote server's machine is not this one.
    let mut host = monitor
        .server_pid()
        .map(|_| HostSpeed::new(threads_for(spec.num_thread, &ran.meta.host)));
    ran.stop_reason = measuring_loop(
        client,
        req,
        env,
        ratios,
        monitor,
        TrialChecks {
            runner_at_load,
            busy_limit,
        },
        &mut ran.trials,
        host.as_mut(),
    )
    .await;
    // One more reading after the last trial, so that every trial has a reading on each side.
    if let Some(h) = host.as_mut() {
        read_host(h).await;
    }
    ran.host_speed = host;
    after_trials(client, spec, monitor, ran).await;
    // The retrieval probe (src/quality/cell.rs): after the speed trials and the checks on
    // them, so it disturbs neither; not after a loop the server or the RAM guard ended.
    if let Some(probe) = &spec.probe
        && !matches!(ran.stop_reason, StopReason::Error | StopReason::RamGuard)
    {
        progress(
            spec,
            &format!(
                "retrieval probe: {} at depths {:?} of the {}-token fill",
                probe.kind.label(),
                probe.depths,
                spec.fill_tokens
            ),
        );
        let (probes, notes) = crate::quality::cell::ask_all(
            client,
            spec,
            probe,
            env,
            req.think_false,
            ratios,
            monitor,
        )
        .await;
        ran.probes = probes;
        ran.notes.extend(notes);
    }
    Ok(())
}

// --- Foreign load on the host and the server (issue 7) --------------------------------------

/// The server tree's CPU over [`monitor::SERVER_IDLE_WINDOW`] with no request of ours in
/// flight; `None` when the server is not a process proven to be on this host.
pub(crate) async fn server_idle(monitor: &Monitor) -> Option<monitor::CpuUsage> {
    let mark = monitor.guard_mark()?;
    tokio::time::sleep(monitor::SERVER_IDLE_WINDOW).await;
    monitor.cpu_since(&mark)
}

/// Notes of models in `/api/ps` that the cell did not load (the clean slate unloaded all).
fn note_foreign_models(
    ps: &[crate::backend::PsModel],
    spec: &CellSpec,
    when: &str,
    notes: &mut Vec<String>,
) {
    let others: Vec<&str> = ps
        .iter()
        .filter(|m| !same_model(&m.name, &spec.model))
        .map(|m| m.name.as_str())
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "another client used the server: {} loaded {when}, not by this cell (/api/ps)",
            others.join(", ")
        ));
    }
}

/// After the measuring loop: the server idle again, no model loaded by someone else, and a note
/// when the busy-host guard could not look.
async fn after_trials(client: &OllamaClient, spec: &CellSpec, monitor: &Monitor, ran: &mut Ran) {
    let measured = || ran.trials.iter().filter(|t| t.kind == TrialKind::Measured);
    if measured().count() > 0 && measured().all(|t| t.foreign_cpu_pct.is_none()) {
        ran.notes.push(
            "busy-host guard off: no CPU figures of the server's own processes here (a remote server, one that cannot be seen, or one inside the harness's process; hardware.source says which)"
                .to_string(),
        );
    }
    if let Some(u) = server_idle(monitor).await
        && let Some(why) = monitor::server_busy_reason(&u, "after the last trial")
    {
        ran.notes.push(why);
    }
    if let Ok(ps) = client.ps().await {
        note_foreign_models(&ps, spec, "during the trials", &mut ran.notes);
    }
}

// ---------------------------------------------------------------------------------------------

/// Facts of the server and the model, into the metadata.
pub(crate) fn record_facts(meta: &mut RunMetadata, facts: &ModelFacts) {
    meta.server_version = Some(facts.version.clone());
    meta.model_digest = facts.tag.digest.clone();
    let d = &facts.show.details;
    meta.quantization = d.quantization_level.clone();
    meta.parameter_size = d.parameter_size.clone();
    meta.family = d.family.clone();
    meta.trained_context = facts.show.trained_context();
}

/// Whether the cell can measure what it says: `num_ctx` within the trained context (Ollama
/// clamps it otherwise), and the fill plus the output within `num_ctx`.
fn admit(spec: &CellSpec, meta: &RunMetadata, opts: &CellOptions) -> Result<(), Problem> {
    if let Some(trained) = meta.trained_context
        && u64::from(spec.num_ctx) > trained
    {
        return Err(format!(
            "num_ctx {} exceeds {}'s trained context {trained}: Ollama clamps it, so this cell would measure a smaller context",
            spec.num_ctx, spec.model
        ));
    }
    if !opts.allow_overfill
        && u64::from(spec.fill_tokens) + u64::from(spec.num_predict) > u64::from(spec.num_ctx)
    {
        return Err(format!(
            "fill_tokens {} + num_predict {} exceed num_ctx {}",
            spec.fill_tokens, spec.num_predict, spec.num_ctx
        ));
    }
    Ok(())
}

/// A clean slate: nothing loaded and no runner process alive. The runners waited on are those
/// of the process proven to hold the server's listening socket ([`monitor::find_server_pid`]);
/// when that process cannot be seen, only the server's own unload is waited for — never the
/// runners of some other server.
pub(crate) async fn clean_slate(client: &OllamaClient, cfg: &Config) -> Result<(), BackendError> {
    client.unload_all(cfg.unload_timeout).await?;
    // Wait for runner processes to exit too (the server kills them asynchronously).
    if let Some(server) = monitor::find_server_pid(&cfg.origin()) {
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

/// Loads the model with the cell's options (an empty prompt, one output token).
async fn load(
    client: &OllamaClient,
    req: &Requests<'_>,
    monitor: &Monitor,
) -> Result<Loaded, Problem> {
    let spec = req.spec;
    progress(
        spec,
        &format!(
            "loading {} (num_ctx {}, num_batch {}, num_thread {})",
            spec.model, spec.num_ctx, spec.num_batch, spec.num_thread
        ),
    );
    let t = Instant::now();
    let c = client
        .generate(&req.request(String::new(), 1), |_| {})
        .await
        .map_err(|e| format!("loading the model failed: {e}"))?;
    let loaded = Loaded {
        load_s: c.metrics.load_duration.map(|ns| ns as f64 / 1e9),
        load_wall_s: Some(t.elapsed().as_secs_f64()),
        runner_pid: monitor.runner_pid(),
    };
    progress(
        spec,
        &format!(
            "loaded in {} s (wall {} s), runner pid {}",
            fmt_opt(loaded.load_s, 2),
            fmt_opt(loaded.load_wall_s, 2),
            loaded
                .runner_pid
                .map_or("not found".into(), |p| p.to_string())
        ),
    );
    Ok(loaded)
}

/// `/api/ps` after the load: the model is there, at the cell's context.
async fn check_loaded(
    client: &OllamaClient,
    spec: &CellSpec,
    ran: &mut Ran,
) -> Result<(), Problem> {
    let ps = match client.ps().await {
        Ok(ps) => ps,
        Err(e) => {
            ran.notes.push(format!("/api/ps failed: {e}"));
            return Ok(());
        }
    };
    let Some(m) = ps.iter().find(|m| same_model(&m.name, &spec.model)) else {
        return Err("the model is not in /api/ps after loading it".to_string());
    };
    note_foreign_models(&ps, spec, "after the load", &mut ran.notes); // issue 7
    ran.meta.ps_context_length = m.context_length;
    ran.meta.ps_size_bytes = m.size;
    match m.context_length {
        Some(ctx) if ctx != u64::from(spec.num_ctx) => Err(format!(
            "the server runs the model at context {ctx}, not the cell's num_ctx {} (/api/ps context_length)",
            spec.num_ctx
        )),
        _ => Ok(()),
    }
}

/// What calibration found.
struct Calibration {
    ratios: workload::Ratios,
    chars_per_token: Option<f64>,
    notes: Vec<String>,
}

/// Sends one request of the cell and records it as a trial of `kind`.
async fn trial(
    client: &OllamaClient,
    req: &Requests<'_>,
    kind: TrialKind,
    prompt: &workload::Prompt,
    num_predict: u32,
    trials: &[TrialRecord],
) -> (TrialPlan, Result<Completed, BackendError>) {
    let plan = TrialPlan {
        index: u32::try_from(trials.len()).unwrap_or(u32::MAX),
        kind,
        prompt_chars: prompt.text.len(),
        intended_tokens: prompt.intended_tokens,
        num_predict,
    };
    let outcome = client
        .generate(&req.request(prompt.text.clone(), num_predict), |_| {})
        .await;
    (plan, outcome)
}

/// The key a request's prompt is drawn from (`workload::prompt`): the cell's test name and the
/// request (`calibration-0`, `warmup`, `trial-3`), not the run, so that every run of a cell
/// sends the same prompts and a comparison with a baseline compares the same work (drawn per
/// run, the two passes of the baseline check filled `smollm2_135m::ctx_2k` with 1023 and 1074
/// tokens on average: +5 % TTFT before anything changed). Unique within the run, each from its
/// first line; and no cache carries a prompt from one run to the next, because every cell starts
/// on a clean slate, every model unloaded and its runner gone with its prompt cache
/// ([`clean_slate`]).
fn prompt_key(spec: &CellSpec, request: &str) -> String {
    format!("{}/{request}", spec.test_name)
}

/// Calibrates characters per token, for prose and for code, on short prompts well inside the
/// context.
async fn calibrate(
    client: &OllamaClient,
    req: &Requests<'_>,
    trials: &mut Vec<TrialRecord>,
) -> Result<Calibration, Problem> {
    let spec = req.spec;
    let calib_tokens = CALIBRATION_TOKENS
        .min(spec.fill_tokens)
        .min(spec.num_ctx / 4)
        .max(16);
    let mut ratios = workload::Ratios::default();
    let mut notes = Vec::new();
    let (mut chars, mut tokens) = (0usize, 0u64);
    for (i, kind) in [workload::Kind::Prose, workload::Kind::Code]
        .into_iter()
        .enumerate()
    {
        let key = prompt_key(spec, &format!("calibration-{i}"));
        let p = workload::prompt_of(&key, calib_tokens, ratios, Some(kind));
        let (plan, outcome) = trial(client, req, TrialKind::Calibration, &p, 1, trials).await;
        let c = match outcome {
            Ok(c) => c,
            Err(e) => {
                trials.push(measure::from_error(&plan, &e));
                return Err(format!("calibration request failed: {e}"));
            }
        };
        match c
            .metrics
            .prompt_eval_count
            .and_then(|n| workload::calibrate(p.text.len(), n))
        {
            Some(r) if kind == workload::Kind::Prose => ratios.prose = r,
            Some(r) => ratios.code = r,
            None => notes.push(format!(
                "calibration gave an implausible {:?} tokens for {} characters of {kind:?}; kept the default ratio",
                c.metrics.prompt_eval_count,
                p.text.len(),
            )),
        }
        let rec = measure::from_completed(&plan, &c);
        chars += rec.prompt_chars;
        tokens += u64::from(rec.prompt_tokens_evaluated.unwrap_or(0));
        trials.push(rec);
    }
    Ok(Calibration {
        ratios,
        chars_per_token: workload::calibrate(chars, tokens),
        notes,
    })
}

/// The untimed warm-up of the measured shape; refines the calibration at the real size and
/// returns the refined ratios and characters per token when the prompt was not cut.
async fn warm_up(
    client: &OllamaClient,
    req: &Requests<'_>,
    ratios: workload::Ratios,
    trials: &mut Vec<TrialRecord>,
) -> Result<Option<(workload::Ratios, f64)>, Problem> {
    let spec = req.spec;
    let key = prompt_key(spec, "warmup");
    let p = workload::prompt(&key, spec.fill_tokens, ratios);
    progress(
        spec,
        &format!("warm-up ({} prompt tokens)", spec.fill_tokens),
    );
    let (plan, outcome) = trial(client, req, TrialKind::Warmup, &p, spec.num_predict, trials).await;
    let c = match outcome {
        Ok(c) => c,
        Err(e) => {
            trials.push(measure::from_error(&plan, &e));
            if matches!(e, BackendError::Http { .. } | BackendError::Timeout { .. }) {
                return Err(format!("warm-up request failed: {e}"));
            }
            return Ok(None);
        }
    };
    trials.push(measure::from_completed(&plan, &c));
    let Some(n) = c.metrics.prompt_eval_count else {
        return Ok(None);
    };
    let factor = p.estimated_tokens / n as f64;
    // Refine only from a prompt that was not cut (close to the intended size).
    if !(0.75..=1.33).contains(&factor) {
        return Ok(None);
    }
    Ok(workload::calibrate(p.text.len(), n).map(|cpt| (ratios.scaled(factor), cpt)))
}

/// What each measured trial is checked against besides its own figures.
struct TrialChecks {
    /// The runner process right after the load (a different one is a reload).
    runner_at_load: Option<u32>,
    /// `O3_BUSY_CPU_PCT`, when set (issue 7).
    busy_limit: Option<f64>,
}

/// One reading of the host's speed, off the async threads.
async fn read_host(host: &mut HostSpeed) -> Option<f64> {
    let threads = host.threads;
    let (g, wall_s) = tokio::task::spawn_blocking(move || {
        host_speed::read_once(threads, monitor::SERVER_IDLE_WINDOW)
    })
    .await
    .ok()?;
    host.push(g, wall_s);
    g
}

/// Measured trials, one after the other, until the stopping rule is met; with `host`, a
/// reading of the host's speed right before each.
#[allow(clippy::too_many_arguments)]
async fn measuring_loop(
    client: &OllamaClient,
    req: &Requests<'_>,
    env: &RunEnv,
    ratios: workload::Ratios,
    monitor: &Monitor,
    checks: TrialChecks,
    trials: &mut Vec<TrialRecord>,
    mut host: Option<&mut HostSpeed>,
) -> StopReason {
    let spec = req.spec;
    let cfg = &env.config;
    let guard = monitor.guard();
    let mut consecutive_failures = 0;
    for measured in 1..=cfg.max_trials {
        if guard.load(Ordering::SeqCst) {
            progress(spec, "RAM guard tripped: stopping the cell");
            return StopReason::RamGuard;
        }
        let key = prompt_key(spec, &format!("trial-{measured}"));
        let p = workload::prompt(&key, spec.fill_tokens, ratios);
        // Issue 7: the server quiet before the trial; meanwhile, the host's speed (the kernel
        // runs in this process, whose CPU the idle check leaves out).
        let (idle, host_now) = match host.as_deref_mut() {
            Some(h) => tokio::join!(server_idle(monitor), read_host(h)),
            None => (server_idle(monitor).await, None),
        };
        let mark = monitor.guard_mark(); // issue 7: who uses the CPU during the trial
        let (plan, outcome) = trial(
            client,
            req,
            TrialKind::Measured,
            &p,
            spec.num_predict,
            trials,
        )
        .await;
        let during = mark.as_ref().and_then(|m| monitor.cpu_since(m));
        let mut rec = match &outcome {
            Ok(c) => measure::from_completed(&plan, c),
            Err(e) => measure::from_error(&plan, e),
        };
        measure::check_runner(&mut rec, checks.runner_at_load, monitor.runner_pid());
        monitor::check_trial_cpu(
            &mut rec,
            measured,
            idle.as_ref(),
            during.as_ref(),
            checks.busy_limit,
            spec.num_thread,
        );
        rec.rss_after_bytes = monitor.current_memory().map(|m| m.rss_bytes);
        let line = trial_line(&rec, measured, cfg.max_trials, host_now);
        progress(spec, &line);
        crate::progress::step(measured, Some(cfg.max_trials), &line);
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
        trials.push(rec);
        if fatal || consecutive_failures >= 2 {
            return StopReason::Error;
        }
        if let Some(stop) = stopping_rule(spec, trials, cfg) {
            return stop;
        }
    }
    StopReason::MaxTrials
}

/// Whether measuring can stop after the trials so far, and why.
fn stopping_rule(spec: &CellSpec, trials: &[TrialRecord], cfg: &Config) -> Option<StopReason> {
    let measured = trials.iter().filter(|t| t.kind == TrialKind::Measured);
    let valid = measured.clone().filter(|t| t.valid).count();
    let invalid = measured.count() - valid;
    if gates::hopelessly_invalid(invalid, cfg.max_trials) {
        return Some(StopReason::TooManyInvalid);
    }
    if valid < cfg.min_trials as usize {
        return None;
    }
    let summaries = summarize_trials(trials);
    let tight = [&summaries.decode_tps, &summaries.ttft_s].iter().all(|s| {
        s.as_ref()
            .and_then(|s| s.rel_half_width)
            .is_some_and(|w| w <= TIGHT_REL_HALF_WIDTH)
    });
    let st = stability::score(trials);
    let checks = gates::check_gates(spec, &summaries, &st, &HardwareSummary::default());
    // Tight intervals of TTFT and decode say nothing of stability: its interval must be clear.
    let stability_clear = checks
        .iter()
        .find(|c| c.gate == gates::Gate::Stability)
        .is_some_and(|c| {
            c.has_interval() && matches!(c.state, gates::GateState::Pass | gates::GateState::Fail)
        });
    if tight && stability_clear {
        return Some(StopReason::IntervalsTight);
    }
    if gates::verdict_clear(&checks) {
        return Some(StopReason::VerdictClear);
    }
    None
}

/// The progress line of a measured trial; `host`, the host's speed read before it.
fn trial_line(rec: &TrialRecord, n: u32, max: u32, host: Option<f64>) -> String {
    format!(
        "trial {n}/{max}: ttft {} s, decode {} tok/s (server {}), prefill {} tok/s, prompt {}/{} tokens{}{}",
        fmt_opt(rec.ttft_s, 2),
        fmt_opt(rec.decode_tps, 1),
        fmt_opt(rec.decode_tps_server, 1),
        fmt_opt(rec.prefill_tps_server, 0),
        rec.prompt_tokens_evaluated
            .map_or("–".into(), |v| v.to_string()),
        rec.prompt_tokens_intended,
        host.map_or(String::new(), |g| format!(", host {g:.1} GFLOP/s")),
        if rec.valid {
            String::new()
        } else {
            format!(" — INVALID: {}", rec.invalid_reasons.join("; "))
        }
    )
}
