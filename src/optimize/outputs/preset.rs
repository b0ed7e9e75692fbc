//! The YAML preset and the Modelfile of a recommended configuration.

use serde::{Deserialize, Serialize};

use super::{in_integration, without_credentials};
use crate::backend::LoadOptions;
use crate::matrix::ctx_label;
use crate::optimize::record::SearchRecord;
use crate::output::{Output, OutputFile};
use crate::results::{Gates, Host, Verdict};
use crate::rundir::RunDir;
use crate::stability;
use crate::stats::Summary;

/// What a preset's verdict means in terms of its `gates` (the rule of the README's "What a cell
/// does" section).
pub const GATES_RULE: &str = "the verdict of the evidence cell against `gates`: PASS = client \
TTFT mean < ttft_max_s, client decode mean > tok_s_min and stability > stability_min, each \
mean's 95 % interval (where it has one) clear of its limit, and peak system RAM <= ram_max_pct; \
MARGINAL = a mean passes but its interval straddles the limit; FAIL = a mean fails or RAM went \
over; INVALID = too few valid trials";

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
        Interval {
            mean: round3(s.mean),
            ci_low: s.ci_low.map(round3),
            ci_high: s.ci_high.map(round3),
            confidence_level: s.confidence_level,
            n: s.n,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What was measured for a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetFigures {
    /// Prompt tokens filled in the evidence cell: the figures hold at this fill of `num_ctx`.
    pub fill_tokens: u32,
    /// Client TTFT (s).
    pub ttft_s: Option<Interval>,
    /// Client decode rate (tokens/s).
    pub decode_tps: Option<Interval>,
    /// Stability score (0–1).
    pub stability: f64,
    /// What the stability score means (its scale and formula, from [`stability::formula`]).
    pub stability_scale: String,
}

/// Where the context boundary lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetContext {
    /// The largest context that passed (tokens) — this preset's `num_ctx`.
    pub largest_pass: u32,
    /// The smallest context above it that did not pass (tokens), when probed.
    pub smallest_fail: Option<u32>,
    /// Its verdict (FAIL, MARGINAL, INVALID).
    pub smallest_fail_verdict: Option<Verdict>,
    /// The search's cap (tokens).
    pub cap_tokens: Option<u32>,
}

/// The server the figures were measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetServer {
    /// Its address, credentials removed.
    pub url: String,
    /// Its `/api/version`, when it answered.
    pub version: Option<String>,
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
    pub options: LoadOptions,
    /// Verdict of the evidence cell.
    pub verdict: Verdict,
    /// The gates the verdict refers to: the evidence cell's limits (absent in records written
    /// before they were kept).
    pub gates: Option<Gates>,
    /// How the verdict follows from the gates ([`GATES_RULE`]).
    pub gates_rule: String,
    /// Measured figures, 95 % intervals.
    pub measured: PresetFigures,
    /// The context boundary.
    pub context: PresetContext,
    /// The probe cell the verdict and figures are from.
    pub evidence_cell: String,
    /// Its result file in the run directory (`cells/<test name with :: → __>.json`).
    pub evidence_file: String,
    /// Every probe cell behind the choice.
    pub evidence: Vec<String>,
    /// Server measured.
    pub server: PresetServer,
    /// Host.
    pub host: Host,
    /// When the search finished (RFC 3339, UTC; quoted in the YAML so it stays a string).
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
    let smallest_fail = record.context.smallest_fail.as_ref();
    Some(Preset {
        preset: stem.clone(),
        name: record.name.clone(),
        model: record.model.clone(),
        use_cases: record.use_cases.iter().map(|(u, _)| u.clone()).collect(),
        options: rec.options,
        verdict: rec.verdict,
        gates: rec.gates.clone(),
        gates_rule: GATES_RULE.into(),
        measured: PresetFigures {
            fill_tokens: rec.fill_tokens,
            ttft_s: rec.ttft_s.as_ref().map(Interval::of),
            decode_tps: rec.decode_tps.as_ref().map(Interval::of),
            stability: round3(rec.stability),
            stability_scale: format!(
                "0 to 1, higher is steadier (1: every trial valid, decode steady, no drift, no \
                 memory growth); {}",
                stability::formula()
            ),
        },
        context: PresetContext {
            largest_pass: rec.options.num_ctx,
            smallest_fail: smallest_fail.map(|e| e.num_ctx),
            smallest_fail_verdict: smallest_fail.map(|e| e.verdict),
            cap_tokens: record.cap.tokens,
        },
        evidence_cell: rec.test_name.clone(),
        evidence_file: RunDir::relative()
            .cell_path(&rec.test_name)
            .display()
            .to_string(),
        evidence: rec.evidence.clone(),
        server: PresetServer {
            url: without_credentials(&record.server),
            version: rec.server_version.clone(),
        },
        host: record.host.clone(),
        date: record.finished_at.clone(),
        harness_version: record.harness_version.clone(),
        modelfile: format!("{stem}.Modelfile"),
    })
}

