//! One quality test end to end: preflight, clean slate, load, a calibration of characters per
//! token on the server's own count, then the probes — each depth in turn, `trials` rounds, so
//! that drift over the test does not line up with depth — each a fresh `/api/chat` request
//! whose document is unique from its first line (no prompt cache can serve it); then
//! [`super::assemble`], a pure function from what the phases produced to the
//! [`QualityResult`], which is written and the reports rebuilt.

use std::time::Instant;

use super::needle::{self, Probe};
use super::table::QualitySpec;
use super::{ANSWER_KEPT_CHARS, ProbeRecord, QualityFacts, QualityResult, QualityRun};
use crate::backend::{
    ChatRequest, GenerateRequest, LoadOptions, Message, OllamaClient, same_model,
};
use crate::config::Config;
use crate::measure::{self, FILL_TOLERANCE, TrialPlan};
use crate::monitor::{Monitor, MonitorConfig};
use crate::preflight::preflight;
use crate::results::{RunMetadata, TrialKind};
use crate::rundir::{RunEnv, save_json};
use crate::runner::{RUNTIME, clean_slate, record_facts, record_unsaved, run_metadata};
use crate::workload::{self, Ratios};

/// Tokens of the calibration prompt (at most a quarter of the fill).
pub const CALIBRATION_TOKENS: u32 = 512;

/// Runs one quality test. Blocks; writes `<run>/quality/<name>.json` and rebuilds the reports
/// whatever happens.
pub fn run_quality(spec: &QualitySpec, env: &RunEnv) -> QualityResult {
    let started = Instant::now();
    let meta = run_metadata(env);
    let run = RUNTIME.block_on(phases(spec, env, meta));
    let result = super::assemble(spec, run, started.elapsed().as_secs_f64());
    let path = env.run_dir.quality_path(&spec.test_name);
    finish(&spec.test_name, &result.judgement, &path, &result, env);
    result
}

/// The end of a quality or RAG test: its verdict and reasons on stderr, its result written to
/// `path` (a failed write is recorded for the harness, which fails the test), the reports
/// rebuilt.
pub(crate) fn finish<T: serde::Serialize>(
    test_name: &str,
    judgement: &crate::judgement::Judgement,
    path: &std::path::Path,
    result: &T,
    env: &RunEnv,
) {
    let say = |msg: &str| eprintln!("[{test_name}] {msg}");
    say(&format!(
        "{}: {}",
        judgement.verdict.label(),
        judgement.reasons().join(" | ")
    ));
    match save_json(path, result) {
        Ok(()) => say(&format!("result written to {}", path.display())),
        Err(e) => {
            say(&format!("error: the result was not written: {e}"));
            record_unsaved(&e);
        }
    }
    if let Err(e) = crate::report::build(&env.run_dir) {
        say(&format!("warning: reports not rebuilt: {e}"));
    }
}

fn progress(spec: &QualitySpec, msg: &str) {
    eprintln!("[{}] {msg}", spec.test_name);
}

/// What the phases of a test that ran produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ran {
    /// Host, server and model facts.
    pub meta: RunMetadata,
    /// The server's `load_duration` of the load (s).
    pub load_s: Option<f64>,
    /// Every probe, in the order asked.
    pub probes: Vec<ProbeRecord>,
    /// What the sampler saw.
    pub hardware: crate::results::HardwareSummary,
    /// Problems and notes.
    pub facts: QualityFacts,
}

/// What a quality test loads and asks: the model, its load-time options and the output tokens
/// per answer (the sweeps and the RAG tests alike).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The model.
    pub model: String,
    /// Load-time options, sent on every request.
    pub load: LoadOptions,
    /// Output tokens per answer.
    pub num_predict: u32,
}

impl QualitySpec {
    /// What the test loads and asks.
    pub fn target(&self) -> Target {
        Target {
            model: self.model.clone(),
            load: LoadOptions {
                num_ctx: self.num_ctx,
                num_batch: self.num_batch,
                num_thread: self.num_thread,
            },
            num_predict: self.num_predict,
        }
    }
}

