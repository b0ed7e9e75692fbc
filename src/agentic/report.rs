//! The session reports, a pure function of the run directory's `sessions/`:
//! `comparative_analysis/agentic_sessions.{md,csv,json}` (one row per session test) and
//! `agentic_turns.csv` (one line per turn, for plotting). Rebuilt after every session, like the
//! cell reports; a file of `sessions/` that cannot be read is left out and named.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SessionResult;
use super::analysis::SessionAnalysis;
use crate::judgement::Verdict;
use crate::output::{self, Output, OutputFile};
use crate::rundir::{RunDir, Unreadable, read_json_dir};
use crate::stats::LineFit;
use crate::text::MISSING;

/// Format of `agentic_sessions.json`.
pub const FORMAT_VERSION: u32 = 1;

/// What the session reports are made from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReport {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// One row per session test, by test name.
    pub rows: Vec<SessionRow>,
    /// Files of `sessions/` that could not be read, with why.
    pub files_not_read: Vec<Unreadable>,
}

/// One session test in the reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    /// Test name.
    pub test_name: String,
    /// Model.
    pub model: String,
    /// Workload.
    pub workload: String,
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Planned duration (s).
    pub duration_s: f64,
    /// Wall time of the test (s).
    pub wall_s: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// The reasons (rendered from the typed judgement).
    pub reasons: Vec<String>,
    /// The figures.
    pub analysis: SessionAnalysis,
}

impl SessionRow {
    fn of(r: &SessionResult) -> SessionRow {
        SessionRow {
            test_name: r.session.test_name.clone(),
            model: r.session.model.clone(),
            workload: r.session.workload.label().to_string(),
            num_ctx: r.session.num_ctx,
            duration_s: r.session.duration_s,
            wall_s: r.wall_s,
            verdict: r.verdict(),
            reasons: r.judgement.reasons(),
            analysis: r.analysis.clone(),
        }
    }
}

/// Reads `sessions/` leniently.
pub fn read(
    run: &RunDir,
) -> Result<(Vec<SessionResult>, Vec<Unreadable>), crate::rundir::StoreError> {
    let mut c = read_json_dir::<SessionResult>(&run.sessions_dir())?;
    c.items
        .sort_by(|a, b| a.session.test_name.cmp(&b.session.test_name));
    Ok((c.items, c.unreadable))
}

/// The report of `results`.
pub fn aggregate(
    results: &[SessionResult],
    root: &Path,
    unreadable: Vec<Unreadable>,
) -> SessionReport {
    SessionReport {
        format_version: FORMAT_VERSION,
        rows: results.iter().map(SessionRow::of).collect(),
        files_not_read: unreadable
            .into_iter()
            .map(|u| Unreadable {
                path: u
                    .path
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or(u.path),
                why: u.why,
            })
            .collect(),
    }
}

/// Rebuilds the session reports of the run; returns the paths written. Nothing is written
/// while the run has no sessions.
pub fn build(run: &RunDir) -> Result<Vec<PathBuf>, String> {
    let (results, unreadable) = read(run).map_err(|e| e.to_string())?;
    if results.is_empty() && unreadable.is_empty() {
        return Ok(Vec::new());
    }
    let report = aggregate(&results, run.root(), unreadable);
    let turns = TurnsCsv;
    let writers: [&dyn Output<(SessionReport, Vec<SessionResult>)>; 4] =
        [&Json, &Csv, &Markdown, &turns];
    output::write_all(run.root(), &writers, &(report, results)).map_err(|e| e.to_string())
}

fn path(name: &str) -> PathBuf {
    RunDir::relative().report_path(name)
}

fn f(v: Option<f64>, d: usize) -> String {
    v.map_or(MISSING.to_string(), |x| format!("{x:.d$}"))
}

fn raw(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or(MISSING.to_string(), |x| format!("{:.0}%", x * 100.0))
}

fn fit(v: &Option<LineFit>, d: usize) -> String {
    match v {
        Some(l) => match (l.ci_low, l.ci_high) {
            (Some(lo), Some(hi)) => format!("{:.d$} [{lo:.d$}, {hi:.d$}]", l.slope),
            _ => format!("{:.d$}", l.slope),
        },
        None => MISSING.to_string(),
    }
}

