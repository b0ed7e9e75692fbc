//! A scripted Ollama server for the protocol tests: real HTTP/1.1 on `127.0.0.1`, Ollama's
//! native wire format (`docs/ollama-api.md` §1, §2.5, §4, §6), and per-test misbehaviour.
//!
//! The server runs on its own thread with its own single-threaded tokio runtime (the harness's
//! `run_cell_with` blocks on the harness's global runtime), and stops when [`ScriptedServer`] is
//! dropped — also while a failing test unwinds. Dropping the runtime cancels every connection
//! task, so a stream scripted to stall for 30 s never outlives its test.
//!
//! HTTP is hand-written and minimal: request line, headers, `Content-Length` body; several
//! requests per connection (keep-alive) unless the script asks for `Connection: close` after
//! every response. Streams are `application/x-ndjson` with `Transfer-Encoding: chunked`, one
//! NDJSON line per chunk, flushed; like Ollama, not a byte (headers included) is written before
//! the first line is ready.
//!
//! Generate requests carrying a prompt are counted in order: the first two are the harness's
//! calibrations (prose, then code), the third its warm-up, the rest its measured trials; [`Script::warmup`] and
//! [`Script::measured`] choose how each of them is answered. The scripted tokenizer counts one
//! token per [`CHARS_PER_TOKEN`] bytes of prompt.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

/// What `/api/version` answers unless the script says otherwise.
pub const VERSION: &str = "0.33.0";
/// The scripted model's trained context (`<arch>.context_length` of `/api/show`).
pub const TRAINED_CONTEXT: u64 = 131_072;
/// Digest listed by `/api/tags` and `/api/ps`.
pub const DIGEST: &str = "5f1c4b5a8c2e1d7f9a0b3c6d4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
/// Architecture of the scripted model.
pub const ARCH: &str = "llama";
/// Bytes of prompt per token (the scripted tokenizer).
pub const CHARS_PER_TOKEN: u64 = 4;
/// Output tokens per request at most, whatever `num_predict` asks.
pub const MAX_OUTPUT_TOKENS: u64 = 64;
/// `load_duration` of a request served by an already loaded model (a few µs, in ns).
pub const WARM_LOAD_NS: u64 = 4_000;
/// `load_duration` of a request that had to load the model (ns).
pub const COLD_LOAD_NS: u64 = 250_000_000;
/// `load_duration` scripted for a reload inside the cell (2 s, in ns).
pub const RELOAD_NS: u64 = 2_000_000_000;
/// `size` of the loaded model in `/api/ps` (bytes).
pub const PS_SIZE_BYTES: u64 = 1_234_567_890;

/// How one generate request with a prompt is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// `num_predict` answer chunks (capped at [`MAX_OUTPUT_TOKENS`]), then the final line.
    Normal,
    /// `chunks` chunks with only `thinking`, then answer chunks; `eval_count` counts both.
    Thinking {
        /// Thinking chunks before the first answer chunk.
        chunks: usize,
    },
    /// A normal stream whose final line reports this `load_duration` (ns).
    LoadDuration(u64),
    /// `after` answer chunks, then `{"error": message}` as the last line (no `done:true`),
    /// then the end of the chunked body, as Ollama does for an error after streaming began.
    ErrorLine {
        /// Answer chunks before the error line.
        after: usize,
        /// The error text.
        message: String,
    },
    /// `chunks` answer chunks, then the stream ends without a final line: with the chunked
    /// terminator (`0\r\n\r\n`) when `clean`, else by closing the socket mid-body.
    CutAfter {
        /// Answer chunks sent.
        chunks: usize,
        /// Whether the chunked body is terminated properly.
        clean: bool,
    },
    /// `chunks` answer chunks, then silence for `secs`, then the socket is closed.
    StallAfter {
        /// Answer chunks sent.
        chunks: usize,
        /// Seconds of silence.
        secs: u64,
    },
    /// Silence for `secs` before anything (headers included), then the socket is closed.
    StallBeforeFirst {
        /// Seconds of silence.
        secs: u64,
    },
    /// A normal stream with every line split in two chunks written 2 ms apart (a line is
    /// complete only when its newline arrives).
    SplitLines,
    /// A normal stream whose lines come `gap` apart (a trickle that never trips the gap
    /// timeout but outlasts the whole-request timeout).
    Slow {
        /// Delay between two lines.
        gap: Duration,
    },
    /// A normal stream whose final line has these fields replaced (impossible figures).
    FinalFields(Value),
    /// `503` with `Retry-After: secs` and Ollama's busy message, before streaming began; the
    /// retry is the next request (the next trial's behaviour answers it).
    Busy {
        /// The `Retry-After` value (seconds).
        secs: u64,
    },
    /// One answer line of `bytes` bytes (written in 64 KiB chunks) before anything else; the
    /// rest of the stream is never sent.
    HugeLine {
        /// Bytes of the line.
        bytes: usize,
    },
    /// An error status before streaming began, with `{"error": message}`.
    HttpError {
        /// HTTP status.
        status: u16,
        /// The error text.
        message: String,
    },
}

