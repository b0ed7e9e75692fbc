//! One trial: metrics from the timestamped stream, and whether the numbers can be trusted.
//!
//! Definitions (`docs/METRICS.md` "Per trial", and the README's "Metric definitions"): `ttft` =
//! request start → first chunk with non-empty answer content; `ttft_any` = first chunk with any
//! content (thinking included); `decode_tps` = `(eval_count − 1) / (t_last − t_first)` over the
//! chunks with any content, thinking included; `decode_tps_server` = `eval_count /
//! eval_duration`; `prefill_tps_server` = `prompt_eval_count / prompt_eval_duration`; inter-chunk
//! gaps between consecutive chunks with any content, thinking included.
//!
//! Why thinking chunks count: the server's `eval_count` counts thinking tokens too
//! (`docs/ollama-api.md` §1.1, §1.3), so the client rate must span the same tokens the count
//! covers — from the first chunk of any kind to the last. Timing only the answer chunks would
//! divide every token by the answer's time alone and overstate the rate of a thinking model.

use crate::backend::{BackendError, Completed, FinalMetrics};
use crate::results::{TrialKind, TrialRecord};
use crate::stats::percentile;

/// `load_duration` above this inside a cell means the model was reloaded (s). Ollama reports
/// microseconds to milliseconds when the model is already loaded.
pub const RELOAD_THRESHOLD_S: f64 = 0.5;

/// Allowed relative difference between the prompt tokens meant and those the server evaluated.
/// Silent truncation (Ollama keeps about half of `num_ctx`) is far outside it.
pub const FILL_TOLERANCE: f64 = 0.10;

/// What the harness meant to send, for checking what the server did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialPlan {
    /// 0-based index within the cell.
    pub index: u32,
    /// Phase.
    pub kind: TrialKind,
    /// Characters of prompt.
    pub prompt_chars: usize,
    /// Tokens meant.
    pub intended_tokens: u32,
    /// Output cap.
    pub num_predict: u32,
}

/// At most this many output tokens per chunk with content, on average over a stream, before
/// `eval_count` is impossible. Ollama streams one chunk per sampled token and merges tokens
/// only while it holds text back: the bytes of a UTF-8 character split over byte tokens (at
/// most 4), or text that may begin a stop sequence (a few tokens); averaged over a stream that
/// is a little above 1. 16 a chunk on average is four times the worst UTF-8 case held back on
/// every single chunk, so only a count no real stream can give passes it.
pub const MAX_TOKENS_PER_CHUNK: u64 = 16;

/// Tokens the server may evaluate beyond the bytes of the prompt sent: a token covers at least
/// one byte of text (byte-level BPE and SentencePiece with byte fallback alike), plus the few
/// special tokens a tokenizer adds (BOS, EOS, template markers).
pub const PROMPT_SPECIAL_TOKENS: u64 = 16;

/// How much a server duration may exceed the client's end-to-end time before the two cannot
/// both be true: relative (clock rates differ by parts per million) and absolute (timer
/// granularity and the rounding of figures in ns).
pub const DURATION_SLACK_REL: f64 = 0.01;
/// See [`DURATION_SLACK_REL`] (s).
pub const DURATION_SLACK_S: f64 = 0.010;

/// The client receives the first and last chunk with content over a span that the server's
/// `eval_duration` bounds (a chunk cannot arrive before its token exists), plus the variation
/// of network delay between them. A span more than this many times `eval_duration`, plus
/// [`DECODE_SPAN_SLACK_S`], is impossible: generous for a remote server whose link stalls
/// (the delay of one chunk adds to the span once), never reached on a working one.
pub const DECODE_SPAN_FACTOR: f64 = 4.0;
/// See [`DECODE_SPAN_FACTOR`] (s).
pub const DECODE_SPAN_SLACK_S: f64 = 0.25;

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn base(plan: &TrialPlan) -> TrialRecord {
    TrialRecord {
        index: plan.index,
        kind: plan.kind,
        prompt_chars: plan.prompt_chars,
        prompt_tokens_intended: plan.intended_tokens,
        valid: false,
        ..TrialRecord::default()
    }
}

