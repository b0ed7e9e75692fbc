//! Unit tests of the report module.

use std::fs;

use rstest::rstest;

use super::*;
use crate::gates::{self, CellFacts};
use crate::results::{
    CellSpec, CellSummaries, Gates, HardwareSummary, MemoryFigures, RunMetadata, TrialKind,
    TrialRecord,
};
use crate::rundir::save_json;
use crate::stats::summarize;
use crate::text::{bytes_delta, ctx_label, grouped, thousands};

const GIB: i64 = 1024 * 1024 * 1024;
const MIB: i64 = 1024 * 1024;

fn cell(model: &str, name: &str, k: u32, verdict: Verdict) -> CellResult {
    let test_name = format!("{name}::ctx_{k}k");
    let ran = verdict != Verdict::Skipped;
    let trials: Vec<TrialRecord> = if ran {
        (0..4)
            .map(|i| TrialRecord {
                index: i,
                kind: if i == 0 {
                    TrialKind::Warmup
                } else {
                    TrialKind::Measured
                },
                valid: verdict != Verdict::Invalid,
                ..Default::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    let summaries = if ran && verdict != Verdict::Invalid {
        let ttft: &[f64] = if verdict == Verdict::Fail {
            &[40.0, 41.0, 42.0]
        } else {
            &[2.0, 2.2, 2.4]
        };
        CellSummaries {
            ttft_s: summarize(ttft),
            decode_tps: summarize(&[10.0, 10.5, 11.0]),
            ..Default::default()
        }
    } else {
        CellSummaries::default()
    };
    let hardware = if ran {
        HardwareSummary {
            samples: 10,
            rss_delta_bytes: 3 * GIB,
            peak: MemoryFigures {
                rss_bytes: 3 * GIB as u64,
                anon_bytes: Some(2 * GIB as u64),
                file_bytes: Some(GIB as u64),
                swap_bytes: None,
            },
            ..Default::default()
        }
    } else {
        HardwareSummary::default()
    };
    let spec = CellSpec {
        test_name: test_name.clone(),
        name: name.to_string(),
        model: model.to_string(),
        category: "tools".to_string(),
        num_ctx: k * 1024,
        fill_tokens: k * 1000,
        num_batch: 512,
        num_thread: 8,
        num_predict: 128,
        gates: Gates {
            ttft_max_s: 30.0,
            tok_s_min: 1.0,
            stability_min: 0.5,
            ram_max_pct: 80.0,
        },
        use_case: "code review".to_string(),
        optional: false,
        optimize: true,
        source: "matrix.csv:2".to_string(),
        relative_gates: None,
        probe: None,
    };
    let stability = StabilityBreakdown {
        score: 0.9,
        success_rate: 1.0,
        ..Default::default()
    };
    // The judgement comes from the judge itself, so wording changes show here too.
    let judgement = if ran {
        let valid = trials
            .iter()
            .filter(|t| t.kind == TrialKind::Measured && t.valid)
            .count();
        let facts = CellFacts {
            valid,
            attempted: 3,
            ..CellFacts::default()
        };
        gates::judge(&spec, &summaries, &stability, &hardware, &facts)
    } else {
        gates::Judgement::skipped("server unreachable".to_string())
    };
    assert_eq!(judgement.verdict, verdict, "{judgement:?}");
    CellResult {
        format_version: crate::results::FORMAT_VERSION,
        cell: spec,
        judgement,
        load_s: ran.then_some(1.5),
        load_wall_s: None,
        trials,
        summaries,
        stop_reason: if ran {
            StopReason::MaxTrials
        } else {
            StopReason::NotStarted
        },
        hardware,
        stability,
        metadata: RunMetadata::default(),
        fidelity: Vec::new(),
        wall_s: 1.0,
        prediction: None,
        probes: Vec::new(),
        host_speed: None,
    }
}

fn temp_run(tag: &str) -> RunDir {
    let dir = std::env::temp_dir().join(format!("o3-report-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    RunDir::at(dir)
}

fn save_cell(run: &RunDir, c: &CellResult) {
    save_json(&run.cell_path(&c.cell.test_name), c).unwrap();
}

#[test]
fn rows_are_ordered_by_model_then_num_ctx_not_lexicographically() {
    let cells = vec![
        cell("b-model", "b", 32, Verdict::Pass),
        cell("a-model", "a", 128, Verdict::Pass),
        cell("a-model", "a", 16, Verdict::Pass),
        cell("a-model", "a", 64, Verdict::Pass),
    ];
    let report = aggregate(&cells);
    let names: Vec<&str> = report
        .rows
        .iter()
        .map(|r| r.cell.test_name.as_str())
        .collect();
    assert_eq!(
        names,
        ["a::ctx_16k", "a::ctx_64k", "a::ctx_128k", "b::ctx_32k"]
    );
    // Input order does not matter.
    let mut reversed = cells.clone();
    reversed.reverse();
    assert_eq!(aggregate(&reversed), report);
}

#[rstest]
#[case(-600 * MIB, "-600 MB")]
#[case(600 * MIB, "+600 MB")]
#[case(5 * GIB / 2, "+2.50 GB")]
#[case(-3 * GIB, "-3.00 GB")]
#[case(GIB, "+1.00 GB")]
#[case(0, "0 MB")]
#[case(-1000, "0 MB")]
fn ram_delta_formatting(#[case] delta: i64, #[case] expected: &str) {
    assert_eq!(bytes_delta(delta), expected);
}

#[rstest]
#[case(65536, "64K")]
#[case(131072, "128K")]
#[case(2048, "2K")]
#[case(3000, "3,000")]
#[case(512, "512")]
fn context_labels(#[case] num_ctx: u32, #[case] expected: &str) {
    assert_eq!(ctx_label(num_ctx), expected);
}

#[rstest]
#[case(0, "0")]
#[case(999, "999")]
#[case(1000, "1,000")]
#[case(1234567, "1,234,567")]
fn thousands_separators(#[case] n: u64, #[case] expected: &str) {
    assert_eq!(thousands(n), expected);
}

#[rstest]
#[case(10720.10056, 1, "10,720.1")]
#[case(8.44, 1, "8.4")]
#[case(-1234.5, 2, "-1,234.50")]
#[case(-0.001, 1, "0.0")]
#[case(999.96, 1, "1,000.0")]
fn grouped_numbers(#[case] x: f64, #[case] decimals: usize, #[case] expected: &str) {
    assert_eq!(grouped(x, decimals), expected);
}

#[rstest]
#[case(Verdict::Pass, "complex refactoring", &[], "✅ complex refactoring")]
#[case(Verdict::Marginal, "complex refactoring", &[], "⚠️ complex refactoring (marginal)")]
#[case(Verdict::Fail, "complex refactoring", &[Gate::Ttft], "❌ complex refactoring (fails TTFT)")]
#[case(Verdict::Fail, "chat", &[Gate::Ttft, Gate::TokS, Gate::Stability], "❌ chat (fails TTFT, tok/s, stability)")]
#[case(Verdict::Fail, "chat", &[Gate::Ram], "❌ chat (fails RAM)")]
#[case(Verdict::Fail, "chat", &[], "❌ chat (fails)")]
#[case(Verdict::Invalid, "chat", &[], "— (invalid)")]
#[case(Verdict::Skipped, "chat", &[], "— (not run)")]
#[case(Verdict::Pass, "", &[], "✅ pass")]
fn use_case_fit_per_verdict(
    #[case] verdict: Verdict,
    #[case] use_case: &str,
    #[case] failed: &[Gate],
    #[case] expected: &str,
) {
    assert_eq!(use_case_fit(verdict, use_case, failed), expected);
}

#[test]
fn missing_values_are_dashes_in_markdown_and_empty_in_csv() {
    let report = aggregate(&[cell("m", "m", 64, Verdict::Skipped)]);
    let row = &report.rows[0];
    assert_eq!(
        row.ram_delta_bytes, None,
        "an unsampled cell has no RAM delta"
    );
    assert_eq!(
        row.stability, None,
        "a cell that never ran has no stability"
    );

    let md = MarkdownReport.text(&report);
    let line = md
        .lines()
        .find(|l| l.starts_with("| m | 64K"))
        .expect("summary row");
    assert_eq!(
        line,
        "| m | 64K (fill 64,000) | – | – | – | – | — (not run) |"
    );

    let csv = CsvReport.text(&report);
    let mut rdr = ::csv::Reader::from_reader(csv.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let rec = rdr.records().next().unwrap().unwrap();
    for column in [
        "ttft_mean_s",
        "ttft_ci_low_s",
        "decode_tps_mean",
        "ram_delta_bytes",
        "peak_anon_bytes",
        "stability",
        "load_s",
    ] {
        let i = headers.iter().position(|h| h == column).unwrap();
        assert_eq!(&rec[i], "", "{column} should be empty");
    }
    let i = headers.iter().position(|h| h == "verdict").unwrap();
    assert_eq!(&rec[i], "SKIPPED");

    let json: serde_json::Value = serde_json::from_str(&JsonReport.text(&report)).unwrap();
    assert!(json["rows"][0]["ttft_s"].is_null());
    assert!(json["rows"][0]["ram_delta_bytes"].is_null());
}

#[test]
fn csv_header_is_stable() {
    let csv = CsvReport.text(&aggregate(&[]));
    assert_eq!(
        csv,
        "test_name,model,num_ctx,fill_tokens,num_batch,num_thread,verdict,use_case,\
         ttft_mean_s,ttft_ci_low_s,ttft_ci_high_s,decode_tps_mean,decode_tps_ci_low,\
         decode_tps_ci_high,decode_tps_server_mean,prefill_tps_server_mean,ram_delta_bytes,\
         peak_anon_bytes,peak_file_bytes,stability,n_valid,n_attempted,stop_reason,load_s,\
         target,accuracy,accuracy_from,effective_context_tokens\n"
    );
}

#[test]
fn csv_rows_have_raw_numbers() {
    let report = aggregate(&[cell("m", "m", 64, Verdict::Pass)]);
    let csv = CsvReport.text(&report);
    let mut rdr = ::csv::Reader::from_reader(csv.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let rec = rdr.records().next().unwrap().unwrap();
    let get = |c: &str| rec[headers.iter().position(|h| h == c).unwrap()].to_string();
    assert_eq!(get("ram_delta_bytes"), (3 * GIB).to_string());
    // Raw numbers round-trip exactly.
    let mean = report.rows[0].ttft_s.as_ref().unwrap().mean;
    assert_eq!(get("ttft_mean_s").parse::<f64>().unwrap(), mean);
    assert!((mean - 2.2).abs() < 1e-12);
    assert_eq!(get("num_ctx"), "65536");
    assert_eq!(get("n_valid"), "3");
    assert_eq!(get("n_attempted"), "3");
    assert_eq!(get("stop_reason"), "max_trials");
}

#[test]
fn verdict_counts_and_warmups_are_counted_right() {
    let report = aggregate(&[
        cell("m", "m", 8, Verdict::Pass),
        cell("m", "m", 16, Verdict::Fail),
        cell("m", "m", 32, Verdict::Invalid),
        cell("m", "m", 64, Verdict::Skipped),
    ]);
    let c = report.verdict_counts;
    assert_eq!(
        (c.total, c.pass, c.marginal, c.fail, c.invalid, c.skipped),
        (4, 1, 0, 1, 1, 1)
    );
    let invalid = &report.rows[2];
    assert_eq!(
        (
            invalid.judgement.valid_trials,
            invalid.judgement.attempted_trials
        ),
        (0, 3)
    );
    assert_eq!(report.rows[1].failed_gates, [Gate::Ttft]);
    let json: serde_json::Value = serde_json::from_str(&JsonReport.text(&report)).unwrap();
    assert_eq!(json["rows"][1]["failed_gates"], serde_json::json!(["ttft"]));
    assert_eq!(json["rows"][1]["verdict"], "FAIL");
    let md = MarkdownReport.text(&report);
    assert!(md.contains("4 cells: 1 PASS, 0 MARGINAL, 1 FAIL, 1 INVALID, 1 SKIPPED."));
    assert!(md.contains("- `m::ctx_64k` — server unreachable"));
}

#[test]
fn build_on_an_empty_run_dir_says_no_cells() {
    let run = temp_run("empty");
    let paths = build(&run).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "performance_matrix.json",
            "performance_matrix.csv",
            "performance_matrix.md",
            "report.html",
            "bench.txt"
        ]
    );
    let md = fs::read_to_string(&paths[2]).unwrap();
    assert!(md.contains("No cells"), "{md}");
    let html = fs::read_to_string(&paths[3]).unwrap();
    assert!(
        html.contains("No cells") && !html.contains("<figure"),
        "{html}"
    );
    let csv = fs::read_to_string(&paths[1]).unwrap();
    assert_eq!(csv.lines().count(), 1, "header only: {csv}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&paths[0]).unwrap()).unwrap();
    assert_eq!(json["generated_from_cells"], 0);
    assert_eq!(json["rows"].as_array().unwrap().len(), 0);
    fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn build_writes_atomically_and_leaves_no_temporary_files() {
    let run = temp_run("atomic");
    save_cell(&run, &cell("m", "m", 64, Verdict::Pass));
    build(&run).unwrap();
    // A second build replaces the files in place.
    save_cell(&run, &cell("m", "m", 128, Verdict::Fail));
    let paths = build(&run).unwrap();
    let mut names: Vec<String> = fs::read_dir(run.reports_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bench.txt",
            "performance_matrix.csv",
            "performance_matrix.json",
            "performance_matrix.md",
            "report.html"
        ]
    );
    let csv = fs::read_to_string(&paths[1]).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "both cells after the rebuild: {csv}"
    );
    fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn build_reports_a_missing_run_dir_with_its_path() {
    let missing = std::env::temp_dir().join(format!("o3-report-nope-{}", std::process::id()));
    let err = build(&RunDir::at(&missing)).unwrap_err();
    assert!(matches!(err, ReportError::NoRunDir { .. }));
    assert!(err.to_string().contains(&missing.display().to_string()));
}

/// One foreign, one old-format cell file and one broken optimizer record do not stop the
/// reports: the readable cells are reported, and every report names the files left out.
#[test]
fn build_skips_unreadable_files_and_names_them() {
    let run = temp_run("broken");
    save_cell(&run, &cell("m", "m", 64, Verdict::Pass));
    save_cell(&run, &cell("m", "m", 128, Verdict::Fail));
    fs::write(run.cells_dir().join("bad.json"), "{not json").unwrap();
    fs::write(
        run.cells_dir().join("old.json"),
        r#"{"format_version": 0, "name": "m", "ttft": 1.0}"#,
    )
    .unwrap();
    fs::create_dir_all(run.records_dir()).unwrap();
    fs::write(run.records_dir().join("m.json"), "[1, 2]").unwrap();
    let paths = build(&run).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&paths[0]).unwrap()).unwrap();
    assert_eq!(json["generated_from_cells"], 2);
    let skipped: Vec<&str> = json["files_not_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        [
            "cells/bad.json",
            "cells/old.json",
            "comparative_analysis/optimize/m.json"
        ]
    );
    assert!(
        json["files_not_read"][1]["why"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{json}"
    );
    let md = fs::read_to_string(&paths[2]).unwrap();
    assert!(md.contains("2 cells: 1 PASS"), "{md}");
    assert!(md.contains("**3 file(s) not read**"), "{md}");
    assert!(
        md.contains("- files not read: `cells/bad.json`: key must be a string"),
        "{md}"
    );
    assert!(
        md.contains("- files not read: `comparative_analysis/optimize/m.json`: invalid type"),
        "{md}"
    );
    let csv = fs::read_to_string(&paths[1]).unwrap();
    assert_eq!(csv.lines().count(), 3, "both readable cells: {csv}");
    fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn a_report_without_unreadable_files_does_not_mention_them() {
    let run = temp_run("clean");
    save_cell(&run, &cell("m", "m", 64, Verdict::Pass));
    let paths = build(&run).unwrap();
    let json = fs::read_to_string(&paths[0]).unwrap();
    assert!(!json.contains("files_not_read"), "{json}");
    assert!(!fs::read_to_string(&paths[2]).unwrap().contains("not read"));
    fs::remove_dir_all(run.root()).unwrap();
}

#[test]
fn targets_are_marked_and_probes_listed_apart() {
    let mut probe = cell("m", "m", 16, Verdict::Pass);
    probe.cell.test_name = "m::opt::ctx_16k_t2_b512".into();
    let matrix = cell("m", "m", 64, Verdict::Pass);
    let mut report = aggregate(&[probe, matrix]);
    super::mark_targets(&mut report, &["m::opt::ctx_16k_t2_b512".to_string()]);
    let targets: Vec<(&str, bool)> = report
        .rows
        .iter()
        .map(|r| (r.cell.test_name.as_str(), r.target))
        .collect();
    assert_eq!(
        targets,
        [("m::opt::ctx_16k_t2_b512", true), ("m::ctx_64k", false)]
    );
    let md = MarkdownReport.text(&report);
    let summary = &md[md.find("## Summary").unwrap()..md.find("## Optimizer probes").unwrap()];
    assert!(!summary.contains("| [TARGET]"), "{summary}");
    assert!(summary.contains("`[TARGET]` marks"), "{summary}");
    let probes = &md[md.find("## Optimizer probes").unwrap()..md.find("## Details").unwrap()];
    assert!(
        probes.contains("| [TARGET] m · 8 thread(s), batch 512 | 16K"),
        "{probes}"
    );
    let csv = CsvReport.text(&report);
    assert!(csv.lines().nth(1).unwrap().ends_with(",true,,,"), "{csv}");
    assert!(csv.lines().nth(2).unwrap().ends_with(",false,,,"), "{csv}");
}

#[test]
fn quality_sweeps_add_accuracy_and_effective_context_columns() {
    use crate::quality::report::{CellProbeRow, ModelQuality, QualityReport, QualityRow};
    // Cells with retrieval probes: m at 8K (2 of 3 right) and third at 4K (3 of 3).
    let probed = |model: &str, k: u32, right: &[bool]| {
        let mut c = cell(model, model, k, Verdict::Pass);
        let depths = [0.1, 0.5, 0.9];
        c.cell.probe = Some(crate::quality::cell::CellProbe {
            kind: crate::quality::ProbeKind::Needle,
            depths: depths.to_vec(),
        });
        c.probes = right
            .iter()
            .zip(depths)
            .enumerate()
            .map(|(i, (&ok, depth))| crate::quality::ProbeRecord {
                index: i as u32,
                depth,
                fill_before: 0.0,
                expected: "1234567".into(),
                answer: if ok { "1234567" } else { "no" }.into(),
                correct: Some(ok),
                failure: None,
                trial: TrialRecord::default(),
            })
            .collect();
        c
    };
    let cells = [
        cell("m", "m", 4, Verdict::Pass),
        probed("m", 8, &[true, false, true]),
        cell("other", "other", 4, Verdict::Pass),
        probed("third", 4, &[true, true, true]),
    ];
    let mut report = aggregate(&cells);
    let before = MarkdownReport.text(&report);
    assert!(!before.contains("Effective ctx"), "no sweeps, no columns");
    let q = QualityReport {
        format_version: 1,
        models: vec![ModelQuality {
            model: "m".into(),
            accuracy_min: 0.85,
            effective_context_tokens: Some(3100.0),
            effective_num_ctx: Some(4096),
            probes_answered: 12,
            tests: vec![QualityRow {
                test_name: "m::quality_4k".into(),
                num_ctx: 4096,
                filled_tokens: Some(3100.0),
                probe: "needle".into(),
                verdict: Verdict::Pass,
                correct: 5,
                answered: 6,
                accuracy: Some(5.0 / 6.0),
                accuracy_ci: None,
                depths: Vec::new(),
                ttft_s: None,
                reasons: Vec::new(),
            }],
        }],
        rag: Vec::new(),
        cells: cells.iter().filter_map(CellProbeRow::of).collect(),
    };
    assert_eq!(q.cells.len(), 2, "the probed cells only");
    attach_quality(&mut report, &q);
    let md = MarkdownReport.text(&report);
    assert!(
        md.contains("| Use Case Fit | Accuracy | Effective ctx |"),
        "{md}"
    );
    let line = |start: &str| {
        md.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("{start} in {md}"))
            .to_string()
    };
    assert!(
        line("| m | 4K").ends_with("| 5/6 (83%) | 3100 tokens (4K) |"),
        "{md}"
    );
    // At 8K the model was not swept: the cell's own probes give the accuracy, and 8K is
    // beyond the 4K its accuracy was verified at.
    assert!(
        line("| m | 8K").ends_with("| 2/3 (67%) (probe) | 3100 tokens (4K) ⚠️ beyond |"),
        "{md}"
    );
    assert!(line("| other | 4K").ends_with("| – | – |"), "{md}");
    assert!(
        line("| third | 4K").ends_with("| 3/3 (100%) (probe) | not swept |"),
        "{md}"
    );
    let csv = CsvReport.text(&report);
    let csv_line = |n: usize| csv.lines().nth(n).unwrap().to_string();
    assert!(
        csv_line(1).ends_with(",0.8333333333333334,sweep,3100"),
        "{csv}"
    );
    assert!(
        csv_line(2).ends_with(",0.6666666666666666,cell_probe,3100"),
        "{csv}"
    );
    assert!(csv_line(3).ends_with(",false,,,"), "{csv}");
    assert!(csv_line(4).ends_with(",1,cell_probe,"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&JsonReport.text(&report)).unwrap();
    assert_eq!(
        json["rows"][0]["quality"]["sweep"]["effective_num_ctx"],
        4096
    );
    assert_eq!(json["rows"][1]["quality"]["accuracy"]["from"], "cell_probe");
    assert!(json["rows"][2]["quality"].is_null());
    assert!(json["rows"][3]["quality"]["sweep"].is_null());
}
