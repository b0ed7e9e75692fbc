//! Protocol tests: whole cells (`run_cell_with`) against a scripted Ollama server speaking real
//! HTTP on 127.0.0.1, one server per test. Each test scripts one way a server can behave or
//! misbehave (`docs/ollama-api.md` §1, §2.5, §6) and asserts the harness's exact reaction: the
//! requests it sent, the verdict, the reasons, the stop reason, and that it never hangs.

#[path = "support/scripted_server.rs"]
#[allow(dead_code)] // each test target uses part of the scripted server
mod scripted_server;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use o3_suite::backend::Retried;
use o3_suite::config::Config;
use o3_suite::harness::{self, RunEnv};
use o3_suite::optimize::OptConfig;
use o3_suite::optimize::live::{ModelOutcome, optimize_model};
use o3_suite::results::{CellResult, CellSpec, Gates, StopReason, TrialKind, TrialRecord, Verdict};
use o3_suite::runner::{CellOptions, run_cell_with};
use rstest::rstest;
use serde_json::{Value, json};

use scripted_server::{
    Answer, Behaviour, CHARS_PER_TOKEN, DIGEST, Raw, Recorded, Script, ScriptedServer,
};

/// The model the scripted server has.
const MODEL: &str = "o3-scripted:1b";
/// The cell's options.
const NUM_CTX: u32 = 8192;
const FILL: u32 = 2000;
const NUM_PREDICT: u32 = 16;
const NUM_BATCH: u32 = 512;
const NUM_THREAD: u32 = 2;
/// A backstop on each cell's wall time, for a harness that waits on and on without hanging
/// for good. What a timeout does is asserted exactly elsewhere (the stall and trickle tests
/// check the reason and the 1–2 s floors), so this bound only has to be clear of any machine:
/// the slowest cell here took 2.4 s (the trickle test, which waits out a 2 s trial timeout) on
/// 2 cores at load 4–8, the others 1.5 s or less; 60 s is 25× that. (It was 15 s, about 6×,
/// which a CI machine loaded by parallel builds could reach.)
const TEST_BUDGET: Duration = Duration::from_secs(60);

/// A cell of 2000 prompt tokens in an 8K context, with gates no scripted server can miss.
fn spec(test_name: &str) -> CellSpec {
    let (name, _) = test_name.split_once("::").unwrap_or((test_name, ""));
    CellSpec {
        test_name: test_name.to_string(),
        name: name.to_string(),
        model: MODEL.to_string(),
        category: "protocol".to_string(),
        num_ctx: NUM_CTX,
        fill_tokens: FILL,
        num_batch: NUM_BATCH,
        num_thread: NUM_THREAD,
        num_predict: NUM_PREDICT,
        gates: Gates {
            ttft_max_s: 30.0,
            tok_s_min: 1.0,
            stability_min: 0.1,
            // The machine's own RAM use must never trip the guard in these tests.
            ram_max_pct: 100.0,
        },
        use_case: "test".to_string(),
        optional: false,
        optimize: true,
        source: "tests/protocol.rs".to_string(),
        relative_gates: None,
        probe: None,
    }
}

