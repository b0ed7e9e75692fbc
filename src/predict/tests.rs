//! The arithmetic against hand-worked examples (a Llama-style model and Gemma 3, with and
//! without the sliding window, at 4K and 128K), and the calibration on a simulated host.

use serde_json::{Value, json};

use super::calibrate::{Basis, Calibration, Observation, fit, leave_one_out, summarize_errors};
use super::estimate::{CellInputs, Efficiencies, Measured, breakdown, errors, figures};
use super::host::{HostModel, HostSource, ProbeFigure};
use super::model::{KvType, ModelShape};
use super::*;
use crate::backend::ShowResponse;
use crate::results::Host;

fn show(details: Value, info: Value) -> ShowResponse {
    serde_json::from_value(json!({ "details": details, "model_info": info })).unwrap()
}

/// Llama 3.1 8B as Ollama's `/api/show` gives it (no key_length: 4096 / 32 = 128).
fn llama8b() -> ShowResponse {
    show(
        json!({"family": "llama", "quantization_level": "Q4_K_M", "parameter_size": "8.0B"}),
        json!({
            "general.architecture": "llama",
            "general.parameter_count": 8_030_261_248u64,
            "llama.block_count": 32,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8,
            "llama.embedding_length": 4096,
            "llama.feed_forward_length": 14336,
            "llama.context_length": 131072
        }),
    )
}

/// Gemma 3 27B: 62 layers, 16 KV heads of 128, a 1024-token window on 5 of every 6 layers.
fn gemma27b(window: bool) -> ShowResponse {
    let mut info = json!({
        "general.architecture": "gemma3",
        "general.parameter_count": 27_009_002_240u64,
        "gemma3.block_count": 62,
        "gemma3.attention.head_count": 32,
        "gemma3.attention.head_count_kv": 16,
        "gemma3.attention.key_length": 128,
        "gemma3.attention.value_length": 128,
        "gemma3.embedding_length": 5376,
        "gemma3.feed_forward_length": 21504,
        "gemma3.context_length": 131072
    });
    if window {
        info["gemma3.attention.sliding_window"] = json!(1024);
    }
    show(
        json!({"family": "gemma3", "quantization_level": "Q4_0"}),
        info,
    )
}

fn host(bw: f64, gflops: f64) -> HostModel {
    let f = |x| ProbeFigure::of(vec![x]).unwrap();
    HostModel {
        host: Host {
            hostname: "sim".into(),
            cpu_model: "simulated".into(),
            cpu_logical: 16,
            ..Host::default()
        },
        bandwidth_all_gbps: f(bw),
        bandwidth_one_gbps: f(bw),
        compute_all_gflops: f(gflops),
        compute_one_gflops: f(gflops / 16.0),
        threads: 16,
        buffer_bytes: 1,
        measured_at: "then".into(),
        probe_wall_s: 0.0,
        source: HostSource::MeasuredHere,
    }
}

fn inputs(num_ctx: u32, fill: u32, num_predict: u32) -> CellInputs {
    CellInputs {
        num_ctx,
        fill_tokens: fill,
        num_predict,
        num_thread: 16,
        num_batch: 512,
    }
}

const GIB: f64 = (1u64 << 30) as f64;

#[test]
fn llama_kv_cache_at_4k_and_128k() {
    let m = ModelShape::from_show(&llama8b(), Some(4_920_000_000)).unwrap();
    assert!(
        m.notes.iter().any(|n| n.contains("key_length missing")),
        "{:?}",
        m.notes
    );
    // 32 layers × 8 KV heads × (128 + 128) × 2 B = 128 KiB a token.
    assert_eq!(m.kv_bytes_per_token_global(KvType::F16), 131_072.0);
    assert_eq!(m.kv_cache_bytes(4096, 512, KvType::F16), 0.5 * GIB);
    assert_eq!(m.kv_cache_bytes(131_072, 512, KvType::F16), 16.0 * GIB);
    // q8_0: 34 bytes per 32 elements → 69,632 B a token.
    assert_eq!(
        m.kv_cache_bytes(131_072, 512, KvType::Q8_0),
        69_632.0 * 131_072.0
    );
    assert_eq!(m.kv_cache_bytes_full(131_072, KvType::F16), 16.0 * GIB);
}

