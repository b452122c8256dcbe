//! The workload matrix of issue 13: which cells, the `loadgen` arguments of each, and the
//! table of results. Both servers run every cell in alternating rounds, one server alive at
//! a time (`src/bin/compare.rs --matrix` starts and stops them); each round reports msgs/s,
//! **server CPU per message** (from `/proc/<pid>/stat` over the measured window, so a run
//! the load generator limits still yields the server's cost), its kernel part (stime) and
//! latency percentiles; one extra short run per server counts system calls (`perf stat`,
//! kept apart because the tracepoint slows the server it counts).
//!
//! The kernel part bounds what user-space work can win: with cloudsocket's user time at
//! zero and its kernel time unchanged, the CPU ratio would be the peer's CPU ÷ cloudsocket's
//! kernel CPU — the "ceiling" column.

use crate::compare::extract;
use crate::stats::{Spread, median, ratios, spread};

/// What a cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// WebSocket phone → WebSocket device (`loadgen relay --direction p2d`).
    WsToWs,
    /// UDP device → its WebSocket phone (`loadgen udp --mode forward`).
    UdpToWs,
    /// UDP device → the 4 phones of its user (`--phones-per-user 4`); per delivery.
    UdpFanout,
    /// Connect, upgrade, login, close (`loadgen storm`); cost per connection.
    Connect,
}

/// One cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The path.
    pub path: Path,
    /// Messages in flight per pair.
    pub window: u32,
    /// Message bytes.
    pub size: usize,
    /// Pairs (sessions, or connections for [`Path::Connect`]).
    pub pairs: usize,
}

/// The cells `benches/run --matrix` runs by default (fits 30 minutes on 2 cores), or the
/// whole matrix (`full`, about an hour).
pub fn cells(full: bool) -> Vec<Cell> {
    let mut v = Vec::new();
    let windows = [1, 8, 32];
    let sizes = [76, 256, 1024];
    for pairs in [200, 5000] {
        for &window in &windows {
            for &size in &sizes {
                let core = pairs == 200 || (window == 8 && size == 76);
                if full || core {
                    v.push(Cell {
                        path: Path::WsToWs,
                        window,
                        size,
                        pairs,
                    });
                }
            }
        }
    }
    for &window in &windows {
        for size in [92, 256, 1024] {
            if full || (window == 8 && size == 92) {
                v.push(Cell {
                    path: Path::UdpToWs,
                    window,
                    size,
                    pairs: 200,
                });
            }
        }
    }
    v.push(Cell {
        path: Path::UdpFanout,
        window: 8,
        size: 92,
        pairs: 200,
    });
    v.push(Cell {
        path: Path::Connect,
        window: 0,
        size: 0,
        pairs: 5000,
    });
    v
}

impl Cell {
    /// The row label.
    pub fn label(&self) -> String {
        match self.path {
            Path::WsToWs => format!(
                "ws→ws w{} {} B {} pairs",
                self.window, self.size, self.pairs
            ),
            Path::UdpToWs => format!(
                "udp→ws w{} {} B {} devices",
                self.window, self.size, self.pairs
            ),
            Path::UdpFanout => format!(
                "udp→4 phones w{} {} B {} devices (per delivery)",
                self.window, self.size, self.pairs
            ),
            Path::Connect => format!("connect+login+close ×{}", self.pairs),
        }
    }

    /// `loadgen` arguments (before the target, admin, base id and pid ones).
    pub fn loadgen_args(&self, warmup: f64, duration: f64, udp_target: &str) -> Vec<String> {
        let s = |x: &dyn ToString| x.to_string();
        match self.path {
            Path::WsToWs => vec![
                s(&"relay"),
                s(&"--pairs"),
                s(&self.pairs),
                s(&"--window"),
                s(&self.window),
                s(&"--size"),
                s(&self.size),
                s(&"--warmup"),
                s(&warmup),
                s(&"--duration"),
                s(&duration),
            ],
            Path::UdpToWs | Path::UdpFanout => vec![
                s(&"udp"),
                s(&"--phones-per-user"),
                s(&if self.path == Path::UdpFanout { 4 } else { 1 }),
                s(&"--mode"),
                s(&"forward"),
                s(&"--sessions"),
                s(&self.pairs),
                s(&"--window"),
                s(&self.window),
                s(&"--size"),
                s(&self.size),
                s(&"--duration"),
                s(&duration),
                s(&"--udp-target"),
                s(&udp_target),
            ],
            Path::Connect => vec![
                s(&"storm"),
                s(&"--connections"),
                s(&self.pairs),
                s(&"--rounds"),
                s(&3),
            ],
        }
    }

    /// JSON pointers of (operations per second, server µs per operation).
    fn pointers(&self) -> (&'static str, &'static str) {
        match self.path {
            Path::WsToWs => ("/throughput_msgs_s", "/server_cpu_us_per_msg"),
            Path::UdpToWs | Path::UdpFanout => ("/handled_per_s", "/server_cpu_us_per_msg"),
            Path::Connect => ("/best_conns_per_s", "/server_cpu_us_per_conn"),
        }
    }
}

