//! The session table (`harness/agentic.csv`, `harness/agentic_reference.csv`, or
//! `O3_AGENTIC_MATRIX`): one row per session test, read and validated before any test runs by
//! the matrix table's parser ([`crate::matrix::parse_rows`]), with the same error quality
//! (file, real line, column, value, what is allowed).
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `name` | yes | slug, as in the matrix |
//! | `model` | yes | model as the server knows it |
//! | `workload` | yes | `coding`, `rag` or `chat` ([`WorkloadKind`]) |
//! | `num_ctx` | yes | allocated context; `65536` or `64K` |
//! | `num_batch`, `num_thread` | yes | load-time options, sent on every request |
//! | `duration_s` | yes | how long the session test runs (s); the turn in flight ends |
//! | `target_fill` | yes (may be empty: 0.8) | share of `num_ctx` the history may grow to before a new conversation starts |
//! | `think_s` | yes (may be empty: 0) | pause between turns (s) |
//! | `success_min` | yes (may be empty: 0.95) | query-success gate (share of turns, on its Wilson interval) |
//! | `tok_s_min` | yes | mean decode tok/s gate |
//! | `ttft_p95_max_s` | yes | p95 TTFT gate (s) |
//! | `accuracy_min` | yes (may be empty: measured, not gated) | answer-accuracy gate (share, on its Wilson interval) |
//! | `rss_growth_max_pct` | yes (may be empty: 10) | RSS growth gate (% of the loaded size) |
//! | `stability_min` | yes | stability-score gate |
//! | `num_predict` | no | output tokens per turn (default 256) |
//! | `use_case` | no | what the session speaks for |
//! | `optional` | no | `true`: ignored unless `--include-ignored` |
//! | `ram_max_pct` | no | system RAM limit (default `O3_RAM_LIMIT_PCT`) |

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{COUNT, NumberIn, PERCENT};
use crate::matrix::{self, FRACTION, MatrixError, POSITIVE, Row, TableShape};

const REQUIRED: [&str; 15] = [
    "name",
    "model",
    "workload",
    "num_ctx",
    "num_batch",
    "num_thread",
    "duration_s",
    "target_fill",
    "think_s",
    "success_min",
    "tok_s_min",
    "ttft_p95_max_s",
    "accuracy_min",
    "rss_growth_max_pct",
    "stability_min",
];
const OPTIONAL: [&str; 4] = ["num_predict", "use_case", "optional", "ram_max_pct"];

/// The session table's shape.
pub const SHAPE: TableShape = TableShape {
    required: &REQUIRED,
    optional: &OPTIONAL,
    env_var: "O3_AGENTIC_MATRIX",
    unique: ("session", "name + workload + num_ctx"),
};

/// Output tokens per turn when the table leaves `num_predict` out.
pub const DEFAULT_NUM_PREDICT: u32 = 256;
/// `target_fill` when empty.
pub const DEFAULT_TARGET_FILL: f64 = 0.8;
/// `success_min` when empty.
pub const DEFAULT_SUCCESS_MIN: f64 = 0.95;
/// `rss_growth_max_pct` when empty.
pub const DEFAULT_RSS_GROWTH_MAX_PCT: f64 = 10.0;

/// What a session does turn after turn ([`crate::agentic::workload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Reading files of a codebase as tool results and answering questions about them.
    Coding,
    /// Retrieved passages of a document set and questions that need one or several of them.
    Rag,
    /// A technical conversation whose later turns depend on earlier ones.
    Chat,
}

impl WorkloadKind {
    /// Every kind.
    pub const ALL: [WorkloadKind; 3] =
        [WorkloadKind::Coding, WorkloadKind::Rag, WorkloadKind::Chat];

    /// `coding`, `rag`, `chat`.
    pub fn label(self) -> &'static str {
        match self {
            WorkloadKind::Coding => "coding",
            WorkloadKind::Rag => "rag",
            WorkloadKind::Chat => "chat",
        }
    }

    fn parse(s: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// The gates of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionGates {
    /// Least share of turns that succeed (judged on the Wilson interval).
    pub success_min: f64,
    /// Least mean client decode rate (tokens/s).
    pub tok_s_min: f64,
    /// Largest p95 TTFT (s).
    pub ttft_p95_max_s: f64,
    /// Least share of correct answers; `None`: measured, not gated.
    pub accuracy_min: Option<f64>,
    /// Largest RSS growth over the session, % of the loaded size.
    pub rss_growth_max_pct: f64,
    /// Least stability score.
    pub stability_min: f64,
    /// System RAM limit (%).
    pub ram_max_pct: f64,
}

