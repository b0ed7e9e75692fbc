//! Sessions (`o3_suite::agentic`) against a scripted Ollama server (tests/support/
//! scripted_server.rs, `/api/chat` scripted by `ChatScript`): a server that caches prefixes,
//! one that reprocesses the whole history every turn, one whose memory grows every turn (and
//! one whose growth stops), one that silently drops old messages, one that fails a turn now
//! and then, and one that answers wrongly. Each asserts the figures the scripted server makes
//! exact (its token counts and durations are scripted) and the verdict with its reasons.
//! Timings are never asserted. No real model is involved.

#[path = "support/scripted_server.rs"]
#[allow(dead_code)] // each test target uses part of the scripted server
mod scripted_server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use o3_suite::agentic::analysis::{CacheLabel, MemoryPattern};
use o3_suite::agentic::table::{SessionGates, SessionSpec, WorkloadKind};
use o3_suite::agentic::workload::{Workload, texts_dir};
use o3_suite::agentic::{SessionOptions, SessionResult, run_session_with};
use o3_suite::config::Config;
use o3_suite::harness::RunEnv;
use o3_suite::judgement::{Gate, Verdict};
use o3_suite::results::{CellSpec, Gates};
use o3_suite::runner::{CellOptions, run_cell_with};
use serde_json::Value;

use scripted_server::{CHAT_NS_PER_TOKEN, ChatScript, Script, ScriptedServer};

const MODEL: &str = "o3-scripted:1b";

/// The sessions of this file run one at a time: the memory tests measure this process's RSS
/// (the scripted server lives in it), which a session running beside them would disturb.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn spec(name: &str, workload: WorkloadKind, num_ctx: u32) -> SessionSpec {
    SessionSpec {
        test_name: format!("{name}::agentic_{}_{}k", workload.label(), num_ctx / 1024),
        name: name.to_string(),
        model: MODEL.to_string(),
        workload,
        num_ctx,
        num_batch: 512,
        num_thread: 2,
        duration_s: 600.0,
        target_fill: 0.8,
        think_s: 0.0,
        num_predict: 32,
        gates: SessionGates {
            success_min: 0.5,
            tok_s_min: 1.0,
            ttft_p95_max_s: 30.0,
            accuracy_min: None,
            rss_growth_max_pct: 1000.0,
            stability_min: 0.1,
            ram_max_pct: 100.0,
        },
        use_case: "test".to_string(),
        optional: false,
        source: "tests/agentic_protocol.rs".to_string(),
    }
}

fn env(server: &ScriptedServer) -> RunEnv {
    static N: AtomicU32 = AtomicU32::new(0);
    let run_id = format!(
        "agentic-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let config = Config {
        base_url: server.base_url(),
        results_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agentic_protocol"),
        run_id: Some(run_id.clone()),
        first_chunk_timeout: Duration::from_secs(10),
        chunk_gap_timeout: Duration::from_secs(5),
        trial_timeout: Duration::from_secs(30),
        unload_timeout: Duration::from_secs(5),
        // The guard would read this test process's own CPU as the server's.
        busy_cpu_pct: Some(100.0),
        ..Config::default()
    };
    RunEnv::with_run_id(config, run_id).expect("a run directory")
}

/// An answer key of the coding workload: question → an answer holding its fact.
fn oracle() -> scripted_server::ChatAnswerFn {
    let mut w = Workload::load(WorkloadKind::Coding, &texts_dir(), Config::default().seed)
        .expect("the shipped workload");
    let mut key = HashMap::new();
    w.start_conversation("key");
    for _ in 0..200 {
        let t = w.next_turn();
        let q = t.messages.last().expect("a question").content.clone();
        key.insert(q, format!("The answer is {}.", t.expected.alternatives[0]));
    }
    Arc::new(move |messages: &[Value]| {
        let q = messages
            .last()
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        key.get(q)
            .cloned()
            .unwrap_or_else(|| "No idea at all.".to_string())
    })
}

struct Ran {
    server: ScriptedServer,
    result: SessionResult,
    env: RunEnv,
}

fn run(spec: &SessionSpec, chat: ChatScript, max_turns: u32) -> Ran {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = ScriptedServer::start(Script {
        chat,
        chunk_delay: Duration::from_millis(4),
        ..Script::new(MODEL)
    });
    let env = env(&server);
    let opts = SessionOptions {
        max_turns: Some(max_turns),
        ..SessionOptions::default()
    };
    let result = run_session_with(spec, &env, &opts);
    Ran {
        server,
        result,
        env,
    }
}

fn reasons(r: &SessionResult) -> String {
    r.judgement.reasons().join("\n")
}

