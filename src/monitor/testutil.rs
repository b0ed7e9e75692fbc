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
