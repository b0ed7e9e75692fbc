//! The retrieval probe of a `context_scaling` cell (the matrix's optional `probe` and
//! `probe_depths` columns): after the cell's measured trials, one chat request per depth whose
//! message is the cell's own fill with the facts of a [`needle`] probe in it and the question
//! at the end — distinct facts per probe, a document unique from its first line (never cached).
//! Its figures live in [`crate::results::CellResult::probes`], beside the speed trials and never
//! among them, so the trials' statistics, the stopping rule and the gates are those of the cell
//! without a probe. The probe is judged by no gate: its score is a note of the cell's judgement,
//! and the quality report (`comparative_analysis/quality.md`) and the performance matrix's
//! `Accuracy` column show it where the run has no sweep at the cell's context.

use serde::{Deserialize, Serialize};

use super::needle::{self, ProbeKind};
use super::sweep::{self, Target, ask_probe, probe_line};
use super::table::{DEFAULT_NUM_PREDICT, MIN_FILL, QUESTION_ROOM, fits, parse_depths};
use super::{ProbeRecord, cut_answers_note};
use crate::backend::{LoadOptions, OllamaClient};
use crate::matrix::{MatrixError, Row};
use crate::monitor::Monitor;
use crate::results::CellSpec;
use crate::rundir::RunEnv;
use crate::workload::Ratios;

/// Depths asked when `probe_depths` is empty.
pub const DEFAULT_DEPTHS: [f64; 3] = [0.1, 0.5, 0.9];

/// Output tokens of a probe's answer (a number and a few words; the sweeps' default).
pub const NUM_PREDICT: u32 = DEFAULT_NUM_PREDICT;

/// The probe a cell carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellProbe {
    /// The kind of probe.
    pub kind: ProbeKind,
    /// Depths of the asked fact, ascending: one probe each.
    pub depths: Vec<f64>,
}

/// The probe of a matrix row, from its `probe` and `probe_depths` columns (both optional):
/// none when `probe` is empty or `none`; the depths default to [`DEFAULT_DEPTHS`]. The fill must
/// hold the facts and leave room for the question and the answer.
pub fn from_row(
    row: &Row<'_>,
    num_ctx: u32,
    fill_tokens: u32,
) -> Result<Option<CellProbe>, MatrixError> {
    const KINDS: &str = "none, needle, multikey or chain (or empty: no probe)";
    let kind = match row.get("probe") {
        "" | "none" => None,
        s => Some(ProbeKind::parse(s).ok_or_else(|| row.bad("probe", KINDS))?),
    };
    let depths = row.get("probe_depths");
    let Some(kind) = kind else {
        if !depths.is_empty() {
            return Err(row.error(
                "probe_depths",
                "probe_depths needs a probe: name one in the probe column (needle, multikey or chain), or leave probe_depths empty".to_string(),
            ));
        }
        return Ok(None);
    };
    let depths = if depths.is_empty() {
        DEFAULT_DEPTHS.to_vec()
    } else {
        parse_depths(depths).map_err(|allowed| row.bad("probe_depths", allowed))?
    };
    if fill_tokens < MIN_FILL {
        return Err(row.error(
            "probe",
            format!(
                "a fill of {fill_tokens} tokens is too small to hide a probe's facts in: at least {MIN_FILL} (fill_tokens)"
            ),
        ));
    }
    if !fits(fill_tokens, NUM_PREDICT, num_ctx) {
        return Err(row.error(
            "probe",
            format!(
                "the probe's message (fill_tokens {fill_tokens}, the question: {QUESTION_ROOM} tokens) and its answer ({NUM_PREDICT} tokens) exceed num_ctx {num_ctx}: choose a smaller fill_tokens or no probe"
            ),
        ));
    }
    Ok(Some(CellProbe { kind, depths }))
}

/// What a cell's probes are asked with: the cell's model and load-time options (no reload), and
/// [`NUM_PREDICT`] output tokens.
pub fn target(spec: &CellSpec) -> Target {
    Target {
        model: spec.model.clone(),
        load: LoadOptions {
            num_ctx: spec.num_ctx,
            num_batch: spec.num_batch,
            num_thread: spec.num_thread,
        },
        num_predict: NUM_PREDICT,
    }
}

