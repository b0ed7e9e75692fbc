//! One session test end to end: preflight, clean slate, load, then turn after turn of real
//! multi-turn `/api/chat` traffic until `duration_s` is spent (the turn in flight ends), a new
//! conversation each time the history reaches its budget; then [`assemble`], a pure function
//! from what the phases produced to the [`SessionResult`], which is written and the reports
//! rebuilt.
//!
//! Every request carries the whole history (the system prompt, the earlier turns' messages and
//! the model's own answers as returned), the row's load-time options, `keep_alive` covering the
//! session, `temperature` 0 and the seed, `num_predict`, and `think: false` for models that
//! think. The harness sizes its history in tokens from characters per token calibrated on the
//! server's own prompt counts (the first turns use a conservative guess).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::analysis::{self, ANSWER_KEPT_CHARS, SessionFacts, TurnRecord};
use super::table::SessionSpec;
use super::workload::{self, Workload};
use super::{SessionResult, SessionRun, SessionStop};
use crate::backend::{
    BackendError, ChatRequest, GenerateRequest, LoadOptions, Message, OllamaClient, same_model,
};
use crate::config::Config;
use crate::measure::{self, TrialPlan};
use crate::monitor::{self, Monitor, MonitorConfig};
use crate::preflight::preflight;
use crate::results::{RunMetadata, TrialKind};
use crate::rundir::{RunEnv, save_json};
use crate::runner::{
    RUNTIME, clean_slate, record_facts, record_unsaved, run_metadata, server_idle,
};

/// Characters per token assumed before the server's first count: low (code-like), so that the
/// first turn's size is overestimated rather than under.
pub const INITIAL_CHARS_PER_TOKEN: f64 = 3.0;

/// Failed turns in a row after which the session stops.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// Knobs of a session beyond its table row (tests of the harness itself).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Stop after this many turns even if time is left (scripted tests: exact figures).
    pub max_turns: Option<u32>,
    /// Where the workload texts are (default `harness/agentic`).
    pub texts_dir: PathBuf,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max_turns: None,
            texts_dir: workload::texts_dir(),
        }
    }
}

/// Runs one session with default options. Blocks; writes `<run>/sessions/<name>.json` and
/// rebuilds the reports whatever happens.
pub fn run_session(spec: &SessionSpec, env: &RunEnv) -> SessionResult {
    run_session_with(spec, env, &SessionOptions::default())
}

/// Runs one session with `opts`.
pub fn run_session_with(spec: &SessionSpec, env: &RunEnv, opts: &SessionOptions) -> SessionResult {
    let started = Instant::now();
    let meta = run_metadata(env);
    let _progress = crate::progress::start(
        &env.run_dir,
        &env.run_id,
        &spec.test_name,
        crate::progress::TestKind::Session,
    );
    let run = RUNTIME.block_on(phases(spec, env, opts, meta));
    let result = super::assemble(spec, run, started.elapsed().as_secs_f64());
    let verdict_line = format!(
        "{}: {}",
        result.verdict().label(),
        result.judgement.reasons().join(" | ")
    );
    eprintln!("[{}] {verdict_line}", spec.test_name);
    crate::progress::finish(&verdict_line);
    let path = env.run_dir.session_path(&spec.test_name);
    match save_json(&path, &result) {
        Ok(()) => progress(spec, &format!("result written to {}", path.display())),
        Err(e) => {
            progress(spec, &format!("error: the result was not written: {e}"));
            record_unsaved(&e);
        }
    }
    if let Err(e) = crate::report::build(&env.run_dir) {
        progress(spec, &format!("warning: reports not rebuilt: {e}"));
    }
    if let Err(e) = super::report::build(&env.run_dir) {
        progress(spec, &format!("warning: session reports not rebuilt: {e}"));
    }
    result
}

fn progress(spec: &SessionSpec, msg: &str) {
    eprintln!("[{}] {msg}", spec.test_name);
}

/// What the phases of a session that ran produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ran {
    /// Host, server and model facts.
    pub meta: RunMetadata,
    /// The server's `load_duration` of the load (s).
    pub load_s: Option<f64>,
    /// The server tree's RSS right after the load (bytes).
    pub loaded_rss_bytes: Option<u64>,
    /// Every turn, in order.
    pub turns: Vec<TurnRecord>,
    /// Conversations that reached the history budget.
    pub conversations_completed: u32,
    /// Why the session stopped.
    pub stop: SessionStop,
    /// What the sampler saw.
    pub hardware: crate::results::HardwareSummary,
    /// Problems and notes.
    pub facts: SessionFacts,
}

