//! The quality sweeps and the RAG-against-direct tests (`o3_suite::quality`) against a scripted
//! Ollama server (tests/support/scripted_server.rs: `/api/chat` answers from the request's own
//! text through `ChatScript::answer`, `/api/embed` from a bag-of-words function): a server that
//! only "sees" the last half of a prompt (accuracy falls with depth exactly so), one that sees a
//! short window only (direct prompting loses, RAG wins), one that always answers right (the
//! effective context is the longest fill, latency decides RAG against direct), and embeddings
//! as a second retriever. Each asserts the accuracies and verdicts the script makes exact;
//! timings are never asserted. No real model is involved.

#[path = "support/scripted_server.rs"]
#[allow(dead_code)] // each test target uses part of the scripted server
mod scripted_server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use o3_suite::config::Config;
use o3_suite::harness::RunEnv;
use o3_suite::judgement::{Gate, Verdict};
use o3_suite::quality::rag::{self, Approach, DecidedBy, RagResult};
use o3_suite::quality::{self, QualityResult, run_quality};
use serde_json::Value;

use scripted_server::{ChatAnswerFn, ChatScript, Script, ScriptedServer};

const MODEL: &str = "o3-scripted:1b";

/// One test at a time: each starts its own server, and the runs share nothing, but the
/// sampler's view of this process is less noisy alone.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env(server: &ScriptedServer) -> RunEnv {
    static N: AtomicU32 = AtomicU32::new(0);
    let run_id = format!(
        "quality-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let config = Config {
        base_url: server.base_url(),
        results_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quality_protocol"),
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

fn user_text(messages: &[Value]) -> String {
    messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The value the fact of the prompt's question states, if `visible` holds that fact: the
/// question is "What is the access code of the <vault>?", the fact "The access code of the
/// <vault> is <digits>." (the sweeps' and the collection's shapes alike).
fn answer_from(question_text: &str, visible: &str) -> Option<String> {
    const Q: &str = "What is the access code of the ";
    let at = question_text.rfind(Q)? + Q.len();
    let vault = &question_text[at..at + question_text[at..].find('?')?];
    let fact = format!("The access code of the {vault} is ");
    let start = visible.find(&fact)? + fact.len();
    let digits: String = visible[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// A server that reads only `visible(prompt)` of each prompt, but always the question.
fn reader(visible: fn(&str) -> &str) -> ChatAnswerFn {
    Arc::new(move |messages: &[Value]| {
        let text = user_text(messages);
        match answer_from(&text, visible(&text)) {
            Some(v) => format!("The code is {v}."),
            None => "I cannot find it.".to_string(),
        }
    })
}

fn last_half(s: &str) -> &str {
    let mut at = s.len() / 2;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

fn everything(s: &str) -> &str {
    s
}

/// The last 3000 characters (about 750 tokens at 4 a token): a RAG prompt fits, a direct
/// prompt of 3000 tokens does not.
fn short_window(s: &str) -> &str {
    let mut at = s.len().saturating_sub(3000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

fn server(answer: ChatAnswerFn) -> ScriptedServer {
    ScriptedServer::start(Script {
        chat: ChatScript {
            prefix_cache: false,
            answer,
            ..ChatScript::default()
        },
        first_line_delay: Duration::from_millis(2),
        chunk_delay: Duration::from_millis(1),
        ..Script::new(MODEL)
    })
}

fn sweep_spec(ctx: &str, depths: &str, accuracy_min: f64) -> quality::QualitySpec {
    let t = format!(
        "name,model,num_ctx,fill,depths,trials,probe,num_batch,num_thread,accuracy_min,ttft_max_s\n\
         scripted,{MODEL},{ctx},0.75,{depths},3,needle,512,2,{accuracy_min},30\n"
    );
    quality::table::parse(Path::new("tests/quality_protocol.rs"), &t, 100.0)
        .unwrap()
        .remove(0)
}

fn sweep(answer: ChatAnswerFn, spec: &quality::QualitySpec) -> (QualityResult, RunEnv) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = server(answer);
    let env = env(&server);
    (run_quality(spec, &env), env)
}

fn reasons(j: &o3_suite::judgement::Judgement) -> String {
    j.reasons().join("\n")
}

#[test]
fn a_server_that_sees_the_last_half_finds_only_the_deep_facts() {
    let spec = sweep_spec("4K", "0.1 0.3 0.7 0.9", 0.85);
    let (r, env) = sweep(reader(last_half), &spec);
    let per: Vec<(f64, usize, usize)> = r
        .analysis
        .depths
        .iter()
        .map(|d| (d.depth, d.correct, d.n))
        .collect();
    assert_eq!(
        per,
        vec![(0.1, 0, 3), (0.3, 0, 3), (0.7, 3, 3), (0.9, 3, 3)],
        "{}",
        reasons(&r.judgement)
    );
    assert_eq!((r.analysis.correct, r.analysis.answered), (6, 12));
    // Half right: the Wilson interval of 6/12 lies below 0.85, so the gate fails, and no fill
    // of this model reaches the threshold.
    assert_eq!(r.verdict(), Verdict::Fail, "{}", reasons(&r.judgement));
    assert_eq!(r.judgement.failed_gates(), vec![Gate::Accuracy]);
    assert_eq!(r.effective_tokens, None);
    // The server counted every planned token (no truncation problem) and the report says so.
    assert!(
        r.judgement.problems.is_empty(),
        "{:?}",
        r.judgement.problems
    );
    let md = std::fs::read_to_string(env.run_dir.report_path("quality.md")).unwrap();
    assert!(
        md.contains("✓0 ✗3 (0%)") && md.contains("✓3 ✗0 (100%)"),
        "{md}"
    );
    assert!(
        md.contains("none (the shortest fill already falls short)"),
        "{md}"
    );
}

#[test]
fn a_server_that_always_finds_the_fact_passes_with_the_longest_fill_as_effective_context() {
    // 9 of 9 right: the Wilson interval reaches down to 70 %, so the gate is set below it.
    let short = sweep_spec("2K", "0 0.5 1", 0.6);
    let long = sweep_spec("4K", "0 0.5 1", 0.6);
    let (a, _) = sweep(reader(everything), &short);
    let (b, env) = sweep(reader(everything), &long);
    for r in [&a, &b] {
        assert_eq!(r.verdict(), Verdict::Pass, "{}", reasons(&r.judgement));
        assert_eq!((r.analysis.correct, r.analysis.answered), (9, 9));
    }
    let filled = b.analysis.filled_tokens.unwrap();
    assert!(
        (filled - f64::from(long.fill_tokens)).abs() / f64::from(long.fill_tokens) < 0.1,
        "the probes filled {filled} of {} tokens",
        long.fill_tokens
    );
    let report = quality::report::of(&[a, b], &[], &[]);
    assert_eq!(report.models[0].effective_context_tokens, Some(filled));
    // Both runs wrote into their own run directories; the second one's report has its test.
    let md = std::fs::read_to_string(env.run_dir.report_path("quality.md")).unwrap();
    assert!(md.contains("scripted::quality_4k"), "{md}");
}

fn rag_spec(extra_header: &str, extra: &str) -> rag::RagSpec {
    let t = format!(
        "name,model,num_ctx,fill,questions,top_k,num_batch,num_thread,accuracy_min,ttft_max_s{extra_header}\n\
         scripted,{MODEL},4K,0.75,8,2,512,2,0.5,30{extra}\n"
    );
    rag::table::parse(Path::new("tests/quality_protocol.rs"), &t, 100.0)
        .unwrap()
        .remove(0)
}

fn rag_run(server: ScriptedServer, spec: &rag::RagSpec) -> (RagResult, RunEnv) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = env(&server);
    (rag::run_rag(spec, &env), env)
}

#[test]
fn direct_prompting_loses_where_the_server_sees_a_short_window_only() {
    let spec = rag_spec("", "");
    let (r, env) = rag_run(server(reader(short_window)), &spec);
    assert!(r.judgement.problems.is_empty(), "{}", reasons(&r.judgement));
    let direct = r.analysis.arm(Approach::Direct).unwrap();
    let bm25 = r.analysis.arm(Approach::RagBm25).unwrap();
    assert_eq!((direct.asked, bm25.asked), (8, 8));
    // The direct prompt holds every document that fits 3072 tokens (about 14); the window
    // sees the last 3000 characters, so only the questions of the last document or two can
    // be answered. RAG's two passages always fit the window: it is right exactly when BM25
    // recalled the document.
    assert!(r.documents >= 10, "{} documents", r.documents);
    assert!(direct.correct <= 2, "{direct:?}");
    assert_eq!(Some(bm25.correct), bm25.recalled, "{bm25:?}");
    assert!(bm25.correct >= 6, "{bm25:?}");
    let c = r.analysis.comparison.as_ref().unwrap();
    assert_eq!(
        (c.winner, c.decided_by, c.significant),
        (Approach::RagBm25, DecidedBy::Accuracy, true),
        "{}",
        c.summary
    );
    assert_eq!(r.verdict(), Verdict::Pass, "{}", reasons(&r.judgement));
    // Every prompt began with its own line (no cache could serve one) and asked its question.
    let served = std::fs::read_to_string(env.run_dir.rag_path(&spec.test_name)).unwrap();
    assert!(served.contains("\"approach\": \"rag_bm25\""));
    let md = std::fs::read_to_string(env.run_dir.report_path("quality.md")).unwrap();
    assert!(md.contains("## RAG against direct prompting"), "{md}");
    assert!(md.contains("rag_bm25 wins on accuracy"), "{md}");
    let csv = std::fs::read_to_string(env.run_dir.report_path("rag_vs_direct.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

#[test]
fn when_both_approaches_find_everything_latency_decides() {
    let spec = rag_spec("", "");
    let (r, _) = rag_run(server(reader(everything)), &spec);
    let direct = r.analysis.arm(Approach::Direct).unwrap();
    let bm25 = r.analysis.arm(Approach::RagBm25).unwrap();
    assert_eq!((direct.correct, direct.answered), (8, 8));
    // RAG can only be right where BM25 recalled the document.
    assert_eq!(Some(bm25.correct), bm25.recalled);
    let c = r.analysis.comparison.as_ref().unwrap();
    if bm25.correct == 8 {
        assert_eq!(c.decided_by, DecidedBy::Latency, "{}", c.summary);
    }
    // Direct's prompts hold the documents, RAG's two passages: several times fewer tokens.
    let tokens = |a: &rag::ArmAnalysis| a.prompt_tokens.as_ref().unwrap().mean;
    assert!(tokens(direct) > 3.0 * tokens(bm25), "{direct:?} {bm25:?}");
    assert!(
        (tokens(direct) - f64::from(spec.fill_tokens)).abs() / f64::from(spec.fill_tokens) < 0.1,
        "direct prompts of {} tokens for a fill of {}",
        tokens(direct),
        spec.fill_tokens
    );
}

/// A bag-of-words vector: one dimension per hashed word (lower-case, alphanumeric runs).
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 256];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        v[(h % 256) as usize] += 1.0;
    }
    v
}

#[test]
fn embeddings_are_a_second_retriever_where_the_server_has_them() {
    let spec = rag_spec(",embed_model", ",o3-embed:small");
    let server = ScriptedServer::start(Script {
        chat: ChatScript {
            prefix_cache: false,
            answer: reader(short_window),
            ..ChatScript::default()
        },
        first_line_delay: Duration::from_millis(2),
        chunk_delay: Duration::from_millis(1),
        embed: Some(Arc::new(bag_of_words)),
        ..Script::new(MODEL)
    });
    let (r, _) = rag_run(server, &spec);
    assert!(r.judgement.problems.is_empty(), "{}", reasons(&r.judgement));
    let arms: Vec<Approach> = r.analysis.arms.iter().map(|a| a.approach).collect();
    assert_eq!(
        arms,
        vec![Approach::Direct, Approach::RagBm25, Approach::RagEmbed]
    );
    let embed = r.analysis.arm(Approach::RagEmbed).unwrap();
    assert_eq!(embed.asked, 8);
    assert_eq!(Some(embed.correct), embed.recalled, "{embed:?}");
    assert!(r.embed_index_s.is_some());
    // The embedding retriever's choices are recorded per answer.
    assert!(
        r.answers
            .iter()
            .filter(|a| a.approach == Approach::RagEmbed)
            .all(|a| a.retrieved.len() == 2)
    );
}

#[test]
fn a_server_without_embeddings_makes_the_test_invalid_with_its_error() {
    // The table names an embedding model the server cannot embed with: the server's error
    // is the reason, and nothing is guessed.
    let spec = rag_spec(",embed_model", ",o3-scripted:1b");
    let (r, _) = rag_run(server(reader(everything)), &spec);
    assert_eq!(r.verdict(), Verdict::Invalid);
    let why = reasons(&r.judgement);
    assert!(
        why.contains("embedding the documents with o3-scripted:1b failed")
            && why.contains("does not support embeddings"),
        "{why}"
    );
}

/// A matrix cell that carries a probe: 2000 tokens of fill in 8K, gates no scripted server can
/// miss.
fn probed_cell(probe: &str, depths: &str) -> o3_suite::results::CellSpec {
    let t = format!(
        "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case,ram_max_pct,num_predict,probe,probe_depths\n\
         scripted,{MODEL},test,8K,2000,512,2,30,1,0.1,test,100,16,{probe},{depths}\n"
    );
    o3_suite::matrix::parse(Path::new("tests/quality_protocol.rs"), &t, 100.0)
        .unwrap()
        .remove(0)
}

#[test]
fn a_cell_asks_its_probe_after_its_trials_and_keeps_it_apart_from_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = server(reader(last_half));
    let env = env(&server);
    let spec = probed_cell("needle", "0.1 0.9");
    let r = o3_suite::runner::run_cell(&spec, &env);
    let why = reasons(&r.judgement);
    // The speed trials are the cell's alone: every one a generate request of the server, and
    // no probe among them.
    let generates = server.prompt_generates().len();
    assert_eq!(r.trials.len(), generates, "{why}");
    let chats = server.chat_served();
    assert_eq!(chats.len(), 2, "one chat request per depth");
    assert_eq!(r.verdict(), Verdict::Pass, "{why}");
    // The server sees the last half: the fact at depth 0.1 is lost, the one at 0.9 found.
    let scored: Vec<(f64, Option<bool>)> = r.probes.iter().map(|p| (p.depth, p.correct)).collect();
    assert_eq!(scored, vec![(0.1, Some(false)), (0.9, Some(true))], "{why}");
    // Each probe's message is the cell's fill (2000 tokens planned; the scripted tokenizer
    // counts the whole templated message) and is unique, so no cache can serve it.
    for (p, c) in r.probes.iter().zip(&chats) {
        let counted = p.trial.prompt_tokens_evaluated.expect("counted") as f64;
        assert!((2000.0..2300.0).contains(&counted), "{counted} tokens");
        assert_eq!(c.processed, c.prompt_tokens, "processed whole");
    }
    assert!(
        r.judgement.notes.iter().any(|n| n
            == "retrieval probe (needle, fill 2000 tokens): 1/2 right — depth 0.1 ✗, 0.9 ✓ (not a gate)"),
        "{:?}",
        r.judgement.notes
    );
    // The reports: the cells' probe table in quality.md, and the accuracy in the matrix.
    let md = std::fs::read_to_string(env.run_dir.report_path("quality.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| `scripted::ctx_8k`"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(row.contains("| ✓0 ✗1 (0%) | ✓1 ✗0 (100%) | 50%"), "{row}");
    let csv = std::fs::read_to_string(env.run_dir.report_path("quality.csv")).unwrap();
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains("scripted::ctx_8k"))
        .collect();
    assert_eq!(rows.len(), 2, "one row per depth: {csv}");
    assert!(
        rows[0].contains(",needle,0.1,0,1,0,") && rows[1].contains(",needle,0.9,1,1,1,"),
        "{csv}"
    );
    assert!(rows.iter().all(|r| r.ends_with(",PASS,cell")), "{csv}");
    let matrix = std::fs::read_to_string(env.run_dir.report_path("performance_matrix.md")).unwrap();
    assert!(
        matrix.contains("| 1/2 (50%) (probe) | not swept |"),
        "{matrix}"
    );
    // Written and read back whole.
    let back: o3_suite::results::CellResult =
        o3_suite::rundir::load_json(&env.run_dir.cell_path(&spec.test_name)).unwrap();
    assert_eq!(back.probes, r.probes);
    assert_eq!(back.cell.probe, spec.probe);
}
