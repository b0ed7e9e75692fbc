//! One RAG-against-direct test end to end: preflight, clean slate and load (as the sweeps,
//! [`crate::quality::sweep`]); the collection read; characters per token calibrated on the
//! server's own count of a short prompt of the documents, then refined by an unscored
//! warm-up of the full direct prompt (when its count cannot be a cut prompt); the documents
//! that fit `fill × num_ctx` chosen; the retrievers built over them; then every question asked
//! every way, the order of the approaches alternating from question to question so that drift
//! over the test does not line up with an approach. Each prompt starts with a line unique to
//! the request and the question, so no prompt cache serves any of it. Then
//! [`super::assemble`], a pure function from what the phases produced to the [`RagResult`],
//! which is written and the reports rebuilt.

use std::time::Instant;

use super::{AnswerRecord, Approach, RagRan, RagResult, RagRun, RagSpec};
use crate::backend::{BackendError, LoadOptions, OllamaClient};
use crate::config::Config;
use crate::measure::{FILL_TOLERANCE, TrialPlan};
use crate::monitor::{Monitor, MonitorConfig};
use crate::quality::collection::{self, Collection, Document, Question};
use crate::quality::needle;
use crate::quality::retrieve::{self, Bm25};
use crate::quality::sweep::{self, Opening, Target, UNCUT_BELOW_CTX};
use crate::quality::{ANSWER_KEPT_CHARS, QualityFacts};
use crate::results::TrialKind;
use crate::rundir::RunEnv;
use crate::runner::{RUNTIME, run_metadata};

/// Tokens of documents in the calibration prompt (at most a quarter of the fill).
pub const CALIBRATION_TOKENS: u32 = 512;
/// Characters per token before calibration (prose).
pub const DEFAULT_CHARS_PER_TOKEN: f64 = 4.2;
/// Documents embedded per `/api/embed` request.
pub const EMBED_BATCH: usize = 32;

impl RagSpec {
    /// What the test loads and asks.
    pub fn target(&self) -> Target {
        Target {
            model: self.model.clone(),
            load: LoadOptions {
                num_ctx: self.num_ctx,
                num_batch: self.num_batch,
                num_thread: self.num_thread,
            },
            num_predict: self.num_predict,
        }
    }
}

/// Runs one RAG test. Blocks; writes `<run>/rag/<name>.json` and rebuilds the reports whatever
/// happens.
pub fn run_rag(spec: &RagSpec, env: &RunEnv) -> RagResult {
    let started = Instant::now();
    let meta = run_metadata(env);
    let run = RUNTIME.block_on(phases(spec, env, meta));
    let result = super::assemble(spec, run, started.elapsed().as_secs_f64());
    if let Some(c) = &result.analysis.comparison {
        progress(spec, &c.summary);
    }
    let path = env.run_dir.rag_path(&spec.test_name);
    sweep::finish(&spec.test_name, &result.judgement, &path, &result, env);
    result
}

fn progress(spec: &RagSpec, msg: &str) {
    eprintln!("[{}] {msg}", spec.test_name);
}

async fn phases(spec: &RagSpec, env: &RunEnv, meta: crate::results::RunMetadata) -> RagRun {
    let client = OllamaClient::new(&env.config);
    let t = spec.target();
    let (meta, think_false) = match sweep::open(&client, env, &t, meta).await {
        Opening::Skipped { meta, why } => {
            return RagRun::Skipped {
                meta: Box::new(meta),
                why,
            };
        }
        Opening::Failed {
            meta,
            problem,
            notes,
        } => {
            return RagRun::Ran(Box::new(RagRan {
                meta,
                facts: QualityFacts {
                    problems: vec![problem],
                    notes,
                },
                ..RagRan::default()
            }));
        }
        Opening::Ready { meta, think_false } => (meta, think_false),
    };
    let mut ran = RagRan {
        meta,
        ..RagRan::default()
    };
    let dir = crate::config::crate_root().join(&spec.collection);
    let coll = match collection::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            ran.facts.problems.push(e.to_string());
            return RagRun::Ran(Box::new(ran));
        }
    };
    let monitor = Monitor::start(&MonitorConfig {
        base_url: env.config.origin(),
        sample_hz: env.config.sample_hz,
        ram_limit_pct: spec.gates.ram_max_pct,
    });
    let mut s = Session {
        client: &client,
        spec,
        target: t,
        cfg: &env.config,
        run_id: &env.run_id,
        think_false,
        monitor: &monitor,
        ran: &mut ran,
    };
    if let Err(p) = s.answers(&coll).await {
        ran.facts.problems.push(p);
    }
    let _ = client.unload(&spec.model).await;
    if let Some(m) = &spec.embed_model {
        let _ = client.unload(m).await;
    }
    ran.hardware = monitor.stop();
    ran.facts.notes.extend(client.take_retry_notes());
    RagRun::Ran(Box::new(ran))
}