pub(crate) fn request(
    t: &Target,
    cfg: &Config,
    think_false: bool,
    num_predict: u32,
) -> GenerateRequest {
    GenerateRequest {
        model: t.model.clone(),
        prompt: String::new(),
        load: t.load,
        num_predict,
        seed: cfg.seed,
        // The model stays loaded between probes: the longest a probe may take, twice.
        keep_alive_s: 2 * (cfg.trial_timeout.as_secs() + cfg.first_chunk_timeout.as_secs()),
        think_false,
        truncate_false: false,
    }
}

/// The key of probe `index` of a test in a run: its document's first line (unique, so no
/// prompt cache serves it) and its seed.
pub fn probe_key(run_id: &str, test: &str, index: u32) -> String {
    format!("{run_id}/{test}/probe-{index}")
}

/// The seed of probe `index` of a test in a run: distinct facts per trial, reproducible.
pub fn probe_seed(run_id: &str, test: &str, index: u32) -> u64 {
    crate::optimize::sim::fnv1a(&probe_key(run_id, test, index))
}

/// The ratios that would have given a probe's `planned` tokens the server's `counted` ones, so
/// the next probes keep their planned fill; `ratios` as they are when the two are more than a
/// factor of 2 apart (no count to learn from).
pub(crate) fn at_plan(ratios: Ratios, planned: f64, counted: u32) -> Ratios {
    let factor = planned / f64::from(counted);
    if counted > 0 && (0.5..2.0).contains(&factor) {
        ratios.scaled(factor)
    } else {
        ratios
    }
}

/// The probes of a test in the order asked: each depth in turn, `trials` rounds.
pub fn plan(spec: &QualitySpec, run_id: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    for _ in 0..spec.trials {
        for &d in &spec.depths {
            let i = out.len() as u32;
            out.push(needle::probe(
                spec.probe,
                d,
                probe_seed(run_id, &spec.test_name, i),
            ));
        }
    }
    out
}

/// How the first phases of a quality test ended: preflight, the trained-context check and the
/// clean slate (shared by the sweeps and the RAG tests).
pub(crate) enum Opening {
    /// It cannot run here.
    Skipped {
        /// Facts recorded so far.
        meta: RunMetadata,
        /// Why.
        why: String,
    },
    /// It cannot go on: a problem (INVALID).
    Failed {
        /// Facts recorded so far.
        meta: RunMetadata,
        /// What went wrong.
        problem: String,
        /// Retry notes of the client.
        notes: Vec<String>,
    },
    /// The server has the model and nothing is loaded.
    Ready {
        /// Host, server and model facts, the options sent.
        meta: RunMetadata,
        /// Whether `think: false` is sent.
        think_false: bool,
    },
}

pub(crate) async fn open(
    client: &OllamaClient,
    env: &RunEnv,
    t: &Target,
    mut meta: RunMetadata,
) -> Opening {
    let facts = match preflight(client, &t.model).await {
        Ok(f) => f,
        Err(e) if e.skips() => {
            return Opening::Skipped {
                meta,
                why: e.to_string(),
            };
        }
        Err(e) => {
            return Opening::Failed {
                meta,
                problem: e.to_string(),
                notes: client.take_retry_notes(),
            };
        }
    };
    record_facts(&mut meta, &facts);
    let think_false = facts.show.can_think();
    meta.think_false_sent = think_false;
    meta.options_sent = request(t, &env.config, think_false, t.num_predict).options();
    if let Some(trained) = meta.trained_context
        && u64::from(t.load.num_ctx) > trained
    {
        let problem = format!(
            "num_ctx {} exceeds {}'s trained context {trained}: Ollama clamps it, so this test would measure a smaller context",
            t.load.num_ctx, t.model
        );
        return Opening::Failed {
            meta,
            problem,
            notes: Vec::new(),
        };
    }
    if let Err(e) = clean_slate(client, &env.config).await {
        return Opening::Failed {
            meta,
            problem: format!("could not unload models before the test: {e}"),
            notes: Vec::new(),
        };
    }
    Opening::Ready { meta, think_false }
}

