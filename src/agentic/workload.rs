//! The turns of a session, generated deterministically from a seed out of the texts shipped in
//! `harness/agentic/` (README, "Agentic sessions"):
//!
//! - `coding/`: a multi-file codebase (25 files, 2,900 lines of Rust, Go, C, Python,
//!   TypeScript, SQL, YAML, shell and TOML; each file at most 6,000 characters, so that it
//!   fits a 4K conversation) and `questions.csv` (file, question, expected fact). A
//!   turn reads the file as a tool result (unless the conversation has read it already), then
//!   asks the question.
//! - `rag/`: documents (`docs/*.md`, sections under `## `) with planted facts and
//!   `questions.csv` (kind, passages, question, fact). A turn adds the retrieved passages and
//!   one distractor, then asks.
//! - `chat/`: `details.csv` (facts the user states and asks for later) and `topics.csv`
//!   (self-contained technical questions). Turns state a detail, ask a topic question, recall
//!   a detail stated earlier in the same conversation, and follow up on the model's previous
//!   answer.
//!
//! Tool results are sent as `user` messages framed as tool output: chat templates of some
//! models (Gemma 3's in Ollama's library) render no `tool` role and would drop them, which the
//! harness would then see as a cut history.
//!
//! An answer is checked by [`Expected::matches`]: both texts normalised ([`normalise`]: lower
//! case, split into words of letters, digits and `. / : -` and operators of `< = >`, sentence
//! punctuation dropped), and one alternative must occur in the answer as a whole-word sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::table::WorkloadKind;
use crate::backend::Message;
use crate::stats::SplitMix64;

/// The expected fact of a turn: one of the alternatives must be in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// The alternatives as written (the first is the canonical one).
    pub alternatives: Vec<String>,
}

impl Expected {
    /// From `a|b|c`.
    pub fn parse(s: &str) -> Expected {
        Expected {
            alternatives: s
                .split('|')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Whether `answer` holds one of the alternatives: normalised, as a whole-word sequence.
    pub fn matches(&self, answer: &str) -> bool {
        let hay = format!(" {} ", normalise(answer));
        self.alternatives.iter().any(|a| {
            let needle = normalise(a);
            !needle.is_empty() && hay.contains(&format!(" {needle} "))
        })
    }
}

/// Lower case, split into words: runs of letters, digits and `. / : -` (a trailing `.` or `:`
/// of sentence punctuation dropped), and runs of `< = >` (operators are words of their own);
/// everything else separates; the words joined by one space.
pub fn normalise(s: &str) -> String {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Word,
        Operator,
        Gap,
    }
    let class = |c: char| {
        if c.is_alphanumeric() || ".:/-".contains(c) {
            Class::Word
        } else if "<=>".contains(c) {
            Class::Operator
        } else {
            Class::Gap
        }
    };
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut last = Class::Gap;
    for c in s.to_lowercase().chars() {
        let k = class(c);
        if k != last && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        if k != Class::Gap {
            current.push(c);
        }
        last = k;
    }
    words.push(current);
    words
        .iter()
        .map(|w| w.trim_end_matches(['.', ':']))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One turn: what it appends to the history before the model answers, and the fact the
/// answer must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// What the turn does, for reports (`read src/limiter.rs + question`, `recall db_port`).
    pub label: String,
    /// Messages appended (tool results, then the question), all `user`.
    pub messages: Vec<Message>,
    /// The expected fact.
    pub expected: Expected,
}

impl Turn {
    /// Characters of the messages this turn appends.
    pub fn chars(&self) -> usize {
        self.messages.iter().map(|m| m.content.len()).sum()
    }
}

/// Where the shipped texts are.
pub fn texts_dir() -> PathBuf {
    crate::config::crate_root().join("harness/agentic")
}

/// A workload: its texts, and where the seed has got to.
#[derive(Debug, Clone)]
pub struct Workload {
    kind: WorkloadKind,
    data: Data,
    rng: SplitMix64,
    /// Index into the seeded order of questions (coding, rag, topics).
    cursor: usize,
    order: Vec<usize>,
    conversation: Conversation,
    conversations: u64,
}

#[derive(Debug, Clone)]
enum Data {
    Coding {
        files: BTreeMap<String, String>,
        questions: Vec<(String, String, Expected)>,
    },
    Rag {
        passages: BTreeMap<String, (String, String)>,
        questions: Vec<(String, Vec<String>, String, Expected)>,
    },
    Chat {
        details: Vec<Detail>,
        topics: Vec<(String, Expected)>,
    },
}

#[derive(Debug, Clone)]
struct Detail {
    key: String,
    statement: String,
    question: String,
    values: Vec<String>,
}

/// What the current conversation has done so far.
#[derive(Debug, Clone, Default)]
struct Conversation {
    turns: usize,
    read: BTreeSet<String>,
    /// Chat: (detail index, value) stated so far, in order.
    stated: Vec<(usize, String)>,
    recalls: usize,
    /// Chat: the fact of the last recall (a follow-up asks for it again).
    last_recall: Option<Expected>,
}

impl Workload {
    /// The workload of `kind` from the texts under `dir`, its order drawn from `seed`. An error
    /// names the file (and line) that could not be read.
    pub fn load(kind: WorkloadKind, dir: &Path, seed: u64) -> Result<Workload, String> {
        let dir = dir.join(kind.label());
        let data = match kind {
            WorkloadKind::Coding => load_coding(&dir)?,
            WorkloadKind::Rag => load_rag(&dir)?,
            WorkloadKind::Chat => load_chat(&dir)?,
        };
        let n = match &data {
            Data::Coding { questions, .. } => questions.len(),
            Data::Rag { questions, .. } => questions.len(),
            Data::Chat { topics, .. } => topics.len(),
        };
        let mut rng = SplitMix64::new(seed ^ 0xA6E7_71C0);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        if let Data::Coding { files, questions } = &data {
            // An agent reads a file, then asks several things about it: the files in a seeded
            // order, each file's questions together (in the seeded order within it).
            let mut names: Vec<&String> = files.keys().collect();
            rng.shuffle(&mut names);
            order = names
                .iter()
                .flat_map(|f| order.iter().copied().filter(|&i| &questions[i].0 == *f))
                .collect();
        }
        Ok(Workload {
            kind,
            data,
            rng,
            cursor: 0,
            order,
            conversation: Conversation::default(),
            conversations: 0,
        })
    }

