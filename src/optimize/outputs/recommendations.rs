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
//!
//! ## Phase 2: the run's sustained sessions
//!
//! The sessions of the run (`<run>/sessions/`, `cargo test --test agentic`) weigh in by model
//! (the session's `model` is the record's, an untagged name counting as `:latest`) and by
//! workload:
//!
//! | session workload | use cases it speaks for |
//! |---|---|
//! | `coding` | basic code tasks, complex refactoring |
//! | `rag` | RAG integration |
//! | `chat` | chat assistance |
//! | — | maximum analysis, any other use case: no session weighs in |
//!
//! Before the figures rank them, the candidates of a use case with a workload are split in two:
//! those whose sessions of that workload all passed or were MARGINAL (SKIPPED ones count as not
//! run), or that have none, rank ahead of those with a session that FAILed or was INVALID. When
//! the run has sessions, every recommended configuration gets its model's Phase 2 result
//! (verdict, success, accuracy, cache reuse, RSS growth and its pattern, or "no session in this
//! run"), a failed session names its failed gates with figure and limit (from the typed
//! judgement's checks), and a winner that failed its session says so. A run without sessions
//! gives the same file as before they existed.
//!
//! ## Long-context quality
//!
//! When the run has quality sweeps (`cargo test --test quality`, [`crate::quality`]), a
//! configuration for **maximum analysis** whose context is beyond its model's effective context
//! (larger than the `num_ctx` at which the sweeps last kept accuracy ≥ `accuracy_min`, or any
//! context when no fill kept it) is not recommended, and the section says why. A model the run
//! did not sweep is ranked as before, with a note that its effective context was not measured.

use super::{RECOMMENDATIONS_FILE, in_reports, preset_stem};
use crate::agentic::{SessionResult, WorkloadKind};
use crate::judgement::Verdict;
use crate::optimize::record::{ChoiceOutcome, Recommendation, SearchRecord};
use crate::output::{Output, OutputFile};
use crate::quality::report::ModelQuality;
use crate::rundir::INTEGRATION_DIR;
use crate::text::{MISSING, ctx_label as k, mean_interval, out};

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

/// What the recommendations are made from: the run's search records and its Phase 2 sessions.
#[derive(Debug, Clone, Copy)]
pub struct RecommendationInput<'a> {
    /// The search records (`comparative_analysis/optimize/*.json`).
    pub records: &'a [SearchRecord],
    /// The session results (`sessions/*.json`).
    pub sessions: &'a [SessionResult],
    /// The quality sweeps' models (`quality/*.json`, [`crate::quality::report`]).
    pub quality: &'a [ModelQuality],
}

impl Output<RecommendationInput<'_>> for Recommendations {
    fn render(&self, input: &RecommendationInput<'_>) -> Vec<OutputFile> {
        vec![OutputFile::new(
            in_reports(RECOMMENDATIONS_FILE),
            render_recommendations_with(input.records, input.sessions, input.quality),
        )]
    }
}

/// The session workload that speaks for `use_case` (table in the module comment).
pub fn session_workload(use_case: &str) -> Option<WorkloadKind> {
    match use_case.trim().to_lowercase().as_str() {
        "basic code tasks" | "complex refactoring" => Some(WorkloadKind::Coding),
        "rag integration" => Some(WorkloadKind::Rag),
        "chat assistance" => Some(WorkloadKind::Chat),
        _ => None,
    }
}

/// Whether two Ollama model names are the same model (`gemma3` is `gemma3:latest`).
fn same_model(a: &str, b: &str) -> bool {
    fn tagged(m: &str) -> String {
        let m = m.trim();
        if m.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            m.to_string()
        } else {
            format!("{m}:latest")
        }
    }
    tagged(a) == tagged(b)
}

/// Whether a session speaks against its model: it FAILed or was INVALID.
fn session_failed(s: &SessionResult) -> bool {
    matches!(s.verdict(), Verdict::Fail | Verdict::Invalid)
}

/// A session's figures: `success 100%, accuracy 40%, cache reuse 0.95, RSS growth +3.1% (bounded)`.
fn session_figures(s: &SessionResult) -> String {
    let a = &s.analysis;
    let pct = |v: Option<f64>| v.map_or(MISSING.to_string(), |x| format!("{:.0}%", x * 100.0));
    format!(
        "success {}, accuracy {}, cache reuse {}, RSS growth {} ({})",
        pct(a.success_rate),
        pct(a.accuracy),
        a.cache_reuse
            .map_or(MISSING.to_string(), |c| format!("{c:.2}")),
        a.rss
            .growth_pct
            .map_or(MISSING.to_string(), |g| format!("{g:+.1}%")),
        a.rss.pattern.label()
    )
}

