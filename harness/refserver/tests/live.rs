//! Live test of o3-refserver against the real llama.cpp backend and the two reference models.
//!
//! Needs the backend from harness/setup-backend.sh: O3_LLAMA_BIN_DIR and O3_MODELS_DIR in the
//! environment, or `$O3_CACHE/backend.env` (default `~/.cache/o3-suite/backend.env`). Without it
//! the test prints why and passes, unless O3_REQUIRE_BACKEND=1, which turns that into a failure.
//! Every network wait has a timeout.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reference_server() {
    let Some(backend) = backend_or_skip("the live o3-refserver test") else {
        return;
    };
    let server = start_server(&backend).await;
    let c = http();

    // Version, tags, show.
    let v = get(&c, &server, "/api/version").await;
    assert!(v["version"].as_str().unwrap().starts_with("0.33.0"), "{v}");
    let text = c
        .get(&server.base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "Ollama is running");
    let tags = get(&c, &server, "/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&SMOL) && names.contains(&GEMMA), "{names:?}");
    for m in tags["models"].as_array().unwrap() {
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert!(m["size"].as_u64().unwrap() > 50_000_000);
    }
    let (st, show) = post(&c, &server, "/api/show", json!({"model": SMOL})).await;
    assert_eq!(st, 200);
    assert_eq!(
        show["model_info"]["llama.context_length"], 8192,
        "{}",
        show["model_info"]
    );
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["details"]["quantization_level"], "Q4_1");
    assert!(show["modelfile"].as_str().unwrap().contains("FROM /"));
    let (st, show) = post(&c, &server, "/api/show", json!({"name": GEMMA})).await;
    assert_eq!(st, 200);
    assert_eq!(show["model_info"]["gemma3.context_length"], 32768);
    let (st, e) = post(&c, &server, "/api/show", json!({"model": "nope:1b"})).await;
    assert_eq!(
        (st, e["error"].as_str().unwrap()),
        (404, "model 'nope:1b' not found")
    );

    // Streamed raw generate.
    let gen_body = |ctx: u32, prompt: &str, n: i64| {
        json!({"model": SMOL, "prompt": prompt, "raw": true,
               "options": {"num_ctx": ctx, "num_predict": n, "temperature": 0, "seed": 1}})
    };
    let t = Instant::now();
    let lines = stream(
        &c,
        &server,
        "/api/generate",
        gen_body(2048, "[run 1] The capital of France is", 16),
    )
    .await;
    let done = &lines.last().unwrap().1;
    assert_eq!(done["done"], true, "{done}");
    let chunks: Vec<&Value> = lines[..lines.len() - 1].iter().map(|(_, v)| v).collect();
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    for ch in &chunks {
        assert_eq!(ch["done"], false);
        assert_eq!(ch["model"], SMOL);
        assert!(!ch["response"].as_str().unwrap().is_empty());
    }
    assert!(done["eval_count"].as_u64().unwrap() > 0, "{done}");
    assert!(done["prompt_eval_count"].as_u64().unwrap() > 0, "{done}");
    assert!(matches!(
        done["done_reason"].as_str(),
        Some("stop" | "length")
    ));
    eprintln!(
        "smollm2 cold load num_ctx 2048: load_duration {:.0} ms (wall {:.0} ms), prompt_eval_count {}, eval_count {}",
        ms(&done["load_duration"]),
        t.elapsed().as_secs_f64() * 1e3,
        done["prompt_eval_count"],
        done["eval_count"]
    );

    // The runner is a direct child with --model <path> on its command line.
    let (pid1, cmd) = one_runner(&server);
    assert!(cmd.contains("llama-server"), "{cmd}");
    assert!(cmd.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{cmd}");
    assert!(cmd.contains("-c 2048"), "{cmd}");
    let ps = get(&c, &server, "/api/ps").await;
    let m = &ps["models"][0];
    assert_eq!(m["name"], SMOL);
    assert_eq!(m["context_length"], 2048);
    assert!(m["size"].as_u64().unwrap() > 50_000_000, "{m}");
    eprintln!(
        "smollm2 num_ctx 2048: /api/ps size {} bytes, runner RSS {}",
        m["size"],
        rss_kb(pid1)
    );

    // Same options: no reload, tiny load_duration.
    let (st, v) = generate(&c, &server, raw_once("[run 2] Hello", 2048, 4)).await;
    assert_eq!(st, 200, "{v}");
    assert!(ms(&v["load_duration"]) < 100.0, "{v}");
    assert_eq!(one_runner(&server).0, pid1);

    // A num_ctx change reloads: long load_duration, new runner pid, old one gone.
    let (st, v) = generate(&c, &server, raw_once("[run 3] Hello", 4096, 4)).await;
    assert_eq!(st, 200, "{v}");
    assert!(ms(&v["load_duration"]) > 100.0, "{v}");
    let (pid2, cmd) = one_runner(&server);
    assert_ne!(pid1, pid2);
    assert!(cmd.contains("-c 4096"), "{cmd}");
    assert!(
        wait_gone(pid1, Duration::from_secs(10)).await,
        "old runner {pid1} still alive"
    );
    eprintln!(
        "smollm2 reload num_ctx 4096: load_duration {:.0} ms, runner RSS {}",
        ms(&v["load_duration"]),
        rss_kb(pid2)
    );

    // Truncation: a prompt longer than num_ctx keeps about half of it.
    let prompt = format!("[run 4] {}", long_prompt(1200));
    let (st, v) = generate(&c, &server, raw_once(&prompt, 2048, 1)).await;
    assert_eq!(st, 200, "{v}");
    let n = v["prompt_eval_count"].as_u64().unwrap();
    assert!(
        (1024..=1030).contains(&n),
        "prompt_eval_count {n} after truncation at num_ctx 2048"
    );
    eprintln!(
        "truncation at num_ctx 2048: prompt_eval_count {n} (expected 1026, or 1027 with a BOS)"
    );
    let (st, v) = generate(&c, &server, no_truncate(raw_once(&prompt, 2048, 1))).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"], "the input length exceeds the context length");

    // Streamed chat through the model's chat template.
    let lines = stream(
        &c,
        &server,
        "/api/chat",
        json!({"model": SMOL, "messages": [{"role": "user", "content": "[run 5] Say hello."}],
               "options": {"num_ctx": 2048, "num_predict": 8, "temperature": 0}}),
    )
    .await;
    let done = &lines.last().unwrap().1;
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["message"]["role"], "assistant");
    assert!(lines.len() >= 2);
    assert!(lines[0].1["message"]["content"].as_str().is_some());

    // Errors.
    let (st, v) = generate(&c, &server, json!({"model": "nope:1b", "prompt": "x"})).await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (404, "model 'nope:1b' not found")
    );
    let (st, v) = generate(&c, &server, json!({"model": SMOL, "keep_alive": "-1"})).await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "time: missing unit in duration \"-1\"")
    );
    let (st, _) = generate(&c, &server, json!({"prompt": "x"})).await;
    assert_eq!(st, 400);

    // /api/embed: the reference models are completion models without pooling, so the answer
    // is the one Ollama passes on from llama-server for them (501, "does not support
    // embeddings"); the request is checked first as Ollama's EmbedHandler checks it.
    let (st, v) = post(
        &c,
        &server,
        "/api/embed",
        json!({"model": SMOL, "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (
            501,
            "This server does not support embeddings. Start it with `--embeddings`"
        )
    );
    let (st, v) = post(
        &c,
        &server,
        "/api/embed",
        json!({"model": "nope:1b", "input": "a"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (404, "model 'nope:1b' not found")
    );
    let (st, v) = post(
        &c,
        &server,
        "/api/embed",
        json!({"model": SMOL, "input": 7}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (400, "invalid input type")
    );

    // keep_alive 0 unloads: /api/ps empty and the runner gone within 10 s.
    let (pid3, _) = one_runner(&server);
    let (st, v) = generate(&c, &server, json!({"model": SMOL, "keep_alive": 0})).await;
    assert_eq!(st, 200);
    assert_eq!(v["done_reason"], "unload", "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = get(&c, &server, "/api/ps").await;
        if ps["models"].as_array().unwrap().is_empty() && gone(pid3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded after keep_alive 0: {ps}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Gemma 3 load times at two contexts (load-only requests), and the model switch.
    for ctx in [2048u32, 8192] {
        let (st, v) = generate(&c, &server, load_only(GEMMA, ctx)).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["done_reason"], "load");
        let (pid, _) = one_runner(&server);
        let ps = get(&c, &server, "/api/ps").await;
        assert_eq!(ps["models"][0]["context_length"], ctx);
        eprintln!(
            "gemma3 load num_ctx {ctx}: load_duration {:.0} ms, /api/ps size {}, runner RSS {}",
            ms(&v["load_duration"]),
            ps["models"][0]["size"],
            rss_kb(pid)
        );
    }
    // Loading smollm2 with max-loaded 1 unloads gemma first.
    let (gemma_pid, _) = one_runner(&server);
    let (st, v) = generate(&c, &server, load_only(SMOL, 8192)).await;
    assert_eq!(st, 200, "{v}");
    eprintln!(
        "smollm2 load num_ctx 8192: load_duration {:.0} ms",
        ms(&v["load_duration"])
    );
    assert!(wait_gone(gemma_pid, Duration::from_secs(10)).await);
    let (smol_pid, _) = one_runner(&server);

    // SIGTERM: the server exits and takes its runner with it.
    let spid = server.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_gone(smol_pid, Duration::from_secs(10)).await,
        "runner survived SIGTERM"
    );
    let mut server = server;
    let mut child = server.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "server exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(server);

    // SIGKILL: the runner must not outlive the server (PR_SET_PDEATHSIG).
    let server = start_server(&backend).await;
    let (st, v) = generate(&c, &server, load_only(SMOL, 2048)).await;
    assert_eq!(st, 200, "{v}");
    let (pid, _) = one_runner(&server);
    let mut server = server;
    let mut child = server.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)).await,
        "runner {pid} outlived a SIGKILLed server"
    );
}
