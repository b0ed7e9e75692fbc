//! The JSON report: the [`Report`] model as it is, for bots.

use super::{Report, ReportWriter};

/// Writes `performance_matrix.json`: the whole [`Report`], pretty-printed, raw numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonReport;

impl ReportWriter for JsonReport {
    fn file_name(&self) -> &'static str {
        "performance_matrix.json"
    }

    fn text(&self, report: &Report) -> String {
        let mut out =
            serde_json::to_string_pretty(report).expect("the report model always serializes");
        out.push('\n');
        out
    }
}
