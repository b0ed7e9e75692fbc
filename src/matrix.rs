//! The matrix table: models × context sizes with their gates, read and validated before any
//! test runs.
//!
//! A table is a CSV file with a header row. Lines starting with `#` are comments. Columns:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `name` | yes | slug used in test names (`[a-z][a-z0-9_]*`), e.g. `gemma3_tools_27b` |
//! | `model` | yes | model as the server knows it, e.g. `orieg/gemma3-tools:27b-it-qat` |
//! | `category` | yes | free text (e.g. `tools`, `rag`, `small`) |
//! | `num_ctx` | yes | allocated context in tokens; `65536` or `64K` |
//! | `fill_tokens` | yes | prompt size in tokens; empty = the default fill (see [`default_fill`]) |
//! | `num_batch` | yes | load-time `num_batch` |
//! | `num_thread` | yes | load-time `num_thread` |
//! | `ttft_max_s` | yes | TTFT gate, seconds |
//! | `tok_s_min` | yes | decode-rate gate, tokens/s |
//! | `stability_min` | yes | stability gate, 0–1 |
//! | `use_case` | yes | what the cell speaks for |
//! | `num_predict` | no | output tokens per trial (default 128) |
//! | `optional` | no | `true` = ignored unless `--include-ignored` (default false) |
//! | `ram_max_pct` | no | system RAM limit, percent (default `O3_RAM_LIMIT_PCT`, 80) |
//! | `optimize` | no | `false` = the optimizer leaves this row's model alone (default true) |

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::results::{CellSpec, Gates};

/// Output tokens per trial when the table has no `num_predict` column or leaves it empty.
pub const DEFAULT_NUM_PREDICT: u32 = 128;

/// Fill used when `fill_tokens` is empty: 1024 prompt tokens, or a quarter of `num_ctx` when
/// that is smaller. It measures allocation and decode at the cell's size with a chat-turn-sized
/// prompt; deep fills are separate rows with explicit `fill_tokens`.
pub fn default_fill(num_ctx: u32) -> u32 {
    1024.min(num_ctx / 4).max(1)
}

const REQUIRED: [&str; 11] = [
    "name",
    "model",
    "category",
    "num_ctx",
    "fill_tokens",
    "num_batch",
    "num_thread",
    "ttft_max_s",
    "tok_s_min",
    "stability_min",
    "use_case",
];
const OPTIONAL: [&str; 4] = ["num_predict", "optional", "ram_max_pct", "optimize"];

/// A problem with the table: file, line, column, value, and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct MatrixError {
    /// The table file.
    pub path: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<u64>,
    /// The column, when the problem has one.
    pub column: Option<String>,
    /// The offending value, when there is one.
    pub value: Option<String>,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid matrix {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(col) = &self.column {
            write!(f, ", column `{col}`")?;
        }
        if let Some(v) = &self.value {
            write!(f, ", value {v:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Test-name label of a context size: 65536 → `ctx_64k`, 3000 → `ctx_3000`.
pub fn ctx_label(num_ctx: u32) -> String {
    if num_ctx % 1024 == 0 {
        format!("ctx_{}k", num_ctx / 1024)
    } else {
        format!("ctx_{num_ctx}")
    }
}

/// Test name of a cell: `<name>::ctx_<K>k`.
pub fn test_name(name: &str, num_ctx: u32) -> String {
    format!("{name}::{}", ctx_label(num_ctx))
}

/// Parses a token count: `65536`, `64K` / `64k` (× 1024).
fn parse_tokens(s: &str) -> Option<u32> {
    let (digits, mult) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1024u64),
        None => (s, 1),
    };
    let v: u64 = digits.parse().ok()?;
    let v = v.checked_mul(mult)?;
    if v == 0 || v > u32::MAX as u64 {
        return None;
    }
    Some(v as u32)
}

fn valid_slug(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
}

/// Reads and validates the table at `path`. `default_ram_pct` is used where the table has no
/// `ram_max_pct`.
pub fn load(path: &Path, default_ram_pct: f64) -> Result<Vec<CellSpec>, MatrixError> {
    let text = std::fs::read_to_string(path).map_err(|e| MatrixError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        value: None,
        message: format!("cannot read the file: {e} (set O3_MATRIX to choose another table)"),
    })?;
    parse(path, &text, default_ram_pct)
}

