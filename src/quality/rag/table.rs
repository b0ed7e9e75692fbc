//! The RAG-against-direct table (`harness/rag.csv`, `harness/rag_reference.csv`, or
//! `O3_RAG_MATRIX`): one row per model × context test, read and validated before any test runs
//! by the matrix table's parser ([`crate::matrix::parse_rows`]), with the same error quality
//! (file, real line, column, value, what is allowed).
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `name` | yes | slug, as in the matrix |
//! | `model` | yes | model as the server knows it |
//! | `num_ctx` | yes | allocated context; `65536` or `64K` |
//! | `fill` | yes | share of `num_ctx` the direct prompt's documents fill (0 < fill < 1), e.g. `0.75` |
//! | `questions` | yes | questions asked, each both ways, spread over the documents that fit |
//! | `top_k` | yes | passages the retriever gives the RAG prompt |
//! | `num_batch`, `num_thread` | yes | load-time options, sent on every request |
//! | `accuracy_min` | yes (may be empty: 0.85) | accuracy gate of the winning approach (on its Wilson interval) |
//! | `ttft_max_s` | yes | mean TTFT gate of direct prompting, the longer prefill (s) |
//! | `num_predict` | no | output tokens per answer (default 48) |
//! | `embed_model` | no | a model of the server with embeddings (`/api/embed`): a second retriever |
//! | `collection` | no | directory of `documents.jsonl` and `questions.jsonl` (default `harness/rag`) |
//! | `use_case` | no | what the test speaks for |
//! | `optional` | no | `true`: ignored unless `--include-ignored` |
//! | `ram_max_pct` | no | system RAM limit (default `O3_RAM_LIMIT_PCT`) |

use std::ops::Bound::{Excluded, Included};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{COUNT, NumberIn, PERCENT};
use crate::matrix::{self, FRACTION, MatrixError, POSITIVE, Row, TableShape};
use crate::quality::collection;
use crate::quality::table::{DEFAULT_ACCURACY_MIN, QUESTION_ROOM, QualityGates};

const REQUIRED: [&str; 10] = [
    "name",
    "model",
    "num_ctx",
    "fill",
    "questions",
    "top_k",
    "num_batch",
    "num_thread",
    "accuracy_min",
    "ttft_max_s",
];
const OPTIONAL: [&str; 6] = [
    "num_predict",
    "embed_model",
    "collection",
    "use_case",
    "optional",
    "ram_max_pct",
];

/// The RAG table's shape.
pub const SHAPE: TableShape = TableShape {
    required: &REQUIRED,
    optional: &OPTIONAL,
    env_var: "O3_RAG_MATRIX",
    unique: ("RAG test", "name + num_ctx"),
};

/// Output tokens per answer when the table leaves `num_predict` out: small models restate the
/// question's vault ("The access code of the amber-falcon vault in the north wing is …")
/// before the value, and at 24 tokens smollm2's answers were cut before the number.
pub const DEFAULT_NUM_PREDICT: u32 = 48;

/// One row of the RAG table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagSpec {
    /// `<name>::rag_vs_direct_<K>k`.
    pub test_name: String,
    /// The row's slug.
    pub name: String,
    /// The model.
    pub model: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Share of `num_ctx` the direct prompt's documents fill.
    pub fill: f64,
    /// Tokens of documents in the direct prompt: `fill × num_ctx`.
    pub fill_tokens: u32,
    /// Questions asked (each both ways).
    pub questions: u32,
    /// Passages in a RAG prompt.
    pub top_k: u32,
    /// `num_batch`.
    pub num_batch: u32,
    /// `num_thread`.
    pub num_thread: u32,
    /// Output tokens per answer.
    pub num_predict: u32,
    /// The server's embedding model, when it has one.
    pub embed_model: Option<String>,
    /// The collection's directory, as written (relative to the crate root).
    pub collection: String,
    /// The gates.
    pub gates: QualityGates,
    /// What the test speaks for.
    pub use_case: String,
    /// Ignored unless `--include-ignored`.
    pub optional: bool,
    /// `file:line` of the row.
    pub source: String,
}

/// Test name of a RAG test: `<name>::rag_vs_direct_<K>k`.
pub fn test_name(name: &str, num_ctx: u32) -> String {
    let ctx = matrix::ctx_label(num_ctx);
    let ctx = ctx.strip_prefix("ctx_").unwrap_or(&ctx);
    format!("{name}::rag_vs_direct_{ctx}")
}

const FILL: NumberIn<f64> = NumberIn::new(
    Excluded(0.0),
    Excluded(1.0),
    "a share of num_ctx between 0 and 1 (exclusive), e.g. 0.75",
);
const QUESTIONS: NumberIn<u32> =
    NumberIn::new(Included(1), Included(1024), "a whole number from 1 to 1024");
const TOP_K: NumberIn<u32> =
    NumberIn::new(Included(1), Included(64), "a whole number from 1 to 64");

/// Reads and validates the table at `path`; `default_ram_pct` is used where the table has no
/// `ram_max_pct`.
pub fn load(path: &Path, default_ram_pct: f64) -> Result<Vec<RagSpec>, MatrixError> {
    let text = matrix::read_text(path, &SHAPE)?;
    parse(path, &text, default_ram_pct)
}

