//! Tests of the search logic against the simulated server, of the plan (grid, cap, probe
//! specs), of the outputs (parsed back), and the golden files of the outputs.

use std::path::{Path, PathBuf};

use rstest::rstest;

use super::outputs::{self, ContinueConfig, Preset};
use super::plan::{ContextCap, MemoryEstimate, ModelPlan, group_by_name};
use super::record::{SearchRecord, read_records_in};
use super::search::{Cmp, SearchInput, classify, compare, final_class, run_search};
use super::sim::{Figure, SimServer, SplitMix64};
use super::*;
use crate::gates::Judgement;
use crate::results::{CellResult, Gates, Host, Verdict};
use crate::rundir::RunDir;

const V_P: Verdict = Verdict::Pass;
const V_F: Verdict = Verdict::Fail;
const V_M: Verdict = Verdict::Marginal;
const V_I: Verdict = Verdict::Invalid;

/// A matrix row.
fn row(name: &str, ctx: u32, fill: u32, ttft_max: f64, tok_min: f64, use_case: &str) -> CellSpec {
    CellSpec {
        test_name: crate::matrix::test_name(name, ctx),
        name: name.into(),
        model: format!("{name}:sim"),
        category: "sim".into(),
        num_ctx: ctx,
        fill_tokens: fill,
        num_batch: 512,
        num_thread: 2,
        num_predict: 128,
        gates: Gates {
            ttft_max_s: ttft_max,
            tok_s_min: tok_min,
            stability_min: 0.5,
            ram_max_pct: 80.0,
        },
        use_case: use_case.into(),
        optional: false,
        optimize: true,
        source: format!("sim.csv:{ctx}"),
        relative_gates: None,
        probe: None,
    }
}

fn cap(tokens: u32) -> ContextCap {
    ContextCap::new(Some(tokens as u64), None, Vec::new())
}

fn cfg(max_probes: u32, batches: &[u32]) -> OptConfig {
    OptConfig {
        max_probes,
        batches: batches.to_vec(),
        ..OptConfig::default()
    }
}

fn host() -> Host {
    Host {
        hostname: "sim-host".into(),
        cpu_model: "simulated CPU".into(),
        cpu_logical: 4,
        cpu_physical: Some(2),
        ram_total_bytes: 24 << 30,
        os: "Linux (simulated)".into(),
        kernel: "6.0.0-sim".into(),
    }
}

fn search(
    plan: &ModelPlan,
    cfg: &OptConfig,
    sim: &mut SimServer,
    existing: Vec<crate::results::CellResult>,
) -> SearchRecord {
    run_search(
        SearchInput {
            plan,
            cfg,
            existing,
            host: host(),
            server: "sim://".into(),
        },
        sim,
    )
}

fn fig(f: impl Fn(&LoadOptions, u32) -> f64 + 'static) -> Figure {
    Box::new(f)
}

