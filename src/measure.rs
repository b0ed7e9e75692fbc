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

use crate::backend::{BackendError, Completed};
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
    r.invalid_reasons.push(err.to_string());
    r
}

/// Metrics and validity of a completed stream.
pub fn from_completed(plan: &TrialPlan, c: &Completed) -> TrialRecord {
    let mut r = base(plan);
    let m = &c.metrics;
    r.e2e_s = Some(c.e2e.as_secs_f64());
    r.done_reason = m.done_reason.clone();
    r.prompt_tokens_evaluated = m.prompt_eval_count.map(|v| v as u32);
    r.output_tokens = m.eval_count.map(|v| v as u32);
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
    r.content_chunks = answer.len() as u32;
    r.thinking_chunks = c.events.iter().filter(|e| !e.thinking.is_empty()).count() as u32;
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

    r.invalid_reasons = validity(plan, &r);
    r.valid = r.invalid_reasons.is_empty();
    r
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

/// Every reason the trial's numbers cannot be trusted (empty when they can).
pub fn validity(plan: &TrialPlan, r: &TrialRecord) -> Vec<String> {
    let mut why = Vec::new();
    let intended = plan.intended_tokens as f64;
    match r.prompt_tokens_evaluated {
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
    match r.output_tokens {
        None => why.push("server did not report eval_count".to_string()),
        Some(n) if n < 2 => why.push(format!("only {n} output token(s): no decode to measure")),
        Some(n) => {
            let floor = (plan.num_predict / 4).max(2);
            if n < floor && r.done_reason.as_deref() != Some("length") {
                why.push(format!(
                    "model stopped after {n} output tokens (done_reason {:?}); decode needs at least {floor} of num_predict {}",
                    r.done_reason.as_deref().unwrap_or("none"),
                    plan.num_predict
                ));
            }
            if r.done_reason.as_deref() == Some("length") && n < plan.num_predict {
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
    use crate::backend::{FinalMetrics, StreamEvent};
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
}