/// A run id shaped like the harness's own default (`<date>-<time>-<pid>`), unique per test.
fn unique_run_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "20260821-{:06}-{}-{}",
        nanos % 1_000_000,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn config(base_url: String) -> Config {
    let run_id = unique_run_id();
    Config {
        base_url,
        results_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("protocol")
            .join(&run_id),
        run_id: Some(run_id),
        min_trials: 3,
        max_trials: 5,
        first_chunk_timeout: Duration::from_secs(5),
        chunk_gap_timeout: Duration::from_secs(2),
        trial_timeout: Duration::from_secs(20),
        unload_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// One cell run against a scripted server.
struct Ran {
    server: ScriptedServer,
    env: RunEnv,
    result: CellResult,
    elapsed: Duration,
}

impl Ran {
    fn result(&self) -> &CellResult {
        &self.result
    }

    fn measured(&self) -> Vec<&TrialRecord> {
        self.result()
            .trials
            .iter()
            .filter(|t| t.kind == TrialKind::Measured)
            .collect()
    }

    fn trial(&self, kind: TrialKind) -> &TrialRecord {
        self.result()
            .trials
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} trial in {:#?}", self.result().trials))
    }

    /// `<run>/cells/<file>.json`, read back.
    fn result_on_disk(&self) -> CellResult {
        let path = self.env.run_dir.cell_path(&self.result().cell.test_name);
        assert!(path.is_file(), "no result file at {}", path.display());
        let cells = self
            .env
            .run_dir
            .read_cells()
            .expect("the result files parse");
        assert_eq!(cells.len(), 1, "one cell per run directory");
        cells.into_iter().next().unwrap()
    }

    fn report_md(&self) -> PathBuf {
        self.env.run_dir.report_path("performance_matrix.md")
    }

    /// Asserts the verdict, the stop reason and the number of measured trials, showing the
    /// whole result when one differs.
    fn expect(&self, verdict: Verdict, stop: StopReason, measured: usize) {
        let r = self.result();
        assert_eq!(
            (r.verdict(), r.stop_reason, self.measured().len()),
            (verdict, stop, measured),
            "verdict, stop reason, measured trials; reasons {:#?}\ntrials {:#?}",
            r.judgement.reasons(),
            r.trials
        );
        assert!(
            self.elapsed < TEST_BUDGET,
            "the cell took {:?} (budget {TEST_BUDGET:?})",
            self.elapsed
        );
        // Whatever happened, the cell leaves its result and the reports behind.
        let disk = self.result_on_disk();
        assert_eq!(
            (disk.verdict(), &disk.judgement.reasons(), disk.stop_reason),
            (r.verdict(), &r.judgement.reasons(), r.stop_reason)
        );
        assert!(
            self.report_md().is_file(),
            "{} missing",
            self.report_md().display()
        );
    }

    /// Asserts an INVALID cell (see [`Ran::expect`]) whose one reason is `reason`.
    fn expect_invalid(&self, stop: StopReason, measured: usize, reason: impl AsRef<str>) {
        self.expect(Verdict::Invalid, stop, measured);
        assert_eq!(only_reason(self), reason.as_ref());
    }

    /// Asserts an INVALID cell of `measured` trials, every one invalid for `reason` alone, and
    /// the cell's reason the count of them (`(×n)` when there are several).
    fn expect_all_invalid(&self, stop: StopReason, measured: usize, reason: &str) {
        let times = if measured > 1 {
            format!(" (×{measured})")
        } else {
            String::new()
        };
        self.expect_invalid(
            stop,
            measured,
            format!("only 0 of {measured} measured trials valid: {reason}{times}"),
        );
        for t in self.measured() {
            assert!(!t.valid, "{t:#?}");
            assert_eq!(t.invalid_reasons, [reason]);
        }
    }

    /// Asserts a PASS reached by the stopping rule after 3 to 5 measured trials (how many
    /// depends on the machine's timing jitter, not on the protocol).
    fn expect_pass(&self) {
        let r = self.result();
        let n = self.measured().len();
        assert!(
            r.verdict() == Verdict::Pass && (3..=5).contains(&n),
            "expected PASS after 3–5 trials, got {:?} after {n}: {:#?}\n{:#?}",
            r.verdict(),
            r.judgement.reasons(),
            r.trials
        );
        self.expect(Verdict::Pass, r.stop_reason, n);
    }

    /// Asserts the last request of the cell was the unload of its model.
    fn expect_unloaded_at_end(&self) {
        let reqs = self.server.requests();
        let last = reqs.last().expect("requests were made");
        assert!(last.is_unload(), "last request is not an unload: {last:#?}");
        assert_eq!(last.body["model"], json!(MODEL));
    }
}

fn run_script(test_name: &str, script: Script, tweak: impl FnOnce(&mut Config)) -> Ran {
    run_opts(test_name, script, tweak, &CellOptions::default())
}

fn run_opts(
    test_name: &str,
    script: Script,
    tweak: impl FnOnce(&mut Config),
    opts: &CellOptions,
) -> Ran {
    let server = ScriptedServer::start(script);
    let mut cfg = config(server.base_url());
    tweak(&mut cfg);
    let env = RunEnv::new(cfg).expect("the run directory can be created");
    let t = Instant::now();
    let result = run_cell_with(&spec(test_name), &env, opts);
    let elapsed = t.elapsed();
    Ran {
        server,
        env,
        result,
        elapsed,
    }
}

fn run(test_name: &str, script: Script) -> Ran {
    run_script(test_name, script, |_| {})
}

fn only_reason(ran: &Ran) -> String {
    let reasons = ran.result().judgement.reasons();
    assert!(!reasons.is_empty(), "no reasons: {:#?}", ran.result());
    reasons[0].clone()
}

// ---------------------------------------------------------------------------------------------
// 1. A normal stream.

#[rstest]
#[case::keep_alive(false)]
#[case::connection_close(true)]
fn normal_stream_passes_and_sends_the_cell_options(#[case] connection_close: bool) {
    let script = Script {
        connection_close,
        ..Script::new(MODEL)
    };
    let ran = run("scripted_normal::ctx_8k", script);
    let r = ran.result();
    assert!(
        ran.result.verdict() != Verdict::Skipped,
        "{:?}",
        r.judgement.reasons()
    );
    assert_eq!(
        r.verdict(),
        Verdict::Pass,
        "{:#?}\n{:#?}",
        r.judgement.reasons(),
        r.trials
    );
    // Three valid trials give clear intervals against these loose gates.
    assert!(
        matches!(
            r.stop_reason,
            StopReason::VerdictClear | StopReason::IntervalsTight
        ),
        "{:?}",
        r.stop_reason
    );
    ran.expect(Verdict::Pass, r.stop_reason, 3);
    assert!(
        r.judgement.reasons()[0].starts_with("TTFT mean "),
        "{:?}",
        r.judgement.reasons()
    );
    assert!(
        r.judgement.reasons().iter().all(|s| !s.contains("invalid")),
        "{:?}",
        r.judgement.reasons()
    );

    // The scripted server is a process of this machine (this one): the host's speed was read
    // before each measured trial and after the last, on the cell's threads.
    let host = r.host_speed.as_ref().expect("host speed read");
    assert_eq!(
        host.readings_gflops.len(),
        ran.measured().len() + 1,
        "{host:?}"
    );
    assert!(
        host.readings_gflops
            .iter()
            .all(|g| g.is_finite() && *g > 0.0)
    );
    assert_eq!(host.threads, NUM_THREAD);

    // Every measured trial is valid, with the server's own figures.
    for t in ran.measured() {
        assert!(t.valid, "{t:#?}");
        let evaluated = t.prompt_tokens_evaluated.expect("prompt_eval_count");
        assert_eq!(
            evaluated as usize,
            t.prompt_chars / CHARS_PER_TOKEN as usize
        );
        assert!(evaluated.abs_diff(FILL) <= 2, "{evaluated} vs {FILL}");
        assert_eq!(t.prompt_tokens_intended, FILL);
        assert_eq!(t.output_tokens, Some(NUM_PREDICT));
        assert_eq!(t.content_chunks, NUM_PREDICT);
        assert_eq!(t.thinking_chunks, 0);
        assert_eq!(t.done_reason.as_deref(), Some("length"));
        assert_eq!(t.ttft_s, t.ttft_any_s);
        assert!(
            t.load_s.unwrap() < 0.001,
            "warm load_duration: {:?}",
            t.load_s
        );
        assert!(t.decode_tps.unwrap() > 1.0 && t.decode_tps_server.unwrap() > 1.0);
    }
    // Two calibrations at 512 tokens, prose then code, sized with the default guesses (4.2 and
    // 3.0 characters per token; the unique first line is counted at the code rate); the
    // scripted tokenizer counts 4 characters a token, and the harness recalibrates to it.
    let calib: Vec<&TrialRecord> = r
        .trials
        .iter()
        .filter(|t| t.kind == TrialKind::Calibration)
        .collect();
    assert_eq!(calib.len(), 2);
    for c in &calib {
        assert_eq!(c.prompt_tokens_intended, 512);
        assert_eq!(c.prompt_tokens_evaluated, Some((c.prompt_chars / 4) as u32));
    }
    assert!(
        (2000..=2151).contains(&calib[0].prompt_chars),
        "prose calibration {} chars",
        calib[0].prompt_chars
    );
    assert!(
        calib[1].prompt_chars.abs_diff(1536) <= 2,
        "code calibration {} chars",
        calib[1].prompt_chars
    );
    let cpt = r.metadata.chars_per_token.expect("calibrated");
    assert!((cpt - 4.0).abs() < 0.02, "chars per token {cpt}");

    // What the harness learnt about the server.
    let m = &r.metadata;
    assert_eq!(m.server_version.as_deref(), Some("0.33.0"));
    assert_eq!(m.model_digest.as_deref(), Some(DIGEST));
    assert_eq!(m.quantization.as_deref(), Some("Q4_K_M"));
    assert_eq!(m.parameter_size.as_deref(), Some("1.2B"));
    assert_eq!(m.family.as_deref(), Some("llama"));
    assert_eq!(m.trained_context, Some(131_072));
    assert_eq!(m.ps_context_length, Some(NUM_CTX as u64));
    assert!(m.truncate_false_sent && !m.think_false_sent);
    assert!(r.load_s.unwrap() > 0.2, "cold load_duration {:?}", r.load_s);

    // The requests, in order: preflight, clean slate, load, /api/ps, prompts, unload.
    let reqs = ran.server.requests();
    let line = |q: &Recorded| format!("{} {}", q.method, q.path);
    let lines: Vec<String> = reqs.iter().map(line).collect();
    assert_eq!(
        lines[..4],
        [
            "GET /api/version",
            "GET /api/tags",
            "POST /api/show",
            "GET /api/ps"
        ],
        "{lines:#?}"
    );
    assert_eq!(reqs[2].body["model"], json!(MODEL));
    let load = reqs
        .iter()
        .position(Recorded::is_load)
        .expect("a load request");
    assert_eq!(lines[load + 1], "GET /api/ps", "{lines:#?}");
    assert!(
        reqs[..load].iter().all(|q| !q.is_generate()),
        "nothing generated before the load: {lines:#?}"
    );
    ran.expect_unloaded_at_end();
    let unloads = reqs.iter().filter(|q| q.is_unload()).count();
    assert_eq!(unloads, 1, "nothing was loaded before the cell: {lines:#?}");

    // Every generate that loads or prompts carries the same load-time options and flags.
    let gens: Vec<&Recorded> = reqs
        .iter()
        .filter(|q| q.is_generate() && !q.is_unload())
        .collect();
    assert_eq!(
        gens.len(),
        1 + 2 + 1 + 3,
        "load, 2 calibrations, warm-up, 3 trials"
    );
    let strip = |q: &Recorded| {
        let mut o = q.body["options"].clone();
        o.as_object_mut()
            .expect("options object")
            .remove("num_predict");
        o
    };
    let first = strip(gens[0]);
    assert_eq!(
        first,
        json!({"num_ctx": NUM_CTX, "num_batch": NUM_BATCH, "num_thread": NUM_THREAD,
               "temperature": 0, "seed": 42})
    );
    for q in &gens {
        assert_eq!(strip(q), first, "options differ: {:#?}", q.body);
        assert!(q.option("f16_kv").is_none());
        assert_eq!(q.body["raw"], json!(true));
        assert_eq!(q.body["stream"], json!(true));
        assert_eq!(q.body["model"], json!(MODEL));
        assert_eq!(
            q.body["truncate"],
            json!(false),
            "server 0.33.0 supports it"
        );
        assert!(
            q.body.get("think").is_none(),
            "model cannot think: {:#?}",
            q.body
        );
        let keep_alive = q.body["keep_alive"]
            .as_u64()
            .expect("keep_alive in seconds");
        assert!(keep_alive >= 25, "keep_alive {keep_alive} s covers a trial");
    }
    let predicts: Vec<Option<&Value>> = gens.iter().map(|q| q.option("num_predict")).collect();
    let n = json!(NUM_PREDICT);
    assert_eq!(
        predicts,
        [
            Some(&json!(1)),
            Some(&json!(1)),
            Some(&json!(1)),
            Some(&n),
            Some(&n),
            Some(&n),
            Some(&n)
        ]
    );
    assert_eq!(&r.metadata.options_sent, &gens[3].body["options"]);

    // The measured prompts are distinct (no prompt cache can serve them).
    let prompts: Vec<&str> = gens[4..].iter().map(|q| q.prompt()).collect();
    for (i, a) in prompts.iter().enumerate() {
        assert_eq!(
            a.len() as u64 / CHARS_PER_TOKEN,
            ran.measured()[i].prompt_tokens_evaluated.unwrap() as u64
        );
        for b in &prompts[i + 1..] {
            assert_ne!(a, b);
        }
        assert_ne!(*a, gens[2].prompt(), "a trial repeats the warm-up prompt");
    }

    // The report names the cell.
    let md = std::fs::read_to_string(ran.report_md()).unwrap();
    assert!(md.contains("scripted_normal"), "{md}");
}

/// Measured prompts must start differently, so that no prefix cache serves even their first
/// tokens (`docs/ARCHITECTURE.md` "Modules": prompts unique per trial, defeating prompt caches;
/// `docs/ollama-api.md` §8).
#[test]
fn measured_prompts_start_differently() {
    let ran = run("gemma3_tools_27b::ctx_8k", Script::new(MODEL));
    ran.expect_pass();
    let prompts: Vec<String> = ran
        .server
        .prompt_generates()
        .iter()
        .map(|q| q.prompt().to_string())
        .collect();
    assert_eq!(prompts.len(), 6, "2 calibrations, warm-up, 3 trials");
    let heads: Vec<String> = prompts
        .iter()
        .map(|p| p.chars().take(40).collect())
        .collect();
    for (i, a) in heads.iter().enumerate() {
        for b in &heads[i + 1..] {
            assert_ne!(
                a, b,
                "two prompts of the cell share their first 40 characters: {heads:#?}"
            );
        }
    }
}

/// Two runs of a cell send the same prompts (runner `prompt_key`: the cell and the request, not
/// the run), so a comparison with a baseline compares the same work; each run's cell starts by
/// unloading every model, so no cache carries them over.
#[test]
fn two_runs_of_a_cell_send_the_same_prompts() {
    let first = run("gemma3_tools_27b::ctx_8k", Script::new(MODEL));
    let second = run("gemma3_tools_27b::ctx_8k", Script::new(MODEL));
    first.expect_pass();
    second.expect_pass();
    assert_ne!(
        first.result().metadata.run_id,
        second.result().metadata.run_id
    );
    let prompts = |r: &Ran| -> Vec<String> {
        r.server
            .prompt_generates()
            .iter()
            .map(|q| q.prompt().to_string())
            .collect()
    };
    let (a, b) = (prompts(&first), prompts(&second));
    assert_eq!(a.len(), 6, "2 calibrations, warm-up, 3 trials");
    assert_eq!(a, b);
    // Another cell of the same model and size sends others.
    let other = run("gemma3_tools_27b::ctx_8k_again", Script::new(MODEL));
    other.expect_pass();
    let c = prompts(&other);
    assert!(
        a.iter().zip(&c).all(|(x, y)| x != y),
        "a prompt repeats across cells"
    );
}

/// A server older than v0.12.6 does not know `truncate`, and `CellOptions::truncate_false`
/// can turn it off: then the harness must not send it.
#[rstest]
#[case::old_server("0.12.5", true)]
#[case::turned_off("0.33.0", false)]
fn no_truncate_flag_when_unsupported_or_off(#[case] version: &str, #[case] truncate_false: bool) {
    let script = Script {
        version: version.to_string(),
        ..Script::new(MODEL)
    };
    let opts = CellOptions {
        truncate_false,
        ..CellOptions::default()
    };
    let ran = run_opts("scripted_no_truncate::ctx_8k", script, |_| {}, &opts);
    ran.expect_pass();
    assert!(!ran.result().metadata.truncate_false_sent);
    for q in ran.server.generates() {
        assert!(q.body.get("truncate").is_none(), "{:#?}", q.body);
    }
}

/// NDJSON lines split across chunked pieces are reassembled; each line counts when its
/// newline arrives.
#[test]
fn lines_split_across_chunks_are_reassembled() {
    let script = Script {
        warmup: Behaviour::SplitLines,
        ..Script::new(MODEL)
    }
    .measured(|_| Behaviour::SplitLines);
    let ran = run("scripted_split::ctx_8k", script);
    ran.expect_pass();
    for t in ran.measured() {
        assert!(t.valid, "{t:#?}");
        assert_eq!(t.content_chunks, NUM_PREDICT);
        assert_eq!(t.output_tokens, Some(NUM_PREDICT));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Thinking.

#[test]
fn thinking_model_gets_think_false_and_both_ttfts() {
    let thinking = || Behaviour::Thinking { chunks: 4 };
    let script = Script {
        thinking: true,
        warmup: thinking(),
        ..Script::new(MODEL)
    }
    .measured(move |_| thinking());
    let ran = run("scripted_thinking::ctx_8k", script);
    ran.expect_pass();
    assert!(ran.result().metadata.think_false_sent);
    let gens = ran.server.generates();
    for q in gens.iter().filter(|q| !q.is_unload()) {
        assert_eq!(q.body["think"], json!(false), "{:#?}", q.body);
    }
    for t in ran.measured() {
        assert!(t.valid, "{t:#?}");
        assert_eq!((t.thinking_chunks, t.content_chunks), (4, NUM_PREDICT - 4));
        let (any, answer) = (t.ttft_any_s.unwrap(), t.ttft_s.unwrap());
        assert!(any < answer, "ttft_any {any} must precede ttft {answer}");
        assert_eq!(
            t.output_tokens,
            Some(NUM_PREDICT),
            "eval_count counts thinking"
        );
    }
    let s = &ran.result().summaries;
    assert!(s.ttft_any_s.as_ref().unwrap().mean < s.ttft_s.as_ref().unwrap().mean);
}

// ---------------------------------------------------------------------------------------------
// 3. Silent truncation.

#[test]
fn truncated_prompt_is_invalid() {
    let script = Script {
        prompt_cap: Some(600),
        ..Script::new(MODEL)
    };
    let ran = run("scripted_truncated::ctx_8k", script);
    // Three invalid trials of at most five: more than half can no longer be valid.
    ran.expect_invalid(
        StopReason::TooManyInvalid,
        3,
        "only 0 of 3 measured trials valid: prompt truncated: server evaluated 600 of 2000 intended prompt tokens (×3)",
    );
    for t in ran.measured() {
        assert!(!t.valid);
        assert_eq!(t.prompt_tokens_evaluated, Some(600));
        assert!(
            t.invalid_reasons.contains(
                &"prompt truncated: server evaluated 600 of 2000 intended prompt tokens"
                    .to_string()
            ),
            "{:?}",
            t.invalid_reasons
        );
    }
    // The calibration (512 tokens) was not cut, and the cut warm-up did not spoil it.
    let calib = ran.trial(TrialKind::Calibration);
    let evaluated = calib.prompt_tokens_evaluated.unwrap();
    assert!(evaluated < 600, "{evaluated}");
    assert_eq!(evaluated as usize, calib.prompt_chars / 4);
    assert_eq!(
        ran.trial(TrialKind::Warmup).prompt_tokens_evaluated,
        Some(600)
    );
    let cpt = ran.result().metadata.chars_per_token.unwrap();
    assert!((cpt - 4.0).abs() < 0.02, "chars per token {cpt}");
    ran.expect_unloaded_at_end();
}

/// Control: a server that evaluates 7.5 % fewer tokens than meant (template or tokenizer
/// differences) is within the 10 % tolerance, and the harness recalibrates from the warm-up.
#[test]
fn prompt_within_the_fill_tolerance_passes() {
    let script = Script {
        prompt_cap: Some(1850),
        ..Script::new(MODEL)
    };
    let ran = run("scripted_nearly_full::ctx_8k", script);
    ran.expect_pass();
    for t in ran.measured() {
        assert!(t.valid, "{t:#?}");
        assert_eq!(t.prompt_tokens_evaluated, Some(1850));
    }
    // Warm-up: 8000 characters counted as 1850 tokens.
    let cpt = ran.result().metadata.chars_per_token.unwrap();
    assert!(
        (cpt - 8000.0 / 1850.0).abs() < 0.02,
        "chars per token {cpt}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Reload inside the cell.

const RELOAD_REASON: &str = "model reloaded inside the cell: load_duration 2.00 s > 0.5 s";

#[test]
fn reloads_in_most_trials_make_the_cell_invalid() {
    let script = Script::new(MODEL).measured(|n| {
        if n >= 2 {
            Behaviour::LoadDuration(scripted_server::RELOAD_NS)
        } else {
            Behaviour::Normal
        }
    });
    let ran = run("scripted_reload::ctx_8k", script);
    // Trial 1 valid; trials 2–4 reloaded: 3 invalid of at most 5 stops the cell.
    ran.expect_invalid(
        StopReason::TooManyInvalid,
        4,
        format!("only 1 of 4 measured trials valid: {RELOAD_REASON} (×3)"),
    );
    let m = ran.measured();
    assert!(m[0].valid, "{:#?}", m[0]);
    for t in &m[1..] {
        assert!(!t.valid);
        assert_eq!(t.invalid_reasons, [RELOAD_REASON]);
        assert_eq!(t.load_s, Some(2.0));
    }
    ran.expect_unloaded_at_end();
}

#[test]
fn a_single_reload_is_not_scored_but_the_cell_passes() {
    let script = Script::new(MODEL).measured(|n| {
        if n == 2 {
            Behaviour::LoadDuration(scripted_server::RELOAD_NS)
        } else {
            Behaviour::Normal
        }
    });
    let ran = run("scripted_one_reload::ctx_8k", script);
    // Trials 1, 3, 4 valid: three valid trials give a clear verdict.
    ran.expect(Verdict::Pass, ran.result().stop_reason, 4);
    let r = ran.result();
    // The verdict's last reason, before the notes.
    let reasons = r.judgement.reasons();
    let last = reasons.iter().rfind(|l| !l.starts_with("note: ")).unwrap();
    assert_eq!(
        last,
        &format!("1 of 4 measured trials invalid and not scored: {RELOAD_REASON}")
    );
    let valid: Vec<bool> = ran.measured().iter().map(|t| t.valid).collect();
    assert_eq!(valid, [true, false, true, true]);
    assert_eq!(
        r.summaries.decode_tps.as_ref().unwrap().n,
        3,
        "only valid trials are scored"
    );
    assert!((r.stability.success_rate - 0.75).abs() < 1e-9);
}

/// Control: a `load_duration` of 0.4 s (queueing, a slow scheduler) is below the reload
/// threshold of 0.5 s and does not invalidate anything.
#[test]
fn load_duration_below_the_reload_threshold_passes() {
    let script = Script::new(MODEL).measured(|_| Behaviour::LoadDuration(400_000_000));
    let ran = run("scripted_slow_sched::ctx_8k", script);
    ran.expect_pass();
    for t in ran.measured() {
        assert!(t.valid, "{t:#?}");
        assert_eq!(t.load_s, Some(0.4));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. An error line mid-stream.

#[test]
fn error_line_mid_stream_invalidates_and_stops() {
    let msg = "an error was encountered while running the model: boom";
    let script = Script::new(MODEL).measured(move |_| Behaviour::ErrorLine {
        after: 3,
        message: msg.to_string(),
    });
    let ran = run("scripted_error_line::ctx_8k", script);
    // Two failures in a row end the cell.
    let reason = format!("error line in the stream after 3 chunk(s): {msg}");
    ran.expect_all_invalid(StopReason::Error, 2, &reason);
    assert_eq!(ran.server.prompt_generates().len(), 3 + 2);
    ran.expect_unloaded_at_end();
}

// ---------------------------------------------------------------------------------------------
// 6. A stream cut without done:true.

#[rstest]
#[case::chunked_terminator(true)]
#[case::socket_closed(false)]
fn stream_cut_without_done_invalidates_and_stops(#[case] clean: bool) {
    let script = Script::new(MODEL).measured(move |_| Behaviour::CutAfter { chunks: 3, clean });
    let ran = run("scripted_cut::ctx_8k", script);
    let reason = "stream ended without done:true after 3 chunk(s)";
    ran.expect_all_invalid(StopReason::Error, 2, reason);
    ran.expect_unloaded_at_end();
}

// ---------------------------------------------------------------------------------------------
// 7. Stalls.

/// A server that goes silent — between chunks, or before the first — for 30 s: the timeout for
/// that wait, set to 1 s, ends the trial, which is invalid with that reason, and the cell stops.
#[rstest]
#[case::between_chunks(
    "scripted_stall::ctx_8k",
    Behaviour::StallAfter { chunks: 2, secs: 30 },
    |c: &mut Config| c.chunk_gap_timeout = Duration::from_secs(1),
    "timed out after 1.0 s waiting for the next chunk"
)]
#[case::before_the_first_chunk(
    "scripted_first_stall::ctx_8k",
    Behaviour::StallBeforeFirst { secs: 30 },
    |c: &mut Config| c.first_chunk_timeout = Duration::from_secs(1),
    "timed out after 1.0 s waiting for the first chunk (model load and prefill)"
)]
fn a_stall_times_out_and_stops(
    #[case] test_name: &str,
    #[case] stall: Behaviour,
    #[case] timeout: fn(&mut Config),
    #[case] reason: &str,
) {
    let script = Script::new(MODEL).measured(move |_| stall.clone());
    let ran = run_script(test_name, script, timeout);
    ran.expect_all_invalid(StopReason::Error, 1, reason);
    assert!(ran.elapsed >= Duration::from_secs(1), "{:?}", ran.elapsed);
    ran.expect_unloaded_at_end();
}

#[test]
fn trickle_past_the_trial_timeout_times_out_and_stops() {
    // 16 lines 400 ms apart: every gap is within the 1.5 s gap timeout, the whole is not
    // within the 2 s trial timeout. (1.5 s, not 1 s: a loaded machine that delays one line by
    // 0.6 s must not turn this into a gap timeout; the trial timeout still comes first.)
    let script = Script::new(MODEL).measured(|_| Behaviour::Slow {
        gap: Duration::from_millis(400),
    });
    let ran = run_script("scripted_trickle::ctx_8k", script, |c| {
        c.chunk_gap_timeout = Duration::from_millis(1500);
        c.trial_timeout = Duration::from_secs(2);
    });
    let reason = "timed out after 2.0 s waiting for the whole request";
    ran.expect_all_invalid(StopReason::Error, 1, reason);
    ran.expect_unloaded_at_end();
}

// ---------------------------------------------------------------------------------------------
// Clean slate.

#[test]
fn a_model_loaded_before_the_cell_is_unloaded_first() {
    let script = Script {
        preloaded: true,
        ..Script::new(MODEL)
    };
    let ran = run("scripted_preloaded::ctx_8k", script);
    ran.expect_pass();
    let reqs = ran.server.requests();
    let first_gen = reqs.iter().position(Recorded::is_generate).unwrap();
    assert!(reqs[first_gen].is_unload(), "{:#?}", reqs[first_gen]);
    assert_eq!(
        (
            reqs[first_gen + 1].method.as_str(),
            reqs[first_gen + 1].path.as_str()
        ),
        ("GET", "/api/ps"),
        "waits for /api/ps to show nothing"
    );
    let load = reqs.iter().position(Recorded::is_load).unwrap();
    assert!(load > first_gen + 1);
    // The cell's own load was a cold one, with the cell's options.
    assert!(
        ran.result().load_s.unwrap() > 0.2,
        "{:?}",
        ran.result().load_s
    );
    assert_eq!(
        ran.result().metadata.ps_context_length,
        Some(NUM_CTX as u64)
    );
}

#[test]
fn a_model_that_will_not_unload_makes_the_cell_invalid() {
    let script = Script {
        preloaded: true,
        sticky: true,
        ..Script::new(MODEL)
    };
    let ran = run_script("scripted_sticky::ctx_8k", script, |c| {
        c.unload_timeout = Duration::from_secs(1);
    });
    ran.expect_invalid(
        StopReason::NotStarted,
        0,
        format!(
            "could not unload models before the cell: timed out after 1.0 s waiting for the server to unload {MODEL}"
        ),
    );
    assert!(
        ran.server.generates().iter().all(Recorded::is_unload),
        "nothing is loaded on a dirty server"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Model not found.

#[rstest]
#[case::not_in_tags(false, true)]
#[case::show_404(true, false)]
fn missing_model_cannot_run(#[case] listed: bool, #[case] show_found: bool) {
    let script = Script {
        listed,
        show_found,
        ..Script::new(MODEL)
    };
    let ran = run("scripted_missing::ctx_8k", script);
    assert!(ran.result.verdict() == Verdict::Skipped, "{:?}", ran.result);
    ran.expect(Verdict::Skipped, StopReason::NotStarted, 0);
    let host = ran.server.host();
    assert_eq!(host, format!("127.0.0.1:{}", ran.server.port()));
    let reason = only_reason(&ran);
    assert!(
        reason.starts_with(&format!(
            "model {MODEL} is not pulled on {host}: run `ollama pull {MODEL}` there"
        )),
        "{reason}"
    );
    if !listed {
        assert!(
            reason.contains("other-model:latest"),
            "lists what is there: {reason}"
        );
    }
    let paths: Vec<String> = ran
        .server
        .requests()
        .iter()
        .map(|q| q.path.clone())
        .collect();
    let expected: &[&str] = if listed {
        &["/api/version", "/api/tags", "/api/show"]
    } else {
        &["/api/version", "/api/tags"]
    };
    assert_eq!(paths, expected, "nothing is loaded for a missing model");
    assert!(ran.result().trials.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 9. Server errors.

const TERMINATED: &str = "llama-server process has terminated: exit status 137";

/// Where the 500 comes.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Load,
    Calibration,
    Warmup,
    Measured,
}

#[rstest]
#[case::load(Phase::Load, "loading the model failed: ", 0)]
#[case::calibration(Phase::Calibration, "calibration request failed: ", 1)]
#[case::warmup(Phase::Warmup, "warm-up request failed: ", 3)]
#[case::measured(Phase::Measured, "only 0 of 1 measured trials valid: ", 4)]
fn http_500_stops_the_cell(#[case] phase: Phase, #[case] prefix: &str, #[case] records: usize) {
    let err = Behaviour::http_500(TERMINATED);
    let base = Script::new(MODEL);
    let script = match phase {
        Phase::Load => Script { load: err, ..base },
        Phase::Calibration => Script {
            calibration: err,
            ..base
        },
        Phase::Warmup => Script {
            warmup: err,
            ..base
        },
        Phase::Measured => base.measured(move |_| err.clone()),
    };
    let ran = run("scripted_500::ctx_8k", script);
    assert!(ran.result.verdict() != Verdict::Skipped, "{:?}", ran.result);
    let measured = usize::from(matches!(phase, Phase::Measured));
    let reason = format!("POST /api/generate answered HTTP 500: {TERMINATED}");
    ran.expect_invalid(StopReason::Error, measured, format!("{prefix}{reason}"));
    // The request that failed is recorded as an invalid trial with the server's message.
    let trials = &ran.result().trials;
    assert_eq!(trials.len(), records, "{trials:#?}");
    if let Some(last) = trials.last() {
        assert!(!last.valid);
        assert_eq!(last.invalid_reasons, [reason.as_str()]);
    }
    // Nothing after the failure but the unload.
    assert_eq!(ran.server.prompt_generates().len(), records);
    ran.expect_unloaded_at_end();
}

// ---------------------------------------------------------------------------------------------
// 10. Context clamped.

#[test]
fn clamped_context_in_api_ps_is_invalid() {
    let script = Script {
        ps_context_length: Some(4096),
        ..Script::new(MODEL)
    };
    let ran = run("scripted_clamped::ctx_8k", script);
    ran.expect_invalid(
        StopReason::Error,
        0,
        "the server runs the model at context 4096, not the cell's num_ctx 8192 (/api/ps context_length)",
    );
    assert_eq!(ran.result().metadata.ps_context_length, Some(4096));
    assert!(ran.server.prompt_generates().is_empty(), "nothing measured");
    ran.expect_unloaded_at_end();
}

#[test]
fn context_beyond_the_trained_one_is_invalid_before_loading() {
    let script = Script {
        trained_context: 4096,
        ..Script::new(MODEL)
    };
    let ran = run("scripted_untrained::ctx_8k", script);
    ran.expect(Verdict::Invalid, StopReason::NotStarted, 0);
    assert!(
        only_reason(&ran).starts_with(&format!(
            "num_ctx 8192 exceeds {MODEL}'s trained context 4096"
        )),
        "{}",
        only_reason(&ran)
    );
    assert!(ran.server.generates().is_empty(), "nothing loaded");
}

// ---------------------------------------------------------------------------------------------
// 11. Nothing listening.

#[test]
fn unreachable_server_cannot_run() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = RunEnv::new(config(format!("http://127.0.0.1:{port}"))).unwrap();
    let t = Instant::now();
    let outcome = run_cell_with(
        &spec("scripted_unreachable::ctx_8k"),
        &env,
        &CellOptions::default(),
    );
    assert!(t.elapsed() < TEST_BUDGET, "{:?}", t.elapsed());
    let r = &outcome;
    assert_eq!(
        (r.verdict(), r.stop_reason),
        (Verdict::Skipped, StopReason::NotStarted)
    );
    assert!(
        r.judgement.reasons()[0].starts_with(&format!("server at 127.0.0.1:{port} unreachable: ")),
        "{:?}",
        r.judgement.reasons()
    );
    assert!(
        r.judgement.reasons()[0].contains("ollama serve"),
        "{:?}",
        r.judgement.reasons()
    );
    let file = env.run_dir.cell_path(&r.cell.test_name);
    assert!(file.is_file(), "{}", file.display());
    assert!(env.run_dir.report_path("performance_matrix.md").is_file());
}

// ---------------------------------------------------------------------------------------------
// 12. A server that answers, but wrongly (issue 7 item 3): INVALID with the endpoint, the
//     status and the start of the body — never SKIPPED.

/// An HTML page far longer than an error may quote.
fn html_page() -> String {
    format!(
        "<!DOCTYPE html><html><head><title>Sign in</title></head><body>{}</body></html>",
        "<p>a reverse proxy's login page</p>".repeat(300)
    )
}

#[rstest]
#[case::html_from_version(
    "GET /api/version",
    Raw::new(200, "text/html", &html_page()),
    format!(
        "GET /api/version answered HTTP 200 with a body that is not JSON (expected value at line 1 column 1): {:?}",
        // The first 200 characters of the page, and a mark that it was cut.
        format!("{}…", html_page().chars().take(200).collect::<String>())
    )
)]
#[case::bad_gateway_from_version(
    "GET /api/version",
    Raw::new(502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "GET /api/version answered HTTP 502: <html><body><h1>502 Bad Gateway</h1></body></html>".to_string()
)]
#[case::json_without_version(
    "GET /api/version",
    Raw::new(200, "application/json", r#"{"status":"ok"}"#),
    "GET /api/version answered HTTP 200 with JSON that is not Ollama's answer (missing field `version`): \"{\\\"status\\\":\\\"ok\\\"}\"".to_string()
)]
#[case::invalid_json_from_tags(
    "GET /api/tags",
    Raw::new(200, "application/json", r#"{"models": [{"name": "o3-scripted:1b""#),
    "GET /api/tags answered HTTP 200 with a body that is not JSON (EOF while parsing an object at line 1 column 37): \"{\\\"models\\\": [{\\\"name\\\": \\\"o3-scripted:1b\\\"\"".to_string()
)]
#[case::unavailable_tags(
    "GET /api/tags",
    Raw::new(503, "text/plain", "upstream connect error"),
    "GET /api/tags answered HTTP 503: upstream connect error".to_string()
)]
#[case::show_500(
    "POST /api/show",
    Raw::new(500, "application/json", r#"{"error":"failed to read the model's metadata"}"#),
    "POST /api/show answered HTTP 500: failed to read the model's metadata".to_string()
)]
fn a_broken_server_is_invalid_not_skipped(
    #[case] endpoint: &str,
    #[case] answer: Raw,
    #[case] error: String,
) {
    let script = Script::new(MODEL).answer(endpoint, Answer::Always(answer));
    let ran = run("scripted_broken::ctx_8k", script);
    let host = ran.server.host();
    ran.expect_invalid(
        StopReason::NotStarted,
        0,
        format!("the server at {host} is broken: {error}"),
    );
    // The body is quoted, bounded: never the whole 10 KB page.
    assert!(only_reason(&ran).len() < 600, "{}", only_reason(&ran));
    assert!(ran.server.generates().is_empty(), "nothing is loaded");
    // The test fails, whatever O3_REQUIRE_SERVER says.
    let outcome = harness::cell_outcome(&ran.env.config, ran.result());
    assert!(outcome.is_err(), "a broken server must fail the test");
}

