//! The host's own speed beside every measured trial: a short multiply-add kernel on the
//! engine's thread count, read right before each measured trial and once after the last, so a
//! comparison with a baseline can tell a slower machine from a slower server
//! ([`crate::baseline`]).
//!
//! Why a compute kernel, and why only to tell, not to correct: on the 2-core reference machine
//! (README, "The host's own speed", measured with `harness/host-drift.py`) the kernel's speed,
//! averaged around each request, moved with the engine's figures (correlation 0.94–0.97 over
//! rounds with and without a competing busy loop; 0.57–0.75 in a run where the machine drifted
//! by itself), but not in proportion: beside the busy loop the kernel was 1.78- to 1.93-fold
//! slower and decode 2.47- to 3.71-fold, while in the drift decode moved 0.57–0.76 times as much
//! as the kernel in logs. A figure divided by the kernel's speed would be wrong both ways; a
//! change of a figure that comes with a significant change of the kernel's speed the same way is
//! a change of the host.
//!
//! Each reading is `threads` threads running the kernel of [`crate::predict::host`] at once, in
//! samples of about [`SAMPLE_S`], through the runner's idle window before the trial (the
//! server's idle CPU is read then, and the kernel's CPU is the harness's, which that check
//! leaves out): the work done over the wall time, so the slowest thread — the one the machine
//! took away, which stalls an engine whose threads meet at every layer — counts.

use serde::{Deserialize, Serialize};

use crate::results::Host;

/// Wall time a sample aims at (s): the kernel's rounds are set once per process from a first
/// timing, so a debug build of the harness, whose kernel is many times slower, takes no longer.
pub const SAMPLE_S: f64 = 0.02;

/// Rounds of the kernel for one sample of about [`SAMPLE_S`] on one thread.
fn rounds() -> usize {
    static ROUNDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROUNDS.get_or_init(|| {
        let trial = 20_000;
        let started = std::time::Instant::now();
        crate::predict::host::compute_samples(1, 1, trial);
        let took = started.elapsed().as_secs_f64().max(1e-6);
        ((trial as f64 * SAMPLE_S / took) as usize).clamp(1_000, 50_000_000)
    })
}

/// The host's speed around the measured trials of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpeed {
    /// Threads the kernel ran on: the cell's `num_thread`, or the host's physical cores (what
    /// Ollama gives a runner by default) when the cell leaves it to the server.
    pub threads: u32,
    /// GFLOP/s of each reading: one right before each measured trial, in order, and one after
    /// the last (a reading that gave no figure, which the kernel never does on a working
    /// machine, is left out).
    pub readings_gflops: Vec<f64>,
    /// Wall time of all readings together (s).
    pub wall_s: f64,
    /// Whether the kernel was built optimized (a release build of the harness): a debug
    /// build's kernel is many times slower, so only readings of the same kind compare.
    pub optimized: bool,
}

impl HostSpeed {
    /// No readings yet, on `threads` threads.
    pub fn new(threads: u32) -> HostSpeed {
        HostSpeed {
            threads,
            readings_gflops: Vec::new(),
            wall_s: 0.0,
            optimized: !cfg!(debug_assertions),
        }
    }

    /// Keeps a reading ([`read_once`]); one that gave no figure adds only its time.
    pub fn push(&mut self, gflops: Option<f64>, wall_s: f64) {
        self.wall_s += wall_s;
        self.readings_gflops.extend(gflops);
    }
}

/// One reading on `threads` threads (blocking): samples of about [`SAMPLE_S`] until `span` has
/// passed (at least one); GFLOP/s, when the kernel gave a figure, and the wall time (s).
pub fn read_once(threads: u32, span: std::time::Duration) -> (Option<f64>, f64) {
    let started = std::time::Instant::now();
    let mut rates = Vec::new();
    while rates.is_empty() || started.elapsed() < span {
        rates.extend(crate::predict::host::compute_samples(
            threads.max(1) as usize,
            1,
            rounds(),
        ));
    }
    (work_over_time(&rates), started.elapsed().as_secs_f64())
}

/// The threads the kernel runs on for a cell with `num_thread` (0: the server's choice).
pub fn threads_for(num_thread: u32, host: &Host) -> u32 {
    if num_thread > 0 {
        return num_thread;
    }
    let cores = host.cpu_physical.unwrap_or(host.cpu_logical).max(1);
    u32::try_from(cores).unwrap_or(u32::MAX)
}

/// Samples of the same work at `rates` each: the work over the total time (their harmonic
/// mean); `None` without a finite, positive sample.
fn work_over_time(rates: &[f64]) -> Option<f64> {
    if rates.is_empty() || rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return None;
    }
    Some(rates.len() as f64 / rates.iter().map(|r| 1.0 / r).sum::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_the_work_over_the_time() {
        // Two samples of equal work at 10 and 30 GFLOP/s: 2 units in 1/10 + 1/30 s = 15.
        assert_eq!(work_over_time(&[10.0, 30.0]), Some(15.0));
        assert_eq!(work_over_time(&[]), None);
        assert_eq!(work_over_time(&[10.0, 0.0]), None);
        let (g, wall_s) = read_once(1, std::time::Duration::from_millis(50));
        let g = g.unwrap();
        assert!(g.is_finite() && g > 0.0 && wall_s > 0.0, "{g} {wall_s}");
        let mut h = HostSpeed::new(1);
        h.push(Some(g), wall_s);
        h.push(None, 0.5);
        assert_eq!(h.readings_gflops, vec![g]);
        assert_eq!(h.wall_s, wall_s + 0.5);
    }

    #[test]
    fn the_threads_follow_the_cell_or_the_cores() {
        let host = Host {
            cpu_logical: 16,
            cpu_physical: Some(8),
            ..Host::default()
        };
        assert_eq!(threads_for(4, &host), 4);
        assert_eq!(threads_for(0, &host), 8);
        let no_cores = Host {
            cpu_logical: 2,
            cpu_physical: None,
            ..Host::default()
        };
        assert_eq!(threads_for(0, &no_cores), 2);
    }
}
