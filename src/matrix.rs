//! The matrix table: models × context sizes with their gates, read and validated before any
//! test runs.
//!
//! A table is a CSV file with a header row. Lines starting with `#` are comments. Columns:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `name` | yes | slug used in test names (`[a-z][a-z0-9_]*`, no `__`, at most [`MAX_NAME_BYTES`] bytes), e.g. `gemma3_tools_27b` |
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
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::path::{Path, PathBuf};

use crate::config::{COUNT, Number, NumberIn, PERCENT};
use crate::results::{CellSpec, Gates, RelativeGates};

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
const OPTIONAL: [&str; 6] = [
    "num_predict",
    "optional",
    "ram_max_pct",
    "optimize",
    "probe",
    "probe_depths",
];

/// The shape of a table this module reads: its columns, the variable that chooses another
/// file, and what must be unique. The matrix is one; [`crate::agentic::table`] is another, read
/// by the same parser with the same error quality.
#[derive(Debug, Clone, Copy)]
pub struct TableShape {
    /// Columns every table must have.
    pub required: &'static [&'static str],
    /// Columns a table may have.
    pub optional: &'static [&'static str],
    /// The variable that chooses another table (for the message of an unreadable file).
    pub env_var: &'static str,
    /// What a row defines and which columns make it unique (`cell`, `name + num_ctx`).
    pub unique: (&'static str, &'static str),
}

/// The matrix table's shape.
pub const MATRIX: TableShape = TableShape {
    required: &REQUIRED,
    optional: &OPTIONAL,
    env_var: "O3_MATRIX",
    unique: ("cell", "name + num_ctx"),
};

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
    if num_ctx.is_multiple_of(1024) {
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
    const DIGITS: NumberIn<u64> = NumberIn::new(Included(1), Unbounded, "a whole number ≥ 1");
    let v = DIGITS.parse(digits).ok()?.checked_mul(mult)?;
    u32::try_from(v).ok()
}

/// Longest `name`, in bytes. The longest file a name goes into is an optimizer probe's
/// temporary result file, `cells/.<name>__opt__ctx_<n>_t<T>_b<B>_r<R>.json.<pid>.<seq>.tmp`:
/// with every figure at its largest (`u32`, 10 digits; a pid of 7; a `u64` sequence number, 20),
/// that is the name plus 96 bytes,
/// and a file name may hold 255 bytes on the usual file systems (ext4, xfs, btrfs, APFS, NTFS).
/// 64 leaves room and is far longer than any useful slug.
pub const MAX_NAME_BYTES: usize = 64;

fn valid_slug(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
}

/// Prefix of an engine-relative gate: `engine*0.5` is 0.5 × the engine's own figure.
pub const ENGINE_PREFIX: &str = "engine*";

/// A gate as the table gives it: an absolute limit, or a factor on the engine's own figure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GateValue {
    Absolute(f64),
    Engine(f64),
}

pub(crate) const POSITIVE: NumberIn<f64> = NumberIn::new(Excluded(0.0), Unbounded, "a number > 0");
pub(crate) const FRACTION: NumberIn<f64> =
    NumberIn::new(Included(0.0), Included(1.0), "a number from 0 to 1");
const TTFT_GATE: &str = "a number > 0 (seconds), or engine*F with F > 0: F × the engine's time to \
     first token at the cell's options, measured by llama-bench (e.g. engine*3)";
const DECODE_GATE: &str = "a number > 0 (tokens/s), or engine*F with F > 0: F × the engine's \
     decode rate at the cell's options and depth, measured by llama-bench (e.g. engine*0.5)";

/// Reads and validates the table at `path`. `default_ram_pct` is used where the table has no
/// `ram_max_pct`.
pub fn load(path: &Path, default_ram_pct: f64) -> Result<Vec<CellSpec>, MatrixError> {
    let text = read_text(path, &MATRIX)?;
    parse(path, &text, default_ram_pct)
}

