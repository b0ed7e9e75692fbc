//! What the searches leave for people and tools, built from the search records of a run
//! (`comparative_analysis/optimize/*.json`) only, so the same records always give the same bytes:
//!
//! - `integration_configs/<name>_<K>k.yaml`: a [`Preset`] per recommended configuration;
//! - `integration_configs/<name>_<K>k.Modelfile`: `FROM` + `PARAMETER num_ctx/num_thread/num_batch`
//!   (clients of Ollama's OpenAI-compatible endpoint cannot set `num_ctx`; a model created from
//!   this file carries it);
//! - `integration_configs/continue-config.yaml`: a [`ContinueConfig`] for the Continue VS Code
//!   extension (config.yaml `schema: v1`: `name`, `provider: ollama`, `model`, `roles`,
//!   `defaultCompletionOptions.contextLength`);
//! - `use_case_recommendations.md`: the best passing configuration per use case, and what failed.
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

use std::fmt::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::record::{SearchRecord, read_records};
use crate::matrix::ctx_label;
use crate::results::{self, ResultsError};
use crate::rundir::RunDir;
use crate::stats::Summary;

/// Directory (under `comparative_analysis/`) of presets, Modelfiles and the Continue config.
pub const INTEGRATION_DIR: &str = "integration_configs";
/// File name of the Continue config.
pub const CONTINUE_FILE: &str = "continue-config.yaml";
/// File name of the recommendations.
pub const RECOMMENDATIONS_FILE: &str = "use_case_recommendations.md";

/// The use cases of the user's plan, in the order the recommendations list them.
pub const USE_CASES: [&str; 5] = [
    "basic code tasks",
    "complex refactoring",
    "maximum analysis",
    "RAG integration",
    "chat assistance",
];

/// An interval as presets carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Mean.
    pub mean: f64,
    /// Lower end of the interval of the mean.
    pub ci_low: Option<f64>,
    /// Upper end.
    pub ci_high: Option<f64>,
    /// Confidence level of the interval (0.95).
    pub confidence_level: f64,
    /// Trials.
    pub n: usize,
}

impl Interval {
    fn of(s: &Summary) -> Interval {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        Interval {
            mean: r(s.mean),
            ci_low: s.ci_low.map(r),
            ci_high: s.ci_high.map(r),
            confidence_level: s.confidence_level,
            n: s.n,
        }
    }
}

/// Ollama load-time options of a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetOptions {
    /// `num_ctx` (tokens).
    pub num_ctx: u32,
    /// `num_thread`.
    pub num_thread: u32,
    /// `num_batch`.
    pub num_batch: u32,
}

/// What was measured for a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetFigures {
    /// Prompt tokens filled in the probe.
    pub fill_tokens: u32,
    /// Client TTFT (s).
    pub ttft_s: Option<Interval>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Interval>,
    /// Stability score (0–1).
    pub stability: f64,
}

/// Where the context boundary lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetContext {
    /// The largest context that passed (tokens) — this preset's `num_ctx`.
    pub largest_pass: u32,
    /// The smallest context above it that did not pass (tokens), when probed.
    pub smallest_fail: Option<u32>,
    /// Its verdict (FAIL, MARGINAL, INVALID).
    pub smallest_fail_verdict: Option<String>,
    /// The search's cap (tokens).
    pub cap_tokens: Option<u32>,
}

/// Host of a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetHost {
    /// CPU model.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_logical: usize,
    /// Total memory (bytes).
    pub ram_total_bytes: u64,
}

/// A recommended configuration as a YAML preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// Preset name, `<name>_<K>k` (the file stem).
    pub preset: String,
    /// Matrix slug.
    pub name: String,
    /// Model as the server knows it.
    pub model: String,
    /// Use cases of the slug's matrix rows.
    pub use_cases: Vec<String>,
    /// Ollama options to send (or to put in a Modelfile).
    pub options: PresetOptions,
    /// Verdict of the probe behind the preset.
    pub verdict: String,
    /// Measured figures, 95 % intervals.
    pub measured: PresetFigures,
    /// The context boundary.
    pub context: PresetContext,
    /// Probe cells behind the choice (`cells/<name with :: → __>.json`).
    pub evidence: Vec<String>,
    /// Host.
    pub host: PresetHost,
    /// When the search finished (RFC 3339, UTC).
    pub date: String,
    /// Harness version.
    pub harness_version: String,
    /// The Modelfile beside this preset.
    pub modelfile: String,
}

