//! One generate or chat request on a runner: a load or unload only, or a completion (lease the
//! runner, render the prompt, fit it to the context, start the completion, reply).

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::history;
use super::llama::{self, Completion};
use super::options::{ReqOptions, parse_options};
use super::stream::{self, Kind, Metrics, Reply, json_response, load_nanos, out_line};
use crate::keepalive::KeepAlive;
use crate::log;
use crate::models::ModelEntry;
use crate::runner::LoadOpts;
use crate::sched::Lease;
use crate::template::{ChatMessage, Template};

pub(super) enum PromptSource {
    /// Sent verbatim (`raw: true`).
    Raw(String),
    /// A generate request's system and prompt, rendered with the model's template.
    Generate(Vec<ChatMessage>),
    /// A chat request's messages: cut as Ollama cuts history when they outgrow `num_ctx`
    /// (unless `truncate: false`), then rendered with the model's template.
    Chat(Vec<ChatMessage>),
}

/// The fields generate and chat requests share, as the client sent them.
pub(super) struct JobFields<'a> {
    pub(super) model: &'a str,
    pub(super) think: &'a Value,
    pub(super) keep_alive: &'a Value,
    pub(super) options: Option<&'a serde_json::Map<String, Value>>,
    pub(super) stream: Option<bool>,
    pub(super) truncate: Option<bool>,
}

pub(super) struct Job {
    kind: Kind,
    t0: Instant,
    /// The name as the client sent it (echoed back, as Ollama does).
    req_model: String,
    entry: Arc<ModelEntry>,
    opts: ReqOptions,
    keep_alive: Option<KeepAlive>,
    stream: bool,
    truncate: bool,
}

/// `think` must be absent or false: these models do not think.
fn check_think(model: &str, think: &Value) -> Result<(), ApiError> {
    match think {
        Value::Null | Value::Bool(false) => Ok(()),
        Value::Bool(true) => Err(ApiError::bad(format!(
            "\"{model}\" does not support thinking"
        ))),
        Value::String(s) if ["low", "medium", "high", "max"].contains(&s.as_str()) => Err(
            ApiError::bad(format!("\"{model}\" does not support thinking")),
        ),
        other => Err(ApiError::bad(format!(
            "invalid think value: {other} (must be \"low\", \"medium\", \"high\", \"max\", true, or false)"
        ))),
    }
}

impl Job {
    /// Checks `think`, then `keep_alive` (400), then `options` (500, as in Ollama).
    pub(super) fn new(
        kind: Kind,
        t0: Instant,
        entry: Arc<ModelEntry>,
        f: JobFields,
    ) -> Result<Job, ApiError> {
        check_think(f.model, f.think)?;
        let keep_alive = KeepAlive::from_json(f.keep_alive).map_err(ApiError::bad)?;
        let mut opts = parse_options(f.options).map_err(ApiError::internal)?;
        if let Template::Library(m) = entry.template {
            opts = opts.or_model_defaults(&m.defaults);
        }
        Ok(Job {
            kind,
            t0,
            req_model: f.model.to_string(),
            entry,
            opts,
            keep_alive,
            stream: f.stream.unwrap_or(true),
            truncate: f.truncate.unwrap_or(true),
        })
    }

    fn load_opts(&self) -> LoadOpts {
        self.opts.load_opts(self.entry.trained_ctx)
    }