/// Parses and validates table text (`path` is used in messages only).
pub fn parse(path: &Path, text: &str, default_ram_pct: f64) -> Result<Vec<CellSpec>, MatrixError> {
    let err = |line: Option<u64>, column: Option<&str>, value: Option<&str>, message: String| {
        MatrixError {
            path: path.to_path_buf(),
            line,
            column: column.map(str::to_string),
            value: value.map(str::to_string),
            message,
        }
    };
    let mut rdr = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| err(e.position().map(|p| p.line()), None, None, e.to_string()))?
        .clone();
    let header_line = header_line(text);
    if headers.iter().all(|h| h.is_empty()) {
        return Err(err(
            None,
            None,
            None,
            "the table is empty: expected a header row and at least one cell".into(),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        if !REQUIRED.contains(&h) && !OPTIONAL.contains(&h) {
            return Err(err(
                Some(header_line),
                Some(h),
                None,
                format!(
                    "unknown column; allowed columns are {} (required) and {} (optional)",
                    REQUIRED.join(", "),
                    OPTIONAL.join(", ")
                ),
            ));
        }
        if index.insert(h, i).is_some() {
            return Err(err(
                Some(header_line),
                Some(h),
                None,
                "column appears twice".into(),
            ));
        }
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Err(err(
            Some(header_line),
            None,
            None,
            format!("missing required column(s): {}", missing.join(", ")),
        ));
    }

    let mut cells: Vec<CellSpec> = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            err(
                e.position().map(|p| p.line()),
                None,
                None,
                format!("malformed row: {e}"),
            )
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        let get = |col: &str| -> &str { index.get(col).and_then(|&i| rec.get(i)).unwrap_or("") };
        let bad = |col: &str, allowed: &str| {
            let v = get(col);
            err(
                Some(line),
                Some(col),
                Some(v),
                format!("expected {allowed}"),
            )
        };
        let tokens = |col: &str| -> Result<u32, MatrixError> {
            parse_tokens(get(col)).ok_or_else(|| {
                bad(
                    col,
                    "a whole number ≥ 1, optionally with a K suffix (64K = 65536)",
                )
            })
        };
        let count = |col: &str| -> Result<u32, MatrixError> {
            match get(col).parse::<u32>() {
                Ok(v) if v >= 1 => Ok(v),
                _ => Err(bad(col, "a whole number ≥ 1")),
            }
        };
        let positive = |col: &str| -> Result<f64, MatrixError> {
            match get(col).parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(bad(col, "a number > 0")),
            }
        };

        let name = get("name");
        if !valid_slug(name) {
            return Err(bad(
                "name",
                "a slug: a lowercase letter, then lowercase letters, digits or single underscores (e.g. gemma3_tools_27b)",
            ));
        }
        let model = get("model");
        if model.is_empty() || model.chars().any(char::is_whitespace) {
            return Err(bad(
                "model",
                "a model name without spaces, e.g. qwen2.5:3b-instruct",
            ));
        }
        let num_ctx = tokens("num_ctx")?;
        let num_predict = if get("num_predict").is_empty() {
            DEFAULT_NUM_PREDICT
        } else {
            count("num_predict")?
        };
        let fill_tokens = if get("fill_tokens").is_empty() {
            default_fill(num_ctx)
        } else {
            tokens("fill_tokens")?
        };
        if fill_tokens as u64 + num_predict as u64 > num_ctx as u64 {
            return Err(err(
                Some(line),
                Some("fill_tokens"),
                Some(get("fill_tokens")),
                format!(
                    "fill_tokens {fill_tokens} + num_predict {num_predict} exceeds num_ctx {num_ctx}: \
                     the prompt and answer must fit the context, or the server truncates"
                ),
            ));
        }
        let num_batch = count("num_batch")?;
        let num_thread = count("num_thread")?;
        let ttft_max_s = positive("ttft_max_s")?;
        let tok_s_min = positive("tok_s_min")?;
        let stability_min = match get("stability_min").parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => v,
            _ => return Err(bad("stability_min", "a number from 0 to 1")),
        };
        let ram_max_pct = if get("ram_max_pct").is_empty() {
            default_ram_pct
        } else {
            match get("ram_max_pct").parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => v,
                _ => return Err(bad("ram_max_pct", "a percentage in (0, 100]")),
            }
        };
        let optional = match get("optional").to_ascii_lowercase().as_str() {
            "" | "false" | "no" | "0" => false,
            "true" | "yes" | "1" => true,
            _ => return Err(bad("optional", "true or false")),
        };
        let optimize = match get("optimize").to_ascii_lowercase().as_str() {
            "" | "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            _ => return Err(bad("optimize", "true or false")),
        };
        let use_case = get("use_case");
        if use_case.is_empty() {
            return Err(bad("use_case", "a short description of the use case"));
        }

        let tname = test_name(name, num_ctx);
        if let Some(first) = seen.insert(tname.clone(), line) {
            return Err(err(
                Some(line),
                Some("name"),
                Some(name),
                format!(
                    "duplicate cell {tname}: line {first} already defines it (name + num_ctx must be unique)"
                ),
            ));
        }
        cells.push(CellSpec {
            test_name: tname,
            name: name.to_string(),
            model: model.to_string(),
            category: get("category").to_string(),
            num_ctx,
            fill_tokens,
            num_batch,
            num_thread,
            num_predict,
            gates: Gates {
                ttft_max_s,
                tok_s_min,
                stability_min,
                ram_max_pct,
            },
            use_case: use_case.to_string(),
            optional,
            optimize,
            source: format!("{}:{line}", path.display()),
        });
    }
    if cells.is_empty() {
        return Err(err(
            None,
            None,
            None,
            "the table has no cells: add at least one row under the header".into(),
        ));
    }
    Ok(cells)
}