/// TTFT 1.6 s per 1K of context: 25.6 s at 16K passes a 30 s gate, 32 s at 20K fails it.
fn ttft_crossing_at_20k() -> Figure {
    fig(|o, _| 1.6 * o.num_ctx as f64 / 1024.0)
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("o3-opt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ctxs(sim: &SimServer) -> Vec<u32> {
    sim.probed.iter().map(|s| s.num_ctx).collect()
}

// ---------------------------------------------------------------------------------------------
// Plan: grid, rows, probe specs, cap.

#[rstest]
#[case(&[2048, 4096, 8192], 8192, 4096, &[2048, 4096, 8192])]
#[case(&[8192, 16384, 32768], 32768, 4096, &[8192, 12288, 16384, 20480, 24576, 28672, 32768])]
#[case(&[3000], 10000, 4096, &[3000, 4096, 8192])]
#[case(&[8192], 6000, 4096, &[])]
#[case(&[8192], 20000, 8192, &[8192, 16384])]
fn grid_points(
    #[case] rows: &[u32],
    #[case] cap_tokens: u32,
    #[case] step: u32,
    #[case] expected: &[u32],
) {
    let rows = rows
        .iter()
        .map(|&c| row("m", c, 1024, 30.0, 1.0, "u"))
        .collect();
    let plan = ModelPlan::new(rows, cap(cap_tokens), 2);
    assert_eq!(plan.grid(step), expected);
}

#[test]
fn probe_spec_uses_the_nearest_row_and_caps_the_fill() {
    let mut deep = row("m", 8192, 6000, 90.0, 5.0, "maximum analysis");
    deep.num_predict = 256;
    let plan = ModelPlan::new(
        vec![row("m", 16384, 3072, 45.0, 15.0, "RAG integration"), deep],
        cap(32768),
        2,
    );
    // Below the smallest row: the smallest row's gates and fill, fill capped to ctx − predict.
    let s = plan.spec_for(
        &LoadOptions {
            num_ctx: 4096,
            num_thread: 1,
            num_batch: 64,
        },
        1,
    );
    assert_eq!(s.test_name, "m::opt::ctx_4k_t1_b64");
    assert_eq!(s.fill_tokens, 4096 - 256);
    assert_eq!(s.gates.ttft_max_s, 90.0);
    assert_eq!((s.num_thread, s.num_batch, s.num_predict), (1, 64, 256));
    assert!(!s.optional);
    // Between rows: the largest row at or below; a repeat gets _r2.
    let s = plan.spec_for(
        &LoadOptions {
            num_ctx: 12288,
            num_thread: 2,
            num_batch: 512,
        },
        2,
    );
    assert_eq!(s.test_name, "m::opt::ctx_12k_t2_b512_r2");
    assert_eq!(
        (s.fill_tokens, s.gates.ttft_max_s, s.use_case.as_str()),
        (6000, 90.0, "maximum analysis")
    );
    let s = plan.spec_for(
        &LoadOptions {
            num_ctx: 20480,
            num_thread: 2,
            num_batch: 512,
        },
        1,
    );
    assert_eq!((s.fill_tokens, s.gates.ttft_max_s), (3072, 45.0));
    assert_eq!(
        crate::rundir::cell_file_name(&s.test_name),
        "m__opt__ctx_20k_t2_b512.json"
    );
    assert_eq!(
        plan.use_cases(),
        vec![
            ("maximum analysis".to_string(), 8192),
            ("RAG integration".to_string(), 16384)
        ]
    );
}

#[test]
fn rows_are_grouped_by_slug_in_table_order() {
    let cells = vec![
        row("b", 8192, 100, 30.0, 1.0, "u"),
        row("a", 4096, 100, 30.0, 1.0, "u"),
        row("b", 2048, 100, 30.0, 1.0, "u"),
    ];
    let g = group_by_name(&cells);
    assert_eq!(
        g.iter()
            .map(|(n, r)| (n.as_str(), r.len()))
            .collect::<Vec<_>>(),
        [("b", 2), ("a", 1)]
    );
    assert_eq!(g[0].1[0].num_ctx, 2048, "sorted by context");
}

#[test]
fn memory_cap_is_the_largest_fitting_context() {
    let e = MemoryEstimate {
        fixed_bytes: 4 << 30,
        kv_bytes_per_token: 128 * 1024,
        basis: "test".into(),
        system_total_bytes: 24 << 30,
        system_used_bytes: 6 << 30,
        ram_limit_pct: 80.0,
    };
    let n = e.max_tokens();
    assert!(e.fits(n) && !e.fits(n + 1), "{n}");
    // 24·0.8 − 6 − 4 GiB = 9.2 GiB of KV = 75366 tokens of 128 KiB.
    assert!((75_000..=75_366).contains(&n), "{n}");
    let c = ContextCap::new(Some(131_072), Some(e.clone()), Vec::new());
    assert_eq!(c.tokens, Some(n));
    let c = ContextCap::new(Some(8192), Some(e), Vec::new());
    assert_eq!(c.tokens, Some(8192));
    let full = MemoryEstimate {
        system_used_bytes: 20 << 30,
        fixed_bytes: 4 << 30,
        kv_bytes_per_token: 1,
        basis: "test".into(),
        system_total_bytes: 24 << 30,
        ram_limit_pct: 80.0,
    };
    assert_eq!(full.max_tokens(), 0);
}

#[test]
fn search_never_probes_above_the_memory_cap() {
    let est = MemoryEstimate {
        fixed_bytes: 1 << 30,
        kv_bytes_per_token: 256 * 1024,
        basis: "test".into(),
        system_total_bytes: 24 << 30,
        system_used_bytes: 8 << 30,
        ram_limit_pct: 80.0,
    };
    let limit = est.max_tokens();
    let plan = ModelPlan::new(
        vec![row("m", 8192, 1024, 30.0, 1.0, "u")],
        ContextCap::new(Some(131_072), Some(est), Vec::new()),
        2,
    );
    assert_eq!(plan.cap.memory_limit_tokens, Some(limit));
    // A server that passes everything: the search goes to the top of the grid, which is the cap.
    let mut sim = SimServer::new(1, fig(|_, _| 2.0), fig(|_, _| 20.0));
    let r = search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    assert!(!sim.probed.is_empty());
    assert!(
        ctxs(&sim).iter().all(|&c| c <= limit),
        "{:?} above {limit}",
        ctxs(&sim)
    );
    let top = *r.grid.last().unwrap();
    assert!(
        top <= limit && top + 4096 > limit,
        "grid top {top}, limit {limit}"
    );
    assert_eq!(r.context.largest_pass.as_ref().unwrap().num_ctx, top);
}

#[test]
fn a_predicted_start_is_probed_first_and_the_search_still_finds_the_boundary() {
    let mut plan = ModelPlan::new(
        vec![row("m", 8192, 1024, 30.0, 1.0, "u")],
        ContextCap::new(Some(65_536), None, Vec::new()),
        2,
    );
    plan.start = Some((16_384, "the largest context predicted to pass".into()));
    let mut sim = SimServer::new(1, ttft_crossing_at_20k(), fig(|_, _| 20.0));
    let r = search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    assert_eq!(ctxs(&sim)[0], 16_384, "{:?}", ctxs(&sim));
    assert!(
        r.probes[0].why.contains("predicted to pass"),
        "{:?}",
        r.probes[0].why
    );
    assert_eq!(r.context.largest_pass.as_ref().unwrap().num_ctx, 16_384);
    // Without a prediction the top of the grid comes first.
    plan.start = None;
    let mut sim = SimServer::new(1, ttft_crossing_at_20k(), fig(|_, _| 20.0));
    search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    assert_eq!(ctxs(&sim)[0], 65_536);
}

// ---------------------------------------------------------------------------------------------
// Classification and comparison.

#[rstest]
#[case(&[V_P], 1, Some(true))]
#[case(&[V_F], 1, Some(false))]
#[case(&[V_I], 1, None)]
#[case(&[V_I, V_F], 1, Some(false))]
#[case(&[V_M], 1, None)]
#[case(&[V_M, V_P], 1, Some(true))]
#[case(&[V_P], 2, None)]
#[case(&[V_P, V_P], 2, Some(true))]
#[case(&[V_P, V_F], 2, None)]
#[case(&[V_P, V_F, V_P], 2, Some(true))]
#[case(&[V_P, V_F, V_F], 2, Some(false))]
#[case(&[V_P, V_F, V_M], 2, None)]
fn majority_rule(#[case] runs: &[Verdict], #[case] k: usize, #[case] pass: Option<bool>) {
    assert_eq!(classify(runs, k).map(|c| c.pass), pass);
}

#[test]
fn unclear_points_are_marginal() {
    assert_eq!(final_class(&[V_P, V_F, V_M]).verdict, Verdict::Marginal);
    assert_eq!(final_class(&[V_M, V_M, V_M]).verdict, Verdict::Marginal);
    assert!(!final_class(&[V_M]).pass);
    assert_eq!(final_class(&[V_I, V_I]).verdict, Verdict::Invalid);
    assert_eq!(final_class(&[V_I, V_F]).verdict, Verdict::Fail);
}

#[test]
fn compare_needs_significance() {
    let mut rng = SplitMix64::new(7);
    let a: Vec<f64> = (0..5).map(|_| 20.0 + rng.next_normal()).collect();
    let b: Vec<f64> = (0..5).map(|_| 20.0 + rng.next_normal()).collect();
    let c: Vec<f64> = (0..5).map(|_| 30.0 + rng.next_normal()).collect();
    assert_eq!(compare(&a, &b, true), Cmp::Same);
    assert_eq!(compare(&a, &c, true), Cmp::SecondBetter);
    assert_eq!(compare(&a, &c, false), Cmp::FirstBetter);
    assert_eq!(
        compare(&[1.0], &c, true),
        Cmp::Same,
        "one value shows nothing"
    );
}

#[test]
fn prng_is_deterministic_and_roughly_normal() {
    let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
    let xs: Vec<f64> = (0..4000).map(|_| a.next_normal()).collect();
    assert_eq!(
        xs[..10],
        (0..10).map(|_| b.next_normal()).collect::<Vec<_>>()[..]
    );
    let m = crate::stats::mean(&xs).unwrap();
    let sd = crate::stats::variance(&xs).unwrap().sqrt();
    assert!(
        m.abs() < 0.06 && (sd - 1.0).abs() < 0.06,
        "mean {m}, sd {sd}"
    );
    let u: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
    assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
}

// ---------------------------------------------------------------------------------------------
// The search against the simulated server.

#[test]
fn finds_the_context_boundary() {
    let plan = ModelPlan::new(vec![row("m", 8192, 2048, 30.0, 5.0, "u")], cap(32768), 1);
    let mut sim = SimServer::new(11, ttft_crossing_at_20k(), fig(|_, _| 20.0));
    let r = search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    let lp = r.context.largest_pass.as_ref().unwrap();
    let sf = r.context.smallest_fail.as_ref().unwrap();
    assert_eq!((lp.num_ctx, sf.num_ctx), (16384, 20480));
    assert_eq!(sf.verdict, Verdict::Fail);
    assert_eq!(lp.verdicts, [V_P, V_P], "the largest PASS is confirmed");
    assert_eq!(sf.verdicts, [V_F, V_F], "the smallest FAIL is confirmed");
    assert_eq!(
        lp.test_names,
        ["m::opt::ctx_16k_t2_b512", "m::opt::ctx_16k_t2_b512_r2"]
    );
    assert!(
        sf.reasons.iter().any(|x| x.contains("TTFT")),
        "{:?}",
        sf.reasons
    );
    // Top first, then bisection, then the two confirmations.
    let k = 1024;
    assert_eq!(
        ctxs(&sim)[..6],
        [32 * k, 16 * k, 24 * k, 20 * k, 16 * k, 20 * k]
    );
    assert!(r.context.complete && r.context.marginal.is_empty());
    let rec = r.recommended.as_ref().unwrap();
    assert_eq!(rec.options.num_ctx, 16384);
    assert!(
        rec.evidence
            .contains(&"m::opt::ctx_20k_t2_b512_r2".to_string())
    );
    assert_eq!(rec.matrix_test_name, None, "no 16K row in the matrix");
    assert!(r.not_searched.is_empty(), "{:?}", r.not_searched);
}

#[test]
fn a_model_that_passes_at_the_cap_needs_two_probes() {
    let plan = ModelPlan::new(
        vec![
            row("s", 2048, 1024, 20.0, 5.0, "u"),
            row("s", 8192, 3072, 45.0, 5.0, "u"),
        ],
        cap(8192),
        1,
    );
    let mut sim = SimServer::new(3, fig(|_, f| f as f64 / 500.0), fig(|_, _| 40.0));
    let r = search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    assert_eq!(ctxs(&sim)[..2], [8192, 8192]);
    assert_eq!(r.context.largest_pass.as_ref().unwrap().num_ctx, 8192);
    assert!(r.context.smallest_fail.is_none());
    assert_eq!(
        r.recommended.as_ref().unwrap().matrix_test_name.as_deref(),
        Some("s::ctx_8k")
    );
}

#[test]
fn no_passing_context_means_no_recommendation() {
    let plan = ModelPlan::new(vec![row("m", 4096, 1024, 30.0, 50.0, "u")], cap(16384), 2);
    let mut sim = SimServer::new(5, fig(|_, _| 1.0), fig(|_, _| 10.0));
    let r = search(&plan, &cfg(12, &[512]), &mut sim, Vec::new());
    assert!(r.recommended.is_none() && r.context.largest_pass.is_none());
    assert_eq!(r.context.smallest_fail.as_ref().unwrap().num_ctx, 4096);
    assert!(
        r.not_searched
            .iter()
            .any(|n| n.starts_with("threads") && n.contains("no context passed"))
    );
    assert!(r.not_searched.iter().any(|n| n.starts_with("batch")));
    assert!(
        sim.probed.iter().all(|s| s.num_thread == 2),
        "no thread probes"
    );
}

#[test]
fn marginal_points_are_repeated_at_most_twice() {
    // At 12K the mean TTFT sits just under the gate with wide noise: runs come out MARGINAL
    // (or FAIL), never clearly PASS.
    let plan = ModelPlan::new(vec![row("m", 8192, 1024, 30.0, 1.0, "u")], cap(16384), 1);
    let mut sim = SimServer::new(
        21,
        fig(|o, _| match o.num_ctx {
            8192 => 5.0,
            12288 => 29.6,
            _ => 60.0,
        }),
        fig(|_, _| 20.0),
    );
    sim.noise_rel = 0.04;
    let r = search(&plan, &cfg(20, &[512]), &mut sim, Vec::new());
    let at_12k = sim.probed.iter().filter(|s| s.num_ctx == 12288).count();
    let verdicts: Vec<Verdict> = r
        .probes
        .iter()
        .filter(|p| p.options.num_ctx == 12288)
        .map(|p| p.verdict)
        .collect();
    assert!((2..=3).contains(&at_12k), "{verdicts:?}");
    assert!(verdicts.contains(&V_M), "{verdicts:?}");
    assert_eq!(r.context.largest_pass.as_ref().unwrap().num_ctx, 8192);
    let sf = r.context.smallest_fail.as_ref().unwrap();
    assert_eq!(sf.num_ctx, 12288);
    assert_eq!(
        sf.verdict == Verdict::Marginal,
        r.context.marginal == [12288],
        "{verdicts:?}"
    );
}

fn thread_plan(max_threads: u32) -> ModelPlan {
    ModelPlan::new(
        vec![row("m", 4096, 1024, 30.0, 1.0, "u")],
        cap(4096),
        max_threads,
    )
}

#[test]
fn finds_the_best_thread_count() {
    // Decode peaks at 3 threads of 6.
    let curve = [0.0, 10.0, 18.0, 25.0, 19.0, 15.0, 12.0];
    let mut sim = SimServer::new(
        9,
        fig(|_, _| 2.0),
        fig(move |o, _| curve[o.num_thread as usize]),
    );
    let r = search(&thread_plan(6), &cfg(30, &[512]), &mut sim, Vec::new());
    assert_eq!(r.threads.chosen, Some(3), "{:#?}", r.threads);
    assert!(r.threads.complete);
    let rec = r.recommended.as_ref().unwrap();
    assert_eq!(rec.options.num_thread, 3);
    let tried: Vec<u32> = r.threads.candidates.iter().map(|c| c.value).collect();
    assert!(
        tried.len() < 6 + 1,
        "ternary search does not probe everything: {tried:?}"
    );
}

#[rstest]
#[case(101)]
#[case(202)]
#[case(303)]
fn no_winner_inside_the_noise(#[case] seed: u64) {
    // Every thread count has the same true decode rate: any difference is noise, so the fewest
    // threads win.
    let mut sim = SimServer::new(seed, fig(|_, _| 2.0), fig(|_, _| 20.0));
    sim.noise_rel = 0.05;
    let r = search(&thread_plan(4), &cfg(30, &[512]), &mut sim, Vec::new());
    assert_eq!(r.threads.chosen, Some(1), "{:#?}", r.threads);
    let one = r.threads.candidates.iter().find(|c| c.value == 1).unwrap();
    assert!(
        r.threads.best_mean == Some(1) || one.p_vs_best.unwrap() >= ALPHA,
        "{:#?}",
        r.threads
    );
}

#[test]
fn smallest_batch_on_the_ttft_plateau_wins() {
    // TTFT falls with the batch size up to 256, then stays flat.
    let mut sim = SimServer::new(
        4,
        fig(|o, _| {
            10.0 + if o.num_batch < 256 {
                2.0 * (256 / o.num_batch) as f64
            } else {
                0.0
            }
        }),
        fig(|_, _| 20.0),
    );
    let r = search(
        &thread_plan(1),
        &cfg(30, &DEFAULT_BATCHES),
        &mut sim,
        Vec::new(),
    );
    assert_eq!(r.batch.chosen, Some(256), "{:#?}", r.batch);
    assert_eq!(r.recommended.as_ref().unwrap().options.num_batch, 256);
    assert!(r.batch.candidates.iter().all(|c| c.value <= 4096));
    assert!(r.batch.why.contains("256"), "{}", r.batch.why);
}

#[test]
fn batches_above_the_context_are_not_probed() {
    let plan = ModelPlan::new(vec![row("m", 512, 256, 30.0, 1.0, "u")], cap(512), 1);
    let mut sim = SimServer::new(4, fig(|_, _| 1.0), fig(|_, _| 20.0));
    search(&plan, &cfg(30, &DEFAULT_BATCHES), &mut sim, Vec::new());
    assert!(sim.probed.iter().all(|s| s.num_batch <= 512));
}

#[test]
fn respects_the_probe_budget() {
    let plan = ModelPlan::new(vec![row("m", 8192, 2048, 30.0, 5.0, "u")], cap(32768), 4);
    let mut sim = SimServer::new(11, ttft_crossing_at_20k(), fig(|_, _| 20.0));
    let r = search(&plan, &cfg(3, &DEFAULT_BATCHES), &mut sim, Vec::new());
    assert_eq!(sim.probed.len(), 3);
    assert_eq!((r.probes_new, r.probes.len()), (3, 3));
    assert!(!r.context.complete);
    assert!(
        r.not_searched[0].starts_with("context: stopped, probe budget of 3"),
        "{:?}",
        r.not_searched
    );
    assert!(
        r.not_searched
            .iter()
            .any(|n| n.starts_with("threads: not searched"))
    );
    // What was found so far is still reported: 16K passed, 24K failed.
    assert_eq!(r.context.largest_pass.as_ref().unwrap().num_ctx, 16384);
    assert_eq!(r.context.smallest_fail.as_ref().unwrap().num_ctx, 24576);
}

#[test]
fn respects_the_time_budget() {
    let plan = ModelPlan::new(vec![row("m", 8192, 2048, 30.0, 5.0, "u")], cap(32768), 4);
    let mut sim = SimServer::new(11, ttft_crossing_at_20k(), fig(|_, _| 20.0));
    sim.wall_s = 100.0;
    let c = OptConfig {
        budget_s: 250.0,
        ..cfg(50, &[512])
    };
    let r = search(&plan, &c, &mut sim, Vec::new());
    assert_eq!(
        sim.probed.len(),
        3,
        "0, 100 and 200 s spent before each probe"
    );
    assert_eq!(r.probe_wall_s, 300.0);
    assert!(
        r.not_searched[0].contains("time budget of 250 s"),
        "{:?}",
        r.not_searched
    );
}

#[test]
fn resumes_from_probe_results_on_disk() {
    let dir = tmp_dir("resume");
    let plan = ModelPlan::new(vec![row("m", 8192, 2048, 30.0, 5.0, "u")], cap(32768), 3);
    let make = |dir: &Path| {
        let mut s = SimServer::new(
            11,
            ttft_crossing_at_20k(),
            fig(|o, _| 10.0 + o.num_thread as f64 * 4.0),
        );
        s.run_dir = Some(RunDir::at(dir));
        s
    };
    let c = cfg(14, &[128, 256, 512]);
    let mut first = make(&dir);
    let r1 = search(&plan, &c, &mut first, Vec::new());
    assert!(r1.probes_new >= 8 && r1.probes_resumed == 0);

    // Same history on disk: the second search runs nothing and reaches the same answer.
    let mut second = make(&dir);
    let r2 = search(
        &plan,
        &c,
        &mut second,
        RunDir::at(&dir).read_cells().unwrap(),
    );
    assert_eq!(second.probed.len(), 0);
    assert_eq!((r2.probes_new, r2.probes_resumed), (0, r1.probes_new));
    // (Figures read back from JSON may differ in the last bit; names and verdicts may not.)
    assert_eq!(answer(&r2), answer(&r1));
    assert!(r2.probes.iter().all(|p| p.resumed));

    // An interrupted search (budget 4) continues where it stopped.
    let dir2 = tmp_dir("resume-partial");
    let mut cut = make(&dir2);
    let short = OptConfig {
        max_probes: 4,
        ..c.clone()
    };
    search(&plan, &short, &mut cut, Vec::new());
    let mut rest = make(&dir2);
    let r3 = search(
        &plan,
        &c,
        &mut rest,
        RunDir::at(&dir2).read_cells().unwrap(),
    );
    assert_eq!(r3.probes_resumed, 4);
    assert_eq!(r3.probes_new, r1.probes_new - 4);
    assert_eq!(answer(&r3), answer(&r1));
    // Results of other models and of the matrix are not taken for probes.
    let mut other = make(&dir2);
    let other_plan = ModelPlan::new(vec![row("n", 8192, 2048, 30.0, 5.0, "u")], cap(32768), 3);
    let r4 = search(
        &other_plan,
        &c,
        &mut other,
        RunDir::at(&dir2).read_cells().unwrap(),
    );
    assert_eq!(r4.probes_resumed, 0);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dir2).unwrap();
}