/// Whether a probe's prompt count says it was cut: fewer tokens than planned (beyond
/// [`crate::measure::FILL_TOLERANCE`]) and at least [`sweep::UNCUT_BELOW_CTX`] × `num_ctx`.
/// Ollama cuts a prompt only when it exceeds `num_ctx`, and then to about `num_ctx`; a count
/// well below the context that is short of the plan is the ratios' error (the chat template,
/// the facts' digits), not a cut.
pub fn was_cut(counted: u32, planned: f64, num_ctx: u32) -> bool {
    let n = f64::from(counted);
    n < planned * (1.0 - crate::measure::FILL_TOLERANCE)
        && n >= sweep::UNCUT_BELOW_CTX * f64::from(num_ctx)
}

/// The cell's probes, one per depth in order, at the cell's fill with the ratios its trials
/// used; the probe seed is the run's, the cell's and the probe's (distinct facts everywhere).
/// Stops early when the server goes away or the RAM guard trips. A probe whose prompt was cut
/// is kept unscored (`correct: None`, with why). Returns the records and the notes for the
/// cell's judgement: the score, and what went wrong.
pub(crate) async fn ask_all(
    client: &OllamaClient,
    spec: &CellSpec,
    probe: &CellProbe,
    env: &RunEnv,
    think_false: bool,
    mut ratios: Ratios,
    monitor: &Monitor,
) -> (Vec<ProbeRecord>, Vec<String>) {
    let t = target(spec);
    let total = probe.depths.len();
    let (mut records, mut notes) = (Vec::new(), Vec::new());
    for (i, &depth) in probe.depths.iter().enumerate() {
        let p = needle::probe(
            probe.kind,
            depth,
            sweep::probe_seed(&env.run_id, &spec.test_name, i as u32),
        );
        let key = sweep::probe_key(&env.run_id, &spec.test_name, i as u32);
        let mut asked = ask_probe(
            client,
            &t,
            &env.config,
            think_false,
            &p,
            (i as u32, &key),
            (spec.fill_tokens, ratios),
            monitor,
        )
        .await;
        if let Some(n) = asked.record.trial.prompt_tokens_evaluated {
            let planned = asked.planned;
            if was_cut(n, planned, spec.num_ctx) {
                asked.record.correct = None;
                asked.record.failure = Some(format!(
                    "prompt cut: the server evaluated {n} of {planned:.0} planned prompt tokens at num_ctx {}",
                    spec.num_ctx
                ));
            } else {
                ratios = sweep::at_plan(ratios, planned, n);
            }
        }
        crate::runner::progress(spec, &probe_line(&asked.record, i + 1, total));
        records.push(asked.record);
        if asked.unreachable {
            notes.push(format!(
                "retrieval probe stopped after {} of {total}: the server went away",
                i + 1
            ));
            break;
        }
        if monitor.guard().load(std::sync::atomic::Ordering::SeqCst) {
            notes.push(format!(
                "retrieval probe stopped after {} of {total}: the RAM guard tripped",
                i + 1
            ));
            break;
        }
    }
    notes.insert(0, score_note(probe.kind, spec.fill_tokens, &records));
    notes.extend(cut_answers_note(
        records
            .iter()
            .map(|r| (r.correct, r.trial.done_reason.as_deref())),
        NUM_PREDICT,
    ));
    (records, notes)
}

