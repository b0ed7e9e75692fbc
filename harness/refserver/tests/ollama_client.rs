//! The reference server driven by the official Ollama Python client (PyPI `ollama`, pinned in
//! harness/setup-python-tools.sh): a two-turn chat on each reference model, whose answers must
//! carry no chat-template tokens, then `show` and `ps`.
//!
//! Uses the real reference server and backend. The client's virtual environment is
//! `O3_PY_TOOLS` (harness/test.sh sets it from the setup script). Without the backend or the
//! client the test prints why and passes, unless O3_REQUIRE_BACKEND=1 (then a missing backend or
//! a missing client fails it, saying how to install it).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Text that must never reach a client: the turn markers of both models' templates.
const TEMPLATE_TOKENS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<eos>",
];

/// The client's Python, or why it is not there.
fn client_python() -> Result<PathBuf, String> {
    let dir = std::env::var("O3_PY_TOOLS")
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or("O3_PY_TOOLS is not set (run: export O3_PY_TOOLS=$(bash harness/setup-python-tools.sh))")?;
    let py = PathBuf::from(&dir).join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import ollama"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import ollama (run: bash harness/setup-python-tools.sh)",
            py.display()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client() {
    let Some(backend) = backend_or_skip("the official-client test") else {
        return;
    };
    let py = match client_python() {
        Ok(p) => p,
        Err(why) if std::env::var("O3_REQUIRE_BACKEND").as_deref() == Ok("1") => {
            panic!("O3_REQUIRE_BACKEND=1 but the Ollama Python client is missing: {why}")
        }
        Err(why) => {
            eprintln!("skipping the official-client test: {why}");
            return;
        }
    };
    let server = start_server(&backend).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ollama_client.py");
    let mut child = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(&server.base)
        .args([SMOL, GEMMA])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the client script");
    let t = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(300), async {
        use tokio::io::AsyncReadExt;
        let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (r1, r2) = tokio::join!(so.read_to_end(&mut a), se.read_to_end(&mut b));
        r1.unwrap();
        r2.unwrap();
        (child.wait().await.unwrap(), a, b)
    })
    .await
    .expect("the client script did not finish within 300 s");
    let (status, stdout, stderr) = out;
    assert!(
        status.success(),
        "client script failed ({status}): {}",
        String::from_utf8_lossy(&stderr)
    );
    let v: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&stdout)));
    eprintln!(
        "ollama Python client {} against o3-refserver: {:.1} s",
        v["client"],
        t.elapsed().as_secs_f64()
    );
    for (model, turn_marker) in [(SMOL, "<|im_start|>"), (GEMMA, "<start_of_turn>")] {
        let m = &v["models"][model];
        let turns = m["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 2);
        for (i, t) in turns.iter().enumerate() {
            let text = t["content"].as_str().unwrap();
            eprintln!("{model} turn {}: {text:?}", i + 1);
            assert!(
                !text.trim().is_empty(),
                "{model} turn {}: empty answer",
                i + 1
            );
            for tok in TEMPLATE_TOKENS {
                assert!(
                    !text.contains(tok),
                    "{model} turn {}: template token {tok} in the answer {text:?}",
                    i + 1
                );
            }
            assert_eq!(t["done"], true);
            assert_eq!(t["role"], "assistant");
            assert!(
                matches!(t["done_reason"].as_str(), Some("stop" | "length")),
                "{t}"
            );
            assert!(t["eval_count"].as_u64().unwrap() > 0, "{t}");
        }
        // Turn 2 holds turn 1's prompt and answer.
        assert!(
            turns[1]["prompt_eval_count"].as_u64().unwrap()
                > turns[0]["prompt_eval_count"].as_u64().unwrap()
                    + turns[0]["eval_count"].as_u64().unwrap(),
            "{model}: {turns:?}"
        );
        let show = &m["show"];
        let template = show["template"].as_str().unwrap();
        assert!(template.contains(turn_marker), "{model}: {template}");
        assert!(template.contains(".Messages"), "{model}: {template}");
        assert!(
            show["parameters"].as_str().unwrap().starts_with("stop"),
            "{model}: {show}"
        );
        assert!(
            show["model_info_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k.as_str().unwrap().ends_with(".context_length")),
            "{model}: {show}"
        );
        let ps = m["ps"].as_array().unwrap();
        assert_eq!(ps.len(), 1, "{model}: {ps:?}");
        assert_eq!(ps[0]["name"], model);
        assert_eq!(ps[0]["context_length"], 2048);
        assert!(ps[0]["size"].as_u64().unwrap() > 50_000_000, "{ps:?}");
        assert!(ps[0]["expires_at"].is_string(), "{ps:?}");
    }
}
