//! Retrieval probes after RULER's needle tasks: facts placed at chosen depths of a filled prompt
//! ([`crate::workload::prompt_with`], the cells' own fill), distinct per trial and never in the
//! corpus, and one question asked at the end, scored by a normalised match of the expected
//! value.
//!
//! - [`ProbeKind::Needle`]: one fact, asked for.
//! - [`ProbeKind::Multikey`]: [`MULTIKEY_FACTS`] facts of the same shape with different keys, the
//!   asked one at the stated depth, the others spread over the rest of the fill (distractors).
//! - [`ProbeKind::Chain`]: two facts the answer needs together (a key names a second key, whose
//!   value is asked): the fact with the value at the stated depth, the link at the mirror depth
//!   `1 − depth`.

use serde::{Deserialize, Serialize};

use crate::stats::SplitMix64;
use crate::workload::{self, Insert, Placed, Prompt, Ratios};

/// Facts of a [`ProbeKind::Multikey`] probe (one asked, the rest distractors).
pub const MULTIKEY_FACTS: usize = 4;

/// The kind of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// One fact.
    Needle,
    /// Several facts with different keys; one is asked.
    Multikey,
    /// Two facts the answer needs together.
    Chain,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Needle, ProbeKind::Multikey, ProbeKind::Chain];

    /// `needle`, `multikey`, `chain`.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Needle => "needle",
            ProbeKind::Multikey => "multikey",
            ProbeKind::Chain => "chain",
        }
    }

    /// The kind of a label.
    pub fn parse(s: &str) -> Option<ProbeKind> {
        ProbeKind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// The words keys are made of: none of them is in the corpus as a `<colour>-<animal>` pair,
/// and values are seven-digit numbers, which the corpus does not hold.
pub(crate) const COLOURS: [&str; 16] = [
    "amber", "cobalt", "crimson", "indigo", "jade", "ochre", "scarlet", "teal", "violet",
    "saffron", "umber", "azure", "coral", "ivory", "olive", "magenta",
];
pub(crate) const ANIMALS: [&str; 16] = [
    "falcon", "otter", "heron", "lynx", "badger", "marten", "ibex", "condor", "gecko", "walrus",
    "bison", "puffin", "jackal", "tapir", "osprey", "newt",
];

/// One probe: the facts placed in the fill, the question asked after it, the expected value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Its kind.
    pub kind: ProbeKind,
    /// The stated depth of the asked fact (share of the fill before it).
    pub depth: f64,
    /// The facts, each with its depth.
    pub facts: Vec<Fact>,
    /// The question, asked after the fill.
    pub question: String,
    /// The value the answer must hold.
    pub expected: String,
}

/// A fact of a probe and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// Share of the fill before it.
    pub depth: f64,
    /// The sentence.
    pub text: String,
}

fn key(rng: &mut SplitMix64, taken: &mut Vec<String>) -> String {
    loop {
        let k = format!(
            "{}-{}",
            COLOURS[rng.below(COLOURS.len())],
            ANIMALS[rng.below(ANIMALS.len())]
        );
        if !taken.contains(&k) {
            taken.push(k.clone());
            return k;
        }
    }
}

fn value(rng: &mut SplitMix64, taken: &mut Vec<String>) -> String {
    loop {
        let v = (1_000_000 + rng.below(9_000_000)).to_string();
        if !taken.contains(&v) {
            taken.push(v.clone());
            return v;
        }
    }
}

fn fact_of(key: &str, value: &str) -> String {
    format!("The access code of the {key} vault is {value}.")
}

/// The probe of `kind` at `depth` for `seed` (distinct seeds give distinct keys and values: the
/// run, test and trial make the seed).
pub fn probe(kind: ProbeKind, depth: f64, seed: u64) -> Probe {
    let mut rng = SplitMix64::new(seed);
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let k = key(&mut rng, &mut keys);
    let v = value(&mut rng, &mut values);
    let depth = depth.clamp(0.0, 1.0);
    let suffix = "Answer with the number only.";
    match kind {
        ProbeKind::Needle => Probe {
            kind,
            depth,
            facts: vec![Fact {
                depth,
                text: fact_of(&k, &v),
            }],
            question: format!("What is the access code of the {k} vault? {suffix}"),
            expected: v,
        },
        ProbeKind::Multikey => {
            let mut facts = vec![Fact {
                depth,
                text: fact_of(&k, &v),
            }];
            for i in 1..MULTIKEY_FACTS {
                // The distractors evenly over the fill, shifted off the asked fact's depth.
                let d = (depth + i as f64 / MULTIKEY_FACTS as f64).fract();
                let (dk, dv) = (key(&mut rng, &mut keys), value(&mut rng, &mut values));
                facts.push(Fact {
                    depth: d,
                    text: fact_of(&dk, &dv),
                });
            }
            Probe {
                kind,
                depth,
                facts,
                question: format!("What is the access code of the {k} vault? {suffix}"),
                expected: v,
            }
        }
        ProbeKind::Chain => {
            let inner = key(&mut rng, &mut keys);
            Probe {
                kind,
                depth,
                facts: vec![
                    Fact {
                        depth: 1.0 - depth,
                        text: format!(
                            "The {k} vault opens with the same access code as the {inner} vault."
                        ),
                    },
                    Fact {
                        depth,
                        text: fact_of(&inner, &v),
                    },
                ],
                question: format!(
                    "What is the access code of the {k} vault? Follow the references in the document. {suffix}"
                ),
                expected: v,
            }
        }
    }
}

