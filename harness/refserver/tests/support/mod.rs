//! What the live tests share: finding the backend, starting this crate's server on a free
//! loopback port (killed on drop, logs kept when a test panics), HTTP helpers with timeouts,
//! and the runner processes under the server.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const SMOL: &str = "smollm2:135m";
pub const GEMMA: &str = "gemma3:270m";

pub struct Backend {
    pub llama_server: PathBuf,
    pub models_dir: PathBuf,
}

/// The backend, or `None` (with the reason printed) when it is missing and
/// O3_REQUIRE_BACKEND is not 1; with O3_REQUIRE_BACKEND=1 a missing backend fails the test.
pub fn backend_or_skip(test: &str) -> Option<Backend> {
    match find_backend() {
        Ok(b) => Some(b),
        Err(why) => {
            if std::env::var("O3_REQUIRE_BACKEND").as_deref() == Ok("1") {
                panic!("O3_REQUIRE_BACKEND=1 but the backend is not available: {why}");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

pub fn find_backend() -> Result<Backend, String> {
    let mut bin = std::env::var("O3_LLAMA_BIN_DIR")
        .ok()
        .filter(|s| !s.is_empty());
    let mut models = std::env::var("O3_MODELS_DIR")
        .ok()
        .filter(|s| !s.is_empty());
    if bin.is_none() || models.is_none() {
        let cache = std::env::var("O3_CACHE")
            .ok()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var("HOME")
                    .ok()
                    .map(|h| Path::new(&h).join(".cache/o3-suite"))
            })
            .ok_or("neither O3_LLAMA_BIN_DIR/O3_MODELS_DIR nor HOME is set")?;
        let env_file = cache.join("backend.env");
        let text = std::fs::read_to_string(&env_file).map_err(|e| {
            format!(
                "O3_LLAMA_BIN_DIR/O3_MODELS_DIR not set and {} unreadable ({e}); run harness/setup-backend.sh",
                env_file.display()
            )
        })?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').to_string();
                match k.trim() {
                    "O3_LLAMA_BIN_DIR" if bin.is_none() => bin = Some(v),
                    "O3_MODELS_DIR" if models.is_none() => models = Some(v),
                    _ => {}
                }
            }
        }
    }
    let bin = bin.ok_or("O3_LLAMA_BIN_DIR not found")?;
    let models = models.ok_or("O3_MODELS_DIR not found")?;
    let llama_server = Path::new(&bin).join("llama-server");
    if !llama_server.is_file() {
        return Err(format!("{} does not exist", llama_server.display()));
    }
    let models_dir = PathBuf::from(models);
    for f in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        if !models_dir.join(f).is_file() {
            return Err(format!("{} missing", models_dir.join(f).display()));
        }
    }
    Ok(Backend {
        llama_server,
        models_dir,
    })
}

