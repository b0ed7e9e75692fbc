//! The router, the request log line, and the endpoint handlers: each parses and checks its
//! request and hands generate and chat to [`super::job`].

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::job::{Job, JobFields, PromptSource, load_or_unload, run_job};
use super::stream::{Kind, json_response};
use super::{AppState, ModelTag, VERSION};
use crate::log;
use crate::models::ModelEntry;
use crate::template::{ChatMessage, Template};
use crate::util::rfc3339;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .layer(axum::middleware::from_fn(log_requests))
        .with_state(state)
}

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

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(e.to_string()))
}

/// The model a request names: 400 when it names none, 404 (tagged with the name) when it is
/// not in the registry.
fn find_model(st: &AppState, name: &str) -> Result<Arc<ModelEntry>, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    st.registry
        .find(name)
        .ok_or_else(|| ApiError::not_found(name).for_model(name))
}

// ------------------------------------------------------------------------------- small endpoints

#[derive(Deserialize)]
struct EmbedRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Option<Value>,
}

/// What llama-server answers on its embeddings endpoint when it was started without
/// `--embeddings` (status 501), and what Ollama passes on for a model without pooling
/// (ollama/ollama `llm/llama_server.go`: such a model's runner starts without `--embedding`,
/// and `Embedding` returns the runner's status and message; `server/routes.go`
/// `EmbedHandler` replies with them).
pub const NO_EMBEDDINGS: &str =
    "This server does not support embeddings. Start it with `--embeddings`";

/// `POST /api/embed`: the request is checked as Ollama's `EmbedHandler` checks it (missing
/// body, no model, a model not found, an input neither a string nor strings); the reference
/// models are completion models without pooling, so a valid request gets the answer Ollama
/// gives for them: 501 with llama-server's message. Unlike Ollama, the model is not loaded
/// first: the answer would be the same.
async fn embed(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: EmbedRequest = parse_body(&body)?;
    let valid = match &req.input {
        None | Some(Value::String(_)) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    };
    if req.model.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    if !valid {
        return Err(ApiError::bad("invalid input type").for_model(&req.model));
    }
    let m = find_model(&st, &req.model)?;
    Err(ApiError::new(axum::http::StatusCode::NOT_IMPLEMENTED, NO_EMBEDDINGS).for_model(&m.name))
}

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
    let m = find_model(&st, &name)?;
    // Ollama shows the template it renders with, and the Modelfile's PARAMETERs.
    let (template, parameters) = match m.template {
        Template::Library(lib) => (lib.go_template.to_string(), lib.defaults.pairs()),
        Template::Gguf => (
            m.chat_template
                .clone()
                .unwrap_or_else(|| "{{ .Prompt }}".to_string()),
            Vec::new(),
        ),
    };
    let parameter_lines: String = parameters
        .iter()
        .map(|(k, v)| format!("PARAMETER {k} {v}\n"))
        .collect();
    let modelfile = format!(
        "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{parameter_lines}",
        m.name,
        m.path.display(),
        template
    );
    let parameters = match m.template {
        Template::Library(lib) => lib.defaults.show_text(),
        Template::Gguf => String::new(),
    };
    let body = json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": m.details,
        "model_info": m.model_info(req.verbose),
        "capabilities": ["completion"],
        "modified_at": rfc3339(m.modified),
    });
    Ok(json_response(&body, &name))
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

/// The [`JobFields`] of a generate or chat request: both name them alike.
macro_rules! job_fields {
    ($req:expr) => {
        JobFields {
            model: &$req.model,
            think: &$req.think,
            keep_alive: &$req.keep_alive,
            options: $req.options.as_ref(),
            stream: $req.stream,
            truncate: $req.truncate,
        }
    };
}

impl GenerateRequest {
    /// Raw mode sends the prompt as is, so it takes none of what a template would use.
    fn raw_with_template_fields(&self) -> bool {
        self.raw
            && (self.template.as_deref().is_some_and(|s| !s.is_empty())
                || self.system.as_deref().is_some_and(|s| !s.is_empty())
                || self.context.as_ref().is_some_and(|c| !c.is_empty()))
    }
}

async fn generate(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let req: GenerateRequest = parse_body(&body)?;
    let entry = find_model(&st, &req.model)?;
    let tag = |e: ApiError| e.for_model(&req.model);
    if req.raw_with_template_fields() {
        return Err(tag(ApiError::bad(
            "raw mode does not support template, system, or context",
        )));
    }
    let job = Job::new(Kind::Generate, t0, entry, job_fields!(req)).map_err(tag)?;
    if req.prompt.is_empty() {
        return load_or_unload(&st, job).await.map_err(tag);
    }
    let source = if req.raw {
        PromptSource::Raw(req.prompt)
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = req.system.filter(|s| !s.is_empty()) {
            msgs.push(ChatMessage::new("system", &s));
        }
        msgs.push(ChatMessage::new("user", &req.prompt));
        PromptSource::Generate(msgs)
    };
    run_job(&st, job, source).await.map_err(tag)
}

async fn chat(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let req: ChatRequest = parse_body(&body)?;
    let entry = find_model(&st, &req.model)?;
    let tag = |e: ApiError| e.for_model(&req.model);
    let job = Job::new(Kind::Chat, t0, entry, job_fields!(req)).map_err(tag)?;
    if req.messages.is_empty() {
        return load_or_unload(&st, job).await.map_err(tag);
    }
    run_job(&st, job, PromptSource::Chat(req.messages))
        .await
        .map_err(tag)
}