impl Behaviour {
    /// `HTTP 500 {"error": message}`.
    pub fn http_500(message: &str) -> Behaviour {
        Behaviour::HttpError {
            status: 500,
            message: message.to_string(),
        }
    }
}

/// A hand-made HTTP answer: any status, headers and body (HTML, invalid JSON, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// HTTP status.
    pub status: u16,
    /// Extra headers (`Retry-After`, …); `Content-Type` is `content_type`.
    pub headers: Vec<(String, String)>,
    /// `Content-Type`.
    pub content_type: String,
    /// The body, as sent.
    pub body: String,
}

impl Raw {
    /// `status` with `body` of `content_type`.
    pub fn new(status: u16, content_type: &str, body: &str) -> Raw {
        Raw {
            status,
            headers: Vec::new(),
            content_type: content_type.to_string(),
            body: body.to_string(),
        }
    }

    /// Ollama's busy answer: `503` with `Retry-After: secs`.
    pub fn busy(secs: u64) -> Raw {
        Raw {
            headers: vec![("Retry-After".to_string(), secs.to_string())],
            ..Raw::new(
                503,
                "application/json; charset=utf-8",
                r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#,
            )
        }
    }
}

/// How an info endpoint (`GET /api/version`, …) answers instead of its normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The `n`-th request (0-based) gets `answers[n]`; past the end, the normal answer.
    Then(Vec<Raw>),
    /// Every request gets this.
    Always(Raw),
    /// The request is read, and nothing is ever answered (the connection stays open).
    Never,
}

/// How `/api/chat` answers (the sessions of `tests/agentic_protocol.rs`).
///
/// The scripted chat template renders each message as `<role>\n{content}\n` and ends with the
/// generation prompt `<assistant>\n`; the tokenizer counts one token per [`CHARS_PER_TOKEN`]
/// bytes of that text. `prompt_eval_count` is the whole prompt, as Ollama reports it;
/// `prompt_eval_duration` is [`CHAT_NS_PER_TOKEN`] per token processed (the server also waits
/// that long before its first line), so the figures are exact.
#[derive(Clone)]
pub struct ChatScript {
    /// Whether the server keeps the previous prompt and its answer and processes only what
    /// follows their common prefix with the new prompt (when at least the system message is
    /// common), or processes every prompt whole.
    pub prefix_cache: bool,
    /// Drop the oldest messages after the system message, silently, while the prompt counts
    /// more than this many tokens.
    pub drop_above_tokens: Option<u64>,
    /// Bytes of memory the server allocates, writes and keeps per chat request, for the first
    /// `leak_turns` requests (`None`: every request).
    pub leak_bytes_per_turn: usize,
    /// See `leak_bytes_per_turn`.
    pub leak_turns: Option<usize>,
    /// Every n-th chat request (1-based) ends with an error line after one chunk.
    pub fail_every: Option<usize>,
    /// The answer to a request, from its messages (JSON values with `role` and `content`).
    pub answer: ChatAnswerFn,
}

/// Chooses the answer of a chat request from its messages.
pub type ChatAnswerFn = Arc<dyn Fn(&[Value]) -> String + Send + Sync>;

/// `prompt_eval_duration` per processed token of a chat request (ns): 50 000 tokens/s.
pub const CHAT_NS_PER_TOKEN: u64 = 20_000;

impl Default for ChatScript {
    fn default() -> Self {
        ChatScript {
            prefix_cache: true,
            drop_above_tokens: None,
            leak_bytes_per_turn: 0,
            leak_turns: None,
            fail_every: None,
            answer: Arc::new(|_| "I am not sure.".to_string()),
        }
    }
}