#[test]
fn gemma3_kv_cache_with_and_without_the_sliding_window() {
    let m = ModelShape::from_show(&gemma27b(true), Some(15_000_000_000)).unwrap();
    // llama.cpp's pattern 6: layers 5, 11, …, 59 are global (10), the other 52 local.
    let local = m.layer_attention.iter().filter(|l| l.sliding).count();
    assert_eq!(local, 52);
    // A local layer holds pad(1024 + 512, 256) = 1536 cells; 16 × 256 × 2 B = 8 KiB a cell.
    assert_eq!(m.swa_cells(131_072, 512), 1536);
    // 128K: 10 × 8 KiB × 131072 + 52 × 8 KiB × 1536 = 10 GiB + 624 MiB.
    assert_eq!(
        m.kv_cache_bytes(131_072, 512, KvType::F16),
        11_391_729_664.0
    );
    assert_eq!(
        m.kv_cache_bytes_full(131_072, KvType::F16),
        66_571_993_088.0
    );
    // 4K: 10 × 8 KiB × 4096 + 52 × 8 KiB × 1536.
    assert_eq!(m.kv_cache_bytes(4096, 512, KvType::F16), 989_855_744.0);
    // Decode at depth 4096 reads the window only on local layers.
    assert_eq!(m.kv_read_bytes(4096, KvType::F16), 771_751_936.0);
    // The part that grows with the context: the 10 global layers.
    assert_eq!(m.kv_bytes_per_token_global(KvType::F16), 81_920.0);

    // Without the window in the metadata every layer holds the whole context.
    let full = ModelShape::from_show(&gemma27b(false), Some(15_000_000_000)).unwrap();
    assert!(full.layer_attention.iter().all(|l| !l.sliding));
    assert_eq!(
        full.kv_cache_bytes(131_072, 512, KvType::F16),
        66_571_993_088.0
    );
    assert_eq!(full.kv_cache_bytes(4096, 512, KvType::F16), 2_080_374_784.0);
}

#[test]
fn per_layer_kv_heads_and_explicit_head_dims() {
    let s = show(
        json!({"family": "lfm2", "quantization_level": "Q4_K_M", "parameter_size": "1.2B"}),
        json!({
            "general.architecture": "lfm2",
            "lfm2.block_count": 3,
            "lfm2.attention.head_count": 32,
            "lfm2.attention.head_count_kv": [8, 4, 0],
            "lfm2.attention.key_length": 64,
            "lfm2.attention.value_length": 32,
            "lfm2.embedding_length": 2048
        }),
    );
    let m = ModelShape::from_show(&s, Some(700_000_000)).unwrap();
    assert_eq!(m.parameters, 1_200_000_000, "from parameter_size");
    assert_eq!(
        m.kv_bytes_per_token_global(KvType::F16),
        (12 * 96 * 2) as f64
    );
    // The layer without attention costs no attention FLOPs.
    assert_eq!(m.attention_flops(10.0), 2.0 * 4.0 * 32.0 * 64.0 * 10.0);
    let mut bad = s.clone();
    bad.model_info.remove("general.architecture");
    assert!(
        ModelShape::from_show(&bad, Some(1))
            .unwrap_err()
            .contains("general.architecture")
    );
    let mut bad = s;
    bad.model_info
        .insert("lfm2.attention.head_count_kv".into(), json!([8, 4]));
    assert!(
        ModelShape::from_show(&bad, Some(1))
            .unwrap_err()
            .contains("2 entries")
    );
}