/// What a search found, without floating-point figures: recommendation, boundary evidence,
/// threads, batch.
type Answer = (
    Option<(String, LoadOptions)>,
    Vec<(u32, Vec<Verdict>, Vec<String>)>,
    Option<u32>,
    Option<u32>,
);

/// What a search found, without floating-point figures.
fn answer(r: &SearchRecord) -> Answer {
    let ev = |e: &Option<super::record::Evidence>| {
        e.as_ref()
            .map(|e| (e.num_ctx, e.verdicts.clone(), e.test_names.clone()))
    };
    (
        r.recommended
            .as_ref()
            .map(|x| (x.test_name.clone(), x.options)),
        [ev(&r.context.largest_pass), ev(&r.context.smallest_fail)]
            .into_iter()
            .flatten()
            .collect(),
        r.threads.chosen,
        r.batch.chosen,
    )
}

#[test]
fn skipped_results_on_disk_are_probed_again() {
    let plan = thread_plan(1);
    let mut sim = SimServer::new(1, fig(|_, _| 2.0), fig(|_, _| 20.0));
    let first = plan.spec_for(&plan.row_options(4096), 1);
    let mut skipped = sim.result(&first);
    skipped.judgement = Judgement::skipped("server unreachable".into());
    let r = search(&plan, &cfg(12, &[512]), &mut sim, vec![skipped]);
    assert_eq!(sim.probed[0].test_name, first.test_name);
    assert_eq!(r.probes_resumed, 0);
}