    /// The kind.
    pub fn kind(&self) -> WorkloadKind {
        self.kind
    }

    /// Starts a new conversation and returns its system prompt; `nonce` is written into it so
    /// that no prompt cache of an earlier conversation serves its first turn.
    pub fn start_conversation(&mut self, nonce: &str) -> Message {
        self.conversation = Conversation::default();
        self.conversations += 1;
        let role = match self.kind {
            WorkloadKind::Coding => {
                "You are a coding assistant working in the user's editor on the tollgate \
                 repository. Files are shown to you as tool results. Answer each question \
                 briefly and exactly, with the name or value asked for."
            }
            WorkloadKind::Rag => {
                "You are a retrieval assistant for Halvorsen Logistics. Each question comes \
                 with retrieved passages, each labelled with its document id. Answer only from \
                 the passages, briefly, with the fact asked for."
            }
            WorkloadKind::Chat => {
                "You are a helpful technical assistant in a long conversation about the user's \
                 project. Remember the details the user tells you. Answer briefly."
            }
        };
        // The nonce comes first: a server's prompt cache keeps nothing of an earlier
        // conversation past the first few tokens.
        Message::new("system", format!("Session {nonce}.\n{role}"))
    }

    /// The next turn of the current conversation.
    pub fn next_turn(&mut self) -> Turn {
        let turn = match &self.data {
            Data::Coding { .. } => self.coding_turn(),
            Data::Rag { .. } => self.rag_turn(),
            Data::Chat { .. } => self.chat_turn(),
        };
        self.conversation.turns += 1;
        turn
    }

    fn next_index(&mut self) -> usize {
        let i = self.order[self.cursor % self.order.len()];
        self.cursor += 1;
        i
    }

    fn coding_turn(&mut self) -> Turn {
        let i = self.next_index();
        let Data::Coding { files, questions } = &self.data else {
            unreachable!("a coding workload")
        };
        let (file, question, expected) = &questions[i];
        let mut messages = Vec::new();
        let mut label = String::new();
        if self.conversation.read.insert(file.clone()) {
            messages.push(Message::new(
                "user",
                format!(
                    "[tool result] read_file(\"{file}\"):\n```\n{}\n```",
                    files[file].trim_end()
                ),
            ));
            label.push_str(&format!("read {file} + "));
        }
        label.push_str(&format!("question on {file}"));
        messages.push(Message::new("user", question.clone()));
        Turn {
            label,
            messages,
            expected: expected.clone(),
        }
    }