/// The note of a cell's probes: `retrieval probe (needle, fill 1024 tokens): 2/3 right — depth
/// 0.1 ✓, 0.5 ✓, 0.9 ✗ (not a gate)`.
pub fn score_note(kind: ProbeKind, fill_tokens: u32, records: &[ProbeRecord]) -> String {
    let answered = records.iter().filter(|r| r.correct.is_some()).count();
    let right = records.iter().filter(|r| r.correct == Some(true)).count();
    let per: Vec<String> = records
        .iter()
        .map(|r| {
            let mark = match r.correct {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "unscored",
            };
            format!("{} {mark}", r.depth)
        })
        .collect();
    format!(
        "retrieval probe ({}, fill {fill_tokens} tokens): {right}/{answered} right — depth {} (not a gate)",
        kind.label(),
        per.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{MATRIX, parse_rows};
    use std::path::Path;

    fn row(
        probe: &str,
        depths: &str,
        num_ctx: &str,
        fill: &str,
    ) -> Result<Option<CellProbe>, String> {
        let text = format!(
            "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case,probe,probe_depths\n\
             m,m:1b,c,{num_ctx},{fill},8,2,30,1,0.5,u,{probe},{depths}\n"
        );
        parse_rows(Path::new("m.csv"), &text, &MATRIX, |r| {
            let ctx = r.tokens("num_ctx")?;
            let fill = r.tokens("fill_tokens")?;
            Ok(("k".to_string(), from_row(r, ctx, fill)?))
        })
        .map(|mut v| v.remove(0))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn no_probe_when_empty_or_none() {
        assert_eq!(row("", "", "8K", "1024").unwrap(), None);
        assert_eq!(row("none", "", "8K", "1024").unwrap(), None);
    }

    #[test]
    fn kinds_and_depths() {
        let p = row("multikey", "\"0.9,0.2\"", "8K", "1024")
            .unwrap()
            .unwrap();
        assert_eq!(p.kind, ProbeKind::Multikey);
        assert_eq!(p.depths, vec![0.2, 0.9]);
        let p = row("chain", "", "8K", "1024").unwrap().unwrap();
        assert_eq!(p.depths, DEFAULT_DEPTHS.to_vec());
        let p = row("needle", "0.5 0.1", "8K", "1024").unwrap().unwrap();
        assert_eq!(p.depths, vec![0.1, 0.5]);
    }

    #[test]
    fn bad_rows_say_what_is_allowed() {
        let e = row("haystack", "", "8K", "1024").unwrap_err();
        assert!(
            e.contains("m.csv:2") && e.contains("probe") && e.contains("needle, multikey or chain"),
            "{e}"
        );
        let e = row("needle", "0.5 1.5", "8K", "1024").unwrap_err();
        assert!(
            e.contains("probe_depths") && e.contains("from 0 to 1"),
            "{e}"
        );
        let e = row("", "0.5", "8K", "1024").unwrap_err();
        assert!(e.contains("probe_depths needs a probe"), "{e}");
        let e = row("needle", "", "8K", "200").unwrap_err();
        assert!(e.contains("at least 256"), "{e}");
        // 1024 + 24 + 96 tokens do not fit 1100.
        let e = row("needle", "", "1100", "1000").unwrap_err();
        assert!(e.contains("exceed num_ctx 1100"), "{e}");
    }

    #[test]
    fn a_cut_needs_a_short_count_near_the_context() {
        // Short of the plan far below num_ctx: the ratios were off, not a cut.
        assert!(!was_cut(900, 1100.0, 8192));
        // Short of the plan at the context's edge: cut.
        assert!(was_cut(7900, 9000.0, 8192));
        // At the plan near the edge: not cut.
        assert!(!was_cut(7900, 7950.0, 8192));
    }

    fn rec(depth: f64, correct: Option<bool>) -> ProbeRecord {
        ProbeRecord {
            index: 0,
            depth,
            fill_before: 0.0,
            expected: "1234567".into(),
            answer: String::new(),
            correct,
            failure: None,
            trial: Default::default(),
        }
    }

    #[test]
    fn the_note_counts_and_marks_each_depth() {
        let n = score_note(
            ProbeKind::Needle,
            1024,
            &[rec(0.1, Some(true)), rec(0.5, None), rec(0.9, Some(false))],
        );
        assert_eq!(
            n,
            "retrieval probe (needle, fill 1024 tokens): 1/2 right — depth 0.1 ✓, 0.5 unscored, 0.9 ✗ (not a gate)"
        );
    }
}
