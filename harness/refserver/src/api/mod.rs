//! Ollama's native HTTP API on top of the scheduler and llama-server runners.
//!
//! - `routes`: the router, the request log line and the endpoint handlers;
//! - `options`: the request `options`, and the load options and sampling parameters they become;
//! - `job`: one generate or chat request, from the lease on a runner to the completion;
//! - `history`: cutting a chat history that outgrows `num_ctx`, as Ollama does;
//! - `llama`: the HTTP calls to a llama-server runner and the events of its SSE stream;
//! - `stream`: the NDJSON reply lines, streamed or as one object;
//! - `error`: the `{"error": …}` replies.

mod error;
mod history;
mod job;
mod llama;
mod options;
mod routes;
mod stream;

use std::sync::Arc;

use axum::response::Response;

use crate::models::Registry;
use crate::sched::Scheduler;

pub use routes::router;

/// What `/api/version` reports: Ollama 0.33.0 semantics (llama-server runners, v0.30.1+ metrics).
pub const VERSION: &str = "0.33.0-o3ref.1";

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub sched: Arc<Scheduler>,
    pub http: reqwest::Client,
}

/// The model name a handler worked on, for the request log line.
#[derive(Clone)]
struct ModelTag(String);

/// `r` with the model name the request log line shows.
fn with_model(mut r: Response, model: &str) -> Response {
    r.extensions_mut().insert(ModelTag(model.to_string()));
    r
}