/// One row of the session table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// `<name>::agentic_<workload>_<K>k`.
    pub test_name: String,
    /// The row's slug.
    pub name: String,
    /// The model.
    pub model: String,
    /// The workload.
    pub workload: WorkloadKind,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// `num_batch`.
    pub num_batch: u32,
    /// `num_thread`.
    pub num_thread: u32,
    /// How long the test runs (s), `O3_AGENTIC_DURATION_S` applied.
    pub duration_s: f64,
    /// Share of `num_ctx` the history may grow to.
    pub target_fill: f64,
    /// Pause between turns (s).
    pub think_s: f64,
    /// Output tokens per turn.
    pub num_predict: u32,
    /// The gates.
    pub gates: SessionGates,
    /// What the session speaks for.
    pub use_case: String,
    /// Ignored unless `--include-ignored`.
    pub optional: bool,
    /// `file:line` of the row.
    pub source: String,
}

impl SessionSpec {
    /// The most history tokens a conversation may reach before a new one starts.
    pub fn history_budget(&self) -> u64 {
        (f64::from(self.num_ctx) * self.target_fill).floor() as u64
    }
}

/// Test name of a session: `<name>::agentic_<workload>_<K>k` (`_3000` when not a multiple of
/// 1024).
pub fn test_name(name: &str, workload: WorkloadKind, num_ctx: u32) -> String {
    let ctx = matrix::ctx_label(num_ctx);
    let ctx = ctx.strip_prefix("ctx_").unwrap_or(&ctx);
    format!("{name}::agentic_{}_{ctx}", workload.label())
}

const SECONDS: NumberIn<f64> = NumberIn::new(
    Excluded(0.0),
    Included(604_800.0),
    "a number of seconds > 0, at most a week",
);
const PAUSE: NumberIn<f64> = NumberIn::new(
    Included(0.0),
    Included(3600.0),
    "a number of seconds from 0 to 3600",
);
const FILL: NumberIn<f64> = NumberIn::new(
    Excluded(0.0),
    Excluded(1.0),
    "a number between 0 and 1 (exclusive), e.g. 0.8",
);
const GROWTH: NumberIn<f64> = NumberIn::new(Excluded(0.0), Unbounded, "a percentage > 0");

/// `O3_AGENTIC_DURATION_S`: the range of the override of every row's duration.
pub const DURATION_OVERRIDE: NumberIn<f64> = SECONDS;

/// Reads and validates the table at `path`; `duration_override` replaces every row's
/// `duration_s`; `default_ram_pct` is used where the table has no `ram_max_pct`.
pub fn load(
    path: &Path,
    default_ram_pct: f64,
    duration_override: Option<f64>,
) -> Result<Vec<SessionSpec>, MatrixError> {
    let text = matrix::read_text(path, &SHAPE)?;
    parse(path, &text, default_ram_pct, duration_override)
}

/// Parses and validates table text (`path` is used in messages only).
pub fn parse(
    path: &Path,
    text: &str,
    default_ram_pct: f64,
    duration_override: Option<f64>,
) -> Result<Vec<SessionSpec>, MatrixError> {
    matrix::parse_rows(path, text, &SHAPE, |row| {
        let s = session(row, default_ram_pct, duration_override)?;
        Ok((s.test_name.clone(), s))
    })
}