struct Json;
struct Csv;
struct Markdown;
struct TurnsCsv;

type Input = (SessionReport, Vec<SessionResult>);

impl Output<Input> for Json {
    fn render(&self, (report, _): &Input) -> Vec<OutputFile> {
        let mut text = serde_json::to_string_pretty(report).expect("the report serializes");
        text.push('\n');
        vec![OutputFile::new(path("agentic_sessions.json"), text)]
    }
}

/// The columns of `agentic_sessions.csv`.
type Column = (&'static str, fn(&SessionRow) -> String);
const COLUMNS: &[Column] = &[
    ("test_name", |r| r.test_name.clone()),
    ("model", |r| r.model.clone()),
    ("workload", |r| r.workload.clone()),
    ("num_ctx", |r| r.num_ctx.to_string()),
    ("duration_s", |r| r.duration_s.to_string()),
    ("verdict", |r| r.verdict.label().to_string()),
    ("turns", |r| r.analysis.turns.to_string()),
    ("conversations", |r| r.analysis.conversations.to_string()),
    ("success_rate", |r| raw(r.analysis.success_rate)),
    ("success_ci_low", |r| {
        raw(r.analysis.success_ci.map(|c| c.0))
    }),
    ("accuracy", |r| raw(r.analysis.accuracy)),
    ("accuracy_ci_low", |r| {
        raw(r.analysis.accuracy_ci.map(|c| c.0))
    }),
    ("ttft_mean_s", |r| {
        raw(r.analysis.ttft_s.as_ref().map(|s| s.mean))
    }),
    ("ttft_p95_s", |r| raw(r.analysis.ttft_p95_s)),
    ("decode_tps_mean", |r| {
        raw(r.analysis.decode_tps.as_ref().map(|s| s.mean))
    }),
    ("deepest_history_tokens", |r| {
        r.analysis
            .deepest_history_tokens
            .map_or(String::new(), |n| n.to_string())
    }),
    ("cache_reuse", |r| raw(r.analysis.cache_reuse)),
    ("hits", |r| r.analysis.hits.to_string()),
    ("partials", |r| r.analysis.partials.to_string()),
    ("misses", |r| r.analysis.misses.to_string()),
    ("cache_cliff_turn", |r| {
        r.analysis
            .cache_cliff
            .as_ref()
            .map_or(String::new(), |c| c.turn.to_string())
    }),
    ("cache_cliff_cost_s", |r| {
        raw(r
            .analysis
            .cache_cliff
            .as_ref()
            .map(|c| c.ttft_cost_s_per_turn))
    }),
    ("ttft_s_per_1k_tokens", |r| {
        raw(r.analysis.ttft_per_1k.as_ref().map(|l| l.slope))
    }),
    ("decode_drift_pct", |r| raw(r.analysis.decode_drift_pct)),
    ("rss_growth_pct", |r| raw(r.analysis.rss.growth_pct)),
    ("rss_mb_per_min", |r| {
        raw(r.analysis.rss.mb_per_min.as_ref().map(|l| l.slope))
    }),
    ("rss_pattern", |r| {
        r.analysis.rss.pattern.label().to_string()
    }),
    ("stability", |r| r.analysis.stability.score.to_string()),
];

fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).expect("in memory");
    String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8 in, UTF-8 out")
}

impl Output<Input> for Csv {
    fn render(&self, (report, _): &Input) -> Vec<OutputFile> {
        let mut text = csv_line(COLUMNS.iter().map(|c| c.0.to_string()));
        for r in &report.rows {
            text.push_str(&csv_line(COLUMNS.iter().map(|c| (c.1)(r))));
        }
        vec![OutputFile::new(path("agentic_sessions.csv"), text)]
    }
}

