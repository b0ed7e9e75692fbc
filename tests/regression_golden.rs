//! A run compared with its baseline: the fixture cells of `tests/fixtures/report/cells/` are the
//! baseline run; the current run is the same cells with known changes — TTFT +25 % at
//! `gemma3_tools_27b::ctx_32k` (a regression), decode +15 % at `gemma3_tools_27b::ctx_64k` (an
//! improvement), a new server version for `qwen3_coder_30b` (a re-optimization trigger without
//! any regression), and at `qwen3_coder_30b::ctx_32k` TTFT +30 % on a host whose own speed fell
//! 20 % (the readings beside the trials, which every cell of both runs has): a change that moved
//! with the host, not a regression. Each current cell is judged against the baseline as the runner does
//! (`baseline::judge_against_baseline`), then the reports are built; `regression.md`,
//! `regression.json` and `bench.txt` must match `golden/regression/` byte for byte
//! (`O3_GOLDEN=overwrite` rewrites them).

use std::fs;
use std::path::{Path, PathBuf};

use o3_suite::baseline::{self, BaselineSettings};
use o3_suite::config::Config;
use o3_suite::golden::{self, Update};
use o3_suite::harness::cell_outcome;
use o3_suite::monitor::host_speed::HostSpeed;
use o3_suite::report;
use o3_suite::results::{CellResult, TrialKind, Verdict};
use o3_suite::rundir::{RunDir, load_json, save_json};
use o3_suite::runner::rejudge;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_cells() -> Vec<CellResult> {
    let dir = manifest_dir().join("tests/fixtures/report/cells");
    let mut cells: Vec<CellResult> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| rejudge(&load_json(&p).unwrap()))
        .collect();
    cells.sort_by(|a, b| a.cell.test_name.cmp(&b.cell.test_name));
    cells
}

/// The host's speed read beside the cell's trials, at `scale` times a steady 50 GFLOP/s.
fn with_host(mut c: CellResult, scale: f64) -> CellResult {
    let readings = [50.0, 50.6, 49.4, 50.3, 49.8, 50.9, 49.1, 50.2];
    let n = c.valid_measured().count() + 1;
    if n == 1 {
        return c; // a cell that measured nothing read nothing
    }
    c.host_speed = Some(HostSpeed {
        threads: c.cell.num_thread.max(1),
        readings_gflops: readings.iter().cycle().take(n).map(|g| g * scale).collect(),
        wall_s: 0.08 * n as f64,
        optimized: true,
    });
    c
}

/// The fixture cells with the known changes.
fn changed(c: CellResult) -> CellResult {
    let name = c.cell.test_name.clone();
    let slower_host = name == "qwen3_coder_30b::ctx_32k";
    let mut c = with_host(c, if slower_host { 0.8 } else { 1.0 });
    for t in c
        .trials
        .iter_mut()
        .filter(|t| t.kind == TrialKind::Measured)
    {
        match name.as_str() {
            "gemma3_tools_27b::ctx_32k" => t.ttft_s = t.ttft_s.map(|x| x * 1.25),
            "gemma3_tools_27b::ctx_64k" => t.decode_tps = t.decode_tps.map(|x| x * 1.15),
            "qwen3_coder_30b::ctx_32k" => t.ttft_s = t.ttft_s.map(|x| x * 1.3),
            _ => {}
        }
    }
    if c.cell.name == "qwen3_coder_30b" && c.metadata.server_version.is_some() {
        c.metadata.server_version = Some("0.31.0".into());
    }
    c.metadata.run_id = "current".into();
    rejudge(&c)
}

/// The baseline run and the current run (judged against it), under `tag`.
fn runs(tag: &str, warn_only: bool) -> (RunDir, RunDir, Vec<CellResult>) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("regression_golden")
        .join(tag);
    let _ = fs::remove_dir_all(&root);
    let base = RunDir::at(root.join("baseline"));
    let cur = RunDir::at(root.join("current"));
    for c in fixture_cells() {
        save_json(&base.cell_path(&c.cell.test_name), &with_host(c, 1.0)).unwrap();
    }
    fs::create_dir_all(cur.cells_dir()).unwrap();
    let settings = BaselineSettings {
        run_dir: Some(base.root().canonicalize().unwrap()),
        threshold_pct: 5.0,
        warn_only,
        noise_floor_run: None,
    };
    baseline::record(&cur, &settings).unwrap();
    let mut judged = Vec::new();
    for c in fixture_cells() {
        let mut c = changed(c);
        baseline::judge_against_baseline(&cur, &mut c);
        save_json(&cur.cell_path(&c.cell.test_name), &c).unwrap();
        judged.push(c);
    }
    (base, cur, judged)
}

