//! The model of the host: memory bandwidth read by one and by all threads (a streaming read of
//! a buffer far larger than the caches), and the multiply-add throughput of one and of all
//! threads, measured once and cached beside the calibration in the results directory.
//!
//! The figures are what plain Rust reaches on this machine, not what the engine's kernels
//! reach: the engine's share of them is what calibration fits ([`super::calibrate`]).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::date::rfc3339;
use crate::results::Host;
use crate::rundir::{load_json, save_json};

/// Bytes of the buffer the bandwidth probe streams through: far above any L3 cache of a
/// desktop or workstation CPU, small enough to allocate on a busy machine.
pub const PROBE_BUFFER_BYTES: usize = 256 << 20;

/// Passes over the buffer per thread count (the median is kept).
pub const PROBE_PASSES: usize = 3;

/// Samples of the compute probe per thread count.
pub const COMPUTE_SAMPLES: usize = 3;

/// One figure of a probe: the median of its samples and their spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFigure {
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Every sample.
    pub samples: Vec<f64>,
}

impl ProbeFigure {
    /// The figure of `samples` (at least one, all finite and positive).
    pub fn of(samples: Vec<f64>) -> Option<ProbeFigure> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return None;
        }
        Some(ProbeFigure {
            median: crate::stats::percentile(&samples, 0.5)?,
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(0.0, f64::max),
            samples,
        })
    }
}

/// Where a host model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HostSource {
    /// Measured on this machine by this harness.
    MeasuredHere,
    /// Read from a file the user pointed to (`O3_PREDICT_HOST_MODEL`): a host model measured on
    /// the server's machine.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// The measured model of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostModel {
    /// The machine: CPU model, cores, threads, RAM.
    pub host: Host,
    /// Streaming read bandwidth of every logical CPU at once (GB/s, 10⁹ bytes).
    pub bandwidth_all_gbps: ProbeFigure,
    /// Streaming read bandwidth of one thread (GB/s).
    pub bandwidth_one_gbps: ProbeFigure,
    /// f32 multiply-add throughput of every logical CPU at once (GFLOP/s).
    pub compute_all_gflops: ProbeFigure,
    /// f32 multiply-add throughput of one thread (GFLOP/s).
    pub compute_one_gflops: ProbeFigure,
    /// Threads of the "all" figures.
    pub threads: usize,
    /// Bytes of the bandwidth probe's buffer.
    pub buffer_bytes: u64,
    /// When it was measured (RFC 3339, UTC).
    pub measured_at: String,
    /// Wall time of the probes (s).
    pub probe_wall_s: f64,
    /// Where it came from (not stored: set when read).
    #[serde(skip, default = "measured_here")]
    pub source: HostSource,
}

fn measured_here() -> HostSource {
    HostSource::MeasuredHere
}

impl HostModel {
    /// Read bandwidth reachable by `threads` threads (GB/s): one thread's times `threads`,
    /// at most what all of them reached.
    pub fn bandwidth_gbps(&self, threads: u32) -> f64 {
        let t = f64::from(threads.max(1));
        (self.bandwidth_one_gbps.median * t).min(self.bandwidth_all_gbps.median)
    }

    /// Multiply-add throughput of `threads` threads (GFLOP/s), likewise.
    pub fn compute_gflops(&self, threads: u32) -> f64 {
        let t = f64::from(threads.max(1));
        (self.compute_one_gflops.median * t).min(self.compute_all_gflops.median)
    }

    /// One line: `12.3 GB/s (1 thread 8.1), 45.6 GFLOP/s (1 thread 23.0), 2 threads`.
    pub fn describe(&self) -> String {
        format!(
            "read bandwidth {:.1} GB/s ({:.1} – {:.1}; one thread {:.1}), multiply-add {:.1} GFLOP/s (one thread {:.1}), {} threads, {} ({}), measured {}",
            self.bandwidth_all_gbps.median,
            self.bandwidth_all_gbps.min,
            self.bandwidth_all_gbps.max,
            self.bandwidth_one_gbps.median,
            self.compute_all_gflops.median,
            self.compute_one_gflops.median,
            self.threads,
            self.host.cpu_model,
            self.host.hostname,
            self.measured_at
        )
    }