#[test]
fn a_prefix_caching_server_hits_every_turn_and_passes() {
    // Enough turns for the 4K history to reach its budget on the shipped codebase.
    const TURNS: usize = 16;
    let ran = run(
        &spec("prefix", WorkloadKind::Coding, 4096),
        ChatScript {
            answer: oracle(),
            ..ChatScript::default()
        },
        TURNS as u32,
    );
    let r = &ran.result;
    let served = ran.server.chat_served();
    assert_eq!(r.turns.len(), TURNS);
    assert_eq!(served.len(), TURNS, "one chat request per turn");
    assert!(
        r.analysis.conversations >= 2,
        "the history reached its budget and started afresh"
    );
    for (t, s) in r.turns.iter().zip(&served) {
        assert_eq!(t.prompt_tokens(), Some(s.prompt_tokens), "turn {}", t.turn);
        assert_eq!(
            t.prompt_eval_s,
            Some((s.processed * CHAT_NS_PER_TOKEN) as f64 / 1e9)
        );
        if t.uncached_reference {
            assert_eq!(
                s.processed, s.prompt_tokens,
                "the first turn of a conversation is uncached"
            );
            assert_eq!(t.cache, None);
            continue;
        }
        let share = t.processed_share.unwrap();
        assert!(
            (share - s.processed as f64 / s.prompt_tokens as f64).abs() < 1e-9,
            "{share}"
        );
        assert!(
            (t.cache_reuse.unwrap() - 1.0).abs() < 1e-9,
            "turn {}",
            t.turn
        );
        assert_eq!(t.cache, Some(CacheLabel::Hit));
        // The prefix the server could keep is what it kept: the previous prompt and answer.
        assert_eq!(t.prefix_tokens, Some(s.prompt_tokens - s.processed));
    }
    let a = &r.analysis;
    assert_eq!(a.hits, TURNS - a.conversations as usize);
    assert_eq!((a.partials, a.misses), (0, 0));
    assert_eq!(a.cache_cliff, None);
    assert!((a.cache_reuse.unwrap() - 1.0).abs() < 1e-9);
    assert!((a.uncached_prefill_tps.unwrap() - 1e9 / CHAT_NS_PER_TOKEN as f64).abs() < 1e-6);
    assert_eq!(
        (a.succeeded, a.correct),
        (TURNS, TURNS),
        "the oracle answers every question"
    );
    assert_eq!(a.accuracy, Some(1.0));
    assert!(a.truncations.is_empty());
    assert_eq!(
        a.deepest_history_tokens,
        served.iter().map(|s| s.prompt_tokens).max()
    );
    assert_eq!(r.verdict(), Verdict::Pass, "{}", reasons(r));
    // Every request carried the whole history with the session's options.
    let chats: Vec<_> = ran
        .server
        .requests()
        .into_iter()
        .filter(|q| q.path == "/api/chat")
        .collect();
    for q in &chats {
        assert_eq!(q.option("num_ctx"), Some(&Value::from(4096)));
        assert_eq!(q.option("temperature"), Some(&Value::from(0)));
        assert_eq!(q.option("num_predict"), Some(&Value::from(32)));
        assert!(q.body["keep_alive"].as_u64().unwrap() >= 600);
    }
    // The result file and the reports are there.
    let file = ran.env.run_dir.session_path(&r.session.test_name);
    assert!(file.is_file(), "{}", file.display());
    let md = ran.env.run_dir.report_path("agentic_sessions.md");
    let md = std::fs::read_to_string(&md).expect("the session report");
    assert!(md.contains("prefix::agentic_coding_4k"), "{md}");
    let turns = std::fs::read_to_string(ran.env.run_dir.report_path("agentic_turns.csv")).unwrap();
    assert_eq!(
        turns.lines().count(),
        TURNS + 1,
        "a header and one line per turn"
    );
    // The performance matrix gains its Phase 2 column and lists the session, on the rows of
    // the session's model (a cell of it is run on the same server and run directory).
    let cell = CellSpec {
        test_name: "prefix::ctx_4k".into(),
        name: "prefix".into(),
        model: MODEL.into(),
        category: "protocol".into(),
        num_ctx: 4096,
        fill_tokens: 1000,
        num_batch: 512,
        num_thread: 2,
        num_predict: 16,
        gates: Gates {
            ttft_max_s: 30.0,
            tok_s_min: 1.0,
            stability_min: 0.1,
            ram_max_pct: 100.0,
        },
        use_case: "test".into(),
        optional: false,
        optimize: true,
        source: "tests/agentic_protocol.rs".into(),
        relative_gates: None,
        probe: None,
    };
    run_cell_with(&cell, &ran.env, &CellOptions::default());
    let pm = std::fs::read_to_string(ran.env.run_dir.report_path("performance_matrix.md")).unwrap();
    assert!(pm.contains("| Use Case Fit | Phase 2 |"), "{pm}");
    assert!(
        pm.contains("✅ coding 4k (")
            && pm.contains("PASS): success 100%, accuracy 100%, cache reuse 1.00"),
        "{pm}"
    );
    let pj: Value = serde_json::from_str(
        &std::fs::read_to_string(ran.env.run_dir.report_path("performance_matrix.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pj["phase2"][0]["test_name"], "prefix::agentic_coding_4k");
    assert_eq!(pj["phase2"][0]["verdict"], "PASS");
    assert_eq!(pj["phase2"][0]["accuracy"], 1.0);
}

#[test]
fn a_server_that_reprocesses_everything_misses_from_turn_two() {
    let ran = run(
        &spec("reprocess", WorkloadKind::Rag, 8192),
        ChatScript {
            prefix_cache: false,
            ..ChatScript::default()
        },
        8,
    );
    let r = &ran.result;
    let served = ran.server.chat_served();
    let mut costs = Vec::new();
    for (t, s) in r.turns.iter().zip(&served).skip(1) {
        assert_eq!(s.processed, s.prompt_tokens);
        if t.uncached_reference {
            continue;
        }
        assert!((t.processed_share.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(t.cache_reuse, Some(0.0), "turn {}", t.turn);
        assert_eq!(t.cache, Some(CacheLabel::Miss));
        costs.push(t.prefix_tokens.unwrap() as f64 * CHAT_NS_PER_TOKEN as f64 / 1e9);
    }
    let a = &r.analysis;
    let cliff = a.cache_cliff.as_ref().expect("a cache cliff");
    assert_eq!(cliff.turn, 2, "every turn after the first missed");
    assert_eq!(cliff.misses, costs.len());
    let mean = costs.iter().sum::<f64>() / costs.len() as f64;
    assert!(
        (cliff.ttft_cost_s_per_turn - mean).abs() < 1e-9,
        "{cliff:?} vs {mean}"
    );
    assert_eq!(a.hits, 0);
    assert_eq!(a.cache_reuse, Some(0.0));
    // Reuse is measured and reported, not gated: the session passes its gates.
    assert!(
        matches!(r.verdict(), Verdict::Pass | Verdict::Marginal),
        "{}",
        reasons(r)
    );
}

#[test]
fn a_server_whose_memory_keeps_growing_fails_rss_growth_as_steady() {
    let mut s = spec("leak", WorkloadKind::Chat, 8192);
    s.gates.rss_growth_max_pct = 10.0;
    let ran = run(
        &s,
        ChatScript {
            leak_bytes_per_turn: 24 << 20,
            ..ChatScript::default()
        },
        14,
    );
    let r = &ran.result;
    let rss = &r.analysis.rss;
    assert_eq!(rss.pattern, MemoryPattern::Steady, "{rss:#?}");
    // 12 turns after the warm-up, 24 MiB each: at least 11 × 24 MiB between the first and last.
    let grown = rss.end_bytes.unwrap() - rss.start_bytes.unwrap();
    assert!(grown >= 11 * (24 << 20), "{rss:#?}");
    assert!(rss.mb_per_min.as_ref().unwrap().slope > 0.0);
    assert_eq!(r.verdict(), Verdict::Fail, "{}", reasons(r));
    assert_eq!(
        r.judgement.failed_gates(),
        [Gate::RssGrowth],
        "{}",
        reasons(r)
    );
    assert!(reasons(r).contains("RSS growth"), "{}", reasons(r));
}

#[test]
fn memory_that_grows_and_levels_off_is_bounded() {
    let ran = run(
        &spec("bounded", WorkloadKind::Chat, 8192),
        ChatScript {
            leak_bytes_per_turn: 24 << 20,
            leak_turns: Some(6),
            ..ChatScript::default()
        },
        16,
    );
    let rss = &ran.result.analysis.rss;
    assert_eq!(rss.pattern, MemoryPattern::Bounded, "{rss:#?}");
    assert!(rss.growth_pct.unwrap() > 10.0, "{rss:#?}");
    let (a, b) = (
        rss.first_half_mb_per_min.as_ref().unwrap().slope,
        rss.second_half_mb_per_min.as_ref().unwrap().slope,
    );
    assert!(b < 0.5 * a, "levelled off: {a} then {b}");
}

#[test]
fn a_server_that_silently_drops_old_messages_makes_the_session_invalid() {
    let ran = run(
        &spec("dropping", WorkloadKind::Coding, 16384),
        ChatScript {
            drop_above_tokens: Some(3000),
            ..ChatScript::default()
        },
        14,
    );
    let r = &ran.result;
    let served = ran.server.chat_served();
    let first = served
        .iter()
        .find(|s| s.messages.0 != s.messages.1)
        .expect("the server dropped messages");
    let t = &r.turns[first.n - 1];
    let cut = t.truncation.as_ref().expect("the turn is marked truncated");
    assert_eq!(cut.turn as usize, first.n);
    assert_eq!(cut.prompt_tokens, first.prompt_tokens);
    assert_eq!(cut.messages as usize, first.messages.0);
    assert!(!t.measurable());
    assert_eq!(r.verdict(), Verdict::Invalid, "{}", reasons(r));
    let why = reasons(r);
    assert!(
        why.contains(&format!(
            "silent truncation at turn {} (conversation {}): the server counted {} prompt tokens for a history of {} messages",
            first.n, t.conversation, first.prompt_tokens, first.messages.0
        )),
        "{why}"
    );
}

#[test]
fn a_server_that_fails_every_fourth_turn_fails_on_success() {
    let mut s = spec("flaky", WorkloadKind::Rag, 8192);
    s.gates.success_min = 0.95;
    let ran = run(
        &s,
        ChatScript {
            fail_every: Some(4),
            ..ChatScript::default()
        },
        20,
    );
    let r = &ran.result;
    let failed: Vec<u32> = r
        .turns
        .iter()
        .filter(|t| !t.success)
        .map(|t| t.turn)
        .collect();
    assert_eq!(failed, [4, 8, 12, 16, 20]);
    for t in r.turns.iter().filter(|t| !t.success) {
        assert!(
            t.failure.as_deref().unwrap().contains("scripted failure"),
            "{t:?}"
        );
        assert_eq!(t.correct, None);
    }
    let a = &r.analysis;
    assert_eq!(a.success_rate, Some(0.75));
    let (lo, hi) = a.success_ci.unwrap();
    assert!(
        (lo - 0.5313).abs() < 1e-3 && (hi - 0.8881).abs() < 1e-3,
        "{lo} {hi}"
    );
    assert_eq!(r.verdict(), Verdict::Fail, "{}", reasons(r));
    assert_eq!(r.judgement.failed_gates(), [Gate::Success]);
    assert!(
        reasons(r).contains("success 75.0% of turns (95% CI 53.1–88.8%, n=20) ≤ limit 95.0%"),
        "{}",
        reasons(r)
    );
    // A failed turn is dropped from the history: the next request does not carry it.
    let served = ran.server.chat_served();
    assert_eq!(
        served[4].messages.0, served[3].messages.0,
        "turn 5 sends what turn 4 sent, minus its question, plus its own"
    );
}

#[test]
fn a_server_that_answers_wrongly_fails_on_accuracy() {
    let mut s = spec("wrong", WorkloadKind::Coding, 8192);
    s.gates.accuracy_min = Some(0.5);
    let ran = run(
        &s,
        ChatScript {
            answer: Arc::new(|_| "I do not know the answer.".to_string()),
            ..ChatScript::default()
        },
        8,
    );
    let r = &ran.result;
    let a = &r.analysis;
    assert_eq!((a.succeeded, a.correct), (8, 0));
    assert_eq!(a.accuracy, Some(0.0));
    assert_eq!(r.verdict(), Verdict::Fail, "{}", reasons(r));
    assert_eq!(r.judgement.failed_gates(), [Gate::Accuracy]);
    let (_, hi) = a.accuracy_ci.unwrap();
    assert!(
        reasons(r).contains(&format!(
            "accuracy 0.0% of answers (95% CI 0.0–{:.1}%, n=8) ≤ limit 50.0%",
            hi * 100.0
        )),
        "{}",
        reasons(r)
    );
}

#[test]
fn an_unreachable_server_skips_the_session_and_leaves_a_result() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        base_url: format!("http://127.0.0.1:{port}"),
        results_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agentic_protocol"),
        run_id: Some(format!("agentic-skip-{}", std::process::id())),
        connect_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let env = RunEnv::with_run_id(config.clone(), config.run_id.clone().unwrap()).unwrap();
    let s = spec("nobody", WorkloadKind::Chat, 4096);
    let r = run_session_with(&s, &env, &SessionOptions::default());
    assert_eq!(r.verdict(), Verdict::Skipped);
    assert!(env.run_dir.session_path(&s.test_name).is_file());
    let mut required = config;
    required.require_server = true;
    assert!(
        o3_suite::agentic::outcome(&required, &r).is_err(),
        "O3_REQUIRE_SERVER=1 fails it"
    );
}