/// What the chat endpoint did with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatServed {
    /// 1-based among chat requests.
    pub n: usize,
    /// Messages received, and messages kept after dropping.
    pub messages: (usize, usize),
    /// `prompt_eval_count` reported (tokens of the kept messages).
    pub prompt_tokens: u64,
    /// Tokens processed (not served from the cache).
    pub processed: u64,
    /// `eval_count`.
    pub eval_count: u64,
    /// Whether the request was failed on purpose.
    pub failed: bool,
}

/// Chooses the behaviour of measured trial `n` (1-based).
pub type MeasuredScript = Arc<dyn Fn(usize) -> Behaviour + Send + Sync>;

/// Everything a test can script about the server.
#[derive(Clone)]
pub struct Script {
    /// The model the server has (name with tag).
    pub model: String,
    /// What `/api/version` answers.
    pub version: String,
    /// Whether `/api/tags` lists the model (else it lists only `other-model:latest`).
    pub listed: bool,
    /// Whether `/api/show` knows the model (else 404 `model '…' not found`).
    pub show_found: bool,
    /// Whether `/api/show` lists the `thinking` capability.
    pub thinking: bool,
    /// `<arch>.context_length` of `/api/show`.
    pub trained_context: u64,
    /// `context_length` that `/api/ps` reports for the loaded model; `None` = the `num_ctx` it
    /// was loaded with.
    pub ps_context_length: Option<u64>,
    /// Largest `prompt_eval_count` the server reports (silent truncation); `None` = no cap.
    pub prompt_cap: Option<u64>,
    /// How the load request (empty prompt, `keep_alive` ≠ 0) is answered: only
    /// [`Behaviour::HttpError`] changes anything.
    pub load: Behaviour,
    /// How the calibration requests (the first two with a prompt) are answered.
    pub calibration: Behaviour,
    /// How the warm-up request (the third with a prompt) is answered.
    pub warmup: Behaviour,
    /// How measured trial `n` (1-based; the fourth request with a prompt is trial 1) is answered.
    pub measured: MeasuredScript,
    /// A model is loaded (at context 2048) before the cell starts.
    pub preloaded: bool,
    /// Unload requests are acknowledged but the model stays loaded (`/api/ps` keeps listing it).
    pub sticky: bool,
    /// Answer every request with `Connection: close` and close the connection after it.
    pub connection_close: bool,
    /// Delay before the first line of a stream (the scripted prefill).
    pub first_line_delay: Duration,
    /// Delay between two lines of a stream (the scripted decode).
    pub chunk_delay: Duration,
    /// Endpoints (`"GET /api/version"`) that answer otherwise than normally.
    pub answers: Vec<(String, Answer)>,
    /// How `/api/chat` answers.
    pub chat: ChatScript,
    /// More models the server lists in `/api/tags` and describes in `/api/show` (their own
    /// `details` and `model_info`); they cannot be loaded.
    pub catalog: Vec<CatalogModel>,
    /// How `/api/embed` answers: one vector per input from this function, or, when `None`,
    /// Ollama's error for a model without embeddings.
    pub embed: Option<EmbedFn>,
}

/// Computes the vector of one input of `/api/embed`.
pub type EmbedFn = Arc<dyn Fn(&str) -> Vec<f32> + Send + Sync>;

/// A model of [`Script::catalog`]: what `/api/tags` and `/api/show` say of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogModel {
    /// Name with tag.
    pub name: String,
    /// `size` in `/api/tags` (bytes).
    pub size: u64,
    /// `details`.
    pub details: Value,
    /// `model_info`.
    pub model_info: Value,
}

impl Script {
    /// A well-behaved server that has `model`.
    pub fn new(model: &str) -> Script {
        Script {
            model: model.to_string(),
            version: VERSION.to_string(),
            listed: true,
            show_found: true,
            thinking: false,
            trained_context: TRAINED_CONTEXT,
            ps_context_length: None,
            prompt_cap: None,
            load: Behaviour::Normal,
            calibration: Behaviour::Normal,
            warmup: Behaviour::Normal,
            measured: Arc::new(|_| Behaviour::Normal),
            preloaded: false,
            sticky: false,
            connection_close: false,
            first_line_delay: Duration::from_millis(15),
            chunk_delay: Duration::from_millis(8),
            answers: Vec::new(),
            chat: ChatScript::default(),
            catalog: Vec::new(),
            embed: None,
        }
    }

    /// The same script with `endpoint` (`"GET /api/version"`) answering as `answer` says.
    pub fn answer(mut self, endpoint: &str, answer: Answer) -> Script {
        self.answers.push((endpoint.to_string(), answer));
        self
    }

