//! The Markdown report, for a person choosing a configuration: the summary table first, then
//! details, reasons, stability components, run metadata, fidelity ratios and definitions.

use super::csv_report::serde_name;
use super::{Report, ReportWriter, Row};
use crate::results::{StabilityBreakdown, StopReason, Verdict};
use crate::stability::{MIN_TRIALS, W_CONSISTENCY, W_DRIFT, W_MEMORY};
use crate::text::{
    MISSING, bytes, bytes_delta, cell, context, fixed, mean_interval, opt_fixed, opt_rate, out,
    pct, short_number, signed_pct, thousands,
};

/// Writes `performance_matrix.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownReport;

impl ReportWriter for MarkdownReport {
    fn file_name(&self) -> &'static str {
        "performance_matrix.md"
    }

    fn text(&self, report: &Report) -> String {
        let mut o = String::new();
        out!(o, "# Performance matrix");
        out!(o);
        files_not_read(&mut o, report);
        if report.rows.is_empty() {
            out!(
                o,
                "No cells: the run directory holds no cell results yet (`cells/*.json`)."
            );
            out!(o);
        } else {
            verdict_summary(&mut o, report);
            summary_table(&mut o, report);
            details_table(&mut o, report);
            reasons(&mut o, report);
            stability(&mut o, report);
            metadata(&mut o, report);
            fidelity(&mut o, report);
            crate::predict::report::matrix_section(
                &mut o,
                report
                    .rows
                    .iter()
                    .map(|r| (r.cell.test_name.as_str(), r.prediction.as_ref())),
            );
        }
        definitions(&mut o, report);
        o
    }
}

/// The files the report left out because they could not be read, with why.
fn files_not_read(o: &mut String, r: &Report) {
    if r.files_not_read.is_empty() {
        return;
    }
    out!(
        o,
        "**{} file(s) not read** (left out of this report; move or delete them, or rerun their cells):",
        r.files_not_read.len()
    );
    out!(o);
    for f in &r.files_not_read {
        out!(
            o,
            "- files not read: {}: {}",
            code(&f.path.display().to_string()),
            f.why
        );
    }
    out!(o);
}

fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

fn verdict_summary(o: &mut String, r: &Report) {
    let c = &r.verdict_counts;
    out!(
        o,
        "{} {}: {} PASS, {} MARGINAL, {} FAIL, {} INVALID, {} SKIPPED.",
        c.total,
        if c.total == 1 { "cell" } else { "cells" },
        c.pass,
        c.marginal,
        c.fail,
        c.invalid,
        c.skipped
    );
    if c.regressed > 0 {
        // Only a run with a baseline has any: the sentence above stays as it was without one.
        o.pop();
        out!(o, " {} REGRESSED against the baseline.", c.regressed);
    }
    out!(o);
    let skipped: Vec<&Row> = r
        .rows
        .iter()
        .filter(|row| row.verdict() == Verdict::Skipped)
        .collect();
    if !skipped.is_empty() {
        out!(
            o,
            "Not run here (test runners may list these as passed or ignored; this report is the \
             source of truth):"
        );
        out!(o);
        for row in skipped {
            let why = if row.reasons.is_empty() {
                "no reason recorded".to_string()
            } else {
                row.reasons.join("; ")
            };
            out!(o, "- {} — {}", code(&row.cell.test_name), why);
        }
        out!(o);
    }
}

