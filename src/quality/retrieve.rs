//! The retrievers of the RAG arm ([`super::rag`]): BM25 over the documents (the `bm25` crate's
//! in-memory search engine with its English tokenizer: stemming, stop words, unicode
//! normalisation) and, where the server has an embedding model, cosine similarity of its
//! `/api/embed` vectors. Both rank every document and break ties by document id, so a
//! retrieval is reproducible.

use bm25::{Language, SearchEngine, SearchEngineBuilder};

use super::collection::Document;

/// A BM25 index of documents (ids are the documents' ids).
pub struct Bm25 {
    engine: SearchEngine<u32>,
}

impl Bm25 {
    /// Indexes `docs` (each as its [`Document::passage`]).
    pub fn new(docs: &[Document]) -> Bm25 {
        let items: Vec<bm25::Document<u32>> = docs
            .iter()
            .map(|d| bm25::Document::new(d.id, d.passage()))
            .collect();
        Bm25 {
            engine: SearchEngineBuilder::<u32>::with_documents(Language::English, items).build(),
        }
    }

    /// The ids of the `k` best documents for `query`, best first (ties by id).
    pub fn top_k(&self, query: &str, k: usize) -> Vec<u32> {
        let mut hits: Vec<(f32, u32)> = self
            .engine
            .search(query, None)
            .into_iter()
            .map(|r| (r.score, r.document.id))
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.into_iter().take(k).map(|(_, id)| id).collect()
    }
}

/// Cosine similarity; 0 when either vector is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The indices of the `k` vectors of `docs` most similar to `query`, best first (ties by
/// index).
pub fn nearest(query: &[f32], docs: &[Vec<f32>], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (cosine(query, d), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::collection::generate;

    #[test]
    fn bm25_finds_the_document_of_most_questions_among_near_misses() {
        let c = generate(3, 300);
        let index = Bm25::new(&c.documents);
        let (mut at1, mut at3) = (0, 0);
        for q in &c.questions {
            let top = index.top_k(&q.question, 3);
            assert_eq!(top.len(), 3);
            at1 += usize::from(top[0] == q.document);
            at3 += usize::from(top.contains(&q.document));
        }
        // Every pair recurs in two wings here and decoys name exact vaults: BM25 is good, not
        // perfect, and a wider k helps.
        assert!(at3 >= at1, "{at1} {at3}");
        assert!(at3 * 10 >= c.questions.len() * 6, "recall@3 {at3}/300");
        assert!(
            at1 < c.questions.len(),
            "the near misses cost BM25 some top-1 hits"
        );
        assert_eq!(index.top_k(&c.questions[0].question, 3), {
            let again = Bm25::new(&c.documents);
            again.top_k(&c.questions[0].question, 3)
        });
    }

    #[test]
    fn nearest_vectors_by_cosine() {
        let docs = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.7, 0.7],
            vec![0.0, 0.0],
        ];
        assert_eq!(nearest(&[1.0, 0.1], &docs, 2), vec![0, 2]);
        assert_eq!(nearest(&[0.0, 1.0], &docs, 1), vec![1]);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-9);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }
}
