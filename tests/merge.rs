//! `o3-merge` on fixture runs from two hosts, one holding a conflicting duplicate: per-host and
//! cross-host tables, the conflict flagged in `hosts.md`, `merge.json` and the exit status.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use o3_suite::results::CellResult;
use o3_suite::rundir::{RunDir, load_json, save_json};

fn fixtures() -> Vec<CellResult> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/cells");
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| load_json(&p).unwrap())
        .collect()
}

fn run(root: &Path, name: &str, host: &str, only: Option<&str>, ttft_factor: f64) -> PathBuf {
    let dir = RunDir::at(root.join(name));
    for mut c in fixtures() {
        if only.is_some_and(|o| o != c.cell.test_name) {
            continue;
        }
        c.metadata.host.hostname = host.into();
        c.metadata.run_id = name.into();
        for t in &mut c.trials {
            t.ttft_s = t.ttft_s.map(|x| x * ttft_factor);
        }
        c.summaries = o3_suite::results::summarize_trials(&c.trials);
        save_json(&dir.cell_path(&c.cell.test_name), &c).unwrap();
    }
    dir.root().to_path_buf()
}

#[test]
fn two_hosts_merge_and_a_conflict_is_flagged() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("merge");
    let _ = fs::remove_dir_all(&root);
    let a = run(&root, "run-a", "host-a", None, 1.0);
    let b = run(&root, "run-b", "host-b", None, 1.5);
    // A partition that ran one of host-b's cells again, with other figures.
    let b2 = run(
        &root,
        "run-b2",
        "host-b",
        Some("gemma3_tools_27b::ctx_32k"),
        2.0,
    );
    let out = root.join("merged");
    let st = Command::new(env!("CARGO_BIN_EXE_o3-merge"))
        .arg("--out")
        .arg(&out)
        .args([&a, &b, &a, &b2])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "a conflict exits with 1");
    let hosts = fs::read_to_string(out.join("comparative_analysis/hosts.md")).unwrap();
    assert!(hosts.contains("| Cell | host-a | host-b |"), "{hosts}");
    assert!(
        hosts.contains("- **CONFLICT** `gemma3_tools_27b::ctx_32k` on `host-b`"),
        "{hosts}"
    );
    // run-a given twice: identical duplicates, counted once.
    assert!(hosts.contains("6 identical duplicate(s)"), "{hosts}");
    let merged: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("comparative_analysis/merge.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(merged["hosts"]["host-a"], 6);
    assert_eq!(merged["hosts"]["host-b"], 6);
    assert_eq!(
        merged["conflicts"][0]["versions"].as_array().unwrap().len(),
        2
    );
    // The kept version is the first input's; the other is kept under conflicts/.
    assert_eq!(
        fs::read_dir(out.join("conflicts/host-b")).unwrap().count(),
        1
    );
    let kept: CellResult =
        load_json(&out.join("hosts/host-b/cells/gemma3_tools_27b__ctx_32k.json")).unwrap();
    assert_eq!(kept.metadata.run_id, "run-b");
    // Per-host and all-host reports.
    assert!(
        out.join("hosts/host-a/comparative_analysis/performance_matrix.md")
            .is_file()
    );
    let all = fs::read_to_string(out.join("comparative_analysis/performance_matrix.md")).unwrap();
    assert!(all.contains("12 cells"), "{all}");
    // Without a conflict the exit status is 0.
    let st = Command::new(env!("CARGO_BIN_EXE_o3-merge"))
        .arg("--out")
        .arg(root.join("merged2"))
        .args([&a, &b])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    // An input that is not a run directory is an error.
    let st = Command::new(env!("CARGO_BIN_EXE_o3-merge"))
        .arg("--out")
        .arg(root.join("merged3"))
        .arg(root.join("nothing"))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2));
}
