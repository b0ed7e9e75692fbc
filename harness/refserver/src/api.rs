//! Ollama's native HTTP API on top of the scheduler and llama-server runners.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::keepalive::KeepAlive;
use crate::log;
use crate::models::{ModelEntry, Registry};
use crate::runner::LoadOpts;
use crate::sched::{Lease, Scheduler};
use crate::util::rfc3339;

/// What `/api/version` reports: Ollama 0.33.0 semantics (llama-server runners, v0.30.1+ metrics).
pub const VERSION: &str = "0.33.0-o3ref.1";

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub sched: Arc<Scheduler>,
    pub http: reqwest::Client,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .layer(axum::middleware::from_fn(log_requests))
        .with_state(state)
}

/// The model name a handler worked on, for the request log line.
#[derive(Clone)]
struct ModelTag(String);

async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    let model = resp
        .extensions()
        .get::<ModelTag>()
        .map(|m| m.0.clone())
        .unwrap_or_else(|| "-".into());
    let streamed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    log!(
        "INFO",
        "{method} {path} model={model} status={} {}={:.1}ms",
        resp.status().as_u16(),
        if streamed { "first_chunk" } else { "duration" },
        t.elapsed().as_secs_f64() * 1e3
    );
    resp
}

// ------------------------------------------------------------------------------------------ errors

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    model: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            model: None,
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    fn not_found(model: &str) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, format!("model '{model}' not found"))
    }
    fn for_model(mut self, model: &str) -> ApiError {
        self.model = Some(model.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(m) = self.model {
            r.extensions_mut().insert(ModelTag(m));
        }
        r
    }
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(e.to_string()))
}

fn json_response(status: StatusCode, v: &impl Serialize, model: &str) -> Response {
    let mut r = (status, axum::Json(v)).into_response();
    r.extensions_mut().insert(ModelTag(model.to_string()));
    r
}

// ------------------------------------------------------------------------------- small endpoints

async fn version() -> Response {
    axum::Json(json!({ "version": VERSION })).into_response()
}

#[derive(Serialize)]
struct ModelList<T> {
    models: Vec<T>,
}

/// `/api/tags` entry, in Ollama's field order.
#[derive(Serialize)]
struct TagModel<'a> {
    name: &'a str,
    model: &'a str,
    modified_at: String,
    size: u64,
    digest: &'a str,
    details: &'a crate::models::Details,
}

/// `/api/ps` entry, in Ollama's field order.
#[derive(Serialize)]
struct PsModel<'a> {
    name: &'a str,
    model: &'a str,
    size: u64,
    digest: &'a str,
    details: &'a crate::models::Details,
    expires_at: String,
    size_vram: u64,
    context_length: u32,
}

async fn tags(State(st): State<AppState>) -> Response {
    let models: Vec<TagModel> = st
        .registry
        .models
        .iter()
        .map(|m| TagModel {
            name: &m.name,
            model: &m.name,
            modified_at: rfc3339(m.modified),
            size: m.size,
            digest: &m.digest,
            details: &m.details,
        })
        .collect();
    axum::Json(ModelList { models }).into_response()
}

async fn ps(State(st): State<AppState>) -> Response {
    let loaded = st.sched.loaded();
    let models: Vec<PsModel> = loaded
        .iter()
        .map(|l| PsModel {
            name: &l.model.name,
            model: &l.model.name,
            size: l.runner.memory_size(),
            digest: &l.model.digest,
            details: &l.model.details,
            expires_at: rfc3339(l.expires_at()),
            size_vram: 0,
            context_length: l.opts.num_ctx,
        })
        .collect();
    axum::Json(ModelList { models }).into_response()
}

#[derive(Deserialize)]
struct ShowRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    verbose: bool,
}

