//! The document collection of the RAG-against-direct tests ([`super::rag`]): documents of the
//! corpus's prose, each with one planted fact (the access code of a vault, keyed by a colour,
//! an animal and a wing) and one decoy (another document's vault named without its code), and
//! one question per planted fact.
//!
//! Keys are built so that retrieval is not a lookup: every colour–animal pair recurs in up to
//! four documents, one per wing, so a question's words are spread over several documents and
//! only the wing tells them apart; the decoys name a question's exact vault in a document that
//! does not hold its code. Values are seven-digit numbers, which the corpus does not hold, so a
//! right answer cannot come from anywhere but the planted fact.
//!
//! The collection is generated deterministically ([`generate`]) and shipped as
//! `harness/rag/documents.jsonl` and `harness/rag/questions.jsonl` (one JSON object a line) so
//! that other tools can read it and a user can replace it with a collection of their own of
//! the same shape; a unit test keeps the shipped files equal to the generator's output.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::SplitMix64;
use crate::workload::{CORPUS, Kind};

/// The shipped collection, relative to the crate root.
pub const DEFAULT_DIR: &str = "harness/rag";
/// The documents file of a collection directory.
pub const DOCUMENTS_FILE: &str = "documents.jsonl";
/// The questions file of a collection directory.
pub const QUESTIONS_FILE: &str = "questions.jsonl";
/// Documents of the shipped collection: enough that direct prompting at 128K (a fill of
/// 0.75) still has documents to spare at 4 characters a token.
pub const DEFAULT_DOCUMENTS: usize = 640;
/// The seed of the shipped collection.
pub const DEFAULT_SEED: u64 = 0x5241_4731; // "RAG1"
/// Characters of corpus prose a document holds before its fact and decoy are planted.
pub const DOCUMENT_CHARS: usize = 600;

// The words of the needles' keys (`needle.rs`): none is in the corpus as a pair.
use super::needle::{ANIMALS, COLOURS};
const WINGS: [&str; 4] = ["north", "south", "east", "west"];

/// One document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Its id (its position in the collection, from 0).
    pub id: u32,
    /// Its title.
    pub title: String,
    /// Its text, facts included.
    pub text: String,
}

impl Document {
    /// The document as a prompt and a retriever see it: its title, then its text.
    pub fn passage(&self) -> String {
        format!("{}\n{}", self.title, self.text.trim_end())
    }
}

/// One question: which document answers it, and the expected value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Its id.
    pub id: u32,
    /// The id of the document whose fact answers it.
    pub document: u32,
    /// The question.
    pub question: String,
    /// The value the answer must hold.
    pub answer: String,
}

/// A collection: documents in order and the questions over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    /// Documents, by id.
    pub documents: Vec<Document>,
    /// Questions, by id.
    pub questions: Vec<Question>,
}

/// The vault of document `i` of a collection: a colour–animal pair and a wing, all distinct
/// for up to 1024 documents; consecutive documents share neither word of the pair, and a pair
/// comes back (in another wing) every 256 documents.
fn vault(i: usize) -> (String, &'static str) {
    let pair = i % 256;
    let colour = COLOURS[pair % 16];
    // Shifting the animal by the colour's round makes the 256 pairs distinct.
    let animal = ANIMALS[(pair / 16 + pair * 7) % 16];
    (format!("{colour}-{animal}"), WINGS[(i / 256) % 4])
}