struct Unreachable;

impl Prober for Unreachable {
    fn probe(&mut self, spec: &CellSpec) -> CellResult {
        let mut r = SimServer::new(0, fig(|_, _| 1.0), fig(|_, _| 1.0)).result(spec);
        r.judgement = Judgement::skipped("server unreachable".into());
        r
    }
}

#[test]
fn a_server_that_goes_away_stops_the_search() {
    let plan = thread_plan(2);
    let r = run_search(
        SearchInput {
            plan: &plan,
            cfg: &cfg(12, &[512]),
            existing: Vec::new(),
            host: host(),
            server: "x".into(),
        },
        &mut Unreachable,
    );
    assert!(r.stopped.as_ref().unwrap().contains("server unreachable"));
    assert!(r.probes.is_empty() && r.recommended.is_none());
}

#[rstest]
#[case(&[], Ok(OptConfig::default()))]
#[case(&[("O3_OPT_MAX_PROBES", "6"), ("O3_OPT_BUDGET_S", "90.5"), ("O3_OPT_GRID_TOKENS", "8192"), ("O3_OPT_BATCHES", "512, 64,64"), ("O3_OPT_MAX_THREADS", "3")],
    Ok(OptConfig { max_probes: 6, budget_s: 90.5, grid_tokens: 8192, batches: vec![64, 512], max_threads: Some(3) }))]
#[case(&[("O3_OPT_MAX_PROBES", "0")], Err("O3_OPT_MAX_PROBES"))]
#[case(&[("O3_OPT_BUDGET_S", "-1")], Err("O3_OPT_BUDGET_S"))]
#[case(&[("O3_OPT_GRID_TOKENS", "100")], Err("O3_OPT_GRID_TOKENS"))]
#[case(&[("O3_OPT_BATCHES", "64,x")], Err("O3_OPT_BATCHES"))]
// Upper ends and non-numbers.
#[case(&[("O3_OPT_MAX_PROBES", "1001")], Err("O3_OPT_MAX_PROBES"))]
#[case(&[("O3_OPT_BUDGET_S", "1e30")], Err("O3_OPT_BUDGET_S"))]
#[case(&[("O3_OPT_BUDGET_S", "NaN")], Err("O3_OPT_BUDGET_S"))]
#[case(&[("O3_OPT_GRID_TOKENS", "1048577")], Err("O3_OPT_GRID_TOKENS"))]
#[case(&[("O3_OPT_MAX_THREADS", "1025")], Err("O3_OPT_MAX_THREADS"))]
#[case(&[("O3_OPT_BATCHES", "64,1048577")], Err("O3_OPT_BATCHES"))]
#[case(&[("O3_OPT_MAX_PROBES", "1000"), ("O3_OPT_BUDGET_S", "604800"), ("O3_OPT_GRID_TOKENS", "1048576"), ("O3_OPT_BATCHES", "1048576"), ("O3_OPT_MAX_THREADS", "1024")],
    Ok(OptConfig { max_probes: 1000, budget_s: 604800.0, grid_tokens: 1 << 20, batches: vec![1 << 20], max_threads: Some(1024) }))]