/// The server process; killed (SIGKILL) on drop, including when a test panics.
pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub log_dir: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("server and runner logs kept in {}", self.log_dir.display());
            if let Ok(rd) = std::fs::read_dir(&self.log_dir) {
                for e in rd.flatten() {
                    eprintln!("  {}", e.path().display());
                }
            }
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_server(b: &Backend) -> Server {
    let port = free_port();
    let log_dir =
        std::env::temp_dir().join(format!("o3-refserver-live-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let stderr = std::fs::File::create(log_dir.join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_o3-refserver"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--models-dir")
        .arg(&b.models_dir)
        .arg("--llama-server")
        .arg(&b.llama_server)
        .arg("--log-dir")
        .arg(&log_dir)
        .arg("--load-timeout")
        .arg("90s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning o3-refserver");
    let server = Server {
        child: Some(child),
        base: format!("http://127.0.0.1:{port}"),
        log_dir,
    };
    let client = http();
    // Startup hashes the model files once (cached in a sidecar after that): allow for a debug build.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client
            .get(format!("{}/api/version", server.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "o3-refserver did not answer within 120 s; see {}",
            server.log_dir.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
}

/// The response to POSTing `body` to `path` (the test fails if it cannot be sent).
pub async fn send_post(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    c.post(format!("{}{path}", s.base))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub async fn post(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = send_post(c, s, path, &body).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"));
    (status, v)
}

/// POST `body` to `/api/generate`.
pub async fn generate(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    post(c, s, "/api/generate", body).await
}

pub async fn get(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    c.get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap()
}

/// A streamed request: every NDJSON object, in order, with its arrival time.
pub async fn stream(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    body: Value,
) -> Vec<(Instant, Value)> {
    use futures_util::StreamExt;
    let r = send_post(c, s, path, &body).await;
    assert_eq!(r.status().as_u16(), 200, "{path} status");
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/x-ndjson"
    );
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(120), body.next())
            .await
            .expect("no stream data for 120 s");
        match next {
            Some(chunk) => {
                buf.extend_from_slice(&chunk.expect("stream read"));
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    out.push((Instant::now(), serde_json::from_slice(&line).unwrap()));
                }
            }
            None => break,
        }
    }
    assert!(buf.is_empty(), "trailing bytes without newline");
    out
}

/// Direct children of `pid` whose command line contains `--model`, with their command lines.
pub fn runners(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the ")" that closes comm: state ppid …
        let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid != pid || state == "Z" {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{child}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmd.contains("--model") {
            out.push((child, cmd));
        }
    }
    out
}

pub fn one_runner(s: &Server) -> (u32, String) {
    let r = runners(s.pid());
    assert_eq!(r.len(), 1, "expected one runner child, got {r:?}");
    r.into_iter().next().unwrap()
}

pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|x| x.1.trim_start().starts_with('Z')),
    }
}

pub async fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gone(pid)
}

pub fn rss_kb(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("RssAnon") || l.starts_with("RssFile"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1e6
}

/// A raw prompt of about `words` distinct words.
pub fn long_prompt(words: usize) -> String {
    (0..words)
        .map(|i| format!("item{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of a raw, non-streamed smollm2 generate of `prompt`.
pub fn raw_once(prompt: &str, num_ctx: u32, num_predict: i64) -> Value {
    json!({"model": SMOL, "prompt": prompt, "raw": true, "stream": false,
           "options": {"num_ctx": num_ctx, "num_predict": num_predict}})
}

/// The body of a load-only generate (no prompt) of `model` at `num_ctx`.
pub fn load_only(model: &str, num_ctx: u32) -> Value {
    json!({"model": model, "options": {"num_ctx": num_ctx}})
}

/// `body` with `truncate: false`.
pub fn no_truncate(mut body: Value) -> Value {
    body["truncate"] = json!(false);
    body
}

/// The log of the runner the server started last (`runner-NNN-<model>-<try>.log`, highest NNN).
pub fn latest_runner_log(s: &Server) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&s.log_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("runner-") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    logs.pop()
        .unwrap_or_else(|| panic!("no runner log in {}", s.log_dir.display()))
}

/// What llama-server itself says it processed for one completion: its `print_timings` line
/// `prompt eval time = <prompt_ms> ms / <prompt_n> tokens (…)` (tools/server/server-context.cpp).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptEval {
    pub ms: f64,
    pub tokens: u64,
}

/// Every `prompt eval time` line of a runner log, in order.
pub fn prompt_evals(log: &Path) -> Vec<PromptEval> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("prompt eval time =")?.1;
            let (ms, rest) = rest.split_once(" ms /")?;
            let tokens = rest.split_whitespace().next()?;
            Some(PromptEval {
                ms: ms.trim().parse().ok()?,
                tokens: tokens.parse().ok()?,
            })
        })
        .collect()
}

/// The `n`-th (1-based) `prompt eval time` line of `log`, waiting up to 5 s for the runner to
/// print it.
pub async fn nth_prompt_eval(log: &Path, n: usize) -> PromptEval {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let evals = prompt_evals(log);
        if evals.len() >= n {
            return evals[n - 1];
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} prompt eval lines, expected {n}",
            log.display(),
            evals.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of the server's own log (`server.log`) that contain `needle`.
pub fn server_log_lines(s: &Server, needle: &str) -> Vec<String> {
    std::fs::read_to_string(s.log_dir.join("server.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}