    /// The same script with `f` choosing the behaviour of measured trial `n` (1-based).
    pub fn measured(self, f: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> Script {
        Script {
            measured: Arc::new(f),
            ..self
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path, e.g. `/api/generate`.
    pub path: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

impl Recorded {
    /// Whether this is `POST /api/generate`.
    pub fn is_generate(&self) -> bool {
        self.method == "POST" && self.path == "/api/generate"
    }

    /// The `prompt` of a generate request (`""` when absent).
    pub fn prompt(&self) -> &str {
        self.body
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether `keep_alive` is zero (`0`, `"0"`, `"0s"`): an unload when the prompt is empty.
    pub fn keep_alive_zero(&self) -> bool {
        match self.body.get("keep_alive") {
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => matches!(s.as_str(), "0" | "0s" | "0m"),
            _ => false,
        }
    }

    /// Whether this is an unload request.
    pub fn is_unload(&self) -> bool {
        self.is_generate() && self.prompt().is_empty() && self.keep_alive_zero()
    }

    /// Whether this is a load request (empty prompt, `keep_alive` not zero).
    pub fn is_load(&self) -> bool {
        self.is_generate() && self.prompt().is_empty() && !self.keep_alive_zero()
    }

    /// `options.<key>` of the body.
    pub fn option(&self, key: &str) -> Option<&Value> {
        self.body.get("options").and_then(|o| o.get(key))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loaded {
    num_ctx: u64,
    num_batch: Option<u64>,
    num_thread: Option<u64>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    loaded: Option<Loaded>,
    prompt_requests: usize,
    /// Requests per scripted endpoint so far.
    answered: std::collections::HashMap<String, usize>,
    /// Chat: the previous prompt and its answer, as rendered.
    chat_cache: String,
    /// Chat: what each request got.
    chat_served: Vec<ChatServed>,
    /// Chat: memory kept on purpose (`ChatScript::leak_bytes_per_turn`).
    leaked: Vec<Vec<u8>>,
}

struct Shared {
    script: Script,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection task must not hide what was recorded.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running scripted server; stops on drop.
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts a server for `script` on `127.0.0.1` at a free port.
    pub fn start(script: Script) -> ScriptedServer {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let loaded = script.preloaded.then_some(Loaded {
            num_ctx: 2048,
            num_batch: None,
            num_thread: None,
        });
        let shared = Arc::new(Shared {
            script,
            state: Mutex::new(State {
                loaded,
                ..State::default()
            }),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("scripted-ollama-{}", addr.port()))
            .spawn(move || serve(listener, for_thread, rx))
            .expect("spawn the scripted server's thread");
        ScriptedServer {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far, in order of arrival (of its complete body).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// The `POST /api/generate` requests received so far.
    pub fn generates(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_generate)
            .collect()
    }

    /// What the chat endpoint did with each request so far.
    pub fn chat_served(&self) -> Vec<ChatServed> {
        self.shared.state().chat_served.clone()
    }

    /// The generate requests that carried a prompt (calibration, warm-up, measured trials).
    pub fn prompt_generates(&self) -> Vec<Recorded> {
        self.generates()
            .into_iter()
            .filter(|r| !r.prompt().is_empty())
            .collect()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the scripted server");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(connection(stream, Arc::clone(&shared)));
                    }
                }
            }
        }
    });
    // Dropping the runtime drops every connection task, stalled ones included.
    drop(rt);
}

/// What to do with the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let req = match read_request(&mut r).await {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        shared.state().requests.push(req.clone());
        let after = match route(&req, &shared, &mut w).await {
            Ok(a) => a,
            Err(_) => return,
        };
        if after == After::Close || shared.script.connection_close {
            let _ = w.shutdown().await;
            return;
        }
    }
}

async fn read_request(r: &mut BufReader<OwnedReadHalf>) -> io::Result<Option<Recorded>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                content_length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; content_length];
    r.read_exact(&mut body).await?;
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
    }))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn connection_header(shared: &Shared) -> &'static str {
    if shared.script.connection_close {
        "Connection: close\r\n"
    } else {
        ""
    }
}

async fn respond_json(
    w: &mut OwnedWriteHalf,
    shared: &Shared,
    status: u16,
    body: &Value,
) -> io::Result<After> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
        reason_phrase(status),
        body.len(),
        connection_header(shared)
    );
    w.write_all(format!("{head}{body}").as_bytes()).await?;
    w.flush().await?;
    Ok(After::KeepAlive)
}