/// Line number of the header row (the first line that is neither empty nor a comment).
fn header_line(text: &str) -> u64 {
    text.lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|i| i as u64 + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const HEADER: &str = "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case";

    fn table(rows: &[&str]) -> String {
        let mut s = String::from("# comment line\n");
        s.push_str(HEADER);
        s.push('\n');
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s
    }

    fn p(text: &str) -> Result<Vec<CellSpec>, MatrixError> {
        parse(Path::new("m.csv"), text, 80.0)
    }

    #[rstest]
    #[case(65536, "ctx_64k")]
    #[case(131072, "ctx_128k")]
    #[case(2048, "ctx_2k")]
    #[case(3000, "ctx_3000")]
    fn labels(#[case] n: u32, #[case] label: &str) {
        assert_eq!(ctx_label(n), label);
    }

    #[test]
    fn a_good_row() {
        let cells = p(&table(&[
            "gemma3_tools_27b,orieg/gemma3-tools:27b-it-qat,tools,128K,1024,8,16,12,4,0.75,complex refactoring",
        ]))
        .unwrap();
        assert_eq!(cells.len(), 1);
        let c = &cells[0];
        assert_eq!(c.test_name, "gemma3_tools_27b::ctx_128k");
        assert_eq!(c.num_ctx, 131072);
        assert_eq!((c.num_batch, c.num_thread, c.num_predict), (8, 16, 128));
        assert_eq!(c.gates.ttft_max_s, 12.0);
        assert_eq!(c.gates.ram_max_pct, 80.0);
        assert_eq!(c.source, "m.csv:3");
        assert!(!c.optional);
    }

    #[test]
    fn empty_fill_means_default() {
        let cells = p(&table(&[
            "a,m,c,2048,,8,2,30,1,0.5,u",
            "b,m,c,64K,,8,2,30,1,0.5,u",
        ]))
        .unwrap();
        assert_eq!(cells[0].fill_tokens, 512);
        assert_eq!(cells[1].fill_tokens, 1024);
    }

    #[test]
    fn optional_columns() {
        let text = format!(
            "{HEADER},num_predict,optional,ram_max_pct,optimize\na,m,c,2048,100,8,2,30,1,0.5,u,64,true,70,false\n"
        );
        let c = &p(&text).unwrap()[0];
        assert_eq!(c.num_predict, 64);
        assert!(c.optional);
        assert!(!c.optimize);
        assert!(p(&table(&["a,m,c,2048,100,8,2,30,1,0.5,u"])).unwrap()[0].optimize);
        assert_eq!(c.gates.ram_max_pct, 70.0);
    }

    #[rstest]
    #[case("a,m,c,abc,100,8,2,30,1,0.5,u", 3, Some("num_ctx"), "whole number")]
    #[case("a,m,c,0,100,8,2,30,1,0.5,u", 3, Some("num_ctx"), "whole number")]
    #[case("a,m,c,2048,-5,8,2,30,1,0.5,u", 3, Some("fill_tokens"), "whole number")]
    #[case("a,m,c,2048,100,0,2,30,1,0.5,u", 3, Some("num_batch"), "≥ 1")]
    #[case("a,m,c,2048,100,8,0,30,1,0.5,u", 3, Some("num_thread"), "≥ 1")]
    #[case("a,m,c,2048,100,8,2,0,1,0.5,u", 3, Some("ttft_max_s"), "> 0")]
    #[case("a,m,c,2048,100,8,2,30,x,0.5,u", 3, Some("tok_s_min"), "> 0")]
    #[case(
        "a,m,c,2048,100,8,2,30,1,1.5,u",
        3,
        Some("stability_min"),
        "from 0 to 1"
    )]
    #[case("A-b,m,c,2048,100,8,2,30,1,0.5,u", 3, Some("name"), "slug")]
    #[case("a,,c,2048,100,8,2,30,1,0.5,u", 3, Some("model"), "model name")]
    #[case("a,m,c,2048,100,8,2,30,1,0.5,", 3, Some("use_case"), "use case")]
    #[case(
        "a,m,c,2048,2000,8,2,30,1,0.5,u",
        3,
        Some("fill_tokens"),
        "exceeds num_ctx"
    )]
    #[case("a,m,c,2048,100,8,2,30,1,0.5", 3, None, "malformed row")]
    fn bad_rows(
        #[case] row: &str,
        #[case] line: u64,
        #[case] column: Option<&str>,
        #[case] needle: &str,
    ) {
        let e = p(&table(&[row])).unwrap_err();
        assert_eq!(e.line, Some(line), "{e}");
        assert_eq!(e.column.as_deref(), column, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().starts_with("invalid matrix m.csv:3"), "{e}");
    }

    #[test]
    fn bad_value_is_quoted_in_the_message() {
        let e = p(&table(&["a,m,c,12Q,100,8,2,30,1,0.5,u"])).unwrap_err();
        assert_eq!(e.value.as_deref(), Some("12Q"));
        assert!(e.to_string().contains("value \"12Q\""), "{e}");
    }

    #[test]
    fn duplicates_name_both_lines() {
        let e = p(&table(&[
            "a,m,c,2048,100,8,2,30,1,0.5,u",
            "b,m,c,2048,100,8,2,30,1,0.5,u",
            "a,m2,c,2K,100,8,2,30,1,0.5,u",
        ]))
        .unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.to_string().contains("line 3 already defines it"), "{e}");
        assert!(e.to_string().contains("a::ctx_2k"), "{e}");
    }

    #[test]
    fn unknown_column() {
        let e = p("name,model,colour\n").unwrap_err();
        assert_eq!(e.column.as_deref(), Some("colour"));
        assert_eq!(e.line, Some(1));
        assert!(
            e.to_string().contains("allowed columns are name, model"),
            "{e}"
        );
    }

    #[test]
    fn missing_columns() {
        let e = p("name,model\na,m\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("missing required column(s): category"),
            "{e}"
        );
    }

    #[rstest]
    #[case("")]
    #[case("# only a comment\n")]
    #[case(HEADER)]
    fn empty_tables(#[case] text: &str) {
        let e = p(text).unwrap_err();
        assert!(
            e.to_string().contains("empty") || e.to_string().contains("no cells"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_file_names_it() {
        let e = load(Path::new("/nonexistent/matrix.csv"), 80.0).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/matrix.csv"), "{e}");
        assert!(e.to_string().contains("O3_MATRIX"), "{e}");
    }

    #[test]
    fn shipped_tables_are_valid() {
        let root = crate::config::crate_root().join("harness");
        let user = load(&root.join("matrix.csv"), 80.0).unwrap();
        let names: Vec<&str> = user.iter().map(|c| c.test_name.as_str()).collect();
        for expected in [
            "gemma3_tools_27b::ctx_64k",
            "gemma3_tools_27b::ctx_128k",
            "gemma3_tools_27b::ctx_256k",
            "liquid_rag::ctx_64k",
            "liquid_rag::ctx_128k",
            "liquid_rag::ctx_256k",
            "qwen25_3b::ctx_32k",
            "qwen25_3b::ctx_256k",
            "gemma3_latest::ctx_128k",
            "gemma3_latest::ctx_256k",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(user.len(), 14);
        let optional: Vec<&str> = user
            .iter()
            .filter(|c| c.optional)
            .map(|c| c.test_name.as_str())
            .collect();
        assert_eq!(optional, ["qwen25_3b::ctx_256k", "gemma3_latest::ctx_256k"]);
        let g = &user
            .iter()
            .find(|c| c.test_name == "gemma3_tools_27b::ctx_64k")
            .unwrap()
            .gates;
        assert_eq!(
            (g.ttft_max_s, g.tok_s_min, g.stability_min),
            (8.0, 6.0, 0.8)
        );
        let reference = load(&root.join("reference.csv"), 80.0).unwrap();
        assert!(reference.len() >= 6);
    }
}