/// Parses and validates table text (`path` is used in messages only).
pub fn parse(path: &Path, text: &str, default_ram_pct: f64) -> Result<Vec<RagSpec>, MatrixError> {
    matrix::parse_rows(path, text, &SHAPE, |row| {
        let s = spec(row, default_ram_pct)?;
        Ok((s.test_name.clone(), s))
    })
}

fn spec(row: &Row<'_>, default_ram_pct: f64) -> Result<RagSpec, MatrixError> {
    let name = row.name()?;
    let model = row.model()?;
    let num_ctx = row.tokens("num_ctx")?;
    let fill = row.number("fill", &FILL)?;
    let questions = row.number("questions", &QUESTIONS)?;
    let top_k = row.number("top_k", &TOP_K)?;
    let num_batch = row.number("num_batch", &COUNT)?;
    let num_thread = row.number("num_thread", &COUNT)?;
    let num_predict = row.number_or("num_predict", &COUNT, DEFAULT_NUM_PREDICT)?;
    let fill_tokens = (f64::from(num_ctx) * fill).floor() as u32;
    if u64::from(fill_tokens) + u64::from(num_predict) + u64::from(QUESTION_ROOM)
        > u64::from(num_ctx)
    {
        return Err(row.error(
            "fill",
            format!(
                "documents of {fill_tokens} tokens (fill {fill} × num_ctx {num_ctx}) leave no room \
                 for the question ({QUESTION_ROOM} tokens) and num_predict {num_predict}: \
                 choose a smaller fill"
            ),
        ));
    }
    if fill_tokens < 512 {
        return Err(row.error(
            "fill",
            format!(
                "documents of {fill_tokens} tokens are fewer than a RAG prompt's passages: at least 512"
            ),
        ));
    }
    let embed_model = Some(row.get("embed_model").trim())
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let collection = Some(row.get("collection").trim())
        .filter(|c| !c.is_empty())
        .unwrap_or(collection::DEFAULT_DIR)
        .to_string();
    let gates = QualityGates {
        accuracy_min: row.number_or("accuracy_min", &FRACTION, DEFAULT_ACCURACY_MIN)?,
        ttft_max_s: row.number("ttft_max_s", &POSITIVE)?,
        ram_max_pct: row.number_or("ram_max_pct", &PERCENT, default_ram_pct)?,
    };
    Ok(RagSpec {
        test_name: test_name(name, num_ctx),
        name: name.to_string(),
        model: model.to_string(),
        num_ctx,
        fill,
        fill_tokens,
        questions,
        top_k,
        num_batch,
        num_thread,
        num_predict,
        embed_model,
        collection,
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
        "name,model,num_ctx,fill,questions,top_k,num_batch,num_thread,accuracy_min,ttft_max_s";

    fn p(rows: &[&str], extra: &str) -> Result<Vec<RagSpec>, MatrixError> {
        let mut t = format!("# rag\n{HEADER}{extra}\n");
        for r in rows {
            t.push_str(r);
            t.push('\n');
        }
        parse(Path::new("rag.csv"), &t, 80.0)
    }

    #[test]
    fn a_row_with_the_defaults_and_one_with_every_column() {
        let s = p(
            &["liquid_rag,liquid-rag:latest,64K,0.75,20,4,8,16,,900"],
            "",
        )
        .unwrap();
        let s = &s[0];
        assert_eq!(s.test_name, "liquid_rag::rag_vs_direct_64k");
        assert_eq!((s.num_ctx, s.fill_tokens), (65_536, 49_152));
        assert_eq!(
            (s.questions, s.top_k, s.num_predict),
            (20, 4, DEFAULT_NUM_PREDICT)
        );
        assert_eq!(s.gates.accuracy_min, DEFAULT_ACCURACY_MIN);
        assert_eq!(s.embed_model, None);
        assert_eq!(s.collection, collection::DEFAULT_DIR);
        assert_eq!(s.source, "rag.csv:3");
        let s = p(
            &["a,m,4K,0.5,8,2,512,2,0.2,60,16,nomic-embed-text,my/docs,RAG integration,true,70"],
            ",num_predict,embed_model,collection,use_case,optional,ram_max_pct",
        )
        .unwrap();
        let s = &s[0];
        assert_eq!(s.embed_model.as_deref(), Some("nomic-embed-text"));
        assert_eq!((s.collection.as_str(), s.num_predict), ("my/docs", 16));
        assert!(s.optional);
        assert_eq!(s.gates.ram_max_pct, 70.0);
    }

    #[test]
    fn errors_name_the_line_the_column_and_what_is_allowed() {
        let e = p(&["a,m,4K,0.5,8,0,512,2,0.5,30"], "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rag.csv:3") && e.contains("top_k") && e.contains("1 to 64"),
            "{e}"
        );
        let e = p(&["a,m,4K,0.99,8,2,512,2,0.5,30"], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("leave no room for the question"), "{e}");
        let e = p(&["a,m,512,0.5,8,2,512,2,0.5,30"], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 512"), "{e}");
        let e = p(&["a,m,4K,0.5,many,2,512,2,0.5,30"], "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("questions") && e.contains("1 to 1024"), "{e}");
    }
}