impl Output<Input> for TurnsCsv {
    fn render(&self, (_, results): &Input) -> Vec<OutputFile> {
        let mut text = csv_line(
            [
                "test_name",
                "turn",
                "conversation",
                "turn_in_conversation",
                "label",
                "at_s",
                "messages",
                "history_chars",
                "history_tokens_est",
                "prompt_tokens",
                "ttft_s",
                "decode_tps",
                "decode_tps_server",
                "prompt_eval_s",
                "processed_share",
                "prefix_tokens",
                "cache_reuse",
                "cache",
                "success",
                "correct",
                "e2e_s",
                "rss_after_bytes",
                "server_cpu_pct",
                "truncated",
                "failure",
            ]
            .map(str::to_string),
        );
        for r in results {
            for t in &r.turns {
                text.push_str(&csv_line([
                    r.session.test_name.clone(),
                    t.turn.to_string(),
                    t.conversation.to_string(),
                    t.turn_in_conversation.to_string(),
                    t.label.clone(),
                    format!("{:.3}", t.at_s),
                    t.messages.to_string(),
                    t.history_chars.to_string(),
                    t.history_tokens_est.to_string(),
                    t.prompt_tokens().map_or(String::new(), |n| n.to_string()),
                    raw(t.trial.ttft_s),
                    raw(t.trial.decode_tps),
                    raw(t.trial.decode_tps_server),
                    raw(t.prompt_eval_s),
                    raw(t.processed_share),
                    t.prefix_tokens.map_or(String::new(), |n| n.to_string()),
                    raw(t.cache_reuse),
                    t.cache.map_or(String::new(), |c| c.label().to_string()),
                    t.success.to_string(),
                    t.correct.map_or(String::new(), |c| c.to_string()),
                    raw(t.trial.e2e_s),
                    t.trial
                        .rss_after_bytes
                        .map_or(String::new(), |n| n.to_string()),
                    raw(t.server_cpu_pct),
                    t.truncation.is_some().to_string(),
                    t.failure.clone().unwrap_or_default(),
                ]));
            }
        }
        vec![OutputFile::new(path("agentic_turns.csv"), text)]
    }
}

