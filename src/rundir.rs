//! The run directory: one type that owns its layout, and atomic JSON files in it.
//!
//! ```text
//! <results dir>/
//!   latest -> <run id>                      the newest run (a relative symlink)
//!   <run id>/
//!     cells/<test name, :: → __>.json       one result per cell (crate::results::CellResult)
//!     engine/<benchmark key>.json           llama-bench figures of engine-relative gates
//!     comparative_analysis/                 reports (crate::report), rebuilt after every cell
//!       optimize/<name>.json                the optimizer's search records
//!       integration_configs/                presets, Modelfiles, the Continue config
//! ```
//!
//! Every file is written atomically (a temporary file beside it, then a rename), so a killed
//! test never leaves half a file behind. Every error names the path it concerns.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::date;
use crate::results::CellResult;

/// Directory of the cell results.
pub const CELLS_DIR: &str = "cells";
/// Directory of the session results ([`crate::agentic`]).
pub const SESSIONS_DIR: &str = "sessions";
/// Where quality results go ([`crate::quality`]).
pub const QUALITY_DIR: &str = "quality";
/// Subdirectory of the RAG-against-direct results ([`crate::quality::rag`]).
pub const RAG_DIR: &str = "rag";
/// Directory of the reports.
pub const REPORTS_DIR: &str = "comparative_analysis";
/// Directory (under [`REPORTS_DIR`]) of the optimizer's search records.
pub const RECORDS_DIR: &str = "optimize";
/// Directory (under [`REPORTS_DIR`]) of presets, Modelfiles and the Continue config.
pub const INTEGRATION_DIR: &str = "integration_configs";
/// Directory of the engine's own figures (llama-bench), cached per run.
pub const ENGINE_DIR: &str = "engine";
/// The link to the newest run, in the results directory.
pub const LATEST: &str = "latest";

/// Errors of files in a run directory. Every one carries its path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Could not create, write or rename a file.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Could not read a file or directory.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("failed to parse {path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// A run directory. Holding one does not create anything; [`RunDir::create`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (an existing run, or one to be created).
    pub fn at(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// The layout relative to the run directory itself: its paths are the ones to write into
    /// files that point at other files of the run (`cells/m__ctx_8k.json`).
    pub fn relative() -> RunDir {
        RunDir::at(PathBuf::new())
    }

    /// Creates `<results_dir>/<run_id>/cells/` and points `<results_dir>/latest` at the run.
    pub fn create(results_dir: &Path, run_id: &str) -> std::io::Result<RunDir> {
        let dir = RunDir::at(results_dir.join(run_id));
        fs::create_dir_all(dir.cells_dir())?;
        point_latest(results_dir, run_id);
        Ok(dir)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `cells/`.
    pub fn cells_dir(&self) -> PathBuf {
        self.root.join(CELLS_DIR)
    }

    /// The result file of a cell: `cells/<test name with :: → __>.json`.
    pub fn cell_path(&self, test_name: &str) -> PathBuf {
        self.cells_dir().join(cell_file_name(test_name))
    }

    /// The directory of the session results.
    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join(SESSIONS_DIR)
    }

    /// The result file of a session: `sessions/<test name with :: → __>.json`.
    pub fn session_path(&self, test_name: &str) -> PathBuf {
        self.sessions_dir().join(cell_file_name(test_name))
    }

    /// The directory of the quality results ([`crate::quality`]).
    pub fn quality_dir(&self) -> PathBuf {
        self.root.join(QUALITY_DIR)
    }

    /// The result file of a quality test: `quality/<test name with :: → __>.json`.
    pub fn quality_path(&self, test_name: &str) -> PathBuf {
        self.quality_dir().join(cell_file_name(test_name))
    }

    /// The directory of the RAG-against-direct results ([`crate::quality::rag`]).
    pub fn rag_dir(&self) -> PathBuf {
        self.root.join(RAG_DIR)
    }

    /// The result file of a RAG test: `rag/<test name with :: → __>.json`.
    pub fn rag_path(&self, test_name: &str) -> PathBuf {
        self.rag_dir().join(cell_file_name(test_name))
    }

    /// Every cell result of the run, sorted by test name; a file that cannot be read is an
    /// error naming it.
    pub fn read_cells(&self) -> Result<Vec<CellResult>, StoreError> {
        let mut cells: Vec<CellResult> = load_json_dir(&self.cells_dir())?;
        cells.sort_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name));
        Ok(cells)
    }

    /// Every readable cell result of the run, sorted by test name, and the files of `cells/`
    /// that could not be read (foreign or old-format files) with their errors.
    pub fn read_cells_lenient(&self) -> Result<DirContents<CellResult>, StoreError> {
        let mut contents: DirContents<CellResult> = read_json_dir(&self.cells_dir())?;
        contents
            .items
            .sort_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name));
        Ok(contents)
    }

    /// The cached engine figures of a benchmark key: `engine/<key>.json`.
    pub fn engine_path(&self, key: &str) -> PathBuf {
        self.root.join(ENGINE_DIR).join(format!("{key}.json"))
    }

    /// `comparative_analysis/`.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join(REPORTS_DIR)
    }

    /// A report file: `comparative_analysis/<relative>`.
    pub fn report_path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.reports_dir().join(relative)
    }

    /// `comparative_analysis/optimize/`.
    pub fn records_dir(&self) -> PathBuf {
        self.reports_dir().join(RECORDS_DIR)
    }

    /// The search record of a model slug: `comparative_analysis/optimize/<name>.json`.
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.records_dir().join(format!("{name}.json"))
    }

    /// `comparative_analysis/integration_configs/`.
    pub fn integration_dir(&self) -> PathBuf {
        self.reports_dir().join(INTEGRATION_DIR)
    }
}

