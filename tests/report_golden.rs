//! Golden files of the reports: fixed cell results in `tests/fixtures/report/cells/` are built
//! into reports, which must match `golden/performance_matrix.{md,csv,json}` and
//! `golden/report.html` byte for byte.
//!
//! The fixtures' judgements are made by the judge: each fixture is judged again from its trials,
//! hardware, problems and notes (`runner::rejudge`), and must already hold that judgement, so a
//! change of wording in `gates.rs` changes the fixtures and the goldens together
//! (`O3_GOLDEN=overwrite` rewrites both).
//!
//! Update policy (as trybuild's): `O3_GOLDEN=overwrite` rewrites the goldens in place and passes.
//! Unset, a missing golden is written to `golden/wip/<name>` (gitignored) and the test fails; a
//! mismatch fails with a line diff and the new output in `golden/wip/<name>`. Any other value of
//! `O3_GOLDEN` is an error.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use o3_suite::golden::{self, Update, VAR};
use o3_suite::report;
use o3_suite::results::CellResult;
use o3_suite::rundir::{RunDir, load_json, save_json};
use o3_suite::runner::rejudge;
use rstest::rstest;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/report/cells")
}

/// The fixture cells, each judged again by the judge.
fn fixture_cells() -> Vec<(PathBuf, CellResult, CellResult)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let stored: CellResult = load_json(&path).unwrap_or_else(|e| panic!("{e}"));
            let judged = rejudge(&stored);
            out.push((path, stored, judged));
        }
    }
    assert!(
        out.len() >= 6,
        "expected the fixture cells in {}",
        fixtures_dir().display()
    );
    out
}

/// Writes the judged fixture cells into a fresh run directory and returns it.
fn fixture_run(tag: &str) -> RunDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report_golden")
        .join(tag);
    let _ = fs::remove_dir_all(&root);
    let run = RunDir::at(root);
    for (_, _, judged) in fixture_cells() {
        save_json(&run.cell_path(&judged.cell.test_name), &judged).unwrap();
    }
    run
}

#[test]
fn fixtures_hold_the_judgement_the_judge_gives() {
    let update = Update::from_env().unwrap_or_else(|e| panic!("{e}"));
    let mut stale = Vec::new();
    for (path, stored, judged) in fixture_cells() {
        if stored == judged {
            continue;
        }
        if update == Update::Overwrite {
            save_json(&path, &judged).unwrap();
        } else {
            stale.push(format!(
                "{}: stored {:?}, the judge gives {:?}",
                path.display(),
                stored.judgement,
                judged.judgement
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "fixtures out of date (rewrite them with {VAR}=overwrite):\n{}",
        stale.join("\n")
    );
}

#[test]
fn reports_match_goldens() {
    let update = Update::from_env().unwrap_or_else(|e| panic!("{e}"));
    let run = fixture_run("goldens");
    let paths = report::build(&run).expect("build the reports of the fixture run");
    let golden_dir = manifest_dir().join("golden");
    let wip_dir = golden_dir.join("wip");
    let mut names = Vec::new();
    let mut failures = Vec::new();
    for path in &paths {
        assert_eq!(path.parent().unwrap(), run.reports_dir());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let actual = fs::read_to_string(path).unwrap();
        if let Err(e) = golden::check(&name, &actual, &golden_dir, &wip_dir, update) {
            failures.push(e);
        }
        names.push(name);
    }
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
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn reports_are_deterministic_and_order_independent() {
    // Two builds of the same cells give the same bytes, and aggregating in any order gives the
    // same report.
    let run = fixture_run("determinism");
    let first: Vec<String> = report::build(&run)
        .unwrap()
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    let second: Vec<String> = report::build(&run)
        .unwrap()
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(first, second);
    let mut cells = run.read_cells().unwrap();
    let sorted = report::aggregate(&cells);
    cells.reverse();
    assert_eq!(report::aggregate(&cells), sorted);
}

#[test]
fn fixture_rows_follow_table_order() {
    let run = fixture_run("order");
    let cells = run.read_cells().unwrap();
    let names: Vec<String> = report::aggregate(&cells)
        .rows
        .into_iter()
        .map(|r| r.cell.test_name)
        .collect();
    assert_eq!(
        names,
        [
            "gemma3_tools_27b::ctx_32k",
            "gemma3_tools_27b::ctx_64k",
            "gemma3_tools_27b::ctx_128k",
            "qwen3_coder_30b::ctx_32k",
            "qwen3_coder_30b::ctx_64k",
            "qwen3_coder_30b::ctx_256k",
        ]
    );
}

#[rstest]
#[case(None, Ok(Update::Wip))]
#[case(Some("overwrite"), Ok(Update::Overwrite))]
#[case(Some("wip"), Err(()))]
#[case(Some(""), Err(()))]
#[case(Some("OVERWRITE"), Err(()))]
fn update_policy_is_parsed_strictly(
    #[case] value: Option<&str>,
    #[case] expected: Result<Update, ()>,
) {
    let parsed = Update::parse(value.map(OsString::from));
    match expected {
        Ok(u) => assert_eq!(parsed, Ok(u)),
        Err(()) => {
            let e = parsed.unwrap_err();
            assert!(e.contains(VAR) && e.contains("\"overwrite\""), "{e}");
        }
    }
}

#[test]
fn golden_policy_missing_mismatch_and_overwrite() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_golden/policy");
    let _ = fs::remove_dir_all(&root);
    let (golden, wip) = (root.join("golden"), root.join("golden/wip"));

    // Missing golden: written to wip, and the check fails saying so.
    let e = golden::check("x.md", "a\nb\n", &golden, &wip, Update::Wip).unwrap_err();
    assert!(e.contains("missing") && e.contains("wip"), "{e}");
    assert_eq!(fs::read_to_string(wip.join("x.md")).unwrap(), "a\nb\n");
    assert!(!golden.join("x.md").exists());

    // Overwrite: written in place, passes; then an equal output passes in wip mode.
    golden::check("x.md", "a\nb\nc\n", &golden, &wip, Update::Overwrite).unwrap();
    assert_eq!(
        fs::read_to_string(golden.join("x.md")).unwrap(),
        "a\nb\nc\n"
    );
    golden::check("x.md", "a\nb\nc\n", &golden, &wip, Update::Wip).unwrap();

    // Mismatch: a diff with line numbers and the new output in wip.
    let e = golden::check("x.md", "a\nB\nc\n", &golden, &wip, Update::Wip).unwrap_err();
    let (minus, plus) = (e.find("-    2 | b").unwrap(), e.find("+    2 | B").unwrap());
    assert!(minus < plus, "golden line first: {e}");
    assert!(e.contains(&wip.join("x.md").display().to_string()), "{e}");
    assert_eq!(fs::read_to_string(wip.join("x.md")).unwrap(), "a\nB\nc\n");
    assert_eq!(
        fs::read_to_string(golden.join("x.md")).unwrap(),
        "a\nb\nc\n"
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn line_diff_shows_insertions_at_their_line_numbers() {
    let d = golden::line_diff("a\nb\nc\n", "a\nx\nb\nc\n", 10);
    assert!(d.contains("+    2 | x"), "{d}");
    assert!(
        !d.lines().any(|l| l.starts_with("  -")),
        "only an insertion: {d}"
    );
}
