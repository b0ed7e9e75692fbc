//! `use_case_recommendations.md`: the best passing configuration per use case, why it won, and
//! what did not pass.
//!
//! ## Ranking per use case
//!
//! Models are mapped to use cases by the matrix's `use_case` column. Among the mapped models
//! with a recommended (PASS) configuration:
//!
//! | use case | best is | tie-break |
//! |---|---|---|
//! | basic code tasks | highest decode tok/s | lower TTFT |
//! | complex refactoring | largest context | higher decode tok/s |
//! | maximum analysis | largest context | lower TTFT |
//! | RAG integration | lowest TTFT | larger context |
//! | chat assistance | lowest TTFT | higher decode tok/s |
//! | any other use case in the matrix | largest context | higher decode tok/s |

use super::{RECOMMENDATIONS_FILE, in_reports, preset_stem};
use crate::optimize::record::{ChoiceOutcome, Recommendation, SearchRecord};
use crate::output::{Output, OutputFile};
use crate::rundir::INTEGRATION_DIR;
use crate::text::{ctx_label as k, mean_interval, out};

/// The use cases of the user's plan, in the order the recommendations list them.
pub const USE_CASES: [&str; 5] = [
    "basic code tasks",
    "complex refactoring",
    "maximum analysis",
    "RAG integration",
    "chat assistance",
];

/// `comparative_analysis/use_case_recommendations.md`, always.
#[derive(Debug, Clone, Copy)]
pub struct Recommendations;

impl Output<[SearchRecord]> for Recommendations {
    fn render(&self, records: &[SearchRecord]) -> Vec<OutputFile> {
        vec![OutputFile::new(
            in_reports(RECOMMENDATIONS_FILE),
            render_recommendations(records),
        )]
    }
}

/// A sort key of a candidate (smaller is better).
type RankKey = fn(&SearchRecord) -> (f64, f64);

/// How a use case ranks its candidates, in words and as a sort key.
fn ranking(use_case: &str) -> (&'static str, RankKey) {
    fn ctx(r: &SearchRecord) -> f64 {
        r.recommended
            .as_ref()
            .map_or(0.0, |x| x.options.num_ctx as f64)
    }
    fn ttft(r: &SearchRecord) -> f64 {
        r.recommended
            .as_ref()
            .and_then(|x| x.ttft_s.as_ref())
            .map_or(f64::INFINITY, |s| s.mean)
    }
    fn decode(r: &SearchRecord) -> f64 {
        r.recommended
            .as_ref()
            .and_then(|x| x.decode_tps.as_ref())
            .map_or(0.0, |s| s.mean)
    }
    match use_case.trim().to_lowercase().as_str() {
        "basic code tasks" => ("highest decode tok/s, then lowest TTFT", |r| {
            (-decode(r), ttft(r))
        }),
        "maximum analysis" => ("largest context, then lowest TTFT", |r| (-ctx(r), ttft(r))),
        "rag integration" => ("lowest TTFT, then largest context", |r| (ttft(r), -ctx(r))),
        "chat assistance" => ("lowest TTFT, then highest decode tok/s", |r| {
            (ttft(r), -decode(r))
        }),
        _ => ("largest context, then highest decode tok/s", |r| {
            (-ctx(r), -decode(r))
        }),
    }
}

/// One use case: the models mapped to it and those with a passing configuration, best first.
struct UseCase<'a> {
    name: String,
    rule: &'static str,
    mapped: Vec<&'a SearchRecord>,
    ranked: Vec<(&'a SearchRecord, &'a Recommendation)>,
}

impl<'a> UseCase<'a> {
    fn new(name: &str, records: &'a [SearchRecord]) -> UseCase<'a> {
        let (rule, key) = ranking(name);
        let mapped: Vec<&SearchRecord> = records
            .iter()
            .filter(|r| asked_ctx(r, name).is_some())
            .collect();
        let mut ranked: Vec<(&SearchRecord, &Recommendation)> = mapped
            .iter()
            .filter_map(|r| Some((*r, r.recommended.as_ref()?)))
            .collect();
        ranked.sort_by(|(a, _), (b, _)| {
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.name.cmp(&b.name))
        });
        UseCase {
            name: name.to_string(),
            rule,
            mapped,
            ranked,
        }
    }

    fn winner(&self) -> Option<(&'a SearchRecord, &'a Recommendation)> {
        self.ranked.first().copied()
    }
}

/// The largest context the matrix asked for `use_case` in `r`'s rows, when it is one of them.
fn asked_ctx(r: &SearchRecord, use_case: &str) -> Option<u32> {
    let u = use_case.trim().to_lowercase();
    r.use_cases
        .iter()
        .find(|(x, _)| x.trim().to_lowercase() == u)
        .map(|(_, c)| *c)
}