fn config_from_environment(
    #[case] vars: &[(&str, &str)],
    #[case] expected: Result<OptConfig, &str>,
) {
    let got = OptConfig::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    });
    match expected {
        Ok(c) => assert_eq!(got.unwrap(), c),
        Err(var) => {
            let e = got.unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().starts_with(&format!("invalid {var}=")), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs: fixture records, parsed-back YAML, goldens.

fn fixtures_dir() -> PathBuf {
    crate::config::crate_root().join("tests/fixtures/optimize/records")
}

fn fixture_records() -> Vec<SearchRecord> {
    let r = read_records_in(&fixtures_dir()).unwrap();
    assert!(
        r.len() >= 3,
        "expected the fixture records in {}",
        fixtures_dir().display()
    );
    r
}

/// Matrix rows of one model: (context, fill, TTFT gate, decode gate, use case) each.
fn model_rows(
    name: &str,
    model: &str,
    category: &str,
    rows: &[(u32, u32, f64, f64, &str)],
) -> Vec<CellSpec> {
    rows.iter()
        .map(|&(ctx, fill, ttft, tok, uc)| CellSpec {
            model: model.into(),
            category: category.into(),
            ..row(name, ctx, fill, ttft, tok, uc)
        })
        .collect()
}

/// Searches of three simulated models that the output tests and goldens are built from.
fn simulated_records() -> Vec<SearchRecord> {
    let mut out = Vec::new();
    let mut simulate = |rows, cap_tokens, mut sim: SimServer, wall_s, max_probes| {
        sim.wall_s = wall_s;
        let plan = ModelPlan::new(rows, cap(cap_tokens), 2);
        out.push(search(
            &plan,
            &cfg(max_probes, &DEFAULT_BATCHES),
            &mut sim,
            Vec::new(),
        ));
    };
    // smollm2-like: passes up to its trained 8K; 2 threads clearly faster than 1.
    simulate(
        model_rows(
            "smollm2_135m",
            "smollm2:135m",
            "reference",
            &[
                (2048, 1024, 20.0, 20.0, "basic code tasks"),
                (4096, 2048, 30.0, 15.0, "basic code tasks"),
                (8192, 3072, 45.0, 10.0, "chat assistance"),
            ],
        ),
        8192,
        SimServer::new(
            1,
            fig(|o, f| f as f64 / 900.0 * if o.num_batch < 128 { 1.6 } else { 1.0 }),
            fig(|o, _| 30.0 + 18.0 * (o.num_thread.min(2) as f64 - 1.0)),
        ),
        41.5,
        12,
    );
    // gemma3-like: TTFT crosses its 45 s gate at 20K; cut short by a 10-probe budget.
    simulate(
        model_rows(
            "gemma3_270m",
            "gemma3:270m",
            "reference",
            &[
                (8192, 2048, 30.0, 15.0, "RAG integration"),
                (16384, 3072, 45.0, 15.0, "RAG integration"),
                (32768, 4096, 60.0, 10.0, "complex refactoring"),
            ],
        ),
        32768,
        SimServer::new(
            2,
            fig(|o, _| 2.4 * o.num_ctx as f64 / 1024.0 - 2.0),
            fig(|_, _| 22.0),
        ),
        63.0,
        10,
    );
    // qwen-like: too slow everywhere.
    simulate(
        model_rows(
            "qwen25_3b",
            "qwen2.5:3b-instruct",
            "small",
            &[
                (32768, 1024, 30.0, 1.0, "basic code tasks"),
                (65536, 1024, 30.0, 1.0, "basic code tasks"),
            ],
        ),
        32768,
        SimServer::new(3, fig(|_, _| 48.0), fig(|_, _| 3.0)),
        120.0,
        12,
    );
    for r in &mut out {
        r.started_at = "2026-05-01T10:00:00Z".into();
        r.finished_at = "2026-05-01T10:20:00Z".into();
        r.elapsed_s = r.probe_wall_s;
        r.harness_version = "0.1.0".into();
        r.server = "http://127.0.0.1:11435".into();
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Rewrites the fixture records from the simulated searches:
/// `cargo test --lib optimize::tests::write_fixture_records -- --ignored`.
#[test]
#[ignore = "rewrites tests/fixtures/optimize/records; run by hand"]
fn write_fixture_records() {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for r in simulated_records() {
        let mut json = serde_json::to_string_pretty(&r).unwrap();
        json.push('\n');
        std::fs::write(dir.join(format!("{}.json", r.name)), json).unwrap();
    }
}

#[test]
fn fixture_records_match_the_simulated_searches() {
    // The fixtures are what the search gives today (modulo timing): a change of the search
    // logic shows up here first. Rewrite them with `write_fixture_records`.
    let fixed = fixture_records();
    let fresh = simulated_records();
    assert_eq!(fixed.len(), fresh.len());
    for (a, b) in fixed.iter().zip(&fresh) {
        assert_eq!(a.name, b.name);
        assert_eq!(answer(a), answer(b), "{}", a.name);
        assert_eq!(a.not_searched, b.not_searched, "{}", a.name);
        assert_eq!(
            a.probes.iter().map(|p| &p.test_name).collect::<Vec<_>>(),
            b.probes.iter().map(|p| &p.test_name).collect::<Vec<_>>()
        );
    }
}

#[test]
fn presets_parse_back() {
    let records = fixture_records();
    let mut n = 0;
    for r in &records {
        let Some(p) = outputs::preset(r) else {
            assert!(r.recommended.is_none());
            continue;
        };
        let text = outputs::render_preset(&p);
        assert!(text.starts_with("# o3-suite preset"));
        let back: Preset = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back, p);
        let rec = r.recommended.as_ref().unwrap();
        assert_eq!(
            (
                back.options.num_ctx,
                back.options.num_thread,
                back.options.num_batch
            ),
            (
                rec.options.num_ctx,
                rec.options.num_thread,
                rec.options.num_batch
            )
        );
        assert_eq!(back.model, r.model);
        assert_eq!(back.verdict, Verdict::Pass);
        let ttft = back.measured.ttft_s.as_ref().unwrap();
        assert!(ttft.ci_low.unwrap() <= ttft.mean && ttft.mean <= ttft.ci_high.unwrap());
        assert_eq!(ttft.confidence_level, 0.95);
        assert_eq!(back.host.cpu_model, "simulated CPU");
        assert_eq!(back.date, "2026-05-01T10:20:00Z");
        // Untyped too: the keys a tool would look for.
        let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(
            v["options"]["num_ctx"].as_u64(),
            Some(rec.options.num_ctx as u64)
        );
        assert_eq!(v["harness_version"].as_str(), Some("0.1.0"));
        let mf = outputs::render_modelfile(r).unwrap();
        let lines: Vec<&str> = mf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                format!("FROM {}", r.model),
                format!("PARAMETER num_ctx {}", rec.options.num_ctx),
                format!("PARAMETER num_thread {}", rec.options.num_thread),
                format!("PARAMETER num_batch {}", rec.options.num_batch),
            ]
        );
        n += 1;
    }
    assert_eq!(
        n, 2,
        "two of the three fixture models have a recommendation"
    );
}

#[test]
fn presets_say_what_their_figures_mean() {
    let records = fixture_records();
    let smol = records.iter().find(|r| r.name == "smollm2_135m").unwrap();
    let rec = smol.recommended.as_ref().unwrap();
    let p = outputs::preset(smol).unwrap();
    let text = outputs::render_preset(&p);
    // The date stays a string for YAML 1.1 loaders too.
    assert!(
        text.lines().any(|l| l == "date: '2026-05-01T10:20:00Z'"),
        "{text}"
    );
    // Which gates the verdict refers to, and their limits.
    let gates = p.gates.as_ref().unwrap();
    assert_eq!(Some(gates), rec.gates.as_ref());
    assert_eq!((gates.ttft_max_s, gates.tok_s_min), (45.0, 10.0));
    assert!(p.gates_rule.contains("ttft_max_s") && p.gates_rule.contains("ram_max_pct"));
    // The stability scale, the fill, the evidence cell, the server and its version.
    assert!(p.measured.stability_scale.starts_with("0 to 1"));
    assert!(
        p.measured
            .stability_scale
            .contains(&crate::stability::formula())
    );
    assert_eq!(p.measured.fill_tokens, 3072);
    assert_eq!(p.evidence_cell, rec.test_name);
    assert_eq!(
        p.evidence_file,
        format!("cells/{}", crate::rundir::cell_file_name(&rec.test_name))
    );
    assert_eq!(p.server.url, "http://127.0.0.1:11435");
    assert_eq!(p.server.version.as_deref(), Some(super::sim::SIM_VERSION));
    let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(v["gates"]["stability_min"].as_f64(), Some(0.5));
    assert_eq!(
        v["server"]["version"].as_str(),
        Some(super::sim::SIM_VERSION)
    );
    // Credentials in the server address are not written.
    let mut secret = smol.clone();
    secret.server = "http://admin:hunter2@10.0.0.5:11434".into();
    let text = outputs::render_preset(&outputs::preset(&secret).unwrap());
    assert!(
        text.contains("url: http://10.0.0.5:11434") && !text.contains("hunter2"),
        "{text}"
    );
    // A FAIL above the boundary is a typed verdict.
    let gemma = records.iter().find(|r| r.name == "gemma3_270m").unwrap();
    let p = outputs::preset(gemma).unwrap();
    assert_eq!(p.context.smallest_fail_verdict, Some(Verdict::Fail));
}

#[test]
fn recommendations_name_each_host_once() {
    let mut records = fixture_records();
    // Hosts a, b, a in name order: the second `a` is not next to the first.
    for (r, cpu) in records.iter_mut().zip(["cpu a", "cpu b", "cpu a"]) {
        r.host.cpu_model = cpu.into();
    }
    let md = outputs::render_recommendations(&records, &[]);
    assert!(
        md.contains(" on cpu a (4 logical CPUs), cpu b (4 logical CPUs). "),
        "{md}"
    );
}

#[test]
fn continue_config_parses_back() {
    let records = fixture_records();
    let text = outputs::render_continue(&records);
    let back: ContinueConfig = yaml_serde::from_str(&text).unwrap();
    assert_eq!((back.schema.as_str(), back.models.len()), ("v1", 2));
    let smol = back
        .models
        .iter()
        .find(|m| m.model == "smollm2:135m")
        .unwrap();
    assert_eq!(smol.provider, "ollama");
    assert_eq!(smol.roles, ["chat", "edit", "apply"]);
    assert_eq!(smol.default_completion_options.context_length, 8192);
    let gemma = back
        .models
        .iter()
        .find(|m| m.model == "gemma3:270m")
        .unwrap();
    assert_eq!(gemma.roles, ["chat", "edit", "apply"]);
    // The keys Continue reads, by name.
    let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(
        v["models"][0]["defaultCompletionOptions"]["contextLength"].as_u64(),
        Some(back.models[0].default_completion_options.context_length as u64)
    );
    assert_eq!(v["name"].as_str(), Some("o3-suite recommendations"));
    let names: Vec<&str> = back.models.iter().map(|m| m.name.as_str()).collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "names are unique: {names:?}");
}