/// The text of the table at `path`: an unreadable file or bytes that are not UTF-8 are errors
/// naming the file (and the variable that chooses another), or the line and byte.
pub fn read_text(path: &Path, shape: &TableShape) -> Result<String, MatrixError> {
    let bytes = std::fs::read(path).map_err(|e| {
        error(
            path,
            None,
            None,
            None,
            format!(
                "cannot read the file: {e} (set {} to choose another table)",
                shape.env_var
            ),
        )
    })?;
    utf8(path, &bytes).map(str::to_string)
}

/// The table's bytes as text; bytes that are not UTF-8 are an error naming the line and the
/// byte (1-based, counted in bytes from the start of the line).
fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, MatrixError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        error(
            path,
            Some(line),
            None,
            None,
            format!(
                "not UTF-8: byte {} of the line (byte offset {at} of the file) is 0x{:02x}, which \
                 is not valid UTF-8; save the table as UTF-8",
                at - line_start + 1,
                bytes[at]
            ),
        )
    })
}

fn error(
    path: &Path,
    line: Option<u64>,
    column: Option<&str>,
    value: Option<&str>,
    message: String,
) -> MatrixError {
    MatrixError {
        path: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        value: value.map(str::to_string),
        message,
    }
}

/// Parses and validates table text (`path` is used in messages only).
pub fn parse(path: &Path, text: &str, default_ram_pct: f64) -> Result<Vec<CellSpec>, MatrixError> {
    parse_rows(path, text, &MATRIX, |row| {
        let cell = row.cell(default_ram_pct)?;
        Ok((cell.test_name.clone(), cell))
    })
}

/// Parses and validates table text of `shape`: the header (unknown, repeated and missing
/// columns), each row through `row` (which returns the row's unique key and its value), keys
/// unique, at least one row. Errors name the file, the real line, the column, the value and
/// what is allowed.
pub fn parse_rows<T>(
    path: &Path,
    text: &str,
    shape: &TableShape,
    mut row: impl FnMut(&Row<'_>) -> Result<(String, T), MatrixError>,
) -> Result<Vec<T>, MatrixError> {
    let layout = Layout::scan(text.as_bytes());
    if let Some(line) = layout.unclosed_quote {
        return Err(error(
            path,
            Some(line),
            None,
            None,
            "a quote (\") opened on this line is never closed, so it would swallow the rest of \
             the table into one value: close the quote, or remove it"
                .into(),
        ));
    }
    // The csv reader's own line numbers skip comment and blank lines; the layout has the real
    // ones, by record index (the header is record 0).
    let line_of = |record: Option<u64>| {
        record.and_then(|r| layout.record_lines.get(usize::try_from(r).ok()?).copied())
    };
    let mut rdr = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let columns = Columns::read(path, line_of(Some(0)), &mut rdr, shape)?;
    let mut cells: Vec<T> = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            error(
                path,
                line_of(e.position().map(|p| p.record())),
                None,
                None,
                format!("malformed row: {e}"),
            )
        })?;
        let line = line_of(rec.position().map(|p| p.record())).unwrap_or(0);
        if let Some(i) = rec.iter().position(|f| f.contains(['\n', '\r'])) {
            let column = columns.name_of(i);
            return Err(error(
                path,
                Some(line),
                column,
                None,
                "a quoted value runs over the end of the line (the quote opened on this line \
                 closes on a later one): no value may span lines; close the quote on the line \
                 where it opened"
                    .into(),
            ));
        }
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        let r = Row {
            path,
            columns: &columns,
            line,
            rec: &rec,
        };
        let (key, cell) = row(&r)?;
        r.check_unique(&key, shape, &mut seen)?;
        cells.push(cell);
    }
    if cells.is_empty() {
        return Err(error(
            path,
            None,
            None,
            None,
            format!(
                "the table has no {}s: add at least one row under the header",
                shape.unique.0
            ),
        ));
    }
    Ok(cells)
}

/// Where the table's records start, as the csv reader splits them (the same rules: `#` starts a
/// comment only at the start of a record, blank lines are skipped, a quote opens a quoted value
/// only at the start of a field, `""` inside one is a literal quote), and whether a quote is
/// left open at the end.
#[derive(Debug, Clone, PartialEq, Default)]
struct Layout {
    /// The 1-based line on which each record starts, by record index (the header is 0).
    record_lines: Vec<u64>,
    /// The line of a quote still open at the end of the text.
    unclosed_quote: Option<u64>,
}