    fn rag_turn(&mut self) -> Turn {
        let i = self.next_index();
        let pick = self.rng.next_u64();
        let Data::Rag {
            passages,
            questions,
        } = &self.data
        else {
            unreachable!("a rag workload")
        };
        let (kind, ids, question, expected) = &questions[i];
        let others: Vec<&String> = passages.keys().filter(|k| !ids.contains(k)).collect();
        let mut shown: Vec<&String> = ids.iter().collect();
        if !others.is_empty() {
            let d = others[(pick % others.len() as u64) as usize];
            // The distractor goes first or last, as the seed says.
            if pick & (1 << 32) == 0 {
                shown.insert(0, d);
            } else {
                shown.push(d);
            }
        }
        let mut text = String::from("[tool result] search_documents: retrieved passages\n");
        for id in shown {
            let (doc, body) = &passages[id];
            let section = id.split_once('#').map_or("", |(_, s)| s);
            text.push_str(&format!(
                "\n[{doc}, section \"{section}\"]\n{}\n",
                body.trim()
            ));
        }
        Turn {
            label: format!("{kind}: {}", ids.join(" + ")),
            messages: vec![
                Message::new("user", text),
                Message::new("user", format!("Using the retrieved passages: {question}")),
            ],
            expected: expected.clone(),
        }
    }

    fn chat_turn(&mut self) -> Turn {
        let t = self.conversation.turns;
        let conv = self.conversations;
        let Data::Chat { details, .. } = &self.data else {
            unreachable!("a chat workload")
        };
        let n_details = details.len();
        let stated = self.conversation.stated.len();
        match t % 3 {
            // State the next detail (while any is left), else recall.
            0 if stated < n_details => {
                // The order of details and their values follow the seed and the conversation.
                let d = (self.order.len() + stated + conv as usize) % n_details;
                let detail = &details[d];
                let v = (self.rng.next_u64() % detail.values.len() as u64) as usize;
                let value = detail.values[v].clone();
                let turn = Turn {
                    label: format!("state {}", detail.key),
                    messages: vec![Message::new(
                        "user",
                        detail.statement.replace("{value}", &value),
                    )],
                    expected: Expected {
                        alternatives: vec![value.clone()],
                    },
                };
                self.conversation.stated.push((d, value));
                turn
            }
            1 if self.conversation.recalls % 2 == 1 && self.conversation.last_recall.is_some() => {
                self.conversation.recalls += 1;
                let expected = self.conversation.last_recall.clone().expect("checked");
                Turn {
                    label: "follow-up on the previous answer".to_string(),
                    messages: vec![Message::new(
                        "user",
                        "Good. Repeat the value from your previous answer once more, in a full \
                         sentence.",
                    )],
                    expected,
                }
            }
            1 => self.topic_turn(),
            _ if stated > 0 => {
                // Recall the details round-robin, the oldest first.
                let (d, value) =
                    self.conversation.stated[self.conversation.recalls / 2 % stated].clone();
                self.conversation.recalls += 1;
                let expected = Expected {
                    alternatives: vec![value],
                };
                self.conversation.last_recall = Some(expected.clone());
                Turn {
                    label: format!("recall {}", details[d].key),
                    messages: vec![Message::new("user", details[d].question.clone())],
                    expected,
                }
            }
            _ => self.topic_turn(),
        }
    }