/// A 503 with `Retry-After: 1` on `/api/version`, then the normal answer: the harness waits
/// and retries, the cell runs, and the judgement's notes say so.
#[test]
fn a_busy_info_request_is_retried_and_noted() {
    let script = Script::new(MODEL).answer("GET /api/version", Answer::Then(vec![Raw::busy(1)]));
    let ran = run("scripted_busy_version::ctx_8k", script);
    ran.expect_pass();
    let versions = ran
        .server
        .requests()
        .iter()
        .filter(|q| q.path == "/api/version")
        .count();
    assert_eq!(versions, 2, "one retry");
    assert!(ran.elapsed >= Duration::from_secs(1), "{:?}", ran.elapsed);
    assert!(
        ran.result().judgement.notes.contains(
            &"GET /api/version: 1 retry after HTTP 503 with Retry-After, 1.0 s waited".to_string()
        ),
        "{:?}",
        ran.result().judgement.notes
    );
}

/// 503 with `Retry-After` on every answer: three attempts at most, then INVALID with the
/// status, the body and the retries; a `Retry-After` past the request's timeout is not waited.
#[rstest]
#[case::busy_forever(
    1,
    3,
    "GET /api/version answered HTTP 503: server busy, please try again.  maximum pending requests exceeded [gave up after 3 attempts] (2 retries after HTTP 503 with Retry-After, 2.0 s waited)"
)]
#[case::retry_after_past_the_timeout(
    3600,
    1,
    "GET /api/version answered HTTP 503: server busy, please try again.  maximum pending requests exceeded [Retry-After 3600.0 s is past the request's timeout of 7.0 s]"
)]
fn a_server_busy_for_good_is_invalid_after_bounded_retries(
    #[case] secs: u64,
    #[case] attempts: usize,
    #[case] error: &str,
) {
    let script = Script::new(MODEL).answer("GET /api/version", Answer::Always(Raw::busy(secs)));
    // The bound of each small request: 5 s + 2 s.
    let ran = run_script("scripted_busy_forever::ctx_8k", script, |c| {
        c.connect_timeout = Duration::from_secs(5);
        c.chunk_gap_timeout = Duration::from_secs(2);
    });
    let host = ran.server.host();
    ran.expect_invalid(
        StopReason::NotStarted,
        0,
        format!("the server at {host} is broken: {error}"),
    );
    assert_eq!(ran.server.requests().len(), attempts);
}