impl Layout {
    fn scan(text: &[u8]) -> Layout {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            StartRecord,
            StartField,
            InField,
            InQuoted,
            QuoteInQuoted,
            InComment,
        }
        let mut layout = Layout::default();
        let mut state = State::StartRecord;
        let mut line: u64 = 1;
        let mut quote_line = 0;
        for &b in text {
            let terminator = b == b'\n' || b == b'\r';
            state = match state {
                State::StartRecord if terminator => State::StartRecord,
                State::StartRecord if b == b'#' => State::InComment,
                State::StartRecord | State::StartField => {
                    if state == State::StartRecord {
                        layout.record_lines.push(line);
                    }
                    match b {
                        b'"' => {
                            quote_line = line;
                            State::InQuoted
                        }
                        b',' => State::StartField,
                        _ if terminator => State::StartRecord,
                        _ => State::InField,
                    }
                }
                State::InField | State::QuoteInQuoted => match b {
                    b'"' if state == State::QuoteInQuoted => State::InQuoted,
                    b',' => State::StartField,
                    _ if terminator => State::StartRecord,
                    _ => State::InField,
                },
                State::InQuoted if b == b'"' => State::QuoteInQuoted,
                State::InQuoted => State::InQuoted,
                State::InComment if b == b'\n' => State::StartRecord,
                State::InComment => State::InComment,
            };
            if b == b'\n' {
                line += 1;
            }
        }
        if state == State::InQuoted {
            layout.unclosed_quote = Some(quote_line);
        }
        layout
    }
}

/// The header: which column is where.
struct Columns {
    index: HashMap<String, usize>,
}

impl Columns {
    /// Reads the header row and checks it: not empty, no unknown or repeated column, every
    /// required column present.
    fn read(
        path: &Path,
        line: Option<u64>,
        rdr: &mut csv::Reader<&[u8]>,
        shape: &TableShape,
    ) -> Result<Columns, MatrixError> {
        let headers = rdr
            .headers()
            .map_err(|e| error(path, line, None, None, e.to_string()))?;
        if headers.iter().all(|h| h.is_empty()) {
            return Err(error(
                path,
                None,
                None,
                None,
                format!(
                    "the table is empty: expected a header row and at least one {}",
                    shape.unique.0
                ),
            ));
        }
        let mut index = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            if !shape.required.contains(&h) && !shape.optional.contains(&h) {
                return Err(error(
                    path,
                    line,
                    Some(h),
                    None,
                    format!(
                        "unknown column; allowed columns are {} (required) and {} (optional)",
                        shape.required.join(", "),
                        shape.optional.join(", ")
                    ),
                ));
            }
            if index.insert(h.to_string(), i).is_some() {
                return Err(error(
                    path,
                    line,
                    Some(h),
                    None,
                    "column appears twice".into(),
                ));
            }
        }
        let missing: Vec<&str> = shape
            .required
            .iter()
            .copied()
            .filter(|c| !index.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(error(
                path,
                line,
                None,
                None,
                format!("missing required column(s): {}", missing.join(", ")),
            ));
        }
        Ok(Columns { index })
    }

    /// The name of the column at `i`.
    fn name_of(&self, i: usize) -> Option<&str> {
        self.index
            .iter()
            .find(|&(_, &j)| j == i)
            .map(|(name, _)| name.as_str())
    }
}

/// One data row, with what its messages need (file, line).
pub struct Row<'a> {
    path: &'a Path,
    columns: &'a Columns,
    line: u64,
    rec: &'a csv::StringRecord,
}

