//! The busy-host guard on the reference server (issue 7): one short reference cell whose runner
//! uses every core, run with CPU burners on half of them beside it. Its trials must be marked "host busy" and the cell
//! INVALID — never a FAIL blamed on the model.
//!
//! Needs `OLLAMA_HOST` pointing at a reference server on this host (`bash harness/test.sh` sets
//! it; by hand: `O3_REFSERVER_PORT=11504 bash harness/refserver.sh start`, then
//! `OLLAMA_HOST=127.0.0.1:11504 cargo test --test busy_host`). Without it the test says why and
//! returns; with `O3_REQUIRE_BACKEND=1` that is a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use o3_suite::backend::OllamaClient;
use o3_suite::config::Config;
use o3_suite::harness::RunEnv;
use o3_suite::monitor;
use o3_suite::results::{CellSpec, Gates, TrialKind, Verdict};
use o3_suite::runner::{CellOptions, RUNTIME, run_cell_with};

/// Longest a burner lives even when this process is killed before its guard runs (s).
const BURN_LIMIT_S: u32 = 150;

/// CPU burners, killed and reaped when dropped (also on panic); each is
/// bounded by `timeout` besides.
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("timeout")
                        .args([&BURN_LIMIT_S.to_string(), "sh", "-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn a CPU burner")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // `timeout` forwards the signal to its child.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// The configuration for a local reference server, or `None` (with the reason printed).
fn backend() -> Option<Config> {
    let required = std::env::var("O3_REQUIRE_BACKEND").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "O3_REQUIRE_BACKEND=1 but {why}");
        eprintln!("skipping: {why}");
    };
    if std::env::var("OLLAMA_HOST").map_or(true, |s| s.is_empty()) {
        skip(
            "reference backend not configured (OLLAMA_HOST unset): run `bash harness/test.sh`"
                .into(),
        );
        return None;
    }
    let config = Config::from_env().expect("valid environment");
    if let Err(e) = RUNTIME.block_on(OllamaClient::new(&config).version()) {
        skip(e.to_string());
        return None;
    }
    if monitor::find_server_pid(&config.base_url).is_none() {
        skip(format!(
            "the server at {} is not a process proven to be on this host: the guard has nothing to tell apart",
            config.base_url
        ));
        return None;
    }
    Some(config)
}

/// The cell: smollm2:135m at 2K with a short fill (the burners slow it several times over), its
/// runner on `threads` threads.
fn spec(threads: u32) -> CellSpec {
    let (name, num_ctx) = ("busy_host_smollm2_135m", 2048);
    CellSpec {
        test_name: o3_suite::matrix::test_name(name, num_ctx),
        name: name.into(),
        model: "smollm2:135m".into(),
        category: "live check".into(),
        num_ctx,
        fill_tokens: 256,
        num_batch: 512,
        num_thread: threads,
        num_predict: 16,
        gates: Gates {
            ttft_max_s: 600.0,
            tok_s_min: 0.1,
            stability_min: 0.0,
            ram_max_pct: 95.0,
        },
        use_case: "busy-host guard".into(),
        optional: false,
        optimize: false,
        source: "tests/busy_host.rs".into(),
        relative_gates: None,
        probe: None,
    }
}

#[test]
fn a_cell_beside_a_cpu_burner_is_invalid_as_host_busy() {
    let Some(mut config) = backend() else { return };
    // A limit set in the environment would change what this test checks.
    assert!(
        std::env::var(monitor::BUSY_VAR).is_err(),
        "unset {} for this test",
        monitor::BUSY_VAR
    );
    config.results_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busy_host");
    config.run_id = Some(format!("busy-{}", std::process::id()));
    config.min_trials = 2;
    // Two invalid trials of three end the loop (more than half of the maximum).
    config.max_trials = 3;
    let env = RunEnv::new(config).unwrap();
    // The runner on every CPU, so that the limit is a quarter of one core's worth whatever the
    // machine; burners on half of them take about a third of the machine or more.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let burners = Burners::start((cpus as usize / 2).max(1));
    let r = run_cell_with(&spec(cpus), &env, &CellOptions::default());
    drop(burners);

    let reasons = r.judgement.reasons();
    assert_eq!(r.verdict(), Verdict::Invalid, "{reasons:?}");
    let measured: Vec<_> = r
        .trials
        .iter()
        .filter(|t| t.kind == TrialKind::Measured)
        .collect();
    assert!(measured.len() >= 2, "{reasons:?}");
    for t in &measured {
        // Each burner wants a whole CPU: far more than a quarter of one.
        let limit = monitor::default_busy_limit_pct(cpus, cpus);
        let foreign = t.foreign_cpu_pct.expect("CPU figures of a local server");
        assert!(
            foreign > limit,
            "trial {}: {foreign} % ≤ {limit} %",
            t.index
        );
        assert!(!t.valid);
        assert!(
            t.invalid_reasons
                .iter()
                .any(|w| w.starts_with("host busy: other processes used ")),
            "{:?}",
            t.invalid_reasons
        );
    }
    assert!(
        reasons.iter().any(|w| w.contains("host busy")),
        "{reasons:?}"
    );
}