    /// Whether this model describes `host` (same name, CPU and thread count).
    pub fn describes(&self, host: &Host) -> bool {
        self.host.hostname == host.hostname
            && self.host.cpu_model == host.cpu_model
            && self.host.cpu_logical == host.cpu_logical
    }
}

/// Seconds each pass of `threads` threads took to read `buffer` once (split in equal parts).
fn read_pass(buffer: &[u64], threads: usize) -> f64 {
    let chunk = buffer.len().div_ceil(threads.max(1));
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = buffer
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
            .collect();
        for h in handles {
            std::hint::black_box(h.join().unwrap_or(0));
        }
    });
    start.elapsed().as_secs_f64()
}

/// Read bandwidth of `threads` threads over `buffer`, `passes` times (GB/s each).
pub fn bandwidth_samples(buffer: &[u64], threads: usize, passes: usize) -> Vec<f64> {
    let bytes = std::mem::size_of_val(buffer) as f64;
    (0..passes)
        .map(|_| bytes / read_pass(buffer, threads) / 1e9)
        .collect()
}

/// FLOPs one thread does in [`madd_kernel`] with `rounds`.
fn madd_flops(rounds: usize) -> f64 {
    2.0 * (MADD_LEN * rounds) as f64
}

const MADD_LEN: usize = 1024;

/// Multiply-adds over two L1-resident arrays, 16 independent accumulators (which the compiler
/// turns into vector registers).
fn madd_kernel(rounds: usize) -> f32 {
    let a: Vec<f32> = (0..MADD_LEN).map(|i| 1.0 + (i % 7) as f32 * 1e-3).collect();
    let b: Vec<f32> = (0..MADD_LEN).map(|i| 1.0 - (i % 5) as f32 * 1e-3).collect();
    let mut acc = [0f32; 16];
    for _ in 0..rounds {
        let (a, b) = (std::hint::black_box(&a), std::hint::black_box(&b));
        for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
            for j in 0..16 {
                acc[j] += ca[j] * cb[j];
            }
        }
    }
    acc.iter().sum()
}

/// Multiply-add throughput of `threads` threads (GFLOP/s), `samples` times.
pub fn compute_samples(threads: usize, samples: usize, rounds: usize) -> Vec<f64> {
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads.max(1))
                    .map(|_| s.spawn(move || madd_kernel(rounds)))
                    .collect();
                for h in handles {
                    std::hint::black_box(h.join().unwrap_or(0.0));
                }
            });
            madd_flops(rounds) * threads.max(1) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .collect()
}

/// Measures this host: bandwidth and compute, one thread and every logical CPU.
pub fn measure(host: Host) -> Result<HostModel, String> {
    let started = Instant::now();
    let threads = host.cpu_logical.max(1);
    // Filled with ones, so that every page is really there before it is timed.
    let buffer = vec![1u64; PROBE_BUFFER_BYTES / 8];
    let bw = |t| ProbeFigure::of(bandwidth_samples(&buffer, t, PROBE_PASSES));
    let bandwidth_one = bw(1).ok_or("the bandwidth probe gave no figure")?;
    let bandwidth_all = bw(threads).ok_or("the bandwidth probe gave no figure")?;
    drop(buffer);
    // About 20 ms a sample at a few GFLOP/s a thread.
    let rounds = 20_000;
    let cp = |t| ProbeFigure::of(compute_samples(t, COMPUTE_SAMPLES, rounds));
    let compute_one = cp(1).ok_or("the compute probe gave no figure")?;
    let compute_all = cp(threads).ok_or("the compute probe gave no figure")?;
    Ok(HostModel {
        host,
        bandwidth_all_gbps: bandwidth_all,
        bandwidth_one_gbps: bandwidth_one,
        compute_all_gflops: compute_all,
        compute_one_gflops: compute_one,
        threads,
        buffer_bytes: PROBE_BUFFER_BYTES as u64,
        measured_at: rfc3339(SystemTime::now()),
        probe_wall_s: started.elapsed().as_secs_f64(),
        source: HostSource::MeasuredHere,
    })
}

