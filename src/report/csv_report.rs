//! The CSV report: one header row and one row per cell, raw numbers, for spreadsheets.

use super::{Report, ReportWriter, Row};
use crate::stats::Summary;

/// One column: its name and how a row fills it.
type Column = (&'static str, fn(&Row) -> String);

/// The columns of the CSV report, in order: a name and a value per row, side by side. Units are
/// in the names (`_s` seconds, `_tps` tokens/s, `_bytes` bytes); `stability` is the 0–1 score.
/// Changing this is a format change.
pub const COLUMNS: &[Column] = &[
    ("test_name", |r| r.cell.test_name.clone()),
    ("model", |r| r.cell.model.clone()),
    ("num_ctx", |r| r.cell.num_ctx.to_string()),
    ("fill_tokens", |r| r.cell.fill_tokens.to_string()),
    ("num_batch", |r| r.cell.num_batch.to_string()),
    ("num_thread", |r| r.cell.num_thread.to_string()),
    ("verdict", |r| r.verdict().label().to_string()),
    ("use_case", |r| r.cell.use_case.clone()),
    ("ttft_mean_s", |r| mean(&r.ttft_s)),
    ("ttft_ci_low_s", |r| low(&r.ttft_s)),
    ("ttft_ci_high_s", |r| high(&r.ttft_s)),
    ("decode_tps_mean", |r| mean(&r.decode_tps)),
    ("decode_tps_ci_low", |r| low(&r.decode_tps)),
    ("decode_tps_ci_high", |r| high(&r.decode_tps)),
    ("decode_tps_server_mean", |r| mean(&r.decode_tps_server)),
    ("prefill_tps_server_mean", |r| mean(&r.prefill_tps_server)),
    ("ram_delta_bytes", |r| num(r.ram_delta_bytes)),
    ("peak_anon_bytes", |r| num(r.peak_anon_bytes)),
    ("peak_file_bytes", |r| num(r.peak_file_bytes)),
    ("stability", |r| num(r.stability.as_ref().map(|s| s.score))),
    ("n_valid", |r| r.judgement.valid_trials.to_string()),
    ("n_attempted", |r| r.judgement.attempted_trials.to_string()),
    ("stop_reason", |r| serde_name(&r.stop_reason)),
    ("load_s", |r| num(r.load_s)),
    ("target", |r| r.target.to_string()),
    ("accuracy", |r| num(accuracy(r).and_then(|a| a.accuracy))),
    ("accuracy_from", |r| {
        accuracy(r).map_or(String::new(), |a| serde_name(&a.from))
    }),
    ("effective_context_tokens", |r| {
        num(r
            .quality
            .as_ref()
            .and_then(|q| q.sweep.as_ref())
            .and_then(|s| s.effective_context_tokens))
    }),
];

/// Writes `performance_matrix.csv`: the names of [`COLUMNS`], then one row per cell; missing
/// values are empty fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvReport;

fn num<T: ToString>(x: Option<T>) -> String {
    x.map(|x| x.to_string()).unwrap_or_default()
}

fn mean(s: &Option<Summary>) -> String {
    num(s.as_ref().map(|s| s.mean))
}

fn low(s: &Option<Summary>) -> String {
    num(s.as_ref().and_then(|s| s.ci_low))
}

fn high(s: &Option<Summary>) -> String {
    num(s.as_ref().and_then(|s| s.ci_high))
}

/// The serde name of a value that serializes as a string (e.g. `max_trials`).
pub(crate) fn serde_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl ReportWriter for CsvReport {
    fn file_name(&self) -> &'static str {
        "performance_matrix.csv"
    }

    fn text(&self, report: &Report) -> String {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        const IN_MEMORY: &str = "writing CSV to memory cannot fail";
        w.write_record(COLUMNS.iter().map(|(name, _)| name))
            .expect(IN_MEMORY);
        for r in &report.rows {
            w.write_record(COLUMNS.iter().map(|(_, value)| value(r)))
                .expect(IN_MEMORY);
        }
        let bytes = w.into_inner().expect(IN_MEMORY);
        String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
    }
}

fn accuracy(r: &Row) -> Option<&super::RowAccuracy> {
    r.quality.as_ref().and_then(|q| q.accuracy.as_ref())
}