/// The message of one question over `passages`: a line unique to the request, the question,
/// the passages in the collection's order, the question again.
pub fn message(key: &str, question: &Question, passages: &[&Document]) -> String {
    let mut out = format!(
        "[{:016x} request {key:?}]\nQuestion: {}\nThe records below hold the answer. Read them, then answer the question.\n<records>\n",
        crate::optimize::sim::fnv1a(key),
        question.question
    );
    for d in passages {
        out.push_str(&d.passage());
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "</records>\nQuestion: {} Answer with the number only.",
        question.question
    ));
    out
}

/// How many of the first documents fit in `tokens` at `chars_per_token` (at least one).
pub fn fit(docs: &[Document], tokens: u32, chars_per_token: f64) -> usize {
    let budget = f64::from(tokens) * chars_per_token;
    let mut used = 0.0;
    let mut n = 0;
    for d in docs {
        used += (d.passage().len() + 2) as f64;
        if used > budget {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// `count` questions over the first `documents` documents, spread evenly over them.
pub fn choose_questions(coll: &Collection, documents: usize, count: usize) -> Vec<Question> {
    let mut within: Vec<&Question> = coll
        .questions
        .iter()
        .filter(|q| (q.document as usize) < documents)
        .collect();
    within.sort_by_key(|q| (q.document, q.id));
    let n = count.min(within.len());
    (0..n)
        .map(|i| within[(2 * i + 1) * within.len() / (2 * n)].clone())
        .collect()
}

struct Session<'a> {
    client: &'a OllamaClient,
    spec: &'a RagSpec,
    target: Target,
    cfg: &'a Config,
    run_id: &'a str,
    think_false: bool,
    monitor: &'a Monitor,
    ran: &'a mut RagRan,
}

impl Session<'_> {
    fn key(&self, what: &str) -> String {
        format!("{}/{}/{what}", self.run_id, self.spec.test_name)
    }

    async fn ask(&self, text: &str) -> Result<crate::backend::Completed, BackendError> {
        sweep::ask(self.client, &self.target, self.cfg, self.think_false, text).await
    }

    async fn answers(&mut self, coll: &Collection) -> Result<(), String> {
        let spec = self.spec;
        progress(
            spec,
            &format!(
                "loading {} (num_ctx {}, num_batch {}, num_thread {})",
                spec.model, spec.num_ctx, spec.num_batch, spec.num_thread
            ),
        );
        self.ran.load_s = sweep::load(
            self.client,
            &self.target,
            self.cfg,
            self.think_false,
            &mut self.ran.meta,
            &mut self.ran.facts.notes,
        )
        .await?;
        let docs = &coll.documents;
        let probe_q = coll
            .questions
            .first()
            .ok_or("the collection has no questions")?;
        // Characters per token on the server's own count of a short prompt of the documents.
        let mut cpt = DEFAULT_CHARS_PER_TOKEN;
        let cal_tokens = CALIBRATION_TOKENS.min(spec.fill_tokens / 4).max(64);
        let cal_docs: Vec<&Document> = docs[..fit(docs, cal_tokens, cpt)].iter().collect();
        let cal = message(&self.key("calibration"), probe_q, &cal_docs);
        let c = self
            .ask(&cal)
            .await
            .map_err(|e| format!("calibration request failed: {e}"))?;
        match c.metrics.prompt_eval_count {
            Some(n) if crate::workload::calibrate(cal.len(), n).is_some() => {
                cpt = cal.len() as f64 / n as f64;
                self.ran.meta.chars_per_token = Some(cpt);
            }
            other => self.ran.facts.notes.push(format!(
                "calibration gave {other:?} tokens for {} characters: kept {DEFAULT_CHARS_PER_TOKEN} characters a token",
                cal.len()
            )),
        }
        // An unscored warm-up of the full direct prompt refines the ratio where its count
        // cannot be a cut prompt (as the sweeps' warm-up, `sweep.rs`).
        let mut n_docs = fit(docs, spec.fill_tokens, cpt);
        let all: Vec<&Document> = docs[..n_docs].iter().collect();
        let warm = message(&self.key("warmup"), probe_q, &all);
        let planned = warm.len() as f64 / cpt;
        progress(
            spec,
            &format!("warm-up: {n_docs} documents, {planned:.0} planned prompt tokens"),
        );
        let w = self
            .ask(&warm)
            .await
            .map_err(|e| format!("warm-up request failed: {e}"))?;
        match w.metrics.prompt_eval_count.filter(|&n| n > 0) {
            Some(n) => {
                let factor = planned / n as f64;
                let uncut = (n as f64) < UNCUT_BELOW_CTX * f64::from(spec.num_ctx);
                if uncut && (0.75..=4.0 / 3.0).contains(&factor) {
                    cpt *= factor;
                    self.ran.meta.chars_per_token = Some(cpt);
                    n_docs = fit(docs, spec.fill_tokens, cpt);
                    self.ran.facts.notes.push(format!(
                        "warm-up: the server counted {n} of {planned:.0} planned prompt tokens; the documents are chosen on its count"
                    ));
                } else {
                    self.ran.facts.notes.push(format!(
                        "warm-up: the server counted {n} of {planned:.0} planned prompt tokens, which may be a cut prompt: kept the calibration"
                    ));
                }
            }
            None => self
                .ran
                .facts
                .notes
                .push("the warm-up's prompt was not counted: kept the calibration".into()),
        }
        let docs = &docs[..n_docs];
        self.ran.documents = n_docs;
        self.ran.documents_tokens = Some(
            docs.iter()
                .map(|d| (d.passage().len() + 2) as f64)
                .sum::<f64>()
                / cpt,
        );
        let questions = choose_questions(coll, n_docs, spec.questions as usize);
        if questions.len() < spec.questions as usize {
            self.ran.facts.notes.push(format!(
                "{} of the {} questions asked: the {n_docs} documents that fit have no more",
                questions.len(),
                spec.questions
            ));
        }
        let bm25 = Bm25::new(docs);
        let embedded = match &spec.embed_model {
            Some(m) => Some(self.embed_index(m, docs).await?),
            None => None,
        };
        let rss_loaded = self.monitor.current_memory().map(|m| m.rss_bytes);
        let mut approaches = vec![Approach::Direct, Approach::RagBm25];
        if embedded.is_some() {
            approaches.push(Approach::RagEmbed);
        }
        let total = questions.len() * approaches.len();
        for (qi, q) in questions.iter().enumerate() {
            let mut order = approaches.clone();
            if qi % 2 == 1 {
                order.reverse();
            }
            for a in order {
                let chosen: Vec<u32> = match a {
                    Approach::Direct => Vec::new(),
                    Approach::RagBm25 => bm25.top_k(&q.question, spec.top_k as usize),
                    Approach::RagEmbed => {
                        let m = spec.embed_model.as_deref().expect("embedded above");
                        let v = self
                            .client
                            .embed(m, std::slice::from_ref(&q.question), self.keep_alive())
                            .await
                            .map_err(|e| format!("embedding question {}: {e}", q.id))?;
                        let vectors = embedded.as_ref().expect("embedded above");
                        retrieve::nearest(&v.embeddings[0], vectors, spec.top_k as usize)
                            .into_iter()
                            .map(|i| docs[i].id)
                            .collect()
                    }
                };
                let passages: Vec<&Document> = match a {
                    Approach::Direct => docs.iter().collect(),
                    _ => docs.iter().filter(|d| chosen.contains(&d.id)).collect(),
                };
                let index = self.ran.answers.len() as u32;
                let text = message(&self.key(&format!("{}-{}", a.label(), q.id)), q, &passages);
                let (rec, gone) = self
                    .answer(index, a, q, n_docs, text, cpt, chosen, rss_loaded)
                    .await;
                progress(spec, &answer_line(&rec, index as usize + 1, total));
                self.ran.answers.push(rec);
                if gone {
                    return Err(format!("answer {}: the server went away", index + 1));
                }
                if self
                    .monitor
                    .guard()
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    return Err("the RAM guard stopped the test".to_string());
                }
            }
        }
        Ok(())
    }

    fn keep_alive(&self) -> u64 {
        2 * (self.cfg.trial_timeout.as_secs() + self.cfg.first_chunk_timeout.as_secs())
    }

    /// The documents' vectors from the embedding model, [`EMBED_BATCH`] a request.
    async fn embed_index(
        &mut self,
        model: &str,
        docs: &[Document],
    ) -> Result<Vec<Vec<f32>>, String> {
        progress(
            self.spec,
            &format!("embedding {} documents with {model}", docs.len()),
        );
        let started = Instant::now();
        let mut out = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(EMBED_BATCH) {
            let input: Vec<String> = chunk.iter().map(Document::passage).collect();
            let e = self
                .client
                .embed(model, &input, self.keep_alive())
                .await
                .map_err(|e| format!("embedding the documents with {model} failed: {e}"))?;
            out.extend(e.embeddings);
        }
        self.ran.embed_index_s = Some(started.elapsed().as_secs_f64());
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &mut self,
        index: u32,
        a: Approach,
        q: &Question,
        n_docs: usize,
        text: String,
        cpt: f64,
        retrieved: Vec<u32>,
        rss_loaded: Option<u64>,
    ) -> (AnswerRecord, bool) {
        let planned = text.len() as f64 / cpt;
        let plan = TrialPlan {
            index,
            kind: TrialKind::Measured,
            prompt_chars: text.len(),
            intended_tokens: planned.round() as u32,
            num_predict: self.spec.num_predict,
        };
        let outcome = self.ask(&text).await;
        let (mut trial, answer, failure) = crate::quality::sweep::answered(&plan, &outcome);
        let rss = self.monitor.current_memory().map(|m| m.rss_bytes);
        trial.rss_after_bytes = rss;
        if let Some(n) = trial.prompt_tokens_evaluated {
            let n = f64::from(n);
            if n < planned * (1.0 - FILL_TOLERANCE) {
                let p = format!(
                    "{} prompt truncated: the server evaluated {n} of {planned:.0} planned prompt tokens, so documents were cut out of the context",
                    a.label()
                );
                if !self
                    .ran
                    .facts
                    .problems
                    .iter()
                    .any(|x| x.starts_with(a.label()))
                {
                    self.ran.facts.problems.push(p);
                }
            }
        }
        let unreachable = matches!(outcome, Err(BackendError::Unreachable { .. }));
        let rec = AnswerRecord {
            index,
            approach: a,
            question: q.id,
            document: q.document,
            depth: (f64::from(q.document) + 0.5) / n_docs as f64,
            expected: q.answer.clone(),
            answer: answer.chars().take(ANSWER_KEPT_CHARS).collect(),
            correct: failure
                .is_none()
                .then(|| needle::matches(&q.answer, &answer)),
            failure,
            recalled: a.retrieves().then(|| retrieved.contains(&q.document)),
            retrieved,
            ram_delta_bytes: rss.zip(rss_loaded).map(|(a, b)| a as i64 - b as i64),
            trial,
        };
        (rec, unreachable)
    }
}

