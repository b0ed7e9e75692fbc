//! Checks of the harness's numbers against the reference server (o3-refserver on upstream
//! llama.cpp, with the two real small models) and llama.cpp's own `llama-bench`.
//!
//! Needs `OLLAMA_HOST` pointing at the reference server and `O3_LLAMA_BIN_DIR` /
//! `O3_MODELS_DIR` from `harness/setup-backend.sh` (`bash harness/test.sh` sets all three; the
//! two directories are also read from the backend cache's `backend.env`, see `o3_suite::engine`).
//! Without them each test says why and returns; with `O3_REQUIRE_BACKEND=1` that is a failure.
//!
//! These are live measurements: they assert what the harness detects (a reload, truncation,
//! the runner and its memory), never how fast this machine is — except the agreements the
//! harness promises: client vs server decode rate within 5 %, and client decode vs llama-bench's
//! within [`DECODE_BAND`].

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use o3_suite::backend::{GenerateRequest, LoadOptions, OllamaClient};
use o3_suite::config::Config;
use o3_suite::engine::{self, BenchRequest, EngineEnv};
use o3_suite::harness::RunEnv;
use o3_suite::measure::{self, TrialPlan};
use o3_suite::monitor;
use o3_suite::results::{self, CellSpec, Fidelity, FidelityKind, Gates, TrialKind, Verdict};
use o3_suite::rundir::save_json;
use o3_suite::runner::{CellOptions, RUNTIME, run_cell_with};
use o3_suite::{report, workload};

/// The models the checks use, both served by the reference server.
const MODELS: [&str; 2] = ["smollm2:135m", "gemma3:270m"];