/// The collection of `documents` documents for `seed`.
///
/// # Panics
/// When `documents` is 0 or more than 1024 (the distinct vaults).
pub fn generate(seed: u64, documents: usize) -> Collection {
    assert!(
        (1..=1024).contains(&documents),
        "a collection holds 1 to 1024 documents"
    );
    let prose: Vec<&str> = CORPUS
        .iter()
        .filter(|s| s.kind == Kind::Prose)
        .map(|s| s.text.trim_end())
        .collect();
    let mut rng = SplitMix64::new(seed);
    let mut values: Vec<String> = Vec::with_capacity(documents);
    while values.len() < documents {
        let v = (1_000_000 + rng.below(9_000_000)).to_string();
        if !values.contains(&v) {
            values.push(v);
        }
    }
    let mut docs = Vec::with_capacity(documents);
    let mut questions = Vec::with_capacity(documents);
    for (i, value) in values.iter().enumerate() {
        let (key, wing) = vault(i);
        let mut sentences: Vec<String> = Vec::new();
        let mut chars = 0;
        while chars < DOCUMENT_CHARS {
            let s = prose[rng.below(prose.len())];
            chars += s.len() + 1;
            sentences.push(s.to_string());
        }
        // The decoy names another document's vault (a pair in the same or another wing).
        let other = (i + 1 + rng.below(documents.max(2) - 1)) % documents.max(2);
        let (dkey, dwing) = vault(other.min(documents - 1));
        let decoy = format!(
            "The {dkey} vault in the {dwing} wing was inspected again this season; its access code is kept in another record."
        );
        let fact = format!("The access code of the {key} vault in the {wing} wing is {value}.");
        let at_fact = rng.below(sentences.len() + 1);
        sentences.insert(at_fact, fact);
        let at_decoy = rng.below(sentences.len() + 1);
        sentences.insert(at_decoy, decoy);
        docs.push(Document {
            id: i as u32,
            title: format!("Record {:03}", i + 1),
            text: format!("{}\n", sentences.join(" ")),
        });
        questions.push(Question {
            id: i as u32,
            document: i as u32,
            question: format!("What is the access code of the {key} vault in the {wing} wing?"),
            answer: value.clone(),
        });
    }
    Collection {
        documents: docs,
        questions,
    }
}

/// The shipped collection's generator output.
pub fn default_collection() -> Collection {
    generate(DEFAULT_SEED, DEFAULT_DOCUMENTS)
}

/// One JSON object a line.
pub fn to_jsonl<T: Serialize>(items: &[T]) -> String {
    let mut out = String::new();
    for it in items {
        out.push_str(&serde_json::to_string(it).expect("plain data serializes"));
        out.push('\n');
    }
    out
}

/// Why a collection could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// A file could not be read.
    #[error("cannot read the RAG collection file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not an object of the expected shape.
    #[error("{path}:{line}: {message} (each line is one JSON object: {shape})")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What was wrong.
        message: String,
        /// The expected shape.
        shape: &'static str,
    },
    /// The files do not fit together.
    #[error("{path}: {message}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

const DOCUMENT_SHAPE: &str = r#"{"id": 0, "title": "...", "text": "..."}"#;
const QUESTION_SHAPE: &str = r#"{"id": 0, "document": 0, "question": "...", "answer": "..."}"#;

fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    shape: &'static str,
) -> Result<Vec<T>, CollectionError> {
    let text = std::fs::read_to_string(path).map_err(|source| CollectionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(line).map_err(|e| CollectionError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
            shape,
        })?;
        out.push(item);
    }
    Ok(out)
}

