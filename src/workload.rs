//! Prompts of a target token size, drawn from the corpus under `harness/corpus/` (prose and
//! code-like text), each with a unique start so no prompt cache can serve it.
//!
//! The harness cannot tokenize for every model, so it sizes prompts in characters and
//! calibrates characters per token from the server's own `prompt_eval_count`, per model.

/// The corpus: prose and code paragraphs interleaved, so any window holds both kinds.
pub static CORPUS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let prose: Vec<&str> = paragraphs(include_str!("../harness/corpus/prose.txt"));
    let code: Vec<&str> = paragraphs(include_str!("../harness/corpus/code.txt"));
    let mut out = String::new();
    let n = prose.len().max(code.len());
    for i in 0..n {
        for part in [prose.get(i), code.get(i)].into_iter().flatten() {
            out.push_str(part);
            out.push_str("\n\n");
        }
    }
    out
});

fn paragraphs(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .map(str::trim_end)
        .filter(|p| !p.trim().is_empty())
        .collect()
}

/// Characters per token assumed before a model has been calibrated.
pub const INITIAL_CHARS_PER_TOKEN: f64 = 3.5;

/// Plausible range of characters per token; a calibration outside it is refused.
pub const CHARS_PER_TOKEN_RANGE: (f64, f64) = (1.0, 12.0);

/// A prompt and what it was meant to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The text sent (raw).
    pub text: String,
    /// Tokens it is meant to hold.
    pub intended_tokens: u32,
}

/// FNV-1a, for a stable offset per prompt key.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Builds a prompt of about `tokens` tokens at `chars_per_token`, starting with a line unique
/// to `key` (run, cell, trial) and continuing with corpus text from an offset chosen by `key`.
pub fn prompt(key: &str, tokens: u32, chars_per_token: f64) -> Prompt {
    let corpus: &str = &CORPUS;
    let head = format!("[session {key:?} {:016x}]\n", fnv1a(key));
    let target_chars = (tokens as f64 * chars_per_token).round() as usize;
    let body_chars = target_chars.saturating_sub(head.len());
    // Start at a paragraph boundary chosen by the key.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(corpus.match_indices("\n\n").map(|(i, _)| i + 2))
        .filter(|&i| i < corpus.len())
        .collect();
    let mut pos = starts[(fnv1a(key) as usize) % starts.len()];
    let mut text = head;
    let mut left = body_chars;
    while left > 0 {
        let rest = &corpus[pos..];
        if rest.len() <= left {
            text.push_str(rest);
            left -= rest.len();
            pos = 0;
        } else {
            // Cut on a char boundary at or below `left`.
            let mut cut = left;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            text.push_str(&rest[..cut]);
            left = 0;
        }
    }
    Prompt {
        text,
        intended_tokens: tokens,
    }
}

/// Characters per token implied by a prompt of `chars` characters that the server counted as
/// `tokens` tokens; `None` when outside [`CHARS_PER_TOKEN_RANGE`].
pub fn calibrate(chars: usize, tokens: u64) -> Option<f64> {
    if tokens == 0 {
        return None;
    }
    let r = chars as f64 / tokens as f64;
    (CHARS_PER_TOKEN_RANGE.0..=CHARS_PER_TOKEN_RANGE.1)
        .contains(&r)
        .then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn corpus_has_prose_and_code() {
        assert!(CORPUS.contains("lighthouse keeper"));
        assert!(CORPUS.contains("pub fn reserve"));
        assert!(CORPUS.len() > 15_000);
    }

    #[rstest]
    #[case(100, 3.5)]
    #[case(1024, 4.0)]
    #[case(20_000, 3.2)]
    fn prompts_hit_their_size(#[case] tokens: u32, #[case] cpt: f64) {
        let p = prompt("run/cell/trial-1", tokens, cpt);
        let target = (tokens as f64 * cpt).round() as usize;
        assert!(p.text.len().abs_diff(target) <= 4, "{} vs {target}", p.text.len());
        assert_eq!(p.intended_tokens, tokens);
    }

    #[test]
    fn prompts_start_uniquely() {
        let a = prompt("run1/cell/0", 500, 3.5);
        let b = prompt("run1/cell/1", 500, 3.5);
        assert_ne!(a.text, b.text);
        // The very first line differs, so no prefix cache can match past the first tokens.
        let first = |p: &Prompt| p.text.lines().next().unwrap().to_string();
        assert_ne!(first(&a), first(&b));
        // Same key, same prompt (reproducible).
        assert_eq!(a, prompt("run1/cell/0", 500, 3.5));
    }

    #[rstest]
    #[case(3500, 1000, Some(3.5))]
    #[case(100, 0, None)]
    #[case(100, 1000, None)]
    #[case(100_000, 1000, None)]
    fn calibration(#[case] chars: usize, #[case] tokens: u64, #[case] expected: Option<f64>) {
        assert_eq!(calibrate(chars, tokens), expected);
    }
}