#[test]
fn continue_config_talks_to_the_server_measured() {
    // The fixtures were measured at the reference server (11435), not Ollama's default.
    let mut records = fixture_records();
    let cfg = outputs::continue_config(&records);
    assert!(
        cfg.models
            .iter()
            .all(|m| m.api_base.as_deref() == Some("http://127.0.0.1:11435/")),
        "{cfg:#?}"
    );
    let text = outputs::render_continue(&records);
    let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(
        v["models"][0]["apiBase"].as_str(),
        Some("http://127.0.0.1:11435/")
    );
    // At Ollama's default address Continue needs no apiBase.
    for r in &mut records {
        r.server = "http://localhost:11434".into();
    }
    let text = outputs::render_continue(&records);
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!body.iter().any(|l| l.contains("apiBase")), "{text}");
    assert!(
        outputs::continue_config(&records)
            .models
            .iter()
            .all(|m| m.api_base.is_none())
    );
    // Credentials never reach the file.
    for r in &mut records {
        r.server = "https://user:s3cret@gpu-box.lan:8443/ollama".into();
    }
    let text = outputs::render_continue(&records);
    assert!(
        text.contains("apiBase: https://gpu-box.lan:8443/ollama/") && !text.contains("s3cret"),
        "{text}"
    );
}

#[test]
fn continue_config_header_names_the_clients_num_ctx_reaches() {
    let text = outputs::render_continue(&fixture_records());
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(header.contains("VS Code extension"), "{header}");
    assert!(header.contains("`cn` CLI"), "{header}");
    assert!(
        header.contains("smollm2:135m: ollama create smollm2-135m-8k -f smollm2_135m_8k.Modelfile"),
        "{header}"
    );
}

#[test]
fn no_model_gets_the_autocomplete_role() {
    let mut all: Vec<String> = USE_CASES_ALL.iter().map(|s| s.to_string()).collect();
    all.push("autocomplete".into());
    assert!(!outputs::roles_for(&all).contains(&"autocomplete".to_string()));
    let text = outputs::render_continue(&fixture_records());
    assert!(
        !text
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("autocomplete")),
        "{text}"
    );
}

const USE_CASES_ALL: [&str; 6] = [
    "basic code tasks",
    "complex refactoring",
    "maximum analysis",
    "RAG integration",
    "chat assistance",
    "code completion",
];

#[rstest]
#[case("http://127.0.0.1:11434", "http://127.0.0.1:11434", true)]
#[case("http://localhost:11434/", "http://localhost:11434/", true)]
#[case("localhost:11434", "localhost:11434", true)]
#[case("http://me:pw@127.0.0.1:11434", "http://127.0.0.1:11434", true)]
#[case("http://127.0.0.1:11435", "http://127.0.0.1:11435", false)]
#[case("https://localhost:11434", "https://localhost:11434", false)]
#[case("http://box:11434", "http://box:11434", false)]
#[case("http://a:b@host:1/p?q=x@y", "http://host:1/p?q=x@y", false)]
fn server_addresses(#[case] url: &str, #[case] public: &str, #[case] default: bool) {
    assert_eq!(outputs::without_credentials(url), public);
    assert_eq!(outputs::is_default_ollama(url), default);
}