impl Output<Input> for Markdown {
    fn render(&self, (report, _): &Input) -> Vec<OutputFile> {
        let mut md = String::from("# Sustained agentic sessions\n\n");
        md.push_str(
            "| Test | Model | Workload | Context | Duration | Turns | Success | Accuracy | TTFT mean / p95 | Decode tok/s | Cache reuse | TTFT s per 1K tokens | RSS growth | Stability | Verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &report.rows {
            let a = &r.analysis;
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} s | {} ({} conv.) | {} | {} | {} / {} s | {} | {} | {} | {} ({}) | {:.2} | {} |\n",
                r.test_name,
                r.model,
                r.workload,
                crate::matrix::ctx_label(r.num_ctx).trim_start_matches("ctx_"),
                r.wall_s,
                a.turns,
                a.conversations,
                pct(a.success_rate),
                pct(a.accuracy),
                f(a.ttft_s.as_ref().map(|s| s.mean), 2),
                f(a.ttft_p95_s, 2),
                f(a.decode_tps.as_ref().map(|s| s.mean), 1),
                f(a.cache_reuse, 2),
                fit(&a.ttft_per_1k, 3),
                a.rss.growth_pct.map_or(MISSING.to_string(), |g| format!("{g:+.1}%")),
                a.rss.pattern.label(),
                a.stability.score,
                r.verdict.label(),
            ));
        }
        for r in &report.rows {
            let a = &r.analysis;
            md.push_str(&format!(
                "\n## {}\n\n**{}**",
                r.test_name,
                r.verdict.label()
            ));
            for why in &r.reasons {
                md.push_str(&format!("\n- {why}"));
            }
            md.push_str("\n\n");
            md.push_str(&format!(
                "- turns {} in {} conversation(s) ({} reached the history budget); succeeded {}, correct {}; deepest history {} tokens\n",
                a.turns,
                a.conversations,
                a.conversations_completed,
                a.succeeded,
                a.correct,
                a.deepest_history_tokens.map_or(MISSING.to_string(), |n| n.to_string())
            ));
            md.push_str(&format!(
                "- success {} (95% Wilson CI {}), accuracy {} (95% Wilson CI {})\n",
                pct(a.success_rate),
                a.success_ci.map_or(MISSING.to_string(), |(l, h)| format!(
                    "{:.0}–{:.0}%",
                    l * 100.0,
                    h * 100.0
                )),
                pct(a.accuracy),
                a.accuracy_ci.map_or(MISSING.to_string(), |(l, h)| format!(
                    "{:.0}–{:.0}%",
                    l * 100.0,
                    h * 100.0
                )),
            ));
            md.push_str(&format!(
                "- prompt cache: reuse {} over {} HIT, {} PARTIAL, {} MISS turns; uncached prefill {} tok/s; {}\n",
                f(a.cache_reuse, 2),
                a.hits,
                a.partials,
                a.misses,
                f(a.uncached_prefill_tps, 0),
                match &a.cache_cliff {
                    Some(c) => format!(
                        "cache cliff at turn {}: every turn from it on ({}) missed, costing {:.2} s of TTFT per turn to reprocess the history",
                        c.turn, c.misses, c.ttft_cost_s_per_turn
                    ),
                    None => "no cache cliff".to_string(),
                }
            ));
            md.push_str(&format!(
                "- TTFT against history: {} s per 1K tokens (95% CI); decode against history: {} tok/s per 1K tokens; decode drift over the session {}\n",
                fit(&a.ttft_per_1k, 3),
                fit(&a.decode_per_1k, 2),
                a.decode_drift_pct.map_or(MISSING.to_string(), |d| format!("{d:+.1}%")),
            ));
            let rss = &a.rss;
            md.push_str(&format!(
                "- memory: RSS {} → {} MB after the warm-up turns (loaded {} MB): {} of the loaded size, {} MB/min (halves {} then {}): {}\n",
                f(rss.start_bytes.map(|b| b as f64 / 1e6), 0),
                f(rss.end_bytes.map(|b| b as f64 / 1e6), 0),
                f(rss.loaded_bytes.map(|b| b as f64 / 1e6), 0),
                rss.growth_pct.map_or(MISSING.to_string(), |g| format!("{g:+.1}%")),
                fit(&rss.mb_per_min, 1),
                rss.first_half_mb_per_min.as_ref().map_or(MISSING.to_string(), |l| format!("{:.1}", l.slope)),
                rss.second_half_mb_per_min.as_ref().map_or(MISSING.to_string(), |l| format!("{:.1}", l.slope)),
                rss.pattern.label(),
            ));
            md.push_str(&format!(
                "- stability {:.2} ({})\n",
                a.stability.score,
                match (a.stability.ci_low, a.stability.ci_high) {
                    (Some(l), Some(h)) => format!("95% CI {l:.2}–{h:.2}"),
                    _ => "no interval".to_string(),
                }
            ));
        }
        if !report.files_not_read.is_empty() {
            md.push_str("\n## Files not read\n\n");
            for u in &report.files_not_read {
                md.push_str(&format!("- {}: {}\n", u.path.display(), u.why));
            }
        }
        md.push_str(concat!(
            "\n## Definitions\n\n",
            "- success: a complete, valid response (done, no error line, no stall, non-empty answer), with its 95% Wilson interval; accuracy: successful answers holding the expected fact (normalised match)\n",
            "- processed share: prompt_eval_duration × the session's uncached prefill rate (the first turn of each conversation) / prompt_eval_count; cache reuse: the share of the prefix the server could have kept (the previous prompt and its answer) that it did not reprocess; HIT ≥ 0.8, MISS ≤ 0.2\n",
            "- TTFT per 1K tokens: least-squares slope of TTFT against the server's prompt count, with its 95% interval; decode drift: fitted change of decode tok/s from the first to the last turn, % of the mean\n",
            "- RSS growth: server tree RSS after the last turn minus after the warm-up turns, % of the RSS right after the load; flat ≤ 1%; bounded: the second half's slope below half the first's, or not above 0; steady: still growing at its pace\n",
        ));
        vec![OutputFile::new(path("agentic_sessions.md"), md)]
    }
}
