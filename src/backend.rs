//! Ollama's native API: `/api/version`, `/api/tags`, `/api/show`, `/api/ps`, and streaming
//! `/api/generate`, with a timeout on every wait.
//!
//! Streams are read as NDJSON, line by line as the bytes arrive; each line is stamped with the
//! client clock when its bytes arrived. An `{"error": …}` line inside a 200 stream, or a stream
//! that ends without `done: true`, is an error of its own kind. Reading is linear (only the
//! bytes that just arrived are searched for a newline) and a line longer than
//! [`MAX_LINE_BYTES`] is an error.
//!
//! The small, non-streaming calls (`/api/version`, `/api/tags`, `/api/show`, `/api/ps`, unload)
//! are bounded by the configured timeouts: `O3_CONNECT_TIMEOUT_S` + `O3_CHUNK_GAP_TIMEOUT_S`
//! for the whole request (see [`OllamaClient::info_timeout`]). A 429 or 503 with a
//! `Retry-After` header is retried, at most [`MAX_ATTEMPTS`] attempts in all and within the
//! request's own timeout; every retry is recorded ([`Retried`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;

/// Longest NDJSON line accepted from a stream (1 MiB). Ollama's lines carry one token or a
/// few (a few hundred bytes with the final metrics); a megabyte without a newline is not
/// Ollama's wire format, and reading on would buffer without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Attempts of one request at most, the first included, when the server answers 429 or 503
/// with a `Retry-After`.
pub const MAX_ATTEMPTS: u32 = 3;

/// How much of a body an error quotes (characters).
pub const BODY_QUOTE_CHARS: usize = 200;

/// Retries of one request after 429/503 with `Retry-After`: how many, and how long the client
/// waited in all.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Retried {
    /// Retries (attempts after the first).
    pub retries: u32,
    /// Seconds waited before them, in all.
    pub waited_s: f64,
    /// The last status that was retried (429 or 503).
    pub status: u16,
}

impl Retried {
    /// Counts one more retry after `status`, waiting `wait`, into `retried`.
    fn count(retried: &mut Option<Retried>, status: u16, wait: Duration) {
        let r = retried.get_or_insert_with(Retried::default);
        r.retries += 1;
        r.waited_s += wait.as_secs_f64();
        r.status = status;
    }
}

impl std::fmt::Display for Retried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} retr{} after HTTP {} with Retry-After, {:.1} s waited",
            self.retries,
            if self.retries == 1 { "y" } else { "ies" },
            self.status,
            self.waited_s
        )
    }
}

fn retried_suffix(r: &Option<Retried>) -> String {
    r.map_or(String::new(), |r| format!(" ({r})"))
}

/// Errors talking to the server. Messages name the host or model and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Nothing answers at the address (refused, unreachable, connect timeout).
    #[error("server at {host} unreachable: {detail}")]
    Unreachable {
        /// `host:port`.
        host: String,
        /// What failed.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{endpoint} answered HTTP {status}: {message}{}", retried_suffix(.retried))]
    Http {
        /// The endpoint, e.g. `POST /api/generate`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The server's `error` message (or the start of the body, at most
        /// [`BODY_QUOTE_CHARS`] characters).
        message: String,
        /// The retries made before this answer, if any.
        retried: Option<Retried>,
    },
    /// The server answered, but the body is not what the endpoint returns (HTML, invalid JSON,
    /// JSON of another shape).
    #[error("{endpoint} answered HTTP {status} with {what}: {body:?}")]
    Malformed {
        /// The endpoint, e.g. `GET /api/version`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// What is wrong with the body.
        what: String,
        /// The start of the body (at most [`BODY_QUOTE_CHARS`] characters, `…` when cut).
        body: String,
    },
    /// A wait ran out.
    #[error("timed out after {after_s:.1} s waiting for {phase}")]
    Timeout {
        /// What was awaited: `the first chunk`, `the next chunk`, `the whole request`, …
        phase: String,
        /// The limit that ran out (s).
        after_s: f64,
    },
    /// An `{"error": …}` line arrived inside a 200 stream.
    #[error("error line in the stream after {chunks} chunk(s): {message}")]
    StreamError {
        /// The server's message.
        message: String,
        /// Chunks received before it.
        chunks: usize,
    },
    /// A stream line longer than the limit ([`MAX_LINE_BYTES`]).
    #[error(
        "stream line longer than {limit} bytes after {chunks} chunk(s): not Ollama's wire format"
    )]
    LineTooLong {
        /// The limit (bytes).
        limit: usize,
        /// Chunks received before it.
        chunks: usize,
    },
    /// The stream ended without a `done: true` line.
    #[error("stream ended without done:true after {chunks} chunk(s)")]
    Incomplete {
        /// Chunks received.
        chunks: usize,
    },
    /// The server sent something that is not Ollama's wire format.
    #[error("protocol error from {endpoint}: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
}

impl BackendError {
    /// Whether this error means the cell cannot run here (rather than a failed measurement).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Unreachable { .. })
    }
}

/// One model of `/api/tags`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TagModel {
    /// Name with tag, e.g. `gemma3:latest`.
    pub name: String,
    /// Digest.
    #[serde(default)]
    pub digest: Option<String>,
    /// Bytes on disk.
    #[serde(default)]
    pub size: Option<u64>,
}