/// A measured trial answered 503 with `Retry-After` is retried; the trial records the retry,
/// and its clock starts at the attempt that streamed (its TTFT does not hold the wait).
#[test]
fn a_busy_trial_is_retried_and_recorded() {
    let script = Script::new(MODEL).measured(|n| {
        if n == 1 {
            Behaviour::Busy { secs: 2 }
        } else {
            Behaviour::Normal
        }
    });
    let ran = run("scripted_busy_trial::ctx_8k", script);
    ran.expect_pass();
    let m = ran.measured();
    assert_eq!(
        m[0].retried,
        Some(Retried {
            retries: 1,
            waited_s: 2.0,
            status: 503
        }),
        "{:#?}",
        m[0]
    );
    assert!(m[0].valid, "{:#?}", m[0]);
    assert!(m[0].ttft_s.unwrap() < 2.0, "{:?}", m[0].ttft_s);
    assert!(m[1..].iter().all(|t| t.retried.is_none()), "{m:#?}");
    let disk = ran.result_on_disk();
    assert_eq!(
        disk.trials,
        ran.result().trials,
        "the retry is in the result file"
    );
}

/// A server that accepts and never answers `/api/version` holds the cell for the configured
/// bound (connect 1 s + chunk gap 1 s), not a fixed 30 s, and the error names that bound.
#[test]
fn a_server_that_never_answers_is_bounded_by_the_configured_timeouts() {
    let script = Script::new(MODEL).answer("GET /api/version", Answer::Never);
    let ran = run_script("scripted_mute::ctx_8k", script, |c| {
        c.connect_timeout = Duration::from_secs(1);
        c.chunk_gap_timeout = Duration::from_secs(1);
        c.first_chunk_timeout = Duration::from_secs(1);
        c.trial_timeout = Duration::from_secs(2);
    });
    let host = ran.server.host();
    ran.expect_invalid(
        StopReason::NotStarted,
        0,
        format!(
            "the server at {host} is broken: timed out after 2.0 s waiting for GET /api/version to answer (O3_CONNECT_TIMEOUT_S 1.0 s + O3_CHUNK_GAP_TIMEOUT_S 1.0 s)"
        ),
    );
    // 6× the bound, for a loaded 2-core machine; the fixed timeout held it 30 s.
    assert!(
        ran.elapsed >= Duration::from_secs(2) && ran.elapsed < Duration::from_secs(12),
        "{:?}",
        ran.elapsed
    );
}