async fn show(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ShowRequest = parse_body(&body)?;
    let name = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    if name.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    let m = st
        .registry
        .find(&name)
        .ok_or_else(|| ApiError::not_found(&name).for_model(&name))?;
    let template = m
        .chat_template
        .clone()
        .unwrap_or_else(|| "{{ .Prompt }}".to_string());
    let modelfile = format!(
        "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n",
        m.name,
        m.path.display(),
        template
    );
    let body = json!({
        "modelfile": modelfile,
        "parameters": "",
        "template": template,
        "details": m.details,
        "model_info": m.model_info(req.verbose),
        "capabilities": ["completion"],
        "modified_at": rfc3339(m.modified),
    });
    Ok(json_response(StatusCode::OK, &body, &name))
}

// ------------------------------------------------------------------------------------- options

/// The request `options` this server understands.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReqOptions {
    pub num_ctx: Option<i64>,
    pub num_batch: Option<i64>,
    pub num_thread: Option<i64>,
    pub num_predict: Option<i64>,
    pub num_keep: Option<i64>,
    pub seed: Option<i64>,
    pub top_k: Option<i64>,
    pub repeat_last_n: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub typical_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub stop: Option<Vec<String>>,
}

/// Parse `options` like Ollama's `FromMap`: wrong types are an error (HTTP 500 in Ollama),
/// unknown keys only a WARN.
pub fn parse_options(map: Option<&serde_json::Map<String, Value>>) -> Result<ReqOptions, String> {
    let mut o = ReqOptions::default();
    let Some(map) = map else { return Ok(o) };
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        let int = || {
            v.as_f64()
                .map(|f| f as i64)
                .ok_or_else(|| format!("option \"{k}\" must be of type integer"))
        };
        let float = || {
            v.as_f64()
                .ok_or_else(|| format!("option \"{k}\" must be of type float32"))
        };
        match k.as_str() {
            "num_ctx" => o.num_ctx = Some(int()?),
            "num_batch" => o.num_batch = Some(int()?),
            "num_thread" => o.num_thread = Some(int()?),
            "num_predict" => o.num_predict = Some(int()?),
            "num_keep" => o.num_keep = Some(int()?),
            "seed" => o.seed = Some(int()?),
            "top_k" => o.top_k = Some(int()?),
            "repeat_last_n" => o.repeat_last_n = Some(int()?),
            "temperature" => o.temperature = Some(float()?),
            "top_p" => o.top_p = Some(float()?),
            "min_p" => o.min_p = Some(float()?),
            "typical_p" => o.typical_p = Some(float()?),
            "repeat_penalty" => o.repeat_penalty = Some(float()?),
            "presence_penalty" => o.presence_penalty = Some(float()?),
            "frequency_penalty" => o.frequency_penalty = Some(float()?),
            "stop" => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| format!("option \"{k}\" must be of type array"))?;
                let mut stops = Vec::new();
                for s in arr {
                    stops.push(
                        s.as_str()
                            .ok_or_else(|| {
                                format!("option \"{k}\" must be of type array of strings")
                            })?
                            .to_string(),
                    );
                }
                o.stop = Some(stops);
            }
            // Load-time options Ollama accepts that have no effect on a CPU llama-server here.
            "num_gpu" | "main_gpu" | "draft_num_predict" => {
                int()?;
            }
            "use_mmap" => {
                if !v.is_boolean() {
                    return Err(format!("option \"{k}\" must be of type boolean"));
                }
            }
            _ => log!("WARN", "invalid option provided option={k}"),
        }
    }
    Ok(o)
}

/// Ollama v0.30+: `num_predict < 0` (unbounded) is capped at 10 × num_ctx.
pub fn bounded_num_predict(num_predict: Option<i64>, num_ctx: u32) -> i64 {
    match num_predict {
        Some(n) if n >= 0 => n,
        _ => 10 * num_ctx as i64,
    }
}

