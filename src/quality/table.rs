//! The quality sweep's table (`harness/quality.csv`, `harness/quality_reference.csv`, or
//! `O3_QUALITY_MATRIX`): one row per model × context test, read and validated before any test
//! runs by the matrix table's parser ([`crate::matrix::parse_rows`]), with the same error
//! quality (file, real line, column, value, what is allowed).
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `name` | yes | slug, as in the matrix |
//! | `model` | yes | model as the server knows it |
//! | `num_ctx` | yes | allocated context; `65536` or `64K` |
//! | `fill` | yes | share of `num_ctx` the document fills, facts included (0 < fill < 1), e.g. `0.75` |
//! | `depths` | yes | depths of the asked fact, shares of the fill from 0 to 1, separated by spaces, `;` or (quoted) commas |
//! | `trials` | yes | probes per depth |
//! | `probe` | yes | `needle`, `multikey` or `chain` ([`ProbeKind`]) |
//! | `num_batch`, `num_thread` | yes | load-time options, sent on every request |
//! | `accuracy_min` | yes (may be empty: 0.85) | accuracy gate (on its Wilson interval), and the threshold of the effective context |
//! | `ttft_max_s` | yes | mean TTFT gate (s) |
//! | `num_predict` | no | output tokens per probe (default 24) |
//! | `use_case` | no | what the test speaks for |
//! | `optional` | no | `true`: ignored unless `--include-ignored` |
//! | `ram_max_pct` | no | system RAM limit (default `O3_RAM_LIMIT_PCT`) |

use std::ops::Bound::{Excluded, Included};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::needle::ProbeKind;
use crate::config::{COUNT, NumberIn, PERCENT};
use crate::matrix::{self, FRACTION, MatrixError, POSITIVE, Row, TableShape};

const REQUIRED: [&str; 11] = [
    "name",
    "model",
    "num_ctx",
    "fill",
    "depths",
    "trials",
    "probe",
    "num_batch",
    "num_thread",
    "accuracy_min",
    "ttft_max_s",
];
const OPTIONAL: [&str; 4] = ["num_predict", "use_case", "optional", "ram_max_pct"];

/// The quality table's shape.
pub const SHAPE: TableShape = TableShape {
    required: &REQUIRED,
    optional: &OPTIONAL,
    env_var: "O3_QUALITY_MATRIX",
    unique: ("quality test", "name + num_ctx"),
};

/// Output tokens per probe when the table leaves `num_predict` out: enough for a number and a
/// few words around it.
pub const DEFAULT_NUM_PREDICT: u32 = 24;
/// `accuracy_min` when empty (RULER's threshold is the 85 % of a strong model at 4K).
pub const DEFAULT_ACCURACY_MIN: f64 = 0.85;
/// Tokens kept free beside the fill for the preamble, the question and the chat template.
pub const QUESTION_ROOM: u32 = 96;
/// The least fill (tokens) a probe can hide its facts in.
pub const MIN_FILL: u32 = 256;

/// Whether a probe's message of `fill_tokens` (with [`QUESTION_ROOM`] for the question) and its
/// answer of `num_predict` tokens fit `num_ctx`.
pub fn fits(fill_tokens: u32, num_predict: u32, num_ctx: u32) -> bool {
    u64::from(fill_tokens) + u64::from(num_predict) + u64::from(QUESTION_ROOM) <= u64::from(num_ctx)
}

/// The gates of a quality test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityGates {
    /// Least share of right answers (judged on the Wilson interval); also the threshold of
    /// the effective context.
    pub accuracy_min: f64,
    /// Largest mean TTFT (s).
    pub ttft_max_s: f64,
    /// System RAM limit (%).
    pub ram_max_pct: f64,
}