/// The optimizer shares the preflight: a broken server fails its test too.
#[test]
fn a_broken_server_fails_the_optimizer() {
    let script = Script::new(MODEL).answer(
        "GET /api/version",
        Answer::Always(Raw::new(200, "text/html", &html_page())),
    );
    let server = ScriptedServer::start(script);
    let env = RunEnv::new(config(server.base_url())).expect("the run directory can be created");
    let outcome = optimize_model(
        vec![spec("scripted_opt_broken::ctx_8k")],
        &env,
        &OptConfig::default(),
    );
    match outcome {
        ModelOutcome::Broken(why) => assert!(
            why.starts_with(&format!(
                "the server at {} is broken: GET /api/version answered HTTP 200",
                server.host()
            )),
            "{why}"
        ),
        other => panic!("expected Broken, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Impossible figures (issue 7 item 4): invalid with the reason, never scored.

#[rstest]
#[case::eval_count_1e15_over_1ns(
    json!({"eval_count": 1_000_000_000_000_000u64, "eval_duration": 1}),
    "impossible server figures: eval_count 1000000000000000 for 16 chunks with content received (more than 16 tokens a chunk)"
)]
#[case::eval_count_below_the_chunks(
    json!({"eval_count": 3}),
    "impossible server figures: eval_count 3 is less than the 16 chunks with content received (each carries at least one token)"
)]
#[case::prompt_eval_count_past_u32(
    json!({"prompt_eval_count": (1u64 << 32) + 256}),
    "prompt larger than intended: server evaluated 4294967552 of 2000 intended prompt tokens"
)]
#[case::prompt_eval_duration_of_an_hour(
    json!({"prompt_eval_duration": 3_600_000_000_000u64}),
    "impossible server figures: prompt_eval_duration 3600.000 s is longer than the client's end-to-end time"
)]
fn impossible_server_figures_invalidate_the_trials(#[case] fields: Value, #[case] reason: &str) {
    let f = fields.clone();
    let script = Script::new(MODEL).measured(move |_| Behaviour::FinalFields(f.clone()));
    let ran = run("scripted_impossible::ctx_8k", script);
    ran.expect(Verdict::Invalid, StopReason::TooManyInvalid, 3);
    for t in ran.measured() {
        assert!(!t.valid, "{t:#?}");
        assert!(
            t.invalid_reasons.iter().any(|s| s.starts_with(reason)),
            "{reason}\n{:#?}",
            t.invalid_reasons
        );
    }
    if fields.get("prompt_eval_count").is_some() {
        for t in ran.measured() {
            assert_eq!(t.prompt_tokens_evaluated, None, "not wrapped to 256");
            assert!(
                t.invalid_reasons.iter().any(|s| s.starts_with(
                    "impossible server figures: prompt_eval_count 4294967552 exceeds the "
                )),
                "{:#?}",
                t.invalid_reasons
            );
        }
    }
    if fields
        .get("eval_count")
        .is_some_and(|v| v.as_u64() > Some(u64::from(u32::MAX)))
    {
        assert!(ran.measured().iter().all(|t| t.output_tokens.is_none()));
    }
}

