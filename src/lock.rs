//! Locks that keep two runs apart: one per server measured and one per run directory.
//!
//! A lock is an OS file lock (`flock` on Unix, `LockFileEx` on Windows, through
//! [`std::fs::File::try_lock`]) on a small file, taken without waiting. The OS releases it when
//! the file is closed — when the process exits, and also when it is killed (even with
//! `kill -9`), so a crashed run never leaves a stale lock behind; no pid file is trusted. The
//! holder writes who it is (pid, run id, start time) into the file, and a refused run quotes
//! it. File locks belong to an open file: two handles opened separately contend even inside
//! one process.
//!
//! ```text
//! <results dir>/.locks/<host>_<port>.lock   the server a run is measuring
//! <results dir>/<run id>/.lock              the run directory a run is writing
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Directory (under the results directory) of the server locks.
pub const LOCKS_DIR: &str = ".locks";
/// File name of a run directory's lock.
pub const RUN_LOCK: &str = ".lock";

/// Who holds a lock, as written into its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// The run id of the holder's run.
    pub run_id: String,
    /// When it took the lock (RFC 3339, UTC).
    pub started_at: String,
}

impl Holder {
    /// This process, in run `run_id`, from now.
    pub fn this_process(run_id: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            run_id: run_id.to_string(),
            started_at: crate::date::rfc3339(std::time::SystemTime::now()),
        }
    }
}

/// A lock held: released when dropped, or when the process ends however it ends.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    _file: File,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file (another process, or another handle) holds it.
    #[error(
        "{what} is already in use by another run ({}); wait for that run to finish, or stop it (lock file {path})",
        holder_text(.holder)
    )]
    Held {
        /// What the lock protects, e.g. `server 127.0.0.1:11434`.
        what: String,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, when its file says (it may not have written it yet).
        holder: Option<Holder>,
    },
    /// The lock file could not be created, opened, locked or written.
    #[error("cannot take the lock {path} ({what}): {source}")]
    Io {
        /// What the lock protects.
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => format!(
            "pid {}, run id {}, started {}",
            h.pid, h.run_id, h.started_at
        ),
        None => "its holder has not written its name yet".to_string(),
    }
}

/// Takes the lock at `path` (created with its directory when missing) without waiting, and
/// writes `holder` into it. `what` names what the lock protects, for messages.
pub fn try_acquire(path: &Path, what: &str, holder: &Holder) -> Result<Lock, LockError> {
    let io = |source| LockError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                what: what.to_string(),
                path: path.to_path_buf(),
                holder: serde_json::from_str(&text).ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let mut json = serde_json::to_vec(holder).map_err(|e| io(std::io::Error::other(e)))?;
    json.push(b'\n');
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(&json))
        .and_then(|()| file.flush())
        .map_err(io)?;
    Ok(Lock {
        path: path.to_path_buf(),
        _file: file,
    })
}

/// The `host:port` a server URL points at (`http://user:pw@Host:11434` → `host:11434`), with
/// `localhost` as `127.0.0.1` so the two spellings of this machine share one lock.
pub fn server_key(base_url: &str) -> String {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_ascii_lowercase();
    match host_port.strip_prefix("localhost") {
        Some(port) if port.is_empty() || port.starts_with(':') => format!("127.0.0.1{port}"),
        _ => host_port,
    }
}

/// The lock file of the server at `base_url`: `<results dir>/.locks/<host>_<port>.lock`
/// (anything but letters, digits, `.` and `-` in the host turned into `_`).
pub fn server_lock_path(results_dir: &Path, base_url: &str) -> PathBuf {
    let key: String = server_key(base_url)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    results_dir.join(LOCKS_DIR).join(format!("{key}.lock"))
}

/// The lock file of a run directory: `<run>/.lock`.
pub fn run_lock_path(run_root: &Path) -> PathBuf {
    run_root.join(RUN_LOCK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("o3-lock-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[rstest]
    #[case("http://127.0.0.1:11434", "127.0.0.1:11434")]
    #[case("http://user:secret@Host.example:8080", "host.example:8080")]
    #[case("https://localhost:11435", "127.0.0.1:11435")]
    #[case("http://localhost.example:1", "localhost.example:1")]
    #[case("http://[::1]:11434", "[::1]:11434")]
    fn keys(#[case] url: &str, #[case] key: &str) {
        assert_eq!(server_key(url), key);
    }

    #[test]
    fn lock_paths_hold_no_credentials() {
        let p = server_lock_path(Path::new("/r"), "http://user:secret@[::1]:11434");
        assert_eq!(p, Path::new("/r/.locks/___1__11434.lock"));
        assert_eq!(
            server_lock_path(Path::new("/r"), "http://127.0.0.1:11434"),
            Path::new("/r/.locks/127.0.0.1_11434.lock")
        );
    }

    /// File locks belong to an open file: a second handle is refused while the first is open,
    /// with the first holder's name, and succeeds once it is closed.
    #[test]
    fn a_second_handle_is_refused_with_the_holder_until_the_first_is_dropped() {
        let dir = temp("handles");
        let path = dir.join(".locks/h_1.lock");
        let first = Holder {
            pid: 4242,
            run_id: "run-a".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        let lock = try_acquire(&path, "server h:1", &first).unwrap();
        assert_eq!(lock.path(), path);
        let second = Holder::this_process("run-b");
        let err = try_acquire(&path, "server h:1", &second).unwrap_err();
        match &err {
            LockError::Held { holder, .. } => assert_eq!(holder.as_ref(), Some(&first)),
            other => panic!("expected Held, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("server h:1 is already in use by another run"),
            "{msg}"
        );
        assert!(
            msg.contains("pid 4242, run id run-a, started 2026-01-01T00:00:00Z"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        drop(lock);
        let again = try_acquire(&path, "server h:1", &second).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let written: Holder = serde_json::from_str(&text).unwrap();
        assert_eq!(
            written, second,
            "the new holder replaced the old one's name"
        );
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_that_cannot_be_created_names_its_path() {
        let dir = temp("io");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("file"), "").unwrap();
        let path = dir.join("file/.locks/x.lock");
        let err = try_acquire(&path, "server x", &Holder::this_process("r")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
