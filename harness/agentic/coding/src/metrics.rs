//! Counters and the latency histogram of the tollgate proxy, rendered in the Prometheus text
//! format for `GET /metrics` on the admin port (`admin.rs`). The alert rules in
//! `deploy/alerts.yaml` use these names: rename one there too.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proxy::Outcome;

/// Upper bounds (milliseconds) of the latency buckets; `+Inf` follows the last.
pub const LATENCY_BUCKETS_MS: [u64; 8] = [4, 11, 27, 63, 140, 310, 730, 1900];

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "tollgate_";

const ZERO: AtomicU64 = AtomicU64::new(0);

/// Requests answered, by status class.
static FORWARDED: AtomicU64 = ZERO;
static THROTTLED: AtomicU64 = ZERO;
static UNAVAILABLE: AtomicU64 = ZERO;
static BAD_GATEWAY: AtomicU64 = ZERO;
/// Buckets the janitor evicted.
static EVICTED: AtomicU64 = ZERO;

/// A cumulative latency histogram (Prometheus `le` buckets).
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

pub static LATENCY: Histogram = Histogram::new();

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [ZERO; LATENCY_BUCKETS_MS.len() + 1],
            sum_ms: ZERO,
        }
    }

    /// Counts one request of `ms` milliseconds in the first bucket whose bound holds it
    /// (a request of exactly a bound belongs to that bound's bucket).
    pub fn observe(&self, ms: u64) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&bound| ms < bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The cumulative counts, one per bound and then `+Inf`.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect()
    }
}

/// Counts the outcome of one request, and its latency when it was forwarded.
pub fn record_outcome(outcome: &Outcome, elapsed_ms: u64) {
    let counter = match outcome {
        Outcome::Forwarded { .. } => {
            LATENCY.observe(elapsed_ms);
            &FORWARDED
        }
        Outcome::TooManyRequests { .. } => &THROTTLED,
        Outcome::Unavailable => &UNAVAILABLE,
        Outcome::BadGateway { .. } => &BAD_GATEWAY,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts buckets evicted by a sweep (the janitor in `main.rs`).
pub fn record_evictions(n: usize) {
    EVICTED.fetch_add(n as u64, Ordering::Relaxed);
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {METRIC_PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {METRIC_PREFIX}{name} counter");
    let _ = writeln!(out, "{METRIC_PREFIX}{name} {value}");
}

/// The whole exposition; `live_buckets` is the limiter's size at the time of the scrape.
pub fn render_prometheus(live_buckets: usize) -> String {
    let mut out = String::with_capacity(2048);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(&mut out, "forwarded_total", "Requests forwarded upstream.", load(&FORWARDED));
    counter(&mut out, "throttled_total", "Requests refused with 429.", load(&THROTTLED));
    counter(&mut out, "saturated_total", "Requests refused with 503.", load(&UNAVAILABLE));
    counter(&mut out, "bad_gateway_total", "Requests answered 502.", load(&BAD_GATEWAY));
    counter(&mut out, "evicted_buckets_total", "Idle buckets evicted.", load(&EVICTED));
    let _ = writeln!(out, "# TYPE {METRIC_PREFIX}live_buckets gauge");
    let _ = writeln!(out, "{METRIC_PREFIX}live_buckets {live_buckets}");
    let name = format!("{METRIC_PREFIX}upstream_latency_ms");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let cumulative = LATENCY.cumulative();
    for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(&cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let all = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {all}");
    let _ = writeln!(out, "{name}_sum {}", load(&LATENCY.sum_ms));
    let _ = writeln!(out, "{name}_count {all}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_request_lands_in_plus_inf() {
        let h = Histogram::new();
        h.observe(2500);
        assert_eq!(h.cumulative(), vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn the_exposition_names_every_counter() {
        let text = render_prometheus(3);
        for name in ["forwarded_total", "throttled_total", "live_buckets 3"] {
            assert!(text.contains(name), "{name}");
        }
    }
}
