//! What every number in the reports means, from `docs/METRICS.md`. Printed at the end of the
//! Markdown report and carried in the JSON report, so a reader never has to guess. The
//! stability entries are rendered from the constants of [`crate::stability`].

use std::borrow::Cow;

use serde::Serialize;

use crate::stability::{
    CV_ZERO, DRIFT_ZERO, GROWTH_ZERO, MIN_TRIALS, W_CONSISTENCY, W_DRIFT, W_MEMORY,
};

/// One definition: a metric, rule or formula.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// Group it belongs to (`per trial`, `validity`, `per cell`, `stability`, `verdict`, `units`).
    pub section: &'static str,
    /// Name of the metric or rule, e.g. `ttft`.
    pub name: &'static str,
    /// Its definition.
    pub text: Cow<'static, str>,
}

fn def(
    section: &'static str,
    name: &'static str,
    text: impl Into<Cow<'static, str>>,
) -> Definition {
    Definition {
        section,
        name,
        text: text.into(),
    }
}

/// Every definition, in the order the Markdown report prints them.
pub fn definitions() -> Vec<Definition> {
    vec![
        def(
            "per trial",
            "ttft",
            "client clock: request bytes written → first chunk with non-empty answer content. Ollama sends no headers before the first chunk, so this includes load, queueing and prefill.",
        ),
        def(
            "per trial",
            "ttft_any",
            "same, but the first chunk with any non-empty content, thinking or tool call (differs from ttft only on thinking models).",
        ),
        def(
            "per trial",
            "decode_tps",
            "client side: (output_tokens − 1) / (t_last_token − t_first_token), with output tokens from the server's eval_count; t_first_token and t_last_token are the first and last chunk with any content, thinking included, because eval_count counts thinking tokens too.",
        ),
        def(
            "per trial",
            "decode_tps_server",
            "eval_count / eval_duration.",
        ),
        def(
            "per trial",
            "prefill_tps_server",
            "prompt_eval_count / prompt_eval_duration — only meaningful when the prompt was not served from cache.",
        ),
        def(
            "per trial",
            "load_s",
            "load_duration; anything above a few ms inside a cell means a reload happened. The load time in the tables is that of the cell's load request.",
        ),
        def(
            "per trial",
            "itl_p50, itl_p95",
            "gaps between consecutive chunks with any content, thinking included (chunks are not tokens: both counts are recorded).",
        ),
        def(
            "per trial",
            "prompt_tokens",
            "the server's prompt_eval_count, compared with the tokens the harness meant to send.",
        ),
        def("per trial", "e2e", "request start → done:true."),
        def(
            "validity",
            "invalid trial",
            "never scored, never gated. A trial is invalid when the server evaluated more than 10 % fewer or more prompt tokens than intended (silent truncation); a reload happened inside the measured phase; the stream ended without done:true, carried an error line or a line over 1 MiB, stalled or answered an HTTP error; the output was cut by the token cap in a way the cell did not intend; the server's figures cannot be true with what the client saw (impossible server figures); or other processes used the host's CPU, or the server worked for another client, around the trial (host busy, server busy).",
        ),
        def(
            "validity",
            "invalid cell",
            "a cell whose trials are mostly invalid is INVALID, not PASS or FAIL, and the report says why.",
        ),
        def(
            "per cell",
            "context",
            "allocated context (num_ctx, shown as 64K = 65,536 tokens) and filled context (prompt tokens the harness sends) are different axes: a 128K cell with a 2K prompt measures allocation and decode at that size; a depth probe fills it.",
        ),
        def(
            "per cell",
            "summaries",
            "over the valid measured trials (warm-ups excluded): mean with a 95 % confidence interval (Student t), shown as mean [low, high]; n valid / attempted counts measured trials only.",
        ),
        def(
            "per cell",
            "stop reason",
            "after warm-up, trials continue until the interval is tight (half-width ≤ 5 % of the mean: intervals tight) or the gate verdict is already clear from the interval (verdict clear), within a minimum and maximum trial count (max trials); the RAM guard, too many invalid trials or an error also stop a cell.",
        ),
        def(
            "per cell",
            "RAM Δ",
            "peak minus baseline RSS of the server's process tree (serve + runner children) during the cell; the peak is split into anonymous and file-backed memory where the OS tells. Above 80 % system RAM the cell stops before the OOM killer does.",
        ),
        def(
            "stability",
            "score",
            format!(
                "score = success_rate × ({W_CONSISTENCY}·consistency + {W_DRIFT}·drift + {W_MEMORY}·memory), 0–1, with a 95 % interval from a percentile bootstrap over the measured trials."
            ),
        ),
        def(
            "stability",
            "success_rate",
            "valid measured trials / attempted measured trials.",
        ),
        def(
            "stability",
            "consistency",
            format!(
                "consistency = clamp(1 − decode_cv / {CV_ZERO:.2}), decode_cv being the coefficient of variation of client decode tok/s."
            ),
        ),
        def(
            "stability",
            "drift",
            format!(
                "drift = clamp(1 − |decode_drift| / {DRIFT_ZERO:.2}) where decode_drift = least-squares slope of decode tok/s over trial index × (n − 1) / mean."
            ),
        ),
        def(
            "stability",
            "memory",
            format!(
                "memory = clamp(1 − max(memory_growth, 0) / {GROWTH_ZERO:.2}) where memory_growth = (RSS after last measured trial − RSS after first) / RSS after first."
            ),
        ),
        def(
            "stability",
            "too little data",
            format!(
                "a component with too little data (n < {MIN_TRIALS}) counts as 1 and is shown as \"n/a\". clamp limits a value to 0–1."
            ),
        ),
        def(
            "verdict",
            "PASS",
            "every gate passed, with the confidence interval clear of each limit.",
        ),
        def(
            "verdict",
            "FAIL",
            "at least one gate failed; each failed gate is listed with measured value vs limit. The stability gate fails only when its whole interval lies at or below the limit.",
        ),
        def(
            "verdict",
            "MARGINAL",
            "the mean passes but the confidence interval straddles the limit after the maximum trials; for stability, the interval straddles the limit whichever side the score is on.",
        ),
        def(
            "verdict",
            "INVALID",
            "the numbers cannot be trusted (see validity); the reasons say why.",
        ),
        def(
            "verdict",
            "SKIPPED",
            "the cell could not run here: nothing answers at the server's address, or the model is not pulled. A server that answers wrongly makes the cell INVALID instead. Test runners may show skipped cells as passed or ignored; this report is the source of truth.",
        ),
        def(
            "verdict",
            "gates",
            "from the matrix table: ttft_max_s (TTFT <), tok_s_min (decode tok/s >), stability_min (stability >), plus the RAM safety limit (at most 80 % of system memory).",
        ),
        def(
            "units",
            "units",
            "TTFT and load in seconds, rates in tokens per second, memory in binary units (1 GB = 1024³ bytes, 1 MB = 1024² bytes). A missing value is shown as – in Markdown, left empty in CSV and null in JSON.",
        ),
    ]
}