/// A decode the server times at 1 ns that the client received over 0.6 s (16 lines 40 ms
/// apart): the server's rate cannot be true.
#[test]
fn a_decode_faster_than_received_is_invalid() {
    let script = Script {
        chunk_delay: Duration::from_millis(40),
        ..Script::new(MODEL)
    }
    .measured(|_| Behaviour::FinalFields(json!({"eval_duration": 1})));
    let ran = run("scripted_instant_decode::ctx_8k", script);
    ran.expect(Verdict::Invalid, StopReason::TooManyInvalid, 3);
    for t in ran.measured() {
        assert!(!t.valid);
        assert!(
            t.invalid_reasons[0].starts_with(
                "impossible server figures: eval_duration 0.000 s for 16 tokens (1.600e10 tok/s), but the client received them over "
            ),
            "{:#?}",
            t.invalid_reasons
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 14. A 10 MB line (issue 7 item 4): an error past 1 MiB, named, not a slow read.

#[test]
fn a_10_mb_line_is_an_error() {
    let script = Script::new(MODEL).measured(|_| Behaviour::HugeLine { bytes: 10 << 20 });
    let ran = run("scripted_huge_line::ctx_8k", script);
    ran.expect_all_invalid(
        StopReason::Error,
        2,
        "stream line longer than 1048576 bytes after 0 chunk(s): not Ollama's wire format",
    );
    ran.expect_unloaded_at_end();
}