/// One row of the quality table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySpec {
    /// `<name>::quality_<K>k`.
    pub test_name: String,
    /// The row's slug.
    pub name: String,
    /// The model.
    pub model: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Share of `num_ctx` the document fills.
    pub fill: f64,
    /// Tokens of document, facts included: `fill × num_ctx`.
    pub fill_tokens: u32,
    /// Depths of the asked fact, ascending.
    pub depths: Vec<f64>,
    /// Probes per depth.
    pub trials: u32,
    /// The kind of probe.
    pub probe: ProbeKind,
    /// `num_batch`.
    pub num_batch: u32,
    /// `num_thread`.
    pub num_thread: u32,
    /// Output tokens per probe.
    pub num_predict: u32,
    /// The gates.
    pub gates: QualityGates,
    /// What the test speaks for.
    pub use_case: String,
    /// Ignored unless `--include-ignored`.
    pub optional: bool,
    /// `file:line` of the row.
    pub source: String,
}

/// Test name of a quality test: `<name>::quality_<K>k` (`_3000` when not a multiple of 1024).
pub fn test_name(name: &str, num_ctx: u32) -> String {
    let ctx = matrix::ctx_label(num_ctx);
    let ctx = ctx.strip_prefix("ctx_").unwrap_or(&ctx);
    format!("{name}::quality_{ctx}")
}

const FILL: NumberIn<f64> = NumberIn::new(
    Excluded(0.0),
    Excluded(1.0),
    "a share of num_ctx between 0 and 1 (exclusive), e.g. 0.75",
);
const DEPTH: NumberIn<f64> = NumberIn::new(Included(0.0), Included(1.0), "a depth from 0 to 1");
const TRIALS: NumberIn<u32> =
    NumberIn::new(Included(1), Included(1000), "a whole number from 1 to 1000");

/// Reads and validates the table at `path`; `default_ram_pct` is used where the table has no
/// `ram_max_pct`.
pub fn load(path: &Path, default_ram_pct: f64) -> Result<Vec<QualitySpec>, MatrixError> {
    let text = matrix::read_text(path, &SHAPE)?;
    parse(path, &text, default_ram_pct)
}

/// Parses and validates table text (`path` is used in messages only).
pub fn parse(
    path: &Path,
    text: &str,
    default_ram_pct: f64,
) -> Result<Vec<QualitySpec>, MatrixError> {
    matrix::parse_rows(path, text, &SHAPE, |row| {
        let s = spec(row, default_ram_pct)?;
        Ok((s.test_name.clone(), s))
    })
}

