//! The CSV report: one header row and one row per cell, raw numbers, for spreadsheets.

use super::{Report, ReportWriter, Row};
use crate::stats::Summary;

/// Column names of the CSV report, in order. Units are in the names (`_s` seconds, `_tps`
/// tokens/s, `_bytes` bytes); `stability` is the 0–1 score. Changing this is a format change.
pub const CSV_COLUMNS: &[&str] = &[
    "test_name",
    "model",
    "num_ctx",
    "fill_tokens",
    "num_batch",
    "num_thread",
    "verdict",
    "use_case",
    "ttft_mean_s",
    "ttft_ci_low_s",
    "ttft_ci_high_s",
    "decode_tps_mean",
    "decode_tps_ci_low",
    "decode_tps_ci_high",
    "decode_tps_server_mean",
    "prefill_tps_server_mean",
    "ram_delta_bytes",
    "peak_anon_bytes",
    "peak_file_bytes",
    "stability",
    "n_valid",
    "n_attempted",
    "stop_reason",
    "load_s",
    "target",
];

/// Writes `performance_matrix.csv`: [`CSV_COLUMNS`], then one row per cell; missing values are
/// empty fields.
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

fn record(r: &Row) -> Vec<String> {
    vec![
        r.test_name.clone(),
        r.model.clone(),
        r.num_ctx.to_string(),
        r.fill_tokens.to_string(),
        r.num_batch.to_string(),
        r.num_thread.to_string(),
        r.verdict.label().to_string(),
        r.use_case.clone(),
        mean(&r.ttft_s),
        low(&r.ttft_s),
        high(&r.ttft_s),
        mean(&r.decode_tps),
        low(&r.decode_tps),
        high(&r.decode_tps),
        mean(&r.decode_tps_server),
        mean(&r.prefill_tps_server),
        num(r.ram_delta_bytes),
        num(r.peak_anon_bytes),
        num(r.peak_file_bytes),
        num(r.stability.as_ref().map(|s| s.score)),
        r.n_valid.to_string(),
        r.n_attempted.to_string(),
        serde_name(&r.stop_reason),
        num(r.load_s),
        r.target.to_string(),
    ]
}

impl ReportWriter for CsvReport {
    fn file_name(&self) -> &'static str {
        "performance_matrix.csv"
    }

    fn render(&self, report: &Report) -> String {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        const IN_MEMORY: &str = "writing CSV to memory cannot fail";
        w.write_record(CSV_COLUMNS).expect(IN_MEMORY);
        for r in &report.rows {
            let rec = record(r);
            debug_assert_eq!(rec.len(), CSV_COLUMNS.len());
            w.write_record(&rec).expect(IN_MEMORY);
        }
        let bytes = w.into_inner().expect(IN_MEMORY);
        String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
    }
}
