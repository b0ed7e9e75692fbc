//! `o3-host-speed [--threads N] [--span-ms M] [--count K]`: the host's own speed as the runner
//! reads it beside every measured trial ([`o3_suite::monitor::host_speed`]), one JSON line per
//! reading: `{"threads":2,"gflops":51.2,"wall_s":0.301,"optimized":true}`. For checking how
//! a machine's speed moves, as `harness/host-drift.py` does against a server.
//! Exit status: 0, or 2 for a usage error.

use std::process::ExitCode;
use std::time::Duration;

use o3_suite::monitor::host_speed::{HostSpeed, read_once, threads_for};

const USAGE: &str = "usage: o3-host-speed [--threads N] [--span-ms M] [--count K]
  --threads N   threads of the kernel (default: the host's physical cores, as for a cell
                whose num_thread is 0)
  --span-ms M   milliseconds a reading lasts (default 300, the runner's idle window)
  --count K     readings, one JSON line each (default 1)";

fn number(flag: &str, v: Option<String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag} {v}: a whole number above 0 is allowed"))
}

fn main() -> ExitCode {
    let (mut threads, mut span_ms, mut count) = (None, 300, 1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let parsed = match a.as_str() {
            "--threads" => number(&a, args.next()).map(|n| threads = Some(n)),
            "--span-ms" => number(&a, args.next()).map(|n| span_ms = n),
            "--count" => number(&a, args.next()).map(|n| count = n),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("o3-host-speed: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let threads = match threads {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => threads_for(0, &o3_suite::monitor::host_info()),
    };
    let optimized = HostSpeed::new(threads).optimized;
    for _ in 0..count {
        let (g, wall_s) = read_once(threads, Duration::from_millis(span_ms));
        let line = serde_json::json!({
            "threads": threads,
            "gflops": g,
            "wall_s": wall_s,
            "optimized": optimized,
        });
        println!("{line}");
    }
    ExitCode::SUCCESS
}
