//! The `context_scaling` test binary as a user drives it: listing, filtering, and what happens
//! when no server answers. No server is involved: `OLLAMA_HOST` points at a closed port, or (for
//! `--list`) at a listener that only counts connections.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[path = "support/binary.rs"]
mod binary;
use binary::binary;

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

fn results_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("harness-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OLLAMA_HOST")
        .env_remove("O3_MATRIX")
        .env_remove("O3_REQUIRE_SERVER")
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("O3_RUN_ID");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the test binary runs")
}

const USER_CELLS: [&str; 14] = [
    "gemma3_tools_27b::ctx_64k",
    "gemma3_tools_27b::ctx_128k",
    "gemma3_tools_27b::ctx_256k",
    "liquid_rag::ctx_64k",
    "liquid_rag::ctx_128k",
    "liquid_rag::ctx_256k",
    "qwen25_3b::ctx_32k",
    "qwen25_3b::ctx_64k",
    "qwen25_3b::ctx_128k",
    "qwen25_3b::ctx_256k",
    "gemma3_latest::ctx_32k",
    "gemma3_latest::ctx_64k",
    "gemma3_latest::ctx_128k",
    "gemma3_latest::ctx_256k",
];

/// Rows marked `optional` in the user's table: ignored unless `--include-ignored`.
const OPTIONAL_CELLS: [&str; 2] = ["qwen25_3b::ctx_256k", "gemma3_latest::ctx_256k"];

