//! Golden files: deterministic renderings compared byte for byte with files under `golden/`.
//!
//! Update policy (as trybuild's): `O3_GOLDEN=overwrite` rewrites the goldens in place and passes.
//! Unset, a missing golden is written to `golden/wip/…` (gitignored) and the check fails; a
//! mismatch fails with a line diff and the new output in `golden/wip/…`. Any other value of
//! `O3_GOLDEN` is an error naming the variable and what is allowed.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

/// The variable that selects the update policy.
pub const VAR: &str = "O3_GOLDEN";

/// What to do with goldens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Compare; write new or differing output to `golden/wip/` and fail.
    Wip,
    /// Write the goldens in place and pass.
    Overwrite,
}

impl Update {
    /// The policy from the environment.
    pub fn from_env() -> Result<Update, String> {
        Update::parse(std::env::var_os(VAR))
    }

    /// Parses the value of [`VAR`].
    pub fn parse(value: Option<OsString>) -> Result<Update, String> {
        match value {
            None => Ok(Update::Wip),
            Some(v) if v == "overwrite" => Ok(Update::Overwrite),
            Some(v) => Err(format!(
                "unrecognized value of {VAR}: {v:?} is not one of \"overwrite\" (or leave it unset)"
            )),
        }
    }
}

/// The first differing lines of `expected` and `actual` (LCS line diff, 1-based line numbers),
/// at most `max` of them.
pub fn line_diff(expected: &str, actual: &str, max: usize) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut out = Vec::new();
    if a.len().saturating_mul(b.len()) > 16_000_000 {
        // Too big for the table: compare line by line.
        for i in 0..a.len().max(b.len()) {
            if a.get(i) != b.get(i) {
                if let Some(l) = a.get(i) {
                    out.push(format!("-{:>5} | {l}", i + 1));
                }
                if let Some(l) = b.get(i) {
                    out.push(format!("+{:>5} | {l}", i + 1));
                }
            }
        }
    } else {
        // lcs[i][j] = length of the longest common subsequence of a[i..] and b[j..].
        let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                i += 1;
                j += 1;
            } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
                out.push(format!("-{:>5} | {}", i + 1, a[i]));
                i += 1;
            } else {
                out.push(format!("+{:>5} | {}", j + 1, b[j]));
                j += 1;
            }
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push("(the files differ in their final newline)".to_string());
    }
    let total = out.len();
    let mut text = String::from("  (- golden line, + new line)\n");
    for l in out.iter().take(max) {
        text.push_str("  ");
        text.push_str(l);
        text.push('\n');
    }
    if total > max {
        text.push_str(&format!("  … and {} more differing lines\n", total - max));
    }
    text
}

/// Compares `actual` with `golden_dir/name` under `update`; on failure writes `actual` to
/// `wip_dir/name` and returns a message that says what to do.
pub fn check(
    name: &str,
    actual: &str,
    golden_dir: &Path,
    wip_dir: &Path,
    update: Update,
) -> Result<(), String> {
    let golden = golden_dir.join(name);
    if update == Update::Overwrite {
        fs::create_dir_all(golden_dir).unwrap();
        fs::write(&golden, actual).unwrap();
        return Ok(());
    }
    let write_wip = || {
        fs::create_dir_all(wip_dir).unwrap();
        let wip = wip_dir.join(name);
        fs::write(&wip, actual).unwrap();
        wip
    };
    match fs::read_to_string(&golden) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let wip = write_wip();
            Err(format!(
                "golden {} is missing; the new output is in {} — review it, then move it there \
                 or rerun with {VAR}=overwrite",
                golden.display(),
                wip.display()
            ))
        }
        Err(e) => panic!("failed to read golden {}: {e}", golden.display()),
        Ok(expected) => {
            let expected = expected.replace("\r\n", "\n");
            if expected == actual {
                return Ok(());
            }
            let wip = write_wip();
            Err(format!(
                "{} differs from its golden {}:\n{}new output: {} (rerun with {VAR}=overwrite to \
                 accept it)",
                name,
                golden.display(),
                line_diff(&expected, actual, 20),
                wip.display()
            ))
        }
    }
}