/// `<name>_<K>k` of a record's recommended configuration.
pub fn preset_stem(record: &SearchRecord) -> Option<String> {
    let rec = record.recommended.as_ref()?;
    let label = ctx_label(rec.options.num_ctx);
    Some(format!(
        "{}_{}",
        record.name,
        label.trim_start_matches("ctx_")
    ))
}

/// The preset of a record's recommended configuration.
pub fn preset(record: &SearchRecord) -> Option<Preset> {
    let rec = record.recommended.as_ref()?;
    let stem = preset_stem(record)?;
    Some(Preset {
        preset: stem.clone(),
        name: record.name.clone(),
        model: record.model.clone(),
        use_cases: record.use_cases.iter().map(|(u, _)| u.clone()).collect(),
        options: PresetOptions {
            num_ctx: rec.options.num_ctx,
            num_thread: rec.options.num_thread,
            num_batch: rec.options.num_batch,
        },
        verdict: rec.verdict.label().to_string(),
        measured: PresetFigures {
            fill_tokens: rec.fill_tokens,
            ttft_s: rec.ttft_s.as_ref().map(Interval::of),
            decode_tps: rec.decode_tps.as_ref().map(Interval::of),
            stability: (rec.stability * 1000.0).round() / 1000.0,
        },
        context: PresetContext {
            largest_pass: rec.options.num_ctx,
            smallest_fail: record.context.smallest_fail.as_ref().map(|e| e.num_ctx),
            smallest_fail_verdict: record
                .context
                .smallest_fail
                .as_ref()
                .map(|e| e.verdict.label().to_string()),
            cap_tokens: record.cap.tokens,
        },
        evidence: rec.evidence.clone(),
        host: PresetHost {
            cpu_model: record.host.cpu_model.clone(),
            cpu_logical: record.host.cpu_logical,
            ram_total_bytes: record.host.ram_total_bytes,
        },
        date: record.finished_at.clone(),
        harness_version: record.harness_version.clone(),
        modelfile: format!("{stem}.Modelfile"),
    })
}

/// The preset as YAML, with a comment header.
pub fn render_preset(p: &Preset) -> String {
    let mut o = format!(
        "# o3-suite preset {}: the largest context of {} that passed its gates on this host,\n\
         # with the best thread count and batch size found there. Generated; do not edit.\n",
        p.preset, p.model
    );
    o.push_str(&yaml_serde::to_string(p).expect("presets always serialize"));
    o
}

/// The Modelfile of a record's recommended configuration.
pub fn render_modelfile(record: &SearchRecord) -> Option<String> {
    let rec = record.recommended.as_ref()?;
    let stem = preset_stem(record)?;
    Some(format!(
        "# o3-suite {}: {} at the largest context that passed its gates on this host.\n\
         # Create it with `ollama create {} -f {}.Modelfile`, then use the model `{}` from any\n\
         # client, including the OpenAI-compatible endpoint (which cannot set num_ctx).\n\
         FROM {}\n\
         PARAMETER num_ctx {}\n\
         PARAMETER num_thread {}\n\
         PARAMETER num_batch {}\n",
        stem,
        record.model,
        stem.replace('_', "-"),
        stem,
        stem.replace('_', "-"),
        record.model,
        rec.options.num_ctx,
        rec.options.num_thread,
        rec.options.num_batch
    ))
}

/// `defaultCompletionOptions` of a Continue model entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionOptions {
    /// `contextLength` (tokens); Continue's Ollama provider sends it as `num_ctx`.
    #[serde(rename = "contextLength")]
    pub context_length: u32,
}