/// A trial whose request failed: invalid, with the error as its reason.
pub fn from_error(plan: &TrialPlan, err: &BackendError) -> TrialRecord {
    let mut r = base(plan);
    if let BackendError::Http { retried, .. } = err {
        r.retried = *retried;
    }
    r.invalid_reasons.push(err.to_string());
    r
}

/// A client-side count as the record keeps it (saturating: a count of chunks cannot reach
/// 2^32 within the line and time limits).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Metrics and validity of a completed stream.
pub fn from_completed(plan: &TrialPlan, c: &Completed) -> TrialRecord {
    let mut r = figures(plan, c);
    let m = &c.metrics;
    r.invalid_reasons.extend(validity(plan, m, &r));
    r.valid = r.invalid_reasons.is_empty();
    r
}

/// The figures of a completed stream, checked only for figures the server cannot have
/// measured ([`impossible_figures`], the reasons); `valid` says whether there are none. The
/// checks of a fixed-size trial ([`validity`]: the prompt's size, a quarter of `num_predict`)
/// are not made: a chat turn ([`crate::agentic`]) has its own.
pub fn figures(plan: &TrialPlan, c: &Completed) -> TrialRecord {
    let mut r = base(plan);
    let m = &c.metrics;
    r.retried = c.retried;
    r.e2e_s = Some(c.e2e.as_secs_f64());
    r.done_reason = m.done_reason.clone();
    // No narrowing: a figure the record cannot hold is left out, and the checks below (on the
    // server's own u64 figures) say why the trial is invalid.
    r.prompt_tokens_evaluated = m.prompt_eval_count.and_then(|v| u32::try_from(v).ok());
    r.output_tokens = m.eval_count.and_then(|v| u32::try_from(v).ok());
    r.load_s = m.load_duration.map(ns_to_s);

    // Arrival times of the chunks with answer content, and of every chunk with any content
    // (thinking included): the decode rate and the gaps use the latter (see the module docs).
    let answer: Vec<f64> = c
        .events
        .iter()
        .filter(|e| !e.content.is_empty())
        .map(|e| e.at.as_secs_f64())
        .collect();
    let any: Vec<f64> = c
        .events
        .iter()
        .filter(|e| !e.content.is_empty() || !e.thinking.is_empty())
        .map(|e| e.at.as_secs_f64())
        .collect();
    r.content_chunks = count(answer.len());
    r.thinking_chunks = count(c.events.iter().filter(|e| !e.thinking.is_empty()).count());
    r.ttft_s = answer.first().copied();
    r.ttft_any_s = any.first().copied();

    if let (Some(&first), Some(&last), Some(n)) = (any.first(), any.last(), m.eval_count)
        && last > first
        && n >= 2
    {
        r.decode_tps = Some((n - 1) as f64 / (last - first));
    }
    if let (Some(n), Some(d)) = (m.eval_count, m.eval_duration)
        && d > 0
    {
        r.decode_tps_server = Some(n as f64 / ns_to_s(d));
    }
    if let (Some(n), Some(d)) = (m.prompt_eval_count, m.prompt_eval_duration)
        && d > 0
    {
        r.prefill_tps_server = Some(n as f64 / ns_to_s(d));
    }
    let gaps: Vec<f64> = any.windows(2).map(|w| w[1] - w[0]).collect();
    r.itl_p50_s = percentile(&gaps, 0.5);
    r.itl_p95_s = percentile(&gaps, 0.95);
    r.itl_max_s = gaps.iter().copied().reduce(f64::max);

    let span = match (any.first(), any.last()) {
        (Some(&a), Some(&b)) => b - a,
        _ => 0.0,
    };
    let seen = ClientSaw {
        chunks: any.len() as u64,
        span_s: span,
        e2e_s: c.e2e.as_secs_f64(),
        prompt_bytes: plan.prompt_chars as u64,
    };
    r.invalid_reasons = impossible_figures(m, &seen);
    r.valid = r.invalid_reasons.is_empty();
    r
}

/// What the client saw of a stream, to check the server's figures against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSaw {
    /// Chunks with any content (thinking included).
    pub chunks: u64,
    /// First → last of those chunks (s).
    pub span_s: f64,
    /// Request sent → `done: true` (s).
    pub e2e_s: f64,
    /// Bytes of prompt sent.
    pub prompt_bytes: u64,
}

