//! `comparative_analysis/bench.txt`: the run's per-trial figures in the Go benchmark format
//! (golang.org/design/14313-benchmark-format), so that `benchstat old/bench.txt new/bench.txt`
//! compares two runs with no glue.
//!
//! One result line per valid measured trial, so benchstat sees the whole sample:
//! `BenchmarkGemma3_tools_27b/ctx_32k 1 3120000000 ns/op 8.42 tok/s 20317208576 B`, the name
//! the cell's test name (`::` → `/`, first letter upper-case as the format requires), the
//! iteration count 1 (one request), TTFT in `ns/op` (benchstat's `sec/op`), client decode rate
//! in `tok/s` and RAM Δ (RSS after the trial − before the load) in `B`; stability, one score per
//! cell, on its own line `…/stability 1 0.93 score`; the host's own speed read beside the trials
//! ([`crate::monitor::host_speed`]), one line per reading, `…/host 1 45.2 GFLOP/s`, so benchstat
//! shows whether the machine itself changed. `Unit` lines say which direction is
//! better. Host, server and run go into `#` lines, which benchstat ignores: as configuration
//! lines (`key: value`) they would split two runs from different hosts into separate tables
//! and compare nothing. SKIPPED and INVALID cells are left out (their numbers are not results).

use crate::baseline::{Figure, comparable};
use crate::output::{Output, OutputFile};
use crate::results::CellResult;
use crate::rundir::RunDir;
use crate::text::out;

/// Writes `bench.txt`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BenchFormat;

/// The benchmark name of a test name: `Benchmark` + the test name with `::` → `/`, its first
/// letter upper-case, anything but ASCII letters, digits, `_`, `-`, `.`, `=` and `/` → `_`.
pub fn bench_name(test_name: &str) -> String {
    let name: String = test_name
        .replace("::", "/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("Benchmark{}{}", first.to_ascii_uppercase(), chars.as_str()),
        None => "Benchmark".to_string(),
    }
}

/// The file for `cells` (any order; written in test-name order).
pub fn bench_text(cells: &[CellResult]) -> String {
    let mut cells: Vec<&CellResult> = cells.iter().filter(|c| comparable(c)).collect();
    cells.sort_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name));
    let mut o = String::new();
    out!(
        o,
        "# o3-suite results in the Go benchmark format: compare two runs with"
    );
    out!(
        o,
        "#   benchstat <old run>/comparative_analysis/bench.txt <new run>/comparative_analysis/bench.txt"
    );
    let mut facts: Vec<String> = Vec::new();
    for c in &cells {
        let m = &c.metadata;
        let line = format!(
            "# run {} on {} ({}), server {} {}",
            m.run_id,
            m.host.hostname,
            m.host.cpu_model,
            m.server,
            m.server_version.as_deref().unwrap_or("?")
        );
        if !facts.contains(&line) {
            facts.push(line);
        }
    }
    for f in facts {
        out!(o, "{f}");
    }
    out!(o, "Unit ns/op better=lower");
    out!(o, "Unit tok/s better=higher");
    out!(o, "Unit B better=lower");
    out!(o, "Unit score better=higher");
    if cells.iter().any(|c| c.host_speed.is_some()) {
        out!(o, "Unit GFLOP/s better=higher");
    }
    for c in cells {
        let name = bench_name(&c.cell.test_name);
        let before = c.hardware.baseline.rss_bytes;
        for t in c.valid_measured() {
            let mut line = format!("{name} 1");
            let bare = line.len();
            if let Some(ttft) = t.ttft_s {
                line.push_str(&format!(" {:.0} ns/op", ttft * 1e9));
            }
            if let Some(d) = t.decode_tps {
                line.push_str(&format!(" {d:.4} tok/s"));
            }
            if let Some(after) = t.rss_after_bytes
                && before > 0
            {
                line.push_str(&format!(" {} B", after as i64 - before as i64));
            }
            if line.len() > bare {
                out!(o, "{line}");
            }
        }
        if c.stability.ci_low.is_some() {
            out!(
                o,
                "{name}/{} 1 {:.4} score",
                Figure::Stability.key(),
                c.stability.score
            );
        }
        for g in Figure::HostSpeed.per_trial(c) {
            out!(o, "{name}/{} 1 {g:.4} GFLOP/s", Figure::HostSpeed.key());
        }
    }
    o
}

impl Output<[CellResult]> for BenchFormat {
    fn render(&self, cells: &[CellResult]) -> Vec<OutputFile> {
        vec![OutputFile::new(
            RunDir::relative().report_path("bench.txt"),
            bench_text(cells),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_format() {
        assert_eq!(
            bench_name("gemma3_tools_27b::ctx_32k"),
            "BenchmarkGemma3_tools_27b/ctx_32k"
        );
        assert_eq!(
            bench_name("m::opt::ctx_12k_t2_b512"),
            "BenchmarkM/opt/ctx_12k_t2_b512"
        );
        assert_eq!(bench_name("a b::c"), "BenchmarkA_b/c");
    }
}
