//! `o3-merge --out <dir> <run dir>…`: merges run directories from several hosts (or nextest
//! partitions) into one comparison keyed by host ([`o3_suite::merge`]). Exit status: 0 merged,
//! 1 merged with conflicting duplicates (listed in `<out>/comparative_analysis/hosts.md`),
//! 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: o3-merge --out <output run dir> <run dir> [<run dir>…]";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let mut inputs = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" {
            out = args.next().map(PathBuf::from);
        } else if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        } else {
            inputs.push(PathBuf::from(a));
        }
    }
    let (Some(out), false) = (out, inputs.is_empty()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match o3_suite::merge::merge(&inputs, &out) {
        Ok(s) => {
            eprintln!(
                "merged {} run(s) from {} host(s) into {}",
                s.inputs.len(),
                s.hosts.len(),
                out.display()
            );
            if s.conflicts.is_empty() {
                ExitCode::SUCCESS
            } else {
                for k in &s.conflicts {
                    eprintln!(
                        "conflict: {} on {} has {} different results",
                        k.test_name,
                        k.host,
                        k.versions.len()
                    );
                }
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
