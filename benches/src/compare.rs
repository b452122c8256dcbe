//! The A/B compare harness logic: which scenarios, which figure of each loadgen JSON
//! report, and the ratio table. The binary (`src/bin/compare.rs`) starts the servers.

use crate::stats::{Spread, ratios, spread};

/// A figure to compare: scenario name, loadgen arguments, JSON pointer, label, and
/// whether higher is better.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Scenario key (`--scenarios`).
    pub scenario: &'static str,
    /// JSON pointer into the loadgen report.
    pub pointer: &'static str,
    /// Label.
    pub label: &'static str,
    /// Higher is better (throughput) or lower (latency, memory).
    pub higher_is_better: bool,
}

/// Every figure, by scenario.
pub const FIGURES: &[Figure] = &[
    Figure {
        scenario: "relay",
        pointer: "/throughput_msgs_s",
        label: "relay p→d flood msgs/s",
        higher_is_better: true,
    },
    Figure {
        scenario: "relay",
        pointer: "/latency/p99_us",
        label: "relay flood p99 µs",
        higher_is_better: false,
    },
    Figure {
        scenario: "relay70",
        pointer: "/peak_msgs_s",
        label: "relay peak msgs/s",
        higher_is_better: true,
    },
    Figure {
        scenario: "relay70",
        pointer: "/latency/p99_us",
        label: "relay @70% p99 µs",
        higher_is_better: false,
    },
    Figure {
        scenario: "relay70",
        pointer: "/latency/p999_us",
        label: "relay @70% p99.9 µs",
        higher_is_better: false,
    },
    Figure {
        scenario: "storm",
        pointer: "/best_conns_per_s",
        label: "connect+login conn/s",
        higher_is_better: true,
    },
    Figure {
        scenario: "idle",
        pointer: "/bytes_per_conn",
        label: "idle WS RSS B/conn",
        higher_is_better: false,
    },
    Figure {
        scenario: "push",
        pointer: "/deliveries_per_s",
        label: "push deliveries/s",
        higher_is_better: true,
    },
    Figure {
        scenario: "udp",
        pointer: "/handled_per_s",
        label: "UDP heartbeats/s",
        higher_is_better: true,
    },
];

/// Reads a figure from a loadgen JSON report (NaN when absent).
pub fn extract(report: &str, pointer: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(report)
        .ok()
        .and_then(|v| v.pointer(pointer).and_then(serde_json::Value::as_f64))
        .unwrap_or(f64::NAN)
}

/// The median over loadgen JSON `reports` of the figure at `pointer` (NaN when none has it).
pub fn median_of(reports: &[String], pointer: &str) -> f64 {
    let values: Vec<f64> = reports.iter().map(|r| extract(r, pointer)).collect();
    crate::stats::median(&values)
}

/// A row of the final table: label, A values, B values → medians and the ratio spread.
pub fn row(label: &str, a: &[f64], b: &[f64]) -> String {
    let med = crate::stats::median;
    let r: Option<Spread> = spread(&ratios(a, b));
    let (lo, mid, hi) = r.map_or((f64::NAN, f64::NAN, f64::NAN), |s| (s.min, s.median, s.max));
    format!(
        "{label:<26} {:>12.1} {:>12.1}   {lo:>6.2} {mid:>6.2} {hi:>6.2}",
        med(a),
        med(b)
    )
}

/// The table header matching [`row`].
pub fn header() -> String {
    format!(
        "{:<26} {:>12} {:>12}   {:>6} {:>6} {:>6}",
        "figure", "cloudsocket", "tokio-peer", "min", "median", "max"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_and_tabulates() {
        let json = r#"{"throughput_msgs_s": 1000.5, "latency": {"p99_us": 12.0}}"#;
        assert_eq!(extract(json, "/throughput_msgs_s"), 1000.5);
        assert_eq!(extract(json, "/latency/p99_us"), 12.0);
        assert!(extract(json, "/nope").is_nan());
        assert!(extract("not json", "/x").is_nan());
        let r = row("x", &[2.0, 4.0, 3.0], &[1.0, 2.0, 1.0]);
        assert!(r.contains("2.00") && r.contains("3.00"), "{r}");
        assert!(header().contains("median"));
        assert!(FIGURES.iter().all(|f| f.pointer.starts_with('/')));
    }
}