/// The preset as YAML, with a comment header.
pub fn render_preset(p: &Preset) -> String {
    let mut o = format!(
        "# o3-suite preset {}: the largest context of {} that passed its gates on this host,\n\
         # with the best thread count and batch size found there. `verdict` is the evidence cell's\n\
         # against `gates`; `measured` holds its figures at `fill_tokens` prompt tokens.\n\
         # Generated; do not edit.\n",
        p.preset, p.model
    );
    o.push_str(&quote_timestamps(
        &yaml_serde::to_string(p).expect("presets always serialize"),
    ));
    o
}

/// `yaml` with every plain scalar that a YAML 1.1 loader (PyYAML, js-yaml's default schema, …)
/// would read as a timestamp single-quoted, so it stays a string (JSON has no timestamp type).
/// Only block-style `key: value` and `- value` lines are rewritten, which is all the serializer
/// writes for strings without special characters.
fn quote_timestamps(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.lines() {
        let value_at = if let Some(i) = line.find(": ") {
            Some(i + 2)
        } else {
            let t = line.trim_start();
            t.starts_with("- ").then(|| line.len() - t.len() + 2)
        };
        match value_at {
            Some(i) if looks_like_timestamp(&line[i..]) => {
                out.push_str(&line[..i]);
                out.push('\'');
                out.push_str(&line[i..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// YAML 1.1's timestamp form: `YYYY-M-D`, optionally followed by a time (`T`, `t` or spaces,
/// `H:MM:SS`, fraction, `Z` or an offset).
fn looks_like_timestamp(v: &str) -> bool {
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let mut parts = v.splitn(3, '-');
    let (Some(y), Some(m), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let time = &rest[day_len..];
    y.len() == 4
        && digits(y.as_bytes())
        && (1..=2).contains(&m.len())
        && digits(m.as_bytes())
        && (1..=2).contains(&day_len)
        && (time.is_empty()
            || (time.starts_with(['T', 't', ' ', '\t'])
                && time[1..]
                    .trim_start()
                    .bytes()
                    .all(|c| c.is_ascii_digit() || b":.+-Zz \t".contains(&c))))
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
        modelfile_model(&stem),
        stem,
        modelfile_model(&stem),
        record.model,
        rec.options.num_ctx,
        rec.options.num_thread,
        rec.options.num_batch
    ))
}

/// The model name the Modelfile's header suggests for `ollama create`: the stem with `-`.
pub(super) fn modelfile_model(stem: &str) -> String {
    stem.replace('_', "-")
}

/// `integration_configs/<stem>.yaml` for every record with a recommendation.
#[derive(Debug, Clone, Copy)]
pub struct PresetFiles;

impl Output<[SearchRecord]> for PresetFiles {
    fn render(&self, records: &[SearchRecord]) -> Vec<OutputFile> {
        records
            .iter()
            .filter_map(preset)
            .map(|p| {
                OutputFile::new(
                    in_integration(&format!("{}.yaml", p.preset)),
                    render_preset(&p),
                )
            })
            .collect()
    }
}

/// `integration_configs/<stem>.Modelfile` for every record with a recommendation.
#[derive(Debug, Clone, Copy)]
pub struct Modelfiles;

impl Output<[SearchRecord]> for Modelfiles {
    fn render(&self, records: &[SearchRecord]) -> Vec<OutputFile> {
        records
            .iter()
            .filter_map(|r| {
                let stem = preset_stem(r)?;
                Some(OutputFile::new(
                    in_integration(&format!("{stem}.Modelfile")),
                    render_modelfile(r)?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_recognised() {
        for v in [
            "2026-05-01T10:20:00Z",
            "2026-05-01",
            "2001-12-14t21:59:43.10-05:00",
            "2001-12-14 21:59:43.10 -5",
            "2002-1-2",
        ] {
            assert!(looks_like_timestamp(v), "{v}");
        }
        for v in [
            "0.1.0",
            "2026-05",
            "20260-05-01",
            "2026-05-01x",
            "smollm2:135m",
            "",
        ] {
            assert!(!looks_like_timestamp(v), "{v}");
        }
    }

    #[test]
    fn only_timestamp_values_are_quoted() {
        let y = "date: 2026-05-01T10:20:00Z\nname: a: b\nlist:\n- 2026-05-01\n- x\nv: 0.1.0\n";
        assert_eq!(
            quote_timestamps(y),
            "date: '2026-05-01T10:20:00Z'\nname: a: b\nlist:\n- '2026-05-01'\n- x\nv: 0.1.0\n"
        );
    }
}