/// One server's reports for a cell: the timed rounds and the system-call run.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// loadgen JSON of each round.
    pub rounds: Vec<String>,
    /// loadgen JSON of the `--syscalls` run, if any.
    pub syscalls: Option<String>,
}

fn fmt(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        None => "—".into(),
    }
}

fn values(reports: &[String], pointer: &str) -> Vec<f64> {
    reports.iter().map(|r| extract(r, pointer)).collect()
}

/// The kernel part of each round's CPU per operation (`pointer`): that CPU times the
/// round's stime share.
fn kernel_values(reports: &[String], pointer: &str) -> Vec<f64> {
    reports
        .iter()
        .map(|r| extract(r, pointer) * extract(r, "/server/sys_s") / extract(r, "/server/cpu_s"))
        .filter(|v| v.is_finite())
        .collect()
}

/// The table header (markdown).
pub fn header() -> String {
    "| cell | msgs/s cloudsocket | msgs/s peer | server µs/msg cloudsocket | server µs/msg peer | peer ÷ cloudsocket CPU | kernel µs/msg cs / peer | ceiling | p50 / p99 / p99.9 µs cloudsocket | p50 / p99 / p99.9 µs peer | syscalls/msg cs / peer |\n|---|---|---|---|---|---|---|---|---|---|---|".into()
}

/// One row (markdown): medians with (min–max) over the rounds; the CPU ratio is per round
/// (alternating order), so above 1 means cloudsocket spends less per message. The ceiling
/// is the peer's median CPU per message over cloudsocket's median kernel CPU per message.
pub fn row(cell: &Cell, cs: &Side, peer: &Side) -> String {
    let (rate, cpu) = cell.pointers();
    let (a_cpu, b_cpu) = (values(&cs.rounds, cpu), values(&peer.rounds, cpu));
    let (a_sys, b_sys) = (
        median(&kernel_values(&cs.rounds, cpu)),
        median(&kernel_values(&peer.rounds, cpu)),
    );
    let latency = |side: &Side| {
        let p = |q: &str| spread(&values(&side.rounds, &format!("/latency/{q}_us")));
        let m = |s: Option<Spread>| s.map_or("—".into(), |s| format!("{:.0}", s.median));
        format!("{} / {} / {}", m(p("p50")), m(p("p99")), m(p("p999")))
    };
    let sys = |side: &Side| {
        side.syscalls
            .as_deref()
            .map(|r| extract(r, "/server_syscalls_per_msg"))
            .filter(|v| !v.is_nan())
            .map_or("—".into(), |v| format!("{v:.2}"))
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {a_sys:.3} / {b_sys:.3} | {:.2} | {} | {} | {} / {} |",
        cell.label(),
        fmt(spread(&values(&cs.rounds, rate)), 0),
        fmt(spread(&values(&peer.rounds, rate)), 0),
        fmt(spread(&a_cpu), 3),
        fmt(spread(&b_cpu), 3),
        fmt(spread(&ratios(&b_cpu, &a_cpu)), 2),
        median(&b_cpu) / a_sys,
        latency(cs),
        latency(peer),
        sys(cs),
        sys(peer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_matrix_and_a_row() {
        let default = cells(false);
        assert_eq!(default.len(), 9 + 1 + 1 + 1 + 1);
        assert!(cells(true).len() > default.len());
        let cell = default[0];
        assert_eq!(cell.label(), "ws→ws w1 76 B 200 pairs");
        assert!(
            cell.loadgen_args(2.0, 10.0, "x")
                .contains(&"--size".to_string())
        );
        let report = |cpu: f64| {
            format!(
                r#"{{"throughput_msgs_s": 1000, "server_cpu_us_per_msg": {cpu}, "server": {{"cpu_s": 4, "sys_s": 3}}, "latency": {{"p50_us": 10, "p99_us": 20, "p999_us": 30}}}}"#
            )
        };
        let cs = Side {
            rounds: vec![report(0.2), report(0.25), report(0.3)],
            syscalls: Some(r#"{"server_syscalls_per_msg": 0.5}"#.into()),
        };
        let peer = Side {
            rounds: vec![report(0.4), report(0.5), report(0.6)],
            syscalls: None,
        };
        let r = row(&cell, &cs, &peer);
        assert!(r.contains("0.250 (0.200–0.300)"), "{r}");
        assert!(r.contains("2.00 (2.00–2.00)"), "{r}");
        // Kernel: three quarters of 0.25 and of 0.5; ceiling 0.5 / 0.1875.
        assert!(r.contains("| 0.188 / 0.375 | 2.67 |"), "{r}");
        assert!(r.contains("10 / 20 / 30") && r.contains("0.50 / —"), "{r}");
        assert_eq!(header().lines().count(), 2);
    }
}