/// Where a run's files go, and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// Configuration.
    pub config: Config,
    /// `<results_dir>/<run_id>`.
    pub run_dir: RunDir,
    /// The run id (directory name).
    pub run_id: String,
}

impl RunEnv {
    /// Resolves the run id (`O3_RUN_ID`, else nextest's `NEXTEST_RUN_ID` so that every test
    /// process of one nextest run shares a directory, else a timestamp and the process id),
    /// creates the run directory and points `<results_dir>/latest` at it.
    pub fn new(config: Config) -> std::io::Result<RunEnv> {
        let run_id = run_id(&config);
        RunEnv::with_run_id(config, run_id)
    }

    /// Creates the run directory of `run_id` and points `<results_dir>/latest` at it.
    pub fn with_run_id(config: Config, run_id: String) -> std::io::Result<RunEnv> {
        let run_dir = RunDir::create(&config.results_dir, &run_id)?;
        // The baseline is recorded in the run, so its judgements and reports name it.
        crate::baseline::record(&run_dir, &config.baseline)?;
        Ok(RunEnv {
            config,
            run_dir,
            run_id,
        })
    }
}

/// The run id: `O3_RUN_ID`, else nextest's `NEXTEST_RUN_ID`, else a timestamp and the process id.
pub fn run_id(config: &Config) -> String {
    config
        .run_id
        .clone()
        .or_else(|| {
            std::env::var("NEXTEST_RUN_ID")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                date::compact(SystemTime::now()),
                std::process::id()
            )
        })
}

/// File name of a cell's result: the test name with `::` turned into `__`, and anything but
/// ASCII letters, digits, `_`, `-` and `.` turned into `_`.
pub fn cell_file_name(test_name: &str) -> String {
    let safe: String = test_name
        .replace("::", "__")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
///
/// The temporary file's name is unique per process and per call, so tests of one process that
/// rebuild the same report at once (threads under `cargo test`) do not rename each other's
/// temporary file away; the last rename wins, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|source| StoreError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        StoreError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Saves `value` as pretty JSON (with a final newline) at `path`, atomically.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Loads the JSON file at `path`.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// A file of a directory that could not be read as the expected JSON: its path and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read (the read or parse error).
    pub why: String,
}

/// What [`read_json_dir`] found: the files it parsed and the ones it could not read.
#[derive(Debug, Clone, PartialEq)]
pub struct DirContents<T> {
    /// The parsed files, in file-name order.
    pub items: Vec<T>,
    /// The files that could not be read or parsed, in file-name order, with their errors.
    pub unreadable: Vec<Unreadable>,
}

/// Reads every `*.json` file of `dir` (temporary files, whose names start with `.`, are left
/// out), in file-name order, keeping going past a file that cannot be read or parsed: such files
/// are returned in [`DirContents::unreadable`] with their errors, so one foreign or old-format
/// file does not hide the others. A missing directory holds nothing; a directory that cannot be
/// listed is an error.
pub fn read_json_dir<T: DeserializeOwned>(dir: &Path) -> Result<DirContents<T>, StoreError> {
    let (items, errors) = scan_json_dir(dir)?;
    let unreadable = errors
        .into_iter()
        .map(|e| match e {
            StoreError::Read { path, source } | StoreError::Write { path, source } => Unreadable {
                path,
                why: source.to_string(),
            },
            StoreError::Parse { path, source } => Unreadable {
                path,
                why: source.to_string(),
            },
        })
        .collect();
    Ok(DirContents { items, unreadable })
}

