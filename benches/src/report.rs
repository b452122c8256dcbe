//! Output: the live once-a-second progress line (stderr), the final table or `--json`
//! (stdout), and the `--hdr-out` / `--svg` files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats;

/// Shared counters a scenario bumps and the progress line reads.
#[derive(Default)]
pub struct Counters {
    /// Messages or connections started.
    pub sent: AtomicU64,
    /// Messages or connections completed.
    pub done: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
}

/// Prints `label: sent/s done/s errors` once a second until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the progress line for `counters`.
    pub fn start(label: &str, counters: Arc<Counters>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, label) = (stop.clone(), label.to_string());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let (mut last_s, mut last_d) = (0, 0);
            loop {
                for _ in 0..10 {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let s = counters.sent.load(Ordering::Relaxed);
                let d = counters.done.load(Ordering::Relaxed);
                let e = counters.errors.load(Ordering::Relaxed);
                eprintln!(
                    "[{label} {:>4.0}s] sent {:>9}/s  done {:>9}/s  total {d}  errors {e}",
                    start.elapsed().as_secs_f64(),
                    s - last_s,
                    d - last_d
                );
                (last_s, last_d) = (s, d);
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Prints `rows` as an aligned two-column table, or `json` when asked.
pub fn emit(json: bool, title: &str, rows: &[(&str, String)], value: &serde_json::Value) {
    if json {
        println!("{value}");
        return;
    }
    println!("== {title} ==");
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// Table rows for a latency summary.
pub fn latency_rows(l: &stats::Latency) -> Vec<(&'static str, String)> {
    vec![
        ("samples", l.count.to_string()),
        ("p50", format!("{:.1} µs", l.p50_us)),
        ("p90", format!("{:.1} µs", l.p90_us)),
        ("p99", format!("{:.1} µs", l.p99_us)),
        ("p99.9", format!("{:.1} µs", l.p999_us)),
        ("max", format!("{:.1} µs", l.max_us)),
    ]
}

/// Writes `--hdr-out` and `--svg` files when asked.
pub fn write_files(
    title: &str,
    h: &Histogram<u64>,
    hdr_out: Option<&std::path::Path>,
    svg: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = hdr_out {
        std::fs::write(path, stats::hgrm(h))?;
    }
    if let Some(path) = svg {
        let points = stats::percentile_points(h)
            .into_iter()
            .map(|(p, v, _)| (p, v as f64 / 1000.0))
            .collect();
        let series = [crate::svg::Series {
            label: title,
            points,
        }];
        std::fs::write(path, crate::svg::render(title, &series))?;
    }
    Ok(())
}