/// [`USE_CASES`], then any other use case of the records, in record order.
fn use_cases(records: &[SearchRecord]) -> Vec<String> {
    let mut out: Vec<String> = USE_CASES.iter().map(|s| s.to_string()).collect();
    for (u, _) in records.iter().flat_map(|r| &r.use_cases) {
        if !out
            .iter()
            .any(|x| x.to_lowercase() == u.trim().to_lowercase())
        {
            out.push(u.trim().to_string());
        }
    }
    out
}

fn failed_text(r: &SearchRecord) -> Option<String> {
    if let Some(s) = &r.stopped {
        return Some(format!("`{}`: the search stopped early: {s}", r.name));
    }
    match (&r.context.largest_pass, &r.context.smallest_fail) {
        (_, Some(f)) => Some(format!(
            "`{}` at {} tokens: {} ({}){}",
            r.name,
            f.num_ctx,
            f.verdict.label(),
            f.verdicts
                .iter()
                .map(|v| v.label())
                .collect::<Vec<_>>()
                .join(", "),
            if f.reasons.is_empty() {
                String::new()
            } else {
                format!(" — {}", f.reasons.join("; "))
            }
        )),
        (None, None) => Some(format!(
            "`{}`: nothing passed{}",
            r.name,
            if r.not_searched.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.not_searched.join("; "))
            }
        )),
        (Some(_), None) => None,
    }
}

/// `use_case_recommendations.md` from the records (in any order: the rendering sorts them).
pub fn render_recommendations(records: &[SearchRecord]) -> String {
    let mut records: Vec<SearchRecord> = records.to_vec();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let mut o = String::new();
    out!(o, "# Use-case recommendations");
    out!(o);
    if records.is_empty() {
        out!(o, "No optimizer searches in this run (`optimize/*.json`).");
        return o;
    }
    intro(&mut o, &records);
    let cases: Vec<UseCase> = use_cases(&records)
        .iter()
        .map(|u| UseCase::new(u, &records))
        .collect();
    winners_table(&mut o, &cases);
    for case in &cases {
        use_case_section(&mut o, case);
    }
    searches_table(&mut o, &records);
    not_searched(&mut o, &records);
    out!(
        o,
        "Rules: the context grid is the smallest matrix context, then multiples of the grid step up to \
         min(trained context, the memory cap); bisection from the top; points next to the boundary are \
         confirmed by a second run (a third when they disagree), unclear points are MARGINAL. Threads and \
         batch: two settings differ only when Welch's t-test gives p < 0.05; otherwise the fewer threads \
         and the smaller batch win."
    );
    o
}

