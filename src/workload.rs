//! Prompts of a target token size, drawn from the corpus under `harness/corpus/` (prose and
//! code-like text), each with a unique start so no prompt cache can serve it.
//!
//! The harness cannot tokenize for every model, so it sizes prompts in characters and
//! calibrates characters per token from the server's own `prompt_eval_count`, per model and
//! per kind of text (prose and code tokenize at different rates, so a window of the corpus is
//! sized from its own mix).

/// The kind of a corpus fragment: the two kinds tokenize at different rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// English prose (`harness/corpus/prose.txt`).
    Prose,
    /// Code-like text (`harness/corpus/code.txt`).
    Code,
}

/// One fragment of the corpus (a sentence of prose or a line of code), with its line break.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The text.
    pub text: String,
    /// Its kind.
    pub kind: Kind,
}

/// The corpus as fragments: prose sentences and code lines. A prompt is a pseudo-random
/// sequence of many fragments, so its token density is the corpus average (a window of a few
/// paragraphs would vary by ±10 % from paragraph to paragraph).
pub static CORPUS: std::sync::LazyLock<Vec<Segment>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::new();
    for para in include_str!("../harness/corpus/prose.txt").lines() {
        let para = para.trim();
        let mut rest = para;
        while !rest.is_empty() {
            // A sentence ends at ". ", "? " or "! "; keep the punctuation.
            let cut = rest
                .match_indices(['.', '?', '!'])
                .map(|(i, _)| i + 1)
                .find(|&i| rest[i..].starts_with(' ') || i == rest.len())
                .unwrap_or(rest.len());
            out.push(Segment {
                text: format!("{}\n", rest[..cut].trim()),
                kind: Kind::Prose,
            });
            rest = rest[cut..].trim_start();
        }
    }
    for line in include_str!("../harness/corpus/code.txt").lines() {
        if !line.trim().is_empty() {
            out.push(Segment {
                text: format!("{line}\n"),
                kind: Kind::Code,
            });
        }
    }
    out
});

/// splitmix64: a small, seeded generator for the fragment order.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Characters per token of each kind of text, for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Characters per token of prose.
    pub prose: f64,
    /// Characters per token of code.
    pub code: f64,
}

impl Default for Ratios {
    /// The guess before a model has been calibrated.
    fn default() -> Self {
        Ratios {
            prose: 4.2,
            code: 3.0,
        }
    }
}

impl Ratios {
    fn of(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Prose => self.prose,
            Kind::Code => self.code,
        }
    }

    /// Both ratios scaled by `factor` (e.g. estimated / counted tokens of a real prompt).
    pub fn scaled(&self, factor: f64) -> Ratios {
        Ratios {
            prose: self.prose * factor,
            code: self.code * factor,
        }
    }
}

/// Plausible range of characters per token; a calibration outside it is refused.
pub const CHARS_PER_TOKEN_RANGE: (f64, f64) = (1.0, 12.0);

/// A prompt and what it was meant to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The text sent (raw).
    pub text: String,
    /// Tokens it is meant to hold.
    pub intended_tokens: u32,
    /// Tokens the ratios predict for `text` (close to `intended_tokens`).
    pub estimated_tokens: f64,
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