fn request(
    spec: &SessionSpec,
    cfg: &Config,
    think_false: bool,
    num_predict: u32,
) -> GenerateRequest {
    // keep_alive covers the whole session and the longest a turn may take.
    let keep_alive_s = (spec.duration_s.ceil() as u64)
        .saturating_add(cfg.trial_timeout.as_secs())
        .saturating_add(cfg.first_chunk_timeout.as_secs());
    GenerateRequest {
        model: spec.model.clone(),
        prompt: String::new(),
        load: LoadOptions {
            num_ctx: spec.num_ctx,
            num_batch: spec.num_batch,
            num_thread: spec.num_thread,
        },
        num_predict,
        seed: cfg.seed,
        keep_alive_s,
        think_false,
        // Agentic clients do not send it: the harness measures what they live with, and
        // detects a cut history itself.
        truncate_false: false,
    }
}

async fn phases(
    spec: &SessionSpec,
    env: &RunEnv,
    opts: &SessionOptions,
    mut meta: RunMetadata,
) -> SessionRun {
    let client = OllamaClient::new(&env.config);
    let facts = match preflight(&client, &spec.model).await {
        Ok(f) => f,
        Err(e) if e.skips() => {
            return SessionRun::Skipped {
                meta: Box::new(meta),
                why: e.to_string(),
            };
        }
        Err(e) => {
            let mut ran = Ran {
                meta,
                ..Ran::default()
            };
            ran.facts.problems.push(e.to_string());
            ran.facts.notes.extend(client.take_retry_notes());
            return SessionRun::Ran(Box::new(ran));
        }
    };
    record_facts(&mut meta, &facts);
    let think_false = facts.show.can_think();
    meta.think_false_sent = think_false;
    meta.options_sent = request(spec, &env.config, think_false, spec.num_predict).options();
    let mut ran = Ran {
        meta,
        ..Ran::default()
    };
    if let Some(trained) = ran.meta.trained_context
        && u64::from(spec.num_ctx) > trained
    {
        ran.facts.problems.push(format!(
            "num_ctx {} exceeds {}'s trained context {trained}: Ollama clamps it, so this session would measure a smaller context",
            spec.num_ctx, spec.model
        ));
        return SessionRun::Ran(Box::new(ran));
    }
    let mut work = match Workload::load(spec.workload, &opts.texts_dir, env.config.seed) {
        Ok(w) => w,
        Err(e) => {
            ran.facts
                .problems
                .push(format!("the workload cannot be read: {e}"));
            return SessionRun::Ran(Box::new(ran));
        }
    };
    if let Err(e) = clean_slate(&client, &env.config).await {
        ran.facts
            .problems
            .push(format!("could not unload models before the session: {e}"));
        return SessionRun::Ran(Box::new(ran));
    }
    let monitor = Monitor::start(&MonitorConfig {
        base_url: env.config.origin(),
        sample_hz: env.config.sample_hz,
        ram_limit_pct: spec.gates.ram_max_pct,
    });
    if let Err(p) = session_turns(
        &client,
        spec,
        env,
        opts,
        think_false,
        &monitor,
        &mut work,
        &mut ran,
    )
    .await
    {
        ran.facts.problems.push(p);
        ran.stop = SessionStop::Error;
    }
    let _ = client.unload(&spec.model).await;
    ran.hardware = monitor.stop();
    ran.facts.notes.extend(client.take_retry_notes());
    SessionRun::Ran(Box::new(ran))
}

/// A stable nonce for a conversation: the same run, test and conversation give the same one.
fn nonce(run_id: &str, test: &str, conversation: u32) -> String {
    let h = crate::optimize::sim::fnv1a(&format!("{run_id}/{test}/{conversation}"));
    format!("{h:016x}")
}