/// The parts of `/api/show` the harness uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ShowResponse {
    /// `details`.
    #[serde(default)]
    pub details: ModelDetails,
    /// `model_info`: the GGUF key/value map.
    #[serde(default)]
    pub model_info: serde_json::Map<String, Value>,
    /// `capabilities` (`completion`, `thinking`, `tools`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// `details` of `/api/show`, `/api/tags`, `/api/ps`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ModelDetails {
    /// Family.
    #[serde(default)]
    pub family: Option<String>,
    /// Parameter size, e.g. `8.0B`.
    #[serde(default)]
    pub parameter_size: Option<String>,
    /// Quantization, e.g. `Q4_K_M`.
    #[serde(default)]
    pub quantization_level: Option<String>,
}

impl ShowResponse {
    /// The model's trained context (`<arch>.context_length`).
    pub fn trained_context(&self) -> Option<u64> {
        let arch = self.model_info.get("general.architecture")?.as_str()?;
        self.model_info
            .get(&format!("{arch}.context_length"))?
            .as_u64()
    }

    /// Whether the model can think (then `think: false` is sent).
    pub fn can_think(&self) -> bool {
        self.capabilities.iter().any(|c| c == "thinking")
    }
}

/// The answer of `/api/embed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Embedded {
    /// One vector per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens the server embedded.
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// Server-side duration (ns).
    #[serde(default)]
    pub total_duration: Option<u64>,
}

/// One model of `/api/ps`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PsModel {
    /// Name with tag.
    pub name: String,
    /// Memory the server accounts to the model (bytes).
    #[serde(default)]
    pub size: Option<u64>,
    /// Effective context.
    #[serde(default)]
    pub context_length: Option<u64>,
}

/// Whether `name` (from the server) is the model `wanted` (from the table); a missing tag means
/// `:latest`.
pub fn same_model(name: &str, wanted: &str) -> bool {
    fn norm(s: &str) -> String {
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    }
    norm(name) == norm(wanted)
}

/// Parses an Ollama version such as `0.33.0`, `v0.12.6-rc1` into (major, minor, patch).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+', ' ']).next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().unwrap_or("0").parse().ok()?;
    Some((major, minor, patch))
}

/// Whether the server understands `truncate` (Ollama v0.12.6 and later).
pub fn supports_truncate_flag(version: &str) -> bool {
    parse_version(version).is_some_and(|v| v >= (0, 12, 6))
}

/// One NDJSON line of a generate stream, stamped on arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Request start → arrival of the bytes that completed this line.
    pub at: Duration,
    /// `response` (answer text).
    pub content: String,
    /// `thinking`.
    pub thinking: String,
    /// `done`.
    pub done: bool,
}

/// The metrics of the final (`done: true`) line. Durations in nanoseconds as sent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct FinalMetrics {
    /// `done_reason`.
    #[serde(default)]
    pub done_reason: Option<String>,
    /// `total_duration` (ns).
    #[serde(default)]
    pub total_duration: Option<u64>,
    /// `load_duration` (ns).
    #[serde(default)]
    pub load_duration: Option<u64>,
    /// `prompt_eval_count`.
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// `prompt_eval_duration` (ns).
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    /// `eval_count`.
    #[serde(default)]
    pub eval_count: Option<u64>,
    /// `eval_duration` (ns).
    #[serde(default)]
    pub eval_duration: Option<u64>,
}

/// A completed stream: every line with its arrival time, and the final metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// Every line in order (the final line included).
    pub events: Vec<StreamEvent>,
    /// Metrics of the final line.
    pub metrics: FinalMetrics,
    /// Request start → final line (the start of the attempt that streamed).
    pub e2e: Duration,
    /// Retries before the stream (429/503 with `Retry-After`), if any.
    pub retried: Option<Retried>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    message: Option<ChatMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

/// The load-time options every request of a cell carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct LoadOptions {
    /// `num_ctx`.
    pub num_ctx: u32,
    /// `num_batch`.
    pub num_batch: u32,
    /// `num_thread`.
    pub num_thread: u32,
}

/// What one generate request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Model.
    pub model: String,
    /// Raw prompt (sent with `raw: true`); empty = load only.
    pub prompt: String,
    /// Load-time options.
    pub load: LoadOptions,
    /// `num_predict`.
    pub num_predict: u32,
    /// `seed`.
    pub seed: u64,
    /// `keep_alive` in seconds.
    pub keep_alive_s: u64,
    /// Send `think: false`.
    pub think_false: bool,
    /// Send `truncate: false`.
    pub truncate_false: bool,
}

impl GenerateRequest {
    /// The `options` object: the same load-time options on every request of a cell, plus
    /// `num_predict`, `temperature` 0 and the seed. (`f16_kv` is not sent: current Ollama ignores it.)
    pub fn options(&self) -> Value {
        json!({
            "num_ctx": self.load.num_ctx,
            "num_batch": self.load.num_batch,
            "num_thread": self.load.num_thread,
            "num_predict": self.num_predict,
            "temperature": 0,
            "seed": self.seed,
        })
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut b = json!({
            "model": self.model,
            "prompt": self.prompt,
            "raw": true,
            "stream": true,
            "keep_alive": self.keep_alive_s,
            "options": self.options(),
        });
        self.flags(&mut b);
        b
    }

