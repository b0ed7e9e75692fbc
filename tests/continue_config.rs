//! The Continue config the optimizer writes (`integration_configs/continue-config.yaml`),
//! checked by Continue's own schema package, `@continuedev/config-yaml`, through
//! `harness/validate-continue-config.mjs`: made from the fixture records (measured at a
//! non-default server, so with `apiBase`) and from the same records at Ollama's default address
//! (without), plus broken configs that must be rejected — so this fails when Continue would
//! reject our file, and when the validator would accept anything.
//!
//! Needs Node and the package: `export O3_NODE_TOOLS=$(bash harness/setup-node-tools.sh)`
//! (harness/test.sh does this). Without them the tests print why and return, except under
//! `O3_REQUIRE_BACKEND=1` (CI), where they fail.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use o3_suite::optimize::outputs;
use o3_suite::optimize::record::{SearchRecord, read_records_in};

/// How long one validation may take before the child is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_records() -> Vec<SearchRecord> {
    let dir = manifest_dir().join("tests/fixtures/optimize/records");
    let r = read_records_in(&dir).unwrap();
    assert!(
        r.len() >= 3,
        "expected the fixture records in {}",
        dir.display()
    );
    r
}

/// The validator's setup, or why it is missing (then: fail under `O3_REQUIRE_BACKEND=1`, else
/// `None` after saying why).
fn validator() -> Option<PathBuf> {
    let missing = match std::env::var_os("O3_NODE_TOOLS") {
        None => Some("O3_NODE_TOOLS is not set".to_string()),
        Some(dir) => {
            let pkg = Path::new(&dir).join("node_modules/@continuedev/config-yaml/package.json");
            if !pkg.is_file() {
                Some(format!("{} is missing", pkg.display()))
            } else if Command::new("node")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
            {
                Some("`node` is not on PATH".to_string())
            } else {
                return Some(PathBuf::from(dir));
            }
        }
    };
    let why = format!(
        "Continue's config validator is not installed ({}): run \
         `export O3_NODE_TOOLS=$(bash harness/setup-node-tools.sh)`",
        missing.unwrap_or_default()
    );
    if std::env::var("O3_REQUIRE_BACKEND").is_ok_and(|v| v == "1") {
        panic!("{why} (O3_REQUIRE_BACKEND=1)");
    }
    // Straight to stderr, past libtest's capture, so the skip shows in a normal run.
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
    None
}

/// What the validator said about one file.
#[derive(Debug)]
struct Verdict {
    /// Exit status: 0 valid, 1 rejected, 2 usage or setup error.
    code: Option<i32>,
    /// Its stdout and stderr.
    output: String,
}

/// Writes `yaml` to a file named `name` and runs the validator on it, killing it after
/// [`TIMEOUT`].
fn validate(tools: &Path, name: &str, yaml: &str) -> Verdict {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("continue_config");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    fs::write(&file, yaml).unwrap();
    let out_path = dir.join(format!("{name}.out"));
    let out = fs::File::create(&out_path).unwrap();
    let mut child = Command::new("node")
        .arg(manifest_dir().join("harness/validate-continue-config.mjs"))
        .arg(&file)
        .env("O3_NODE_TOOLS", tools)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start node");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the validator took longer than {TIMEOUT:?} on {}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Verdict {
        code: status.code(),
        output: fs::read_to_string(&out_path).unwrap(),
    }
}

fn assert_valid(tools: &Path, name: &str, yaml: &str) {
    let v = validate(tools, name, yaml);
    assert_eq!(
        v.code,
        Some(0),
        "Continue rejects {name}:\n{}\n--- file ---\n{yaml}",
        v.output
    );
}

fn assert_rejected(tools: &Path, name: &str, yaml: &str, message: &str) {
    let v = validate(tools, name, yaml);
    assert_eq!(v.code, Some(1), "{name} should be rejected:\n{}", v.output);
    assert!(
        v.output.contains(message),
        "{name}: expected {message:?} in\n{}",
        v.output
    );
}

#[test]
fn config_from_a_non_default_server_is_valid_for_continue() {
    let Some(tools) = validator() else { return };
    let records = fixture_records();
    assert!(records.iter().all(|r| r.server == "http://127.0.0.1:11435"));
    let yaml = outputs::render_continue(&records);
    assert!(
        yaml.contains("\n  apiBase: http://127.0.0.1:11435/\n"),
        "{yaml}"
    );
    assert_valid(&tools, "reference-server.yaml", &yaml);
}

#[test]
fn config_from_the_default_server_is_valid_for_continue() {
    let Some(tools) = validator() else { return };
    let mut records = fixture_records();
    for r in &mut records {
        r.server = "http://127.0.0.1:11434".into();
    }
    let yaml = outputs::render_continue(&records);
    let cfg = outputs::continue_config(&records);
    assert!(!cfg.models.is_empty() && cfg.models.iter().all(|m| m.api_base.is_none()));
    assert_valid(&tools, "default-server.yaml", &yaml);
}

#[test]
fn config_without_models_is_valid_for_continue() {
    let Some(tools) = validator() else { return };
    let yaml = outputs::render_continue(&[]);
    assert_valid(&tools, "no-models.yaml", &yaml);
}

#[test]
fn broken_configs_are_rejected() {
    let Some(tools) = validator() else { return };
    let good = outputs::render_continue(&fixture_records());
    assert!(good.contains("  - chat\n") && good.contains("\nversion: "));
    // A role Continue does not know: its zod schema rejects the model entry.
    assert_rejected(
        &tools,
        "bad-role.yaml",
        &good.replacen("  - chat\n", "  - chatting\n", 1),
        "Failed to parse config",
    );
    // A required key missing.
    let no_version: String = good
        .lines()
        .filter(|l| !l.starts_with("version: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_rejected(
        &tools,
        "no-version.yaml",
        &no_version,
        "Failed to parse config",
    );
    // A misspelt key: zod would drop it silently, the validator does not let it through.
    assert_rejected(
        &tools,
        "misspelt-key.yaml",
        &good.replacen("  apiBase: ", "  apibase: ", 1),
        "$.models[0].apibase",
    );
    // Continue's own non-fatal check: an instruct model given the autocomplete role.
    let autocomplete = good
        .replacen(
            "  model: gemma3:270m\n",
            "  model: qwen2.5:3b-instruct\n",
            1,
        )
        .replacen("  - chat\n", "  - chat\n  - autocomplete\n", 1);
    assert_rejected(
        &tools,
        "instruct-autocomplete.yaml",
        &autocomplete,
        "not trained for tab-autocomplete",
    );
}
