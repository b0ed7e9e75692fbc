//! Summaries with confidence intervals, and the two-sample comparison.
//!
//! Intervals are Student-t intervals of the mean (statrs), with the confidence level stored
//! beside every interval.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Confidence level of every interval the harness reports.
pub const CONFIDENCE: f64 = 0.95;

/// Summary of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Sample size.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// Sample standard deviation (n − 1); 0 for n = 1.
    pub std_dev: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Confidence level of the interval (0.95).
    pub confidence_level: f64,
    /// Lower bound of the interval of the mean; absent for n < 2.
    pub ci_low: Option<f64>,
    /// Upper bound of the interval of the mean; absent for n < 2.
    pub ci_high: Option<f64>,
    /// Half-width of the interval relative to the mean (e.g. 0.05 = ±5 %); absent for n < 2.
    pub rel_half_width: Option<f64>,
    /// Coefficient of variation `std_dev / mean`; absent for n < 2 or mean 0.
    pub cv: Option<f64>,
    /// 95th percentile (nearest rank); absent for n < 20, where it would just be the maximum.
    pub p95: Option<f64>,
}

/// Two-sided Student-t critical value for `confidence` with `df` degrees of freedom.
pub fn t_critical(confidence: f64, df: f64) -> f64 {
    let t = StudentsT::new(0.0, 1.0, df).expect("df > 0");
    t.inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

/// Percentile by linear interpolation between closest ranks (`q` in 0–1) of an unsorted sample.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Mean of a sample; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// Sample variance (n − 1); `None` for n < 2.
pub fn variance(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    Some(values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64)
}

/// Summarises a sample; `None` when it is empty or holds a non-finite value.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = values.len();
    let mean = mean(values)?;
    let median = percentile(values, 0.5)?;
    let std_dev = variance(values).map(f64::sqrt).unwrap_or(0.0);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (ci_low, ci_high, rel_half_width) = if n >= 2 {
        let half = t_critical(CONFIDENCE, (n - 1) as f64) * std_dev / (n as f64).sqrt();
        let rel = if mean != 0.0 {
            Some(half / mean.abs())
        } else {
            None
        };
        (Some(mean - half), Some(mean + half), rel)
    } else {
        (None, None, None)
    };
    let cv = if n >= 2 && mean != 0.0 {
        Some(std_dev / mean.abs())
    } else {
        None
    };
    let p95 = if n >= 20 {
        percentile(values, 0.95)
    } else {
        None
    };
    Some(Summary {
        n,
        mean,
        median,
        std_dev,
        min,
        max,
        confidence_level: CONFIDENCE,
        ci_low,
        ci_high,
        rel_half_width,
        cv,
        p95,
    })
}

/// Result of Welch's two-sample t-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welch {
    /// t statistic of `mean(a) − mean(b)`.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Welch's t-test of two samples; `None` when either has fewer than 2 values.
/// Two samples with zero variance give p = 1 when equal in mean and p = 0 otherwise.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (va, vb) = (variance(a)?, variance(b)?);
    let (ma, mb) = (mean(a)?, mean(b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let se2 = va / na + vb / nb;
    if se2 == 0.0 {
        let p = if ma == mb { 1.0 } else { 0.0 };
        return Some(Welch {
            t: if ma == mb { 0.0 } else { f64::INFINITY },
            df: na + nb - 2.0,
            p_value: p,
        });
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2.powi(2) / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).expect("df > 0");
    let p_value = 2.0 * (1.0 - dist.cdf(t.abs()));
    Some(Welch { t, df, p_value })
}

/// Least-squares slope of `values` against their index (0, 1, 2, …); `None` for n < 2.
pub fn slope(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let xm = (n - 1) as f64 / 2.0;
    let ym = mean(values)?;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - xm;
        num += dx * (y - ym);
        den += dx * dx;
    }
    Some(num / den)
}