fn not_found(model: &str) -> Value {
    json!({ "error": format!("model '{model}' not found") })
}

fn model_of(body: &Value) -> String {
    body.get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `a` names `b`; a missing tag means `:latest`.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        if s.rsplit('/').next().unwrap_or(s).contains(':') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    norm(a) == norm(b)
}

fn details() -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": ARCH,
        "families": [ARCH],
        "parameter_size": "1.2B",
        "quantization_level": "Q4_K_M"
    })
}

const CREATED_AT: &str = "2026-08-21T10:00:00.103412771Z";

async fn respond_raw(w: &mut OwnedWriteHalf, shared: &Shared, raw: &Raw) -> io::Result<After> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}",
        raw.status,
        reason_phrase(raw.status),
        raw.content_type,
        raw.body.len(),
        connection_header(shared)
    );
    for (k, v) in &raw.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(format!("{head}{}", raw.body).as_bytes())
        .await?;
    w.flush().await?;
    Ok(After::KeepAlive)
}

/// The scripted answer to `req`, if its endpoint has one for this request.
fn scripted_answer(req: &Recorded, shared: &Shared) -> Option<Answer> {
    let key = format!("{} {}", req.method, req.path);
    let (_, answer) = shared.script.answers.iter().find(|(k, _)| *k == key)?;
    let n = {
        let mut st = shared.state();
        let c = st.answered.entry(key).or_insert(0);
        *c += 1;
        *c - 1
    };
    match answer {
        Answer::Then(list) => list.get(n).cloned().map(Answer::Always),
        other => Some(other.clone()),
    }
}

async fn route(req: &Recorded, shared: &Shared, w: &mut OwnedWriteHalf) -> io::Result<After> {
    let script = &shared.script;
    match scripted_answer(req, shared) {
        Some(Answer::Always(raw)) => return respond_raw(w, shared, &raw).await,
        Some(Answer::Never) => {
            // Held until the server's runtime is dropped with the test.
            std::future::pending::<()>().await;
            return Ok(After::Close);
        }
        Some(Answer::Then(_)) | None => {}
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/version") => {
            respond_json(w, shared, 200, &json!({ "version": script.version })).await
        }
        ("GET", "/api/tags") => {
            let mut models = vec![json!({
                "name": "other-model:latest",
                "model": "other-model:latest",
                "modified_at": CREATED_AT,
                "size": 987_654_321u64,
                "digest": "0000000000000000000000000000000000000000000000000000000000000000",
                "details": details()
            })];
            if script.listed {
                models.insert(
                    0,
                    json!({
                        "name": script.model,
                        "model": script.model,
                        "modified_at": CREATED_AT,
                        "size": 807_000_000u64,
                        "digest": DIGEST,
                        "details": details()
                    }),
                );
            }
            for m in &script.catalog {
                models.push(json!({
                    "name": m.name,
                    "model": m.name,
                    "modified_at": CREATED_AT,
                    "size": m.size,
                    "digest": DIGEST,
                    "details": m.details
                }));
            }
            respond_json(w, shared, 200, &json!({ "models": models })).await
        }
        ("POST", "/api/show") => {
            let model = model_of(&req.body);
            if let Some(m) = script.catalog.iter().find(|m| same_name(&model, &m.name)) {
                let body = json!({
                    "modelfile": "# Modelfile generated by the scripted server",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "details": m.details,
                    "model_info": m.model_info,
                    "capabilities": ["completion"]
                });
                return respond_json(w, shared, 200, &body).await;
            }
            if !(script.show_found && same_name(&model, &script.model)) {
                return respond_json(w, shared, 404, &not_found(&model)).await;
            }
            let mut capabilities = vec!["completion"];
            if script.thinking {
                capabilities.push("thinking");
            }
            let body = json!({
                "modelfile": "# Modelfile generated by the scripted server",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": details(),
                "model_info": {
                    "general.architecture": ARCH,
                    "general.parameter_count": 1_235_814_400u64,
                    format!("{ARCH}.context_length"): script.trained_context,
                    format!("{ARCH}.block_count"): 16,
                    format!("{ARCH}.attention.head_count"): 32,
                    format!("{ARCH}.attention.head_count_kv"): 8
                },
                "capabilities": capabilities
            });
            respond_json(w, shared, 200, &body).await
        }
        ("GET", "/api/ps") => {
            let loaded = shared.state().loaded;
            let models: Vec<Value> = loaded
                .map(|l| {
                    json!({
                        "name": script.model,
                        "model": script.model,
                        "size": PS_SIZE_BYTES,
                        "digest": DIGEST,
                        "details": details(),
                        "expires_at": "2026-08-21T10:10:00Z",
                        "size_vram": 0,
                        "context_length": script.ps_context_length.unwrap_or(l.num_ctx)
                    })
                })
                .into_iter()
                .collect();
            respond_json(w, shared, 200, &json!({ "models": models })).await
        }
        ("POST", "/api/generate") => generate(req, shared, w).await,
        ("POST", "/api/chat") => chat(req, shared, w).await,
        ("POST", "/api/embed") => {
            let model = model_of(&req.body);
            let inputs: Vec<String> = match req.body.get("input") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            match &script.embed {
                Some(f) => {
                    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|i| f(i)).collect();
                    let tokens: u64 = inputs
                        .iter()
                        .map(|i| i.len() as u64 / CHARS_PER_TOKEN)
                        .sum();
                    respond_json(
                        w,
                        shared,
                        200,
                        &json!({
                            "model": model,
                            "embeddings": embeddings,
                            "total_duration": 1_000_000u64,
                            "load_duration": 0u64,
                            "prompt_eval_count": tokens
                        }),
                    )
                    .await
                }
                None => {
                    respond_json(
                        w,
                        shared,
                        400,
                        &json!({ "error": format!("\"{model}\" does not support embeddings") }),
                    )
                    .await
                }
            }
        }
        _ => {
            let body = "404 page not found";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                body.len(),
                connection_header(shared)
            );
            w.write_all(format!("{head}{body}").as_bytes()).await?;
            Ok(After::KeepAlive)
        }
    }
}