fn summary_table(o: &mut String, r: &Report) {
    out!(o, "## Summary");
    out!(o);
    summary_rows(
        o,
        r.rows
            .iter()
            .filter(|row| !super::is_probe(&row.cell.test_name)),
        &r.phase2,
    );
    out!(o);
    out!(
        o,
        "TTFT and Tok/s are means over the valid measured trials, on the client's clock; RAM Δ is \
         the peak minus the baseline memory of the server's processes. Intervals, server-side \
         rates and trial counts are in the details below; every metric is defined at the end."
    );
    out!(o);
    if r.rows.iter().any(|row| row.target) {
        out!(
            o,
            "`[TARGET]` marks the configurations the optimizer recommends (see \
             `use_case_recommendations.md`)."
        );
        out!(o);
    }
    if r.rows
        .iter()
        .any(|row| super::is_probe(&row.cell.test_name))
    {
        out!(o, "## Optimizer probes");
        out!(o);
        out!(
            o,
            "Cells the optimizer ran (`<name>::opt::ctx_<K>k_t<threads>_b<batch>`), in the same \
             format; their details, reasons and stability follow with the matrix cells'."
        );
        out!(o);
        summary_rows(
            o,
            r.rows
                .iter()
                .filter(|row| super::is_probe(&row.cell.test_name)),
            &r.phase2,
        );
        out!(o);
    }
}

fn summary_rows<'a>(
    o: &mut String,
    rows: impl Iterator<Item = &'a super::Row>,
    phase2: &[super::Phase2],
) {
    // The Phase 2 column (sustained sessions of the model) appears only when the run has any,
    // the Accuracy and Effective ctx columns only when it has quality sweeps.
    let rows: Vec<&super::Row> = rows.collect();
    let swept = rows.iter().any(|r| r.quality.is_some());
    let mut header =
        "| Model | Context | TTFT | Tok/s | RAM Δ | Stability | Use Case Fit |".to_string();
    let mut rule = "|---|---|---|---|---|---|---|".to_string();
    if swept {
        header.push_str(" Accuracy | Effective ctx |");
        rule.push_str("---|---|");
    }
    if !phase2.is_empty() {
        header.push_str(" Phase 2 |");
        rule.push_str("---|");
    }
    out!(o, "{header}");
    out!(o, "{rule}");
    for row in rows {
        let mut model = row.cell.model.clone();
        if super::is_probe(&row.cell.test_name) {
            // Probes of one model differ by their options: show them.
            model = format!(
                "{model} · {} thread(s), batch {}",
                row.cell.num_thread, row.cell.num_batch
            );
        }
        if row.target {
            model = format!("[TARGET] {model}");
        }
        let quality = if swept {
            format!(" {} |", quality_cells(row))
        } else {
            String::new()
        };
        let sustained = if phase2.is_empty() {
            String::new()
        } else {
            format!(" {} |", cell(&phase2_of(&row.cell.model, phase2)))
        };
        out!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |{quality}{sustained}",
            cell(&model),
            context(row.cell.num_ctx, row.cell.fill_tokens),
            row.ttft_s.as_ref().map_or_else(
                || MISSING.to_string(),
                |s| format!("{} s", fixed(s.mean, 2))
            ),
            opt_rate(row.decode_tps.as_ref().map(|s| s.mean)),
            row.ram_delta_bytes
                .map_or_else(|| MISSING.to_string(), bytes_delta),
            opt_fixed(row.stability.as_ref().map(|s| s.score), 2),
            cell(&row.use_case_fit)
        );
    }
}

/// The Accuracy and Effective ctx cells of a row: `6/6 (100%) | 3130 tokens (4K)`, an accuracy
/// of the cell's own probes marked `(probe)`; `–` where the run says nothing, `not swept` for a
/// model without sweeps; a context beyond the effective one is marked `⚠️ beyond`.
fn quality_cells(row: &super::Row) -> String {
    let Some(q) = &row.quality else {
        return format!("{MISSING} | {MISSING}");
    };
    let accuracy = match &q.accuracy {
        Some(a) => format!(
            "{}/{} ({}){}",
            a.correct,
            a.answered,
            a.accuracy
                .map_or(MISSING.to_string(), |x| format!("{:.0}%", 100.0 * x)),
            match a.from {
                super::AccuracyFrom::Sweep => "",
                super::AccuracyFrom::CellProbe => " (probe)",
            }
        ),
        None => MISSING.to_string(),
    };
    let effective = match &q.sweep {
        None => "not swept".to_string(),
        Some(s) => match (s.effective_context_tokens, s.effective_num_ctx) {
            (Some(t), Some(c)) => format!(
                "{t:.0} tokens ({}){}",
                crate::text::ctx_label(c),
                if s.beyond_effective(row.cell.num_ctx) {
                    " ⚠️ beyond"
                } else {
                    ""
                }
            ),
            _ => format!("none (accuracy < {})", fixed(s.accuracy_min, 2)),
        },
    };
    format!("{accuracy} | {effective}")
}