/// Reads the collection in `dir` (`documents.jsonl`, `questions.jsonl`): document ids must be
/// 0, 1, 2, … in order, every question must name a document and have a non-empty answer.
pub fn load(dir: &Path) -> Result<Collection, CollectionError> {
    let dpath = dir.join(DOCUMENTS_FILE);
    let qpath = dir.join(QUESTIONS_FILE);
    let documents: Vec<Document> = read_jsonl(&dpath, DOCUMENT_SHAPE)?;
    let questions: Vec<Question> = read_jsonl(&qpath, QUESTION_SHAPE)?;
    if documents.is_empty() {
        return Err(CollectionError::Inconsistent {
            path: dpath,
            message: "no documents".into(),
        });
    }
    if let Some((i, d)) = documents
        .iter()
        .enumerate()
        .find(|(i, d)| d.id as usize != *i)
    {
        return Err(CollectionError::Inconsistent {
            path: dpath,
            message: format!(
                "document {} is at position {i}: ids must be 0, 1, 2, … in the file's order",
                d.id
            ),
        });
    }
    for q in &questions {
        if q.document as usize >= documents.len() {
            return Err(CollectionError::Inconsistent {
                path: qpath,
                message: format!(
                    "question {} names document {}, but the collection has documents 0 to {}",
                    q.id,
                    q.document,
                    documents.len() - 1
                ),
            });
        }
        if super::needle::normalise(&q.answer).is_empty() {
            return Err(CollectionError::Inconsistent {
                path: qpath,
                message: format!("question {} has an empty answer", q.id),
            });
        }
    }
    Ok(Collection {
        documents,
        questions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vaults_are_distinct_and_neighbours_share_no_word() {
        let all: Vec<(String, &str)> = (0..1024).map(vault).collect();
        let mut set = all.clone();
        set.sort();
        set.dedup();
        assert_eq!(set.len(), 1024);
        for w in all.windows(2) {
            let (a, b) = (&w[0].0, &w[1].0);
            let (ac, aa) = a.split_once('-').unwrap();
            let (bc, ba) = b.split_once('-').unwrap();
            assert!(ac != bc && aa != ba, "{a} {b}");
        }
    }

    #[test]
    fn every_document_holds_its_fact_and_no_other_documents_value() {
        let c = generate(7, 300);
        assert_eq!(c.documents.len(), 300);
        for q in &c.questions {
            let d = &c.documents[q.document as usize];
            let vault = q
                .question
                .strip_prefix("What is the access code of the ")
                .and_then(|s| s.strip_suffix('?'))
                .unwrap();
            assert!(
                d.text
                    .contains(&format!("access code of the {vault} is {}.", q.answer)),
                "{}",
                d.text
            );
            let holders = c
                .documents
                .iter()
                .filter(|d| d.text.contains(&q.answer))
                .count();
            assert_eq!(holders, 1, "{} is in one document only", q.answer);
        }
        // The decoys: some question's exact vault is named in a document that does not answer it.
        let decoyed = c.questions.iter().any(|q| {
            let vault = &q.question["What is the access code of the ".len()..q.question.len() - 1];
            c.documents
                .iter()
                .any(|d| d.id != q.document && d.text.contains(&format!("The {vault} was")))
        });
        assert!(decoyed);
        let len: Vec<usize> = c.documents.iter().map(|d| d.text.len()).collect();
        assert!(
            len.iter()
                .all(|&l| l > DOCUMENT_CHARS && l < 3 * DOCUMENT_CHARS)
        );
        assert_eq!(generate(7, 300), c, "deterministic");
        assert_ne!(generate(8, 300).questions, c.questions);
    }

    #[test]
    fn the_shipped_collection_is_the_generators_output() {
        let c = default_collection();
        let dir = crate::config::crate_root().join(DEFAULT_DIR);
        let update = crate::golden::Update::from_env().unwrap_or_else(|e| panic!("{e}"));
        let wip = crate::config::crate_root().join("golden/wip/rag");
        for (name, text) in [
            (DOCUMENTS_FILE, to_jsonl(&c.documents)),
            (QUESTIONS_FILE, to_jsonl(&c.questions)),
        ] {
            if let Err(e) = crate::golden::check(name, &text, &dir, &wip, update) {
                panic!("{e}\n(regenerate with O3_GOLDEN=overwrite cargo test --lib collection)");
            }
        }
        let loaded = load(&dir).unwrap();
        assert_eq!(loaded, c);
    }

    #[test]
    fn bad_files_name_the_file_the_line_and_the_shape() {
        let dir = std::env::temp_dir().join(format!("o3-collection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = generate(1, 3);
        std::fs::write(dir.join(DOCUMENTS_FILE), to_jsonl(&c.documents)).unwrap();
        std::fs::write(
            dir.join(QUESTIONS_FILE),
            format!("{}{{\"id\": 9}}\n", to_jsonl(&c.questions)),
        )
        .unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("questions.jsonl:4") && e.contains("\"document\""),
            "{e}"
        );
        let mut q = c.questions.clone();
        q[1].document = 5;
        std::fs::write(dir.join(QUESTIONS_FILE), to_jsonl(&q)).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("names document 5") && e.contains("0 to 2"),
            "{e}"
        );
        let e = load(&dir.join("nowhere")).unwrap_err().to_string();
        assert!(e.contains("documents.jsonl"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
