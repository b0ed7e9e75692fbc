//! Live test of o3-refserver against the real llama.cpp backend and the two reference models.
//!
//! Needs the backend from harness/setup-backend.sh: O3_LLAMA_BIN_DIR and O3_MODELS_DIR in the
//! environment, or `$O3_CACHE/backend.env` (default `~/.cache/o3-suite/backend.env`). Without it
//! the test prints why and passes, unless O3_REQUIRE_BACKEND=1, which turns that into a failure.
//! Every network wait has a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SMOL: &str = "smollm2:135m";
const GEMMA: &str = "gemma3:270m";

struct Backend {
    llama_server: PathBuf,
    models_dir: PathBuf,
}

fn find_backend() -> Result<Backend, String> {
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
struct Server {
    child: Option<Child>,
    base: String,
    log_dir: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(b: &Backend) -> Server {
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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
}

/// The response to POSTing `body` to `path` (the test fails if it cannot be sent).
async fn send_post(c: &reqwest::Client, s: &Server, path: &str, body: &Value) -> reqwest::Response {
    c.post(format!("{}{path}", s.base))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

async fn post(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = send_post(c, s, path, &body).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"));
    (status, v)
}

/// POST `body` to `/api/generate`.
async fn generate(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    post(c, s, "/api/generate", body).await
}

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    c.get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap()
}

/// A streamed request: every NDJSON object, in order, with its arrival time.
async fn stream(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> Vec<(Instant, Value)> {
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
fn runners(pid: u32) -> Vec<(u32, String)> {
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

fn one_runner(s: &Server) -> (u32, String) {
    let r = runners(s.pid());
    assert_eq!(r.len(), 1, "expected one runner child, got {r:?}");
    r.into_iter().next().unwrap()
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|x| x.1.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gone(pid)
}

fn rss_kb(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("RssAnon") || l.starts_with("RssFile"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1e6
}

/// A raw prompt of about `words` distinct words.
fn long_prompt(words: usize) -> String {
    (0..words)
        .map(|i| format!("item{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of a raw, non-streamed smollm2 generate of `prompt`.
fn raw_once(prompt: &str, num_ctx: u32, num_predict: i64) -> Value {
    json!({"model": SMOL, "prompt": prompt, "raw": true, "stream": false,
           "options": {"num_ctx": num_ctx, "num_predict": num_predict}})
}

/// The body of a load-only generate (no prompt) of `model` at `num_ctx`.
fn load_only(model: &str, num_ctx: u32) -> Value {
    json!({"model": model, "options": {"num_ctx": num_ctx}})
}

/// `body` with `truncate: false`.
fn no_truncate(mut body: Value) -> Value {
    body["truncate"] = json!(false);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reference_server() {
    let backend = match find_backend() {
        Ok(b) => b,
        Err(why) => {
            if std::env::var("O3_REQUIRE_BACKEND").as_deref() == Ok("1") {
                panic!("O3_REQUIRE_BACKEND=1 but the backend is not available: {why}");
            }
            eprintln!("skipping the live o3-refserver test: {why}");
            return;
        }
    };
    let server = start_server(&backend).await;
    let c = http();

    // Version, tags, show.
    let v = get(&c, &server, "/api/version").await;
    assert!(v["version"].as_str().unwrap().starts_with("0.33.0"), "{v}");
    let text = c
        .get(&server.base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "Ollama is running");
    let tags = get(&c, &server, "/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&SMOL) && names.contains(&GEMMA), "{names:?}");
    for m in tags["models"].as_array().unwrap() {
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["size"].as_u64().unwrap() > 50_000_000);
    }
    let (st, show) = post(&c, &server, "/api/show", json!({"model": SMOL})).await;
    assert_eq!(st, 200);
    assert_eq!(
        show["model_info"]["llama.context_length"], 8192,
        "{}",
        show["model_info"]
    );
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["details"]["quantization_level"], "Q4_1");
    assert!(show["modelfile"].as_str().unwrap().contains("FROM /"));
    let (st, show) = post(&c, &server, "/api/show", json!({"name": GEMMA})).await;
    assert_eq!(st, 200);
    assert_eq!(show["model_info"]["gemma3.context_length"], 32768);
    let (st, e) = post(&c, &server, "/api/show", json!({"model": "nope:1b"})).await;
    assert_eq!(
        (st, e["error"].as_str().unwrap()),
        (404, "model 'nope:1b' not found")
    );

    // Streamed raw generate.
    let gen_body = |ctx: u32, prompt: &str, n: i64| {
        json!({"model": SMOL, "prompt": prompt, "raw": true,
               "options": {"num_ctx": ctx, "num_predict": n, "temperature": 0, "seed": 1}})
    };
    let t = Instant::now();
    let lines = stream(
        &c,
        &server,
        "/api/generate",
        gen_body(2048, "[run 1] The capital of France is", 16),
    )
    .await;
    let done = &lines.last().unwrap().1;
    assert_eq!(done["done"], true, "{done}");
    let chunks: Vec<&Value> = lines[..lines.len() - 1].iter().map(|(_, v)| v).collect();
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    for ch in &chunks {
        assert_eq!(ch["done"], false);
        assert_eq!(ch["model"], SMOL);
        assert!(!ch["response"].as_str().unwrap().is_empty());
    }
    assert!(done["eval_count"].as_u64().unwrap() > 0, "{done}");
    assert!(done["prompt_eval_count"].as_u64().unwrap() > 0, "{done}");
    assert!(matches!(
        done["done_reason"].as_str(),
        Some("stop" | "length")
    ));
    eprintln!(
        "smollm2 cold load num_ctx 2048: load_duration {:.0} ms (wall {:.0} ms), prompt_eval_count {}, eval_count {}",
        ms(&done["load_duration"]),
        t.elapsed().as_secs_f64() * 1e3,
        done["prompt_eval_count"],
        done["eval_count"]
    );

    // The runner is a direct child with --model <path> on its command line.
    let (pid1, cmd) = one_runner(&server);
    assert!(cmd.contains("llama-server"), "{cmd}");
    assert!(cmd.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{cmd}");
    assert!(cmd.contains("-c 2048"), "{cmd}");
    let ps = get(&c, &server, "/api/ps").await;
    let m = &ps["models"][0];
    assert_eq!(m["name"], SMOL);
    assert_eq!(m["context_length"], 2048);
    assert!(m["size"].as_u64().unwrap() > 50_000_000, "{m}");
    eprintln!(
        "smollm2 num_ctx 2048: /api/ps size {} bytes, runner RSS {}",
        m["size"],
        rss_kb(pid1)
    );

    // Same options: no reload, tiny load_duration.
    let (st, v) = generate(&c, &server, raw_once("[run 2] Hello", 2048, 4)).await;
    assert_eq!(st, 200, "{v}");
    assert!(ms(&v["load_duration"]) < 100.0, "{v}");
    assert_eq!(one_runner(&server).0, pid1);

    // A num_ctx change reloads: long load_duration, new runner pid, old one gone.
    let (st, v) = generate(&c, &server, raw_once("[run 3] Hello", 4096, 4)).await;
    assert_eq!(st, 200, "{v}");
    assert!(ms(&v["load_duration"]) > 100.0, "{v}");
    let (pid2, cmd) = one_runner(&server);
    assert_ne!(pid1, pid2);
    assert!(cmd.contains("-c 4096"), "{cmd}");
    assert!(
        wait_gone(pid1, Duration::from_secs(10)).await,
        "old runner {pid1} still alive"
    );
    eprintln!(
        "smollm2 reload num_ctx 4096: load_duration {:.0} ms, runner RSS {}",
        ms(&v["load_duration"]),
        rss_kb(pid2)
    );

    // Truncation: a prompt longer than num_ctx keeps about half of it.
    let prompt = format!("[run 4] {}", long_prompt(1200));
    let (st, v) = generate(&c, &server, raw_once(&prompt, 2048, 1)).await;
    assert_eq!(st, 200, "{v}");
    let n = v["prompt_eval_count"].as_u64().unwrap();
    assert!(
        (1024..=1030).contains(&n),
        "prompt_eval_count {n} after truncation at num_ctx 2048"
    );
    eprintln!(
        "truncation at num_ctx 2048: prompt_eval_count {n} (expected 1026, or 1027 with a BOS)"
    );
    let (st, v) = generate(&c, &server, no_truncate(raw_once(&prompt, 2048, 1))).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"], "the input length exceeds the context length");

    // Streamed chat through the model's chat template.
    let lines = stream(
        &c,
        &server,
        "/api/chat",
        json!({"model": SMOL, "messages": [{"role": "user", "content": "[run 5] Say hello."}],
               "options": {"num_ctx": 2048, "num_predict": 8, "temperature": 0}}),
    )
    .await;
    let done = &lines.last().unwrap().1;
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["message"]["role"], "assistant");
    assert!(lines.len() >= 2);
    assert!(lines[0].1["message"]["content"].as_str().is_some());

    // Errors.
    let (st, v) = generate(&c, &server, json!({"model": "nope:1b", "prompt": "x"})).await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (404, "model 'nope:1b' not found")
    );
    let (st, v) = generate(&c, &server, json!({"model": SMOL, "keep_alive": "-1"})).await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "time: missing unit in duration \"-1\"")
    );
    let (st, _) = generate(&c, &server, json!({"prompt": "x"})).await;
    assert_eq!(st, 400);

    // keep_alive 0 unloads: /api/ps empty and the runner gone within 10 s.
    let (pid3, _) = one_runner(&server);
    let (st, v) = generate(&c, &server, json!({"model": SMOL, "keep_alive": 0})).await;
    assert_eq!(st, 200);
    assert_eq!(v["done_reason"], "unload", "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = get(&c, &server, "/api/ps").await;
        if ps["models"].as_array().unwrap().is_empty() && gone(pid3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded after keep_alive 0: {ps}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Gemma 3 load times at two contexts (load-only requests), and the model switch.
    for ctx in [2048u32, 8192] {
        let (st, v) = generate(&c, &server, load_only(GEMMA, ctx)).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["done_reason"], "load");
        let (pid, _) = one_runner(&server);
        let ps = get(&c, &server, "/api/ps").await;
        assert_eq!(ps["models"][0]["context_length"], ctx);
        eprintln!(
            "gemma3 load num_ctx {ctx}: load_duration {:.0} ms, /api/ps size {}, runner RSS {}",
            ms(&v["load_duration"]),
            ps["models"][0]["size"],
            rss_kb(pid)
        );
    }
    // Loading smollm2 with max-loaded 1 unloads gemma first.
    let (gemma_pid, _) = one_runner(&server);
    let (st, v) = generate(&c, &server, load_only(SMOL, 8192)).await;
    assert_eq!(st, 200, "{v}");
    eprintln!(
        "smollm2 load num_ctx 8192: load_duration {:.0} ms",
        ms(&v["load_duration"])
    );
    assert!(wait_gone(gemma_pid, Duration::from_secs(10)).await);
    let (smol_pid, _) = one_runner(&server);

    // SIGTERM: the server exits and takes its runner with it.
    let spid = server.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_gone(smol_pid, Duration::from_secs(10)).await,
        "runner survived SIGTERM"
    );
    let mut server = server;
    let mut child = server.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "server exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(server);

    // SIGKILL: the runner must not outlive the server (PR_SET_PDEATHSIG).
    let server = start_server(&backend).await;
    let (st, v) = generate(&c, &server, load_only(SMOL, 2048)).await;
    assert_eq!(st, 200, "{v}");
    let (pid, _) = one_runner(&server);
    let mut server = server;
    let mut child = server.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)).await,
        "runner {pid} outlived a SIGKILLed server"
    );
}