/// The Phase 2 cell of a model: each of its sessions, e.g. `✅ coding 4k (75 s): success 100%,
/// accuracy 40%, cache reuse 0.95, TTFT 0.12 s/1K, RSS +3.1%`; `–` without sessions.
fn phase2_of(model: &str, phase2: &[super::Phase2]) -> String {
    let pct = |v: Option<f64>| v.map_or(MISSING.to_string(), |x| format!("{:.0}%", x * 100.0));
    let parts: Vec<String> = phase2
        .iter()
        .filter(|p| p.model == *model)
        .map(|p| {
            let mark = match p.verdict {
                Verdict::Pass => "✅",
                Verdict::Marginal => "⚠️",
                Verdict::Fail => "❌",
                Verdict::Invalid | Verdict::Skipped => "❔",
                Verdict::Regressed => "📉",
            };
            format!(
                "{mark} {} {} ({:.0} s, {}): success {}, accuracy {}, cache reuse {}, TTFT {} s/1K, RSS {}",
                p.workload,
                crate::matrix::ctx_label(p.num_ctx).trim_start_matches("ctx_"),
                p.wall_s,
                p.verdict.label(),
                pct(p.success_rate),
                pct(p.accuracy),
                opt_fixed(p.cache_reuse, 2),
                opt_fixed(p.ttft_s_per_1k, 2),
                p.rss_growth_pct
                    .map_or(MISSING.to_string(), |g| format!("{g:+.1}%")),
            )
        })
        .collect();
    if parts.is_empty() {
        MISSING.to_string()
    } else {
        parts.join("; ")
    }
}

fn gates(row: &Row) -> String {
    let g = &row.cell.gates;
    format!(
        "< {} s / > {} / > {}",
        short_number(g.ttft_max_s),
        short_number(g.tok_s_min),
        short_number(g.stability_min)
    )
}

fn peak_split(row: &Row) -> String {
    match (row.peak_anon_bytes, row.peak_file_bytes) {
        (None, None) => MISSING.to_string(),
        (anon, file) => format!(
            "{} / {}",
            anon.map_or_else(|| MISSING.to_string(), bytes),
            file.map_or_else(|| MISSING.to_string(), bytes)
        ),
    }
}

fn stop_reason(r: StopReason) -> String {
    match r {
        StopReason::RamGuard => "RAM guard".to_string(),
        other => serde_name(&other).replace('_', " "),
    }
}

fn details_table(o: &mut String, r: &Report) {
    out!(o, "## Details");
    out!(o);
    out!(
        o,
        "| Test | Verdict | Gates: TTFT / tok/s / stability | TTFT s [95 % CI] | Decode tok/s \
         [95 % CI] | Server decode tok/s | Server prefill tok/s | RAM Δ | Peak anon / file | \
         Valid / attempted | Stop reason | Load s |"
    );
    out!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &r.rows {
        out!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            code(&row.cell.test_name),
            row.verdict().label(),
            gates(row),
            mean_interval(row.ttft_s.as_ref(), 2),
            mean_interval(row.decode_tps.as_ref(), 1),
            opt_rate(row.decode_tps_server.as_ref().map(|s| s.mean)),
            opt_rate(row.prefill_tps_server.as_ref().map(|s| s.mean)),
            row.ram_delta_bytes
                .map_or_else(|| MISSING.to_string(), bytes_delta),
            peak_split(row),
            row.judgement.valid_trials,
            row.judgement.attempted_trials,
            stop_reason(row.stop_reason),
            opt_fixed(row.load_s, 2)
        );
    }
    out!(o);
}