    /// `think: false` and `truncate: false` into `body`, when asked.
    fn flags(&self, body: &mut Value) {
        if self.think_false {
            body["think"] = json!(false);
        }
        if self.truncate_false {
            body["truncate"] = json!(false);
        }
    }
}

/// One message of a chat history, as `/api/chat` takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// What one `/api/chat` request asks for: the whole history, with the same load-time options,
/// sampling and flags as a [`GenerateRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Model.
    pub model: String,
    /// The whole history, oldest first.
    pub messages: Vec<Message>,
    /// Load-time options, `num_predict`, seed, `keep_alive` and flags, as for generate (its
    /// `prompt` is unused).
    pub params: GenerateRequest,
}

impl ChatRequest {
    /// The JSON body: `model`, `messages`, `stream`, `keep_alive`, `options` (as
    /// [`GenerateRequest::options`]), and `think: false` / `truncate: false` when asked.
    pub fn body(&self) -> Value {
        let p = &self.params;
        let mut b = json!({
            "model": self.model,
            "messages": self.messages,
            "stream": true,
            "keep_alive": p.keep_alive_s,
            "options": p.options(),
        });
        p.flags(&mut b);
        b
    }
}

/// The start of a body, trimmed, at most [`BODY_QUOTE_CHARS`] characters (`…` when cut).
pub fn body_start(body: &str) -> String {
    let t = body.trim();
    let mut out: String = t.chars().take(BODY_QUOTE_CHARS).collect();
    if out.len() < t.len() {
        out.push('…');
    }
    out
}

fn message_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(error_text))
        .map_or_else(|| body_start(body), |m| body_start(&m))
}

/// The wait a `Retry-After` value asks for at `now`: delay-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §10.2.3; a date in the past is no wait).
/// `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 §5.6.7 says senders
/// use; the obsolete forms are not read.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let rest = v.split_once(", ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = f[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d: i64 = day.parse().ok()?;
    let m = i64::try_from(MONTHS.iter().position(|&n| n == month)?).ok()? + 1;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&d)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..61).contains(&ss)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `date::rfc3339`'s.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Client of one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base_url: String,
    // The query of OLLAMA_HOST, sent with every request (config::join_url).
    base_query: Option<String>,
    host: String,
    http: reqwest::Client,
    connect_timeout: Duration,
    first_chunk_timeout: Duration,
    chunk_gap_timeout: Duration,
    trial_timeout: Duration,
    /// Retries of info requests that then succeeded, in words, until taken.
    info_retries: Arc<Mutex<Vec<String>>>,
}

fn error_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether to retry after `status` with a `Retry-After` of `wait`, and how long to wait: only
/// 429 and 503, at most [`MAX_ATTEMPTS`] attempts in all (`attempts` made so far), and only
/// when the wait ends before `budget` runs out (`elapsed` of it spent). Otherwise why not.
pub fn retry_decision(
    status: u16,
    wait: Option<Duration>,
    attempts: u32,
    elapsed: Duration,
    budget: Duration,
) -> Result<Duration, Option<String>> {
    if !matches!(status, 429 | 503) {
        return Err(None);
    }
    let Some(wait) = wait else {
        return Err(None);
    };
    if attempts >= MAX_ATTEMPTS {
        return Err(Some(format!("gave up after {attempts} attempts")));
    }
    if elapsed.saturating_add(wait) >= budget {
        return Err(Some(format!(
            "Retry-After {:.1} s is past the request's timeout of {:.1} s",
            wait.as_secs_f64(),
            budget.as_secs_f64()
        )));
    }
    Ok(wait)
}

fn retry_after_of(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()))
}

impl OllamaClient {
    /// A client for the server of `cfg`, with its timeouts.
    pub fn new(cfg: &Config) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()
            .expect("an HTTP client with default TLS always builds");
        OllamaClient {
            base_url: cfg.base_url.clone(),
            base_query: cfg.base_query.clone(),
            host: cfg.host_label().to_string(),
            http,
            connect_timeout: cfg.connect_timeout,
            first_chunk_timeout: cfg.first_chunk_timeout,
            chunk_gap_timeout: cfg.chunk_gap_timeout,
            trial_timeout: cfg.trial_timeout,
            info_retries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// `host:port` of the server, without userinfo: what messages name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The bound on one whole info request (`/api/version`, `/api/tags`, `/api/show`,
    /// `/api/ps`, unload), its retries included: the connect timeout plus the chunk-gap
    /// timeout. An info request does no model work (no load, no prefill, which is what the
    /// first-chunk timeout is sized for), so a working server answers it within the longest
    /// silence the configuration accepts inside a stream; the connect timeout is added because
    /// the bound covers the connection too.
    pub fn info_timeout(&self) -> Duration {
        self.connect_timeout.saturating_add(self.chunk_gap_timeout)
    }

    /// The retries of info requests that succeeded since the last call, in words (for the
    /// judgement's notes); failed requests carry theirs in the error.
    pub fn take_retry_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.info_retries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn send_error(&self, endpoint: &str, e: reqwest::Error, after: Duration) -> BackendError {
        // The error's URL would show OLLAMA_HOST's query (a token); the endpoint says enough.
        let e = e.without_url();
        if e.is_connect() {
            // The innermost cause says what happened ("Connection refused (os error 111)").
            let mut detail = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                detail = s.to_string();
                src = s.source();
            }
            BackendError::Unreachable {
                host: self.host.clone(),
                detail,
            }
        } else if e.is_timeout() {
            BackendError::Timeout {
                phase: format!(
                    "{endpoint} to answer (O3_CONNECT_TIMEOUT_S {:.1} s + O3_CHUNK_GAP_TIMEOUT_S {:.1} s)",
                    self.connect_timeout.as_secs_f64(),
                    self.chunk_gap_timeout.as_secs_f64()
                ),
                after_s: after.as_secs_f64(),
            }
        } else {
            BackendError::Protocol {
                endpoint: endpoint.into(),
                detail: e.to_string(),
            }
        }
    }