#[test]
fn llama_decode_and_prefill_by_hand() {
    let m = ModelShape::from_show(&llama8b(), Some(4_920_000_000)).unwrap();
    // 100 GB/s at 0.82 = 82 GB/s effective (next-capabilities.md §3.1's worked example).
    let h = host(100.0, 1600.0);
    let eff = Efficiencies {
        decode: 0.82,
        prefill: 0.5,
        ram_offset_bytes: 0.0,
    };
    // Short context: 82 GB/s ÷ (4.92 GB + one token of KV) ≈ 16.7 tok/s.
    let b = breakdown(&m, &h, &inputs(4096, 1, 0), KvType::F16);
    assert_eq!(b.decode_depth, 1);
    let short = figures(&b, &eff).decode_tps;
    assert!((short - 16.666_222_667).abs() < 1e-6, "{short}");
    // At 128K the KV read (16 GiB) dominates: 82 ÷ (4.92 + 17.18) ≈ 3.71 tok/s.
    let b = breakdown(&m, &h, &inputs(131_072, 130_944, 256), KvType::F16);
    assert_eq!(b.decode_depth, 131_072);
    let deep = figures(&b, &eff).decode_tps;
    assert!((deep - 3.710_429_203).abs() < 1e-6, "{deep}");
    // Prefill of 4096 tokens: 2N per token + 32 layers × 4 · 32 heads · 128 · Σp.
    let b = breakdown(&m, &h, &inputs(8192, 4096, 0), KvType::F16);
    let weights = 65_783_900_143_616.0; // 2 × 8,030,261,248 × 4096
    let attention = 4_396_972_769_280.0; // 524,288 × (4096 × 4095 / 2)
    assert_eq!(b.prefill_flops, weights + attention);
    let f = figures(&b, &eff);
    let prefill = (weights + attention) / (1600e9 * 0.5);
    assert!((f.ttft_s - prefill - 1.0 / f.decode_tps).abs() < 1e-9);
    // RAM Δ: weights + 1 GiB of KV at 8K + the compute buffer 4 · 512 · (4 · 4096 + 2 · 14336).
    assert_eq!(b.compute_buffer_bytes, 4.0 * 512.0 * (16_384.0 + 28_672.0));
    assert_eq!(
        f.ram_delta_bytes,
        4_920_000_000.0 + GIB + b.compute_buffer_bytes
    );
}

#[test]
fn gemma3_prefill_caps_attention_at_the_window() {
    let with = ModelShape::from_show(&gemma27b(true), Some(15_000_000_000)).unwrap();
    let without = ModelShape::from_show(&gemma27b(false), Some(15_000_000_000)).unwrap();
    // Below the window both are the same.
    assert_eq!(with.prefill_flops(1000), without.prefill_flops(1000));
    // 128K: a local layer's Σ min(p, 1024) = 1024·1023/2 + 1024·(131072 − 1024).
    let per_layer = 4.0 * 32.0 * 128.0;
    let local = 1024.0 * 1023.0 / 2.0 + 1024.0 * (131_072.0 - 1024.0);
    let global = 131_072.0 * 131_071.0 / 2.0;
    let expected = 2.0 * 27_009_002_240.0 * 131_072.0 + per_layer * (52.0 * local + 10.0 * global);
    assert_eq!(with.prefill_flops(131_072), expected);
    // Weights 7.1 PFLOP either way; attention 1.5 PFLOP with the window, 8.7 without.
    assert!(with.prefill_flops(131_072) < 0.6 * without.prefill_flops(131_072));
}

#[test]
fn bits_per_weight_give_the_weights_when_only_api_show_is_known() {
    let mut p = Predictor {
        host: host(60.0, 800.0),
        host_from: "test".into(),
        calibration: Calibration::new(Host::default()),
        config: PredictConfig::default(),
    };
    p.config.kv_type = KvType::Q8_0;
    let spec = crate::matrix::parse(
        std::path::Path::new("t.csv"),
        "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case\n\
         g,gemma3:27b,tools,256K,1024,8,16,20,2.5,0.7,analysis\n",
        80.0,
    )
    .unwrap()
    .remove(0);
    let pred = p.predict(&spec, &gemma27b(true), None).unwrap();
    assert_eq!(
        pred.shape.weights_bytes,
        (27_009_002_240.0 * 4.5 / 8.0) as u64
    );
    assert!(
        pred.weights_from.contains("4.5 bits"),
        "{}",
        pred.weights_from
    );
    assert_eq!(pred.kv_type, KvType::Q8_0);
    assert!(
        pred.notes[0].contains("beyond the trained context 131072"),
        "{:?}",
        pred.notes
    );
    assert_eq!(pred.fitted.decode_basis, Basis::Default);
    assert!(
        p.predict(
            &spec,
            &show(
                json!({"quantization_level": "ZZ"}),
                gemma27b(true).model_info.into()
            ),
            None
        )
        .is_err()
    );
}