/// A server stand-in that accepts and at once closes every connection, counting them: a
/// client that connects fails fast instead of waiting on it.
struct CountingListener {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingListener {
    fn start() -> CountingListener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            loop {
                let stopping = halt.load(Ordering::Acquire);
                // Drain what is queued; on the last pass after the stop, nothing is missed.
                while l.accept().is_ok() {
                    n.fetch_add(1, Ordering::AcqRel);
                }
                if stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        CountingListener {
            addr,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the listener (after counting every connection already made) and returns the
    /// count.
    fn finish(mut self) -> usize {
        self.halt();
        self.connections.load(Ordering::Acquire)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `--list` is offline: it contacts no server (a listener at `OLLAMA_HOST` sees no connection)
/// and creates no run directory. That is what makes it instant; its wall time is not asserted
/// (the old `< 1 s` check measured how fast a loaded CI machine starts a process, not the
/// harness: a listing that did network or disk work fails the two checks below whatever the
/// machine's speed).
#[test]
fn list_is_offline_and_clean() {
    let server = CountingListener::start();
    let host = server.addr.to_string();
    let dir = results_dir("list");
    let out = run(
        &["--list", "--format", "terse"],
        &[
            ("OLLAMA_HOST", host.as_str()),
            ("O3_RESULTS_DIR", dir.to_str().unwrap()),
        ],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<&str> = stdout
        .lines()
        .map(|l| l.strip_suffix(": test").expect("only `<name>: test` lines"))
        .collect();
    assert_eq!(listed, USER_CELLS);
    assert_eq!(server.finish(), 0, "--list connected to the server");
    // Listing creates no run directory and writes nothing.
    assert!(!dir.exists());
    // nextest also lists the statically ignored tests: the optional 256K rows.
    let out = run(&["--list", "--format", "terse", "--ignored"], &[]);
    let ignored = String::from_utf8(out.stdout).unwrap();
    let ignored: Vec<&str> = ignored
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert_eq!(ignored, OPTIONAL_CELLS);
}

#[test]
fn filters_select_cells() {
    let out = run(&["--list", "gemma3_tools_27b::"], &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    assert_eq!(
        names,
        [
            "gemma3_tools_27b::ctx_64k",
            "gemma3_tools_27b::ctx_128k",
            "gemma3_tools_27b::ctx_256k"
        ]
    );
    let out = run(&["--list", "--exact", "liquid_rag::ctx_128k"], &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().next(),
        Some("liquid_rag::ctx_128k: test")
    );
}

fn cell_files(dir: &Path) -> Vec<String> {
    let run = std::fs::read_link(dir.join("latest")).expect("latest points at the run");
    let mut names: Vec<String> = std::fs::read_dir(dir.join(run).join("cells"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs every cell of the user's table with `OLLAMA_HOST` at a closed port, results in a fresh
/// directory named by `tag`, with `extra` environment; returns the host, that directory and
/// the output.
fn run_every_cell_at_a_closed_port(tag: &str, extra: &[(&str, &str)]) -> (String, PathBuf, Output) {
    let host = format!("127.0.0.1:{}", closed_port());
    let dir = results_dir(tag);
    let mut envs = vec![
        ("OLLAMA_HOST", host.as_str()),
        ("O3_RESULTS_DIR", dir.to_str().unwrap()),
    ];
    envs.extend_from_slice(extra);
    let out = run(&["--test-threads", "2"], &envs);
    (host, dir, out)
}

#[test]
fn closed_port_ignores_every_cell_with_the_host_in_the_reason() {
    let (host, dir, out) = run_every_cell_at_a_closed_port("ignored", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("test result: ok. 0 passed; 0 failed; 14 ignored"),
        "{stdout}"
    );
    for cell in USER_CELLS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("test {cell} ")))
            .unwrap_or_else(|| panic!("no line for {cell} in {stdout}"));
        if OPTIONAL_CELLS.contains(&cell) {
            assert!(line.ends_with("ignored"), "{line}");
        } else {
            assert!(
                line.contains(&format!("server at {host} unreachable")),
                "{line}"
            );
        }
    }
    // Every cell that was attempted left a result file saying what happened.
    let files = cell_files(&dir);
    assert_eq!(files.len(), 12, "{files:?}");
    let run = dir.join("latest");
    let one: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join("cells").join("liquid_rag__ctx_64k.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(one["judgement"]["verdict"], "SKIPPED");
    assert!(
        one["judgement"]["skipped"]
            .as_str()
            .unwrap()
            .contains(&format!("server at {host} unreachable"))
    );
    assert!(
        run.join("comparative_analysis")
            .join("performance_matrix.md")
            .exists()
    );
}

#[test]
fn closed_port_fails_every_cell_when_a_server_is_required() {
    let (host, dir, out) =
        run_every_cell_at_a_closed_port("required", &[("O3_REQUIRE_SERVER", "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("test result: FAILED. 0 passed; 12 failed; 2 ignored"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "cannot run (O3_REQUIRE_SERVER=1): server at {host} unreachable"
        )),
        "{stdout}"
    );
    assert_eq!(cell_files(&dir).len(), 12);
}

#[test]
fn a_bad_table_stops_before_any_test_with_file_and_line() {
    let dir = results_dir("bad-table");
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("bad.csv");
    std::fs::write(
        &table,
        "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case\n\
         a,m,c,64K,1024,8,16,8,6,0.8,u\n\
         b,m,c,lots,1024,8,16,8,6,0.8,u\n",
    )
    .unwrap();
    let out = run(&["--list"], &[("O3_MATRIX", table.to_str().unwrap())]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "invalid matrix {}:3, column `num_ctx`, value \"lots\"",
            table.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_bad_environment_value_is_an_error_naming_the_variable() {
    let out = run(&["--list"], &[("O3_REQUIRE_SERVER", "sometimes")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid O3_REQUIRE_SERVER=\"sometimes\""),
        "{stderr}"
    );
}

#[test]
fn an_out_of_range_timeout_is_an_error_not_a_panic() {
    // Before the ranges, 1e30 s panicked converting to a `Duration`.
    let out = run(&[], &[("O3_TRIAL_TIMEOUT_S", "1e30")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid O3_TRIAL_TIMEOUT_S=\"1e30\": a number of seconds from 0.1 to 86400 (one day)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// One request as [`VersionOnly`] received it.
#[derive(Debug, Clone)]
struct Seen {
    /// `GET /api/version?token=… HTTP/1.1`.
    request_line: String,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
}

/// A server stand-in that answers `GET /api/version` and 404s everything else, one request per
/// connection, recording each request line and `Authorization` header.
struct VersionOnly {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VersionOnly {
    fn start() -> VersionOnly {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, halt) = (seen.clone(), stop.clone());
        let serve = move |stream: std::net::TcpStream| -> std::io::Result<()> {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut r = BufReader::new(stream.try_clone()?);
            let mut request_line = String::new();
            r.read_line(&mut request_line)?;
            let (mut authorization, mut length) = (None, 0usize);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "authorization" => authorization = Some(v.trim().to_string()),
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            r.read_exact(&mut body)?;
            let request_line = request_line.trim_end().to_string();
            let target = request_line.split(' ').nth(1).unwrap_or_default();
            let is_version = request_line.starts_with("GET ")
                && target.split('?').next() == Some("/api/version");
            record.lock().unwrap().push(Seen {
                request_line,
                authorization,
            });
            let (status, body) = if is_version {
                ("200 OK", r#"{"version":"0.33.0"}"#)
            } else {
                ("404 Not Found", "404 page not found")
            };
            let mut w = stream;
            write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            w.flush()
        };
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = serve(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        VersionOnly {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for VersionOnly {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const PASSWORD: &str = "s3cr3tpw";
const TOKEN: &str = "t0k3n";

/// Every file under `dir` (symbolic links not followed: `latest` points inside), with its text.
fn every_file(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                out.push((e.path(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

/// Runs the `liquid_rag` cells with credentials in `OLLAMA_HOST` (userinfo and a token in the
/// query) against `port`; asserts that neither secret is in any file of the run or in any line
/// of the output, that the address is recorded redacted, and returns the output.
fn run_with_credentials(tag: &str, port: u16) -> String {
    let host = format!("http://user:{PASSWORD}@127.0.0.1:{port}?token={TOKEN}");
    let dir = results_dir(tag);
    let out = run(
        &["liquid_rag::"],
        &[
            ("OLLAMA_HOST", host.as_str()),
            ("O3_RESULTS_DIR", dir.to_str().unwrap()),
        ],
    );
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!output.contains("panicked"), "{output}");
    for line in output.lines() {
        assert!(
            !line.contains(PASSWORD) && !line.contains(TOKEN),
            "a secret in the output: {line}"
        );
    }
    // The three cells ran and were reported: the walk below has something to look at.
    assert_eq!(
        cell_files(&dir),
        [
            "liquid_rag__ctx_128k.json",
            "liquid_rag__ctx_256k.json",
            "liquid_rag__ctx_64k.json"
        ]
    );
    let files = every_file(&dir);
    assert!(
        files
            .iter()
            .any(|(p, _)| p.ends_with("comparative_analysis/performance_matrix.md")),
        "{files:?}"
    );
    for (path, text) in &files {
        assert!(
            !text.contains(PASSWORD) && !text.contains(TOKEN),
            "a secret in {}",
            path.display()
        );
    }
    let cell: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("latest/cells/liquid_rag__ctx_64k.json")).unwrap(),
    )
    .unwrap();
    let shown = format!("http://***@127.0.0.1:{port}?token=***");
    assert_eq!(cell["metadata"]["server"], shown.as_str(), "{cell:#}");
    let env = cell["metadata"]["env"].to_string();
    assert!(
        env.contains(&format!("\"OLLAMA_HOST\",\"{shown}\"")),
        "{env}"
    );
    output
}

/// `OLLAMA_HOST` with a user, a password and a token: nothing of them in any file of the run
/// or in the output, at a closed port, at a server that hangs up (the HTTP client's error
/// names the URL it asked for) and at a server that answers.
#[test]
fn credentials_in_ollama_host_reach_no_file_and_no_output() {
    let output = run_with_credentials("credentials-closed", closed_port());
    assert!(output.contains("unreachable"), "{output}");

    let hangs_up = CountingListener::start();
    let output = run_with_credentials("credentials-hangup", hangs_up.addr.port());
    assert!(output.contains("GET /api/version"), "{output}");
    assert!(hangs_up.finish() > 0);

    let server = VersionOnly::start();
    let output = run_with_credentials("credentials-answering", server.addr.port());
    // The cells got past /api/version and were stopped by the 404 of what came next.
    assert!(output.contains("404"), "{output}");
    let seen = server.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    for s in &seen {
        // The credentials are sent: basic auth from the userinfo (`printf user:s3cr3tpw |
        // base64`), and the query on every request.
        assert_eq!(
            s.authorization.as_deref(),
            Some("Basic dXNlcjpzM2NyM3Rwdw=="),
            "{s:?}"
        );
        assert!(
            s.request_line.contains(&format!("?token={TOKEN} ")),
            "{s:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.request_line.starts_with("GET /api/version?")),
        "{seen:?}"
    );
}