/// What the file is made from: searches and hosts (each host once).
fn intro(o: &mut String, records: &[SearchRecord]) {
    let mut hosts: Vec<String> = Vec::new();
    for r in records {
        let h = format!("{} ({} logical CPUs)", r.host.cpu_model, r.host.cpu_logical);
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    out!(
        o,
        "From {} optimizer {} on {}. Each use case gets the best configuration that passed its gates \
         among the models the matrix assigns to it (`use_case` column); every figure is a mean with its \
         95 % interval over the valid measured trials of one probe cell.",
        records.len(),
        if records.len() == 1 {
            "search"
        } else {
            "searches"
        },
        hosts.join(", ")
    );
    out!(o);
}

/// One row per use case: the winner's configuration and figures.
fn winners_table(o: &mut String, cases: &[UseCase]) {
    out!(
        o,
        "| use case | model | num_ctx | num_thread | num_batch | TTFT (s) | decode (tok/s) | stability | preset |"
    );
    out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for case in cases {
        let u = &case.name;
        match case.winner() {
            Some((r, x)) => out!(
                o,
                "| {u} | `{}` | {} | {} | {} | {} | {} | {:.2} | `{INTEGRATION_DIR}/{}.yaml` |",
                r.model,
                k(x.options.num_ctx),
                x.options.num_thread,
                x.options.num_batch,
                mean_interval(x.ttft_s.as_ref(), 2),
                mean_interval(x.decode_tps.as_ref(), 1),
                x.stability,
                preset_stem(r).unwrap_or_default()
            ),
            None if case.mapped.is_empty() => {
                out!(o, "| {u} | — | | | | | | | no model assigned |")
            }
            None => out!(o, "| {u} | — | | | | | | | no passing configuration |"),
        }
    }
    out!(o);
}

/// A use case's section: the recommendation, why it won, and what did not pass.
fn use_case_section(o: &mut String, case: &UseCase) {
    out!(o, "## {}", case.name);
    out!(o);
    if case.mapped.is_empty() {
        out!(o, "No model of the matrix is assigned to this use case.");
        out!(o);
        return;
    }
    match case.winner() {
        Some((r, x)) => recommended(o, case, r, x),
        None => {
            out!(o, "No assigned model has a passing configuration.");
            out!(o);
        }
    }
    let failed: Vec<String> = case.mapped.iter().filter_map(|r| failed_text(r)).collect();
    if !failed.is_empty() {
        out!(o, "What did not pass:");
        out!(o);
        for f in failed {
            out!(o, "- {f}");
        }
        out!(o);
    }
}

/// The winner `r` (configuration `x`) of a use case, why it won, and a note when the matrix
/// asked for more context than passed.
fn recommended(o: &mut String, case: &UseCase, r: &SearchRecord, x: &Recommendation) {
    out!(
        o,
        "**Recommended: `{}` at num_ctx {} ({} tokens), num_thread {}, num_batch {}** — {}, TTFT {} s, decode {} tok/s, stability {:.2} (probe `{}`).",
        r.model,
        k(x.options.num_ctx),
        x.options.num_ctx,
        x.options.num_thread,
        x.options.num_batch,
        x.verdict.label(),
        mean_interval(x.ttft_s.as_ref(), 2),
        mean_interval(x.decode_tps.as_ref(), 1),
        x.stability,
        x.test_name
    );
    out!(o);
    let mut why = format!("Why: ranked by {}", case.rule);
    if case.ranked.len() == 1 {
        why.push_str("; the only assigned model with a passing configuration.");
    } else {
        why.push_str(&format!(
            " among {} assigned models with a passing configuration ({}).",
            case.ranked.len(),
            case.ranked
                .iter()
                .map(|(c, x)| format!(
                    "`{}`: {}, TTFT {:.2} s, {:.1} tok/s",
                    c.name,
                    k(x.options.num_ctx),
                    x.ttft_s.as_ref().map_or(f64::NAN, |s| s.mean),
                    x.decode_tps.as_ref().map_or(f64::NAN, |s| s.mean)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    out!(
        o,
        "{why} {} {}",
        r.threads.why_sentence("Threads"),
        r.batch.why_sentence("Batch")
    );
    out!(o);
    if let Some(asked) = asked_ctx(r, &case.name).filter(|&a| a > x.options.num_ctx) {
        out!(
            o,
            "Note: the matrix asks for {} for this use case; {} is the most that passed.",
            k(asked),
            k(x.options.num_ctx)
        );
        out!(o);
    }
}

/// One row per search: grid, cap, boundary, choices, cost.
fn searches_table(o: &mut String, records: &[SearchRecord]) {
    out!(o, "## Searches");
    out!(o);
    out!(
        o,
        "| model | grid (tokens) | cap | largest PASS | smallest non-PASS | threads | batch | probes (new / resumed) | probe time (s) |"
    );
    out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in records {
        let grid = match (r.grid.first(), r.grid.last()) {
            (Some(a), Some(b)) if r.grid.len() > 1 => {
                format!("{}…{} ({} points)", k(*a), k(*b), r.grid.len())
            }
            (Some(a), _) => k(*a),
            _ => "—".into(),
        };
        out!(
            o,
            "| `{}` | {grid} | {} | {} | {} | {} | {} | {} ({} / {}) | {:.0} |",
            r.name,
            r.cap.tokens.map_or("—".into(), k),
            r.context
                .largest_pass
                .as_ref()
                .map_or("—".into(), |e| k(e.num_ctx)),
            r.context
                .smallest_fail
                .as_ref()
                .map_or("—".into(), |e| format!(
                    "{} ({})",
                    k(e.num_ctx),
                    e.verdict.label()
                )),
            r.threads.chosen.map_or("—".into(), |v| v.to_string()),
            r.batch.chosen.map_or("—".into(), |v| v.to_string()),
            r.probes.len(),
            r.probes_new,
            r.probes_resumed,
            r.probe_wall_s
        );
    }
    out!(o);
}

/// What the budgets cut off, per search.
fn not_searched(o: &mut String, records: &[SearchRecord]) {
    let cut: Vec<String> = records
        .iter()
        .flat_map(|r| {
            r.not_searched
                .iter()
                .map(move |n| format!("`{}` {n}", r.name))
        })
        .collect();
    if !cut.is_empty() {
        out!(o, "Not searched:");
        out!(o);
        for c in cut {
            out!(o, "- {c}");
        }
        out!(o);
    }
}

impl ChoiceOutcome {
    /// `"Threads 2: why."` or `"Threads: not searched."`.
    pub fn why_sentence(&self, what: &str) -> String {
        match self.chosen {
            Some(v) => format!("{what} {v}: {}.", self.why),
            None if self.candidates.is_empty() => format!("{what}: not searched."),
            None => format!("{what}: {}.", self.why),
        }
    }
}