/// The host model cached at `path` when it describes `host` and `remeasure` is off, else a
/// new measurement saved there. The second value says which, in words.
pub fn load_or_measure(
    path: &Path,
    host: Host,
    remeasure: bool,
) -> Result<(HostModel, String), String> {
    if !remeasure && path.exists() {
        match load_json::<HostModel>(path) {
            Ok(m) if m.describes(&host) => {
                return Ok((m, format!("host model cached in {}", path.display())));
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: re-measuring the host: {e}"),
        }
    }
    let m = measure(host)?;
    save_json(path, &m).map_err(|e| e.to_string())?;
    Ok((
        m.clone(),
        format!(
            "host measured in {:.2} s, saved to {}",
            m.probe_wall_s,
            path.display()
        ),
    ))
}

/// The host model in a file the user points to (measured on the server's machine).
pub fn from_file(path: &Path) -> Result<HostModel, String> {
    let mut m: HostModel = load_json(path).map_err(|e| {
        format!("O3_PREDICT_HOST_MODEL: {e} (a host.json written by this harness on the server's machine)")
    })?;
    m.source = HostSource::File {
        path: path.to_path_buf(),
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_figures_refuse_empty_or_broken_samples() {
        assert!(ProbeFigure::of(vec![]).is_none());
        assert!(ProbeFigure::of(vec![1.0, f64::NAN]).is_none());
        assert!(ProbeFigure::of(vec![1.0, 0.0]).is_none());
        let f = ProbeFigure::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((f.median, f.min, f.max), (2.0, 1.0, 3.0));
    }

    #[test]
    fn the_probes_measure_something_plausible_and_the_cache_is_used() {
        // Small buffers: this checks the plumbing, not the machine.
        let buffer = vec![1u64; 1 << 20];
        let bw = bandwidth_samples(&buffer, 2, 2);
        assert_eq!(bw.len(), 2);
        assert!(bw.iter().all(|b| b.is_finite() && *b > 0.01), "{bw:?}");
        let c = compute_samples(2, 1, 200);
        assert!(c[0].is_finite() && c[0] > 0.01, "{c:?}");

        let dir = std::env::temp_dir().join(format!("o3-host-{}", std::process::id()));
        let path = dir.join("host.json");
        let host = Host {
            hostname: "h".into(),
            cpu_model: "cpu".into(),
            cpu_logical: 2,
            ..Host::default()
        };
        let model = HostModel {
            host: host.clone(),
            bandwidth_all_gbps: ProbeFigure::of(vec![20.0]).unwrap(),
            bandwidth_one_gbps: ProbeFigure::of(vec![12.0]).unwrap(),
            compute_all_gflops: ProbeFigure::of(vec![40.0]).unwrap(),
            compute_one_gflops: ProbeFigure::of(vec![25.0]).unwrap(),
            threads: 2,
            buffer_bytes: 1,
            measured_at: "then".into(),
            probe_wall_s: 0.5,
            source: HostSource::MeasuredHere,
        };
        save_json(&path, &model).unwrap();
        let (got, how) = load_or_measure(&path, host, false).unwrap();
        assert_eq!(got, model);
        assert!(how.contains("cached"), "{how}");
        // One thread's figure scales until all threads' caps it.
        assert_eq!(got.bandwidth_gbps(1), 12.0);
        assert_eq!(got.bandwidth_gbps(4), 20.0);
        assert_eq!(got.compute_gflops(1), 25.0);
        assert_eq!(got.compute_gflops(2), 40.0);
        // Another machine's file is not used for this one.
        let other = Host {
            hostname: "other".into(),
            ..got.host.clone()
        };
        assert!(!got.describes(&other));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
