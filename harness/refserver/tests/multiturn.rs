//! Live multi-turn chat on the real engine, both reference models (smollm2:135m, full
//! attention; gemma3:270m, sliding-window attention): the prompt cache over a growing
//! conversation, the figures Ollama reports for it, and Ollama's history cut when a chat outgrows
//! `num_ctx`.
//!
//! The engine's own account of each completion is read from the runner's log (llama-server's
//! `prompt eval time = <prompt_ms> ms / <prompt_n> tokens` line), so the test checks the
//! server's figures against it: `prompt_eval_count` = the whole prompt (`cache_n + prompt_n`),
//! `prompt_eval_duration` = `prompt_ms`, the time of the `prompt_n` tokens actually processed.
//! Uses the real reference server and backend (harness/setup-backend.sh); without them the test
//! prints why and passes, unless O3_REQUIRE_BACKEND=1.

mod support;

use serde_json::{Value, json};
use support::*;

/// Turns of the growing conversations: about 250 tokens each, so the history passes 1500 tokens,
/// beyond gemma3's sliding-window KV cache (window 512: 1024 cells at -ub 512).
const TURNS: usize = 6;

/// Tokens each answer may have.
const ANSWER_TOKENS: i64 = 8;

/// The system prompt of every conversation.
const SYSTEM: &str = "You are a terse maintenance assistant for a water plant. Answer each \
                      question in one short sentence, using only the notes you were given.";

/// The user's message of turn `k`: notes with checkable facts (about 200 tokens), then a
/// question about them.
fn user_turn(k: usize) -> String {
    let colours = [
        "red", "blue", "green", "yellow", "black", "white", "orange", "grey",
    ];
    let people = [
        "Ada", "Boris", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana",
    ];
    let mut s = format!("Turn {k}. New maintenance notes follow.");
    for j in 0..6 {
        let n = k * 10 + j;
        s.push_str(&format!(
            " Valve V{n} on line {} is painted {}, rated at {} bar, and was last serviced by {} \
             on day {} of the season.",
            j + 1,
            colours[(k + j) % colours.len()],
            n * 7 % 90 + 10,
            people[(k * 3 + j) % people.len()],
            n * 3 % 200 + 1
        ));
    }
    s.push_str(&format!(
        " Question {k}: what is the rating of valve V{}?",
        k * 10 + 2
    ));
    s
}

/// One turn as the server reported it, next to what the runner says it processed.
#[derive(Debug)]
struct Turn {
    prompt_eval_count: u64,
    prompt_eval_duration: u64,
    eval_count: u64,
    /// The runner's `prompt_n` and `prompt_ms`.
    engine: PromptEval,
}

impl Turn {
    /// Tokens served from the cache: the whole prompt minus what the engine processed.
    fn cache_n(&self) -> u64 {
        self.prompt_eval_count - self.engine.tokens
    }
}

fn chat_body(model: &str, num_ctx: u32, messages: &[Value], num_predict: i64) -> Value {
    json!({"model": model, "messages": messages, "stream": false, "keep_alive": "10m",
           "options": {"num_ctx": num_ctx, "num_predict": num_predict, "temperature": 0,
                       "seed": 42}})
}

/// Sends one non-streamed chat; the reply and the runner's `n`-th prompt-eval line.
async fn chat_turn(
    c: &reqwest::Client,
    s: &Server,
    body: Value,
    log: Option<&std::path::Path>,
    n: usize,
) -> (Value, Turn) {
    let (st, v) = post(c, s, "/api/chat", body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["done"], true, "{v}");
    let log = log.map_or_else(|| latest_runner_log(s), |p| p.to_path_buf());
    let engine = nth_prompt_eval(&log, n).await;
    let turn = Turn {
        prompt_eval_count: v["prompt_eval_count"].as_u64().unwrap(),
        prompt_eval_duration: v["prompt_eval_duration"].as_u64().unwrap_or(0),
        eval_count: v["eval_count"].as_u64().unwrap_or(0),
        engine,
    };
    // What Ollama v0.30.1+ reports (llm/llama_server.go `promptEvalCount` = cache_n + prompt_n,
    // `PromptEvalDuration` = prompt_ms): the engine prints prompt_ms with two decimals.
    assert!(
        turn.prompt_eval_count >= turn.engine.tokens && turn.engine.tokens >= 1,
        "prompt_eval_count {} against the engine's prompt_n {}",
        turn.prompt_eval_count,
        turn.engine.tokens
    );
    let engine_ns = turn.engine.ms * 1e6;
    assert!(
        (turn.prompt_eval_duration as f64 - engine_ns).abs() <= 10_000.0,
        "prompt_eval_duration {} ns, engine prompt_ms {}",
        turn.prompt_eval_duration,
        turn.engine.ms
    );
    (v, turn)
}