/// Loads every `*.json` file of `dir` like [`read_json_dir`], but the first file that cannot
/// be read or parsed is an error naming it (for callers that must not go on without it).
pub fn load_json_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, StoreError> {
    let (items, errors) = scan_json_dir(dir)?;
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(items),
    }
}

/// The one reader of a directory of JSON files: the parsed files and the errors of the others,
/// both in file-name order.
#[allow(clippy::type_complexity)]
fn scan_json_dir<T: DeserializeOwned>(dir: &Path) -> Result<(Vec<T>, Vec<StoreError>), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => {
            return Err(StoreError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".json") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match load_json(&path) {
            Ok(item) => items.push(item),
            Err(e) => errors.push(e),
        }
    }
    Ok((items, errors))
}

/// Points `<results_dir>/latest` at `run_id` (a relative symlink, replaced atomically).
fn point_latest(results_dir: &Path, run_id: &str) {
    #[cfg(unix)]
    {
        let tmp = results_dir.join(format!(".{LATEST}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(run_id, &tmp).is_ok() {
            let _ = fs::rename(&tmp, results_dir.join(LATEST));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = fs::write(results_dir.join(format!("{LATEST}.txt")), run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("o3-rundir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[rstest]
    #[case("gemma3_tools_27b::ctx_128k", "gemma3_tools_27b__ctx_128k.json")]
    #[case("a b::ctx_2k", "a_b__ctx_2k.json")]
    fn file_names(#[case] test_name: &str, #[case] expected: &str) {
        assert_eq!(cell_file_name(test_name), expected);
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = temp("atomic");
        let path = dir.join("x.json");
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"[1]").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[1]");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x.json".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_layout_and_latest() {
        let results = temp("layout");
        let run = RunDir::create(&results, "r1").unwrap();
        assert!(run.cells_dir().is_dir());
        assert_eq!(
            run.cell_path("m::ctx_2k"),
            results.join("r1/cells/m__ctx_2k.json")
        );
        assert_eq!(
            run.record_path("m"),
            results.join("r1/comparative_analysis/optimize/m.json")
        );
        assert_eq!(
            run.integration_dir(),
            results.join("r1/comparative_analysis/integration_configs")
        );
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(results.join(LATEST)).unwrap(),
            Path::new("r1")
        );
        fs::remove_dir_all(&results).unwrap();
    }

    #[test]
    fn json_round_trips_and_errors_name_the_file() {
        let dir = temp("json");
        save_json(&dir.join("b.json"), &vec![2]).unwrap();
        save_json(&dir.join("a.json"), &vec![1]).unwrap();
        fs::write(dir.join(".c.json.1.tmp"), "{half").unwrap();
        let all: Vec<Vec<i32>> = load_json_dir(&dir).unwrap();
        assert_eq!(all, vec![vec![1], vec![2]]);
        fs::write(dir.join("d.json"), "{not json").unwrap();
        let err = load_json_dir::<Vec<i32>>(&dir).unwrap_err();
        assert!(err.to_string().contains("d.json"), "{err}");
        let missing: Vec<Vec<i32>> = load_json_dir(&dir.join("nothing")).unwrap();
        assert!(missing.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lenient_reader_keeps_the_good_files_and_names_the_bad_ones() {
        let dir = temp("lenient");
        save_json(&dir.join("a.json"), &vec![1]).unwrap();
        fs::write(dir.join("b.json"), "{not json").unwrap();
        save_json(&dir.join("c.json"), &"a string, not a list").unwrap();
        save_json(&dir.join("d.json"), &vec![4]).unwrap();
        let got: DirContents<Vec<i32>> = read_json_dir(&dir).unwrap();
        assert_eq!(got.items, vec![vec![1], vec![4]]);
        let bad: Vec<(String, &str)> = got
            .unreadable
            .iter()
            .map(|u| {
                let name = u.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, u.why.as_str())
            })
            .collect();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].0, "b.json");
        assert!(bad[0].1.contains("line 1"), "{bad:?}");
        assert_eq!(bad[1].0, "c.json");
        assert!(bad[1].1.contains("invalid type"), "{bad:?}");
        // The strict reader stops at the first bad file, named.
        let err = load_json_dir::<Vec<i32>>(&dir).unwrap_err();
        assert!(err.to_string().contains("b.json"), "{err}");
        // A directory that cannot be listed is an error, not an empty run.
        let file = dir.join("a.json");
        assert!(read_json_dir::<Vec<i32>>(&file).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