struct Backend {
    config: Config,
    engine: EngineEnv,
    /// One server: the checks run one at a time even under plain `cargo test`.
    _serial: MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The reference backend, or `None` (with the reason printed) when it is not set up; with
/// `O3_REQUIRE_BACKEND=1` any reason is a failure.
fn backend() -> Option<Backend> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let required = std::env::var("O3_REQUIRE_BACKEND")
        .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"));
    match find_backend(|k| std::env::var(k).ok()) {
        Ok((config, engine)) => Some(Backend {
            config,
            engine,
            _serial: serial,
        }),
        Err(why) => {
            assert!(!required, "O3_REQUIRE_BACKEND=1 but {why}");
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// Checks every part of the backend through `get` (the environment): the variables, the
/// `llama-bench` binary, the model files, the server answering and serving both models.
fn find_backend(get: impl Fn(&str) -> Option<String>) -> Result<(Config, EngineEnv), String> {
    if get("OLLAMA_HOST").is_none_or(|s| s.is_empty()) {
        return Err(
            "reference backend not configured (OLLAMA_HOST unset): run `bash harness/test.sh`"
                .into(),
        );
    }
    let config = Config::from_lookup(&get).map_err(|e| e.to_string())?;
    let engine = EngineEnv::from_lookup(&get).map_err(|e| e.to_string())?;
    engine.llama_bench().map_err(|e| e.to_string())?;
    for model in MODELS {
        engine.model_file(model).map_err(|e| e.to_string())?;
    }
    let client = OllamaClient::new(&config);
    let tags = RUNTIME
        .block_on(async {
            client.version().await?;
            client.tags().await
        })
        .map_err(|e| {
            format!(
                "the reference server does not answer: {e} (start it: `bash harness/refserver.sh start`)"
            )
        })?;
    for model in MODELS {
        if !tags.iter().any(|t| t.name == model) {
            return Err(format!(
                "the server at {} does not serve {model}: is it the reference server?",
                client.host()
            ));
        }
    }
    Ok((config, engine))
}

/// The reasons are checked without a backend: an unreachable server is a reason (so a failure
/// under `O3_REQUIRE_BACKEND=1`), never a silent pass.
#[test]
fn an_unreachable_server_is_a_reason_to_fail_when_required() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("live_reference-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("llama-bench"), b"").unwrap();
    for (_, file) in engine::MODEL_FILES {
        std::fs::write(dir.join(file), b"").unwrap();
    }
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let d = dir.to_str().unwrap().to_string();
    let env = |k: &str| match k {
        "OLLAMA_HOST" => Some(host.clone()),
        "O3_LLAMA_BIN_DIR" | "O3_MODELS_DIR" => Some(d.clone()),
        "O3_CONNECT_TIMEOUT_S" => Some("2".into()),
        _ => None,
    };
    let why = find_backend(env).unwrap_err();
    assert!(
        why.contains("does not answer") && why.contains(&host),
        "{why}"
    );
    let why = find_backend(|k| (k != "O3_MODELS_DIR").then(|| env(k)).flatten()).unwrap_err();
    assert!(why.contains("O3_MODELS_DIR is unset"), "{why}");
    std::fs::remove_file(dir.join(engine::MODEL_FILES[1].1)).unwrap();
    let why = find_backend(env).unwrap_err();
    assert!(why.contains("does not exist"), "{why}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn spec(name: &str, model: &str, num_ctx: u32, fill: u32, num_predict: u32) -> CellSpec {
    CellSpec {
        test_name: o3_suite::matrix::test_name(name, num_ctx),
        name: name.into(),
        model: model.into(),
        category: "live check".into(),
        num_ctx,
        fill_tokens: fill,
        num_batch: 512,
        num_thread: 2,
        num_predict,
        gates: Gates {
            ttft_max_s: 600.0,
            tok_s_min: 0.1,
            stability_min: 0.0,
            ram_max_pct: 95.0,
        },
        use_case: "harness self-check".into(),
        optional: false,
        optimize: true,
        source: "tests/live_reference.rs".into(),
        relative_gates: None,
        probe: None,
    }
}

/// A run environment of its own for checks whose cells should not appear in the run's report.
fn private_env(b: &Backend, tag: &str, max_trials: u32) -> RunEnv {
    let mut config = b.config.clone();
    config.results_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live_reference");
    config.run_id = Some(format!("{tag}-{}", std::process::id()));
    config.min_trials = 2;
    config.max_trials = max_trials;
    RunEnv::new(config).unwrap()
}

fn ran(r: results::CellResult) -> results::CellResult {
    assert_ne!(
        r.verdict(),
        Verdict::Skipped,
        "cell could not run: {:?}",
        r.judgement.reasons()
    );
    r
}

#[test]
fn a_num_ctx_change_reloads_and_the_trial_is_not_counted() {
    let Some(b) = backend() else { return };
    let client = OllamaClient::new(&b.config);
    let server = monitor::find_server_pid(&b.config.base_url).expect("server process found");
    let req = |num_ctx: u32, prompt: String| GenerateRequest {
        model: "smollm2:135m".into(),
        prompt,
        load: LoadOptions {
            num_ctx,
            num_batch: 512,
            num_thread: 2,
        },
        num_predict: 16,
        seed: 1,
        keep_alive_s: 120,
        think_false: false,
        truncate_false: true,
    };
    RUNTIME.block_on(async {
        client.unload_all(Duration::from_secs(30)).await.unwrap();
        client
            .generate(&req(2048, String::new()), |_| {})
            .await
            .unwrap();
    });
    let runners = monitor::find_runners(server);
    assert_eq!(runners.len(), 1, "one runner after loading: {runners:?}");
    let before = runners[0];
    // The same model with another num_ctx: a trial of a cell whose options changed under it.
    let p = workload::prompt("live/reload", 200, workload::Ratios::default());
    let done = RUNTIME
        .block_on(client.generate(&req(4096, p.text.clone()), |_| {}))
        .unwrap();
    let after = monitor::find_runners(server);
    let plan = TrialPlan {
        index: 3,
        kind: TrialKind::Measured,
        prompt_chars: p.text.len(),
        intended_tokens: done.metrics.prompt_eval_count.unwrap() as u32,
        num_predict: 16,
    };
    let mut rec = measure::from_completed(&plan, &done);
    measure::check_runner(&mut rec, Some(before), after.first().copied());
    let _ = RUNTIME.block_on(client.unload("smollm2:135m"));
    // The reload was timed by the server and is visible in the record …
    let load_s = rec.load_s.unwrap();
    assert!(
        load_s > 0.05,
        "a reload takes real time: load_duration {load_s} s"
    );
    assert_ne!(after, [before], "the runner was replaced");
    // … and the trial is not counted.
    assert!(!rec.valid);
    assert!(
        rec.invalid_reasons
            .iter()
            .any(|r| r.contains("runner process changed")),
        "{:?}",
        rec.invalid_reasons
    );
}

#[test]
fn an_overlong_prompt_makes_the_cell_invalid() {
    let Some(b) = backend() else { return };
    // 3000 prompt tokens into a 2048 context.
    let cell = spec("live_overfill", "smollm2:135m", 2048, 3000, 16);
    let env = private_env(&b, "overfill", 3);
    // Ollama's default: the prompt is cut silently; the harness must notice.
    let opts = CellOptions {
        truncate_false: false,
        allow_overfill: true,
        ..CellOptions::default()
    };
    let r = ran(run_cell_with(&cell, &env, &opts));
    assert_eq!(r.verdict(), Verdict::Invalid, "{:?}", r.judgement.reasons());
    assert!(
        r.judgement.reasons()[0].contains("prompt truncated: server evaluated"),
        "{:?}",
        r.judgement.reasons()
    );
    let evaluated = r
        .trials
        .iter()
        .find(|t| t.kind == TrialKind::Measured)
        .and_then(|t| t.prompt_tokens_evaluated)
        .unwrap();
    assert!(
        (1000..=1100).contains(&evaluated),
        "Ollama's rule keeps about half of num_ctx: {evaluated}"
    );
    // With truncate:false the server refuses instead, and the cell says so.
    let opts = CellOptions {
        truncate_false: true,
        allow_overfill: true,
        ..CellOptions::default()
    };
    let r = ran(run_cell_with(&cell, &env, &opts));
    assert_eq!(r.verdict(), Verdict::Invalid, "{:?}", r.judgement.reasons());
    assert!(
        r.judgement.reasons()[0].contains("HTTP 400")
            && r.judgement.reasons()[0].contains("context length"),
        "{:?}",
        r.judgement.reasons()
    );
}

#[test]
fn the_runner_is_found_and_holds_the_weights() {
    let Some(b) = backend() else { return };
    let client = OllamaClient::new(&b.config);
    let tags = RUNTIME.block_on(client.tags()).unwrap();
    let size = tags
        .iter()
        .find(|t| t.name == "gemma3:270m")
        .and_then(|t| t.size)
        .unwrap();
    let cell = spec("live_runner", "gemma3:270m", 4096, 512, 32);
    let env = private_env(&b, "runner", 2);
    let r = ran(run_cell_with(&cell, &env, &CellOptions::default()));
    assert_ne!(r.verdict(), Verdict::Invalid, "{:?}", r.judgement.reasons());
    let hw = &r.hardware;
    assert!(
        hw.source.contains("process tree"),
        "the server's processes were sampled: {}",
        hw.source
    );
    let runner = r
        .trials
        .iter()
        .find_map(|t| t.runner_pid)
        .expect("each measured trial saw the runner");
    assert!(hw.pids.contains(&runner), "{:?} vs {runner}", hw.pids);
    assert!(
        hw.peak.rss_bytes >= size,
        "server tree peak RSS {} B covers the {size} B of weights",
        hw.peak.rss_bytes
    );
    let (anon, file) = (hw.peak.anon_bytes.unwrap(), hw.peak.file_bytes.unwrap());
    assert!(anon > 0 && file > 0, "anon {anon} file {file}");
    assert!(
        hw.samples >= 5 && hw.sample_hz >= 3.0,
        "{} samples at {} Hz",
        hw.samples,
        hw.sample_hz
    );
}

#[test]
fn ram_delta_grows_with_num_ctx() {
    let Some(b) = backend() else { return };
    let env = private_env(&b, "ram", 2);
    let delta = |num_ctx: u32| {
        // A fill of 1024 tokens: at 256, the characters-per-token calibration of shuffled
        // fragments was seen 10.2 % off (230 of 256 tokens evaluated), which invalidates a trial
        // (the ±10 % rule) though nothing was cut; a larger prompt averages that out.
        let cell = spec("live_ram", "smollm2:135m", num_ctx, 1024, 16);
        let r = ran(run_cell_with(&cell, &env, &CellOptions::default()));
        assert_ne!(r.verdict(), Verdict::Invalid, "{:?}", r.judgement.reasons());
        r.hardware.rss_delta_bytes
    };
    let small = delta(2048);
    let large = delta(8192);
    // smollm2: 30 layers × 3 KV heads × (64 + 64) × 2 bytes = 23,040 bytes of KV per token, so
    // 6144 more tokens of context allocate about 141 MB more.
    let kv_diff = 6144i64 * 23_040;
    assert!(
        large - small >= kv_diff / 2,
        "RAM Δ at 8K ({large} B) should exceed RAM Δ at 2K ({small} B) by about {kv_diff} B"
    );
}

/// Client decode rate ÷ `llama-bench` tg at the same threads, batch and depth: the band the
/// harness must be in. The client's rate is the server's (within 5 %, asserted below), and the
/// server runs the same engine at the same options, so on a quiet machine the ratio is about 1:
/// llama-bench leaves out sampling, detokenizing and HTTP, which cost a few percent. Figures
/// (fill 1024, tg128, `-r 2`, this 2-core machine while other jobs shared it), in a calmer
/// moment: smollm2 client 68.2 tok/s ÷ tg 69.7 = 0.98, gemma3 53.3 ÷ 60.9 = 0.88; in a busy one:
/// smollm2 11.1 ÷ 11.1 = 1.00, gemma3 56.6 ÷ 33.7 ± 2.7 = 1.68 (llama-bench slowed while it ran).
/// The band's low end, 0.7, leaves 20 % below the lowest calm figure for a quiet machine's noise
/// and the server's overhead; its high end, 1.4, is wider because a server cannot decode faster
/// than its engine, so a ratio above 1 only means llama-bench was slowed (1.68 above: on a busy
/// machine this check fails, as the live gates may). A harness that miscounts tokens or times by
/// a factor of 2 fails either way.
const DECODE_BAND: (f64, f64) = (0.7, 1.4);

/// For each reference model at one context and depth: the harness's figures next to
/// llama-bench's at the same threads, batch and depth (the engine module's runner and cache, so
/// the reference cell `smollm2_135m::ctx_2k` of the same run shares the measurement), recorded
/// in the cell result and the report.
#[test]
fn fidelity_against_llama_bench() {
    let Some(b) = backend() else { return };
    let env = RunEnv::new(b.config.clone()).unwrap();
    // Each at the fill of a reference cell with the same threads and batch
    // (`smollm2_135m::ctx_2k`, `gemma3_270m::ctx_8k`), so llama-bench's figure is the run's
    // cached one when that cell ran first, and measured once here otherwise.
    for (name, model, fill) in [
        ("fidelity_smollm2", MODELS[0], 1024),
        ("fidelity_gemma3", MODELS[1], 2048),
    ] {
        let (ctx, n_gen) = (4096, 128);
        let cell = spec(name, model, ctx, fill, n_gen);
        let mut r = ran(run_cell_with(&cell, &env, &CellOptions::default()));
        assert_ne!(r.verdict(), Verdict::Invalid, "{:?}", r.judgement.reasons());
        // Prefill of `fill` tokens from an empty cache; decode after `fill` tokens of context.
        let file = b.engine.model_file(model).unwrap();
        let req = BenchRequest::for_cell(&cell, file);
        let s = &r.summaries;
        let client = s.decode_tps.as_ref().unwrap().mean;
        let mut e = engine::cached_bench(&b.engine, &req, &env.run_dir).unwrap();
        // The run's cached figure may come from another moment of the run (another cell of the
        // same options measured it, at `O3_ENGINE_REPS`, 1 in CI): in one CI rehearsal a single
        // llama-bench repetition there measured tg128 at 11.5 tok/s while the harness measured
        // 77 here and the same llama-bench run gave pp1024 at the usual 285 tok/s, so one
        // moment of a busy machine had slowed it. When the cached figure puts the harness
        // outside the band, the engine is measured again now, three repetitions; the check is
        // on that measurement, and says so.
        if !(DECODE_BAND.0..=DECODE_BAND.1).contains(&(client / e.decode.mean_tps)) {
            let again = engine::EngineEnv {
                repetitions: 3,
                ..b.engine.clone()
            };
            let fresh = engine::bench(&again, &req).unwrap();
            eprintln!(
                "[{}] the run's cached llama-bench {} ({:.1} tok/s) puts the client's {client:.1} tok/s outside {DECODE_BAND:?}: measured again now, 3 repetitions: {:.1} ± {:.1} tok/s",
                cell.test_name,
                e.decode.test,
                e.decode.mean_tps,
                fresh.decode.mean_tps,
                fresh.decode.stddev_tps
            );
            e = fresh;
        }
        let (pp, tg) = (e.prefill.mean_tps, e.decode.mean_tps);
        let server = s.decode_tps_server.as_ref().unwrap().mean;
        let prefill = s.prefill_tps_server.as_ref().unwrap().mean;
        r.fidelity = [
            (FidelityKind::DecodeClientOverServer, client / server),
            (FidelityKind::DecodeClientOverLlamaBench, client / tg),
            (FidelityKind::DecodeServerOverLlamaBench, server / tg),
            (FidelityKind::PrefillServerOverLlamaBench, prefill / pp),
        ]
        .map(|(kind, ratio)| Fidelity { kind, ratio })
        .to_vec();
        r.judgement.notes.push(format!(
            "fidelity: llama-bench -t 2 -b 512 ({}): {} {pp:.1} tok/s, {} {tg:.1} tok/s; \
             harness: prefill {prefill:.1} tok/s (server), decode {client:.1} tok/s (client) / {server:.1} (server)",
            e.build, e.prefill.test, e.decode.test
        ));
        save_json(&env.run_dir.cell_path(&cell.test_name), &r).unwrap();
        report::build(&env.run_dir).unwrap();
        eprintln!("[{}] {}", cell.test_name, r.judgement.notes.last().unwrap());
        for f in &r.fidelity {
            eprintln!("[{}] {} = {:.3}", cell.test_name, f.kind.name(), f.ratio);
        }
        // The promise: the client's decode rate agrees with the server's within 5 %.
        let ratio = client / server;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "{model}: client decode {client:.2} vs server {server:.2} tok/s (ratio {ratio:.3})"
        );
        // The harness and the server against the engine alone (see DECODE_BAND).
        let ratio = client / tg;
        assert!(
            (DECODE_BAND.0..=DECODE_BAND.1).contains(&ratio),
            "{model}: client decode {client:.2} tok/s vs llama-bench {} {tg:.2} ± {:.2} tok/s \
             (ratio {ratio:.3}, allowed {DECODE_BAND:?})",
            e.decode.test,
            e.decode.stddev_tps
        );
    }
}
