//! Several hosts in one comparison: run directories from different machines, or from nextest
//! partitions (`cargo nextest run --partition count:K/N`) run as separate CI jobs, merged into
//! one output run directory (the `o3-merge` binary).
//!
//! Each cell result records its host ([`crate::results::Host`]) and server; the merge keys every
//! cell by [`host_key`] and [`CellKey`]. The output holds:
//!
//! - `hosts/<host>/`: one run directory per host with its cells and the usual reports
//!   ([`crate::report::build`]): the per-host tables;
//! - `cells/`: every cell, its test name prefixed with its host (`<host>::<test>`), and the
//!   usual reports over all of them;
//! - `comparative_analysis/hosts.md`: the cross-host table (each cell, each host's TTFT, decode
//!   rate and verdict side by side), and `merge.json`: inputs, hosts, conflicts;
//! - `conflicts/<host>/`: the other versions of a conflicting duplicate.
//!
//! Two inputs with the same host and cell are a duplicate: identical results count once; results
//! that differ are a **conflict** — the first input's is kept, the others are written under
//! `conflicts/`, listed in `hosts.md` and `merge.json`, and `o3-merge` exits with 1. Nothing is
//! overwritten silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::baseline::CellKey;
use crate::results::{CellResult, RunMetadata, Verdict};
use crate::rundir::{RunDir, StoreError, cell_file_name, save_json, write_atomic};
use crate::text::out;

/// The host a cell ran on, as a file-name-safe label: the host name, and the server's
/// `host_port` after `@` when the server is not on this machine's loopback address.
pub fn host_key(meta: &RunMetadata) -> String {
    let host = if meta.host.hostname.is_empty() {
        "unknown"
    } else {
        &meta.host.hostname
    };
    let server = meta
        .server
        .split_once("://")
        .map_or(meta.server.as_str(), |(_, rest)| rest);
    let server = server.rsplit_once('@').map_or(server, |(_, h)| h);
    let server = server.split(['/', '?']).next().unwrap_or("");
    let local = server.is_empty()
        || server.starts_with("127.")
        || server.starts_with("localhost")
        || server.starts_with("[::1]");
    let raw = if local {
        host.to_string()
    } else {
        format!("{host}@{server}")
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Errors of a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An input is not a run directory.
    #[error("{path} is not a run directory (no cells/ inside)")]
    NotARun {
        /// The input.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reports could not be built.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// One version of a conflicting duplicate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// The input run directory it came from.
    pub input: PathBuf,
    /// Its run id.
    pub run_id: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its TTFT mean (s).
    pub ttft_mean_s: Option<f64>,
    /// Its decode mean (tokens/s).
    pub decode_mean_tps: Option<f64>,
}

impl Version {
    fn of(input: &Path, c: &CellResult) -> Version {
        Version {
            input: input.to_path_buf(),
            run_id: c.metadata.run_id.clone(),
            verdict: c.verdict(),
            ttft_mean_s: c.summaries.ttft_s.as_ref().map(|s| s.mean),
            decode_mean_tps: c.summaries.decode_tps.as_ref().map(|s| s.mean),
        }
    }
}

/// The same host and cell with different results in two or more inputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// The host.
    pub host: String,
    /// The cell's test name.
    pub test_name: String,
    /// The kept version first, then the others.
    pub versions: Vec<Version>,
}

/// What a merge did (`merge.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeSummary {
    /// The input run directories, in the order given.
    pub inputs: Vec<PathBuf>,
    /// Cells kept per host.
    pub hosts: BTreeMap<String, usize>,
    /// Duplicates with identical results, counted once.
    pub identical_duplicates: usize,
    /// Conflicting duplicates.
    pub conflicts: Vec<Conflict>,
    /// Files of the inputs that could not be read, with why.
    pub files_not_read: Vec<crate::rundir::Unreadable>,
}

type Kept = BTreeMap<(String, CellKey, String), (PathBuf, CellResult)>;

