//! `cargo test --test predict` as a user runs it, offline: the user's matrix
//! (`harness/matrix.csv`) predicted against a scripted server (tests/support/scripted_server.rs)
//! whose `/api/show` describes the user's four models, with a fixed host model in the results
//! directory. Checks that only `/api/show` is asked, that every cell is predicted, and that the
//! figures follow the geometry; prints `prediction.md` (visible with `--nocapture`).
//!
//! Where the scripted metadata comes from (the GGUF keys Ollama's `/api/show` returns):
//! - `orieg/gemma3-tools:27b-it-qat`: Gemma 3 27B QAT Q4_0 — Google's Gemma 3 27B config
//!   (62 layers, 32 heads, 16 KV heads of 128, embedding 5376, FFN 21504, window 1024, trained
//!   context 131072); parameter count as `ollama show gemma3:27b-it-qat` reports it (27.4B).
//! - `liquid-rag:latest`: taken as Liquid AI's LFM2-1.2B-RAG at Q4_K_M (the tag does not say;
//!   the architecture is what its metadata would say): `lfm2`, 16 blocks of which 6 attend
//!   (layers 2, 5, 8, 10, 12, 14 — `head_count_kv` 8 there, 0 on the convolution blocks),
//!   32 heads, embedding 2048, FFN 8192, trained context 128000, 1.17B parameters.
//! - `qwen2.5:3b-instruct`: Qwen2.5-3B-Instruct Q4_K_M — `qwen2`, 36 layers, 16 heads, 2 KV
//!   heads, embedding 2048, FFN 11008, trained context 32768 (Ollama's), 3.09B parameters.
//! - `gemma3:latest`: Gemma 3 4B Q4_K_M — 34 layers, 8 heads, 4 KV heads of 256, embedding 2560,
//!   FFN 10240, window 1024, trained context 131072, 4.3B parameters.

#[path = "support/binary.rs"]
mod binary;
#[allow(dead_code)]
#[path = "support/scripted_server.rs"]
mod scripted_server;

use std::path::PathBuf;
use std::process::{Command, Output};

use binary::predict_binary;
use o3_suite::predict::host::{HostModel, HostSource, ProbeFigure};
use o3_suite::rundir::save_json;
use scripted_server::{CatalogModel, Script, ScriptedServer};
use serde_json::{Value, json};

fn model(
    name: &str,
    size: u64,
    family: &str,
    params: &str,
    quant: &str,
    info: Value,
) -> CatalogModel {
    CatalogModel {
        name: name.into(),
        size,
        details: json!({
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": params,
            "quantization_level": quant
        }),
        model_info: info,
    }
}

fn users_models() -> Vec<CatalogModel> {
    vec![
        model(
            "orieg/gemma3-tools:27b-it-qat",
            18_000_000_000,
            "gemma3",
            "27.4B",
            "Q4_0",
            json!({
                "general.architecture": "gemma3",
                "general.parameter_count": 27_432_406_640u64,
                "gemma3.block_count": 62,
                "gemma3.context_length": 131072,
                "gemma3.embedding_length": 5376,
                "gemma3.feed_forward_length": 21504,
                "gemma3.attention.head_count": 32,
                "gemma3.attention.head_count_kv": 16,
                "gemma3.attention.key_length": 128,
                "gemma3.attention.value_length": 128,
                "gemma3.attention.sliding_window": 1024
            }),
        ),
        model(
            "liquid-rag:latest",
            730_000_000,
            "lfm2",
            "1.2B",
            "Q4_K_M",
            json!({
                "general.architecture": "lfm2",
                "general.parameter_count": 1_170_340_608u64,
                "lfm2.block_count": 16,
                "lfm2.context_length": 128000,
                "lfm2.embedding_length": 2048,
                "lfm2.feed_forward_length": 8192,
                "lfm2.attention.head_count": 32,
                "lfm2.attention.head_count_kv": [0, 0, 8, 0, 0, 8, 0, 0, 8, 0, 8, 0, 8, 0, 8, 0],
                "lfm2.shortconv.l_cache": 3
            }),
        ),
        model(
            "qwen2.5:3b-instruct",
            1_900_000_000,
            "qwen2",
            "3.1B",
            "Q4_K_M",
            json!({
                "general.architecture": "qwen2",
                "general.parameter_count": 3_085_938_688u64,
                "qwen2.block_count": 36,
                "qwen2.context_length": 32768,
                "qwen2.embedding_length": 2048,
                "qwen2.feed_forward_length": 11008,
                "qwen2.attention.head_count": 16,
                "qwen2.attention.head_count_kv": 2
            }),
        ),
        model(
            "gemma3:latest",
            3_300_000_000,
            "gemma3",
            "4.3B",
            "Q4_K_M",
            json!({
                "general.architecture": "gemma3",
                "general.parameter_count": 4_299_915_632u64,
                "gemma3.block_count": 34,
                "gemma3.context_length": 131072,
                "gemma3.embedding_length": 2560,
                "gemma3.feed_forward_length": 10240,
                "gemma3.attention.head_count": 8,
                "gemma3.attention.head_count_kv": 4,
                "gemma3.attention.key_length": 256,
                "gemma3.attention.value_length": 256,
                "gemma3.attention.sliding_window": 1024
            }),
        ),
    ]
}