#[allow(clippy::too_many_arguments)]
async fn session_turns(
    client: &OllamaClient,
    spec: &SessionSpec,
    env: &RunEnv,
    opts: &SessionOptions,
    think_false: bool,
    monitor: &Monitor,
    work: &mut Workload,
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
    let load = client
        .generate(&request(spec, cfg, think_false, 1), |_| {})
        .await
        .map_err(|e| format!("loading the model failed: {e}"))?;
    ran.load_s = load.metrics.load_duration.map(|ns| ns as f64 / 1e9);
    let runner_at_load = monitor.runner_pid();
    ran.loaded_rss_bytes = monitor.current_memory().map(|m| m.rss_bytes);
    match client.ps().await {
        Ok(ps) => {
            let m = ps
                .iter()
                .find(|m| same_model(&m.name, &spec.model))
                .ok_or("the model is not in /api/ps after loading it")?;
            ran.meta.ps_context_length = m.context_length;
            ran.meta.ps_size_bytes = m.size;
            if let Some(ctx) = m.context_length
                && ctx != u64::from(spec.num_ctx)
            {
                return Err(format!(
                    "the server runs the model at context {ctx}, not the session's num_ctx {} (/api/ps context_length)",
                    spec.num_ctx
                ));
            }
        }
        Err(e) => ran.facts.notes.push(format!("/api/ps failed: {e}")),
    }
    let budget = spec.history_budget();
    let duration = Duration::from_secs_f64(spec.duration_s);
    let t0 = Instant::now();
    let mut cpt = INITIAL_CHARS_PER_TOKEN;
    let mut history: Vec<Message> = Vec::new();
    let (mut conversation, mut in_conversation) = (0u32, 0u32);
    let mut failures_in_row = 0;
    let mut unfit_in_row = 0;
    let guard = monitor.guard();
    ran.stop = loop {
        if t0.elapsed() >= duration {
            break SessionStop::Duration;
        }
        if opts.max_turns.is_some_and(|m| ran.turns.len() as u32 >= m) {
            break SessionStop::MaxTurns;
        }
        if guard.load(Ordering::SeqCst) {
            progress(spec, "RAM guard tripped: stopping the session");
            break SessionStop::RamGuard;
        }
        if history.is_empty() {
            conversation += 1;
            in_conversation = 0;
            history.push(work.start_conversation(&nonce(
                &env.run_id,
                &spec.test_name,
                conversation,
            )));
        }
        let turn = work.next_turn();
        let chars_before: usize = history.iter().map(|m| m.content.len()).sum();
        let chars = chars_before + turn.chars();
        let est = (chars as f64 / cpt).ceil() as u64;
        if est + u64::from(spec.num_predict) > budget {
            if in_conversation == 0 {
                unfit_in_row += 1;
                if unfit_in_row > 20 {
                    return Err(format!(
                        "no turn of the {} workload fits the history budget of {budget} tokens (target_fill {} × num_ctx {}) with num_predict {}",
                        spec.workload.label(),
                        spec.target_fill,
                        spec.num_ctx,
                        spec.num_predict
                    ));
                }
            } else {
                ran.conversations_completed += 1;
                progress(
                    spec,
                    &format!(
                        "conversation {conversation} reached its budget ({est} of {budget} tokens with the next turn): a new one starts"
                    ),
                );
            }
            history.clear();
            continue;
        }
        unfit_in_row = 0;
        let kept = history.len();
        history.extend(turn.messages.iter().cloned());
        in_conversation += 1;
        let index = ran.turns.len() as u32 + 1;
        let plan = TrialPlan {
            index: index - 1,
            kind: TrialKind::Measured,
            prompt_chars: chars,
            intended_tokens: u32::try_from(est).unwrap_or(u32::MAX),
            num_predict: spec.num_predict,
        };
        let idle = server_idle(monitor).await;
        let mark = monitor.guard_mark();
        let at_s = t0.elapsed().as_secs_f64();
        let req = ChatRequest {
            model: spec.model.clone(),
            messages: history.clone(),
            params: request(spec, cfg, think_false, spec.num_predict),
        };
        let outcome = client.chat(&req, |_| {}).await;
        let during = mark.as_ref().and_then(|m| monitor.cpu_since(m));
        let (mut trial, answer, failure, prompt_eval_s) = match &outcome {
            Ok(c) => {
                let answer: String = c.events.iter().map(|e| e.content.as_str()).collect();
                let failure = answer.trim().is_empty().then(|| "empty answer".to_string());
                (
                    measure::figures(&plan, c),
                    answer,
                    failure,
                    c.metrics.prompt_eval_duration.map(|ns| ns as f64 / 1e9),
                )
            }
            Err(e) => (
                measure::from_error(&plan, e),
                String::new(),
                Some(e.to_string()),
                None,
            ),
        };
        measure::check_runner(&mut trial, runner_at_load, monitor.runner_pid());
        monitor::check_trial_cpu(
            &mut trial,
            index,
            idle.as_ref(),
            during.as_ref(),
            cfg.busy_cpu_pct,
            spec.num_thread,
        );
        trial.rss_after_bytes = monitor.current_memory().map(|m| m.rss_bytes);
        let success = failure.is_none();
        let correct = success.then(|| turn.expected.matches(&answer));
        let rec = TurnRecord {
            turn: index,
            conversation,
            turn_in_conversation: in_conversation,
            label: turn.label.clone(),
            at_s,
            messages: history.len() as u32,
            history_chars: chars,
            new_chars: turn.chars(),
            chars_per_token: cpt,
            history_tokens_est: est,
            prompt_eval_s,
            server_cpu_pct: during.map(|u| u.server_core_pct),
            success,
            failure: failure.clone(),
            expected: turn.expected.clone(),
            answer: answer.chars().take(ANSWER_KEPT_CHARS).collect(),
            correct,
            trial,
            uncached_reference: false,
            reference_prefill_tps: None,
            processed_share: None,
            prefix_tokens: None,
            cache_reuse: None,
            cache: None,
            truncation: None,
        };
        ran.turns.push(rec);
        analysis::derive(&mut ran.turns);
        let rec = ran.turns.last().expect("just pushed");
        let line = turn_line(rec, &ran.turns);
        progress(spec, &line);
        crate::progress::step(rec.turn, None, &line);
        if success {
            failures_in_row = 0;
            if let Some(n) = rec.prompt_tokens()
                && rec.truncation.is_none()
                && let Some(c) = crate::workload::calibrate(chars, n)
            {
                cpt = c;
                ran.meta.chars_per_token = Some(c);
            }
            history.push(Message::new("assistant", answer));
        } else {
            // The client drops a failed turn and goes on with the next.
            history.truncate(kept);
            failures_in_row += 1;
            if matches!(outcome, Err(BackendError::Unreachable { .. })) {
                return Err(format!("turn {index}: {}", failure.unwrap_or_default()));
            }
            if failures_in_row >= MAX_CONSECUTIVE_FAILURES {
                progress(
                    spec,
                    &format!("{failures_in_row} turns failed in a row: stopping the session"),
                );
                break SessionStop::Failures;
            }
        }
        if spec.think_s > 0.0 {
            let left = duration.saturating_sub(t0.elapsed());
            tokio::time::sleep(Duration::from_secs_f64(spec.think_s).min(left)).await;
        }
    };
    Ok(())
}