/// The server's figures that cannot be true together with what the client saw, each as
/// `impossible server figures: …` (empty when they can all be true).
pub fn impossible_figures(m: &FinalMetrics, seen: &ClientSaw) -> Vec<String> {
    let mut why = Vec::new();
    let mut say = |s: String| why.push(format!("impossible server figures: {s}"));
    if let Some(n) = m.eval_count {
        if n < seen.chunks {
            say(format!(
                "eval_count {n} is less than the {} chunks with content received (each carries at least one token)",
                seen.chunks
            ));
        } else if n > seen.chunks.saturating_mul(MAX_TOKENS_PER_CHUNK).max(1) {
            say(format!(
                "eval_count {n} for {} chunks with content received (more than {MAX_TOKENS_PER_CHUNK} tokens a chunk)",
                seen.chunks
            ));
        }
    }
    if let Some(n) = m.prompt_eval_count
        && n > seen.prompt_bytes.saturating_add(PROMPT_SPECIAL_TOKENS)
    {
        say(format!(
            "prompt_eval_count {n} exceeds the {} bytes of prompt sent (a token covers at least one byte)",
            seen.prompt_bytes
        ));
    }
    let limit = seen.e2e_s * (1.0 + DURATION_SLACK_REL) + DURATION_SLACK_S;
    for (name, d) in [
        ("prompt_eval_duration", m.prompt_eval_duration),
        ("eval_duration", m.eval_duration),
    ] {
        if let Some(d) = d
            && ns_to_s(d) > limit
        {
            say(format!(
                "{name} {:.3} s is longer than the client's end-to-end time {:.3} s",
                ns_to_s(d),
                seen.e2e_s
            ));
        }
    }
    if let (Some(n), Some(d)) = (m.eval_count, m.eval_duration)
        && n >= 2
        && seen.span_s > ns_to_s(d) * DECODE_SPAN_FACTOR + DECODE_SPAN_SLACK_S
    {
        let server_rate = if d > 0 {
            format!("{:.3e} tok/s", n as f64 / ns_to_s(d))
        } else {
            "an infinite rate".to_string()
        };
        say(format!(
            "eval_duration {:.3} s for {n} tokens ({server_rate}), but the client received them over {:.3} s",
            ns_to_s(d),
            seen.span_s
        ));
    }
    why
}

/// Marks `rec` invalid when the runner process changed since the model was loaded (a reload
/// that a short `load_duration` could hide). Records the runner seen.
pub fn check_runner(rec: &mut TrialRecord, at_load: Option<u32>, now: Option<u32>) {
    rec.runner_pid = now;
    if let (Some(a), Some(b)) = (at_load, now)
        && a != b
    {
        rec.invalid_reasons.push(format!(
            "runner process changed (pid {a} → {b}): the model was reloaded inside the cell"
        ));
        rec.valid = false;
    }
}