fn answer_line(r: &AnswerRecord, n: usize, total: usize) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("–".to_string(), |x| format!("{x:.d$}"));
    format!(
        "answer {n}/{total}: question {} {}{}, prompt {} tokens, ttft {} s, decode {} tok/s: {}",
        r.question,
        r.approach.label(),
        match r.recalled {
            Some(true) => " (document retrieved)",
            Some(false) => " (document NOT retrieved)",
            None => "",
        },
        r.trial
            .prompt_tokens_evaluated
            .map_or("–".into(), |n| n.to_string()),
        f(r.trial.ttft_s, 2),
        f(r.trial.decode_tps, 1),
        match (r.correct, &r.failure) {
            (Some(true), _) => "right".to_string(),
            (Some(false), _) => format!(
                "wrong (expected {}, got {:?})",
                r.expected,
                r.answer.chars().take(60).collect::<String>()
            ),
            (None, f) => format!("FAILED: {}", f.as_deref().unwrap_or("")),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::collection::generate;

    #[test]
    fn documents_fit_the_fill_and_questions_spread_over_them() {
        let c = generate(5, 200);
        let n = fit(&c.documents, 2000, 4.0);
        let chars: usize = c.documents[..n].iter().map(|d| d.passage().len() + 2).sum();
        assert!(chars as f64 <= 8000.0 && n > 3, "{n} {chars}");
        let next = chars + c.documents[n].passage().len() + 2;
        assert!(next as f64 > 8000.0);
        let q = choose_questions(&c, n, 4);
        assert_eq!(q.len(), 4);
        assert!(q.iter().all(|q| (q.document as usize) < n));
        assert!(q.windows(2).all(|w| w[0].document < w[1].document));
        assert_eq!(
            choose_questions(&c, 3, 10).len(),
            3,
            "at most one a document here"
        );
    }

    #[test]
    fn messages_start_unique_and_ask_twice() {
        let c = generate(5, 4);
        let docs: Vec<&Document> = c.documents.iter().collect();
        let a = message("run/t/direct-0", &c.questions[0], &docs);
        let b = message("run/t/rag_bm25-0", &c.questions[0], &docs[..1]);
        assert_ne!(a.lines().next(), b.lines().next());
        assert_eq!(a.matches(&c.questions[0].question).count(), 2);
        assert!(a.contains(&c.documents[3].text.trim_end().to_string()));
        assert!(!b.contains(&c.documents[3].title));
    }
}