fn reasons(o: &mut String, r: &Report) {
    out!(o, "## Reasons");
    out!(o);
    let listed: Vec<&Row> = r
        .rows
        .iter()
        .filter(|row| {
            row.verdict() != Verdict::Pass
                || !row.reasons.is_empty()
                || !row.hardware_notes.is_empty()
                || row.judgement.ram_guard_tripped
        })
        .collect();
    if listed.is_empty() {
        out!(o, "Every cell passed; no reasons or notes were recorded.");
        out!(o);
        return;
    }
    for row in listed {
        out!(
            o,
            "### {} — {}",
            code(&row.cell.test_name),
            row.verdict().label()
        );
        out!(o);
        if row.reasons.is_empty() && row.verdict() != Verdict::Pass {
            out!(o, "- no reason recorded");
        }
        for reason in &row.reasons {
            out!(o, "- {reason}");
        }
        if row.judgement.ram_guard_tripped {
            out!(o, "- the RAM guard stopped the cell");
        }
        for note in &row.hardware_notes {
            out!(o, "- hardware note: {note}");
        }
        out!(o);
    }
}

/// `raw → component`, or `n/a` when the raw measure is missing (too little data).
fn component(raw: Option<f64>, value: f64, show: fn(f64) -> String) -> String {
    match raw {
        Some(raw) => format!("{} → {}", show(raw), fixed(value, 2)),
        None => "n/a".to_string(),
    }
}

fn computation(s: &StabilityBreakdown) -> String {
    format!(
        "{} × ({W_CONSISTENCY}·{} + {W_DRIFT}·{} + {W_MEMORY}·{})",
        fixed(s.success_rate, 2),
        fixed(s.consistency, 2),
        fixed(s.drift, 2),
        fixed(s.memory, 2)
    )
}

/// The score with its bootstrap interval: `0.93 [0.81, 1.00]`.
pub(super) fn score_interval(s: &StabilityBreakdown) -> String {
    match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) => {
            format!("{} [{}, {}]", fixed(s.score, 2), fixed(lo, 2), fixed(hi, 2))
        }
        _ => fixed(s.score, 2),
    }
}

fn stability(o: &mut String, r: &Report) {
    out!(o, "## Stability components");
    out!(o);
    out!(
        o,
        "`score = success_rate × ({W_CONSISTENCY}·consistency + {W_DRIFT}·drift + \
         {W_MEMORY}·memory)`. Each component is 0–1, 1 being best; a component with too little \
         data (n < {MIN_TRIALS}) counts as 1 and is shown as n/a. The score's 95 % interval is a \
         bootstrap over the trials. Decode CV, drift and memory growth are the measured values \
         each component is computed from (definitions at the end)."
    );
    out!(o);
    let rows: Vec<(&Row, &StabilityBreakdown)> = r
        .rows
        .iter()
        .filter_map(|row| row.stability.as_ref().map(|s| (row, s)))
        .collect();
    if rows.is_empty() {
        out!(o, "No cell reached the measured phase.");
        out!(o);
        return;
    }
    out!(
        o,
        "| Test | Score [95 % CI] | Success rate | Decode CV → consistency | Decode drift → \
         drift | Memory growth → memory | Computation |"
    );
    out!(o, "|---|---|---|---|---|---|---|");
    for (row, s) in rows {
        out!(
            o,
            "| {} | {} | {} ({}/{}) | {} | {} | {} | {} |",
            code(&row.cell.test_name),
            score_interval(s),
            fixed(s.success_rate, 2),
            row.judgement.valid_trials,
            row.judgement.attempted_trials,
            component(s.decode_cv, s.consistency, pct),
            component(s.decode_drift, s.drift, signed_pct),
            component(s.memory_growth, s.memory, signed_pct),
            computation(s)
        );
    }
    out!(o);
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.chars().take(12).collect()
}

fn opt_text(x: &Option<String>) -> String {
    x.as_deref().map_or_else(|| MISSING.to_string(), cell)
}