fn results_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("predict-offline-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A host model for this machine's name with fixed figures, so the predictions do not depend
/// on how busy the machine is: 60 GB/s of read bandwidth with 16 threads, as a desktop DDR5
/// host reaches (`/work/shared/reference/next-capabilities.md` §3.2).
fn fixed_host(results: &std::path::Path) {
    let f = |x| ProbeFigure::of(vec![x]).unwrap();
    let m = HostModel {
        host: o3_suite::monitor::host_info(),
        bandwidth_all_gbps: f(60.0),
        bandwidth_one_gbps: f(12.0),
        compute_all_gflops: f(640.0),
        compute_one_gflops: f(40.0),
        threads: 16,
        buffer_bytes: 256 << 20,
        measured_at: "fixture".into(),
        probe_wall_s: 0.0,
        source: HostSource::MeasuredHere,
    };
    save_json(&o3_suite::predict::host_path(results), &m).unwrap();
}

fn run(server: &ScriptedServer, results: &std::path::Path, args: &[&str]) -> Output {
    Command::new(predict_binary())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OLLAMA_HOST", server.base_url())
        .env("O3_MATRIX", "harness/matrix.csv")
        .env("O3_RESULTS_DIR", results)
        .env("O3_RUN_ID", "offline")
        .env("O3_REQUIRE_SERVER", "1")
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("O3_PREDICT_REMEASURE")
        .env_remove("O3_PREDICT_HOST_MODEL")
        .env_remove("O3_PREDICT_KV_TYPE")
        .env_remove("OLLAMA_KV_CACHE_TYPE")
        .output()
        .expect("the predict binary runs")
}

#[test]
fn the_users_matrix_is_predicted_from_api_show_alone() {
    let server = ScriptedServer::start(Script {
        catalog: users_models(),
        ..Script::new("unused:latest")
    });
    let results = results_dir("users");
    fixed_host(&results);

    // Listing contacts nothing.
    let list = run(&server, &results, &["--list"]);
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout)
            .matches(": test")
            .count(),
        14
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    let out = run(&server, &results, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let paths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(paths.len(), 14, "{paths:?}");
    assert!(paths.iter().all(|p| p == "POST /api/show"), "{paths:?}");

    let reports = results.join("offline/comparative_analysis");
    let md = std::fs::read_to_string(reports.join("prediction.md")).unwrap();
    println!("{md}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("prediction.json")).unwrap())
            .unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 14);
    assert!(
        cells.iter().all(|c| c["prediction"]["status"] == "made"),
        "{json}"
    );
    let fig = |test: &str, key: &str| -> f64 {
        let c = cells
            .iter()
            .find(|c| c["cell"]["test_name"] == test)
            .unwrap_or_else(|| panic!("{test}"));
        c["prediction"]["figures"][key]
            .as_f64()
            .or_else(|| c["prediction"]["breakdown"][key].as_f64())
            .unwrap()
    };
    // Memory grows with the context, for every model.
    for m in [
        "gemma3_tools_27b",
        "liquid_rag",
        "qwen25_3b",
        "gemma3_latest",
    ] {
        let ram: Vec<f64> = ["64k", "128k", "256k"]
            .iter()
            .map(|k| fig(&format!("{m}::ctx_{k}"), "ram_delta_bytes"))
            .collect();
        assert!(ram[0] < ram[1] && ram[1] < ram[2], "{m}: {ram:?}");
    }
    // Gemma 3 27B at 128K: 10 global layers × 8 KiB × 131072 + 52 local × 8 KiB × pad(1024 + 8, 256)
    // = 10 GiB + 52 × 8 KiB × 1280; without the window it would be 62 GiB.
    let kv = fig("gemma3_tools_27b::ctx_128k", "kv_cache_bytes");
    assert_eq!(kv, 10.0 * 8192.0 * 131_072.0 + 52.0 * 8192.0 * 1280.0);
    assert_eq!(
        fig("gemma3_tools_27b::ctx_128k", "kv_cache_full_bytes"),
        62.0 * 8192.0 * 131_072.0
    );
    // The fill is 1024 everywhere, so decode barely moves with the allocated context.
    let d64 = fig("gemma3_tools_27b::ctx_64k", "decode_tps");
    let d256 = fig("gemma3_tools_27b::ctx_256k", "decode_tps");
    assert!((d64 - d256).abs() / d64 < 1e-9, "{d64} {d256}");
    // Bandwidth-bound: 60 GB/s × 0.6 ÷ ~15.4 GB of Q4_0 weights ≈ 2.3 tok/s.
    assert!((2.0..2.7).contains(&d64), "{d64}");
    // Beyond the trained context, the table says so.
    assert!(md.contains("beyond the trained context 32768"), "{md}");
    let _ = std::fs::remove_dir_all(&results);
}