    fn topic_turn(&mut self) -> Turn {
        let i = self.next_index();
        let Data::Chat { topics, .. } = &self.data else {
            unreachable!("a chat workload")
        };
        let (q, expected) = &topics[i];
        Turn {
            label: "topic question".to_string(),
            messages: vec![Message::new("user", q.clone())],
            expected: expected.clone(),
        }
    }
}

/// The records of a CSV file with `#` comments, as string lists with their line numbers.
fn read_csv(path: &Path, columns: &[&str]) -> Result<Vec<(u64, Vec<String>)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .clone();
    let index: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers.iter().position(|h| h == *c).ok_or_else(|| {
                format!(
                    "{}: no column `{c}` (columns: {})",
                    path.display(),
                    columns.join(", ")
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let fields: Vec<String> = index
            .iter()
            .map(|&i| rec.get(i).unwrap_or("").to_string())
            .collect();
        if let Some((c, _)) = columns.iter().zip(&fields).find(|(_, f)| f.is_empty()) {
            return Err(format!("{}:{line}: column `{c}` is empty", path.display()));
        }
        out.push((line, fields));
    }
    if out.is_empty() {
        return Err(format!("{}: no rows", path.display()));
    }
    Ok(out)
}

fn load_coding(dir: &Path) -> Result<Data, String> {
    let path = dir.join("questions.csv");
    let rows = read_csv(&path, &["file", "question", "answer"])?;
    let mut files = BTreeMap::new();
    let mut questions = Vec::new();
    for (line, f) in rows {
        let [file, question, answer]: [String; 3] = f.try_into().expect("three columns");
        if !files.contains_key(&file) {
            let text = std::fs::read_to_string(dir.join(&file))
                .map_err(|e| format!("{}:{line}: cannot read {file}: {e}", path.display()))?;
            files.insert(file.clone(), text);
        }
        questions.push((file, question, Expected::parse(&answer)));
    }
    Ok(Data::Coding { files, questions })
}

/// The passages of a document: `doc-file-stem#Section` → (document id, text). The document id
/// is what its first line names (`# DOC-1: …`).
fn read_passages(path: &Path) -> Result<Vec<(String, String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let first = text.lines().next().unwrap_or("");
    let doc = first
        .strip_prefix("# ")
        .and_then(|t| t.split(':').next())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{}:1: expected `# DOC-n: title`", path.display()))?
        .to_string();
    let mut out = Vec::new();
    for part in text.split("\n## ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        out.push((
            format!("{stem}#{}", title.trim()),
            doc.clone(),
            body.to_string(),
        ));
    }
    Ok(out)
}