#[rstest]
#[case(&["basic code tasks"], &["chat", "edit", "apply"])]
#[case(&["chat assistance"], &["chat", "edit"])]
#[case(&["maximum analysis", "RAG integration"], &["chat"])]
#[case(&["Complex Refactoring ", "chat assistance"], &["chat", "edit", "apply"])]
fn roles_by_use_case(#[case] uc: &[&str], #[case] roles: &[&str]) {
    let uc: Vec<String> = uc.iter().map(|s| s.to_string()).collect();
    assert_eq!(outputs::roles_for(&uc), roles);
}

#[test]
fn recommendations_name_winners_and_failures() {
    let md = outputs::render_recommendations(&fixture_records(), &[]);
    assert!(md.contains("| basic code tasks | `smollm2:135m` |"), "{md}");
    assert!(md.contains("| RAG integration | `gemma3:270m` |"), "{md}");
    assert!(
        md.contains("No model of the matrix is assigned to this use case."),
        "{md}"
    );
    assert!(md.contains("`qwen25_3b` at 32768 tokens: FAIL"), "{md}");
    assert!(
        md.contains("Note: the matrix asks for 32K for this use case"),
        "{md}"
    );
    assert!(
        md.contains("Not searched:"),
        "the gemma search was cut short: {md}"
    );
    // Order of the records does not matter.
    let mut rev = fixture_records();
    rev.reverse();
    assert_eq!(outputs::render_recommendations(&rev, &[]), md);
}

#[test]
fn build_writes_every_output_from_the_records() {
    let run = RunDir::at(tmp_dir("outputs"));
    for r in fixture_records() {
        super::record::write_record(&run, &r).unwrap();
    }
    let paths = outputs::build(&run).unwrap();
    let rel: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(run.reports_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "integration_configs/gemma3_270m_16k.yaml",
            "integration_configs/smollm2_135m_8k.yaml",
            "integration_configs/gemma3_270m_16k.Modelfile",
            "integration_configs/smollm2_135m_8k.Modelfile",
            "integration_configs/continue-config.yaml",
            "use_case_recommendations.md",
        ]
    );
    let back = super::record::read_records(&run).unwrap();
    assert_eq!(
        back.iter().map(answer).collect::<Vec<_>>(),
        fixture_records().iter().map(answer).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(run.root()).unwrap();
}

// Goldens (crate::golden): `O3_GOLDEN=overwrite` rewrites them; a missing golden is written to
// golden/wip/optimize/ and fails; a mismatch fails with a line diff.

fn check_golden(name: &str, actual: &str) -> Result<(), String> {
    let root = crate::config::crate_root().join("golden");
    let update = crate::golden::Update::from_env().unwrap_or_else(|e| panic!("{e}"));
    crate::golden::check(
        name,
        actual,
        &root.join("optimize"),
        &root.join("wip").join("optimize"),
        update,
    )
}