/// Loads the model of `t` (a one-token request), records its load duration and `/api/ps`
/// facts, and checks that the server runs it at the test's `num_ctx`.
pub(crate) async fn load(
    client: &OllamaClient,
    t: &Target,
    cfg: &Config,
    think_false: bool,
    meta: &mut RunMetadata,
    notes: &mut Vec<String>,
) -> Result<Option<f64>, String> {
    let load = client
        .generate(&request(t, cfg, think_false, 1), |_| {})
        .await
        .map_err(|e| format!("loading the model failed: {e}"))?;
    match client.ps().await {
        Ok(ps) => {
            let m = ps
                .iter()
                .find(|m| same_model(&m.name, &t.model))
                .ok_or("the model is not in /api/ps after loading it")?;
            meta.ps_context_length = m.context_length;
            meta.ps_size_bytes = m.size;
            if let Some(ctx) = m.context_length
                && ctx != u64::from(t.load.num_ctx)
            {
                return Err(format!(
                    "the server runs the model at context {ctx}, not the test's num_ctx {} (/api/ps context_length)",
                    t.load.num_ctx
                ));
            }
        }
        Err(e) => notes.push(format!("/api/ps failed: {e}")),
    }
    Ok(load.metrics.load_duration.map(|ns| ns as f64 / 1e9))
}

async fn phases(spec: &QualitySpec, env: &RunEnv, meta: RunMetadata) -> QualityRun {
    let client = OllamaClient::new(&env.config);
    let t = spec.target();
    let (meta, think_false) = match open(&client, env, &t, meta).await {
        Opening::Skipped { meta, why } => {
            return QualityRun::Skipped {
                meta: Box::new(meta),
                why,
            };
        }
        Opening::Failed {
            meta,
            problem,
            notes,
        } => {
            let mut ran = Ran {
                meta,
                ..Ran::default()
            };
            ran.facts.problems.push(problem);
            ran.facts.notes.extend(notes);
            return QualityRun::Ran(Box::new(ran));
        }
        Opening::Ready { meta, think_false } => (meta, think_false),
    };
    let mut ran = Ran {
        meta,
        ..Ran::default()
    };
    let monitor = Monitor::start(&MonitorConfig {
        base_url: env.config.origin(),
        sample_hz: env.config.sample_hz,
        ram_limit_pct: spec.gates.ram_max_pct,
    });
    if let Err(p) = probes(&client, spec, env, think_false, &monitor, &mut ran).await {
        ran.facts.problems.push(p);
    }
    let _ = client.unload(&spec.model).await;
    ran.hardware = monitor.stop();
    ran.facts.notes.extend(client.take_retry_notes());
    QualityRun::Ran(Box::new(ran))
}

async fn probes(
    client: &OllamaClient,
    spec: &QualitySpec,
    env: &RunEnv,
    think_false: bool,
    monitor: &Monitor,
    ran: &mut Ran,
) -> Result<(), String> {
    let cfg = &env.config;
    progress(
        spec,
        &format!(
            "loading {} (num_ctx {}, num_batch {}, num_thread {})",
            spec.model, spec.num_ctx, spec.num_batch, spec.num_thread
        ),
    );
    ran.load_s = load(
        client,
        &spec.target(),
        cfg,
        think_false,
        &mut ran.meta,
        &mut ran.facts.notes,
    )
    .await?;
    // Characters per token on the server's own count, before any probe can overflow.
    let mut ratios = Ratios::default();
    let cal_tokens = CALIBRATION_TOKENS.min(spec.fill_tokens / 4).max(64);
    let cal = workload::prompt(
        &format!("{}/{}/calibration", env.run_id, spec.test_name),
        cal_tokens,
        ratios,
    );
    let mut req = request(&spec.target(), cfg, think_false, 1);
    req.prompt = cal.text.clone();
    let c = client
        .generate(&req, |_| {})
        .await
        .map_err(|e| format!("calibration request failed: {e}"))?;
    match c.metrics.prompt_eval_count {
        Some(n) if workload::calibrate(cal.text.len(), n).is_some() => {
            ratios = ratios.scaled(cal.estimated_tokens / n as f64);
            ran.meta.chars_per_token = workload::calibrate(cal.text.len(), n);
        }
        other => ran.facts.notes.push(format!(
            "calibration gave {other:?} tokens for {} characters: kept the default ratios",
            cal.text.len()
        )),
    }
    ratios = warm_up(client, spec, env, think_false, ratios, ran).await?;
    let probes = plan(spec, &env.run_id);
    let total = probes.len();
    let t = spec.target();
    for (i, probe) in probes.into_iter().enumerate() {
        let key = probe_key(&env.run_id, &spec.test_name, i as u32);
        let asked = ask_probe(
            client,
            &t,
            cfg,
            think_false,
            &probe,
            (i as u32, &key),
            (spec.fill_tokens, ratios),
            monitor,
        )
        .await;
        let planned = asked.planned;
        if let Some(n) = asked.record.trial.prompt_tokens_evaluated {
            if f64::from(n) < planned * (1.0 - FILL_TOLERANCE) {
                let p = format!(
                    "prompt truncated: the server evaluated {n} of {planned:.0} planned prompt tokens, so facts were cut out of the context"
                );
                if !ran.facts.problems.contains(&p) {
                    ran.facts.problems.push(p);
                }
            } else {
                ratios = at_plan(ratios, planned, n);
            }
        }
        progress(spec, &probe_line(&asked.record, i + 1, total));
        ran.probes.push(asked.record);
        if asked.unreachable {
            return Err(format!("probe {}: the server went away", i + 1));
        }
        if monitor.guard().load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the RAM guard stopped the test".to_string());
        }
    }
    Ok(())
}

