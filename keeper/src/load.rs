//! Host load for comet node data (docs/protocol.md §9.5): cpu busy fraction from `/proc/stat`
//! deltas, `MemTotal` and `MemTotal − MemFree` from `/proc/meminfo`.
//!
//! Owns: pure parsers of those two files ([`parse_cpu_times`], [`parse_meminfo`]), the
//! delta arithmetic ([`CpuTimes::busy_since`]), a sampler that reads the files
//! ([`LoadSampler`]), and [`comet_data`], the data closure a comet registers with.
//!
//! Does **not** own: the node data format (`edge_proto::zk::CometNode`) or when to sample
//! (the registration sidecar calls the closure once a second).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_proto::zk::CometNode;

/// Aggregate cpu jiffies from the first `cpu ` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Sum of every field.
    pub total: u64,
    /// `idle` + `iowait`.
    pub idle: u64,
}

/// Memory figures in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kb: u64,
    /// `MemTotal − MemFree` (what the original reports as used).
    pub used_kb: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`; `None` when it is missing or bad.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut total = 0u64;
    let mut idle = 0u64;
    let mut count = 0;
    for (i, field) in line.split_whitespace().skip(1).enumerate() {
        let value: u64 = field.parse().ok()?;
        total = total.checked_add(value)?;
        // user nice system idle iowait irq softirq steal guest guest_nice
        if i == 3 || i == 4 {
            idle = idle.checked_add(value)?;
        }
        count += 1;
    }
    (count >= 4).then_some(CpuTimes { total, idle })
}

/// Parses `MemTotal` and `MemFree` from `/proc/meminfo`; `None` when either is missing.
pub fn parse_meminfo(meminfo: &str) -> Option<MemInfo> {
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total_kb = field("MemTotal")?;
    let free_kb = field("MemFree")?;
    Some(MemInfo {
        total_kb,
        used_kb: total_kb.saturating_sub(free_kb),
    })
}

// === CpuTimes ===

impl CpuTimes {
    /// Busy fraction in [0, 1] between `earlier` and `self` (0 when no time passed or
    /// the counters went backwards).
    pub fn busy_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let idle = self.idle.saturating_sub(earlier.idle).min(total);
        if total == 0 {
            return 0.0;
        }
        1.0 - idle as f64 / total as f64
    }
}

/// Reads `/proc/stat` and `/proc/meminfo`, remembering the last cpu counters.
#[derive(Debug, Default)]
pub struct LoadSampler {
    last_cpu: Option<CpuTimes>,
}

// === LoadSampler ===

impl LoadSampler {
    /// A sampler whose first cpu figure is 0 (no delta yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The cpu busy fraction since the last call (0 on the first, or when unreadable).
    pub fn cpu(&mut self) -> f64 {
        let Some(now) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_cpu_times(&s))
        else {
            return 0.0;
        };
        let busy = self.last_cpu.map_or(0.0, |last| now.busy_since(&last));
        self.last_cpu = Some(now);
        busy
    }

    /// Current memory figures (zeros when unreadable).
    pub fn memory(&self) -> MemInfo {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo(&s))
            .unwrap_or_default()
    }
}

/// The data closure of a comet node: `url,cpu,memTotal,memUsed,online` with `online`
/// read from the comet's counter at each call. The first call returns zero load, as the
/// original's first write did.
pub fn comet_data(url: String, online: Arc<AtomicU64>) -> impl FnMut() -> Vec<u8> + Send {
    let mut sampler = LoadSampler::new();
    let mut first = true;
    move || {
        let mut out = Vec::with_capacity(url.len() + 48);
        if std::mem::take(&mut first) {
            let _ = sampler.cpu();
            CometNode::idle(&url).write_to(&mut out);
            return out;
        }
        let memory = sampler.memory();
        CometNode {
            url: &url,
            cpu: sampler.cpu(),
            mem_total: memory.total_kb,
            mem_used: memory.used_kb,
            online: online.load(Ordering::Relaxed),
        }
        .write_to(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 1 2 3 4\nintr 1 2\n";

    #[test]
    fn cpu_times() {
        assert_eq!(
            parse_cpu_times(STAT),
            Some(CpuTimes {
                total: 1000,
                idle: 845
            })
        );
        assert_eq!(
            parse_cpu_times("cpu 1 2 3 4"),
            Some(CpuTimes { total: 10, idle: 4 })
        );
        for bad in [
            "",
            "cpu0 1 2 3 4",
            "cpu 1 2 3",
            "cpu 1 x 3 4",
            "cpu 1 -2 3 4",
        ] {
            assert_eq!(parse_cpu_times(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_cpu_times(&format!("cpu {} 1 1 1", u64::MAX)),
            None,
            "overflow"
        );
    }

    #[test]
    fn busy_fraction() {
        let a = CpuTimes {
            total: 1000,
            idle: 800,
        };
        let b = CpuTimes {
            total: 1400,
            idle: 1100,
        };
        assert_eq!(b.busy_since(&a), 0.25);
        assert_eq!(a.busy_since(&a), 0.0);
        assert_eq!(a.busy_since(&b), 0.0, "counters went backwards");
        let odd = CpuTimes {
            total: 1100,
            idle: 2000,
        };
        assert_eq!(odd.busy_since(&a), 0.0, "idle beyond total is clamped");
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16000 kB\nMemFree:         4000 kB\nMemAvailable: 9000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MemInfo {
                total_kb: 16000,
                used_kb: 12000
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotalX: 10 kB\nMemFree: 1 kB"), None);
        assert_eq!(
            parse_meminfo("MemFree: 20 kB\nMemTotal: 10 kB").map(|m| m.used_kb),
            Some(0)
        );
    }

    #[test]
    fn comet_data_starts_idle_then_reports_load() {
        let online = Arc::new(AtomicU64::new(7));
        let mut data = comet_data("ws://10.0.0.1:1234/ws".into(), online);
        assert_eq!(data(), b"ws://10.0.0.1:1234/ws,0.000000,0,0,0");
        let second = data();
        let node = CometNode::parse(&second).expect("parses");
        assert_eq!(node.url, "ws://10.0.0.1:1234/ws");
        assert_eq!(node.online, 7);
        assert!((0.0..=1.0).contains(&node.cpu));
        assert!(node.mem_used <= node.mem_total);
    }
}
