//! `report.html`: the whole run in one self-contained page — inline CSS, inline SVG charts
//! ([`super::charts`]), the run's JSON report embedded, no network, opens from disk.
//!
//! Contents, in order: the live progress of a running suite (read from `progress.js` next to the
//! page, [`crate::progress`], when the file exists — refresh to see the latest), the verdict
//! counts, per model the charts of TTFT, decode rate and RAM Δ against context (measured means
//! with their 95 % intervals, the gates' limits as lines, the performance model's predictions),
//! the performance matrix with verdict colours and `[TARGET]` rows, per session TTFT and decode
//! rate against history size and RSS against time, the stability components and the metric
//! definitions. A run compared with a baseline (`O3_BASELINE`) counts its REGRESSED cells too;
//! the comparison itself is in `regression.md`.
//!
//! Like every report it is a pure function of the run directory: the same cells and sessions
//! give the same bytes (the golden in `golden/report.html` holds it). A small inline script,
//! run when the page is shown, checks that every chart rendered and records it on `<body>`
//! (`data-charts="rendered/total"`), which the browser test (`tests/browser.rs`) reads.

use std::fmt::Write as _;

use super::charts::{self, Chart, Point, Series, SeriesKind, XAxis};
use super::{Report, Row};
use crate::agentic::SessionResult;
use crate::gates::Gate;
use crate::output::{Output, OutputFile};
use crate::results::Verdict;
use crate::rundir::RunDir;
use crate::stability::{W_CONSISTENCY, W_DRIFT, W_MEMORY};
use crate::text::{MISSING, bytes_delta, context, fixed, mean_interval, opt_fixed};

/// File name inside `comparative_analysis/`.
pub const FILE_NAME: &str = "report.html";

/// What the page is made from: the aggregated report and the run's sessions.
#[derive(Debug, Clone, Copy)]
pub struct HtmlInput<'a> {
    /// The matrix.
    pub report: &'a Report,
    /// The sessions of the run (`sessions/`), for their curves.
    pub sessions: &'a [SessionResult],
    /// The quality sweeps of the run (`quality/`), when it has any.
    pub quality: Option<&'a crate::quality::report::QualityReport>,
}

/// Writes `comparative_analysis/report.html`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlReport;