fn turn_line(t: &TurnRecord, all: &[TurnRecord]) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |x| format!("{x:.d$}"));
    let answered = all.iter().filter(|t| t.correct.is_some()).count();
    let correct = all.iter().filter(|t| t.correct == Some(true)).count();
    let cache = match (t.cache, t.cache_reuse) {
        (Some(l), Some(r)) => format!("{} (reuse {r:.2})", l.label()),
        _ if t.uncached_reference => "uncached (reference)".to_string(),
        _ => "–".to_string(),
    };
    let mut line = format!(
        "turn {} (conversation {} #{}): history {} tokens ({} sent, {} chars), ttft {} s, decode {} tok/s, cache {cache}, {}, accuracy {correct}/{answered}",
        t.turn,
        t.conversation,
        t.turn_in_conversation,
        t.prompt_tokens().map_or("–".into(), |n| n.to_string()),
        t.history_tokens_est,
        t.history_chars,
        f(t.trial.ttft_s, 2),
        f(t.trial.decode_tps, 1),
        match (t.success, t.correct) {
            (false, _) => format!("FAILED: {}", t.failure.as_deref().unwrap_or("")),
            (true, Some(true)) => "correct".to_string(),
            _ => format!("wrong (expected {})", t.expected.alternatives.join(" | ")),
        },
    );
    if let Some(tr) = &t.truncation {
        line.push_str(&format!(" — {}", tr.describe()));
    }
    if !t.trial.valid && t.success {
        line.push_str(&format!(
            " — figures invalid: {}",
            t.trial.invalid_reasons.join("; ")
        ));
    }
    line
}