fn u64_option(body: &Value, key: &str) -> Option<u64> {
    body.get("options")
        .and_then(|o| o.get(key))
        .and_then(Value::as_u64)
}

/// Loads the model with the request's options (as Ollama's scheduler does: a different
/// `num_ctx`, `num_batch` or `num_thread` reloads it). Returns the `load_duration` (ns).
fn ensure_loaded(shared: &Shared, body: &Value) -> u64 {
    let wanted = Loaded {
        num_ctx: u64_option(body, "num_ctx").unwrap_or(4096),
        num_batch: u64_option(body, "num_batch"),
        num_thread: u64_option(body, "num_thread"),
    };
    let mut st = shared.state();
    if st.loaded == Some(wanted) {
        WARM_LOAD_NS
    } else {
        st.loaded = Some(wanted);
        COLD_LOAD_NS
    }
}

async fn generate(req: &Recorded, shared: &Shared, w: &mut OwnedWriteHalf) -> io::Result<After> {
    let script = &shared.script;
    let model = model_of(&req.body);
    if !same_name(&model, &script.model) {
        return respond_json(w, shared, 404, &not_found(&model)).await;
    }
    let prompt = req.prompt();
    if prompt.is_empty() {
        if req.keep_alive_zero() {
            if !script.sticky {
                shared.state().loaded = None;
            }
            let body = json!({
                "model": script.model,
                "created_at": CREATED_AT,
                "response": "",
                "done": true,
                "done_reason": "unload"
            });
            return respond_json(w, shared, 200, &body).await;
        }
        if let Behaviour::HttpError { status, message } = &script.load {
            return respond_json(w, shared, *status, &json!({ "error": message })).await;
        }
        let load_ns = ensure_loaded(shared, &req.body);
        let body = json!({
            "model": script.model,
            "created_at": CREATED_AT,
            "response": "",
            "done": true,
            "done_reason": "load",
            "load_duration": load_ns,
            "total_duration": load_ns + 1_000
        });
        return respond_json(w, shared, 200, &body).await;
    }

    let index = {
        let mut st = shared.state();
        st.prompt_requests += 1;
        st.prompt_requests - 1
    };
    let behaviour = match index {
        0 | 1 => script.calibration.clone(),
        2 => script.warmup.clone(),
        n => (script.measured)(n - 2),
    };
    let started = Instant::now();
    match &behaviour {
        Behaviour::HttpError { status, message } => {
            return respond_json(w, shared, *status, &json!({ "error": message })).await;
        }
        Behaviour::StallBeforeFirst { secs } => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            return Ok(After::Close);
        }
        Behaviour::Busy { secs } => return respond_raw(w, shared, &Raw::busy(*secs)).await,
        _ => {}
    }
    let load_ns = ensure_loaded(shared, &req.body);
    let num_predict = match u64_option(&req.body, "num_predict") {
        Some(n) if n > 0 => n.min(MAX_OUTPUT_TOKENS),
        _ => MAX_OUTPUT_TOKENS,
    };
    let evaluated = {
        let n = prompt.len() as u64 / CHARS_PER_TOKEN;
        script.prompt_cap.map_or(n, |cap| n.min(cap))
    };
    tokio::time::sleep(script.first_line_delay).await;
    let prefill_ns = started.elapsed().as_nanos() as u64;
    let decode_start = Instant::now();

    let mut out = ChunkedWriter::new(w, shared);
    out.split = behaviour == Behaviour::SplitLines;
    if let Behaviour::HugeLine { bytes } = &behaviour {
        // `{"response":"xxxx…` without an end: the client must give up before the newline.
        let mut line = br#"{"model":"m","response":""#.to_vec();
        line.resize(*bytes, b'x');
        for piece in line.chunks(64 * 1024) {
            out.chunk(piece).await?;
        }
        out.chunk(b"\"}\n").await?;
        return Ok(After::Close);
    }
    let (chunks, thinking) = match &behaviour {
        Behaviour::Thinking { chunks } => (num_predict as usize, *chunks),
        Behaviour::ErrorLine { after, .. }
        | Behaviour::CutAfter { chunks: after, .. }
        | Behaviour::StallAfter { chunks: after, .. } => (*after, 0),
        _ => (num_predict as usize, 0),
    };
    let gap = match &behaviour {
        Behaviour::Slow { gap } => *gap,
        _ => script.chunk_delay,
    };
    for i in 0..chunks {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let line = if i < thinking {
            json!({"model": script.model, "created_at": CREATED_AT, "response": "", "thinking": "hmm ", "done": false})
        } else {
            json!({"model": script.model, "created_at": CREATED_AT, "response": "tok ", "done": false})
        };
        out.line(&line).await?;
    }
    match &behaviour {
        Behaviour::ErrorLine { message, .. } => {
            tokio::time::sleep(script.chunk_delay).await;
            out.line(&json!({ "error": message })).await?;
            out.end().await?;
            Ok(After::KeepAlive)
        }
        Behaviour::CutAfter { clean: true, .. } => {
            out.end().await?;
            Ok(After::KeepAlive)
        }
        Behaviour::CutAfter { clean: false, .. } => Ok(After::Close),
        Behaviour::StallAfter { secs, .. } => {
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            Ok(After::Close)
        }
        _ => {
            tokio::time::sleep(script.chunk_delay).await;
            let load_ns = match behaviour {
                Behaviour::LoadDuration(ns) => ns,
                _ => load_ns,
            };
            let eval_ns = decode_start.elapsed().as_nanos() as u64;
            let mut last = json!({
                "model": script.model,
                "created_at": CREATED_AT,
                "response": "",
                "done": true,
                "done_reason": "length",
                "total_duration": started.elapsed().as_nanos() as u64 + load_ns,
                "load_duration": load_ns,
                "prompt_eval_count": evaluated,
                "prompt_eval_duration": prefill_ns,
                "eval_count": num_predict,
                "eval_duration": eval_ns
            });
            if let Behaviour::FinalFields(Value::Object(fields)) = &behaviour {
                for (k, v) in fields {
                    last[k] = v.clone();
                }
            }
            out.line(&last).await?;
            out.end().await?;
            Ok(After::KeepAlive)
        }
    }
}