/// Why a session's verdict is what it is, from its typed judgement: for a FAIL each failed gate
/// with its limit's column and the check (figure, interval, limit); otherwise the verdict's
/// reasons. Empty for a PASS.
fn session_why(s: &SessionResult) -> String {
    let j = &s.judgement;
    match j.verdict {
        Verdict::Pass => String::new(),
        Verdict::Fail => j
            .failed_gates()
            .into_iter()
            .map(|g| match j.check(g) {
                Some(c) => format!("{} (`{}`): {}", g.label(), g.column(), c.describe()),
                None => g.label().to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => j.verdict_reasons().join("; "),
    }
}

/// One session in a line: `` `t` at 4K (90 s): **FAIL** — figures; failed: why``.
fn session_line(s: &SessionResult) -> String {
    let why = session_why(s);
    let label = match s.verdict() {
        Verdict::Fail => "failed",
        Verdict::Invalid => "invalid",
        Verdict::Marginal => "marginal",
        Verdict::Skipped => "not run",
        Verdict::Regressed => "regressed",
        Verdict::Pass => "",
    };
    format!(
        "`{}` at {} ({:.0} s): **{}** — {}{}",
        s.session.test_name,
        k(s.session.num_ctx),
        s.wall_s,
        s.verdict().label(),
        session_figures(s),
        if why.is_empty() {
            String::new()
        } else {
            format!("; {label}: {why}")
        }
    )
}

/// The verdicts of sessions in a table cell: `PASS`, `FAIL (RSS growth)`, `PASS, INVALID`.
fn session_verdicts(sessions: &[&SessionResult]) -> String {
    sessions
        .iter()
        .map(|s| {
            let failed = s.judgement.failed_gates();
            if failed.is_empty() {
                s.verdict().label().to_string()
            } else {
                format!(
                    "{} ({})",
                    s.verdict().label(),
                    failed
                        .iter()
                        .map(|g| g.label())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The best by the figures alone, before Phase 2 weighed in.
    by_figures: Option<&'a SearchRecord>,
    /// The session workload that speaks for the use case.
    workload: Option<WorkloadKind>,
    /// Every session of the run.
    sessions: &'a [SessionResult],
    /// Passing configurations left out because their context is beyond the model's effective
    /// context, with why.
    beyond: Vec<(&'a SearchRecord, String)>,
    /// Candidates whose model the run's sweeps did not measure (maximum analysis with sweeps).
    unswept: Vec<&'a SearchRecord>,
}

impl<'a> UseCase<'a> {
    fn new(
        name: &str,
        records: &'a [SearchRecord],
        sessions: &'a [SessionResult],
        quality: &[ModelQuality],
    ) -> UseCase<'a> {
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
        let mut case = UseCase {
            name: name.to_string(),
            rule,
            mapped,
            by_figures: ranked.first().map(|(r, _)| *r),
            ranked,
            workload: session_workload(name),
            sessions,
            beyond: Vec::new(),
            unswept: Vec::new(),
        };
        // Long-context quality: for maximum analysis, a context beyond the model's effective
        // context is not recommended.
        if name.trim().eq_ignore_ascii_case("maximum analysis") && !quality.is_empty() {
            let ranked = std::mem::take(&mut case.ranked);
            for (r, x) in ranked {
                match quality
                    .iter()
                    .find(|m| crate::backend::same_model(&m.model, &r.model))
                {
                    None => {
                        case.unswept.push(r);
                        case.ranked.push((r, x));
                    }
                    Some(m) => match m.effective_num_ctx {
                        Some(c) if x.options.num_ctx <= c => case.ranked.push((r, x)),
                        effective => {
                            let why = match (effective, m.effective_context_tokens) {
                                (Some(c), Some(t)) => format!(
                                    "its effective context is {t:.0} tokens, measured at {} (accuracy ≥ {:.2} on the quality sweep); num_ctx {} is beyond it",
                                    k(c),
                                    m.accuracy_min,
                                    k(x.options.num_ctx)
                                ),
                                _ => format!(
                                    "no fill of its quality sweep kept accuracy ≥ {:.2}",
                                    m.accuracy_min
                                ),
                            };
                            case.beyond.push((r, why));
                        }
                    },
                }
            }
            case.by_figures = case.ranked.first().map(|(r, _)| *r);
        }
        // Phase 2: a model whose session failed ranks after the others (a stable sort keeps
        // the figures' order within each part).
        let mut ranked = std::mem::take(&mut case.ranked);
        ranked.sort_by_key(|(r, _)| case.phase2_failed(r));
        case.ranked = ranked;
        case
    }

    fn winner(&self) -> Option<(&'a SearchRecord, &'a Recommendation)> {
        self.ranked.first().copied()
    }

    /// Whether the run has any session (else nothing of Phase 2 is printed).
    fn with_sessions(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// The sessions of `r`'s model whose workload speaks for this use case, by test name.
    fn phase2(&self, r: &SearchRecord) -> Vec<&'a SessionResult> {
        let Some(w) = self.workload else {
            return Vec::new();
        };
        self.sessions
            .iter()
            .filter(|s| s.session.workload == w && same_model(&s.session.model, &r.model))
            .collect()
    }

    /// Whether a session of `r` for this use case FAILed or was INVALID.
    fn phase2_failed(&self, r: &SearchRecord) -> bool {
        self.phase2(r).into_iter().any(session_failed)
    }

    /// `r`'s Phase 2 in a table cell.
    fn phase2_cell(&self, r: &SearchRecord) -> String {
        let sessions = self.phase2(r);
        match self.workload {
            None => MISSING.to_string(),
            Some(_) if sessions.is_empty() => "no session".to_string(),
            Some(_) => session_verdicts(&sessions),
        }
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

/// `use_case_recommendations.md` from the records and the run's sessions (each in any order:
/// the rendering sorts them). Without sessions, the file the records alone give.
pub fn render_recommendations(records: &[SearchRecord], sessions: &[SessionResult]) -> String {
    render_recommendations_with(records, sessions, &[])
}

/// [`render_recommendations`] with the run's quality sweeps weighing in (module comment).
pub fn render_recommendations_with(
    records: &[SearchRecord],
    sessions: &[SessionResult],
    quality: &[ModelQuality],
) -> String {
    let mut records: Vec<SearchRecord> = records.to_vec();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sessions: Vec<SessionResult> = sessions.to_vec();
    sessions.sort_by(|a, b| a.session.test_name.cmp(&b.session.test_name));
    let mut o = String::new();
    out!(o, "# Use-case recommendations");
    out!(o);
    if records.is_empty() {
        out!(o, "No optimizer searches in this run (`optimize/*.json`).");
        return o;
    }
    intro(&mut o, &records, &sessions);
    let cases: Vec<UseCase> = use_cases(&records)
        .iter()
        .map(|u| UseCase::new(u, &records, &sessions, quality))
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

/// What the file is made from: searches and hosts (each host once), and the sessions.
fn intro(o: &mut String, records: &[SearchRecord], sessions: &[SessionResult]) {
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
    if !sessions.is_empty() {
        out!(
            o,
            "Phase 2: {} sustained {} in this run (`sessions/`). A coding session speaks for basic \
             code tasks and complex refactoring, a RAG session for RAG integration, a chat session for \
             chat assistance, each for its model; a model whose session of the use case's workload \
             FAILed or was INVALID ranks after the models whose sessions passed or were MARGINAL, or \
             that have none.",
            sessions.len(),
            if sessions.len() == 1 {
                "session"
            } else {
                "sessions"
            }
        );
        out!(o);
    }
}

/// One row per use case: the winner's configuration and figures.
fn winners_table(o: &mut String, cases: &[UseCase]) {
    // The Phase 2 column appears only when the run has sessions.
    let with_sessions = cases.first().is_some_and(UseCase::with_sessions);
    if with_sessions {
        out!(
            o,
            "| use case | model | num_ctx | num_thread | num_batch | TTFT (s) | decode (tok/s) | stability | preset | Phase 2 |"
        );
        out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    } else {
        out!(
            o,
            "| use case | model | num_ctx | num_thread | num_batch | TTFT (s) | decode (tok/s) | stability | preset |"
        );
        out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    }
    for case in cases {
        let u = &case.name;
        let phase2 = |r: Option<&SearchRecord>| {
            if with_sessions {
                format!(" {} |", r.map_or(String::new(), |r| case.phase2_cell(r)))
            } else {
                String::new()
            }
        };
        match case.winner() {
            Some((r, x)) => out!(
                o,
                "| {u} | `{}` | {} | {} | {} | {} | {} | {:.2} | `{INTEGRATION_DIR}/{}.yaml` |{}",
                r.model,
                k(x.options.num_ctx),
                x.options.num_thread,
                x.options.num_batch,
                mean_interval(x.ttft_s.as_ref(), 2),
                mean_interval(x.decode_tps.as_ref(), 1),
                x.stability,
                preset_stem(r).unwrap_or_default(),
                phase2(Some(r))
            ),
            None if case.mapped.is_empty() => {
                out!(
                    o,
                    "| {u} | — | | | | | | | no model assigned |{}",
                    phase2(None)
                )
            }
            None => out!(
                o,
                "| {u} | — | | | | | | | no passing configuration |{}",
                phase2(None)
            ),
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
        None if !case.beyond.is_empty() => {
            out!(
                o,
                "No assigned model has a passing configuration within its effective context."
            );
            out!(o);
        }
        None => {
            out!(o, "No assigned model has a passing configuration.");
            out!(o);
        }
    }
    if !case.beyond.is_empty() {
        out!(
            o,
            "Not recommended here (beyond the model's effective context):"
        );
        out!(o);
        for (r, why) in &case.beyond {
            out!(o, "- `{}` ({}): {why}", r.name, r.model);
        }
        out!(o);
    }
    if !case.unswept.is_empty() {
        out!(
            o,
            "Effective context not measured (no quality sweep in this run): {}.",
            case.unswept
                .iter()
                .map(|r| format!("`{}`", r.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out!(o);
    }
    let mut failed: Vec<String> = case.mapped.iter().filter_map(|r| failed_text(r)).collect();
    // Phase 2: the sessions of the mapped models that failed, with the gate and figure.
    failed.extend(case.mapped.iter().flat_map(|r| {
        case.phase2(r)
            .into_iter()
            .filter(|s| session_failed(s))
            .map(move |s| format!("Phase 2 of `{}`: {}", r.name, session_line(s)))
    }));
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
    if case.with_sessions() {
        phase2_paragraph(o, case, r);
    }
    let weighed = case.with_sessions() && case.workload.is_some();
    let mut why = match case.workload {
        Some(w) if weighed => format!(
            "Why: ranked by the Phase 2 {} sessions (FAIL or INVALID last), then by {}",
            w.label(),
            case.rule
        ),
        _ => format!("Why: ranked by {}", case.rule),
    };
    if case.ranked.len() == 1 {
        why.push_str("; the only assigned model with a passing configuration.");
    } else {
        why.push_str(&format!(
            " among {} assigned models with a passing configuration ({}).",
            case.ranked.len(),
            case.ranked
                .iter()
                .map(|(c, x)| format!(
                    "`{}`: {}, TTFT {:.2} s, {:.1} tok/s{}",
                    c.name,
                    k(x.options.num_ctx),
                    x.ttft_s.as_ref().map_or(f64::NAN, |s| s.mean),
                    x.decode_tps.as_ref().map_or(f64::NAN, |s| s.mean),
                    if weighed {
                        format!(", Phase 2 {}", case.phase2_cell(c))
                    } else {
                        String::new()
                    }
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

/// The winner's Phase 2 for this use case: each session of its model and workload with its
/// figures, or that there is none; a warning when its own session failed, and the model Phase 2
/// demoted when it would have won by the figures.
fn phase2_paragraph(o: &mut String, case: &UseCase, r: &SearchRecord) {
    let Some(w) = case.workload else {
        out!(
            o,
            "Phase 2: no session workload speaks for {} (coding: basic code tasks, complex \
             refactoring; rag: RAG integration; chat: chat assistance); not weighed.",
            case.name
        );
        out!(o);
        return;
    };
    let sessions = case.phase2(r);
    if sessions.is_empty() {
        out!(
            o,
            "Phase 2 ({}): no session in this run for `{}`.",
            w.label(),
            r.model
        );
        out!(o);
    } else {
        out!(o, "Phase 2 ({}) of `{}`:", w.label(), r.model);
        out!(o);
        for s in &sessions {
            out!(o, "- {}", session_line(s));
        }
        out!(o);
    }
    if case.phase2_failed(r) {
        out!(
            o,
            "**Warning: recommended although its Phase 2 {} session did not pass** (above): every \
             assigned model with a passing configuration failed its {} session in this run, and \
             this one ranks first by {}.",
            w.label(),
            w.label(),
            case.rule
        );
        out!(o);
    } else if let Some(first) = case.by_figures.filter(|f| f.name != r.name) {
        let failed: Vec<String> = case
            .phase2(first)
            .into_iter()
            .filter(|s| session_failed(s))
            .map(session_line)
            .collect();
        out!(
            o,
            "Phase 2 changed the winner: `{}` ranks first by {} but is not recommended, its {} \
             session did not pass: {}.",
            first.name,
            case.rule,
            w.label(),
            failed.join("; ")
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
