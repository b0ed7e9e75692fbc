//! Test helpers: child processes that look like runners, killed even when a test panics.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Kills and reaps a child when dropped, so a failing test leaves no process behind.
pub(crate) struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Spawns `cmd` (output discarded), killed when the guard is dropped.
    pub(crate) fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }
}

/// A child of this process whose argv holds `extra`: a shell blocked on the `read` builtin (it
/// does not fork or exec, so `/proc/<pid>/cmdline` keeps `extra`).
pub(crate) fn spawn_sh(extra: &[&str]) -> ChildGuard {
    let mut args = vec!["-c", "read _", "sh"];
    args.extend_from_slice(extra);
    ChildGuard(
        Command::new("sh")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    )
}

/// A child that looks like a runner: `--model <file>` in its argv.
pub(crate) fn spawn_runner() -> ChildGuard {
    spawn_sh(&["--model", "/tmp/o3-monitor-test.gguf"])
}

/// The child's pid.
pub(crate) fn child_pid(c: &ChildGuard) -> u32 {
    c.0.id()
}

/// Kills and reaps the child now.
pub(crate) fn kill(c: ChildGuard) {
    drop(c);
}

static TREE: Mutex<()> = Mutex::new(());

/// Serialises the tests that give this process runner-like children or compare its memory over
/// time (a runner exiting, or 200 MB freed, in the middle of another test's window would shift
/// that test's figures).
pub(crate) fn lock_tree() -> MutexGuard<'static, ()> {
    TREE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fake `/proc` tree in a directory of its own, removed when dropped: `net/tcp`, `stat`, and
/// per process `stat`, `cmdline` and `fd/*` links (a process without `fd` stands for another
/// user's, whose open files cannot be listed).
pub(crate) struct FakeProc {
    root: std::path::PathBuf,
}

impl FakeProc {
    pub(crate) fn new() -> FakeProc {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("o3-fakeproc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("net")).expect("fake /proc");
        FakeProc { root }
    }

    pub(crate) fn procfs(&self) -> super::procfs::ProcFs {
        super::procfs::ProcFs::at(&self.root)
    }

    /// Writes `rel` (relative to the root) with `text`.
    pub(crate) fn write(&self, rel: &str, text: &str) -> &FakeProc {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        self
    }

    /// A process: its `stat` line (comm, ppid, utime + stime as `ticks`, start time) and argv.
    pub(crate) fn process(
        &self,
        pid: u32,
        comm: &str,
        ppid: u32,
        ticks: u64,
        argv: &[&str],
    ) -> &FakeProc {
        self.stat(pid, comm, ppid, ticks, 1000);
        let mut raw = argv.join("\0");
        raw.push('\0');
        self.write(&format!("{pid}/cmdline"), &raw)
    }

    /// `<pid>/stat`: `ticks` of user time (no system time) and the start time `start`.
    pub(crate) fn stat(
        &self,
        pid: u32,
        comm: &str,
        ppid: u32,
        ticks: u64,
        start: u64,
    ) -> &FakeProc {
        self.write(
            &format!("{pid}/stat"),
            &format!(
                "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {ticks} 0 0 0 20 0 4 0 {start} 0 0\n"
            ),
        )
    }

    /// The machine's `stat`: `cpu` user/system/idle ticks over `cpus` CPUs (split evenly).
    pub(crate) fn cpu(&self, user: u64, system: u64, idle: u64, cpus: u32) -> &FakeProc {
        let mut text = format!("cpu  {user} 0 {system} {idle} 0 0 0 0 0 0\n");
        let n = u64::from(cpus);
        for i in 0..cpus {
            text.push_str(&format!(
                "cpu{i} {} 0 {} {} 0 0 0 0 0 0\n",
                user / n,
                system / n,
                idle / n
            ));
        }
        text.push_str("intr 0\nctxt 0\n");
        self.write("stat", &text)
    }

    /// A LISTEN socket on 127.0.0.1:`port` with `inode` in `net/tcp`.
    pub(crate) fn listen(&self, port: u16, inode: u64) -> &FakeProc {
        self.write(
            "net/tcp",
            &format!(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                 0: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            ),
        )
    }

    /// `pid` holds the sockets `inodes` open (its `fd` directory, readable).
    pub(crate) fn fds(&self, pid: u32, inodes: &[u64]) -> &FakeProc {
        let dir = self.root.join(format!("{pid}/fd"));
        std::fs::create_dir_all(&dir).expect("mkdir fd");
        for (i, inode) in inodes.iter().enumerate() {
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join((i + 3).to_string()))
                .expect("fd link");
        }
        self
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