/// Ollama v0.30+ prompt truncation (`completionPromptForRequest`): when the prompt has more than
/// `num_ctx - 1` tokens, keep the first `keep` tokens (num_keep, +1 when the tokenizer added a BOS)
/// and the tail, for a total of `num_ctx - (num_ctx - keep) / 2`. `None` = fits, unchanged.
pub fn truncate_tokens(tokens: &[i64], num_ctx: usize, keep: usize) -> Option<Vec<i64>> {
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

// ---------------------------------------------------------------------------- generate and chat

#[derive(Deserialize)]
struct GenerateRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    context: Option<Vec<i64>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    keep_alive: Value,
    #[serde(default)]
    options: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    think: Value,
    #[serde(default)]
    truncate: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Value,
    #[serde(default)]
    options: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    think: Value,
    #[serde(default)]
    truncate: Option<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Generate,
    Chat,
}

enum PromptSource {
    /// Sent verbatim (`raw: true`).
    Raw(String),
    /// Rendered with the model's chat template by llama-server's `/apply-template`.
    Messages(Vec<ChatMessage>),
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, Default, Clone, Copy)]
struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    eval_duration: u64,
}

#[derive(Serialize)]
struct OutLine<'a> {
    model: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<OutMessage<'a>>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(flatten)]
    metrics: Metrics,
}

fn out_line<'a>(
    kind: Kind,
    model: &'a str,
    text: &'a str,
    done: bool,
    done_reason: Option<&'a str>,
    metrics: Metrics,
) -> OutLine<'a> {
    OutLine {
        model,
        created_at: rfc3339(SystemTime::now()),
        response: (kind == Kind::Generate).then_some(text),
        message: (kind == Kind::Chat).then_some(OutMessage {
            role: "assistant",
            content: text,
        }),
        done,
        done_reason,
        metrics,
    }
}

fn ndjson(v: &impl Serialize) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

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

struct Job {
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

async fn generate(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let req: GenerateRequest = parse_body(&body)?;
    if req.model.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    let name = req.model.clone();
    let tag = |e: ApiError| e.for_model(&name);
    let entry = st
        .registry
        .find(&req.model)
        .ok_or_else(|| tag(ApiError::not_found(&req.model)))?;
    if req.raw
        && (req.template.as_deref().is_some_and(|s| !s.is_empty())
            || req.system.as_deref().is_some_and(|s| !s.is_empty())
            || req.context.as_ref().is_some_and(|c| !c.is_empty()))
    {
        return Err(tag(ApiError::bad(
            "raw mode does not support template, system, or context",
        )));
    }
    check_think(&req.model, &req.think).map_err(tag)?;
    let keep_alive = KeepAlive::from_json(&req.keep_alive).map_err(|e| tag(ApiError::bad(e)))?;
    let opts = parse_options(req.options.as_ref()).map_err(|e| tag(ApiError::internal(e)))?;
    let job = Job {
        kind: Kind::Generate,
        t0,
        req_model: req.model.clone(),
        entry,
        opts,
        keep_alive,
        stream: req.stream.unwrap_or(true),
        truncate: req.truncate.unwrap_or(true),
    };
    if req.prompt.is_empty() {
        return load_or_unload(&st, job).await.map_err(tag);
    }
    let source = if req.raw {
        PromptSource::Raw(req.prompt)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = req.system.filter(|s| !s.is_empty()) {
            msgs.push(ChatMessage {
                role: "system".into(),
                content: s,
            });
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: req.prompt,
        });
        PromptSource::Messages(msgs)
    };
    run_job(&st, job, source).await.map_err(tag)
}

async fn chat(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let req: ChatRequest = parse_body(&body)?;
    if req.model.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    let name = req.model.clone();
    let tag = |e: ApiError| e.for_model(&name);
    let entry = st
        .registry
        .find(&req.model)
        .ok_or_else(|| tag(ApiError::not_found(&req.model)))?;
    check_think(&req.model, &req.think).map_err(tag)?;
    let keep_alive = KeepAlive::from_json(&req.keep_alive).map_err(|e| tag(ApiError::bad(e)))?;
    let opts = parse_options(req.options.as_ref()).map_err(|e| tag(ApiError::internal(e)))?;
    let job = Job {
        kind: Kind::Chat,
        t0,
        req_model: req.model.clone(),
        entry,
        opts,
        keep_alive,
        stream: req.stream.unwrap_or(true),
        truncate: req.truncate.unwrap_or(true),
    };
    if req.messages.is_empty() {
        return load_or_unload(&st, job).await.map_err(tag);
    }
    run_job(&st, job, PromptSource::Messages(req.messages))
        .await
        .map_err(tag)
}