impl<'a> Output<HtmlInput<'a>> for HtmlReport {
    fn render(&self, input: &HtmlInput<'a>) -> Vec<OutputFile> {
        vec![OutputFile::new(
            RunDir::relative().report_path(FILE_NAME),
            render(input),
        )]
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5rem auto;max-width:1250px;padding:0 1rem;color:#1d1d1f;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.9rem}
.counts span{display:inline-block;margin:.2rem .4rem .2rem 0;padding:.25rem .6rem;border-radius:.3rem;font-weight:600}
.v-pass{background:#d9f2dd;color:#135b22}.v-marginal{background:#fff1c2;color:#6b5300}.v-fail{background:#fbd5d5;color:#8a1111}
.v-invalid{background:#e8e1f5;color:#4a2a7a}.v-skipped{background:#eee;color:#555}.v-regressed{background:#ffd8b5;color:#7a3600}
.v-total{background:#dde7f5;color:#1b3c6b}
.charts{display:flex;flex-wrap:wrap;gap:.5rem}
figure.chart{margin:0;border:1px solid #e3e3e3;border-radius:.3rem;padding:.2rem;background:#fff}
figure.chart svg{display:block;max-width:100%;height:auto}
figure.chart figcaption{font-size:.8rem;color:#555;padding:0 .3rem .2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;white-space:nowrap}
tr.target td:first-child{font-weight:700}
#progress{border:1px solid #9cc3f0;background:#eef6ff;border-radius:.3rem;padding:.5rem .8rem;margin:1rem 0}
dl dt{font-weight:600;margin-top:.4rem}dl dd{margin-left:1.2rem}
.note{color:#555;font-size:.85rem}
";

/// Shows `window.O3_PROGRESS` (set by `progress.js`, when a run is writing it) in `#progress`.
const PROGRESS_SCRIPT: &str = r#"
(function(){
  var p = window.O3_PROGRESS, el = document.getElementById('progress');
  if (!p || !el) return;
  var age = (Date.now() - Date.parse(p.updated_at)) / 1000;
  var state = p.state === 'running' ? 'Running' : 'Last finished';
  el.hidden = false;
  el.textContent = state + ': ' + p.test + ' — ' + p.line + ' (updated ' + p.updated_at +
    (isFinite(age) ? ', ' + Math.round(age) + ' s ago' : '') + '). Refresh to see the latest.';
})();
"#;

/// Records on `<body>` how many charts rendered with a non-empty box and drawn content.
const CHECK_SCRIPT: &str = r#"
(function(){
  var figs = document.querySelectorAll('figure.chart'), ok = 0, bad = [];
  for (var i = 0; i < figs.length; i++) {
    var svg = figs[i].querySelector('svg'), drawn = false;
    if (svg) { var b = svg.getBBox(); drawn = b.width > 0 && b.height > 0 && svg.querySelectorAll('line,polyline,path,circle,rect,polygon').length > 4; }
    if (drawn) ok++; else bad.push(figs[i].getAttribute('data-chart'));
  }
  document.body.setAttribute('data-charts', ok + '/' + figs.length);
  document.body.setAttribute('data-charts-failed', bad.join(','));
})();
"#;

/// The page.
pub fn render(input: &HtmlInput<'_>) -> String {
    let r = input.report;
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    o.push_str("<title>o3-suite report</title>\n<style>");
    o.push_str(STYLE);
    o.push_str("</style>\n</head>\n<body>\n");
    o.push_str("<h1>o3-suite: context scaling report</h1>\n");
    meta(&mut o, r);
    o.push_str("<div id=\"progress\" hidden></div>\n");
    counts(&mut o, r);
    if !r.files_not_read.is_empty() {
        o.push_str("<h2>Files left out</h2>\n<ul>\n");
        for u in &r.files_not_read {
            let _ = writeln!(
                o,
                "<li><code>{}</code>: {}</li>",
                esc(&u.path.display().to_string()),
                esc(&u.why)
            );
        }
        o.push_str("</ul>\n");
    }
    let cells: Vec<&Row> = r
        .rows
        .iter()
        .filter(|row| !super::is_probe(&row.cell.test_name))
        .collect();
    if cells.is_empty() {
        o.push_str("<p>No cells: the run directory holds no cell results yet.</p>\n");
    } else {
        o.push_str("<h2>Context scaling per model</h2>\n");
        o.push_str(
            "<p class=\"note\">Means of the valid measured trials with their 95 % intervals \
             (error bars); gate limits as red dashed lines; the performance model's predictions \
             as grey dashed lines. Context on a log scale.</p>\n",
        );
        for info in &r.models {
            let rows: Vec<&Row> = cells
                .iter()
                .copied()
                .filter(|row| row.cell.model == info.model)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                o,
                "<section class=\"model\">\n<h3>{}</h3>",
                esc(&info.model)
            );
            o.push_str("<div class=\"charts\">\n");
            for chart in model_charts(&info.model, &rows) {
                figure(&mut o, &chart);
            }
            o.push_str("</div>\n</section>\n");
        }
    }
    matrix(&mut o, r);
    sessions(&mut o, input.sessions);
    if let Some(q) = input.quality {
        quality(&mut o, q);
    }
    stability(&mut o, r);
    definitions(&mut o, r);
    embedded_json(&mut o, r);
    o.push_str("<script src=\"progress.js\"></script>\n<script>");
    o.push_str(PROGRESS_SCRIPT);
    o.push_str("</script>\n<script>");
    o.push_str(CHECK_SCRIPT);
    o.push_str("</script>\n</body>\n</html>\n");
    o
}

fn meta(o: &mut String, r: &Report) {
    o.push_str("<p class=\"meta\">");
    let _ = write!(
        o,
        "{} result file(s); run(s) {}",
        r.generated_from_cells,
        esc(&join_or_missing(&r.run_ids))
    );
    if let (Some(first), Some(last)) = (&r.first_started_at, &r.last_started_at) {
        let _ = write!(o, "; cells started {} – {}", esc(first), esc(last));
    }
    for h in &r.hosts {
        let _ = write!(
            o,
            "<br>Host {}: {}, {} logical CPUs, {:.1} GiB RAM, {}",
            esc(&h.hostname),
            esc(&h.cpu_model),
            h.cpu_logical,
            h.ram_total_bytes as f64 / GIB,
            esc(&h.os)
        );
    }
    for s in &r.servers {
        let _ = write!(
            o,
            "<br>Server {} (version {})",
            esc(&s.address),
            esc(s.version.as_deref().unwrap_or(MISSING))
        );
    }
    o.push_str("</p>\n");
}

fn join_or_missing(items: &[String]) -> String {
    if items.is_empty() {
        MISSING.to_string()
    } else {
        items.join(", ")
    }
}

fn counts(o: &mut String, r: &Report) {
    let c = &r.verdict_counts;
    o.push_str("<div class=\"counts\">");
    let _ = write!(o, "<span class=\"v-total\">{} cells</span>", c.total);
    for (verdict, n) in [
        (Verdict::Pass, c.pass),
        (Verdict::Marginal, c.marginal),
        (Verdict::Fail, c.fail),
        (Verdict::Invalid, c.invalid),
        (Verdict::Skipped, c.skipped),
        (Verdict::Regressed, c.regressed),
    ] {
        if verdict == Verdict::Regressed && n == 0 {
            // Only runs compared with a baseline can have any.
            continue;
        }
        let label = verdict.label();
        let _ = write!(
            o,
            "<span class=\"v-{}\">{n} {label}</span>",
            label.to_lowercase()
        );
    }
    o.push_str("</div>\n");
}

fn figure(o: &mut String, chart: &Chart) {
    let _ = write!(
        o,
        "<figure class=\"chart\" data-chart=\"{}\">",
        esc(&chart.title)
    );
    match charts::svg(chart) {
        Ok(svg) => o.push_str(svg.trim()),
        Err(e) => {
            let _ = write!(o, "<p>chart not drawn: {}</p>", esc(&e));
        }
    }
    o.push_str("</figure>\n");
}

/// The limit of `gate` the cell was judged against (engine-relative gates resolved).
fn limit(row: &Row, gate: Gate) -> Option<f64> {
    row.judgement
        .checks
        .iter()
        .find(|c| c.gate == gate)
        .map(|c| c.limit)
}

/// The mean of `s` at the row's context, with its interval.
fn mean_point(row: &Row, s: Option<&crate::stats::Summary>) -> Option<Point> {
    s.map(|s| Point {
        x: f64::from(row.cell.num_ctx),
        y: s.mean,
        interval: s.ci_low.zip(s.ci_high),
    })
}

/// The row's prediction, when one was made.
fn prediction(row: &Row) -> Option<&crate::predict::Prediction> {
    row.prediction.as_ref().and_then(|p| p.made())
}

/// The charts of one model: TTFT, decode rate and RAM Δ against context; one measured series
/// per matrix name (rows of one name differ by context), with limits and predictions.
pub fn model_charts(model: &str, rows: &[&Row]) -> Vec<Chart> {
    // Distinct names, in row order.
    let names: Vec<&str> = rows.iter().fold(Vec::new(), |mut v, r| {
        if !v.contains(&r.cell.name.as_str()) {
            v.push(r.cell.name.as_str());
        }
        v
    });
    let multi = names.len() > 1;
    /// What a chart shows: its name, y label, the measured point of a row, the gate drawn and
    /// the predicted value of a row.
    type Spec = (
        &'static str,
        &'static str,
        fn(&Row) -> Option<Point>,
        Option<Gate>,
        fn(&Row) -> Option<f64>,
    );
    let specs: [Spec; 3] = [
        (
            "TTFT",
            "TTFT (s)",
            |r| mean_point(r, r.ttft_s.as_ref()),
            Some(Gate::Ttft),
            |r| prediction(r).map(|p| p.figures.ttft_s),
        ),
        (
            "decode rate",
            "decode (tokens/s)",
            |r| mean_point(r, r.decode_tps.as_ref()),
            Some(Gate::TokS),
            |r| prediction(r).map(|p| p.figures.decode_tps),
        ),
        (
            "RAM Δ",
            "RAM Δ of the server (GiB)",
            |r| {
                r.ram_delta_bytes
                    .map(|b| Point::at(f64::from(r.cell.num_ctx), b as f64 / GIB))
            },
            None,
            |r| prediction(r).map(|p| p.figures.ram_delta_bytes / GIB),
        ),
    ];
    specs
        .iter()
        .map(|&(what, y_label, measured, gate, predicted)| {
            let mut series = Vec::new();
            for name in &names {
                let of_name: Vec<&&Row> = rows.iter().filter(|r| r.cell.name == *name).collect();
                let suffix = |s: &str| {
                    if multi {
                        format!("{s} ({name})")
                    } else {
                        s.to_string()
                    }
                };
                series.push(Series {
                    label: if multi {
                        (*name).to_string()
                    } else {
                        "measured".to_string()
                    },
                    kind: SeriesKind::Measured,
                    points: of_name.iter().filter_map(|r| measured(r)).collect(),
                });
                if let Some(gate) = gate {
                    let points: Vec<Point> = of_name
                        .iter()
                        .filter_map(|r| {
                            limit(r, gate).map(|l| Point::at(f64::from(r.cell.num_ctx), l))
                        })
                        .collect();
                    if !points.is_empty() {
                        series.push(Series {
                            label: suffix(&format!("{} gate", gate.label())),
                            kind: SeriesKind::Limit,
                            points,
                        });
                    }
                }
                let points: Vec<Point> = of_name
                    .iter()
                    .filter_map(|r| predicted(r).map(|y| Point::at(f64::from(r.cell.num_ctx), y)))
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        label: suffix("predicted"),
                        kind: SeriesKind::Predicted,
                        points,
                    });
                }
            }
            Chart {
                title: format!("{model} — {what}"),
                x_label: "context num_ctx (tokens, log scale)".to_string(),
                y_label: y_label.to_string(),
                x_axis: XAxis::Context,
                series,
            }
        })
        .collect()
}

fn matrix(o: &mut String, r: &Report) {
    if r.rows.is_empty() {
        return;
    }
    o.push_str("<h2>Performance matrix</h2>\n");
    o.push_str(
        "<table>\n<tr><th>Model</th><th>Test</th><th>Context (fill / num_ctx)</th>\
         <th>Verdict</th><th>TTFT s [95 % CI]</th><th>Decode tok/s [95 % CI]</th><th>RAM Δ</th>\
         <th>Stability</th><th>Use case fit</th><th>Reasons</th></tr>\n",
    );
    for row in &r.rows {
        let verdict = row.verdict().label();
        let mut model = esc(&row.cell.model);
        if row.target {
            model = format!("[TARGET] {model}");
        }
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td>{model}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
             <td class=\"v-{}\">{verdict}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            if row.target { "target" } else { "" },
            esc(&row.cell.test_name),
            esc(&context(row.cell.num_ctx, row.cell.fill_tokens)),
            verdict.to_lowercase(),
            esc(&mean_interval(row.ttft_s.as_ref(), 2)),
            esc(&mean_interval(row.decode_tps.as_ref(), 1)),
            esc(&row
                .ram_delta_bytes
                .map_or_else(|| MISSING.to_string(), bytes_delta)),
            esc(&opt_fixed(row.stability.as_ref().map(|s| s.score), 2)),
            esc(&row.use_case_fit),
            esc(&row.reasons.join("; ")),
        );
    }
    o.push_str("</table>\n");
    if r.rows.iter().any(|row| row.target) {
        o.push_str(
            "<p class=\"note\"><code>[TARGET]</code> marks the configurations the optimizer \
             recommends (<code>use_case_recommendations.md</code>).</p>\n",
        );
    }
}

/// Per session: TTFT and decode rate against history size, RSS against time.
pub fn session_charts(s: &SessionResult) -> Vec<Chart> {
    let name = &s.session.test_name;
    let turns = || s.turns.iter().filter(|t| t.trial.valid);
    // In history order: a new conversation starts from a short history again.
    let by_history = |f: fn(&crate::results::TrialRecord) -> Option<f64>| -> Vec<Point> {
        let mut points: Vec<Point> = turns()
            .filter_map(|t| f(&t.trial).map(|y| Point::at(t.history_tokens_est as f64, y)))
            .collect();
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
        points
    };
    let one = |what: &str, x_label: &str, y_label: &str, points: Vec<Point>, gate: Option<f64>| {
        let mut series = vec![Series {
            label: "turns".to_string(),
            kind: SeriesKind::Measured,
            points,
        }];
        if let Some(l) = gate
            && let (Some(lo), Some(hi)) = (
                series[0].points.iter().map(|p| p.x).reduce(f64::min),
                series[0].points.iter().map(|p| p.x).reduce(f64::max),
            )
        {
            series.push(Series {
                label: "p95 TTFT gate".to_string(),
                kind: SeriesKind::Limit,
                points: vec![Point::at(lo, l), Point::at(hi, l)],
            });
        }
        Chart {
            title: format!("{name} — {what}"),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_axis: XAxis::Linear,
            series,
        }
    };
    let ttft_gate = s
        .judgement
        .checks
        .iter()
        .find(|c| c.gate == Gate::TtftP95)
        .map(|c| c.limit);
    vec![
        one(
            "TTFT",
            "history (tokens, estimated)",
            "TTFT (s)",
            by_history(|t| t.ttft_s),
            ttft_gate,
        ),
        one(
            "decode rate",
            "history (tokens, estimated)",
            "decode (tokens/s)",
            by_history(|t| t.decode_tps),
            None,
        ),
        one(
            "server RSS",
            "time since the first turn (s)",
            "server RSS after the turn (MiB)",
            s.turns
                .iter()
                .filter_map(|t| {
                    t.trial
                        .rss_after_bytes
                        .map(|b| Point::at(t.at_s, b as f64 / MIB))
                })
                .collect(),
            None,
        ),
    ]
}

fn sessions(o: &mut String, sessions: &[SessionResult]) {
    if sessions.is_empty() {
        return;
    }
    o.push_str("<h2>Sustained sessions (Phase 2)</h2>\n");
    o.push_str(
        "<p class=\"note\">Every valid turn of each session: TTFT and decode rate against the \
         history sent, and the server's RSS after each turn against time. Details in \
         <code>agentic_sessions.md</code>.</p>\n",
    );
    let mut sorted: Vec<&SessionResult> = sessions.iter().collect();
    sorted.sort_by(|a, b| a.session.test_name.cmp(&b.session.test_name));
    for s in sorted {
        let verdict = s.verdict().label();
        let _ = writeln!(
            o,
            "<section class=\"session\">\n<h3><code>{}</code> — {} {} ({}, {} turns, {:.0} s) \
             <span class=\"v-{}\">{verdict}</span></h3>",
            esc(&s.session.test_name),
            esc(&s.session.model),
            esc(s.session.workload.label()),
            esc(&crate::text::ctx_label(s.session.num_ctx)),
            s.turns.len(),
            s.wall_s,
            verdict.to_lowercase(),
        );
        o.push_str("<div class=\"charts\">\n");
        for chart in session_charts(s) {
            if !chart.is_empty() {
                figure(o, &chart);
            }
        }
        o.push_str("</div>\n</section>\n");
    }
}

/// The depth × context accuracy tables of the quality sweeps, with the effective context.
fn quality(o: &mut String, q: &crate::quality::report::QualityReport) {
    o.push_str("<h2>Long-context quality</h2>\n");
    o.push_str(
        "<p class=\"note\">Retrieval probes at depths of a deep fill: ✓ right / ✗ wrong per \
         depth (details in <code>quality.md</code>).</p>\n",
    );
    for m in &q.models {
        let _ = writeln!(
            o,
            "<h3>{}</h3>\n<p>Effective context: <b>{}</b> (accuracy ≥ {}), {} probes answered.</p>",
            esc(&m.model),
            m.effective_context_tokens
                .map_or_else(|| "none".to_string(), |t| format!("{t:.0} tokens")),
            fixed(m.accuracy_min, 2),
            m.probes_answered
        );
        let depths = crate::quality::report::depth_columns(m);
        o.push_str("<table>\n<tr><th>Test</th><th>Filled tokens</th>");
        for d in &depths {
            let _ = write!(o, "<th>depth {d}</th>");
        }
        o.push_str("<th>Accuracy</th><th>TTFT s</th><th>Verdict</th></tr>\n");
        for t in &m.tests {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td>",
                esc(&t.test_name),
                t.filled_tokens
                    .map_or(MISSING.to_string(), |f| format!("{f:.0}"))
            );
            depth_cells(o, &t.depths, &depths);
            let verdict = t.verdict.label();
            let _ = writeln!(
                o,
                "<td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"v-{}\">{verdict}</td></tr>",
                t.correct,
                t.answered,
                opt_fixed(t.ttft_s, 2),
                verdict.to_lowercase()
            );
        }
        o.push_str("</table>\n");
    }
    if !q.rag.is_empty() {
        rag(o, &q.rag);
    }
    if !q.cells.is_empty() {
        cell_probes(o, &q.cells);
    }
}

/// One `<td>` per depth of `depths`: `✓right ✗wrong`, empty where nothing was asked.
fn depth_cells(o: &mut String, scores: &[crate::quality::DepthScore], depths: &[f64]) {
    for d in depths {
        match scores.iter().find(|s| s.depth == *d) {
            Some(s) => {
                let _ = write!(
                    o,
                    "<td class=\"num\">✓{} ✗{}</td>",
                    s.correct,
                    s.n - s.correct
                );
            }
            None => o.push_str("<td></td>"),
        }
    }
}

/// The retrieval probes of the cells: per depth ✓/✗, the accuracy and the probes' TTFT.
fn cell_probes(o: &mut String, rows: &[crate::quality::report::CellProbeRow]) {
    o.push_str(
        "<h3>Retrieval probes in the cells</h3>\n<p class=\"note\">One probe per depth after \
         each cell's measured trials, at the cell's fill; judged by no gate and not among the \
         cell's trials.</p>\n<table>\n<tr><th>Cell</th><th>Fill</th><th>Probe</th>",
    );
    let depths = crate::quality::report::cell_depth_columns(rows);
    for d in &depths {
        let _ = write!(o, "<th>depth {d}</th>");
    }
    o.push_str("<th>Accuracy</th><th>Probe TTFT s</th></tr>\n");
    for t in rows {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td>",
            esc(&t.test_name),
            t.fill_tokens,
            esc(&t.probe)
        );
        depth_cells(o, &t.depths, &depths);
        let _ = writeln!(
            o,
            "<td class=\"num\">{}/{}</td><td class=\"num\">{}</td></tr>",
            t.correct,
            t.answered,
            opt_fixed(t.ttft_s, 2)
        );
    }
    o.push_str("</table>\n");
}

/// The RAG-against-direct tests: per approach, accuracy, recall and cost; the winner.
fn rag(o: &mut String, rows: &[crate::quality::report::RagRow]) {
    o.push_str(
        "<h3>RAG against direct prompting</h3>\n<p class=\"note\">The same questions, the \
         documents that fit the fill in the prompt (direct) or the retriever's top k (RAG); \
         accuracy first, then TTFT (details in <code>quality.md</code>).</p>\n<table>\n<tr>\
         <th>Test</th><th>Approach</th><th>Accuracy</th><th>Recall</th><th>TTFT s</th>\
         <th>Prompt tokens</th><th>Verdict</th></tr>\n",
    );
    for t in rows {
        for a in &t.arms {
            let verdict = t.verdict.label();
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"v-{}\">{verdict}</td></tr>",
                esc(&t.test_name),
                a.approach.label(),
                a.correct,
                a.answered,
                a.recalled
                    .map_or(MISSING.to_string(), |r| format!("{r}/{}", a.asked)),
                opt_fixed(a.ttft_s.as_ref().map(|s| s.mean), 2),
                opt_fixed(a.prompt_tokens.as_ref().map(|s| s.mean), 0),
                verdict.to_lowercase()
            );
        }
    }
    o.push_str("</table>\n<ul>\n");
    for t in rows {
        let _ = writeln!(
            o,
            "<li><code>{}</code>: {}</li>",
            esc(&t.test_name),
            esc(t
                .comparison
                .as_ref()
                .map_or("no comparison", |c| c.summary.as_str()))
        );
    }
    o.push_str("</ul>\n");
}