/// Every reason the trial's numbers cannot be trusted beyond [`impossible_figures`] (empty
/// when they can), from the server's figures `m` as sent and the record `r`.
pub fn validity(plan: &TrialPlan, m: &FinalMetrics, r: &TrialRecord) -> Vec<String> {
    let mut why = Vec::new();
    let intended = plan.intended_tokens as f64;
    match m.prompt_eval_count {
        None => why.push("server did not report prompt_eval_count".to_string()),
        Some(got) if (got as f64) < intended * (1.0 - FILL_TOLERANCE) => why.push(format!(
            "prompt truncated: server evaluated {got} of {} intended prompt tokens",
            plan.intended_tokens
        )),
        Some(got) if (got as f64) > intended * (1.0 + FILL_TOLERANCE) => why.push(format!(
            "prompt larger than intended: server evaluated {got} of {} intended prompt tokens",
            plan.intended_tokens
        )),
        Some(_) => {}
    }
    if let Some(load) = r.load_s
        && load > RELOAD_THRESHOLD_S
    {
        why.push(format!(
            "model reloaded inside the cell: load_duration {load:.2} s > {RELOAD_THRESHOLD_S} s"
        ));
    }
    match m.eval_count {
        None => why.push("server did not report eval_count".to_string()),
        Some(n) if n < 2 => why.push(format!("only {n} output token(s): no decode to measure")),
        Some(n) => {
            let floor = u64::from((plan.num_predict / 4).max(2));
            if n < floor && r.done_reason.as_deref() != Some("length") {
                why.push(format!(
                    "model stopped after {n} output tokens (done_reason {:?}); decode needs at least {floor} of num_predict {}",
                    r.done_reason.as_deref().unwrap_or("none"),
                    plan.num_predict
                ));
            }
            if r.done_reason.as_deref() == Some("length") && n < u64::from(plan.num_predict) {
                why.push(format!(
                    "generation hit the context limit after {n} of {} tokens",
                    plan.num_predict
                ));
            }
        }
    }
    if r.content_chunks == 0 {
        why.push(if r.thinking_chunks > 0 {
            "no answer content: thinking used the whole output budget".to_string()
        } else {
            "no answer content in the stream".to_string()
        });
    }
    if r.decode_tps.is_none() && r.content_chunks > 0 {
        why.push("decode rate undefined: all output arrived in one chunk".to_string());
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StreamEvent;
    use rstest::rstest;
    use std::time::Duration;

    fn ev(ms: u64, content: &str, thinking: &str, done: bool) -> StreamEvent {
        StreamEvent {
            at: Duration::from_millis(ms),
            content: content.into(),
            thinking: thinking.into(),
            done,
        }
    }

    fn plan() -> TrialPlan {
        TrialPlan {
            index: 1,
            kind: TrialKind::Measured,
            prompt_chars: 3500,
            intended_tokens: 1000,
            num_predict: 8,
        }
    }

    fn metrics(prompt: u64, eval: u64) -> FinalMetrics {
        FinalMetrics {
            done_reason: Some("length".into()),
            total_duration: Some(2_000_000_000),
            load_duration: Some(1_000_000),
            prompt_eval_count: Some(prompt),
            prompt_eval_duration: Some(1_000_000_000),
            eval_count: Some(eval),
            eval_duration: Some(800_000_000),
        }
    }

    fn normal() -> Completed {
        let mut events: Vec<StreamEvent> =
            (0..8).map(|i| ev(1000 + i * 100, "x", "", false)).collect();
        events.push(ev(1750, "", "", true));
        Completed {
            events,
            metrics: metrics(1000, 8),
            e2e: Duration::from_millis(1750),
            retried: None,
        }
    }

    #[test]
    fn normal_stream() {
        let r = from_completed(&plan(), &normal());
        assert!(r.valid, "{:?}", r.invalid_reasons);
        assert_eq!(r.ttft_s, Some(1.0));
        assert_eq!(r.ttft_any_s, Some(1.0));
        // 7 intervals over 0.7 s
        assert!((r.decode_tps.unwrap() - 10.0).abs() < 1e-9);
        assert!((r.decode_tps_server.unwrap() - 10.0).abs() < 1e-9);
        assert!((r.prefill_tps_server.unwrap() - 1000.0).abs() < 1e-9);
        assert!((r.itl_p50_s.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(r.content_chunks, 8);
        assert_eq!(r.e2e_s, Some(1.75));
        assert_eq!(r.load_s, Some(0.001));
    }

    #[test]
    fn thinking_chunks_come_before_answer() {
        let mut c = normal();
        c.events[0] = ev(500, "", "hmm", false);
        c.events[1] = ev(600, "", "so", false);
        let r = from_completed(&plan(), &c);
        assert_eq!(r.ttft_any_s, Some(0.5));
        assert_eq!(r.ttft_s, Some(1.2));
        assert_eq!(r.thinking_chunks, 2);
        assert!(r.valid, "{:?}", r.invalid_reasons);
    }

    /// The decision `docs/METRICS.md` and the README state: `eval_count` counts thinking tokens
    /// too, so the client decode rate and the gaps span every chunk with content, thinking
    /// included — not the answer chunks alone.
    #[test]
    fn decode_rate_and_gaps_span_thinking_chunks() {
        // Three thinking chunks 100 ms apart, a 300 ms pause, five answer chunks 100 ms apart.
        let mut events = vec![
            ev(1000, "", "let", false),
            ev(1100, "", "me", false),
            ev(1200, "", "think", false),
        ];
        events.extend((0..5).map(|i| ev(1500 + i * 100, "x", "", false)));
        events.push(ev(1950, "", "", true));
        let c = Completed {
            events,
            metrics: metrics(1000, 8),
            e2e: Duration::from_millis(1950),
            retried: None,
        };
        let r = from_completed(&plan(), &c);
        assert!(r.valid, "{:?}", r.invalid_reasons);
        assert_eq!((r.thinking_chunks, r.content_chunks), (3, 5));
        assert_eq!((r.ttft_any_s, r.ttft_s), (Some(1.0), Some(1.5)));
        // 8 tokens counted by the server, first chunk at 1.0 s, last at 1.9 s: 7 / 0.9 s.
        // Over the answer chunks alone it would be 7 / 0.4 s = 17.5 tok/s.
        let tps = r.decode_tps.unwrap();
        assert!((tps - 7.0 / 0.9).abs() < 1e-9, "{tps}");
        // Seven gaps: six of 0.1 s and the 0.3 s pause between thinking and answer, which the
        // answer chunks alone would not show (their largest gap is 0.1 s).
        assert!(
            (r.itl_max_s.unwrap() - 0.3).abs() < 1e-9,
            "{:?}",
            r.itl_max_s
        );
        assert!(
            (r.itl_p50_s.unwrap() - 0.1).abs() < 1e-9,
            "{:?}",
            r.itl_p50_s
        );
    }

    #[test]
    fn thinking_only_is_invalid() {
        let mut c = normal();
        for e in &mut c.events {
            if !e.done {
                e.thinking = std::mem::take(&mut e.content);
            }
        }
        let r = from_completed(&plan(), &c);
        assert!(!r.valid);
        assert!(
            r.invalid_reasons
                .iter()
                .any(|s| s.contains("thinking used the whole output budget"))
        );
    }

    /// One table for the ways a single figure makes a trial invalid: the normal stream changed
    /// by `tweak`, measured against a plan with `num_predict`; `reason` is the first reason.
    #[rstest]
    #[case::truncated(
        |c: &mut Completed| c.metrics.prompt_eval_count = Some(514),
        8,
        "prompt truncated: server evaluated 514 of 1000"
    )]
    #[case::reloaded(
        |c: &mut Completed| c.metrics.load_duration = Some(2_300_000_000),
        8,
        "model reloaded inside the cell: load_duration 2.30 s"
    )]
    #[case::stopped_early(
        |c: &mut Completed| {
            c.metrics.eval_count = Some(2);
            c.metrics.done_reason = Some("stop".into());
            c.events.truncate(2);
        },
        128,
        "model stopped after 2 output tokens"
    )]
    fn one_bad_figure_is_invalid(
        #[case] tweak: fn(&mut Completed),
        #[case] num_predict: u32,
        #[case] reason: &str,
    ) {
        let mut c = normal();
        tweak(&mut c);
        let p = TrialPlan {
            num_predict,
            ..plan()
        };
        let r = from_completed(&p, &c);
        assert!(!r.valid);
        assert!(
            r.invalid_reasons[0].contains(reason),
            "{:?}",
            r.invalid_reasons
        );
    }

    #[test]
    fn a_new_runner_is_a_reload() {
        let mut r = from_completed(&plan(), &normal());
        check_runner(&mut r, Some(10), Some(10));
        assert!(r.valid);
        check_runner(&mut r, Some(10), None);
        assert!(r.valid, "a runner that cannot be seen proves nothing");
        check_runner(&mut r, Some(10), Some(11));
        assert!(!r.valid);
        assert_eq!(r.runner_pid, Some(11));
        assert!(r.invalid_reasons[0].contains("pid 10 → 11"));
    }

    #[test]
    fn errors_become_invalid_trials() {
        let r = from_error(&plan(), &BackendError::Incomplete { chunks: 3 });
        assert!(!r.valid);
        assert_eq!(
            r.invalid_reasons,
            ["stream ended without done:true after 3 chunk(s)"]
        );
    }

    /// The server's figures against what the client saw: each case changes the normal stream
    /// (8 chunks over 0.7 s, 1.75 s end to end, 3500 bytes of prompt) and names the reason.
    #[rstest]
    #[case::eval_count_far_above_chunks(
        |c: &mut Completed| {
            c.metrics.eval_count = Some(1_000_000_000_000_000);
            c.metrics.eval_duration = Some(1);
        },
        "impossible server figures: eval_count 1000000000000000 for 8 chunks with content received (more than 16 tokens a chunk)"
    )]
    #[case::eval_count_below_chunks(
        |c: &mut Completed| c.metrics.eval_count = Some(5),
        "impossible server figures: eval_count 5 is less than the 8 chunks with content received (each carries at least one token)"
    )]
    #[case::prompt_eval_count_past_the_prompt(
        |c: &mut Completed| c.metrics.prompt_eval_count = Some((1 << 32) + 256),
        "impossible server figures: prompt_eval_count 4294967552 exceeds the 3500 bytes of prompt sent (a token covers at least one byte)"
    )]
    #[case::eval_duration_past_e2e(
        |c: &mut Completed| c.metrics.eval_duration = Some(60_000_000_000),
        "impossible server figures: eval_duration 60.000 s is longer than the client's end-to-end time 1.750 s"
    )]
    #[case::prompt_eval_duration_past_e2e(
        |c: &mut Completed| c.metrics.prompt_eval_duration = Some(2_000_000_000),
        "impossible server figures: prompt_eval_duration 2.000 s is longer than the client's end-to-end time 1.750 s"
    )]
    #[case::decode_far_faster_than_received(
        |c: &mut Completed| c.metrics.eval_duration = Some(100_000_000),
        "impossible server figures: eval_duration 0.100 s for 8 tokens (8.000e1 tok/s), but the client received them over 0.700 s"
    )]
    fn impossible_figures_are_invalid(#[case] tweak: fn(&mut Completed), #[case] reason: &str) {
        let mut c = normal();
        tweak(&mut c);
        let r = from_completed(&plan(), &c);
        assert!(!r.valid);
        assert_eq!(r.invalid_reasons[0], reason, "{:?}", r.invalid_reasons);
    }

    /// Controls at the edges of the bounds: figures that a working server can give pass.
    #[rstest]
    #[case::sixteen_tokens_a_chunk(|c: &mut Completed| c.metrics.eval_count = Some(8 * 16))]
    #[case::one_token_a_chunk(|c: &mut Completed| c.metrics.eval_count = Some(8))]
    #[case::prompt_plus_special_tokens(|c: &mut Completed| c.metrics.prompt_eval_count = Some(3500 + 16))]
    #[case::eval_duration_within_slack(|c: &mut Completed| c.metrics.eval_duration = Some(1_760_000_000))]
    // Span 0.7 s ≤ 4 × 0.12 s + 0.25 s = 0.73 s: a stalled link, not an impossible figure.
    #[case::decode_span_within_bound(|c: &mut Completed| c.metrics.eval_duration = Some(120_000_000))]
    fn possible_figures_pass(#[case] tweak: fn(&mut Completed)) {
        let mut c = normal();
        tweak(&mut c);
        let seen = ClientSaw {
            chunks: 8,
            span_s: 0.7,
            e2e_s: 1.75,
            prompt_bytes: 3500,
        };
        assert_eq!(impossible_figures(&c.metrics, &seen), Vec::<String>::new());
    }

    /// A figure too large for the record is left out, never wrapped: 2^32 + 256 is not 256.
    #[test]
    fn huge_figures_are_not_wrapped() {
        let mut c = normal();
        c.metrics.prompt_eval_count = Some((1 << 32) + 256);
        let r = from_completed(&plan(), &c);
        assert_eq!(r.prompt_tokens_evaluated, None);
        assert!(!r.valid);
        assert!(
            r.invalid_reasons.contains(
                &"prompt larger than intended: server evaluated 4294967552 of 1000 intended prompt tokens"
                    .to_string()
            ),
            "{:?}",
            r.invalid_reasons
        );
        assert!(
            !r.invalid_reasons.iter().any(|s| s.contains("truncated")),
            "{:?}",
            r.invalid_reasons
        );
    }
}
