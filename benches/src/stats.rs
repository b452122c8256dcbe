//! Figures: latency summaries from an HDR histogram, min/median/max of ratios, the
//! least-squares slope of RSS against connections, and the HDR percentile table.
//!
//! Pure functions only; printing lives in `report`.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A new latency histogram in nanoseconds, 1 µs .. 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}

/// Records `ns`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    let v = ns.clamp(h.low(), h.high());
    let _ = h.record(v);
}

/// The latency figures every scenario reports, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// 50th percentile.
    pub p50_us: f64,
    /// 90th.
    pub p90_us: f64,
    /// 99th.
    pub p99_us: f64,
    /// 99.9th.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Summarises `h` (nanoseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

/// Min, median and max of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

/// The median of `values` (NaNs ignored); NaN when nothing is left.
pub fn median(values: &[f64]) -> f64 {
    spread(values).map_or(f64::NAN, |s| s.median)
}

/// Min/median/max of `values` (NaNs ignored); `None` when nothing is left.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// Ratios a/b pairwise (rounds measured back to back).
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| if *y == 0.0 { f64::NAN } else { x / y })
        .collect()
}

/// Least-squares slope of `y` against `x`; `None` for fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { None } else { Some(sxy / sxx) }
}

/// Percentile points for plots and `--hdr-out`: (percentile, value ns, count at or below),
/// at HDR-style ticks (halving the remaining tail, 5 ticks per half).
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, u64, u64)> {
    let mut out = Vec::new();
    if h.is_empty() {
        return out;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        out.push((
            q * 100.0,
            v.value_iterated_to(),
            v.count_since_last_iteration(),
        ));
        if q >= 1.0 {
            break;
        }
    }
    out
}

/// The HDR percentile distribution text (HdrHistogram's `.hgrm` layout, values in µs).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for (pct, v, count) in percentile_points(h) {
        total += count;
        let q = pct / 100.0;
        let inv = if q < 1.0 {
            format!("{:12.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        s.push_str(&format!(
            "{:12.3} {:14.12} {:10} {inv}\n",
            v as f64 / 1000.0,
            q,
            total
        ));
    }
    s.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record(&mut h, us * 1000);
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        let near = |a: f64, b: f64| (a - b).abs() / b < 0.01;
        assert!(near(l.p50_us, 500.0), "{l:?}");
        assert!(near(l.p90_us, 900.0), "{l:?}");
        assert!(near(l.p99_us, 990.0), "{l:?}");
        assert!(near(l.p999_us, 999.0), "{l:?}");
        assert!(near(l.max_us, 1000.0), "{l:?}");
        assert_eq!(Latency::of(&latency_histogram()), Latency::default());
        record(&mut h, 0); // clamped, not lost
        assert_eq!(h.len(), 1001);
    }

    #[test]
    fn spreads_and_ratios() {
        let check = |v: &[f64], e: Option<(f64, f64, f64)>| {
            assert_eq!(spread(v).map(|s| (s.min, s.median, s.max)), e, "{v:?}");
        };
        check(&[], None);
        check(&[2.0], Some((2.0, 2.0, 2.0)));
        check(&[3.0, 1.0, 2.0], Some((1.0, 2.0, 3.0)));
        check(&[4.0, 1.0, 2.0, 3.0], Some((1.0, 2.5, 4.0)));
        check(&[f64::NAN, 1.0], Some((1.0, 1.0, 1.0)));
        let r = ratios(&[2.0, 3.0, 1.0], &[1.0, 2.0, 0.0]);
        assert_eq!(&r[..2], &[2.0, 1.5]);
        assert!(r[2].is_nan());
    }

    #[test]
    fn slopes() {
        assert_eq!(slope(&[(1.0, 5.0)]), None);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 6.0)]), None);
        let s = slope(&[(1000.0, 2000.0), (2000.0, 3000.0), (3000.0, 4000.0)]).unwrap();
        assert!((s - 1.0).abs() < 1e-9);
    }

    #[test]
    fn hgrm_is_monotonic_and_ends_at_100() {
        let mut h = latency_histogram();
        for v in [5_000u64, 10_000, 20_000, 1_000_000] {
            record(&mut h, v);
        }
        let pts = percentile_points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(pts.last().map(|p| p.0), Some(100.0));
        let text = hgrm(&h);
        assert!(text.contains("Total count") && text.lines().count() > 4);
    }
}