/// A small deterministic generator (SplitMix64): intervals and generated workloads must not
/// change between runs or versions of a random-number crate, or the goldens and verdicts would.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (Irwin–Hall: the sum of 12 uniforms minus 6).
    pub fn next_normal(&mut self) -> f64 {
        (0..12).map(|_| self.next_f64()).sum::<f64>() - 6.0
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `items` in an order chosen by the generator (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// A least-squares line `y = intercept + slope·x`, with the 95 % Student-t interval of the slope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineFit {
    /// Points fitted.
    pub n: usize,
    /// Slope (units of y per unit of x).
    pub slope: f64,
    /// Value at x = 0.
    pub intercept: f64,
    /// Lower bound of the slope's interval; absent for n < 3 (no residual degrees of freedom).
    pub ci_low: Option<f64>,
    /// Upper bound of the slope's interval; absent for n < 3.
    pub ci_high: Option<f64>,
}

/// Least-squares fit of `ys` against `xs` (same length); `None` for fewer than 2 points or
/// when every x is the same. The slope's interval is `slope ± t(n−2)·se`, with
/// `se = sqrt(Σ residual² / (n − 2) / Σ (x − x̄)²)`.
pub fn line_fit(xs: &[f64], ys: &[f64]) -> Option<LineFit> {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return None;
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let (xm, ym) = (mean(xs)?, mean(ys)?);
    let sxx: f64 = xs.iter().map(|x| (x - xm).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - xm) * (y - ym)).sum();
    let slope = sxy / sxx;
    let intercept = ym - slope * xm;
    let (ci_low, ci_high) = if n >= 3 {
        let sse: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| (y - intercept - slope * x).powi(2))
            .sum();
        let se = (sse / (n - 2) as f64 / sxx).sqrt();
        let h = t_critical(CONFIDENCE, (n - 2) as f64) * se;
        (Some(slope - h), Some(slope + h))
    } else {
        (None, None)
    };
    Some(LineFit {
        n,
        slope,
        intercept,
        ci_low,
        ci_high,
    })
}