/// Builds a prompt of about `tokens` tokens: a first line unique to `key` (run, cell, trial),
/// then corpus fragments (of `only` one kind, when given) in an order shuffled by `key`, each
/// counted at its kind's ratio, the last one cut to land on the target.
pub fn prompt_of(key: &str, tokens: u32, ratios: Ratios, only: Option<Kind>) -> Prompt {
    let segments: Vec<&Segment> = CORPUS
        .iter()
        .filter(|s| only.is_none_or(|k| s.kind == k))
        .collect();
    let head = format!("[{:016x} session {key:?}]\n", fnv1a(key));
    let target = tokens as f64;
    let mut est = head.len() as f64 / ratios.code;
    let mut text = head;
    let mut rng = fnv1a(key);
    let mut order: Vec<usize> = Vec::new();
    while est < target - 0.5 {
        if order.is_empty() {
            // A fresh shuffle of every fragment (Fisher–Yates), used back to front.
            order = (0..segments.len()).collect();
            for i in (1..order.len()).rev() {
                let j = (splitmix64(&mut rng) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        let seg = segments[order.pop().expect("refilled above")];
        let r = ratios.of(seg.kind);
        let seg_tokens = seg.text.len() as f64 / r;
        if est + seg_tokens <= target {
            text.push_str(&seg.text);
            est += seg_tokens;
        } else {
            let mut cut = (((target - est) * r).round() as usize).min(seg.text.len());
            while !seg.text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.push_str(&seg.text[..cut]);
            est += cut as f64 / r;
            break;
        }
    }
    Prompt {
        text,
        intended_tokens: tokens,
        estimated_tokens: est,
    }
}

/// A prompt of mixed prose and code (see [`prompt_of`]).
pub fn prompt(key: &str, tokens: u32, ratios: Ratios) -> Prompt {
    prompt_of(key, tokens, ratios, None)
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

    fn total(kind: Kind) -> usize {
        CORPUS
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.text.len())
            .sum()
    }

    #[test]
    fn corpus_has_prose_and_code() {
        let all: String = CORPUS.iter().map(|s| s.text.as_str()).collect();
        assert!(all.contains("lighthouse keeper"));
        assert!(all.contains("pub fn reserve"));
        assert!(total(Kind::Prose) > 7_000 && total(Kind::Code) > 7_000);
    }

    #[rstest]
    #[case(100)]
    #[case(1024)]
    #[case(20_000)]
    fn prompts_hit_their_estimated_size(#[case] tokens: u32) {
        let r = Ratios {
            prose: 4.0,
            code: 3.0,
        };
        let p = prompt("run/cell/trial-1", tokens, r);
        assert!((p.estimated_tokens - tokens as f64).abs() <= 1.0, "{p:?}");
        assert_eq!(p.intended_tokens, tokens);
        // The text really is what the estimate says: prose at 4, code at 3 characters a token.
        assert!(p.text.len() as f64 >= tokens as f64 * 3.0 - 4.0);
        assert!(p.text.len() as f64 <= tokens as f64 * 4.0 + 4.0);
    }

    #[test]
    fn single_kind_prompts() {
        let r = Ratios::default();
        let p = prompt_of("k", 300, r, Some(Kind::Code));
        let code = include_str!("../harness/corpus/code.txt");
        let lines: Vec<&str> = p.text.lines().collect();
        // Every whole line after the unique first one is a line of the code corpus.
        for line in &lines[1..lines.len() - 1] {
            assert!(code.lines().any(|c| c == *line), "{line:?} is not code");
        }
        assert!((p.text.len() as f64 - 300.0 * r.code).abs() < 40.0);
    }

    #[test]
    fn prompts_mix_many_fragments_of_both_kinds() {
        let p = prompt("mix", 1024, Ratios::default());
        let prose = CORPUS
            .iter()
            .filter(|s| s.kind == Kind::Prose && p.text.contains(s.text.as_str()))
            .count();
        let code = CORPUS
            .iter()
            .filter(|s| s.kind == Kind::Code && p.text.contains(s.text.as_str()))
            .count();
        assert!(
            prose >= 10 && code >= 10,
            "{prose} prose and {code} code fragments"
        );
    }

    #[test]
    fn prompts_start_uniquely() {
        let r = Ratios::default();
        let a = prompt("run1/cell/0", 500, r);
        let b = prompt("run1/cell/1", 500, r);
        assert_ne!(a.text, b.text);
        // The very first line differs, so no prefix cache can match past the first tokens.
        assert_ne!(
            a.text[..8],
            b.text[..8],
            "{:?} vs {:?}",
            &a.text[..40],
            &b.text[..40]
        );
        // Same key, same prompt (reproducible).
        assert_eq!(a, prompt("run1/cell/0", 500, r));
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