fn find<'a>(cells: &'a [CellResult], name: &str) -> &'a CellResult {
    cells.iter().find(|c| c.cell.test_name == name).unwrap()
}

#[test]
fn regression_report_matches_goldens() {
    let update = Update::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (_, cur, _) = runs("goldens", false);
    let paths = report::build(&cur).unwrap();
    let golden_dir = manifest_dir().join("golden/regression");
    let wip_dir = manifest_dir().join("golden/wip/regression");
    let mut failures = Vec::new();
    for name in ["regression.md", "regression.json", "bench.txt"] {
        let path = cur.report_path(name);
        assert!(paths.contains(&path), "{name} not written: {paths:?}");
        let actual = fs::read_to_string(&path).unwrap();
        if let Err(e) = golden::check(name, &actual, &golden_dir, &wip_dir, update) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn a_regression_fails_the_cell_with_figure_baseline_and_change() {
    let (_, _, cells) = runs("verdicts", false);
    let r = find(&cells, "gemma3_tools_27b::ctx_32k");
    assert_eq!(r.verdict(), Verdict::Regressed, "{:?}", r.judgement);
    assert_eq!(r.judgement.regressions.len(), 1);
    let ch = &r.judgement.regressions[0];
    assert_eq!(ch.figure, baseline::Figure::Ttft);
    assert!((ch.change - 0.25).abs() < 1e-9, "{ch:?}");
    let Err(err) = cell_outcome(&Config::default(), r) else {
        panic!("a REGRESSED cell's test passed");
    };
    let msg = err.message().unwrap();
    assert!(
        msg.starts_with("REGRESSED") && msg.contains("TTFT") && msg.contains("+25.0%"),
        "{msg}"
    );
    assert!(msg.contains("baseline's 3.11 s"), "{msg}");
    // The improvement and the unchanged cells keep their verdicts; FAIL stays FAIL.
    assert_eq!(
        find(&cells, "gemma3_tools_27b::ctx_64k").verdict(),
        Verdict::Pass
    );
    assert_eq!(
        find(&cells, "gemma3_tools_27b::ctx_128k").verdict(),
        Verdict::Fail
    );
    assert_eq!(
        find(&cells, "qwen3_coder_30b::ctx_32k").verdict(),
        Verdict::Marginal
    );
}

#[test]
fn a_change_the_host_accounts_for_is_no_regression() {
    let (base, cur, cells) = runs("with_host", false);
    let r = find(&cells, "qwen3_coder_30b::ctx_32k");
    assert!(r.judgement.regressions.is_empty(), "{:?}", r.judgement);
    assert_ne!(r.verdict(), Verdict::Regressed);
    let then = find(
        &o3_suite::rundir::RunDir::at(base.root())
            .read_cells_lenient()
            .unwrap()
            .items,
        "qwen3_coder_30b::ctx_32k",
    )
    .clone();
    let changes = baseline::compare_cells(&then, r, &baseline::Thresholds::flat(0.05));
    let host = changes.host.as_ref().unwrap();
    assert!(
        host.significant && (host.change + 0.2).abs() < 1e-9,
        "{host:?}"
    );
    let ttft = ttft_of_changes(&changes);
    assert_eq!(ttft.outcome, baseline::Outcome::WithHost, "{ttft:?}");
    assert!((ttft.change - 0.3).abs() < 1e-9, "{ttft:?}");
    // The same TTFT on a steady host is a regression.
    let mut steady = r.clone();
    steady.host_speed = then.host_speed.clone();
    let ttft = ttft_of_changes(&baseline::compare_cells(
        &then,
        &steady,
        &baseline::Thresholds::flat(0.05),
    ));
    assert_eq!(ttft.outcome, baseline::Outcome::Regressed, "{ttft:?}");
    // A debug build's readings are not compared with a release build's.
    steady.host_speed.as_mut().unwrap().optimized = false;
    assert!(
        baseline::compare_cells(&then, &steady, &baseline::Thresholds::flat(0.05))
            .host
            .is_none()
    );
    report::build(&cur).unwrap();
    let md = fs::read_to_string(cur.report_path("regression.md")).unwrap();
    assert!(
        md.contains("Moved with the host: `qwen3_coder_30b::ctx_32k` TTFT."),
        "{md}"
    );
}

#[test]
fn warn_only_reports_the_regression_and_passes() {
    let (_, cur, cells) = runs("warn_only", true);
    let r = find(&cells, "gemma3_tools_27b::ctx_32k");
    assert_eq!(r.verdict(), Verdict::Pass);
    assert_eq!(r.judgement.regressions.len(), 1);
    assert!(cell_outcome(&Config::default(), r).is_ok());
    assert!(
        r.judgement
            .reasons()
            .iter()
            .any(|l| l.starts_with("warning: TTFT REGRESSED")),
        "{:?}",
        r.judgement.reasons()
    );
    // The report still lists it as a trigger.
    report::build(&cur).unwrap();
    let md = fs::read_to_string(cur.report_path("regression.md")).unwrap();
    assert!(md.contains("- `gemma3_tools_27b`"), "{md}");
}

#[test]
fn a_run_without_baseline_writes_no_regression_report() {
    let (base, _, _) = runs("no_baseline", false);
    let paths = report::build(&base).unwrap();
    assert!(paths.contains(&base.report_path("bench.txt")));
    assert!(!base.report_path("regression.md").exists());
}

/// The fixture cells with the measured trials' TTFT of `name` times `factor`, as run `run_id`.
fn ttft_times(cells: &[CellResult], name: &str, factor: f64, run_id: &str) -> Vec<CellResult> {
    cells
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.cell.test_name == name {
                for t in c
                    .trials
                    .iter_mut()
                    .filter(|t| t.kind == TrialKind::Measured)
                {
                    t.ttft_s = t.ttft_s.map(|x| x * factor);
                }
            }
            c.metadata.run_id = run_id.into();
            rejudge(&c)
        })
        .collect()
}