/// A list of depths: numbers from 0 to 1 separated by spaces, `;` or commas; sorted, without
/// repeats.
pub fn parse_depths(v: &str) -> Result<Vec<f64>, &'static str> {
    const ALLOWED: &str = "depths from 0 to 1 separated by spaces, ; or commas, e.g. 0.1 0.5 0.9";
    let mut out = Vec::new();
    for part in v.split([' ', ';', ',']).filter(|p| !p.is_empty()) {
        let d = DEPTH.parse(part).map_err(|_| ALLOWED)?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.is_empty() {
        return Err(ALLOWED);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn spec(row: &Row<'_>, default_ram_pct: f64) -> Result<QualitySpec, MatrixError> {
    let name = row.name()?;
    let model = row.model()?;
    let num_ctx = row.tokens("num_ctx")?;
    let fill = row.number("fill", &FILL)?;
    let depths = parse_depths(row.get("depths")).map_err(|allowed| row.bad("depths", allowed))?;
    let trials = row.number("trials", &TRIALS)?;
    let probe = ProbeKind::parse(row.get("probe"))
        .ok_or_else(|| row.bad("probe", "needle, multikey or chain"))?;
    let num_batch = row.number("num_batch", &COUNT)?;
    let num_thread = row.number("num_thread", &COUNT)?;
    let num_predict = row.number_or("num_predict", &COUNT, DEFAULT_NUM_PREDICT)?;
    let fill_tokens = (f64::from(num_ctx) * fill).floor() as u32;
    if !fits(fill_tokens, num_predict, num_ctx) {
        return Err(row.error(
            "fill",
            format!(
                "a fill of {fill_tokens} tokens (fill {fill} × num_ctx {num_ctx}) leaves no room \
                 for the question ({QUESTION_ROOM} tokens) and num_predict {num_predict}: \
                 choose a smaller fill"
            ),
        ));
    }
    if fill_tokens < MIN_FILL {
        return Err(row.error(
            "fill",
            format!(
                "a fill of {fill_tokens} tokens is too small to hide facts in: at least {MIN_FILL}"
            ),
        ));
    }
    let gates = QualityGates {
        accuracy_min: row.number_or("accuracy_min", &FRACTION, DEFAULT_ACCURACY_MIN)?,
        ttft_max_s: row.number("ttft_max_s", &POSITIVE)?,
        ram_max_pct: row.number_or("ram_max_pct", &PERCENT, default_ram_pct)?,
    };
    Ok(QualitySpec {
        test_name: test_name(name, num_ctx),
        name: name.to_string(),
        model: model.to_string(),
        num_ctx,
        fill,
        fill_tokens,
        depths,
        trials,
        probe,
        num_batch,
        num_thread,
        num_predict,
        gates,
        use_case: row.get("use_case").to_string(),
        optional: row.flag("optional", false)?,
        source: row.source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "name,model,num_ctx,fill,depths,trials,probe,num_batch,num_thread,accuracy_min,ttft_max_s";

    fn p(rows: &[&str]) -> Result<Vec<QualitySpec>, MatrixError> {
        let mut t = format!("# quality\n{HEADER}\n");
        for r in rows {
            t.push_str(r);
            t.push('\n');
        }
        parse(Path::new("q.csv"), &t, 80.0)
    }

    #[test]
    fn a_row_with_the_defaults() {
        let s =
            p(&["g27,orieg/gemma3-tools:27b-it-qat,128K,0.75,\"0.9,0.1,0.5\",4,needle,8,16,,600"])
                .unwrap();
        let s = &s[0];
        assert_eq!(s.test_name, "g27::quality_128k");
        assert_eq!((s.num_ctx, s.fill_tokens), (131_072, 98_304));
        assert_eq!(s.depths, vec![0.1, 0.5, 0.9]);
        assert_eq!(
            (s.trials, s.probe, s.num_predict),
            (4, ProbeKind::Needle, 24)
        );
        assert_eq!(s.gates.accuracy_min, DEFAULT_ACCURACY_MIN);
        assert_eq!(s.gates.ram_max_pct, 80.0);
        assert_eq!(s.source, "q.csv:3");
    }

    #[test]
    fn depths_take_spaces_semicolons_and_commas() {
        assert_eq!(parse_depths("0.5 0;1").unwrap(), vec![0.0, 0.5, 1.0]);
        assert_eq!(parse_depths("0.5,0.5").unwrap(), vec![0.5]);
        assert!(parse_depths("").is_err());
        assert!(parse_depths("1.5").is_err());
    }

    #[test]
    fn errors_name_the_line_the_column_and_what_is_allowed() {
        let e = p(&["a,m,4K,0.5,0.5,2,haystack,512,2,0.5,30"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("q.csv") && e.contains("q.csv:3") && e.contains("probe"),
            "{e}"
        );
        assert!(e.contains("needle, multikey or chain"), "{e}");
        let e = p(&["a,m,4K,0.5,0.5 x,2,needle,512,2,0.5,30"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("depths") && e.contains("e.g. 0.1 0.5 0.9"),
            "{e}"
        );
        let e = p(&["a,m,4K,0.99,0.5,2,needle,512,2,0.5,30"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaves no room for the question"), "{e}");
        let e = p(&["a,m,4K,1.5,0.5,2,needle,512,2,0.5,30"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 0 and 1"), "{e}");
        let e = p(&[
            "a,m,4K,0.5,0.5,2,needle,512,2,0.5,30",
            "a,m,4K,0.6,0.5,2,needle,512,2,0.5,30",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("q.csv:4") && e.contains("line 3"), "{e}");
    }
}