/// Merges `inputs` into the run directory `out` (see the module documentation).
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<MergeSummary, MergeError> {
    let mut kept: Kept = BTreeMap::new();
    let mut summary = MergeSummary {
        inputs: inputs.to_vec(),
        hosts: BTreeMap::new(),
        identical_duplicates: 0,
        conflicts: Vec::new(),
        files_not_read: Vec::new(),
    };
    let out_run = RunDir::at(out);
    for input in inputs {
        let run = RunDir::at(input);
        if !run.cells_dir().is_dir() {
            return Err(MergeError::NotARun {
                path: input.clone(),
            });
        }
        let contents = run.read_cells_lenient()?;
        summary.files_not_read.extend(contents.unreadable);
        for c in contents.items {
            let host = host_key(&c.metadata);
            let key = (host.clone(), CellKey::of(&c.cell), c.cell.test_name.clone());
            match kept.get(&key) {
                None => {
                    kept.insert(key, (input.clone(), c));
                }
                Some((_, first)) if *first == c => summary.identical_duplicates += 1,
                Some((first_input, first)) => {
                    let n = summary.conflicts.len() + 1;
                    let path = out
                        .join("conflicts")
                        .join(&host)
                        .join(format!("{n}__{}", cell_file_name(&c.cell.test_name)));
                    save_json(&path, &c)?;
                    match summary
                        .conflicts
                        .iter_mut()
                        .find(|k| k.host == host && k.test_name == c.cell.test_name)
                    {
                        Some(k) => k.versions.push(Version::of(input, &c)),
                        None => summary.conflicts.push(Conflict {
                            host: host.clone(),
                            test_name: c.cell.test_name.clone(),
                            versions: vec![Version::of(first_input, first), Version::of(input, &c)],
                        }),
                    }
                }
            }
        }
    }
    for ((host, _, _), (_, c)) in &kept {
        *summary.hosts.entry(host.clone()).or_default() += 1;
        let per_host = RunDir::at(out.join("hosts").join(host));
        save_json(&per_host.cell_path(&c.cell.test_name), c)?;
        let mut all = c.clone();
        all.cell.test_name = format!("{host}::{}", c.cell.test_name);
        save_json(&out_run.cell_path(&all.cell.test_name), &all)?;
    }
    for host in summary.hosts.keys() {
        crate::report::build(&RunDir::at(out.join("hosts").join(host)))?;
    }
    crate::report::build(&out_run)?;
    let mut json = serde_json::to_vec_pretty(&summary).expect("the summary serializes");
    json.push(b'\n');
    write_atomic(&out_run.report_path("merge.json"), &json)?;
    write_atomic(
        &out_run.report_path("hosts.md"),
        hosts_markdown(&summary, &kept).as_bytes(),
    )?;
    Ok(summary)
}

/// The cross-host table and the conflicts.
fn hosts_markdown(s: &MergeSummary, kept: &Kept) -> String {
    let mut o = String::new();
    out!(o, "# Hosts");
    out!(o);
    out!(
        o,
        "{} input run(s), {} host(s); {} identical duplicate(s) counted once; {} conflict(s).",
        s.inputs.len(),
        s.hosts.len(),
        s.identical_duplicates,
        s.conflicts.len()
    );
    out!(o);
    for (host, n) in &s.hosts {
        out!(
            o,
            "- `{host}`: {n} cell(s), tables in `hosts/{host}/comparative_analysis/`"
        );
    }
    out!(o);
    if !s.conflicts.is_empty() {
        out!(o, "## Conflicts");
        out!(o);
        out!(
            o,
            "The same host and cell with different results: the first is kept, the others are \
             under `conflicts/<host>/`. Re-run the cell, or drop the input that should not be \
             there, and merge again."
        );
        out!(o);
        for k in &s.conflicts {
            let v: Vec<String> = k
                .versions
                .iter()
                .map(|v| {
                    format!(
                        "{} from run `{}` (TTFT {}, decode {})",
                        v.verdict.label(),
                        v.run_id,
                        v.ttft_mean_s.map_or("–".into(), |x| format!("{x:.2} s")),
                        v.decode_mean_tps
                            .map_or("–".into(), |x| format!("{x:.2} tok/s"))
                    )
                })
                .collect();
            out!(
                o,
                "- **CONFLICT** `{}` on `{}`: {}",
                k.test_name,
                k.host,
                v.join(" vs ")
            );
        }
        out!(o);
    }
    out!(o, "## Cross-host comparison");
    out!(o);
    let hosts: Vec<&String> = s.hosts.keys().collect();
    let mut header = "| Cell |".to_string();
    let mut rule = "|---|".to_string();
    for h in &hosts {
        header.push_str(&format!(" {h} |"));
        rule.push_str("---|");
    }
    out!(o, "{header}");
    out!(o, "{rule}");
    let mut cells: BTreeMap<(CellKey, String), BTreeMap<&String, &CellResult>> = BTreeMap::new();
    for ((host, key, name), (_, c)) in kept {
        cells
            .entry((key.clone(), name.clone()))
            .or_default()
            .insert(host, c);
    }
    for ((_, name), by_host) in &cells {
        let mut line = format!("| `{name}` |");
        for h in &hosts {
            let text = match by_host.get(h) {
                Some(c) => format!(
                    " {} · TTFT {} · {} |",
                    c.verdict().label(),
                    c.summaries
                        .ttft_s
                        .as_ref()
                        .map_or("–".into(), |s| format!("{:.2} s", s.mean)),
                    c.summaries
                        .decode_tps
                        .as_ref()
                        .map_or("–".into(), |s| format!("{:.2} tok/s", s.mean))
                ),
                None => " – |".to_string(),
            };
            line.push_str(&text);
        }
        out!(o, "{line}");
    }
    o
}