fn load_opts(job: &Job) -> LoadOpts {
    LoadOpts::resolve(
        job.opts.num_ctx,
        job.opts.num_batch,
        job.opts.num_thread,
        job.entry.trained_ctx,
    )
}

/// Empty prompt / messages: `keep_alive: 0` unloads, anything else loads.
async fn load_or_unload(st: &AppState, job: Job) -> Result<Response, ApiError> {
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
        return Ok(json_response(StatusCode::OK, &line, &job.req_model));
    }
    let lease = st
        .sched
        .acquire(&job.entry, load_opts(&job), job.keep_alive)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let load_duration = lease.handed_over.duration_since(job.t0);
    drop(lease);
    let metrics = Metrics {
        total_duration: job.t0.elapsed().as_nanos() as u64,
        load_duration: (load_duration.as_nanos() as u64).max(1),
        ..Metrics::default()
    };
    let line = out_line(job.kind, &job.req_model, "", true, Some("load"), metrics);
    Ok(json_response(StatusCode::OK, &line, &job.req_model))
}

/// Error text from a llama-server error body (`{"error":{"message":…}}`), else the raw body.
fn runner_error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string())
}

async fn runner_post(
    http: &reqwest::Client,
    lease: &Lease,
    path: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let url = format!("{}{path}", lease.loaded.runner.base_url);
    let resp = match http
        .post(&url)
        .timeout(Duration::from_secs(300))
        .json(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let why = lease
                .loaded
                .runner
                .failure_reason(format!("{path}: {e}"))
                .await;
            return Err(ApiError::internal(why));
        }
    };
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("{path}: {e}")))?;
    if !status.is_success() {
        return Err(ApiError::new(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            runner_error_text(&text),
        ));
    }
    serde_json::from_str(&text).map_err(|e| ApiError::internal(format!("{path}: bad JSON: {e}")))
}

async fn tokenize(
    http: &reqwest::Client,
    lease: &Lease,
    text: &str,
    add_special: bool,
) -> Result<Vec<i64>, ApiError> {
    let v = runner_post(
        http,
        lease,
        "/tokenize",
        &json!({"content": text, "add_special": add_special, "parse_special": true}),
    )
    .await?;
    v.get("tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .ok_or_else(|| ApiError::internal("/tokenize: no tokens in reply"))
}

/// Splits llama-server's SSE byte stream into the JSON objects of its `data:` lines.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Value, String>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim_start();
                if data == "[DONE]" {
                    continue;
                }
                out.push(
                    serde_json::from_str(data).map_err(|e| format!("bad event from runner: {e}")),
                );
            }
        }
        out
    }
}

/// One decoded runner event.
enum Event {
    Piece(String),
    Final { content: String, data: Value },
    Error(String),
}

fn classify(v: Value) -> Event {
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        return Event::Error(msg);
    }
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if v.get("stop").and_then(Value::as_bool) == Some(true) {
        Event::Final { content, data: v }
    } else {
        Event::Piece(content)
    }
}

/// Streams runner events out of the SSE response.
struct EventStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    pending: std::collections::VecDeque<Result<Value, String>>,
}

impl EventStream {
    /// `None` at the end of the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(match item {
                    Ok(v) => classify(v),
                    Err(e) => Event::Error(e),
                });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.pending.extend(self.parser.push(&chunk)),
                Some(Err(e)) => return Some(Event::Error(format!("reading from runner: {e}"))),
                None => return None,
            }
        }
    }
}

