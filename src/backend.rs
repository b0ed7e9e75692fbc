//! Ollama's native API: `/api/version`, `/api/tags`, `/api/show`, `/api/ps`, and streaming
//! `/api/generate`, with a timeout on every wait.
//!
//! Streams are read as NDJSON, line by line as the bytes arrive; each line is stamped with the
//! client clock when its bytes arrived. An `{"error": …}` line inside a 200 stream, or a stream
//! that ends without `done: true`, is an error of its own kind.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;

/// Timeout of the small, non-streaming calls (`/api/version`, `/api/tags`, `/api/show`, `/api/ps`).
pub const INFO_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Http {
        /// The endpoint, e.g. `POST /api/generate`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The server's `error` message (or the body).
        message: String,
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
    /// Request start → final line.
    pub e2e: Duration,
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
        if self.think_false {
            b["think"] = json!(false);
        }
        if self.truncate_false {
            b["truncate"] = json!(false);
        }
        b
    }
}

/// Client of one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base_url: String,
    // The query of OLLAMA_HOST, sent with every request (config::join_url).
    base_query: Option<String>,
    host: String,
    http: reqwest::Client,
    first_chunk_timeout: Duration,
    chunk_gap_timeout: Duration,
    trial_timeout: Duration,
}

fn message_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(error_text))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

