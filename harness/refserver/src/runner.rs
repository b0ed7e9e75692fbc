//! llama-server runner processes: spawn, health wait, log capture, kill.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

use crate::log;

/// Lines of runner output kept in memory for error messages.
const TAIL_LINES: usize = 50;

/// Load-time options: a difference in any of them means a reload, as in Ollama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOpts {
    /// Effective context (after clamping to the trained context).
    pub num_ctx: u32,
    pub num_batch: u32,
    /// 0 = llama.cpp's default (no `-t`).
    pub num_thread: u32,
}

impl LoadOpts {
    pub const DEFAULT_NUM_CTX: u32 = 4096;
    pub const DEFAULT_NUM_BATCH: u32 = 512;

    /// From request values (None or <= 0 = not given), clamped like Ollama: num_ctx down to the
    /// trained context (when known) and up to at least 4.
    pub fn resolve(
        num_ctx: Option<i64>,
        num_batch: Option<i64>,
        num_thread: Option<i64>,
        trained_ctx: u32,
    ) -> LoadOpts {
        let pos = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| n.min(u32::MAX as i64) as u32);
        let mut ctx = pos(num_ctx).unwrap_or(Self::DEFAULT_NUM_CTX);
        if trained_ctx > 0 && ctx > trained_ctx {
            ctx = trained_ctx;
        }
        LoadOpts {
            num_ctx: ctx.max(4),
            num_batch: pos(num_batch).unwrap_or(Self::DEFAULT_NUM_BATCH),
            num_thread: pos(num_thread).unwrap_or(0),
        }
    }

    /// llama-server's arguments after `--model P --host 127.0.0.1 --port N`, as Ollama v0.33
    /// builds them for a CPU-only load (ollama/ollama `llm/llama_server.go` `startLlamaServer`
    /// and its `append*Args` helpers), in its order:
    /// - `--no-webui --offline -c <num_ctx> -np 1`: one slot of `num_ctx` tokens
    ///   (`OLLAMA_NUM_PARALLEL` defaults to 1);
    /// - `--log-verbosity 4 --no-log-prefix --no-log-timestamps` (`appendLlamaServerLogArgs`;
    ///   the "buffer size" lines `/api/ps` needs are printed at that verbosity);
    /// - `--no-jinja --chat-template chatml` when the server renders the prompt itself
    ///   (`appendJinjaArgs` for Go-template models: the GGUF template is never used);
    /// - `--load-mode none`: no mmap (`disableMmapDefaultReason` returns "cpu" on a CPU-only host);
    /// - `--flash-attn auto`; `-b <num_batch> -ub <num_batch>` (`appendBatchArgs`); `-t` only
    ///   when `num_thread` is set;
    /// - `--context-shift --keep 4` (`appendContextShiftArgs`: shift on, `num_keep` 4).
    ///
    /// No `--cache-ram`, `--cache-reuse`, `--swa-full` or `--ctx-checkpoints`: Ollama leaves
    /// llama-server's defaults (host prompt cache 8192 MiB, no chunk reuse, SWA cache of the
    /// window only, 32 checkpoints per slot; `common/common.h`).
    pub fn args(&self, own_template: bool) -> Vec<String> {
        let mut a: Vec<String> = ["--no-webui", "--offline", "-c"].map(String::from).to_vec();
        a.push(self.num_ctx.to_string());
        a.extend(
            [
                "-np",
                "1",
                "--log-verbosity",
                "4",
                "--no-log-prefix",
                "--no-log-timestamps",
            ]
            .map(String::from),
        );
        if own_template {
            a.extend(["--no-jinja", "--chat-template", "chatml"].map(String::from));
        }
        a.extend(["--load-mode", "none", "--flash-attn", "auto", "-b"].map(String::from));
        a.push(self.num_batch.to_string());
        a.push("-ub".into());
        a.push(self.num_batch.to_string());
        if self.num_thread > 0 {
            a.push("-t".into());
            a.push(self.num_thread.to_string());
        }
        a.extend(["--context-shift", "--keep", "4"].map(String::from));
        a
    }
}

/// Whether a loaded runner must be replaced to serve a request with `wanted` options.
pub fn needs_reload(loaded: &LoadOpts, wanted: &LoadOpts) -> bool {
    loaded != wanted
}