fn final_metrics(data: &Value, t0: Instant, load: Duration) -> (Metrics, &'static str) {
    let t = data.get("timings").cloned().unwrap_or(Value::Null);
    let n = |k: &str| t.get(k).and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
    let ms_to_ns = |ms: f64| (ms * 1e6).round() as u64;
    let reason = if data.get("stop_type").and_then(Value::as_str) == Some("limit") {
        "length"
    } else {
        "stop"
    };
    (
        Metrics {
            total_duration: t0.elapsed().as_nanos() as u64,
            load_duration: (load.as_nanos() as u64).max(1),
            prompt_eval_count: (n("cache_n") + n("prompt_n")) as u64,
            prompt_eval_duration: ms_to_ns(n("prompt_ms")),
            eval_count: n("predicted_n") as u64,
            eval_duration: ms_to_ns(n("predicted_ms")),
        },
        reason,
    )
}

fn mid_stream_error(why: &str) -> Bytes {
    ndjson(&json!({
        "error": format!("an error was encountered while running the model: {why}")
    }))
}

async fn run_job(st: &AppState, job: Job, source: PromptSource) -> Result<Response, ApiError> {
    let lopts = load_opts(&job);
    let lease = st
        .sched
        .acquire(&job.entry, lopts, job.keep_alive)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let load_duration = lease.handed_over.duration_since(job.t0);
    let http = &st.http;

    let prompt = match source {
        PromptSource::Raw(p) => p,
        PromptSource::Messages(msgs) => {
            match runner_post(
                http,
                &lease,
                "/apply-template",
                &json!({ "messages": msgs }),
            )
            .await
            {
                Ok(v) => v
                    .get("prompt")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::internal("/apply-template: no prompt in reply"))?,
                Err(e) => {
                    if !lease.loaded.runner.alive() {
                        return Err(e);
                    }
                    log!(
                        "WARN",
                        "chat template failed for {} ({}); sending the messages' text as is",
                        job.entry.name,
                        e.message
                    );
                    msgs.iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }
        }
    };

    let num_ctx = lopts.num_ctx as usize;
    let mut tokens = tokenize(http, &lease, &prompt, true).await?;
    if tokens.len() >= num_ctx {
        if !job.truncate {
            return Err(ApiError::bad("the input length exceeds the context length"));
        }
        let without_special = tokenize(http, &lease, &prompt, false).await?;
        let bos = usize::from(tokens.len() > without_special.len());
        let keep = job.opts.num_keep.unwrap_or(4).max(0) as usize + bos;
        if let Some(t) = truncate_tokens(&tokens, num_ctx, keep) {
            log!(
                "WARN",
                "truncating input prompt limit={num_ctx} prompt={} keep={keep} new={}",
                tokens.len(),
                t.len()
            );
            tokens = t;
        }
    }

    let o = &job.opts;
    let mut body = json!({
        "prompt": tokens,
        "stream": true,
        "cache_prompt": true,
        "return_tokens": false,
        "n_predict": bounded_num_predict(o.num_predict, lopts.num_ctx),
        "temperature": o.temperature.unwrap_or(0.8),
        "top_k": o.top_k.unwrap_or(40),
        "top_p": o.top_p.unwrap_or(0.9),
        "min_p": o.min_p.unwrap_or(0.0),
        "typical_p": o.typical_p.unwrap_or(1.0),
        "repeat_last_n": o.repeat_last_n.unwrap_or(64),
        "repeat_penalty": o.repeat_penalty.unwrap_or(1.0),
        "presence_penalty": o.presence_penalty.unwrap_or(0.0),
        "frequency_penalty": o.frequency_penalty.unwrap_or(0.0),
    });
    if let Some(seed) = o.seed.filter(|s| *s >= 0) {
        body["seed"] = json!(seed);
    }
    if let Some(stop) = &o.stop {
        body["stop"] = json!(stop);
    }

    let url = format!("{}/completion", lease.loaded.runner.base_url);
    let resp = match http.post(&url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => {
            let why = lease
                .loaded
                .runner
                .failure_reason(format!("/completion: {e}"))
                .await;
            return Err(ApiError::internal(why));
        }
    };
    if !resp.status().is_success() {
        let status = StatusCode::from_u16(resp.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let text = resp.text().await.unwrap_or_default();
        return Err(ApiError::new(status, runner_error_text(&text)));
    }
    let mut events = EventStream {
        body: resp.bytes_stream().boxed(),
        parser: SseParser::default(),
        pending: Default::default(),
    };

    let model = job.req_model.clone();
    let kind = job.kind;
    let t0 = job.t0;
    if !job.stream {
        let mut text = String::new();
        loop {
            match events.next().await {
                Some(Event::Piece(p)) => text.push_str(&p),
                Some(Event::Final { content, data }) => {
                    text.push_str(&content);
                    let (metrics, reason) = final_metrics(&data, t0, load_duration);
                    let line = out_line(kind, &model, &text, true, Some(reason), metrics);
                    drop(lease);
                    return Ok(json_response(StatusCode::OK, &line, &model));
                }
                Some(Event::Error(e)) => {
                    return Err(ApiError::internal(
                        lease.loaded.runner.failure_reason(e).await,
                    ));
                }
                None => {
                    return Err(ApiError::internal(
                        lease
                            .loaded
                            .runner
                            .failure_reason(
                                "runner closed the stream without a final result".into(),
                            )
                            .await,
                    ));
                }
            }
        }
    }

    // Streaming: nothing is sent (not even headers) until the first object exists.
    let first: Bytes = loop {
        match events.next().await {
            Some(Event::Piece(p)) if p.is_empty() => continue,
            Some(Event::Piece(p)) => {
                break ndjson(&out_line(kind, &model, &p, false, None, Metrics::default()));
            }
            Some(Event::Final { content, data }) => {
                let (metrics, reason) = final_metrics(&data, t0, load_duration);
                let mut b = Vec::new();
                if !content.is_empty() {
                    b.extend_from_slice(&ndjson(&out_line(
                        kind,
                        &model,
                        &content,
                        false,
                        None,
                        Metrics::default(),
                    )));
                }
                b.extend_from_slice(&ndjson(&out_line(
                    kind,
                    &model,
                    "",
                    true,
                    Some(reason),
                    metrics,
                )));
                let line = Bytes::from(b);
                drop(lease);
                return Ok(ndjson_response(
                    futures_util::stream::once(async move { Ok::<_, Infallible>(line) }).boxed(),
                    &model,
                ));
            }
            Some(Event::Error(e)) => {
                return Err(ApiError::internal(
                    lease.loaded.runner.failure_reason(e).await,
                ));
            }
            None => {
                return Err(ApiError::internal(
                    lease
                        .loaded
                        .runner
                        .failure_reason("runner closed the stream before the first token".into())
                        .await,
                ));
            }
        }
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let _ = tx.send(first).await;
    let model_for_task = model.clone();
    tokio::spawn(async move {
        let model = model_for_task;
        loop {
            let out = match events.next().await {
                Some(Event::Piece(p)) if p.is_empty() => continue,
                Some(Event::Piece(p)) => {
                    ndjson(&out_line(kind, &model, &p, false, None, Metrics::default()))
                }
                Some(Event::Final { content, data }) => {
                    if !content.is_empty() {
                        let l = out_line(kind, &model, &content, false, None, Metrics::default());
                        if tx.send(ndjson(&l)).await.is_err() {
                            break;
                        }
                    }
                    let (metrics, reason) = final_metrics(&data, t0, load_duration);
                    let l = out_line(kind, &model, "", true, Some(reason), metrics);
                    let _ = tx.send(ndjson(&l)).await;
                    log!(
                        "INFO",
                        "stream done model={model} done_reason={reason} prompt_eval_count={} eval_count={} total={:.1}ms",
                        metrics.prompt_eval_count,
                        metrics.eval_count,
                        metrics.total_duration as f64 / 1e6
                    );
                    break;
                }
                Some(Event::Error(e)) => {
                    let why = lease.loaded.runner.failure_reason(e).await;
                    log!("ERROR", "stream failed model={model}: {why}");
                    let _ = tx.send(mid_stream_error(&why)).await;
                    break;
                }
                None => {
                    let why = lease
                        .loaded
                        .runner
                        .failure_reason("runner closed the stream unexpectedly".into())
                        .await;
                    log!("ERROR", "stream failed model={model}: {why}");
                    let _ = tx.send(mid_stream_error(&why)).await;
                    break;
                }
            };
            if tx.send(out).await.is_err() {
                log!(
                    "INFO",
                    "client went away model={model}; stopping generation"
                );
                break;
            }
        }
        drop(events);
        drop(lease);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    })
    .boxed();
    Ok(ndjson_response(body, &model))
}

fn ndjson_response(
    body: futures_util::stream::BoxStream<'static, Result<Bytes, Infallible>>,
    model: &str,
) -> Response {
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.extensions_mut().insert(ModelTag(model.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn num_predict_bound() {
        assert_eq!(bounded_num_predict(None, 2048), 20_480);
        assert_eq!(bounded_num_predict(Some(-1), 4096), 40_960);
        assert_eq!(bounded_num_predict(Some(16), 4096), 16);
    }

    #[test]
    fn options_types() {
        let m = json!({"num_ctx": 2048.0, "temperature": 0, "stop": ["a"], "bogus": 1});
        let o = parse_options(m.as_object()).unwrap();
        assert_eq!(o.num_ctx, Some(2048));
        assert_eq!(o.temperature, Some(0.0));
        assert_eq!(o.stop, Some(vec!["a".to_string()]));
        let m = json!({"num_ctx": "2048"});
        assert_eq!(
            parse_options(m.as_object()).unwrap_err(),
            "option \"num_ctx\" must be of type integer"
        );
    }

    #[test]
    fn sse_parsing() {
        let mut p = SseParser::default();
        let a = p.push(b"data: {\"content\":\"He\",\"stop\":false}\n\ndata: {\"con");
        assert_eq!(a.len(), 1);
        let b = p.push(b"tent\":\"llo\",\"stop\":false}\n\n");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].as_ref().unwrap()["content"], "llo");
        let c = p.push(b"data: {\"error\":{\"code\":500,\"message\":\"boom\"}}\n\n");
        match classify(c.into_iter().next().unwrap().unwrap()) {
            Event::Error(m) => assert_eq!(m, "boom"),
            _ => panic!("expected an error"),
        }
        let d = p.push(
            b"data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\",\"timings\":{\"cache_n\":3,\"prompt_n\":7,\"prompt_ms\":1.5,\"predicted_n\":16,\"predicted_ms\":100.25}}\n\n",
        );
        match classify(d.into_iter().next().unwrap().unwrap()) {
            Event::Final { data, .. } => {
                let (m, reason) = final_metrics(&data, Instant::now(), Duration::from_micros(5));
                assert_eq!(reason, "length");
                assert_eq!(m.prompt_eval_count, 10);
                assert_eq!(m.prompt_eval_duration, 1_500_000);
                assert_eq!(m.eval_count, 16);
                assert_eq!(m.eval_duration, 100_250_000);
                assert_eq!(m.load_duration, 5_000);
            }
            _ => panic!("expected the final event"),
        }
    }

    #[test]
    fn line_shapes() {
        let g = serde_json::to_string(&out_line(
            Kind::Generate,
            "m",
            "hi",
            false,
            None,
            Metrics::default(),
        ))
        .unwrap();
        assert!(g.starts_with("{\"model\":\"m\",\"created_at\":\""), "{g}");
        assert!(g.ends_with("\"response\":\"hi\",\"done\":false}"), "{g}");
        let c = serde_json::to_string(&out_line(
            Kind::Chat,
            "m",
            "",
            true,
            Some("stop"),
            Metrics {
                eval_count: 3,
                ..Metrics::default()
            },
        ))
        .unwrap();
        assert!(
            c.ends_with(
                "\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"eval_count\":3}"
            ),
            "{c}"
        );
    }

    #[test]
    fn think_values() {
        assert!(check_think("m", &Value::Null).is_ok());
        assert!(check_think("m", &json!(false)).is_ok());
        let e = check_think("m", &json!(true)).unwrap_err();
        assert_eq!(e.message, "\"m\" does not support thinking");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