/// A conversation of `turns` turns whose history grows by each user message and the model's own
/// answer, as returned. Returns each turn's figures.
async fn growing_chat(
    c: &reqwest::Client,
    s: &Server,
    model: &str,
    num_ctx: u32,
    turns: usize,
) -> Vec<Turn> {
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    let mut out: Vec<Turn> = Vec::new();
    let mut log = None;
    for k in 1..=turns {
        messages.push(json!({"role": "user", "content": user_turn(k)}));
        let body = chat_body(model, num_ctx, &messages, ANSWER_TOKENS);
        let (v, t) = chat_turn(c, s, body, log.as_deref(), k).await;
        if log.is_none() {
            log = Some(latest_runner_log(s));
        }
        messages.push(json!({"role": "assistant", "content": v["message"]["content"]}));
        out.push(t);
    }
    // The last request once more: the same whole prompt, counted in full however much of it the
    // cache held.
    messages.pop();
    let (_, again) = chat_turn(
        c,
        s,
        chat_body(model, num_ctx, &messages, ANSWER_TOKENS),
        log.as_deref(),
        turns + 1,
    )
    .await;
    let last = out.last().unwrap();
    assert_eq!(again.prompt_eval_count, last.prompt_eval_count);
    eprintln!(
        "{model} repeat of turn {turns}: prompt_eval_count {}, cache_n {}, prompt_n {}, \
         prompt_eval_duration {:.1} ms",
        again.prompt_eval_count,
        again.cache_n(),
        again.engine.tokens,
        again.prompt_eval_duration as f64 / 1e6
    );
    out.push(again);
    out
}

fn report(model: &str, turns: &[Turn]) {
    for (i, t) in turns.iter().enumerate() {
        eprintln!(
            "{model} turn {}: prompt_eval_count {:5}  cache_n {:5}  prompt_n {:5}  \
             prompt_eval_duration {:8.1} ms  eval_count {}",
            i + 1,
            t.prompt_eval_count,
            t.cache_n(),
            t.engine.tokens,
            t.prompt_eval_duration as f64 / 1e6,
            t.eval_count
        );
    }
}

/// The accounting every model shares: the first turn on a fresh runner is all processed, and
/// the history grows turn by turn.
fn check_accounting(model: &str, turns: &[Turn]) {
    let n = turns.len() - 1; // the last entry repeats the last turn
    assert_eq!(
        turns[0].cache_n(),
        0,
        "{model}: turn 1 on a fresh runner must be processed in full"
    );
    for k in 1..n {
        assert!(
            turns[k].prompt_eval_count > turns[k - 1].prompt_eval_count + turns[k - 1].eval_count,
            "{model}: turn {} prompt {} does not hold turn {}'s prompt {} and answer {}",
            k + 1,
            turns[k].prompt_eval_count,
            k,
            turns[k - 1].prompt_eval_count,
            turns[k - 1].eval_count
        );
    }
}

