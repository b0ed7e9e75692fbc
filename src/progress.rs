//! Live progress of a running suite: `comparative_analysis/progress.json`, and the same object
//! as `progress.js` (`window.O3_PROGRESS = {…};`), rewritten atomically at every trial of a cell
//! and every turn of a session.
//!
//! The HTML report ([`crate::report::html`]) loads `progress.js` with a `<script>` tag — a page
//! opened from disk may load a script next to it but may not fetch a JSON file — and shows the
//! test running, its step and its latest figures: a dashboard without a server (refresh to see
//! the latest). `progress.json` is the same for scripts. Both are status files, not reports:
//! they carry a clock and are not part of the goldens.
//!
//! A test announces itself with [`start`] (the cell runner and the session runner do), which
//! returns a guard; the runners' per-trial and per-turn lines go to [`step`], the verdict to
//! [`finish`]. The current test is kept per thread, as each test runs on its own thread (and, under
//! nextest, in its own process). A file that cannot be written is reported once on stderr and does
//! not stop the test.

use std::cell::RefCell;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::date::rfc3339;
use crate::rundir::{RunDir, write_atomic};

/// Version of the progress file format.
pub const FORMAT_VERSION: u32 = 1;

/// `progress.json`'s name inside `comparative_analysis/`.
pub const JSON_FILE: &str = "progress.json";
/// `progress.js`'s name inside `comparative_analysis/`.
pub const JS_FILE: &str = "progress.js";

/// What kind of test is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// A matrix cell or an optimizer probe (`src/runner.rs`).
    Cell,
    /// A sustained session (`src/agentic`).
    Session,
}

/// Whether the test is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running: `line` is its latest step.
    Running,
    /// Finished: `line` is its verdict.
    Finished,
}

/// The content of `progress.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The run.
    pub run_id: String,
    /// The test, e.g. `smollm2_135m::ctx_2k`.
    pub test: String,
    /// Cell or session.
    pub kind: TestKind,
    /// Running or finished.
    pub state: State,
    /// The step reached: measured trial of a cell, turn of a session (0 before the first).
    pub step: u32,
    /// The most steps the test takes, when known (a cell's maximum trials).
    pub steps: Option<u32>,
    /// The latest line the runner printed for the test (figures of the step, or the verdict).
    pub line: String,
    /// Seconds since the test started.
    pub elapsed_s: f64,
    /// When the file was written (RFC 3339, UTC).
    pub updated_at: String,
}

struct Current {
    run: RunDir,
    progress: Progress,
    started: Instant,
    warned: bool,
}

std::thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Ends the thread's current test when dropped (also on panic).
#[must_use = "progress is recorded while the guard lives"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Announces `test` of `run_id` on this thread and writes its first progress.
pub fn start(run: &RunDir, run_id: &str, test: &str, kind: TestKind) -> Guard {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            run: run.clone(),
            progress: Progress {
                format_version: FORMAT_VERSION,
                run_id: run_id.to_string(),
                test: test.to_string(),
                kind,
                state: State::Running,
                step: 0,
                steps: None,
                line: "starting".to_string(),
                elapsed_s: 0.0,
                updated_at: String::new(),
            },
            started: Instant::now(),
            warned: false,
        })
    });
    write_current();
    Guard(())
}

/// Records step `step` (of at most `steps`) of the thread's current test, with the runner's line.
/// Does nothing when no test was announced.
pub fn step(step: u32, steps: Option<u32>, line: &str) {
    update(|p| {
        p.step = step;
        p.steps = steps;
        p.line = line.to_string();
    });
}

/// Records that the current test finished, with its verdict line.
pub fn finish(line: &str) {
    update(|p| {
        p.state = State::Finished;
        p.line = line.to_string();
    });
}

fn update(f: impl FnOnce(&mut Progress)) {
    let announced = CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(cur) => {
            f(&mut cur.progress);
            true
        }
        None => false,
    });
    if announced {
        write_current();
    }
}

/// `progress.js`: the object as a script the report can load from disk.
pub fn script(p: &Progress) -> String {
    let json = serde_json::to_string(p).expect("progress serializes");
    format!("window.O3_PROGRESS = {};\n", json.replace("</", "<\\/"))
}

fn write_current() {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(cur) = c.as_mut() else { return };
        cur.progress.elapsed_s = (cur.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        cur.progress.updated_at = rfc3339(SystemTime::now());
        let json = serde_json::to_string_pretty(&cur.progress).expect("progress serializes") + "\n";
        let result =
            write_atomic(&cur.run.report_path(JSON_FILE), json.as_bytes()).and_then(|()| {
                write_atomic(
                    &cur.run.report_path(JS_FILE),
                    script(&cur.progress).as_bytes(),
                )
            });
        if let Err(e) = result
            && !cur.warned
        {
            cur.warned = true;
            eprintln!(
                "[{}] warning: progress not written (the run goes on): {e}",
                cur.progress.test
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rundir::load_json;

    #[test]
    fn start_step_finish_write_json_and_script() {
        let root = std::env::temp_dir().join(format!("o3-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = RunDir::at(root.clone());
        {
            let _guard = start(&run, "run-1", "m::ctx_2k", TestKind::Cell);
            let p: Progress = load_json(&run.report_path(JSON_FILE)).unwrap();
            assert_eq!(
                (p.state, p.step, p.line.as_str()),
                (State::Running, 0, "starting")
            );
            step(3, Some(6), "trial 3/6: ttft 0.21 s");
            let p: Progress = load_json(&run.report_path(JSON_FILE)).unwrap();
            assert_eq!((p.step, p.steps), (3, Some(6)));
            assert_eq!(p.line, "trial 3/6: ttft 0.21 s");
            assert_eq!(p.run_id, "run-1");
            let js = std::fs::read_to_string(run.report_path(JS_FILE)).unwrap();
            let body = js
                .strip_prefix("window.O3_PROGRESS = ")
                .and_then(|s| s.strip_suffix(";\n"))
                .unwrap();
            let from_js: Progress = serde_json::from_str(body).unwrap();
            assert_eq!(from_js.line, p.line);
            finish("PASS: all gates");
            let p: Progress = load_json(&run.report_path(JSON_FILE)).unwrap();
            assert_eq!(p.state, State::Finished);
        }
        // After the guard: steps are not recorded.
        step(9, None, "ignored");
        let p: Progress = load_json(&run.report_path(JSON_FILE)).unwrap();
        assert_eq!(p.line, "PASS: all gates");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn script_cannot_close_its_element() {
        let mut p = Progress {
            format_version: FORMAT_VERSION,
            run_id: "r".into(),
            test: "t".into(),
            kind: TestKind::Session,
            state: State::Running,
            step: 1,
            steps: None,
            line: "answer </script><b>".into(),
            elapsed_s: 1.0,
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        assert!(!script(&p).contains("</script>"));
        p.line.clear();
        assert!(script(&p).starts_with("window.O3_PROGRESS = {"));
    }
}