/// The user message of a probe: the fill with the facts in it, then the question.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePrompt {
    /// The whole message.
    pub text: String,
    /// The fill with its facts (the document part of the message).
    pub document: Prompt,
    /// Where each fact landed, in the order of [`Probe::facts`].
    pub placed: Vec<Placed>,
}

/// The words before the document.
pub const PREAMBLE: &str = "Read the document below. It hides facts about vaults among unrelated text; a question about them follows it.\n<document>\n";

/// Builds the message of `probe` with `fill_tokens` tokens of document (facts included) from
/// the corpus, keyed by `key` (unique per trial: no prompt cache can serve it).
pub fn prompt(probe: &Probe, key: &str, fill_tokens: u32, ratios: Ratios) -> ProbePrompt {
    let inserts: Vec<Insert> = probe
        .facts
        .iter()
        .map(|f| Insert {
            depth: f.depth,
            text: f.text.clone(),
        })
        .collect();
    let (document, placed) = workload::prompt_with(key, fill_tokens, ratios, None, &inserts);
    let text = format!(
        "{PREAMBLE}{}\n</document>\n\nQuestion: {}",
        document.text.trim_end(),
        probe.question
    );
    ProbePrompt {
        text,
        document,
        placed,
    }
}

/// Lower case, digit groups joined (`4,417,203`, `4 417 203` and `4_417_203` are `4417203`),
/// and everything but letters and digits a separator: the words joined by one space.
pub fn normalise(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if between_digits && matches!(c, ',' | ' ' | '_' | '\u{2009}' | '\u{202f}') {
            continue;
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim().to_string()
}

/// Whether `answer` holds `expected` as a whole word once both are normalised.
pub fn matches(expected: &str, answer: &str) -> bool {
    let want = normalise(expected);
    !want.is_empty() && format!(" {} ", normalise(answer)).contains(&format!(" {want} "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("4417203", "The access code is 4417203.", true)]
    #[case("4417203", "**4,417,203**", true)]
    #[case("4417203", "It is 4 417 203", true)]
    #[case("4417203", "code: 4417203\n", true)]
    #[case("4417203", "44172030", false)]
    #[case("4417203", "14417203", false)]
    #[case("4417203", "4417", false)]
    #[case("4417203", "", false)]
    #[case("", "anything", false)]
    fn answers_match_after_normalisation(
        #[case] expected: &str,
        #[case] answer: &str,
        #[case] ok: bool,
    ) {
        assert_eq!(matches(expected, answer), ok, "{answer:?}");
    }

    #[test]
    fn normalisation_joins_digit_groups_only() {
        assert_eq!(normalise("A, B  1,234 and 5 6"), "a b 1234 and 56");
        assert_eq!(normalise("Jade-Otter vault!"), "jade otter vault");
    }

    #[test]
    fn probes_are_distinct_per_seed_and_never_in_the_corpus() {
        let corpus: String = workload::CORPUS.iter().map(|s| s.text.as_str()).collect();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            for kind in ProbeKind::ALL {
                let p = probe(kind, 0.5, seed);
                assert!(!corpus.contains(&p.expected), "{}", p.expected);
                for f in &p.facts {
                    assert!(!corpus.contains(&f.text));
                }
                if kind == ProbeKind::Needle {
                    seen.insert((p.question.clone(), p.expected.clone()));
                }
            }
        }
        assert!(seen.len() >= 195, "{} distinct needles of 200", seen.len());
        assert!(!corpus.contains("vault"));
    }

    #[rstest]
    #[case(ProbeKind::Needle, 1)]
    #[case(ProbeKind::Multikey, MULTIKEY_FACTS)]
    #[case(ProbeKind::Chain, 2)]
    fn each_kind_places_its_facts(#[case] kind: ProbeKind, #[case] facts: usize) {
        let r = Ratios::default();
        let p = probe(kind, 0.25, 7);
        assert_eq!(p.facts.len(), facts);
        let pp = prompt(&p, "run/q/trial-1", 3000, r);
        assert!((pp.document.estimated_tokens - 3000.0).abs() <= 1.0);
        for (f, at) in p.facts.iter().zip(&pp.placed) {
            assert!(pp.document.text[at.offset..].starts_with(&f.text));
        }
        // The asked value is in one fact only; the question comes last.
        let with_value = p
            .facts
            .iter()
            .filter(|f| f.text.contains(&p.expected))
            .count();
        assert_eq!(with_value, 1);
        let asked = p
            .facts
            .iter()
            .find(|f| f.text.contains(&p.expected))
            .unwrap();
        assert_eq!(asked.depth, 0.25);
        assert!(pp.text.ends_with(&p.question));
        assert_eq!(ProbeKind::parse(kind.label()), Some(kind));
    }

    #[test]
    fn a_chain_needs_both_facts() {
        let p = probe(ProbeKind::Chain, 0.8, 3);
        let asked_key = p.question.split_whitespace().nth(7).unwrap();
        // The question's key is not the key of the fact with the value.
        let with_value = p
            .facts
            .iter()
            .find(|f| f.text.contains(&p.expected))
            .unwrap();
        assert!(!with_value.text.contains(asked_key), "{p:?}");
        assert!(p.facts.iter().any(|f| f.text.contains(asked_key)));
        assert!((p.facts[0].depth - 0.2).abs() < 1e-12);
    }
}