fn error_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
            first_chunk_timeout: cfg.first_chunk_timeout,
            chunk_gap_timeout: cfg.chunk_gap_timeout,
            trial_timeout: cfg.trial_timeout,
        }
    }

    /// `host:port` of the server, without userinfo: what messages name.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn send_error(&self, endpoint: &str, e: reqwest::Error) -> BackendError {
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
                phase: format!("{endpoint} to answer"),
                after_s: INFO_TIMEOUT.as_secs_f64(),
            }
        } else {
            BackendError::Protocol {
                endpoint: endpoint.into(),
                detail: e.to_string(),
            }
        }
    }

    async fn get_json(&self, path: &str, body: Option<Value>) -> Result<Value, BackendError> {
        let url = crate::config::join_url(&self.base_url, self.base_query.as_deref(), path);
        let endpoint = format!("{} {path}", if body.is_some() { "POST" } else { "GET" });
        let req = match &body {
            Some(b) => self.http.post(&url).json(b),
            None => self.http.get(&url),
        };
        let resp = req
            .timeout(INFO_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.send_error(&endpoint, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| self.send_error(&endpoint, e))?;
        if status != 200 {
            return Err(BackendError::Http {
                endpoint,
                status,
                message: message_of(&text),
            });
        }
        serde_json::from_str(&text).map_err(|e| BackendError::Protocol {
            endpoint,
            detail: format!(
                "not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ),
        })
    }

    fn decode<T: for<'de> Deserialize<'de>>(endpoint: &str, v: Value) -> Result<T, BackendError> {
        serde_json::from_value(v).map_err(|e| BackendError::Protocol {
            endpoint: endpoint.into(),
            detail: e.to_string(),
        })
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<String, BackendError> {
        let v = self.get_json("/api/version", None).await?;
        v.get("version")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| BackendError::Protocol {
                endpoint: "GET /api/version".into(),
                detail: format!("no \"version\" in {v}"),
            })
    }

    /// `GET /api/tags`.
    pub async fn tags(&self) -> Result<Vec<TagModel>, BackendError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<TagModel>,
        }
        let v = self.get_json("/api/tags", None).await?;
        Ok(Self::decode::<Tags>("GET /api/tags", v)?.models)
    }

    /// `POST /api/show`.
    pub async fn show(&self, model: &str) -> Result<ShowResponse, BackendError> {
        let v = self
            .get_json("/api/show", Some(json!({ "model": model })))
            .await?;
        Self::decode("POST /api/show", v)
    }

    /// `GET /api/ps`.
    pub async fn ps(&self) -> Result<Vec<PsModel>, BackendError> {
        #[derive(Deserialize)]
        struct Ps {
            #[serde(default)]
            models: Vec<PsModel>,
        }
        let v = self.get_json("/api/ps", None).await?;
        Ok(Self::decode::<Ps>("GET /api/ps", v)?.models)
    }

    /// Asks the server to unload `model` (`keep_alive: 0`, empty prompt).
    pub async fn unload(&self, model: &str) -> Result<(), BackendError> {
        self.get_json(
            "/api/generate",
            Some(json!({ "model": model, "prompt": "", "keep_alive": 0 })),
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
    /// chunks, and the whole request.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> Result<Completed, BackendError> {
        let endpoint = "POST /api/generate";
        let url =
            crate::config::join_url(&self.base_url, self.base_query.as_deref(), "/api/generate");
        let body = req.body();
        let start = Instant::now();
        let whole = self.trial_timeout;
        let fut = async {
            // Ollama sends no headers before the first chunk: the first-chunk timeout covers them.
            let resp = tokio::time::timeout(
                self.first_chunk_timeout,
                self.http.post(&url).json(&body).send(),
            )
            .await
            .map_err(|_| BackendError::Timeout {
                phase: "the first chunk (model load and prefill)".into(),
                after_s: self.first_chunk_timeout.as_secs_f64(),
            })?
            .map_err(|e| self.send_error(endpoint, e))?;
            let status = resp.status().as_u16();
            if status != 200 {
                let text = resp.text().await.unwrap_or_default();
                return Err(BackendError::Http {
                    endpoint: endpoint.into(),
                    status,
                    message: message_of(&text),
                });
            }
            read_ndjson(
                resp,
                start,
                self.first_chunk_timeout,
                self.chunk_gap_timeout,
                &mut on_event,
            )
            .await
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

async fn read_ndjson(
    mut resp: reqwest::Response,
    start: Instant,
    first_timeout: Duration,
    gap_timeout: Duration,
    on_event: &mut impl FnMut(&StreamEvent),
) -> Result<Completed, BackendError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut events: Vec<StreamEvent> = Vec::new();
    loop {
        let (limit, phase) = if events.is_empty() && buf.is_empty() {
            (
                first_timeout.saturating_sub(start.elapsed()),
                "the first chunk (model load and prefill)",
            )
        } else {
            (gap_timeout, "the next chunk")
        };
        let chunk = match tokio::time::timeout(limit, resp.chunk()).await {
            Err(_) => {
                return Err(BackendError::Timeout {
                    phase: phase.into(),
                    after_s: if events.is_empty() && buf.is_empty() {
                        first_timeout.as_secs_f64()
                    } else {
                        gap_timeout.as_secs_f64()
                    },
                });
            }
            Ok(Err(e)) => {
                // The connection broke mid-stream: the stream ended without done.
                let _ = e;
                return Err(BackendError::Incomplete {
                    chunks: events.len(),
                });
            }
            Ok(Ok(None)) => {
                if !buf.iter().all(u8::is_ascii_whitespace) {
                    // A last line without its newline.
                    let line = std::mem::take(&mut buf);
                    if let Some(done) = handle_line(&line, start, &mut events, on_event)? {
                        return Ok(done);
                    }
                }
                return Err(BackendError::Incomplete {
                    chunks: events.len(),
                });
            }
            Ok(Ok(Some(bytes))) => bytes,
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Some(done) = handle_line(&line, start, &mut events, on_event)? {
                return Ok(done);
            }
        }
    }
}

fn handle_line(
    raw: &[u8],
    start: Instant,
    events: &mut Vec<StreamEvent>,
    on_event: &mut impl FnMut(&StreamEvent),
) -> Result<Option<Completed>, BackendError> {
    let at = start.elapsed();
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| BackendError::Protocol {
        endpoint: "POST /api/generate".into(),
        detail: format!(
            "stream line is not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })?;
    let line: Line = serde_json::from_value(value.clone()).map_err(|e| BackendError::Protocol {
        endpoint: "POST /api/generate".into(),
        detail: format!("unexpected stream line ({e}): {text}"),
    })?;
    if let Some(err) = &line.error {
        return Err(BackendError::StreamError {
            message: error_text(err),
            chunks: events.len(),
        });
    }
    let (content, thinking) = match &line.message {
        Some(m) => (
            m.content.clone().unwrap_or_default(),
            m.thinking.clone().unwrap_or_default(),
        ),
        None => (
            line.response.clone().unwrap_or_default(),
            line.thinking.clone().unwrap_or_default(),
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
                detail: format!("final line has unexpected metrics ({e}): {text}"),
            })?;
        return Ok(Some(Completed {
            events: std::mem::take(events),
            metrics,
            e2e: at,
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
}