#[test]
fn kv_type_settings_are_parsed_strictly() {
    let get = |k: &str| (k == "OLLAMA_KV_CACHE_TYPE").then(|| "q4_0".to_string());
    let c = PredictConfig::from_lookup(get).unwrap();
    assert_eq!(c.kv_type, KvType::Q4_0);
    assert!(c.kv_type_from.contains("OLLAMA_KV_CACHE_TYPE"));
    let e = PredictConfig::from_lookup(|k| (k == "O3_PREDICT_KV_TYPE").then(|| "q5".into()))
        .unwrap_err();
    assert!(e.to_string().contains("f16, q8_0, q4_0"), "{e}");
    let d = PredictConfig::from_lookup(|_| None).unwrap();
    assert_eq!(d.kv_type, KvType::F16);
}

/// A deterministic ±`amp` noise.
fn noise(i: u64, amp: f64) -> f64 {
    let x = (i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        >> 33) as f64
        / (1u64 << 31) as f64;
    1.0 + amp * (2.0 * x - 1.0)
}

#[test]
fn calibration_converges_on_a_simulated_host() {
    // The simulated engine: 0.72 of the bandwidth, 0.35 of the probe's FLOP rate, 90 MiB more
    // RAM than the geometry, each measurement ±3 %.
    let truth = Efficiencies {
        decode: 0.72,
        prefill: 0.35,
        ram_offset_bytes: 90.0 * 1024.0 * 1024.0,
    };
    let m = ModelShape::from_show(&llama8b(), Some(4_920_000_000)).unwrap();
    let h = host(50.0, 400.0);
    let cells = [
        (4096, 1024),
        (8192, 2048),
        (16384, 4096),
        (32768, 1024),
        (8192, 6000),
        (65536, 8192),
        (4096, 3000),
        (16384, 12000),
    ];
    let mut cal = Calibration::new(h.host.clone());
    let mut first = None;
    let mut later = Vec::new();
    for (i, &(ctx, fill)) in cells.iter().enumerate() {
        let b = breakdown(&m, &h, &inputs(ctx, fill, 128), KvType::F16);
        let t = figures(&b, &truth);
        let measured = Measured {
            ttft_s: Some(t.ttft_s * noise(3 * i as u64, 0.03)),
            decode_tps: Some(t.decode_tps * noise(3 * i as u64 + 1, 0.03)),
            ram_delta_bytes: Some(t.ram_delta_bytes * noise(3 * i as u64 + 2, 0.03)),
        };
        // Predicted before it is measured, from the cells before it only.
        let fitted = cal.fit("llama", "Q4_K_M");
        let e = errors(&figures(&b, &fitted.efficiencies), &measured);
        if i == 0 {
            assert_eq!(fitted.cells(), 0);
            first = Some(e);
        } else {
            assert_eq!(fitted.decode_basis, Basis::Group { n: i });
            later.push(e);
        }
        cal.add(Observation {
            run_id: "r1".into(),
            test_name: format!("m::ctx_{i}"),
            model: "llama3.1:8b".into(),
            family: "llama".into(),
            quantization: "Q4_K_M".into(),
            num_thread: 16,
            breakdown: b,
            measured,
        });
    }
    // The defaults are off (prefill 1.0 against 0.35: TTFT predicted about 3× too short).
    let first = first.unwrap();
    assert!(first.ttft.unwrap() < -0.5, "{first:?}");
    // From the third cell on, every figure is within 10 %.
    for e in &later[1..] {
        for x in [e.ttft, e.decode, e.ram] {
            assert!(x.unwrap().abs() < 0.10, "{e:?}");
        }
    }
    let f = cal.fit("llama", "Q4_K_M").efficiencies;
    assert!((f.decode / truth.decode - 1.0).abs() < 0.05, "{f:?}");
    assert!((f.prefill / truth.prefill - 1.0).abs() < 0.05, "{f:?}");
    // Leave-one-out: each cell predicted from the others is within the noise, too.
    let loo = leave_one_out(&cal.observations);
    assert_eq!(loo.len(), cells.len());
    let s = summarize_errors(loo.iter().map(|(_, _, e)| e));
    for (median, worst, n) in [s.ttft.unwrap(), s.decode.unwrap(), s.ram.unwrap()] {
        assert_eq!(n, cells.len());
        assert!(median < 0.05 && worst < 0.10, "{s:?}");
    }
    // Another family falls back to the host's cells, and says so.
    assert_eq!(
        cal.fit("qwen2", "Q4_K_M").decode_basis,
        Basis::Host { n: cells.len() }
    );
    // No observation at all: the defaults.
    assert_eq!(
        fit(&[], "llama", "Q4_K_M").efficiencies,
        calibrate::DEFAULTS
    );
    // A cell run again under the same run id replaces its observation.
    let again = cal.observations[0].clone();
    cal.add(again);
    assert_eq!(cal.observations.len(), cells.len());
}