    /// A runner for this job's model and load options, loaded or reloaded as needed.
    async fn acquire(&self, st: &AppState, lopts: LoadOpts) -> Result<Lease, ApiError> {
        st.sched
            .acquire(&self.entry, lopts, self.keep_alive)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn reply(&self, lease: &Lease) -> Reply {
        Reply {
            kind: self.kind,
            model: self.req_model.clone(),
            t0: self.t0,
            load_duration: lease.handed_over.duration_since(self.t0),
        }
    }
}

/// Empty prompt / messages: `keep_alive: 0` unloads, anything else loads.
pub(super) async fn load_or_unload(st: &AppState, job: Job) -> Result<Response, ApiError> {
    if job.keep_alive.is_some_and(|k| k.is_zero()) {
        st.sched.unload(&job.entry.name).await;
        let line = out_line(
            job.kind,
            &job.req_model,
            "",
            true,
            Some("unload"),
            Metrics::default(),
        );
        return Ok(json_response(&line, &job.req_model));
    }
    let lease = job.acquire(st, job.load_opts()).await?;
    let load_duration = lease.handed_over.duration_since(job.t0);
    drop(lease);
    let metrics = Metrics {
        total_duration: job.t0.elapsed().as_nanos() as u64,
        load_duration: load_nanos(load_duration),
        ..Metrics::default()
    };
    let line = out_line(job.kind, &job.req_model, "", true, Some("load"), metrics);
    Ok(json_response(&line, &job.req_model))
}

/// A completion: lease a runner, render and fit the prompt, start the completion, reply.
pub(super) async fn run_job(
    st: &AppState,
    job: Job,
    source: PromptSource,
) -> Result<Response, ApiError> {
    let lopts = job.load_opts();
    let lease = job.acquire(st, lopts).await?;
    let reply = job.reply(&lease);
    let prompt = match source {
        PromptSource::Raw(p) => p,
        PromptSource::Generate(msgs) => render(&st.http, &lease, &job.entry, &msgs).await?,
        PromptSource::Chat(msgs) => {
            let msgs = if job.truncate {
                cut_history(&st.http, &lease, &job.entry, msgs, lopts.num_ctx).await?
            } else {
                msgs
            };
            render(&st.http, &lease, &job.entry, &msgs).await?
        }
    };
    let tokens = fit_to_context(&st.http, &lease, &job, &prompt, lopts.num_ctx).await?;
    let body = job.opts.completion_body(&tokens, lopts.num_ctx);
    let run: Completion = llama::completion(&st.http, lease, &body).await?;
    if job.stream {
        stream::streamed(reply, run).await
    } else {
        stream::gathered(reply, run).await
    }
}

/// The chat messages that fit in `num_ctx`, cut as [`history::Search`] says, counting with the
/// runner's tokenizer. A cut is logged (WARN) with its sizes; the reply is unchanged.
async fn cut_history(
    http: &reqwest::Client,
    lease: &Lease,
    entry: &ModelEntry,
    msgs: Vec<ChatMessage>,
    num_ctx: u32,
) -> Result<Vec<ChatMessage>, ApiError> {
    let total = msgs.len();
    let mut search = history::Search::new(msgs);
    while let Some(candidate) = search.candidate() {
        let prompt = render(http, lease, entry, &candidate).await?;
        if llama::tokenize(http, lease, &prompt, false).await?.len() <= num_ctx as usize {
            break;
        }
        search.too_long();
    }
    let kept = search.finish();
    if kept.dropped > 0 {
        log!(
            "WARN",
            "truncating input messages which exceed context length: model={} num_ctx={num_ctx} \
             messages={total} dropped={} kept={} (system messages kept)",
            entry.name,
            kept.dropped,
            kept.messages.len()
        );
    }
    Ok(kept.messages)
}

/// The prompt for `msgs`: Ollama's library template rendered here, or the GGUF's Jinja template
/// through the runner's `/apply-template`. When that fails on a live runner, the messages' text
/// joined by newlines, with a WARN.
async fn render(
    http: &reqwest::Client,
    lease: &Lease,
    entry: &ModelEntry,
    msgs: &[ChatMessage],
) -> Result<String, ApiError> {
    if let Template::Library(m) = entry.template {
        return Ok(m.render(msgs));
    }
    match llama::post_json(http, lease, "/apply-template", &json!({ "messages": msgs })).await {
        Ok(v) => v
            .get("prompt")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::internal("/apply-template: no prompt in reply")),
        Err(e) if !lease.loaded.runner.alive() => Err(e),
        Err(e) => {
            log!(
                "WARN",
                "chat template failed for {} ({}); sending the messages' text as is",
                entry.name,
                e.message
            );
            Ok(msgs
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

/// The prompt's tokens (with special tokens), truncated as [`truncate_tokens`] says when they do
/// not fit in `num_ctx - 1`; with `truncate: false` that is a 400 instead.
async fn fit_to_context(
    http: &reqwest::Client,
    lease: &Lease,
    job: &Job,
    prompt: &str,
    num_ctx: u32,
) -> Result<Vec<i64>, ApiError> {
    let num_ctx = num_ctx as usize;
    let tokens = llama::tokenize(http, lease, prompt, true).await?;
    if tokens.len() < num_ctx {
        return Ok(tokens);
    }
    if !job.truncate {
        return Err(ApiError::bad("the input length exceeds the context length"));
    }
    let without_special = llama::tokenize(http, lease, prompt, false).await?;
    let bos = usize::from(tokens.len() > without_special.len());
    let keep = job.opts.keep_tokens() + bos;
    let Some(t) = truncate_tokens(&tokens, num_ctx, keep) else {
        return Ok(tokens);
    };
    log!(
        "WARN",
        "truncating input prompt limit={num_ctx} prompt={} keep={keep} new={}",
        tokens.len(),
        t.len()
    );
    Ok(t)
}

/// Ollama v0.30+ prompt truncation (`completionPromptForRequest`): when the prompt has more than
/// `num_ctx - 1` tokens, keep the first `keep` tokens (num_keep, +1 when the tokenizer added a BOS)
/// and the tail, for a total of `num_ctx - (num_ctx - keep) / 2`. `None` = fits, unchanged.
fn truncate_tokens(tokens: &[i64], num_ctx: usize, keep: usize) -> Option<Vec<i64>> {
    if num_ctx == 0 || tokens.len() < num_ctx {
        return None;
    }
    let keep = keep.min(num_ctx.saturating_sub(1));
    let new_len = num_ctx - (num_ctx - keep) / 2;
    let tail = new_len - keep;
    let mut out = Vec::with_capacity(new_len);
    out.extend_from_slice(&tokens[..keep]);
    out.extend_from_slice(&tokens[tokens.len() - tail..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn truncation_arithmetic() {
        let toks: Vec<i64> = (0..10_000).collect();
        // num_ctx 4096, keep 4 → 4096 - (4096-4)/2 = 2050; with a BOS keep 5 → 2051.
        let t = truncate_tokens(&toks, 4096, 4).unwrap();
        assert_eq!(t.len(), 2050);
        assert_eq!(&t[..4], &[0, 1, 2, 3]);
        assert_eq!(*t.last().unwrap(), 9_999);
        assert_eq!(t[4], 10_000 - 2046);
        assert_eq!(truncate_tokens(&toks, 4096, 5).unwrap().len(), 2051);
        assert_eq!(truncate_tokens(&toks, 2048, 4).unwrap().len(), 1026);
        // Fits in num_ctx - 1: unchanged.
        assert!(truncate_tokens(&toks[..4095], 4096, 4).is_none());
        assert_eq!(truncate_tokens(&toks[..4096], 4096, 4).unwrap().len(), 2050);
        // keep larger than the context is clamped.
        assert_eq!(truncate_tokens(&toks, 8, 100).unwrap().len(), 8);
    }

    #[test]
    fn think_values() {
        assert!(check_think("m", &Value::Null).is_ok());
        assert!(check_think("m", &json!(false)).is_ok());
        let e = check_think("m", &json!(true)).unwrap_err();
        assert_eq!(e.message, "\"m\" does not support thinking");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = check_think("m", &json!("high")).unwrap_err();
        assert_eq!(e.message, "\"m\" does not support thinking");
        let e = check_think("m", &json!(1)).unwrap_err();
        assert!(
            e.message.starts_with("invalid think value: 1 "),
            "{}",
            e.message
        );
    }
}