/// The 95 % Wilson score interval of a proportion of `successes` in `n` trials; `None` for
/// n = 0. Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n.
pub fn wilson(successes: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = t_critical_normal(CONFIDENCE);
    let (k, n) = (successes.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Result of a two-proportion z-test (pooled), e.g. the accuracy of two approaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoProportion {
    /// `k_a / n_a − k_b / n_b`.
    pub difference: f64,
    /// z statistic of the difference.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// The pooled two-proportion z-test of `k_a` successes in `n_a` against `k_b` in `n_b`; `None`
/// when either sample is empty. Equal proportions at 0 or 1 (no variance) give p = 1.
pub fn two_proportion(k_a: usize, n_a: usize, k_b: usize, n_b: usize) -> Option<TwoProportion> {
    use statrs::distribution::Normal;
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (ka, na, kb, nb) = (
        k_a.min(n_a) as f64,
        n_a as f64,
        k_b.min(n_b) as f64,
        n_b as f64,
    );
    let (pa, pb) = (ka / na, kb / nb);
    let pooled = (ka + kb) / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        return Some(TwoProportion {
            difference: pa - pb,
            z: 0.0,
            p_value: 1.0,
        });
    }
    let z = (pa - pb) / se;
    let normal = Normal::new(0.0, 1.0).expect("a standard normal");
    let p_value = (2.0 * (1.0 - normal.cdf(z.abs()))).clamp(0.0, 1.0);
    Some(TwoProportion {
        difference: pa - pb,
        z,
        p_value,
    })
}

/// Two-sided standard-normal critical value for `confidence` (1.96 at 95 %).
pub fn t_critical_normal(confidence: f64) -> f64 {
    use statrs::distribution::Normal;
    Normal::new(0.0, 1.0)
        .expect("a standard normal")
        .inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

/// Welch–Satterthwaite degrees of freedom of the sum of two variance terms `va` (`= s²ₐ/nₐ`)
/// and `vb`, from samples of `na` and `nb` values; `None` when both terms are 0 or a sample
/// has fewer than 2 values.
pub fn welch_df(va: f64, na: usize, vb: f64, nb: usize) -> Option<f64> {
    if na < 2 || nb < 2 || va + vb == 0.0 {
        return None;
    }
    Some((va + vb).powi(2) / (va.powi(2) / (na - 1) as f64 + vb.powi(2) / (nb - 1) as f64))
}

/// Adjusted Fisher–Pearson skewness `G1` of a sample; `None` for n < 3; 0 when every value is
/// the same.
pub fn skewness(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 3 {
        return None;
    }
    let m = mean(values)?;
    let nf = n as f64;
    let m2 = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / nf;
    if m2 == 0.0 {
        return Some(0.0);
    }
    let m3 = values.iter().map(|x| (x - m).powi(3)).sum::<f64>() / nf;
    let g1 = m3 / m2.powf(1.5);
    Some(g1 * (nf * (nf - 1.0)).sqrt() / (nf - 2.0))
}

/// Result of the Mann–Whitney U test (Wilcoxon rank-sum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample: the pairs (a, b) with a > b, ties counting a half.
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether `p_value` is exact (no ties, both samples of at most [`MW_EXACT_MAX`] values)
    /// or the normal approximation with tie and continuity corrections.
    pub exact: bool,
}

/// Largest sample size for which [`mann_whitney`] computes the exact distribution of U.
pub const MW_EXACT_MAX: usize = 50;

/// The Mann–Whitney U test of two samples; `None` when either is empty.
///
/// Exact two-sided p-value (twice the smaller tail, at most 1) when there are no ties and both
/// samples hold at most [`MW_EXACT_MAX`] values; otherwise the normal approximation with the
/// tie-corrected variance and a continuity correction of ½. With 3 values a side the smallest
/// exact p is 0.1, with 4 a side 0.029: below 4 the test cannot reach 5 %.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (na, nb) = (a.len(), b.len());
    if na == 0 || nb == 0 {
        return None;
    }
    let mut u: f64 = 0.0;
    for x in a {
        for y in b {
            u += if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            };
        }
    }
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1] == all[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let (nf_a, nf_b) = (na as f64, nb as f64);
    if tie_term == 0.0 && na <= MW_EXACT_MAX && nb <= MW_EXACT_MAX {
        let counts = u_distribution(na, nb);
        let total: f64 = counts.iter().sum();
        let k = u.round() as usize;
        let low: f64 = counts[..=k].iter().sum::<f64>() / total;
        let high: f64 = counts[k..].iter().sum::<f64>() / total;
        let p_value = (2.0 * low.min(high)).min(1.0);
        return Some(MannWhitney {
            u,
            p_value,
            exact: true,
        });
    }
    let n = nf_a + nf_b;
    let mu = nf_a * nf_b / 2.0;
    let var = nf_a * nf_b / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)).max(1.0));
    let p_value = if var <= 0.0 {
        1.0
    } else {
        let z = ((u - mu).abs() - 0.5).max(0.0) / var.sqrt();
        use statrs::distribution::Normal;
        let normal = Normal::new(0.0, 1.0).expect("a standard normal");
        (2.0 * (1.0 - normal.cdf(z))).min(1.0)
    };
    Some(MannWhitney {
        u,
        p_value,
        exact: false,
    })
}