/// One probe asked and scored: its record, the prompt tokens its message should count, and
/// whether the server went away.
pub(crate) struct Asked {
    /// What was asked and what came back.
    pub record: ProbeRecord,
    /// Prompt tokens planned ([`planned_tokens`]).
    pub planned: f64,
    /// The server could not be reached.
    pub unreachable: bool,
}

/// Asks `probe` (its message built from `fill` = (tokens, ratios), keyed by `at` = (index,
/// key): unique per probe, so no prompt cache can serve it) as the user's only message of a
/// chat request of `t`, and scores the answer; the process's RSS after it from `monitor`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ask_probe(
    client: &OllamaClient,
    t: &Target,
    cfg: &Config,
    think_false: bool,
    probe: &Probe,
    at: (u32, &str),
    fill: (u32, Ratios),
    monitor: &Monitor,
) -> Asked {
    let (index, key) = at;
    let pp = needle::prompt(probe, key, fill.0, fill.1);
    let planned = planned_tokens(&pp, fill.1);
    let plan = TrialPlan {
        index,
        kind: TrialKind::Measured,
        prompt_chars: pp.text.len(),
        intended_tokens: planned.round() as u32,
        num_predict: t.num_predict,
    };
    let outcome = ask(client, t, cfg, think_false, &pp.text).await;
    let (mut trial, answer, failure) = answered(&plan, &outcome);
    trial.rss_after_bytes = monitor.current_memory().map(|m| m.rss_bytes);
    let correct = failure
        .is_none()
        .then(|| needle::matches(&probe.expected, &answer));
    let asked = pp.placed[probe
        .facts
        .iter()
        .position(|f| f.text.contains(&probe.expected))
        .unwrap_or(0)];
    Asked {
        record: ProbeRecord {
            index,
            depth: probe.depth,
            fill_before: asked.fill_before,
            expected: probe.expected.clone(),
            answer: answer.chars().take(ANSWER_KEPT_CHARS).collect(),
            correct,
            failure,
            trial,
        },
        planned,
        unreachable: matches!(
            outcome,
            Err(crate::backend::BackendError::Unreachable { .. })
        ),
    }
}

/// Prompt tokens a probe's message should count: its document's estimate, and the preamble
/// and the question at the prose ratio.
fn planned_tokens(pp: &needle::ProbePrompt, ratios: Ratios) -> f64 {
    let extra = (pp.text.len() - pp.document.text.trim_end().len()) as f64 / ratios.prose;
    pp.document.estimated_tokens + extra
}

/// What a request of `plan` gave: its figures, the answer's text, and why it failed.
pub(crate) fn answered(
    plan: &TrialPlan,
    outcome: &Result<crate::backend::Completed, crate::backend::BackendError>,
) -> (crate::results::TrialRecord, String, Option<String>) {
    match outcome {
        Ok(c) => (
            measure::figures(plan, c),
            c.events.iter().map(|e| e.content.as_str()).collect(),
            None,
        ),
        Err(e) => (
            measure::from_error(plan, e),
            String::new(),
            Some(e.to_string()),
        ),
    }
}

