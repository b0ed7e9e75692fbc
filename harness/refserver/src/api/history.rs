//! Chat-history cutting as Ollama does it when a chat prompt outgrows `num_ctx`.
//!
//! ollama/ollama `server/prompt.go` `chatPrompt` (Go-template models) and `server/routes.go`
//! `truncateNativeChatMessages` (GGUF-template models) do the same: for i = 0, 1, …, render the
//! system messages before i followed by every message from i on, tokenize the result (without
//! BOS: `Tokenize` sends `add_special: false`), and keep the first i whose count is at most
//! `num_ctx`; the last message is always kept, whatever its size. Whole messages are dropped,
//! from the front; every system message stays, in its place. The reply says nothing about it
//! (Ollama logs it at DEBUG only); its `prompt_eval_count` is the count of what was kept. A
//! prompt still longer than the context after this (one huge last message) is cut token-wise
//! afterwards (`job::truncate_tokens`).

use crate::template::ChatMessage;

/// The messages a chat prompt is rendered from, after cutting.
#[derive(Debug, PartialEq)]
pub(super) struct Kept {
    pub(super) messages: Vec<ChatMessage>,
    /// How many messages were dropped from the front (system messages among them are kept).
    pub(super) dropped: usize,
}

/// The candidate that starts at message `i`: the system messages before `i`, then `msgs[i..]`.
fn from(msgs: &[ChatMessage], i: usize) -> Vec<ChatMessage> {
    msgs[..i]
        .iter()
        .filter(|m| m.role == "system")
        .chain(&msgs[i..])
        .cloned()
        .collect()
}

/// Ollama's search for the first start that fits: [`Search::candidate`] is the prompt to count
/// next, [`Search::too_long`] moves past it, [`Search::finish`] keeps from the current start.
/// The last message is kept without being counted. A history that fits costs one count.
pub(super) struct Search {
    msgs: Vec<ChatMessage>,
    start: usize,
}

impl Search {
    pub(super) fn new(msgs: Vec<ChatMessage>) -> Search {
        Search { msgs, start: 0 }
    }

    /// The messages to render and count next, or `None` when only the last one is left.
    pub(super) fn candidate(&self) -> Option<Vec<ChatMessage>> {
        (self.start + 1 < self.msgs.len()).then(|| from(&self.msgs, self.start))
    }

    /// The candidate's prompt has more than `num_ctx` tokens.
    pub(super) fn too_long(&mut self) {
        self.start += 1;
    }

    pub(super) fn finish(self) -> Kept {
        let start = self.start;
        let dropped = start
            - self.msgs[..start]
                .iter()
                .filter(|m| m.role == "system")
                .count();
        Kept {
            messages: if start == 0 {
                self.msgs
            } else {
                from(&self.msgs, start)
            },
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
        list.iter().map(|(r, c)| ChatMessage::new(r, c)).collect()
    }

    /// One token per character of content plus 2 per message: enough to drive the loop.
    fn size(m: &[ChatMessage]) -> usize {
        m.iter().map(|m| m.content.len() + 2).sum()
    }

    /// The search driven by [`size`] (the counts it asked for, in order).
    fn run(m: Vec<ChatMessage>, num_ctx: usize) -> (Kept, Vec<usize>) {
        let mut seen = Vec::new();
        let mut search = Search::new(m);
        while let Some(c) = search.candidate() {
            seen.push(size(&c));
            if size(&c) <= num_ctx {
                break;
            }
            search.too_long();
        }
        (search.finish(), seen)
    }

    #[test]
    fn fits_with_one_count() {
        let m = msgs(&[("system", "sss"), ("user", "aaaa"), ("assistant", "bbbb")]);
        let (kept, seen) = run(m.clone(), 100);
        assert_eq!(
            kept,
            Kept {
                messages: m,
                dropped: 0
            }
        );
        assert_eq!(seen, [17]);
    }

    #[test]
    fn drops_whole_messages_from_the_front_keeping_systems() {
        // sizes: system 5, u1 12, a1 12, system 4, u2 12, a2 12, u3 6
        let m = msgs(&[
            ("system", "sss"),
            ("user", "1111111111"),
            ("assistant", "2222222222"),
            ("system", "tt"),
            ("user", "3333333333"),
            ("assistant", "4444444444"),
            ("user", "5555"),
        ]);
        // All: 63. From 1 (system kept): 63. From 2: 51. From 3: 39. From 4 (both systems): 39.
        // From 5: 27 ≤ 30.
        let (kept, seen) = run(m.clone(), 30);
        assert_eq!(seen, [63, 63, 51, 39, 39, 27]);
        assert_eq!(
            kept.messages,
            vec![m[0].clone(), m[3].clone(), m[5].clone(), m[6].clone()]
        );
        assert_eq!(kept.dropped, 3);
    }

    #[test]
    fn keeps_the_last_message_whatever_its_size() {
        let m = msgs(&[
            ("system", "s"),
            ("user", "aaaa"),
            ("user", "a very long last message"),
        ]);
        let (kept, seen) = run(m.clone(), 5);
        // The last candidate is not counted: it is kept anyway.
        assert_eq!(seen.len(), 2);
        assert_eq!(kept.messages, vec![m[0].clone(), m[2].clone()]);
        assert_eq!(kept.dropped, 1);
        let (kept, seen) = run(msgs(&[("user", "too long for 3")]), 3);
        assert!(seen.is_empty());
        assert_eq!(kept.dropped, 0);
    }
}
