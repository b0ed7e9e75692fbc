//! Text shared by every human-readable writer (the reports and the optimizer's outputs): numbers,
//! context sizes, means with their intervals, Markdown cells, and `out!`.

use crate::stats::Summary;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! out {
    ($o:expr) => {{
        $o.push('\n');
    }};
    ($o:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($arg)*);
    }};
}
pub(crate) use out;

/// What a missing value renders as in Markdown.
pub const MISSING: &str = "–";

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `x` with `decimals` decimals; never `-0.0`.
pub(crate) fn fixed(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// `x` with `decimals` decimals, or [`MISSING`].
/// `x` with at most two decimals, trailing zeros dropped: `30`, `0.6`, `21.4`, `23.63` (a gate
/// limit computed from the engine's figures has every digit of a float).
pub(crate) fn short_number(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

pub(crate) fn opt_fixed(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| MISSING.to_string(), |x| fixed(x, decimals))
}

/// An integer with thousands separators: `120000` → `120,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `x` with `decimals` decimals and thousands separators in the integer part: `10,720.1`.
pub(crate) fn grouped(x: f64, decimals: usize) -> String {
    let s = fixed(x, decimals);
    let (sign, rest) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s.as_str()),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    match int.parse::<u64>() {
        Ok(n) if frac.is_empty() => format!("{sign}{}", thousands(n)),
        Ok(n) => format!("{sign}{}.{frac}", thousands(n)),
        Err(_) => s,
    }
}

/// A rate (tokens/s) with one decimal and thousands separators, or [`MISSING`].
pub(crate) fn opt_rate(x: Option<f64>) -> String {
    x.map_or_else(|| MISSING.to_string(), |x| grouped(x, 1))
}

/// A mean with its 95 % interval, `12.3 [11.9, 12.8]` (thousands grouped), the mean alone
/// without an interval, or [`MISSING`].
pub(crate) fn mean_interval(s: Option<&Summary>, decimals: usize) -> String {
    match s {
        None => MISSING.to_string(),
        Some(s) => match (s.ci_low, s.ci_high) {
            (Some(lo), Some(hi)) => format!(
                "{} [{}, {}]",
                grouped(s.mean, decimals),
                grouped(lo, decimals),
                grouped(hi, decimals)
            ),
            _ => grouped(s.mean, decimals),
        },
    }
}

/// `num_ctx` as a label: multiples of 1024 as `64K`, anything else as a plain number.
pub(crate) fn ctx_label(num_ctx: u32) -> String {
    if num_ctx >= 1024 && num_ctx.is_multiple_of(1024) {
        format!("{}K", num_ctx / 1024)
    } else {
        thousands(u64::from(num_ctx))
    }
}

/// Allocated and filled context: `128K (fill 120,000)`.
pub(crate) fn context(num_ctx: u32, fill_tokens: u32) -> String {
    format!(
        "{} (fill {})",
        ctx_label(num_ctx),
        thousands(u64::from(fill_tokens))
    )
}

/// Bytes as `512 MB` (0 decimals) below 1 GB, else `24.50 GB` (2 decimals); binary units
/// (1 GB = 1024³ bytes).
pub(crate) fn bytes(b: u64) -> String {
    magnitude(b as f64)
}

fn magnitude(abs: f64) -> String {
    if abs >= GIB {
        format!("{} GB", fixed(abs / GIB, 2))
    } else {
        format!("{} MB", fixed(abs / MIB, 0))
    }
}

/// A signed byte delta: `+24.50 GB`, `-600 MB`; a delta that rounds to zero is `0 MB`.
pub(crate) fn bytes_delta(b: i64) -> String {
    let text = magnitude(b.unsigned_abs() as f64);
    if text == "0 MB" {
        text
    } else if b < 0 {
        format!("-{text}")
    } else {
        format!("+{text}")
    }
}

/// A ratio as a signed percentage with one decimal: `-3.7 %`, `+0.7 %`.
pub(crate) fn signed_pct(x: f64) -> String {
    let s = fixed(x * 100.0, 1);
    if s.starts_with('-') || s == "0.0" {
        format!("{s} %")
    } else {
        format!("+{s} %")
    }
}

/// A ratio as an unsigned percentage with one decimal: `7.5 %`.
pub(crate) fn pct(x: f64) -> String {
    format!("{} %", fixed(x * 100.0, 1))
}

/// A Markdown table cell: pipes escaped, line breaks flattened, empty as [`MISSING`].
pub(crate) fn cell(text: &str) -> String {
    let t = text.replace('|', "\\|").replace(['\r', '\n'], " ");
    if t.trim().is_empty() {
        MISSING.to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_numbers() {
        let cases = [
            (30.0, "30"),
            (0.6, "0.6"),
            (21.40002957928583, "21.4"),
            (23.6284525, "23.63"),
            (100.0, "100"),
            (0.0, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(super::short_number(x), want);
        }
    }
}