#[test]
fn a_noise_floor_learned_from_an_aa_run_keeps_the_machine_s_own_change_from_a_verdict() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("regression_golden")
        .join("noise_floor");
    let _ = fs::remove_dir_all(&root);
    let run = |id: &str, cells: &[CellResult], settings: Option<BaselineSettings>| {
        let r = RunDir::at(root.join(id));
        fs::create_dir_all(r.cells_dir()).unwrap();
        if let Some(s) = settings {
            baseline::record(&r, &s).unwrap();
        }
        for c in cells {
            save_json(&r.cell_path(&c.cell.test_name), c).unwrap();
        }
        r
    };
    let against = |r: &RunDir, floor: Option<&RunDir>| BaselineSettings {
        run_dir: Some(r.root().canonicalize().unwrap()),
        threshold_pct: 5.0,
        warn_only: false,
        noise_floor_run: floor.map(|f| f.root().canonicalize().unwrap()),
    };
    let w_cells: Vec<CellResult> = fixture_cells()
        .into_iter()
        .map(|c| with_host(c, 1.0))
        .collect();
    let w = run("w", &w_cells, None);
    // The A/A run: nothing changed, but the machine put +10 % on one cell's TTFT and −8 % on
    // another's.
    let a_cells = ttft_times(&w_cells, "gemma3_tools_27b::ctx_32k", 1.10, "a");
    let a_cells = ttft_times(&a_cells, "qwen3_coder_30b::ctx_32k", 0.92, "a");
    // ... and +30 % on a third's while the host's own speed fell 20 %: the host accounts for
    // that one, so the floor leaves it out.
    let slow = "gemma3_tools_27b::ctx_128k";
    let a_cells: Vec<CellResult> = ttft_times(&a_cells, slow, 1.30, "a")
        .into_iter()
        .map(|c| {
            if c.cell.test_name == slow {
                with_host(c, 0.8)
            } else {
                c
            }
        })
        .collect();
    let a = run("a", &a_cells, Some(against(&w, None)));
    // A run that names no baseline is no A/A run.
    let e = baseline::NoiseFloor::learn(&w).unwrap_err();
    assert!(e.to_string().contains("names no baseline"), "{e}");
    // Four cells compared, the host's one left out of TTFT: log changes ln 1.10, ln 0.92, 0:
    // RMS 7.31 %, and t(0.975, 3) = 3.182 times it is a floor of e^0.2327 − 1 = 26.2 %.
    let floor = baseline::NoiseFloor::learn(&a).unwrap();
    assert_eq!(
        (floor.run_id.as_str(), floor.baseline_run_id.as_str()),
        ("a", "w")
    );
    assert_eq!(
        floor.with_host,
        [baseline::LeftOut {
            test_name: slow.into(),
            figure: baseline::Figure::Ttft
        }]
    );
    // The host's own figure is no change of the server's and stays in: four cells' readings.
    let host = floor.figure(baseline::Figure::HostSpeed).unwrap();
    assert_eq!(host.n, 4, "{host:?}");
    assert!((host.largest + 0.2).abs() < 1e-9, "{host:?}");
    let ttft = floor.figure(baseline::Figure::Ttft).unwrap();
    assert_eq!(ttft.n, 3, "{ttft:?}");
    assert!((ttft.largest - 0.10).abs() < 1e-9, "{ttft:?}");
    assert!((ttft.floor - 0.262).abs() < 0.001, "{ttft:?}");
    // Decode did not move: its floor is below the threshold, which stays.
    assert!(floor.of(baseline::Figure::DecodeTps).unwrap() < 1e-9);
    // Then TTFT +15 % on a cell: REGRESSED against the 5 % threshold, no change against the
    // floor this machine showed.
    let c_cells = ttft_times(&a_cells, "gemma3_tools_27b::ctx_64k", 1.15, "c");
    let c = run("c", &c_cells, Some(against(&a, Some(&a))));
    let rec = baseline::read_record(&c).unwrap().unwrap();
    assert_eq!(rec.noise_floor.as_ref(), Some(&floor));
    let then = find(&a_cells, "gemma3_tools_27b::ctx_64k");
    let now = find(&c_cells, "gemma3_tools_27b::ctx_64k");
    let flat = ttft_of_changes(&baseline::compare_cells(
        then,
        now,
        &baseline::Thresholds::flat(0.05),
    ));
    assert_eq!(flat.outcome, baseline::Outcome::Regressed, "{flat:?}");
    let with_floor = ttft_of_changes(&baseline::compare_cells(then, now, &rec.thresholds()));
    assert_eq!(
        with_floor.outcome,
        baseline::Outcome::NoChange,
        "{with_floor:?}"
    );
    assert!((with_floor.threshold - ttft.floor).abs() < 1e-12);
    let mut judged = now.clone();
    baseline::judge_against_baseline(&c, &mut judged);
    assert!(
        judged.judgement.regressions.is_empty(),
        "{:?}",
        judged.judgement
    );
    report::build(&c).unwrap();
    let md = fs::read_to_string(c.report_path("regression.md")).unwrap();
    assert!(md.contains("## The machine's noise floor"), "{md}");
    assert!(
        md.contains(
            "Left out, as the host's own speed accounted for them in the A/A run: \
             `gemma3_tools_27b::ctx_128k` TTFT."
        ),
        "{md}"
    );
    assert!(
        md.contains("| TTFT | 3 | +10.0% | ±26.2% | ±26.2% |"),
        "{md}"
    );
    assert!(
        md.contains("| decode tok/s | 4 | +0.0% | ±0.0% | ±5.0% |"),
        "{md}"
    );
}

fn ttft_of_changes(c: &baseline::CellChanges) -> baseline::FigureChange {
    c.figures
        .iter()
        .find(|f| f.figure == baseline::Figure::Ttft)
        .cloned()
        .unwrap()
}