fn metadata(o: &mut String, r: &Report) {
    out!(o, "## Run metadata");
    out!(o);
    out!(o, "### Host");
    out!(o);
    if r.hosts.is_empty() {
        out!(o, "No cell recorded host facts.");
    } else {
        out!(o, "| Host | CPU | Cores | RAM | OS | Kernel |");
        out!(o, "|---|---|---|---|---|---|");
        for h in &r.hosts {
            let cores = match h.cpu_physical {
                Some(p) => format!("{} logical, {} physical", h.cpu_logical, p),
                None => format!("{} logical", h.cpu_logical),
            };
            out!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&h.hostname),
                cell(&h.cpu_model),
                cores,
                bytes(h.ram_total_bytes),
                cell(&h.os),
                cell(&h.kernel)
            );
        }
    }
    out!(o);
    out!(o, "### Server and harness");
    out!(o);
    for s in &r.servers {
        out!(
            o,
            "- Server {}: version {}",
            code(&s.address),
            s.version.as_deref().unwrap_or("unknown (did not answer)")
        );
    }
    if !r.run_ids.is_empty() {
        let ids: Vec<String> = r.run_ids.iter().map(|id| code(id)).collect();
        out!(o, "- Run: {}", ids.join(", "));
    }
    if let (Some(first), Some(last)) = (&r.first_started_at, &r.last_started_at) {
        out!(o, "- Cells started from {first} to {last}");
    }
    out!(
        o,
        "- Harness version: {}",
        if r.harness_versions.is_empty() {
            MISSING.to_string()
        } else {
            r.harness_versions.join(", ")
        }
    );
    out!(o);
    out!(o, "### Models");
    out!(o);
    out!(
        o,
        "| Model | Digest | Quantization | Parameters | Family | Trained context |"
    );
    out!(o, "|---|---|---|---|---|---|");
    for m in &r.models {
        let digests = if m.digests.is_empty() {
            MISSING.to_string()
        } else {
            m.digests
                .iter()
                .map(|d| code(&short_digest(d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&m.model),
            digests,
            opt_text(&m.quantization),
            opt_text(&m.parameter_size),
            opt_text(&m.family),
            m.trained_context
                .map_or_else(|| MISSING.to_string(), thousands)
        );
    }
    out!(o);
    out!(o, "### Options sent");
    out!(o);
    out!(o, "| Test | Options | think: false | truncate: false |");
    out!(o, "|---|---|---|---|");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for row in &r.rows {
        let options = if row.options_sent.is_null() {
            MISSING.to_string()
        } else {
            code(&cell(&row.options_sent.to_string()))
        };
        out!(
            o,
            "| {} | {} | {} | {} |",
            code(&row.cell.test_name),
            options,
            yes_no(row.think_false_sent),
            yes_no(row.truncate_false_sent)
        );
    }
    out!(o);
}

fn fidelity(o: &mut String, r: &Report) {
    if r.rows.iter().all(|row| row.fidelity.is_empty()) {
        return;
    }
    out!(o, "## Fidelity ratios");
    out!(o);
    out!(o, "| Test | Ratio | Value |");
    out!(o, "|---|---|---|");
    for row in &r.rows {
        for f in &row.fidelity {
            out!(
                o,
                "| {} | {} | {} |",
                code(&row.cell.test_name),
                code(f.kind.name()),
                fixed(f.ratio, 3)
            );
        }
    }
    out!(o);
}

fn section_title(section: &str) -> &str {
    match section {
        "per trial" => "Per trial",
        "validity" => "Validity",
        "per cell" => "Per cell",
        "stability" => "Stability score",
        "verdict" => "Verdicts",
        "units" => "Units",
        other => other,
    }
}

fn definitions(o: &mut String, r: &Report) {
    out!(o, "## Metric definitions");
    let mut section = "";
    for d in &r.definitions {
        if d.section != section {
            section = d.section;
            out!(o);
            out!(o, "### {}", section_title(section));
            out!(o);
        }
        out!(o, "- **{}**: {}", d.name, d.text);
    }
}