    /// One info request within `budget`: its status and body, after any retries; an error status
    /// is an error.
    async fn info_within(
        &self,
        path: &str,
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<(u16, String), BackendError> {
        let url = crate::config::join_url(&self.base_url, self.base_query.as_deref(), path);
        let endpoint = format!("{} {path}", if body.is_some() { "POST" } else { "GET" });
        let start = Instant::now();
        let mut retried: Option<Retried> = None;
        for attempt in 1.. {
            let req = match body {
                Some(b) => self.http.post(&url).json(b),
                None => self.http.get(&url),
            };
            let left = budget.saturating_sub(start.elapsed());
            let resp = req
                .timeout(left)
                .send()
                .await
                .map_err(|e| self.send_error(&endpoint, e, budget))?;
            let status = resp.status().as_u16();
            let wait = retry_after_of(&resp);
            let text = resp
                .text()
                .await
                .map_err(|e| self.send_error(&endpoint, e, budget))?;
            let mut message = message_of(&text);
            match retry_decision(status, wait, attempt, start.elapsed(), budget) {
                Ok(wait) => {
                    Retried::count(&mut retried, status, wait);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(Some(why)) => message = format!("{message} [{why}]"),
                Err(None) => {}
            }
            if status != 200 {
                return Err(BackendError::Http {
                    endpoint,
                    status,
                    message,
                    retried,
                });
            }
            if let Some(r) = retried {
                self.info_retries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{endpoint}: {r}"));
            }
            return Ok((status, text));
        }
        unreachable!("the loop returns")
    }

    /// One info request whose body is JSON of type `T`.
    async fn info_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, BackendError> {
        self.info_json_within(path, body, self.info_timeout()).await
    }

    /// [`OllamaClient::info_json`] with a time budget of its own.
    async fn info_json_within<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<T, BackendError> {
        let endpoint = format!("{} {path}", if body.is_some() { "POST" } else { "GET" });
        let (status, text) = self.info_within(path, body, budget).await?;
        let malformed = |what: String| BackendError::Malformed {
            endpoint: endpoint.clone(),
            status,
            what,
            body: body_start(&text),
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| malformed(format!("a body that is not JSON ({e})")))?;
        serde_json::from_value(value)
            .map_err(|e| malformed(format!("JSON that is not Ollama's answer ({e})")))
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<String, BackendError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        Ok(self
            .info_json::<Version>("/api/version", None)
            .await?
            .version)
    }

    /// `GET /api/tags`.
    pub async fn tags(&self) -> Result<Vec<TagModel>, BackendError> {
        #[derive(Deserialize)]
        struct Tags {
            models: Vec<TagModel>,
        }
        Ok(self.info_json::<Tags>("/api/tags", None).await?.models)
    }

    /// `POST /api/show`.
    pub async fn show(&self, model: &str) -> Result<ShowResponse, BackendError> {
        self.info_json("/api/show", Some(&json!({ "model": model })))
            .await
    }

    /// `GET /api/ps`.
    pub async fn ps(&self) -> Result<Vec<PsModel>, BackendError> {
        #[derive(Deserialize)]
        struct Ps {
            #[serde(default)]
            models: Vec<PsModel>,
        }
        Ok(self.info_json::<Ps>("/api/ps", None).await?.models)
    }

    /// `POST /api/embed`: one vector per input, in order, within the trial timeout (the server
    /// loads the model and computes). `keep_alive` keeps the embedding model loaded between
    /// the questions of a test.
    pub async fn embed(
        &self,
        model: &str,
        input: &[String],
        keep_alive_s: u64,
    ) -> Result<Embedded, BackendError> {
        let e: Embedded = self
            .info_json_within(
                "/api/embed",
                Some(&json!({ "model": model, "input": input, "keep_alive": keep_alive_s })),
                self.trial_timeout,
            )
            .await?;
        if e.embeddings.len() != input.len() {
            return Err(BackendError::Malformed {
                endpoint: "POST /api/embed".into(),
                status: 200,
                what: format!(
                    "{} embeddings for {} inputs",
                    e.embeddings.len(),
                    input.len()
                ),
                body: String::new(),
            });
        }
        Ok(e)
    }

    /// Asks the server to unload `model` (`keep_alive: 0`, empty prompt).
    pub async fn unload(&self, model: &str) -> Result<(), BackendError> {
        self.info_json::<Value>(
            "/api/generate",
            Some(&json!({ "model": model, "prompt": "", "keep_alive": 0 })),
        )
        .await
        .map(|_| ())
    }

    /// Unloads every loaded model and waits until `/api/ps` lists none, up to `timeout`.
    pub async fn unload_all(&self, timeout: Duration) -> Result<(), BackendError> {
        let start = Instant::now();
        let loaded = self.ps().await?;
        for m in &loaded {
            self.unload(&m.name).await?;
        }
        loop {
            let left = self.ps().await?;
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(BackendError::Timeout {
                    phase: format!(
                        "the server to unload {}",
                        left.iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    after_s: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Streams one `/api/generate` request. `on_event` sees each line as it arrives (for
    /// progress or early stops). Every wait has a timeout: the first chunk, each gap between
    /// chunks, and the whole request. A 429 or 503 with `Retry-After` before the stream is
    /// retried within the first-chunk timeout; the clock of the trial restarts at the attempt
    /// that streamed, and [`Completed::retried`] records the retries.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        on_event: impl FnMut(&StreamEvent),
    ) -> Result<Completed, BackendError> {
        self.stream("/api/generate", &req.body(), on_event).await
    }

    /// Streams one `/api/chat` request ([`ChatRequest`]), with the same timeouts, retries and
    /// stream reader as [`OllamaClient::generate`].
    pub async fn chat(
        &self,
        req: &ChatRequest,
        on_event: impl FnMut(&StreamEvent),
    ) -> Result<Completed, BackendError> {
        self.stream("/api/chat", &req.body(), on_event).await
    }

    async fn stream(
        &self,
        path: &str,
        body: &Value,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> Result<Completed, BackendError> {
        let endpoint = format!("POST {path}");
        let endpoint = endpoint.as_str();
        let url = crate::config::join_url(&self.base_url, self.base_query.as_deref(), path);
        let first = Instant::now();
        let whole = self.trial_timeout;
        let first_chunk = || BackendError::Timeout {
            phase: "the first chunk (model load and prefill)".into(),
            after_s: self.first_chunk_timeout.as_secs_f64(),
        };
        let fut = async {
            let mut retried: Option<Retried> = None;
            for attempt in 1.. {
                let start = Instant::now();
                // Ollama sends no headers before the first chunk: the first-chunk timeout
                // covers them.
                let resp = tokio::time::timeout(
                    self.first_chunk_timeout,
                    self.http.post(&url).json(body).send(),
                )
                .await
                .map_err(|_| first_chunk())?
                .map_err(|e| self.send_error(endpoint, e, self.first_chunk_timeout))?;
                let status = resp.status().as_u16();
                if status == 200 {
                    let mut c = read_ndjson(
                        resp,
                        start,
                        self.first_chunk_timeout,
                        self.chunk_gap_timeout,
                        &mut on_event,
                    )
                    .await?;
                    c.retried = retried;
                    return Ok(c);
                }
                let wait = retry_after_of(&resp);
                let text = tokio::time::timeout(self.first_chunk_timeout, resp.text())
                    .await
                    .map_err(|_| first_chunk())?
                    .unwrap_or_default();
                let mut message = message_of(&text);
                match retry_decision(
                    status,
                    wait,
                    attempt,
                    first.elapsed(),
                    self.first_chunk_timeout,
                ) {
                    Ok(wait) => {
                        Retried::count(&mut retried, status, wait);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(Some(why)) => message = format!("{message} [{why}]"),
                    Err(None) => {}
                }
                return Err(BackendError::Http {
                    endpoint: endpoint.into(),
                    status,
                    message,
                    retried,
                });
            }
            unreachable!("the loop returns")
        };
        match tokio::time::timeout(whole, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                phase: "the whole request".into(),
                after_s: whole.as_secs_f64(),
            }),
        }
    }
}

/// Splits a generate stream into NDJSON lines as its bytes arrive, and parses them into
/// events. Linear: each byte is searched for a newline once, and the bytes of a line are moved
/// at most once. A line longer than its limit is an error as soon as the limit is passed,
/// newline or not.
#[derive(Debug)]
pub struct NdjsonReader {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched (no newline among them).
    scanned: usize,
    events: Vec<StreamEvent>,
    max_line: usize,
    /// Bytes searched for a newline so far, in all (each byte once: reading is linear).
    examined: u64,
}

impl NdjsonReader {
    /// A reader that accepts lines of up to `max_line` bytes (newline excluded).
    pub fn new(max_line: usize) -> NdjsonReader {
        NdjsonReader {
            buf: Vec::new(),
            scanned: 0,
            events: Vec::new(),
            max_line,
            examined: 0,
        }
    }

    /// Bytes searched for a newline so far, in all.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Whether no byte has arrived yet (beyond blank lines).
    pub fn is_fresh(&self) -> bool {
        self.events.is_empty() && self.buf.is_empty()
    }

    fn too_long(&self) -> BackendError {
        BackendError::LineTooLong {
            limit: self.max_line,
            chunks: self.events.len(),
        }
    }

    /// Takes the bytes that arrived at `at` (request start → arrival); returns the completed
    /// stream when they hold its `done: true` line.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        at: Duration,
        on_event: &mut impl FnMut(&StreamEvent),
    ) -> Result<Option<Completed>, BackendError> {
        self.buf.extend_from_slice(bytes);
        let mut line_start = 0;
        let mut from = self.scanned;
        while let Some(off) = self.buf[from..].iter().position(|&b| b == b'\n') {
            self.examined += off as u64 + 1;
            let end = from + off;
            if end - line_start > self.max_line {
                return Err(self.too_long());
            }
            if let Some(done) =
                handle_line(&self.buf[line_start..end], at, &mut self.events, on_event)?
            {
                return Ok(Some(done));
            }
            line_start = end + 1;
            from = line_start;
        }
        self.examined += (self.buf.len() - from) as u64;
        self.buf.drain(..line_start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line {
            return Err(self.too_long());
        }
        Ok(None)
    }

    /// The body ended at `at`: a last line without its newline may complete the stream;
    /// otherwise it ended without `done: true`.
    pub fn finish(
        &mut self,
        at: Duration,
        on_event: &mut impl FnMut(&StreamEvent),
    ) -> Result<Completed, BackendError> {
        let line = std::mem::take(&mut self.buf);
        self.scanned = 0;
        if let Some(done) = handle_line(&line, at, &mut self.events, on_event)? {
            return Ok(done);
        }
        Err(BackendError::Incomplete {
            chunks: self.events.len(),
        })
    }

    /// Lines parsed so far.
    pub fn chunks(&self) -> usize {
        self.events.len()
    }
}

async fn read_ndjson(
    mut resp: reqwest::Response,
    start: Instant,
    first_timeout: Duration,
    gap_timeout: Duration,
    on_event: &mut impl FnMut(&StreamEvent),
) -> Result<Completed, BackendError> {
    let mut reader = NdjsonReader::new(MAX_LINE_BYTES);
    loop {
        let fresh = reader.is_fresh();
        let (limit, phase, after) = if fresh {
            (
                first_timeout.saturating_sub(start.elapsed()),
                "the first chunk (model load and prefill)",
                first_timeout,
            )
        } else {
            (gap_timeout, "the next chunk", gap_timeout)
        };
        match tokio::time::timeout(limit, resp.chunk()).await {
            Err(_) => {
                return Err(BackendError::Timeout {
                    phase: phase.into(),
                    after_s: after.as_secs_f64(),
                });
            }
            // The connection broke mid-stream: the stream ended without done.
            Ok(Err(_)) => {
                return Err(BackendError::Incomplete {
                    chunks: reader.chunks(),
                });
            }
            Ok(Ok(None)) => return reader.finish(start.elapsed(), on_event),
            Ok(Ok(Some(bytes))) => {
                if let Some(done) = reader.feed(&bytes, start.elapsed(), on_event)? {
                    return Ok(done);
                }
            }
        }
    }
}

fn handle_line(
    raw: &[u8],
    at: Duration,
    events: &mut Vec<StreamEvent>,
    on_event: &mut impl FnMut(&StreamEvent),
) -> Result<Option<Completed>, BackendError> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| BackendError::Protocol {
        endpoint: "POST /api/generate".into(),
        detail: format!("stream line is not JSON ({e}): {}", body_start(text)),
    })?;
    let line: Line = serde_json::from_value(value.clone()).map_err(|e| BackendError::Protocol {
        endpoint: "POST /api/generate".into(),
        detail: format!("unexpected stream line ({e}): {}", body_start(text)),
    })?;
    if let Some(err) = &line.error {
        return Err(BackendError::StreamError {
            message: error_text(err),
            chunks: events.len(),
        });
    }
    let (content, thinking) = match line.message {
        Some(m) => (
            m.content.unwrap_or_default(),
            m.thinking.unwrap_or_default(),
        ),
        None => (
            line.response.unwrap_or_default(),
            line.thinking.unwrap_or_default(),
        ),
    };
    let ev = StreamEvent {
        at,
        content,
        thinking,
        done: line.done,
    };
    on_event(&ev);
    events.push(ev);
    if line.done {
        let metrics: FinalMetrics =
            serde_json::from_value(value).map_err(|e| BackendError::Protocol {
                endpoint: "POST /api/generate".into(),
                detail: format!(
                    "final line has unexpected metrics ({e}): {}",
                    body_start(text)
                ),
            })?;
        return Ok(Some(Completed {
            events: std::mem::take(events),
            metrics,
            e2e: at,
            retried: None,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("gemma3", "gemma3:latest", true)]
    #[case("gemma3:latest", "gemma3", true)]
    #[case("qwen2.5:3b-instruct", "qwen2.5:3b-instruct", true)]
    #[case("qwen2.5:3b", "qwen2.5:3b-instruct", false)]
    #[case("orieg/gemma3-tools:27b-it-qat", "orieg/gemma3-tools:27b-it-qat", true)]
    #[case("registry.local:5000/x", "registry.local:5000/x:latest", true)]
    fn model_names(#[case] a: &str, #[case] b: &str, #[case] same: bool) {
        assert_eq!(same_model(a, b), same);
    }

    #[rstest]
    #[case("0.33.0", Some((0, 33, 0)))]
    #[case("v0.12.6-rc1", Some((0, 12, 6)))]
    #[case("0.5", Some((0, 5, 0)))]
    #[case("0.33.0-o3ref", Some((0, 33, 0)))]
    #[case("dev", None)]
    fn versions(#[case] v: &str, #[case] expected: Option<(u64, u64, u64)>) {
        assert_eq!(parse_version(v), expected);
    }

    #[rstest]
    #[case("0.12.5", false)]
    #[case("0.12.6", true)]
    #[case("0.33.0", true)]
    #[case("garbage", false)]
    fn truncate_flag(#[case] v: &str, #[case] yes: bool) {
        assert_eq!(supports_truncate_flag(v), yes);
    }

    #[test]
    fn request_body_has_the_cell_options_and_no_f16_kv() {
        let req = GenerateRequest {
            model: "m".into(),
            prompt: "p".into(),
            load: LoadOptions {
                num_ctx: 65536,
                num_batch: 8,
                num_thread: 16,
            },
            num_predict: 128,
            seed: 7,
            keep_alive_s: 3600,
            think_false: true,
            truncate_false: true,
        };
        let b = req.body();
        assert_eq!(b["raw"], json!(true));
        assert_eq!(b["think"], json!(false));
        assert_eq!(b["truncate"], json!(false));
        assert_eq!(b["keep_alive"], json!(3600));
        let o = &b["options"];
        assert_eq!(o["num_ctx"], json!(65536));
        assert_eq!(o["num_batch"], json!(8));
        assert_eq!(o["num_thread"], json!(16));
        assert_eq!(o["temperature"], json!(0));
        assert_eq!(o["seed"], json!(7));
        assert!(o.get("f16_kv").is_none());
        let plain = GenerateRequest {
            think_false: false,
            truncate_false: false,
            ..req
        }
        .body();
        assert!(plain.get("think").is_none() && plain.get("truncate").is_none());
    }

    #[test]
    fn show_reads_trained_context_and_thinking() {
        let s: ShowResponse = serde_json::from_value(json!({
            "details": {"family": "llama", "quantization_level": "Q4_0"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
            "capabilities": ["completion", "thinking"]
        }))
        .unwrap();
        assert_eq!(s.trained_context(), Some(8192));
        assert!(s.can_think());
        assert_eq!(s.details.quantization_level.as_deref(), Some("Q4_0"));
    }

    #[rstest]
    #[case("120", Some(120))]
    #[case(" 0 ", Some(0))]
    #[case("Thu, 01 Jan 1970 00:02:00 GMT", Some(20))]
    #[case("Thu, 01 Jan 1970 00:01:00 GMT", Some(0))]
    #[case("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777 - 100))]
    #[case("Fri, 27 Nov 2026 09:12:56 GMT", Some(1_795_770_776 - 100))]
    #[case("-1", None)]
    #[case("soon", None)]
    #[case("Thu, 01 Foo 1970 00:02:00 GMT", None)]
    #[case("Thu, 01 Jan 1970 25:02:00 GMT", None)]
    fn retry_after_values(#[case] v: &str, #[case] secs: Option<u64>) {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(retry_after(v, now), secs.map(Duration::from_secs), "{v}");
    }

    #[test]
    fn retry_decisions() {
        let s = Duration::from_secs;
        // Retried: 429 and 503 with a wait inside the budget, up to MAX_ATTEMPTS attempts.
        assert_eq!(retry_decision(503, Some(s(1)), 1, s(0), s(10)), Ok(s(1)));
        assert_eq!(retry_decision(429, Some(s(2)), 2, s(3), s(10)), Ok(s(2)));
        // Not retried, nothing to say: another status, or no Retry-After.
        assert_eq!(retry_decision(500, Some(s(1)), 1, s(0), s(10)), Err(None));
        assert_eq!(retry_decision(503, None, 1, s(0), s(10)), Err(None));
        // Not retried, with the reason.
        assert_eq!(
            retry_decision(503, Some(s(1)), MAX_ATTEMPTS, s(0), s(10)),
            Err(Some("gave up after 3 attempts".into()))
        );
        assert_eq!(
            retry_decision(503, Some(s(8)), 1, s(3), s(10)),
            Err(Some(
                "Retry-After 8.0 s is past the request's timeout of 10.0 s".into()
            ))
        );
    }

    #[test]
    fn bodies_are_quoted_bounded() {
        let long = format!("<html>{}</html>", "x".repeat(10_000));
        let q = body_start(&long);
        assert_eq!(q.chars().count(), BODY_QUOTE_CHARS + 1);
        assert!(q.starts_with("<html>xx") && q.ends_with('…'), "{q}");
        assert_eq!(body_start("  short \n"), "short");
        assert_eq!(message_of(r#"{"error":"boom"}"#), "boom");
        let e = BackendError::Http {
            endpoint: "GET /api/version".into(),
            status: 503,
            message: "busy".into(),
            retried: Some(Retried {
                retries: 2,
                waited_s: 2.0,
                status: 503,
            }),
        };
        assert_eq!(
            e.to_string(),
            "GET /api/version answered HTTP 503: busy (2 retries after HTTP 503 with Retry-After, 2.0 s waited)"
        );
    }

    /// A stream as Ollama sends it: `n` answer lines, a thinking line, the final line.
    fn stream(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(
                format!("{{\"response\":\"tok{i} é€\",\"done\":false}}\n").as_bytes(),
            );
        }
        out.extend_from_slice(b"{\"response\":\"\",\"thinking\":\"hm\",\"done\":false}\n\n");
        out.extend_from_slice(
            b"{\"response\":\"\",\"done\":true,\"done_reason\":\"length\",\"eval_count\":7,\"prompt_eval_count\":4294967552}\n",
        );
        out
    }

    /// Feeds `chunks` in order; the events (without their times) and the metrics, or the error.
    /// Events without their times: content, thinking, done.
    type Lines = Vec<(String, String, bool)>;

    fn read(chunks: &[&[u8]]) -> Result<(Lines, FinalMetrics), String> {
        let mut r = NdjsonReader::new(MAX_LINE_BYTES);
        let mut seen = 0usize;
        let mut on = |_: &StreamEvent| seen += 1;
        for (i, c) in chunks.iter().enumerate() {
            let at = Duration::from_millis(i as u64);
            if let Some(done) = r.feed(c, at, &mut on).map_err(|e| e.to_string())? {
                let ev = done
                    .events
                    .iter()
                    .map(|e| (e.content.clone(), e.thinking.clone(), e.done))
                    .collect::<Vec<_>>();
                assert_eq!(seen, ev.len(), "on_event saw every line");
                return Ok((ev, done.metrics));
            }
        }
        let done = r
            .finish(Duration::from_secs(1), &mut on)
            .map_err(|e| e.to_string())?;
        let ev = done
            .events
            .iter()
            .map(|e| (e.content.clone(), e.thinking.clone(), e.done))
            .collect();
        Ok((ev, done.metrics))
    }

    /// A small deterministic generator for the bounded fuzz loops (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    /// Random splits of a valid stream (at any byte, inside UTF-8 characters too) give the
    /// same events and metrics as the whole stream in one piece. Bounded: 2000 splits.
    #[test]
    fn random_splits_of_a_stream_give_the_same_events() {
        let whole = stream(12);
        let expected = read(&[&whole]).expect("the stream parses");
        assert_eq!(expected.0.len(), 14);
        assert_eq!(expected.0[0], ("tok0 é€".to_string(), String::new(), false));
        assert_eq!(
            expected.1.prompt_eval_count,
            Some(4_294_967_552),
            "u64, not wrapped"
        );
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let mut cuts: Vec<usize> = (0..rng.below(12)).map(|_| rng.below(whole.len())).collect();
            cuts.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&whole[at..c]);
                at = c;
            }
            pieces.push(&whole[at..]);
            assert_eq!(
                read(&pieces).as_ref(),
                Ok(&expected),
                "{cuts:?}",
                cuts = pieces.len()
            );
        }
    }

    /// Random garbage (random bytes, and valid streams with random bytes changed) never
    /// panics: every input ends in events or an error. Bounded: 3000 inputs.
    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(42);
        let valid = stream(5);
        let mut errors = 0;
        for i in 0..3000 {
            let input: Vec<u8> = if i % 2 == 0 {
                (0..rng.below(400))
                    .map(|_| match rng.below(6) {
                        0 => b'\n',
                        1 => b'{',
                        2 => b'"',
                        _ => u8::try_from(rng.below(256)).unwrap_or(0),
                    })
                    .collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(v.len());
                    v[at] = u8::try_from(rng.below(256)).unwrap_or(0);
                }
                v
            };
            let split = rng.below(input.len() + 1);
            if read(&[&input[..split], &input[split..]]).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0, "garbage is reported as an error");
    }

    #[test]
    fn a_line_past_the_limit_is_an_error_with_or_without_its_newline() {
        let mut on = |_: &StreamEvent| {};
        let t = Duration::ZERO;
        // Without a newline: as soon as the buffered part passes the limit.
        let mut r = NdjsonReader::new(64);
        assert!(
            r.feed(b"{\"response\":\"ok\",\"done\":false}\n", t, &mut on)
                .unwrap()
                .is_none()
        );
        assert!(r.feed(&[b'x'; 60], t, &mut on).unwrap().is_none());
        let e = r.feed(&[b'x'; 10], t, &mut on).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stream line longer than 64 bytes after 1 chunk(s): not Ollama's wire format"
        );
        // With its newline, in one piece.
        let mut r = NdjsonReader::new(64);
        let mut line = vec![b' '; 100];
        line.push(b'\n');
        assert!(matches!(
            r.feed(&line, t, &mut on),
            Err(BackendError::LineTooLong {
                limit: 64,
                chunks: 0
            })
        ));
        // A line of exactly the limit is read.
        let mut r = NdjsonReader::new(64);
        let mut ok = b"{\"response\":\"x\",\"done\":false}".to_vec();
        ok.resize(64, b' ');
        ok.push(b'\n');
        assert!(r.feed(&ok, t, &mut on).unwrap().is_none());
        assert_eq!(r.chunks(), 1);
    }

    /// Reading is linear: a long line that arrives a byte at a time is searched once per
    /// byte, not once per byte per arrival.
    #[test]
    fn each_byte_is_searched_once() {
        let mut on = |_: &StreamEvent| {};
        let mut r = NdjsonReader::new(MAX_LINE_BYTES);
        let mut line = b"{\"response\":\"".to_vec();
        line.resize(100_000, b'x');
        line.extend_from_slice(b"\",\"done\":false}\n");
        for b in &line {
            assert!(
                r.feed(std::slice::from_ref(b), Duration::ZERO, &mut on)
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(r.chunks(), 1);
        assert_eq!(r.examined(), line.len() as u64);
    }
}