/// The scripted chat template of `messages`, message by message (the generation prompt last).
fn render(messages: &[Value]) -> Vec<String> {
    let mut parts: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                "<{}>\n{}\n",
                m.get("role").and_then(Value::as_str).unwrap_or(""),
                m.get("content").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    parts.push("<assistant>\n".to_string());
    parts
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

async fn chat(req: &Recorded, shared: &Shared, w: &mut OwnedWriteHalf) -> io::Result<After> {
    let script = &shared.script;
    let cs = &script.chat;
    let model = model_of(&req.body);
    if !same_name(&model, &script.model) {
        return respond_json(w, shared, 404, &not_found(&model)).await;
    }
    let started = Instant::now();
    let load_ns = ensure_loaded(shared, &req.body);
    let mut messages: Vec<Value> = req
        .body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let received = messages.len();
    let tokens_of = |m: &[Value]| render(m).concat().len() as u64 / CHARS_PER_TOKEN;
    if let Some(cap) = cs.drop_above_tokens {
        while tokens_of(&messages) > cap && messages.len() > 2 {
            messages.remove(1);
        }
    }
    let parts = render(&messages);
    let prompt = parts.concat();
    let count = prompt.len() as u64 / CHARS_PER_TOKEN;
    let (n, cached) = {
        let mut st = shared.state();
        let n = st.chat_served.len() + 1;
        let common = common_prefix(&st.chat_cache, &prompt);
        // Nothing is reused unless at least the system message is common.
        let cached = if cs.prefix_cache && common >= parts[0].len() {
            common as u64 / CHARS_PER_TOKEN
        } else {
            0
        };
        if cs.leak_turns.is_none_or(|t| n <= t) && cs.leak_bytes_per_turn > 0 {
            // Written, so that the pages are resident.
            st.leaked.push(vec![0x5a; cs.leak_bytes_per_turn]);
        }
        (n, cached.min(count))
    };
    let processed = count - cached;
    let prefill_ns = processed * CHAT_NS_PER_TOKEN;
    tokio::time::sleep(Duration::from_nanos(prefill_ns)).await;
    let num_predict = match u64_option(&req.body, "num_predict") {
        Some(n) if n > 0 => n.min(MAX_OUTPUT_TOKENS),
        _ => MAX_OUTPUT_TOKENS,
    };
    let failed = cs.fail_every.is_some_and(|k| n % k == 0);
    // The answer, padded to whole tokens and cut at num_predict tokens.
    let mut answer = (cs.answer)(&messages);
    while !answer.len().is_multiple_of(CHARS_PER_TOKEN as usize) {
        answer.push(' ');
    }
    let chunks: Vec<String> = answer
        .as_bytes()
        .chunks(CHARS_PER_TOKEN as usize)
        .take(num_predict as usize)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let decode_start = Instant::now();
    let mut out = ChunkedWriter::new(w, shared);
    for (i, c) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(script.chunk_delay).await;
        }
        out.line(&json!({"model": script.model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": c}, "done": false}))
            .await?;
        if failed {
            break;
        }
    }
    let served = ChatServed {
        n,
        messages: (received, messages.len()),
        prompt_tokens: count,
        processed,
        eval_count: chunks.len() as u64,
        failed,
    };
    if failed {
        shared.state().chat_served.push(served);
        tokio::time::sleep(script.chunk_delay).await;
        out.line(&json!({ "error": "scripted failure: the runner went away" }))
            .await?;
        out.end().await?;
        return Ok(After::KeepAlive);
    }
    {
        let mut st = shared.state();
        st.chat_cache = format!("{prompt}{}", chunks.concat());
        st.chat_served.push(served);
    }
    tokio::time::sleep(script.chunk_delay).await;
    let eval_ns = decode_start.elapsed().as_nanos() as u64;
    let last = json!({
        "model": script.model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": ""},
        "done": true,
        "done_reason": "stop",
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": load_ns,
        "prompt_eval_count": count,
        "prompt_eval_duration": prefill_ns,
        "eval_count": chunks.len(),
        "eval_duration": eval_ns
    });
    out.line(&last).await?;
    out.end().await?;
    Ok(After::KeepAlive)
}

/// Writes an NDJSON stream as a chunked body: headers go out together with the first line.
struct ChunkedWriter<'a> {
    w: &'a mut OwnedWriteHalf,
    shared: &'a Shared,
    started: bool,
    split: bool,
}

impl<'a> ChunkedWriter<'a> {
    fn new(w: &'a mut OwnedWriteHalf, shared: &'a Shared) -> Self {
        ChunkedWriter {
            w,
            shared,
            started: false,
            split: false,
        }
    }

    fn head(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n{}\r\n",
                    connection_header(self.shared)
                )
                .as_bytes(),
            );
        }
    }

    async fn line(&mut self, v: &Value) -> io::Result<()> {
        let mut data = serde_json::to_vec(v).expect("JSON values serialize");
        data.push(b'\n');
        if self.split {
            let (a, b) = data.split_at(data.len() / 2);
            self.chunk(a).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            return self.chunk(b).await;
        }
        self.chunk(&data).await
    }

    async fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        self.head(&mut out);
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out).await?;
        self.w.flush().await
    }

    async fn end(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        self.head(&mut out);
        out.extend_from_slice(b"0\r\n\r\n");
        self.w.write_all(&out).await?;
        self.w.flush().await
    }
}