fn session(
    row: &Row<'_>,
    default_ram_pct: f64,
    duration_override: Option<f64>,
) -> Result<SessionSpec, MatrixError> {
    let name = row.name()?;
    let model = row.model()?;
    let workload = WorkloadKind::parse(row.get("workload"))
        .ok_or_else(|| row.bad("workload", "coding, rag or chat"))?;
    let num_ctx = row.tokens("num_ctx")?;
    let num_batch = row.number("num_batch", &COUNT)?;
    let num_thread = row.number("num_thread", &COUNT)?;
    let duration_s = row.number("duration_s", &SECONDS)?;
    let target_fill = row.number_or("target_fill", &FILL, DEFAULT_TARGET_FILL)?;
    let think_s = row.number_or("think_s", &PAUSE, 0.0)?;
    let num_predict = row.number_or("num_predict", &COUNT, DEFAULT_NUM_PREDICT)?;
    let budget = (f64::from(num_ctx) * target_fill).floor() as u64;
    if u64::from(num_predict) * 2 > budget {
        return Err(row.error(
            "num_predict",
            format!(
                "num_predict {num_predict} is more than half of the history budget {budget} \
                 tokens (target_fill {target_fill} × num_ctx {num_ctx}): a conversation could \
                 not hold one turn's answer and its question"
            ),
        ));
    }
    let accuracy_min = if row.get("accuracy_min").is_empty() {
        None
    } else {
        Some(row.number("accuracy_min", &FRACTION)?)
    };
    let gates = SessionGates {
        success_min: row.number_or("success_min", &FRACTION, DEFAULT_SUCCESS_MIN)?,
        tok_s_min: row.number("tok_s_min", &POSITIVE)?,
        ttft_p95_max_s: row.number("ttft_p95_max_s", &POSITIVE)?,
        accuracy_min,
        rss_growth_max_pct: row.number_or(
            "rss_growth_max_pct",
            &GROWTH,
            DEFAULT_RSS_GROWTH_MAX_PCT,
        )?,
        stability_min: row.number("stability_min", &FRACTION)?,
        ram_max_pct: row.number_or("ram_max_pct", &PERCENT, default_ram_pct)?,
    };
    Ok(SessionSpec {
        test_name: test_name(name, workload, num_ctx),
        name: name.to_string(),
        model: model.to_string(),
        workload,
        num_ctx,
        num_batch,
        num_thread,
        duration_s: duration_override.unwrap_or(duration_s),
        target_fill,
        think_s,
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
    use rstest::rstest;

    const HEADER: &str = "name,model,workload,num_ctx,num_batch,num_thread,duration_s,target_fill,think_s,success_min,tok_s_min,ttft_p95_max_s,accuracy_min,rss_growth_max_pct,stability_min,use_case";

    fn p(rows: &[&str]) -> Result<Vec<SessionSpec>, MatrixError> {
        let mut t = format!("# sessions\n{HEADER}\n");
        for r in rows {
            t.push_str(r);
            t.push('\n');
        }
        parse(Path::new("a.csv"), &t, 80.0, None)
    }

    #[test]
    fn a_row_with_the_defaults() {
        let s = p(&[
            "g27,orieg/gemma3-tools:27b-it-qat,coding,128K,8,16,720,,,,3.5,60,,,0.7,refactoring",
        ])
        .unwrap();
        let s = &s[0];
        assert_eq!(s.test_name, "g27::agentic_coding_128k");
        assert_eq!(
            (s.num_ctx, s.duration_s, s.target_fill, s.think_s),
            (131072, 720.0, 0.8, 0.0)
        );
        assert_eq!(s.gates.success_min, 0.95);
        assert_eq!(s.gates.accuracy_min, None);
        assert_eq!(s.gates.rss_growth_max_pct, 10.0);
        assert_eq!(s.gates.ram_max_pct, 80.0);
        assert_eq!(s.num_predict, DEFAULT_NUM_PREDICT);
        assert_eq!(s.source, "a.csv:3");
        assert_eq!(s.history_budget(), 104_857);
    }

    #[test]
    fn a_table_with_exactly_the_required_columns_is_valid() {
        let header = REQUIRED.join(",");
        let t = format!("{header}\nb,m,rag,8K,8,2,60,,,,2,30,,,0.5\n");
        let s = parse(Path::new("a.csv"), &t, 80.0, None).unwrap();
        assert_eq!(s[0].test_name, "b::agentic_rag_8k");
        assert_eq!((s[0].use_case.as_str(), s[0].optional), ("", false));
    }

    #[test]
    fn the_duration_override_replaces_every_row() {
        let t = format!("{HEADER}\na,m,chat,4K,8,2,90,0.5,1,0.9,1,10,0.2,30,0.5,u\n");
        let s = parse(Path::new("a.csv"), &t, 80.0, Some(12.0)).unwrap();
        assert_eq!(s[0].duration_s, 12.0);
        assert_eq!((s[0].target_fill, s[0].think_s), (0.5, 1.0));
        assert_eq!(s[0].gates.accuracy_min, Some(0.2));
    }

    #[rstest]
    #[case(
        "a,m,poetry,4K,8,2,90,,,,1,10,,,0.5,u",
        "workload",
        "poetry",
        "coding, rag or chat"
    )]
    #[case("a,m,chat,4K,8,2,0,,,,1,10,,,0.5,u", "duration_s", "0", "seconds > 0")]
    #[case(
        "a,m,chat,4K,8,2,90,1.2,,,1,10,,,0.5,u",
        "target_fill",
        "1.2",
        "between 0 and 1"
    )]
    #[case(
        "a,m,chat,4K,8,2,90,,-1,,1,10,,,0.5,u",
        "think_s",
        "-1",
        "from 0 to 3600"
    )]
    #[case(
        "a,m,chat,4K,8,2,90,,,1.5,1,10,,,0.5,u",
        "success_min",
        "1.5",
        "from 0 to 1"
    )]
    #[case("a,m,chat,4K,8,2,90,,,,,10,,,0.5,u", "tok_s_min", "", "a number > 0")]
    #[case(
        "a,m,chat,4K,8,2,90,,,,1,10,x,,0.5,u",
        "accuracy_min",
        "x",
        "from 0 to 1"
    )]
    #[case(
        "a,m,chat,4K,8,2,90,,,,1,10,,0,0.5,u",
        "rss_growth_max_pct",
        "0",
        "percentage > 0"
    )]
    #[case("a,m,chat,4X,8,2,90,,,,1,10,,,0.5,u", "num_ctx", "4X", "K suffix")]
    fn bad_values_name_line_column_value_and_what_is_allowed(
        #[case] row: &str,
        #[case] column: &str,
        #[case] value: &str,
        #[case] allowed: &str,
    ) {
        let e = p(&[row]).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.column.as_deref(), Some(column), "{e}");
        assert_eq!(e.value.as_deref(), Some(value), "{e}");
        assert!(e.to_string().contains(allowed), "{e}");
    }

    #[test]
    fn an_answer_budget_that_cannot_fit_is_refused() {
        let t = format!("{HEADER},num_predict\na,m,chat,1K,8,2,90,,,,1,10,,,0.5,u,600\n");
        let e = parse(Path::new("a.csv"), &t, 80.0, None).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("num_predict"));
        assert!(e.message.contains("history budget 819"), "{e}");
    }

    #[test]
    fn duplicates_unknown_and_missing_columns() {
        let e = p(&[
            "a,m,chat,4K,8,2,90,,,,1,10,,,0.5,u",
            "a,m,chat,4K,8,2,60,,,,1,10,,,0.5,u",
        ])
        .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(
            e.message
                .contains("duplicate session a::agentic_chat_4k: line 3 already defines it"),
            "{e}"
        );
        // The same name with another workload is another test.
        assert_eq!(
            p(&[
                "a,m,chat,4K,8,2,90,,,,1,10,,,0.5,u",
                "a,m,rag,4K,8,2,60,,,,1,10,,,0.5,u"
            ])
            .unwrap()
            .len(),
            2
        );
        let e = parse(Path::new("a.csv"), "name,model,fill_tokens\n", 80.0, None).unwrap_err();
        assert!(e.message.contains("unknown column"), "{e}");
        let e = parse(Path::new("a.csv"), "name,model\n", 80.0, None).unwrap_err();
        assert!(
            e.message.contains("missing required column(s): workload"),
            "{e}"
        );
        let e = parse(Path::new("a.csv"), &format!("{HEADER}\n"), 80.0, None).unwrap_err();
        assert!(e.message.contains("no sessions"), "{e}");
    }

    #[test]
    fn an_unreadable_file_names_the_variable() {
        let e = load(Path::new("/nonexistent/agentic.csv"), 80.0, None).unwrap_err();
        assert!(e.to_string().contains("O3_AGENTIC_MATRIX"), "{e}");
    }

    #[test]
    fn shipped_tables_are_valid() {
        let root = crate::config::crate_root();
        let user = load(&root.join("harness/agentic.csv"), 80.0, None).unwrap();
        let names: Vec<&str> = user.iter().map(|s| s.test_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gemma3_tools_27b::agentic_coding_128k",
                "liquid_rag::agentic_rag_128k",
                "qwen25_3b::agentic_chat_64k",
                "gemma3::agentic_chat_64k"
            ]
        );
        let reference = load(&root.join("harness/agentic_reference.csv"), 80.0, None).unwrap();
        let kinds: std::collections::BTreeSet<WorkloadKind> =
            reference.iter().map(|s| s.workload).collect();
        assert_eq!(kinds.len(), 3, "every workload runs live in CI");
    }
}