impl Row<'_> {
    /// `file:line` of this row.
    pub fn source(&self) -> String {
        format!("{}:{}", self.path.display(), self.line)
    }

    /// The value of `col` ("" when the table has no such column).
    pub fn get(&self, col: &str) -> &str {
        self.columns
            .index
            .get(col)
            .and_then(|&i| self.rec.get(i))
            .unwrap_or("")
    }

    /// The error for `col`'s value: it should have been `allowed`.
    pub fn bad(&self, col: &str, allowed: &str) -> MatrixError {
        self.error(col, format!("expected {allowed}"))
    }

    /// An error at `col` of this row, quoting its value, with `message`.
    pub fn error(&self, col: &str, message: String) -> MatrixError {
        error(
            self.path,
            Some(self.line),
            Some(col),
            Some(self.get(col)),
            message,
        )
    }

    /// `col` as a number in `range`.
    pub fn number<T: Number>(&self, col: &str, range: &NumberIn<T>) -> Result<T, MatrixError> {
        range
            .parse(self.get(col))
            .map_err(|allowed| self.bad(col, allowed))
    }

    /// `col` as a number in `range`, or `default` when empty.
    pub fn number_or<T: Number>(
        &self,
        col: &str,
        range: &NumberIn<T>,
        default: T,
    ) -> Result<T, MatrixError> {
        if self.get(col).is_empty() {
            Ok(default)
        } else {
            self.number(col, range)
        }
    }

    /// `col` as a token count (`65536` or `64K`).
    pub fn tokens(&self, col: &str) -> Result<u32, MatrixError> {
        parse_tokens(self.get(col)).ok_or_else(|| {
            self.bad(
                col,
                "a whole number ≥ 1, optionally with a K suffix (64K = 65536)",
            )
        })
    }

    /// `col` as true/false, `default` when empty.
    pub fn flag(&self, col: &str, default: bool) -> Result<bool, MatrixError> {
        match self.get(col).to_ascii_lowercase().as_str() {
            "" => Ok(default),
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(self.bad(col, "true or false")),
        }
    }

    /// `col` as a gate: a number > 0, or `engine*F`.
    fn gate(&self, col: &str, allowed: &str) -> Result<GateValue, MatrixError> {
        let v = self.get(col);
        let parsed = match v.strip_prefix(ENGINE_PREFIX) {
            Some(factor) => POSITIVE.parse(factor).map(GateValue::Engine),
            None => POSITIVE.parse(v).map(GateValue::Absolute),
        };
        parsed.map_err(|_| self.bad(col, allowed))
    }

    /// `col` as text that must not be empty.
    pub fn text(&self, col: &str, allowed: &str) -> Result<&str, MatrixError> {
        match self.get(col) {
            "" => Err(self.bad(col, allowed)),
            v => Ok(v),
        }
    }

    /// `name`: a slug of at most [`MAX_NAME_BYTES`] bytes.
    pub fn name(&self) -> Result<&str, MatrixError> {
        let name = self.get("name");
        if name.len() > MAX_NAME_BYTES {
            Err(self.error(
                "name",
                format!(
                    "the name is {} characters long; at most {MAX_NAME_BYTES} are allowed, so \
                     that its result files' names fit the file system: shorten it",
                    name.len()
                ),
            ))
        } else if valid_slug(name) {
            Ok(name)
        } else {
            Err(self.bad(
                "name",
                "a slug: a lowercase letter, then lowercase letters, digits or single underscores (e.g. gemma3_tools_27b)",
            ))
        }
    }

    /// `model`: a name without spaces.
    pub fn model(&self) -> Result<&str, MatrixError> {
        let model = self.get("model");
        if model.is_empty() || model.chars().any(char::is_whitespace) {
            Err(self.bad(
                "model",
                "a model name without spaces, e.g. qwen2.5:3b-instruct",
            ))
        } else {
            Ok(model)
        }
    }

    /// `fill_tokens` (the default fill when empty), checked to fit `num_ctx` with the answer.
    fn fill(&self, num_ctx: u32, num_predict: u32) -> Result<u32, MatrixError> {
        let fill_tokens = if self.get("fill_tokens").is_empty() {
            default_fill(num_ctx)
        } else {
            self.tokens("fill_tokens")?
        };
        if fill_tokens as u64 + num_predict as u64 > num_ctx as u64 {
            return Err(self.error(
                "fill_tokens",
                format!(
                    "fill_tokens {fill_tokens} + num_predict {num_predict} exceeds num_ctx {num_ctx}: \
                     the prompt and answer must fit the context, or the server truncates"
                ),
            ));
        }
        Ok(fill_tokens)
    }

    /// The gates: absolute limits, and the engine-relative factors when the table gives any.
    /// A relative limit's place in [`Gates`] holds a value that fails every measurement (TTFT
    /// 0 s, decode `f64::MAX`) until [`crate::engine::resolve_gates`] replaces it, so a cell
    /// judged unresolved cannot pass.
    fn gates(&self, default_ram_pct: f64) -> Result<(Gates, Option<RelativeGates>), MatrixError> {
        let ttft = self.gate("ttft_max_s", TTFT_GATE)?;
        let tok_s = self.gate("tok_s_min", DECODE_GATE)?;
        let gates = Gates {
            ttft_max_s: match ttft {
                GateValue::Absolute(v) => v,
                GateValue::Engine(_) => 0.0,
            },
            tok_s_min: match tok_s {
                GateValue::Absolute(v) => v,
                GateValue::Engine(_) => f64::MAX,
            },
            stability_min: self.number("stability_min", &FRACTION)?,
            ram_max_pct: self.number_or("ram_max_pct", &PERCENT, default_ram_pct)?,
        };
        let factor = |g| match g {
            GateValue::Engine(f) => Some(f),
            GateValue::Absolute(_) => None,
        };
        let relative = RelativeGates {
            ttft_factor: factor(ttft),
            tok_s_factor: factor(tok_s),
            engine: None,
        };
        let any = relative.ttft_factor.is_some() || relative.tok_s_factor.is_some();
        Ok((gates, any.then_some(relative)))
    }

    /// The cell this row defines.
    fn cell(&self, default_ram_pct: f64) -> Result<CellSpec, MatrixError> {
        let name = self.name()?;
        let model = self.model()?;
        let num_ctx = self.tokens("num_ctx")?;
        let num_predict = self.number_or("num_predict", &COUNT, DEFAULT_NUM_PREDICT)?;
        let fill_tokens = self.fill(num_ctx, num_predict)?;
        let num_batch = self.number("num_batch", &COUNT)?;
        let num_thread = self.number("num_thread", &COUNT)?;
        let (gates, relative_gates) = self.gates(default_ram_pct)?;
        let optional = self.flag("optional", false)?;
        let optimize = self.flag("optimize", true)?;
        let use_case = self.text("use_case", "a short description of the use case")?;
        let probe = crate::quality::cell::from_row(self, num_ctx, fill_tokens)?;
        Ok(CellSpec {
            test_name: test_name(name, num_ctx),
            name: name.to_string(),
            model: model.to_string(),
            category: self.get("category").to_string(),
            num_ctx,
            fill_tokens,
            num_batch,
            num_thread,
            num_predict,
            gates,
            use_case: use_case.to_string(),
            optional,
            optimize,
            source: format!("{}:{}", self.path.display(), self.line),
            relative_gates,
            probe,
        })
    }

    /// Fails when an earlier row already defined the same cell (name + num_ctx).
    fn check_unique(
        &self,
        key: &str,
        shape: &TableShape,
        seen: &mut HashMap<String, u64>,
    ) -> Result<(), MatrixError> {
        let (what, columns) = shape.unique;
        match seen.insert(key.to_string(), self.line) {
            Some(first) => Err(self.error(
                "name",
                format!(
                    "duplicate {what} {key}: line {first} already defines it ({columns} must be unique)"
                ),
            )),
            None => Ok(()),
        }
    }
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
    fn engine_relative_gates() {
        let cells = p(&table(&[
            "a,m,c,2048,100,8,2,engine*3,engine*0.5,0.5,u",
            "b,m,c,2048,100,8,2,30,engine*0.25,0.5,u",
            "c,m,c,2048,100,8,2,30,1,0.5,u",
        ]))
        .unwrap();
        let rel = cells[0].relative_gates.as_ref().unwrap();
        assert_eq!((rel.ttft_factor, rel.tok_s_factor), (Some(3.0), Some(0.5)));
        assert!(rel.engine.is_none());
        let rel = cells[1].relative_gates.as_ref().unwrap();
        assert_eq!((rel.ttft_factor, rel.tok_s_factor), (None, Some(0.25)));
        assert_eq!(cells[1].gates.ttft_max_s, 30.0);
        assert!(cells[2].relative_gates.is_none());
    }

    #[rstest]
    #[case("a,m,c,2048,100,8,2,engine*0,1,0.5,u", "ttft_max_s", "engine*0")]
    #[case("a,m,c,2048,100,8,2,engine*,1,0.5,u", "ttft_max_s", "engine*")]
    #[case("a,m,c,2048,100,8,2,30,engine*x,0.5,u", "tok_s_min", "engine*x")]
    #[case("a,m,c,2048,100,8,2,30,engine/2,0.5,u", "tok_s_min", "engine/2")]
    #[case("a,m,c,2048,100,8,2,30,1,engine*1,u", "stability_min", "engine*1")]
    fn bad_engine_gates(#[case] row: &str, #[case] column: &str, #[case] value: &str) {
        let e = p(&table(&[row])).unwrap_err();
        assert_eq!(e.column.as_deref(), Some(column), "{e}");
        assert_eq!(e.value.as_deref(), Some(value), "{e}");
        if column != "stability_min" {
            assert!(e.message.contains("engine*F with F > 0"), "{e}");
            assert!(e.message.contains("llama-bench"), "{e}");
        }
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
    fn an_unclosed_quote_is_an_error_at_the_line_it_opened() {
        let text = table(&[
            "a,m,c,2048,100,8,2,30,1,0.5,u",
            "b,m,c,2048,100,8,2,30,1,0.5,\"complex refactoring",
            "c,m,c,2048,100,8,2,30,1,0.5,u",
            "d,m,c,2048,100,8,2,30,1,0.5,u",
        ]);
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("invalid matrix m.csv:4"), "{e}");
        assert!(e.message.contains("never closed"), "{e}");
        // In the middle of a row too, and in the header.
        let e = p(&table(&[
            "a,\"m,c,2048,100,8,2,30,1,0.5,u",
            "b,m,c,2048,100,8,2,30,1,0.5,u",
        ]))
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("never closed"), "{e}");
        let e = p("# c\n\n\"name,model\na,m\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn a_value_spanning_lines_is_an_error_at_the_line_its_quote_opened() {
        // Two stray quotes would otherwise swallow the row between them into one value.
        let text = table(&[
            "a,m,c,2048,100,8,2,30,1,0.5,\"u",
            "b,m,c,2048,100,8,2,30,1,0.5,u",
            "c,m,c,2048,100,8,2,30,1,0.5,u\"",
        ]);
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.column.as_deref(), Some("use_case"), "{e}");
        assert!(e.message.contains("no value may span lines"), "{e}");
    }

    /// Blank lines, comment lines, quoted values (with commas, escaped quotes, a `#`), CRLF
    /// line ends and whitespace before a bad row: the error names the bad row's real line.
    #[rstest]
    #[case("\n\n", 5)]
    #[case("# one\n# two\n\n# three\n", 7)]
    #[case("a,m,c,2048,100,8,2,30,1,0.5,\"x, \"\"y\"\", #z\"\n\n", 5)]
    #[case("a,m,c,2048,100,8,2,30,1,0.5,u\r\n\r\n# c\r\n", 6)]
    #[case("\n  # indented comment is a row of one field\n", 4)]
    fn errors_name_the_real_line(#[case] before: &str, #[case] line: u64) {
        let text = format!(
            "# c\n{HEADER}\n{before}z,m,c,abc,100,8,2,30,1,0.5,u\nw,m,c,2048,100,8,2,30,1,0.5,u\n"
        );
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, Some(line), "{e}\n{text}");
    }

    #[test]
    fn good_rows_after_comments_have_their_real_line_as_source() {
        let text = format!(
            "\n# c\n\n{HEADER}\n\n# c\na,m,c,2048,100,8,2,30,1,0.5,\"q, \"\"x\"\"\"\n\nb,m,c,2048,100,8,2,30,1,0.5,u\n"
        );
        let cells = p(&text).unwrap();
        let sources: Vec<&str> = cells.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(sources, ["m.csv:7", "m.csv:9"]);
        assert_eq!(cells[0].use_case, "q, \"x\"");
    }

    /// The layout splits records where the csv reader does, on tables made of every awkward
    /// piece the scanner handles (a deterministic sample, every combination of 3 pieces).
    #[test]
    fn the_layout_agrees_with_the_csv_reader() {
        let pieces = [
            "a,b\n",
            "\n",
            "# c,\"\n",
            "\"q\",b\n",
            "\"q\"\"r\",b\n",
            "x\"y,b\n",
            "a,b\r\n",
            "\r\n",
            " #a,b\n",
            "\"\",\"\"\n",
            "a,\"b\nc\"\n",
        ];
        for i in 0..pieces.len() {
            for j in 0..pieces.len() {
                for k in 0..pieces.len() {
                    let text = format!("h,h2\n{}{}{}", pieces[i], pieces[j], pieces[k]);
                    let layout = Layout::scan(text.as_bytes());
                    assert_eq!(layout.unclosed_quote, None, "{text:?}");
                    let mut rdr = csv::ReaderBuilder::new()
                        .comment(Some(b'#'))
                        .flexible(true)
                        .from_reader(text.as_bytes());
                    let records = rdr.records().count() + 1;
                    assert_eq!(layout.record_lines.len(), records, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn non_utf8_names_the_line_and_byte() {
        let mut bytes = table(&["a,m,c,2048,100,8,2,30,1,0.5,u"]).into_bytes();
        bytes.extend_from_slice(b"b,m,c,2048,100,8,2,30,1,0.5,caf\xe9\n");
        let e = utf8(Path::new("m.csv"), &bytes).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("not UTF-8: byte 32 of the line"), "{e}");
        assert!(e.message.contains("0xe9"), "{e}");
        let dir = std::env::temp_dir().join(format!("o3-matrix-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("latin1.csv");
        std::fs::write(&file, &bytes).unwrap();
        let e = load(&file, 80.0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("invalid matrix {}:4", file.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_limited_so_their_files_can_be_written() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let e = p(&table(&[&format!("{long},m,c,2048,100,8,2,30,1,0.5,u")])).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("name"), "{e}");
        assert!(e.message.contains("at most 64"), "{e}");
        let e = p(&table(&[&format!(
            "{},m,c,2048,100,8,2,30,1,0.5,u",
            "a".repeat(300)
        )]))
        .unwrap_err();
        assert!(e.message.contains("300 characters"), "{e}");
        // The longest allowed name's worst file name fits, and can be written.
        let name = "a".repeat(MAX_NAME_BYTES);
        let probe = format!(
            "{name}::opt::ctx_{}_t{}_b{}_r{}",
            u32::MAX,
            u32::MAX,
            u32::MAX,
            u32::MAX
        );
        let file = crate::rundir::cell_file_name(&probe);
        let tmp = format!(".{file}.{}.{}.tmp", 4_194_304, u64::MAX);
        assert!(tmp.len() <= 255, "{} bytes", tmp.len());
        assert_eq!(tmp.len(), MAX_NAME_BYTES + 96);
        let dir = std::env::temp_dir().join(format!("o3-matrix-long-{}", std::process::id()));
        crate::rundir::write_atomic(&dir.join(&file), b"{}").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(p(&table(&[&format!("{name},m,c,2048,100,8,2,30,1,0.5,u")])).is_ok());
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
        assert!(
            user.iter().all(|c| c.relative_gates.is_none()),
            "the user's gates are absolute"
        );
        let reference = load(&root.join("reference.csv"), 80.0).unwrap();
        assert!(reference.len() >= 6);
        for c in &reference {
            let rel = c.relative_gates.as_ref();
            assert!(
                rel.is_some_and(|r| r.ttft_factor.is_some() && r.tok_s_factor.is_some()),
                "{}: the reference gates are engine-relative",
                c.test_name
            );
        }
    }
}
