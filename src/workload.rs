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
    prompt_with(key, tokens, ratios, only, &[]).0
}

/// A text placed inside a prompt's fill ([`prompt_with`]): a fact of a retrieval probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    /// Where it goes: the share of the fill (the prompt without its inserts) before it: 0 =
    /// the start, 1 = the end.
    pub depth: f64,
    /// The text (a line of its own; counted at the prose ratio).
    pub text: String,
}

/// Where an [`Insert`] landed in the text of a prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    /// Byte offset of its first character.
    pub offset: usize,
    /// Tokens the ratios count before it, the inserts before it included.
    pub tokens_before: f64,
    /// Tokens of fill (the prompt without its inserts) before it: its depth × the fill's
    /// tokens, within a word.
    pub fill_before: f64,
}

/// [`prompt_of`] with `inserts` placed in the fill, each at its depth of the prompt's
/// `tokens` (a fragment is cut at a space to make room, so an insert sits within a word of its
/// depth); the inserts count towards `tokens`, so the prompt keeps its size. Returns where each
/// insert landed, in the order given.
pub fn prompt_with(
    key: &str,
    tokens: u32,
    ratios: Ratios,
    only: Option<Kind>,
    inserts: &[Insert],
) -> (Prompt, Vec<Placed>) {
    let segments: Vec<&Segment> = CORPUS
        .iter()
        .filter(|s| only.is_none_or(|k| s.kind == k))
        .collect();
    let head = format!("[{:016x} session {key:?}]\n", fnv1a(key));
    let target = tokens as f64;
    let mut est = head.len() as f64 / ratios.code;
    let mut text = head;
    // The inserts in the order of their depth, each as its own line.
    let mut pending: Vec<(usize, f64, String)> = inserts
        .iter()
        .enumerate()
        .map(|(i, ins)| {
            let line = format!("{}\n", ins.text.trim_end());
            (i, ins.depth.clamp(0.0, 1.0), line)
        })
        .collect();
    pending.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut placed = vec![
        Placed {
            offset: 0,
            tokens_before: 0.0,
            fill_before: 0.0,
        };
        inserts.len()
    ];
    let mut place =
        |text: &mut String, est: &mut f64, fill: f64, (i, _, line): (usize, f64, String)| {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            placed[i] = Placed {
                offset: text.len(),
                tokens_before: *est,
                fill_before: fill,
            };
            *est += line.len() as f64 / ratios.prose;
            text.push_str(&line);
        };
    // The fill's own budget: what the inserts leave of the target.
    let insert_tokens: f64 = pending
        .iter()
        .map(|p| p.2.len() as f64 / ratios.prose)
        .sum();
    let fill_target = (target - insert_tokens).max(0.0);
    for p in &mut pending {
        p.1 *= fill_target;
    }
    let mut fill_est = est;
    let mut rng = fnv1a(key);
    let mut order: Vec<usize> = Vec::new();
    while fill_est < fill_target - 0.5 {
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
        // The fragment, cut where the fill ends, and again where an insert is due.
        let mut rest: &str = &seg.text;
        let room = ((fill_target - fill_est) * r).round() as usize;
        let last = rest.len() as f64 / r > fill_target - fill_est;
        if last {
            rest = &rest[..floor_boundary(rest, room.min(rest.len()))];
        }
        while let Some(due) = pending.last().map(|p| p.1)
            && fill_est + rest.len() as f64 / r > due
        {
            // Cut at the last space before the insert's depth, or at the depth itself when
            // that space is more than two tokens back.
            let want = floor_boundary(rest, ((due - fill_est).max(0.0) * r).round() as usize);
            let cut = rest[..want].rfind(' ').map_or(want, |i| i + 1);
            let cut = if (want - cut) as f64 > 2.0 * r {
                want
            } else {
                cut
            };
            text.push_str(&rest[..cut]);
            est += cut as f64 / r;
            fill_est += cut as f64 / r;
            rest = &rest[cut..];
            let p = pending.pop().expect("checked above");
            place(&mut text, &mut est, fill_est, p);
        }
        text.push_str(rest);
        est += rest.len() as f64 / r;
        fill_est += rest.len() as f64 / r;
        if last {
            break;
        }
    }
    // Inserts due at (or beyond) the very end.
    while let Some(p) = pending.pop() {
        place(&mut text, &mut est, fill_est, p);
    }
    (
        Prompt {
            text,
            intended_tokens: tokens,
            estimated_tokens: est,
        },
        placed,
    )
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
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
    #[case(0.0)]
    #[case(0.1)]
    #[case(0.5)]
    #[case(0.9)]
    #[case(1.0)]
    fn an_insert_sits_at_its_depth_and_the_prompt_keeps_its_fill(#[case] depth: f64) {
        let r = Ratios {
            prose: 4.0,
            code: 3.0,
        };
        let fact = "The access code of the amber vault is 4417203.";
        let ins = [Insert {
            depth,
            text: fact.to_string(),
        }];
        let (p, placed) = prompt_with("run/quality/trial-3", 4000, r, None, &ins);
        // The prompt keeps its size, the fact is in it once, on a line of its own.
        assert!(
            (p.estimated_tokens - 4000.0).abs() <= 1.0,
            "{}",
            p.estimated_tokens
        );
        assert_eq!(p.text.matches(fact).count(), 1);
        let at = placed[0].offset;
        assert_eq!(&p.text[at..at + fact.len()], fact);
        assert!(at == 0 || p.text[..at].ends_with('\n'));
        // Within two tokens of the stated depth of the fill (a fragment is cut at a space).
        let fill = 4000.0 - (fact.len() + 1) as f64 / 4.0;
        // (Never before the unique first line, which is code-like text.)
        let head = (p.text.lines().next().unwrap().len() + 1) as f64 / 3.0;
        let want = (depth * fill).max(head);
        assert!(
            (placed[0].fill_before - want).abs() <= 2.0,
            "{} tokens before, wanted {want}",
            placed[0].fill_before
        );
        assert_eq!(placed[0].tokens_before, placed[0].fill_before);
        // The text really has that many tokens before the fact at the ratios: between the
        // code and the prose rate.
        let chars = at as f64;
        assert!(chars / 4.0 - 2.0 <= want + 12.0 && chars / 3.0 + 2.0 >= want - 1.0);
        // Without the inserts the same fill is the plain prompt's (the fill code is shared).
        assert_eq!(prompt_with("k", 900, r, None, &[]).0, prompt("k", 900, r));
    }

    #[test]
    fn several_inserts_keep_their_order_of_depth() {
        let r = Ratios::default();
        let ins: Vec<Insert> = [0.8, 0.2, 0.5]
            .iter()
            .map(|&d| Insert {
                depth: d,
                text: format!("FACT at {d}"),
            })
            .collect();
        let (p, placed) = prompt_with("multi", 2000, r, None, &ins);
        assert!(placed[1].offset < placed[2].offset && placed[2].offset < placed[0].offset);
        for (i, pl) in placed.iter().enumerate() {
            let fill = p.estimated_tokens - 3.0 * 12.0 / r.prose;
            assert!(
                (pl.fill_before - ins[i].depth * fill).abs() <= 2.0,
                "{pl:?}"
            );
            assert!(p.text[pl.offset..].starts_with(&ins[i].text));
        }
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
