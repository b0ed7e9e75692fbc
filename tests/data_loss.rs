//! Nothing lost, end to end: the `context_scaling` binary with a table that would lose rows, a
//! result that cannot be written, and two runs against one server at once. No real server is
//! involved: `OLLAMA_HOST` points at a closed port, or at a listener that accepts and never
//! answers (so a run holds its locks while a second one tries).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use o3_suite::lock::{self, Holder};

#[path = "support/binary.rs"]
mod binary;
use binary::binary;

/// A fresh directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("data-loss-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

const HEADER: &str = "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case";

/// Writes a table of `rows` into `dir`; returns its path.
fn table(dir: &Path, rows: &[&str]) -> PathBuf {
    let path = dir.join("matrix.csv");
    let mut text = format!("# a test table\n{HEADER}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    fs::write(&path, text).unwrap();
    path
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// The binary with a clean environment and `envs`, its output going to files in `dir`.
fn command(dir: &Path, tag: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("OLLAMA_HOST")
        .env_remove("O3_REQUIRE_SERVER")
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("O3_RUN_ID")
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join(format!("{tag}.stdout"))).unwrap())
        .stderr(fs::File::create(dir.join(format!("{tag}.stderr"))).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// A child process killed (and reaped) when dropped, so no test leaves one behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end, killing it after `limit`; returns (success, stdout + stderr).
fn run(mut cmd: Command, dir: &Path, tag: &str, limit: Duration) -> (bool, String) {
    let mut child = Running(cmd.spawn().expect("the test binary runs"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{tag} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = fs::read_to_string(dir.join(format!("{tag}.stdout"))).unwrap()
        + &fs::read_to_string(dir.join(format!("{tag}.stderr"))).unwrap();
    (status.success(), out)
}

/// A server stand-in that accepts connections and never answers, until dropped.
struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const ROW: &str = "a,m,c,2048,,8,2,30,1,0.5,u";

/// Generous timeouts, so that a cell against the silent server stays in its preflight (holding
/// its locks) until the test kills it.
const PATIENT: [(&str, &str); 4] = [
    ("O3_CONNECT_TIMEOUT_S", "300"),
    ("O3_FIRST_CHUNK_TIMEOUT_S", "300"),
    ("O3_CHUNK_GAP_TIMEOUT_S", "300"),
    ("O3_TRIAL_TIMEOUT_S", "600"),
];

/// A result file that cannot be written fails the test, naming the path and the cause, even
/// though the cell itself would only have been ignored (SKIPPED: no server).
#[test]
fn a_result_that_cannot_be_written_fails_the_test() {
    let dir = scratch("unwritable");
    let matrix = table(&dir, &[ROW]);
    let results = dir.join("results");
    // A directory where the result file should go: the rename onto it fails, even as root.
    let blocked = results.join("r1/cells/a__ctx_2k.json");
    fs::create_dir_all(&blocked).unwrap();
    let host = format!("127.0.0.1:{}", closed_port());
    let cmd = command(
        &dir,
        "unwritable",
        &[
            ("OLLAMA_HOST", &host),
            ("O3_MATRIX", matrix.to_str().unwrap()),
            ("O3_RESULTS_DIR", results.to_str().unwrap()),
            ("O3_RUN_ID", "r1"),
        ],
    );
    let (ok, out) = run(cmd, &dir, "unwritable", Duration::from_secs(120));
    assert!(!ok, "the test must fail:\n{out}");
    assert!(out.contains("the result was not written"), "{out}");
    assert!(
        out.contains(&format!("failed to write {}", blocked.display())),
        "{out}"
    );
    assert!(
        out.contains("without the file the test would have ignored"),
        "{out}"
    );
    assert!(out.contains("test result: FAILED"), "{out}");
    fs::remove_dir_all(&dir).unwrap();
}

/// Tables that would lose rows or files stop before any test, naming the file and the line.
#[test]
fn tables_that_would_lose_data_are_errors_naming_file_and_line() {
    let dir = scratch("tables");
    let long = format!("{},m,c,2048,,8,2,30,1,0.5,u", "n".repeat(300));
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &[
                ROW,
                "b,m,c,2048,,8,2,30,1,0.5,\"unclosed",
                "c,m,c,4K,,8,2,30,1,0.5,u",
            ],
            ":4",
            "never closed",
        ),
        (&[ROW, "", "# c", &long], ":6", "at most 64"),
        (&["", "", "b,m,c,2Q,,8,2,30,1,0.5,u"], ":5", "num_ctx"),
    ];
    for (i, (rows, line, needle)) in cases.iter().enumerate() {
        let matrix = table(&dir, rows);
        let tag = format!("table{i}");
        let cmd = command(
            &dir,
            &tag,
            &[
                ("OLLAMA_HOST", &format!("127.0.0.1:{}", closed_port())),
                ("O3_MATRIX", matrix.to_str().unwrap()),
                ("O3_RESULTS_DIR", dir.join("results").to_str().unwrap()),
            ],
        );
        let (ok, out) = run(cmd, &dir, &tag, Duration::from_secs(60));
        assert!(!ok, "{out}");
        let at = format!("invalid matrix {}{line}", matrix.display());
        assert!(out.contains(&at), "expected {at:?} in:\n{out}");
        assert!(out.contains(needle), "{out}");
        assert!(!dir.join("results").exists(), "no test ran: {out}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Waits until the lock file at `path` names `pid` as its holder.
fn wait_for_holder(path: &Path, pid: u32, child: &mut Running) -> Holder {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(h) = fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Holder>(&t).ok())
            .filter(|h| h.pid == pid)
        {
            return h;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the first run ended before it was seen holding {}",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "no lock at {} after 60 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A second run against a server that a run is measuring is refused, naming the holder; so is a
/// second run writing the same run directory; neither touches the first run's files; once the
/// first run is killed (-9), its locks are free.
#[test]
fn a_second_run_against_a_busy_server_or_run_directory_is_refused() {
    let dir = scratch("locks");
    let matrix = table(&dir, &[ROW]);
    let results = dir.join("results");
    let server = SilentServer::start();
    let envs = |host: &str, run_id: &'static str| {
        let mut v: Vec<(String, String)> = vec![
            ("OLLAMA_HOST".into(), host.to_string()),
            ("O3_MATRIX".into(), matrix.to_str().unwrap().into()),
            ("O3_RESULTS_DIR".into(), results.to_str().unwrap().into()),
            ("O3_RUN_ID".into(), run_id.into()),
        ];
        v.extend(PATIENT.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };
    let cmd_of = |tag: &str, envs: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        command(&dir, tag, &pairs)
    };

    let mut first = Running(
        cmd_of("first", envs(&server.url(), "run-a"))
            .spawn()
            .expect("the test binary runs"),
    );
    let server_lock = lock::server_lock_path(&results, &server.url());
    let run_lock = lock::run_lock_path(&results.join("run-a"));
    let holder = wait_for_holder(&server_lock, first.0.id(), &mut first);
    assert_eq!(holder.run_id, "run-a");
    wait_for_holder(&run_lock, first.0.id(), &mut first);
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let before = listing(&results.join("run-a"));

    // Same server, another run id: refused on the server lock, and nothing is created.
    let (ok, out) = run(
        cmd_of("second", envs(&server.url(), "run-b")),
        &dir,
        "second",
        Duration::from_secs(60),
    );
    assert!(!ok, "{out}");
    let who = format!(
        "server {} is already in use by another run (pid {}, run id run-a, started {})",
        lock::server_key(&server.url()),
        holder.pid,
        holder.started_at
    );
    assert!(out.contains(&who), "expected {who:?} in:\n{out}");
    assert!(!results.join("run-b").exists(), "{out}");

    // Another server, the same run id: refused on the run directory's lock.
    let other = SilentServer::start();
    let (ok, out) = run(
        cmd_of("third", envs(&other.url(), "run-a")),
        &dir,
        "third",
        Duration::from_secs(60),
    );
    assert!(!ok, "{out}");
    let who = format!(
        "run directory {} is already in use by another run (pid {}",
        results.join("run-a").display(),
        holder.pid
    );
    assert!(out.contains(&who), "expected {who:?} in:\n{out}");
    assert_eq!(
        listing(&results.join("run-a")),
        before,
        "the first run's files"
    );
    let still: Holder = serde_json::from_str(&fs::read_to_string(&server_lock).unwrap()).unwrap();
    assert_eq!(
        still, holder,
        "the refused run left the holder's name alone"
    );

    // kill -9: the OS releases the locks of a dead process.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let me = Holder::this_process("check");
    lock::try_acquire(&server_lock, "server", &me).expect("the server lock is free again");
    lock::try_acquire(&run_lock, "run", &me).expect("the run lock is free again");
    drop(first);
    drop((server, other));
    fs::remove_dir_all(&dir).unwrap();
}