/// One message, asked as the user's only message.
pub(crate) async fn ask(
    client: &OllamaClient,
    t: &Target,
    cfg: &Config,
    think_false: bool,
    text: &str,
) -> Result<crate::backend::Completed, crate::backend::BackendError> {
    let req = ChatRequest {
        model: t.model.clone(),
        messages: vec![Message::new("user", text.to_string())],
        params: request(t, cfg, think_false, t.num_predict),
    };
    client.chat(&req, |_| {}).await
}

/// Share of `num_ctx` below which a prompt count cannot be the server's truncation (Ollama
/// cuts a prompt only when it exceeds `num_ctx`, and then to about `num_ctx`).
pub const UNCUT_BELOW_CTX: f64 = 0.9;

/// The untimed, unscored warm-up: one probe of the real shape and size (its own seed, never
/// asked again). The short calibration prompt is corpus alone; the probes' facts (digits), the
/// preamble and the chat template tokenize otherwise, and at the full fill the difference was
/// 10-14 % of the plan on both reference models, which the probes' truncation check then took
/// for a cut prompt. Like the cells' warm-up (`runner.rs`, `warm_up`), the ratios are refined
/// from the server's count when that count cannot be a truncation: below
/// [`UNCUT_BELOW_CTX`] × `num_ctx` and within a factor of 4/3 of the plan.
async fn warm_up(
    client: &OllamaClient,
    spec: &QualitySpec,
    env: &RunEnv,
    think_false: bool,
    ratios: Ratios,
    ran: &mut Ran,
) -> Result<Ratios, String> {
    let probe = needle::probe(
        spec.probe,
        0.5,
        probe_seed(&env.run_id, &spec.test_name, u32::MAX),
    );
    let key = format!("{}/{}/warmup", env.run_id, spec.test_name);
    let pp = needle::prompt(&probe, &key, spec.fill_tokens, ratios);
    let planned = planned_tokens(&pp, ratios);
    progress(
        spec,
        &format!("warm-up probe ({planned:.0} planned prompt tokens)"),
    );
    let c = ask(client, &spec.target(), &env.config, think_false, &pp.text)
        .await
        .map_err(|e| format!("warm-up request failed: {e}"))?;
    let Some(n) = c.metrics.prompt_eval_count.filter(|&n| n > 0) else {
        ran.facts
            .notes
            .push("the warm-up probe's prompt was not counted: kept the calibration".into());
        return Ok(ratios);
    };
    let factor = planned / n as f64;
    let uncut = (n as f64) < UNCUT_BELOW_CTX * f64::from(spec.num_ctx);
    if uncut && (0.75..=4.0 / 3.0).contains(&factor) {
        ran.facts.notes.push(format!(
            "warm-up probe: the server counted {n} of {planned:.0} planned prompt tokens; the probes are sized on its count"
        ));
        Ok(ratios.scaled(factor))
    } else {
        ran.facts.notes.push(format!(
            "warm-up probe: the server counted {n} of {planned:.0} planned prompt tokens, which may be a cut prompt: kept the calibration"
        ));
        Ok(ratios)
    }
}

pub(crate) fn probe_line(r: &ProbeRecord, n: usize, total: usize) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |x| format!("{x:.d$}"));
    format!(
        "probe {n}/{total}: depth {:.2} ({:.0} tokens in), prompt {} tokens, ttft {} s, decode {} tok/s: {}",
        r.depth,
        r.fill_before,
        r.trial
            .prompt_tokens_evaluated
            .map_or("–".into(), |n| n.to_string()),
        f(r.trial.ttft_s, 2),
        f(r.trial.decode_tps, 1),
        match (r.correct, &r.failure) {
            (Some(true), _) => "right".to_string(),
            (Some(false), _) => format!(
                "wrong (expected {}, got {:?})",
                r.expected,
                r.answer.chars().take(60).collect::<String>()
            ),
            (None, f) => format!("FAILED: {}", f.as_deref().unwrap_or("")),
        }
    )
}