/// Sum of the "… buffer size = X MiB" lines llama.cpp prints (model, KV, compute), in bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BufferSizes {
    pub model: u64,
    pub kv: u64,
    pub compute: u64,
}

impl BufferSizes {
    pub fn total(&self) -> u64 {
        self.model + self.kv + self.compute
    }

    /// Feed one log line; returns true when it was a buffer-size line that counted.
    pub fn feed(&mut self, line: &str) -> bool {
        match parse_buffer_line(line) {
            Some((kind, bytes)) => {
                match kind {
                    BufferKind::Model => self.model += bytes,
                    BufferKind::Kv => self.kv += bytes,
                    BufferKind::Compute => self.compute += bytes,
                }
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    Model,
    Kv,
    Compute,
}

/// Parse e.g. `load_tensors:   CPU_Mapped model buffer size =    98.00 MiB` or
/// `llama_kv_cache:        CPU KV buffer size =    24.00 MiB`.
pub fn parse_buffer_line(line: &str) -> Option<(BufferKind, u64)> {
    let (head, tail) = line.split_once(" buffer size = ")?;
    let kind = match head.split_whitespace().last()? {
        "model" => BufferKind::Model,
        "KV" => BufferKind::Kv,
        "compute" => BufferKind::Compute,
        _ => return None,
    };
    let mut it = tail.split_whitespace();
    let num: f64 = it.next()?.parse().ok()?;
    let mult = match it.next()? {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((kind, (num * mult).round() as u64))
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("llama-server process has terminated: {status}: {tail}")]
    Terminated { status: String, tail: String },
    #[error("llama-server did not become healthy within {secs} s: {tail}")]
    Timeout { secs: u64, tail: String },
    #[error("starting llama-server ({path}): {err}")]
    Spawn { path: String, err: String },
}

#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    buffers: BufferSizes,
    file: Option<std::fs::File>,
}

impl LogState {
    fn push(&mut self, line: &str) {
        self.buffers.feed(line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Spawns runner processes from one long-lived thread.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process; tokio's
/// blocking-pool threads come and go, so all forks happen on this thread, which lives as long as
/// the server process.
#[derive(Clone)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<(Command, oneshot::Sender<std::io::Result<Child>>)>,
}

impl Spawner {
    pub fn new(rt: tokio::runtime::Handle) -> Spawner {
        let (tx, rx) =
            std::sync::mpsc::channel::<(Command, oneshot::Sender<std::io::Result<Child>>)>();
        std::thread::Builder::new()
            .name("runner-spawner".into())
            .spawn(move || {
                let _guard = rt.enter();
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the runner-spawner thread");
        Spawner { tx }
    }

    async fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .map_err(|_| std::io::Error::other("runner-spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("runner-spawner thread dropped the request"))?
    }
}

/// Make the runner get SIGKILL when the spawning thread (and so this server) dies, even by
/// SIGKILL, so that no runner outlives the server.
#[allow(unsafe_code)]
#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It only makes two raw syscalls
    // (prctl(PR_SET_PDEATHSIG) and getppid) through nix's thin wrappers: no allocation, no locks,
    // nothing that is not async-signal-safe. If the parent already died between fork and prctl
    // (getppid no longer matches), the spawn fails instead of leaving an orphan.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

pub struct SpawnSpec<'a> {
    pub llama_server: &'a Path,
    pub model_path: &'a Path,
    pub opts: LoadOpts,
    pub log_path: PathBuf,
    pub load_timeout: Duration,
    pub extra_args: &'a [String],
    /// The server renders this model's prompts itself (see [`LoadOpts::args`]).
    pub own_template: bool,
}

/// A running llama-server child.
pub struct Runner {
    pub pid: u32,
    pub port: u16,
    pub base_url: String,
    pub log_path: PathBuf,
    state: Arc<Mutex<LogState>>,
    exit_rx: watch::Receiver<Option<String>>,
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(r: R, state: Arc<Mutex<LogState>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    state.lock().unwrap().push(line);
                }
            }
        }
    });
}

impl Runner {
    /// Spawn a runner and wait until `/health` answers 200.
    pub async fn start(
        spec: SpawnSpec<'_>,
        spawner: &Spawner,
        http: &reqwest::Client,
    ) -> Result<Runner, RunnerError> {
        let spawn_err = |err: String| RunnerError::Spawn {
            path: spec.llama_server.display().to_string(),
            err,
        };
        let port = free_port().map_err(|e| spawn_err(format!("no free port: {e}")))?;
        let mut args: Vec<String> = vec![
            "--model".into(),
            spec.model_path.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ];
        args.extend(spec.opts.args(spec.own_template));
        args.extend(spec.extra_args.iter().cloned());
        let mut cmd = Command::new(spec.llama_server);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        set_parent_death_signal(&mut cmd);

        let file = std::fs::File::create(&spec.log_path).ok();
        let state = Arc::new(Mutex::new(LogState {
            file,
            ..LogState::default()
        }));
        {
            let mut st = state.lock().unwrap();
            let cmdline = format!("{} {}", spec.llama_server.display(), args.join(" "));
            if let Some(f) = st.file.as_mut() {
                let _ = writeln!(f, "# {cmdline}");
            }
        }
        let mut child = spawner
            .spawn(cmd)
            .await
            .map_err(|e| spawn_err(e.to_string()))?;
        let pid = child.id().unwrap_or(0);
        if let Some(out) = child.stdout.take() {
            pump(out, state.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, state.clone());
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let desc = match child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exit_tx.send(Some(desc));
        });
        log!(
            "INFO",
            "runner pid {pid} started: {} {} (log {})",
            spec.llama_server.display(),
            args.join(" "),
            spec.log_path.display()
        );
        let runner = Runner {
            pid,
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path: spec.log_path.clone(),
            state,
            exit_rx,
        };
        runner.wait_healthy(http, spec.load_timeout).await?;
        Ok(runner)
    }

    async fn wait_healthy(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(), RunnerError> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/health", self.base_url);
        let mut exit_rx = self.exit_rx.clone();
        loop {
            if let Some(desc) = self.exit_status() {
                // Give the log pumps a moment to drain the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(RunnerError::Terminated {
                    status: desc,
                    tail: self.error_summary(),
                });
            }
            if Instant::now() >= deadline {
                self.kill().await;
                return Err(RunnerError::Timeout {
                    secs: timeout.as_secs(),
                    tail: self.error_summary(),
                });
            }
            let probe = http.get(&url).timeout(Duration::from_secs(2)).send().await;
            if let Ok(resp) = probe
                && resp.status().is_success()
            {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = exit_rx.changed() => {}
            }
        }
    }

    /// `Some(description)` once the process has exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exit_rx.borrow().clone()
    }

    /// Why a request to the runner failed: its exit status and last error lines if it died
    /// (waiting briefly for the exit to be observed), else `fallback`.
    pub async fn failure_reason(&self, fallback: String) -> String {
        let mut rx = self.exit_rx.clone();
        let _ =
            tokio::time::timeout(Duration::from_millis(500), rx.wait_for(|s| s.is_some())).await;
        match self.exit_status() {
            Some(s) => format!(
                "llama-server process has terminated: {s}: {}",
                self.error_summary()
            ),
            None => fallback,
        }
    }

    pub fn alive(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Bytes from the "buffer size" lines (model + KV + compute), as Ollama's `/api/ps` `size`.
    pub fn memory_size(&self) -> u64 {
        self.state.lock().unwrap().buffers.total()
    }

    pub fn buffers(&self) -> BufferSizes {
        self.state.lock().unwrap().buffers.clone()
    }

    /// The last output lines that look like errors, else the last few lines, on one line.
    pub fn error_summary(&self) -> String {
        let st = self.state.lock().unwrap();
        let errs: Vec<&str> = st
            .tail
            .iter()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("error") || l.contains("failed") || l.contains("exception")
            })
            .map(String::as_str)
            .collect();
        let pick: Vec<&str> = if errs.is_empty() {
            st.tail
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(String::as_str)
                .collect()
        } else {
            errs.into_iter().rev().take(3).rev().collect()
        };
        if pick.is_empty() {
            "no output".to_string()
        } else {
            pick.join(" | ")
        }
    }

    /// SIGKILL the process (if still running) and wait up to 10 s for it to be reaped.
    pub async fn kill(&self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut rx = self.exit_rx.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.is_some())).await;
        log!(
            "INFO",
            "runner pid {} stopped ({})",
            self.pid,
            self.exit_status().unwrap_or_else(|| "still running".into())
        );
    }
}