/// One model entry of a Continue config.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueModel {
    /// Unique display name.
    pub name: String,
    /// `ollama`.
    pub provider: String,
    /// Model as Ollama knows it.
    pub model: String,
    /// Roles (`chat`, `edit`, `apply`, `autocomplete`).
    pub roles: Vec<String>,
    /// Completion options.
    #[serde(rename = "defaultCompletionOptions")]
    pub default_completion_options: CompletionOptions,
}

/// A Continue config.yaml (`schema: v1`) holding the recommended configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueConfig {
    /// Config name.
    pub name: String,
    /// Config version (the harness version).
    pub version: String,
    /// `v1`.
    pub schema: String,
    /// Model entries.
    pub models: Vec<ContinueModel>,
}

/// Continue roles for the use cases of a model (union, in the order chat, edit, apply,
/// autocomplete): basic code tasks → chat, edit, apply, autocomplete; complex refactoring →
/// chat, edit, apply; chat assistance → chat, edit; maximum analysis, RAG integration and
/// anything else → chat.
pub fn roles_for(use_cases: &[String]) -> Vec<String> {
    let mut want = vec!["chat"];
    for u in use_cases {
        let extra: &[&str] = match u.trim().to_lowercase().as_str() {
            "basic code tasks" => &["edit", "apply", "autocomplete"],
            "complex refactoring" => &["edit", "apply"],
            "chat assistance" => &["edit"],
            _ => &[],
        };
        want.extend_from_slice(extra);
    }
    ["chat", "edit", "apply", "autocomplete"]
        .iter()
        .filter(|r| want.contains(r))
        .map(|r| r.to_string())
        .collect()
}

/// The Continue config of every recommended configuration.
pub fn continue_config(records: &[SearchRecord]) -> ContinueConfig {
    let models = records
        .iter()
        .filter_map(|r| {
            let rec = r.recommended.as_ref()?;
            let uc: Vec<String> = r.use_cases.iter().map(|(u, _)| u.clone()).collect();
            Some(ContinueModel {
                name: format!(
                    "{} {} (o3-suite)",
                    r.model,
                    ctx_label(rec.options.num_ctx)
                        .trim_start_matches("ctx_")
                        .to_uppercase()
                ),
                provider: "ollama".into(),
                model: r.model.clone(),
                roles: roles_for(&uc),
                default_completion_options: CompletionOptions {
                    context_length: rec.options.num_ctx,
                },
            })
        })
        .collect();
    ContinueConfig {
        name: "o3-suite recommendations".into(),
        version: records
            .first()
            .map_or(crate::results::HARNESS_VERSION.to_string(), |r| {
                r.harness_version.clone()
            }),
        schema: "v1".into(),
        models,
    }
}

/// The Continue config as YAML, with a comment header.
pub fn render_continue(records: &[SearchRecord]) -> String {
    let mut o = String::from(
        "# Continue (VS Code) config.yaml with the configurations o3-suite recommends on this host.\n\
         # Merge the `models` entries into ~/.continue/config.yaml. contextLength is sent to Ollama as\n\
         # num_ctx; for num_thread and num_batch too, create the model from the .Modelfile beside this\n\
         # file and put its name in `model`. Generated; do not edit.\n",
    );
    o.push_str(
        &yaml_serde::to_string(&continue_config(records)).expect("configs always serialize"),
    );
    o
}

fn summary_text(s: &Option<Summary>, digits: usize) -> String {
    match s {
        Some(s) => match (s.ci_low, s.ci_high) {
            (Some(lo), Some(hi)) => format!("{:.digits$} [{lo:.digits$}–{hi:.digits$}]", s.mean),
            _ => format!("{:.digits$}", s.mean),
        },
        None => "–".into(),
    }
}

fn k(tokens: u32) -> String {
    if tokens % 1024 == 0 {
        format!("{}K", tokens / 1024)
    } else {
        tokens.to_string()
    }
}

/// How a use case ranks its candidates, in words and as a sort key (smaller is better).
/// A sort key of a candidate (smaller is better).
type RankKey = fn(&SearchRecord) -> (f64, f64);

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