#[test]
fn outputs_match_goldens() {
    let records = fixture_records();
    let mut failures = Vec::new();
    for file in outputs::render_all(&records, &[]) {
        let name = file
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Err(e) = check_golden(&name, &file.content) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn line_diff_numbers_lines() {
    let d = crate::golden::line_diff("a\nb\nc\n", "a\nB\nc\n", 10);
    assert!(d.contains("-    2 | b") && d.contains("+    2 | B"), "{d}");
}

// Phase 2: the run's sessions weigh in on the recommendations.

/// A 4K session of `model` with `workload` judged `verdict`: a FAIL fails RSS growth (63 % of
/// the loaded size against a 50 % limit), an INVALID has a problem, a PASS grew 3.1 %.
fn session(
    name: &str,
    model: &str,
    workload: &str,
    verdict: Verdict,
) -> crate::agentic::SessionResult {
    use crate::judgement::{Gate, GateCheck};
    let header = "name,model,workload,num_ctx,num_batch,num_thread,duration_s,target_fill,think_s,success_min,tok_s_min,ttft_p95_max_s,accuracy_min,rss_growth_max_pct,stability_min";
    let text = format!("{header}\n{name},{model},{workload},4K,512,2,90,,,0.5,0.5,120,,50,0.1\n");
    let spec = crate::agentic::table::parse(Path::new("s.csv"), &text, 80.0, None)
        .unwrap()
        .remove(0);
    let mut r = crate::agentic::assemble(
        &spec,
        crate::agentic::SessionRun::Skipped {
            meta: Box::default(),
            why: "fixture".into(),
        },
        90.0,
    );
    let growth = if verdict == Verdict::Fail { 63.0 } else { 3.1 };
    r.judgement.verdict = verdict;
    r.judgement.skipped = None;
    (r.judgement.valid_trials, r.judgement.attempted_trials) = (20, 20);
    r.judgement.checks = vec![
        GateCheck::from_interval(Gate::Success, Some(1.0), Some((0.8, 1.0)), 20, 0.5),
        GateCheck::from_interval(Gate::RssGrowth, Some(growth), None, 18, 50.0),
    ];
    if verdict == Verdict::Invalid {
        r.judgement.problems = vec!["turn 7: the history was cut".into()];
    }
    r.analysis.success_rate = Some(1.0);
    r.analysis.accuracy = Some(0.4);
    r.analysis.cache_reuse = Some(0.68);
    r.analysis.rss.growth_pct = Some(growth);
    r.analysis.rss.pattern = crate::agentic::analysis::MemoryPattern::Bounded;
    r
}

/// The fixture records with `gemma3_270m` also assigned to chat assistance, where `smollm2_135m`
/// wins by its lower TTFT.
fn chat_contest() -> Vec<SearchRecord> {
    let mut records = fixture_records();
    let gemma = records
        .iter_mut()
        .find(|r| r.name == "gemma3_270m")
        .unwrap();
    gemma.use_cases.push(("chat assistance".into(), 16384));
    let md = outputs::render_recommendations(&records, &[]);
    assert!(
        md.contains("| chat assistance | `smollm2:135m` |"),
        "smollm2 wins chat by the figures: {md}"
    );
    records
}

/// The section of `md` for `use_case`.
fn section<'a>(md: &'a str, use_case: &str) -> &'a str {
    let start = md.find(&format!("## {use_case}\n")).unwrap();
    let rest = &md[start + 3..];
    &md[start..start + 3 + rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn a_failed_session_demotes_the_winner_and_names_the_figure() {
    let records = chat_contest();
    let sessions = [
        session("smollm2_135m", "smollm2:135m", "chat", Verdict::Fail),
        session("gemma3_270m", "gemma3:270m", "rag", Verdict::Pass),
    ];
    let md = outputs::render_recommendations(&records, &sessions);
    assert!(
        md.contains("| chat assistance | `gemma3:270m` |") && md.contains("| no session |"),
        "{md}"
    );
    let chat = section(&md, "chat assistance");
    assert!(
        chat.contains("**Recommended: `gemma3:270m`")
            && chat.contains("Phase 2 (chat): no session in this run for `gemma3:270m`."),
        "{chat}"
    );
    assert!(
        chat.contains("Phase 2 changed the winner: `smollm2_135m` ranks first by lowest TTFT"),
        "{chat}"
    );
    // The gate, its column, the figure and the limit, from the typed check.
    let figure =
        "RSS growth (`rss_growth_max_pct`): RSS growth 63.0% of the loaded size (n=18) ≥ limit 50%";
    assert!(chat.contains(figure), "{chat}");
    assert!(
        chat.contains("- Phase 2 of `smollm2_135m`: `smollm2_135m::agentic_chat_4k` at 4K (90 s): **FAIL** — success 100%, accuracy 40%, cache reuse 0.68, RSS growth +63.0% (bounded); failed: "),
        "{chat}"
    );
    assert!(
        chat.contains(
            "Why: ranked by the Phase 2 chat sessions (FAIL or INVALID last), then by lowest TTFT"
        ) && chat
            .contains("`smollm2_135m`: 8K, TTFT 3.43 s, 48.6 tok/s, Phase 2 FAIL (RSS growth)"),
        "{chat}"
    );
    // A use case whose winner's session passed prints its figures; basic code tasks has no
    // coding session; maximum analysis has no workload.
    let rag = section(&md, "RAG integration");
    assert!(
        rag.contains("- `gemma3_270m::agentic_rag_4k` at 4K (90 s): **PASS** — success 100%, accuracy 40%, cache reuse 0.68, RSS growth +3.1% (bounded)\n"),
        "{rag}"
    );
    assert!(
        section(&md, "basic code tasks")
            .contains("Phase 2 (coding): no session in this run for `smollm2:135m`."),
        "{md}"
    );
    // The order of sessions does not matter.
    let rev = [sessions[1].clone(), sessions[0].clone()];
    assert_eq!(outputs::render_recommendations(&records, &rev), md);
}

#[test]
fn a_winner_whose_session_failed_says_so() {
    // smollm2 is the only model of basic code tasks: still recommended, with a warning.
    let records = fixture_records();
    let sessions = [session(
        "smollm2_135m",
        "smollm2:135m",
        "coding",
        Verdict::Invalid,
    )];
    let md = outputs::render_recommendations(&records, &sessions);
    let basic = section(&md, "basic code tasks");
    assert!(
        basic.contains("**Warning: recommended although its Phase 2 coding session did not pass**"),
        "{basic}"
    );
    assert!(
        basic.contains("invalid: turn 7: the history was cut"),
        "{basic}"
    );
    assert!(
        md.contains("| basic code tasks | `smollm2:135m` |")
            && md.contains("| `integration_configs/smollm2_135m_8k.yaml` | INVALID |"),
        "{md}"
    );
    // A chat session of a model does not speak for its coding use cases.
    let chat = [session(
        "smollm2_135m",
        "smollm2:135m",
        "chat",
        Verdict::Fail,
    )];
    let md = outputs::render_recommendations(&records, &chat);
    assert!(
        !section(&md, "basic code tasks").contains("Warning"),
        "{md}"
    );
    assert!(section(&md, "chat assistance").contains("Warning"), "{md}");
}

#[test]
fn without_sessions_the_recommendations_are_unchanged() {
    let records = chat_contest();
    let md = outputs::render_recommendations(&records, &[]);
    assert!(!md.contains("Phase 2"), "{md}");
    // Sessions that pass change the ranking of nothing.
    let pass = [session(
        "smollm2_135m",
        "smollm2:135m",
        "chat",
        Verdict::Pass,
    )];
    let with = outputs::render_recommendations(&records, &pass);
    assert!(
        with.contains("| chat assistance | `smollm2:135m` |"),
        "{with}"
    );
    assert!(
        outputs::session_workload("Complex Refactoring ")
            == Some(crate::agentic::WorkloadKind::Coding)
            && outputs::session_workload("maximum analysis").is_none()
    );
}

#[test]
fn the_reports_rebuild_the_recommendations_with_the_sessions() {
    // A session that ends after the searches changes the recommendations the next time the
    // reports are rebuilt.
    let run = RunDir::at(tmp_dir("phase2"));
    let records = chat_contest();
    for r in &records {
        super::record::write_record(&run, r).unwrap();
    }
    outputs::build(&run).unwrap();
    let path = run.report_path(outputs::RECOMMENDATIONS_FILE);
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(before, outputs::render_recommendations(&records, &[]));
    let s = session("smollm2_135m", "smollm2:135m", "chat", Verdict::Fail);
    crate::rundir::save_json(&run.session_path(&s.session.test_name), &s).unwrap();
    let written = crate::report::build(&run).unwrap();
    assert!(written.contains(&path), "{written:?}");
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(after, outputs::render_recommendations(&records, &[s]));
    assert!(
        after.contains("| chat assistance | `gemma3:270m` |"),
        "{after}"
    );
    // outputs::build gives the same bytes.
    outputs::build(&run).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
    std::fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn maximum_analysis_leaves_out_contexts_beyond_the_effective_context() {
    use crate::quality::report::ModelQuality;
    // Every model with a passing configuration is assigned to maximum analysis.
    let mut records = fixture_records();
    for r in &mut records {
        if let Some(c) = r.recommended.as_ref().map(|x| x.options.num_ctx) {
            r.use_cases.push(("maximum analysis".into(), c));
        }
    }
    let md = outputs::render_recommendations(&records, &[]);
    let before = section(&md, "maximum analysis");
    let at = before.find("**Recommended: `").expect("a winner") + "**Recommended: `".len();
    let model = &before[at..at + before[at..].find('`').unwrap()];
    let winner = records
        .iter()
        .find(|r| r.model == model)
        .expect("the winner's record");
    let ctx = winner.recommended.as_ref().unwrap().options.num_ctx;
    let quality = |effective_num_ctx: u32| {
        vec![ModelQuality {
            model: model.to_string(),
            accuracy_min: 0.85,
            effective_context_tokens: Some(f64::from(effective_num_ctx) * 0.75),
            effective_num_ctx: Some(effective_num_ctx),
            probes_answered: 6,
            tests: Vec::new(),
        }]
    };
    // Verified up to half the winner's context: it is left out, and the section says why.
    let md2 = outputs::render_recommendations_with(&records, &[], &quality(ctx / 2));
    let after = section(&md2, "maximum analysis");
    assert!(
        after.contains("Not recommended here (beyond the model's effective context):"),
        "{after}"
    );
    assert!(
        after.contains(&format!(
            "- `{}` ({model}): its effective context is {} tokens",
            winner.name,
            f64::from(ctx / 2) * 0.75
        )),
        "{after}"
    );
    assert!(
        !after.contains(&format!("**Recommended: `{model}`")),
        "{after}"
    );
    // Other use cases do not weigh the effective context.
    assert_eq!(
        section(&md2, "chat assistance"),
        section(&md, "chat assistance")
    );
    // Verified at its context: the same winner, and the models the run did not sweep are named.
    let md3 = outputs::render_recommendations_with(&records, &[], &quality(ctx));
    let same = section(&md3, "maximum analysis");
    assert!(
        same.contains(&format!("**Recommended: `{model}`")),
        "{same}"
    );
    assert!(!same.contains("Not recommended here"), "{same}");
    let others = records.iter().any(|r| {
        r.model != model
            && r.recommended.is_some()
            && r.use_cases.iter().any(|(u, _)| u == "maximum analysis")
    });
    assert_eq!(
        same.contains("Effective context not measured"),
        others,
        "{same}"
    );
    // Without sweeps, the file is the one the records alone give.
    assert_eq!(outputs::render_recommendations_with(&records, &[], &[]), md);
}