/// The number after `key` (e.g. `dropped=`) in a server log line.
fn log_field(line: &str, key: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// History cutting at a small context: whole messages from the front, the system message and
/// the last one kept, the counts consistent. Then one more turn on the cut history.
async fn history_cut(c: &reqwest::Client, s: &Server, model: &str) {
    const NUM_CTX: u32 = 512;
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    for k in 1..=6 {
        messages.push(json!({"role": "user", "content": user_turn(k)}));
        messages.push(json!({"role": "assistant",
                             "content": format!("Valve V{} is rated at {} bar.", k * 10 + 2,
                                                (k * 10 + 2) * 7 % 90 + 10)}));
    }
    messages.push(json!({"role": "user", "content": user_turn(7)}));
    let before = server_log_lines(s, "truncating input messages").len();
    let (cut, t_cut) = chat_turn(c, s, chat_body(model, NUM_CTX, &messages, 4), None, 1).await;
    let cut_log = latest_runner_log(s);
    let lines = server_log_lines(s, "truncating input messages");
    assert_eq!(lines.len(), before + 1, "no cut logged: {lines:?}");
    let line = lines.last().unwrap();
    let (dropped, kept) = (log_field(line, "dropped="), log_field(line, "kept="));
    assert!(dropped > 0, "{line}");
    assert_eq!(kept + dropped, messages.len(), "{line}");
    assert!(
        t_cut.prompt_eval_count <= NUM_CTX as u64 + 1,
        "{model}: cut prompt {} over num_ctx {NUM_CTX}",
        t_cut.prompt_eval_count
    );
    // The same reply as sending the system message and the kept tail ourselves, uncut.
    let mut tail = vec![messages[0].clone()];
    tail.extend_from_slice(&messages[1 + dropped..]);
    assert_eq!(tail.len(), kept);
    let mut body = chat_body(model, NUM_CTX, &tail, 4);
    body["truncate"] = json!(false);
    // (Not the same answer: the second prompt mostly comes from the cache, and logits computed
    // in other batches can tip a greedy pick.)
    let (_, t_again) = chat_turn(c, s, body, Some(&cut_log), 2).await;
    assert_eq!(t_again.prompt_eval_count, t_cut.prompt_eval_count);
    // One more message from the front does not fit: Ollama's loop stopped at the first that did.
    let mut more = vec![messages[0].clone()];
    more.extend_from_slice(&messages[dropped..]);
    let mut body = chat_body(model, NUM_CTX, &more, 4);
    body["truncate"] = json!(false);
    let (st, e) = post(c, s, "/api/chat", body).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("the input length exceeds the context length")),
        "{model}: one more message should not fit in {NUM_CTX}"
    );
    // The next turn: the history grows again, so the cut moves and the cached prefix breaks
    // after the system prompt.
    messages.push(json!({"role": "assistant", "content": cut["message"]["content"]}));
    messages.push(json!({"role": "user", "content": user_turn(8)}));
    let (_, t_next) = chat_turn(
        c,
        s,
        chat_body(model, NUM_CTX, &messages, 4),
        Some(&cut_log),
        3,
    )
    .await;
    let lines = server_log_lines(s, "truncating input messages");
    let next = lines.last().unwrap();
    eprintln!(
        "{model} history cut at num_ctx {NUM_CTX}: {} messages, dropped {dropped}, kept {kept}, \
         prompt_eval_count {}; next turn: dropped {}, kept {}, prompt_eval_count {}, cache_n {}, \
         prompt_n {}",
        messages.len() - 2,
        t_cut.prompt_eval_count,
        log_field(next, "dropped="),
        log_field(next, "kept="),
        t_next.prompt_eval_count,
        t_next.cache_n(),
        t_next.engine.tokens
    );
    assert!(t_next.prompt_eval_count <= NUM_CTX as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_multiturn_cache_and_history() {
    let Some(backend) = backend_or_skip("the live multi-turn test") else {
        return;
    };
    let server = start_server(&backend).await;
    let c = http();

    // smollm2:135m (full attention): every turn reuses at least the previous turn's prompt.
    let smol = growing_chat(&c, &server, SMOL, 4096, TURNS).await;
    report(SMOL, &smol);
    check_accounting(SMOL, &smol);
    for k in 1..smol.len() - 1 {
        assert!(
            smol[k].cache_n() >= smol[k - 1].prompt_eval_count,
            "{SMOL} turn {}: cache_n {} < the previous prompt {}",
            k + 1,
            smol[k].cache_n(),
            smol[k - 1].prompt_eval_count
        );
    }
    // The repeated last request: all but the one token llama-server always evaluates.
    let again = smol.last().unwrap();
    assert_eq!(again.engine.tokens, 1, "{again:?}");

    history_cut(&c, &server, SMOL).await;

    // gemma3:270m (sliding window): measured and reported; the accounting holds either way.
    let gemma = growing_chat(&c, &server, GEMMA, 4096, TURNS).await;
    report(GEMMA, &gemma);
    check_accounting(GEMMA, &gemma);
    history_cut(&c, &server, GEMMA).await;
}
