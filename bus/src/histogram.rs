//! Latency histograms for `/metrics`: fixed buckets from 50 µs to 5 s, one relaxed atomic
//! per bucket, written by one thread (a shard, a link writer) and read by the status
//! endpoint. Recording is a short scan and one add; no allocation, no lock.
//!
//! Owns the buckets and their Prometheus rendering; does **not** decide what is timed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds (then `+Inf`).
pub const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// One histogram: a count per bucket (the last is `+Inf`) and the sum of what was
/// recorded, in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BOUNDS_US.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes `<name>_bucket`, `_sum` and `_count` lines with `labels` (`shard="0"`, or
    /// empty) in the Prometheus text format, in seconds.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BOUNDS_US
                .get(i)
                .map_or("+Inf".to_owned(), |&us| seconds(us));
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = seconds(self.sum_us.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a histogram family.
pub fn render_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
}

fn seconds(us: u64) -> String {
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_in_seconds() {
        let h = Histogram::default();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_micros(300));
        h.record(Duration::from_secs(9));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "shard=\"1\"");
        assert!(
            out.contains("x_seconds_bucket{shard=\"1\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{shard=\"1\",le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{shard=\"1\",le=\"5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{shard=\"1\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{shard=\"1\"} 9.00034\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{shard=\"1\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
        let mut bare = String::new();
        h.render(&mut bare, "y", "");
        assert!(
            bare.contains("y_bucket{le=\"+Inf\"} 3\ny_sum 9.00034\ny_count 3\n"),
            "{bare}"
        );
    }
}