impl Drop for Runner {
    /// A runner nobody holds any more must not keep running (e.g. a load abandoned because the
    /// client went away).
    fn drop(&mut self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            log!("INFO", "runner pid {} killed (abandoned)", self.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_defaults_and_clamp() {
        let o = LoadOpts::resolve(None, None, None, 8192);
        assert_eq!(
            o,
            LoadOpts {
                num_ctx: 4096,
                num_batch: 512,
                num_thread: 0
            }
        );
        let tail = "-np 1 --log-verbosity 4 --no-log-prefix --no-log-timestamps";
        assert_eq!(
            o.args(false).join(" "),
            format!(
                "--no-webui --offline -c 4096 {tail} --load-mode none --flash-attn auto \
                 -b 512 -ub 512 --context-shift --keep 4"
            )
        );
        let o = LoadOpts::resolve(Some(100_000), Some(1024), Some(2), 8192);
        assert_eq!(o.num_ctx, 8192);
        assert_eq!(
            o.args(true).join(" "),
            format!(
                "--no-webui --offline -c 8192 {tail} --no-jinja --chat-template chatml \
                 --load-mode none --flash-attn auto -b 1024 -ub 1024 -t 2 --context-shift --keep 4"
            )
        );
        assert_eq!(LoadOpts::resolve(Some(1), None, None, 0).num_ctx, 4);
        assert_eq!(LoadOpts::resolve(Some(0), Some(-5), None, 0).num_batch, 512);
    }

    #[test]
    fn reload_decision() {
        let a = LoadOpts::resolve(Some(2048), None, None, 8192);
        assert!(!needs_reload(
            &a,
            &LoadOpts::resolve(Some(2048), None, None, 8192)
        ));
        assert!(needs_reload(
            &a,
            &LoadOpts::resolve(Some(4096), None, None, 8192)
        ));
        assert!(needs_reload(
            &a,
            &LoadOpts::resolve(Some(2048), Some(256), None, 8192)
        ));
        assert!(needs_reload(
            &a,
            &LoadOpts::resolve(Some(2048), None, Some(2), 8192)
        ));
        // Absent and default are the same load.
        assert!(!needs_reload(
            &LoadOpts::resolve(None, None, None, 8192),
            &LoadOpts::resolve(Some(4096), Some(512), Some(0), 8192)
        ));
        // Both clamp to the trained context: no reload.
        assert!(!needs_reload(
            &LoadOpts::resolve(Some(10_000), None, None, 8192),
            &LoadOpts::resolve(Some(20_000), None, None, 8192)
        ));
    }

    #[test]
    fn buffer_lines() {
        assert_eq!(
            parse_buffer_line("load_tensors:   CPU_Mapped model buffer size =    98.00 MiB"),
            Some((BufferKind::Model, 98 * 1024 * 1024))
        );
        assert_eq!(
            parse_buffer_line("llama_kv_cache:        CPU KV buffer size =    22.50 MiB"),
            Some((BufferKind::Kv, 22 * 1024 * 1024 + 512 * 1024))
        );
        assert_eq!(
            parse_buffer_line("llama_context:        CPU compute buffer size =   164.01 MiB"),
            Some((BufferKind::Compute, (164.01f64 * 1048576.0).round() as u64))
        );
        assert_eq!(
            parse_buffer_line("llama_context:        CPU  output buffer size =     0.19 MiB"),
            None
        );
        assert_eq!(parse_buffer_line("main: server is listening"), None);
        let mut b = BufferSizes::default();
        for l in [
            "load_tensors:   CPU_Mapped model buffer size =    98.00 MiB",
            "load_tensors:   CPU_REPACK model buffer size =    10.00 MiB",
            "llama_kv_cache:        CPU KV buffer size =    20.00 MiB",
            "llama_kv_cache_iswa:   CPU KV buffer size =     2.00 MiB",
            "llama_context:        CPU compute buffer size =   100.00 MiB",
            "some other line",
        ] {
            b.feed(l);
        }
        assert_eq!(b.total(), 230 * 1024 * 1024);
    }
}