#[test]
fn a_remote_server_is_not_predicted_from_this_machine() {
    let cfg = crate::config::Config::from_lookup(|k| match k {
        "OLLAMA_HOST" => Some("http://192.0.2.7:11434".into()),
        _ => None,
    })
    .unwrap();
    assert!(!server_is_local(&cfg));
    let local = crate::config::Config::from_lookup(|k| match k {
        "OLLAMA_HOST" => Some("127.0.0.1:11501".into()),
        _ => None,
    })
    .unwrap();
    assert!(server_is_local(&local));
}

#[test]
fn ram_checks_against_the_limit() {
    let r = RamCheck::of(32 << 30, 8 << 30, 18.0 * GIB, 80.0);
    assert!(r.crosses, "8 + 18 GiB > 25.6 GiB");
    let r = RamCheck::of(32 << 30, 8 << 30, 17.0 * GIB, 80.0);
    assert!(!r.crosses);
}

#[test]
fn the_matrix_section_shows_predicted_beside_measured_and_the_error_summary() {
    let p = Predictor {
        host: host(60.0, 800.0),
        host_from: "test".into(),
        calibration: Calibration::new(Host::default()),
        config: PredictConfig::default(),
    };
    let spec = crate::matrix::parse(
        std::path::Path::new("t.csv"),
        "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case\n\
         l,llama3.1:8b,x,8K,1024,512,16,30,1,0.5,chat\n",
        80.0,
    )
    .unwrap()
    .remove(0);
    let mut pred = p.predict(&spec, &llama8b(), Some(4_920_000_000)).unwrap();
    let measured = Measured {
        ttft_s: Some(pred.figures.ttft_s * 2.0),
        decode_tps: Some(pred.figures.decode_tps / 1.25),
        ram_delta_bytes: None,
    };
    pred.errors = Some(errors(&pred.figures, &measured));
    pred.measured = Some(measured);
    let made = CellPrediction::Made(Box::new(pred));
    let declined = CellPrediction::Declined {
        why: "remote server".into(),
    };
    // Stored in a cell result and read back unchanged.
    let json = serde_json::to_value(&made).unwrap();
    assert_eq!(json["status"], "made");
    assert_eq!(
        serde_json::from_value::<CellPrediction>(json).unwrap(),
        made
    );
    let mut o = String::new();
    report::matrix_section(
        &mut o,
        [
            ("l::ctx_8k", Some(&made)),
            ("r::ctx_8k", Some(&declined)),
            ("n::ctx_8k", None),
        ]
        .into_iter(),
    );
    assert!(o.contains("## Predicted vs measured"), "{o}");
    assert!(o.contains("| -50.0 % |"), "TTFT predicted at half: {o}");
    assert!(o.contains("| +25.0 % |"), "decode predicted 25 % high: {o}");
    assert!(o.contains("not predicted: remote server"), "{o}");
    assert!(!o.contains("n::ctx_8k"), "{o}");
    assert!(o.contains("| TTFT | 50.0 % | 50.0 % | 1 |"), "{o}");
    assert!(o.contains("| RAM Δ | – | – | 0 |"), "{o}");
    // No prediction at all: no section (reports of older results stay as they were).
    let mut empty = String::new();
    report::matrix_section(&mut empty, [("n::ctx_8k", None)].into_iter());
    assert!(empty.is_empty());
}