fn stability(o: &mut String, r: &Report) {
    let rows: Vec<&Row> = r
        .rows
        .iter()
        .filter(|row| row.stability.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<h2>Stability components</h2>\n<p class=\"note\"><code>score = success_rate × \
         ({W_CONSISTENCY}·consistency + {W_DRIFT}·drift + {W_MEMORY}·memory)</code>; each \
         component 0–1, 1 best.</p>"
    );
    o.push_str(
        "<table>\n<tr><th>Test</th><th>Score [95 % CI]</th><th>Success rate</th>\
         <th>Decode CV → consistency</th><th>Decode drift → drift</th>\
         <th>Memory growth → memory</th></tr>\n",
    );
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:+.1} %", x * 100.0));
    for row in rows {
        let s = row.stability.as_ref().expect("filtered");
        let score = super::markdown::score_interval(s);
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{} ({}/{})</td>\
             <td class=\"num\">{} → {}</td><td class=\"num\">{} → {}</td><td class=\"num\">{} → {}</td></tr>",
            esc(&row.cell.test_name),
            score,
            fixed(s.success_rate, 2),
            row.judgement.valid_trials,
            row.judgement.attempted_trials,
            pct(s.decode_cv),
            fixed(s.consistency, 2),
            pct(s.decode_drift),
            fixed(s.drift, 2),
            pct(s.memory_growth),
            fixed(s.memory, 2),
        );
    }
    o.push_str("</table>\n");
}

fn definitions(o: &mut String, r: &Report) {
    o.push_str("<h2>Metric definitions</h2>\n<dl>\n");
    for d in &r.definitions {
        let _ = writeln!(
            o,
            "<dt>{} <span class=\"note\">({})</span></dt><dd>{}</dd>",
            esc(d.name),
            esc(d.section),
            esc(&d.text)
        );
    }
    o.push_str("</dl>\n");
}

/// The JSON report (`performance_matrix.json`'s content), for scripts reading the page.
fn embedded_json(o: &mut String, r: &Report) {
    let json = serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    // `</script>` or `<!--` inside a string would end or confuse the element: JSON allows `\/`.
    let json = json.replace("</", "<\\/").replace("<!--", "<\\u0021--");
    let _ = writeln!(
        o,
        "<script type=\"application/json\" id=\"o3-report\">{json}</script>"
    );
}