fn load_rag(dir: &Path) -> Result<Data, String> {
    let mut passages = BTreeMap::new();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(dir.join("docs"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("docs").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for d in &docs {
        for (id, doc, body) in read_passages(d)? {
            passages.insert(id, (doc, body));
        }
    }
    let path = dir.join("questions.csv");
    let mut questions = Vec::new();
    for (line, f) in read_csv(&path, &["kind", "passages", "question", "answer"])? {
        let [kind, ids, question, answer]: [String; 4] = f.try_into().expect("four columns");
        let ids: Vec<String> = ids.split(';').map(|s| s.trim().to_string()).collect();
        if let Some(missing) = ids.iter().find(|id| !passages.contains_key(*id)) {
            return Err(format!(
                "{}:{line}: no passage {missing} (passages are <doc file stem>#<section title>)",
                path.display()
            ));
        }
        questions.push((kind, ids, question, Expected::parse(&answer)));
    }
    Ok(Data::Rag {
        passages,
        questions,
    })
}

fn load_chat(dir: &Path) -> Result<Data, String> {
    let path = dir.join("details.csv");
    let mut details = Vec::new();
    for (line, f) in read_csv(&path, &["key", "statement", "question", "values"])? {
        let [key, statement, question, values]: [String; 4] = f.try_into().expect("four columns");
        if !statement.contains("{value}") {
            return Err(format!(
                "{}:{line}: the statement has no {{value}}",
                path.display()
            ));
        }
        details.push(Detail {
            key,
            statement,
            question,
            values: values.split('|').map(|v| v.trim().to_string()).collect(),
        });
    }
    let path = dir.join("topics.csv");
    let topics = read_csv(&path, &["question", "answer"])?
        .into_iter()
        .map(|(_, f)| (f[0].clone(), Expected::parse(&f[1])))
        .collect();
    Ok(Data::Chat { details, topics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("48", "The value of BURST_CAPACITY is **48**.", true)]
    #[case("48", "It is 480.", false)]
    #[case(
        "refill_tokens",
        "Limiter::admit calls `refill_tokens(bucket, now)`.",
        true
    )]
    #[case("2 hours|two hours", "The RTO is two hours.", true)]
    #[case("<=", "It uses `<=` where is_idle uses `>=`.", true)]
    #[case("10.20.1.12:8080", "api-green is at 10.20.1.12:8080.", true)]
    #[case("Osaka", "OSAKA has more racks", true)]
    #[case("DOC-2", "This is described in DOC-2, section Restore drills", true)]
    #[case("0.2", "Below 0.25 of the burst", false)]
    #[case("--force|force", "Pass --force.", true)]
    #[case("45", "DRAIN_SECONDS=45", true)]
    #[case("0.5", "route.\"/v1/export\" = 0.5", true)]
    fn normalised_match(#[case] expected: &str, #[case] answer: &str, #[case] ok: bool) {
        assert_eq!(Expected::parse(expected).matches(answer), ok, "{answer}");
    }

    fn shipped(kind: WorkloadKind, seed: u64) -> Workload {
        Workload::load(kind, &texts_dir(), seed).unwrap()
    }

    #[test]
    fn every_coding_answer_is_in_its_file_and_every_rag_answer_in_its_passages() {
        let Data::Coding { files, questions } = shipped(WorkloadKind::Coding, 1).data else {
            panic!()
        };
        assert!(files.len() >= 6, "a multi-file codebase");
        let lines: usize = files.values().map(|t| t.lines().count()).sum();
        assert!(lines >= 2500, "thousands of lines: {lines}");
        for (name, text) in &files {
            assert!(
                text.len() <= 6000,
                "{name} is sent whole as a tool result: at most 6,000 characters"
            );
        }
        let langs: BTreeSet<&str> = files
            .keys()
            .filter_map(|f| f.rsplit_once('.').map(|(_, e)| e))
            .collect();
        assert!(langs.len() >= 4, "more than one language: {langs:?}");
        for (file, q, e) in &questions {
            assert!(
                e.matches(&files[file]),
                "{file}: {q}: {e:?} is not in the file"
            );
        }
        let Data::Rag {
            passages,
            questions,
        } = shipped(WorkloadKind::Rag, 1).data
        else {
            panic!()
        };
        for (kind, ids, q, e) in &questions {
            let text: String = ids
                .iter()
                .map(|id| format!("{} {}", passages[id].0, passages[id].1))
                .collect();
            assert!(e.matches(&text), "{kind} {q}: {e:?} not in {ids:?}");
        }
        for kind in ["single", "compare", "cite"] {
            assert!(questions.iter().any(|q| q.0 == kind), "{kind}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_turns_and_another_seed_others() {
        for kind in WorkloadKind::ALL {
            let turns = |seed| {
                let mut w = shipped(kind, seed);
                w.start_conversation("n");
                (0..12).map(|_| w.next_turn()).collect::<Vec<_>>()
            };
            assert_eq!(turns(7), turns(7), "{kind:?}");
            assert_ne!(turns(7), turns(8), "{kind:?}");
        }
    }

    #[test]
    fn coding_reads_a_file_once_per_conversation() {
        let mut w = shipped(WorkloadKind::Coding, 3);
        let Data::Coding { files, questions } = &w.data else {
            panic!()
        };
        let (n_files, n_questions) = (files.len(), questions.len());
        w.start_conversation("a");
        let turns: Vec<Turn> = (0..n_questions).map(|_| w.next_turn()).collect();
        let reads = turns.iter().filter(|t| t.messages.len() == 2).count();
        let files: BTreeSet<&str> = turns
            .iter()
            .filter_map(|t| t.label.strip_prefix("read "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(reads, files.len(), "each file read once: {files:?}");
        assert_eq!(
            reads, n_files,
            "every file of the codebase is read in one pass over the questions"
        );
        w.start_conversation("b");
        assert_eq!(
            w.next_turn().messages.len(),
            2,
            "a new conversation reads again"
        );
    }

    #[test]
    fn chat_recalls_what_this_conversation_stated() {
        let mut w = shipped(WorkloadKind::Chat, 5);
        w.start_conversation("a");
        let turns: Vec<Turn> = (0..15).map(|_| w.next_turn()).collect();
        let stated: Vec<&Turn> = turns
            .iter()
            .filter(|t| t.label.starts_with("state"))
            .collect();
        let recalls: Vec<&Turn> = turns
            .iter()
            .filter(|t| t.label.starts_with("recall"))
            .collect();
        assert!(stated.len() >= 3 && recalls.len() >= 3, "{turns:#?}");
        for r in &recalls {
            let key = r.label.trim_start_matches("recall ");
            let s = stated
                .iter()
                .find(|s| s.label.ends_with(key))
                .expect("stated before");
            assert_eq!(s.expected, r.expected);
            assert!(r.expected.matches(&s.messages[0].content));
        }
        assert!(turns.iter().any(|t| t.label.starts_with("follow-up")));
    }
}