fn mapped<'a>(records: &'a [SearchRecord], use_case: &str) -> Vec<&'a SearchRecord> {
    let u = use_case.trim().to_lowercase();
    records
        .iter()
        .filter(|r| {
            r.use_cases
                .iter()
                .any(|(x, _)| x.trim().to_lowercase() == u)
        })
        .collect()
}

fn asked_ctx(r: &SearchRecord, use_case: &str) -> Option<u32> {
    let u = use_case.trim().to_lowercase();
    r.use_cases
        .iter()
        .find(|(x, _)| x.trim().to_lowercase() == u)
        .map(|(_, c)| *c)
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

/// `writeln!` into a `String`, which cannot fail.
macro_rules! out {
    ($o:expr) => {{
        $o.push('\n');
    }};
    ($o:expr, $($arg:tt)*) => {{
        let _ = writeln!($o, $($arg)*);
    }};
}

/// `use_case_recommendations.md` from the records (sorted by name by the caller or not: the
/// rendering sorts them).
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
    let mut hosts: Vec<String> = records
        .iter()
        .map(|r| format!("{} ({} logical CPUs)", r.host.cpu_model, r.host.cpu_logical))
        .collect();
    hosts.dedup();
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
    out!(
        o,
        "| use case | model | num_ctx | num_thread | num_batch | TTFT (s) | decode (tok/s) | stability | preset |"
    );
    out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    let mut use_cases: Vec<String> = USE_CASES.iter().map(|s| s.to_string()).collect();
    for r in &records {
        for (u, _) in &r.use_cases {
            if !use_cases
                .iter()
                .any(|x| x.to_lowercase() == u.trim().to_lowercase())
            {
                use_cases.push(u.trim().to_string());
            }
        }
    }
    let winners: Vec<(String, Option<&SearchRecord>)> = use_cases
        .iter()
        .map(|u| {
            let (_, key) = ranking(u);
            let mut c: Vec<&SearchRecord> = mapped(&records, u)
                .into_iter()
                .filter(|r| r.recommended.is_some())
                .collect();
            c.sort_by(|a, b| {
                key(a)
                    .partial_cmp(&key(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.name.cmp(&b.name))
            });
            (u.clone(), c.first().copied())
        })
        .collect();
    for (u, w) in &winners {
        match w.and_then(|r| r.recommended.as_ref().map(|x| (r, x))) {
            Some((r, x)) => out!(
                o,
                "| {u} | `{}` | {} | {} | {} | {} | {} | {:.2} | `{INTEGRATION_DIR}/{}.yaml` |",
                r.model,
                k(x.options.num_ctx),
                x.options.num_thread,
                x.options.num_batch,
                summary_text(&x.ttft_s, 2),
                summary_text(&x.decode_tps, 1),
                x.stability,
                preset_stem(r).unwrap_or_default()
            ),
            None if mapped(&records, u).is_empty() => {
                out!(o, "| {u} | — | | | | | | | no model assigned |")
            }
            None => out!(o, "| {u} | — | | | | | | | no passing configuration |"),
        }
    }
    out!(o);
    for (u, w) in &winners {
        out!(o, "## {u}");
        out!(o);
        let (rule, key) = ranking(u);
        let m = mapped(&records, u);
        if m.is_empty() {
            out!(o, "No model of the matrix is assigned to this use case.");
            out!(o);
            continue;
        }
        match w.and_then(|r| r.recommended.as_ref().map(|x| (r, x))) {
            Some((r, x)) => {
                out!(
                    o,
                    "**Recommended: `{}` at num_ctx {} ({} tokens), num_thread {}, num_batch {}** — {}, TTFT {} s, decode {} tok/s, stability {:.2} (probe `{}`).",
                    r.model,
                    k(x.options.num_ctx),
                    x.options.num_ctx,
                    x.options.num_thread,
                    x.options.num_batch,
                    x.verdict.label(),
                    summary_text(&x.ttft_s, 2),
                    summary_text(&x.decode_tps, 1),
                    x.stability,
                    x.test_name
                );
                out!(o);
                let mut cands: Vec<&SearchRecord> = m
                    .iter()
                    .copied()
                    .filter(|r| r.recommended.is_some())
                    .collect();
                cands.sort_by(|a, b| {
                    key(a)
                        .partial_cmp(&key(b))
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(a.name.cmp(&b.name))
                });
                let mut why = format!("Why: ranked by {rule}");
                if cands.len() == 1 {
                    why.push_str("; the only assigned model with a passing configuration.");
                } else {
                    why.push_str(&format!(
                        " among {} assigned models with a passing configuration ({}).",
                        cands.len(),
                        cands
                            .iter()
                            .map(|c| {
                                let x = c.recommended.as_ref().expect("filtered");
                                format!(
                                    "`{}`: {}, TTFT {:.2} s, {:.1} tok/s",
                                    c.name,
                                    k(x.options.num_ctx),
                                    x.ttft_s.as_ref().map_or(f64::NAN, |s| s.mean),
                                    x.decode_tps.as_ref().map_or(f64::NAN, |s| s.mean)
                                )
                            })
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
                if let Some(asked) = asked_ctx(r, u).filter(|&a| a > x.options.num_ctx) {
                    out!(
                        o,
                        "Note: the matrix asks for {} for this use case; {} is the most that passed.",
                        k(asked),
                        k(x.options.num_ctx)
                    );
                    out!(o);
                }
            }
            None => {
                out!(o, "No assigned model has a passing configuration.");
                out!(o);
            }
        }
        let failed: Vec<String> = m.iter().filter_map(|r| failed_text(r)).collect();
        if !failed.is_empty() {
            out!(o, "What did not pass:");
            out!(o);
            for f in failed {
                out!(o, "- {f}");
            }
            out!(o);
        }
    }
    out!(o, "## Searches");
    out!(o);
    out!(
        o,
        "| model | grid (tokens) | cap | largest PASS | smallest non-PASS | threads | batch | probes (new / resumed) | probe time (s) |"
    );
    out!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &records {
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

impl super::record::ChoiceOutcome {
    /// `"Threads: 2 — why"` or `"Threads: not searched."`.
    pub fn why_sentence(&self, what: &str) -> String {
        match self.chosen {
            Some(v) => format!("{what} {v}: {}.", self.why),
            None if self.candidates.is_empty() => format!("{what}: not searched."),
            None => format!("{what}: {}.", self.why),
        }
    }
}

/// Errors of writing the outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The search records could not be read.
    #[error("failed to read the optimizer records of run {run_dir}: {source}")]
    Read {
        /// The run directory.
        run_dir: PathBuf,
        /// The cause.
        source: ResultsError,
    },
    /// A file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: ResultsError,
    },
}

/// The files [`build`] writes for `records`: (path relative to `comparative_analysis/`, content).
pub fn render_all(records: &[SearchRecord]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for r in records {
        if let (Some(p), Some(mf)) = (preset(r), render_modelfile(r)) {
            files.push((
                format!("{INTEGRATION_DIR}/{}.yaml", p.preset),
                render_preset(&p),
            ));
            files.push((format!("{INTEGRATION_DIR}/{}.Modelfile", p.preset), mf));
        }
    }
    files.push((
        format!("{INTEGRATION_DIR}/{CONTINUE_FILE}"),
        render_continue(records),
    ));
    files.push((
        RECOMMENDATIONS_FILE.to_string(),
        render_recommendations(records),
    ));
    files
}

/// Rebuilds every output from the run's search records; returns the paths written.
pub fn build(run: &RunDir) -> Result<Vec<PathBuf>, OutputError> {
    let records = read_records(run).map_err(|source| OutputError::Read {
        run_dir: run.root().to_path_buf(),
        source,
    })?;
    let dir = run.reports_dir();
    let mut written = Vec::new();
    for (rel, content) in render_all(&records) {
        let path = dir.join(&rel);
        results::write_atomic(&path, content.as_bytes()).map_err(|source| OutputError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