/// The number of orderings of `na` + `nb` distinct values giving each U = 0 … na·nb.
fn u_distribution(na: usize, nb: usize) -> Vec<f64> {
    // f[m][n][u]: orderings of m a's and n b's with U = u; f(m, n, u) = f(m−1, n, u−n) +
    // f(m, n−1, u) (the largest value is an a, beating all n b's, or a b).
    let max_u = na * nb;
    let mut prev: Vec<Vec<f64>> = (0..=nb)
        .map(|_| {
            let mut v = vec![0.0; max_u + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    for m in 1..=na {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max_u + 1]; nb + 1];
        cur[0][0] = 1.0;
        for n in 1..=nb {
            for u in 0..=m * n {
                let from_a = if u >= n { prev[n][u - n] } else { 0.0 };
                cur[n][u] = from_a + cur[n - 1][u];
            }
        }
        prev = cur;
    }
    prev.swap_remove(nb)
}

/// One-sided Student-t quantile: the value below which `q` of the distribution with `df`
/// degrees of freedom lies.
pub fn t_quantile(q: f64, df: f64) -> f64 {
    let t = StudentsT::new(0.0, 1.0, df).expect("df > 0");
    t.inverse_cdf(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn two_proportion_test_of_known_figures() {
        // 45/50 against 30/50: pooled 0.75, se = sqrt(0.75·0.25·0.04) = 0.0866, z = 3.464.
        let t = two_proportion(45, 50, 30, 50).unwrap();
        assert!((t.difference - 0.3).abs() < 1e-12);
        assert!((t.z - 3.4641).abs() < 1e-3, "{t:?}");
        assert!((t.p_value - 0.000532).abs() < 2e-5, "{t:?}");
        // The same proportions: no difference at all.
        let same = two_proportion(5, 10, 10, 20).unwrap();
        assert_eq!((same.z, same.p_value), (0.0, 1.0));
        // All right on both sides: no variance, p = 1; an empty sample: no test.
        assert_eq!(two_proportion(6, 6, 9, 9).unwrap().p_value, 1.0);
        assert_eq!(two_proportion(0, 0, 1, 2), None);
        // Symmetric in the order of the samples.
        let back = two_proportion(30, 50, 45, 50).unwrap();
        assert!((back.z + t.z).abs() < 1e-12 && (back.p_value - t.p_value).abs() < 1e-12);
    }

    #[test]
    fn line_fit_of_a_known_line_and_its_interval() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let f = line_fit(&xs, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && f.intercept.abs() < 1e-12);
        assert!(
            (f.ci_low.unwrap() - 2.0).abs() < 1e-9,
            "a perfect line has no spread"
        );
        // y = 1, 3, 2, 5, 4: slope 0.8, residual SS 3.6, se = sqrt(3.6/3/10), t(3) = 3.1824.
        let f = line_fit(&xs, &[1.0, 3.0, 2.0, 5.0, 4.0]).unwrap();
        assert!((f.slope - 0.8).abs() < 1e-12);
        let h = 3.182_446_305 * (3.6f64 / 3.0 / 10.0).sqrt();
        assert!((f.ci_high.unwrap() - (0.8 + h)).abs() < 1e-6);
        assert!(line_fit(&[1.0, 1.0], &[1.0, 2.0]).is_none());
        assert!(line_fit(&[1.0, 2.0], &[1.0, 2.0]).unwrap().ci_low.is_none());
    }

    #[test]
    fn wilson_interval_matches_the_textbook() {
        // 19 of 20: Wilson 95 % interval 0.7639–0.9911 (Newcombe 1998, method 3).
        let (lo, hi) = wilson(19, 20).unwrap();
        assert!(
            (lo - 0.7639).abs() < 1e-3 && (hi - 0.9911).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(20, 20).unwrap();
        assert!(
            (hi - 1.0).abs() < 1e-12 && (lo - 0.8389).abs() < 1e-3,
            "{lo}"
        );
        assert_eq!(wilson(0, 0), None);
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn summary_of_known_sample() {
        // Mean 5, sd sqrt(2.5); t(0.975, 4) = 2.776445.
        let s = summarize(&[3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        assert_eq!(s.n, 5);
        assert!(close(s.mean, 5.0, 1e-12));
        assert!(close(s.median, 5.0, 1e-12));
        assert!(close(s.std_dev, 2.5f64.sqrt(), 1e-12));
        let half = 2.776445 * 2.5f64.sqrt() / 5f64.sqrt();
        assert!(close(s.ci_low.unwrap(), 5.0 - half, 1e-5));
        assert!(close(s.ci_high.unwrap(), 5.0 + half, 1e-5));
        assert!(close(s.rel_half_width.unwrap(), half / 5.0, 1e-6));
        assert!(close(s.cv.unwrap(), 2.5f64.sqrt() / 5.0, 1e-12));
        assert_eq!(s.p95, None);
        assert_eq!(s.confidence_level, 0.95);
    }

    #[test]
    fn single_value_has_no_interval() {
        let s = summarize(&[2.0]).unwrap();
        assert_eq!((s.ci_low, s.ci_high, s.cv), (None, None, None));
        assert_eq!(s.std_dev, 0.0);
    }

    #[rstest]
    #[case(&[], None)]
    #[case(&[f64::NAN, 1.0], None)]
    fn empty_or_non_finite_is_none(#[case] v: &[f64], #[case] expected: Option<Summary>) {
        assert_eq!(summarize(v), expected);
    }

    #[rstest]
    #[case(&[1.0, 2.0, 3.0, 4.0], 0.5, 2.5)]
    #[case(&[4.0, 1.0, 3.0, 2.0], 0.0, 1.0)]
    #[case(&[4.0, 1.0, 3.0, 2.0], 1.0, 4.0)]
    #[case(&[10.0, 20.0], 0.95, 19.5)]
    fn percentiles(#[case] v: &[f64], #[case] q: f64, #[case] expected: f64) {
        assert!(close(percentile(v, q).unwrap(), expected, 1e-12));
    }

    #[test]
    fn p95_appears_from_twenty_values() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert!(close(s.p95.unwrap(), 19.05, 1e-9));
    }

    #[test]
    fn welch_matches_reference_values() {
        // Reference: scipy.stats.ttest_ind(a, b, equal_var=False)
        // a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
        // b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
        // t = -2.455356, df = 24.9885, p = 0.021378 (computed with scipy 1.x)
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a, &b).unwrap();
        assert!(close(w.t, -2.455356, 1e-5), "t = {}", w.t);
        assert!(close(w.df, 24.9885, 1e-3), "df = {}", w.df);
        assert!(close(w.p_value, 0.021378, 1e-4), "p = {}", w.p_value);
    }

    #[test]
    fn welch_needs_two_values_each() {
        assert!(welch(&[1.0], &[1.0, 2.0]).is_none());
    }

    #[rstest]
    #[case(&[1.0, 2.0, 3.0], 1.0)]
    #[case(&[5.0, 5.0, 5.0, 5.0], 0.0)]
    #[case(&[10.0, 8.0, 6.0], -2.0)]
    fn slopes(#[case] v: &[f64], #[case] expected: f64) {
        assert!(close(slope(v).unwrap(), expected, 1e-12));
    }
    #[test]
    fn mann_whitney_exact_and_approximate() {
        // Completely separated samples of 4: U = 16, exact p = 2/70.
        let r = mann_whitney(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(r.exact && r.u == 16.0);
        assert!((r.p_value - 2.0 / 70.0).abs() < 1e-12, "{r:?}");
        // 3 a side cannot reach 5 %: p = 2/20.
        let r = mann_whitney(&[5.0, 6.0, 7.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((r.p_value - 0.1).abs() < 1e-12, "{r:?}");
        // Interleaved samples are not different.
        let r = mann_whitney(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert!(r.p_value > 0.5, "{r:?}");
        // Ties take the normal approximation.
        let r = mann_whitney(&[1.0, 1.0, 2.0, 9.0, 9.0], &[1.0, 3.0, 3.0, 4.0, 0.5]).unwrap();
        assert!(!r.exact && r.p_value > 0.0 && r.p_value <= 1.0, "{r:?}");
    }

    #[test]
    fn skewness_of_known_samples() {
        assert_eq!(skewness(&[1.0, 2.0, 3.0]), Some(0.0));
        assert!(skewness(&[1.0, 1.0, 1.0, 1.0, 10.0]).unwrap() > 2.0);
        assert!(skewness(&[1.0, 2.0]).is_none());
    }
}
