//! What the server spent during a measured window (issue 13): its CPU time from
//! `/proc/<pid>/stat` (utime + stime of every thread, in clock ticks), the kernel's part of
//! it (stime: system calls, and the loopback delivery and softirq work the kernel charges
//! to the thread that sent), the load generator's own CPU over the same window (to tell a
//! run the generator limits), and optionally the server's system calls from
//! `perf stat -e raw_syscalls:sys_enter -p <pid>` — so that a run the load generator limits
//! still tells the server's cost per message. Linux only; a figure that cannot be read is
//! `None`, never a guess.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The server's cost over a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerCost {
    /// CPU seconds (user + system, all threads).
    pub cpu_s: Option<f64>,
    /// The system part of `cpu_s` (stime): time in the kernel on the server's behalf.
    pub sys_s: Option<f64>,
    /// Its share of one core over the window.
    pub cpu_util: Option<f64>,
    /// The load generator's own CPU over the window, as a share of one core (all its
    /// threads): in a flood, near its core count means the generator, not the server, set
    /// the pace. (A paced run spins between sends, so there it reads near 100 % whatever
    /// the rate: its `send_lag` tells instead.)
    pub client_util: Option<f64>,
    /// System calls entered (all threads), when `perf` could count them.
    pub syscalls: Option<u64>,
}

impl ServerCost {
    /// Microseconds of server CPU per operation.
    pub fn us_per(&self, ops: u64) -> Option<f64> {
        Some(self.cpu_s? * 1e6 / ops.max(1) as f64)
    }

    /// System calls per operation.
    pub fn syscalls_per(&self, ops: u64) -> Option<f64> {
        Some(self.syscalls? as f64 / ops.max(1) as f64)
    }
}

/// CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|t| t.user + t.sys)
}

/// CPU seconds used so far, user and system apart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// utime.
    pub user: f64,
    /// stime.
    pub sys: f64,
}

/// CPU seconds `pid` has used so far, user and system apart.
pub fn cpu_split(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let (user, sys) = (tick(11)?, tick(12)?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| CpuTimes {
        user: user as f64 / hz as f64,
        sys: sys as f64 / hz as f64,
    })
}

/// CPU seconds the processes `pids` have used so far (`None` if one is unreadable).
fn cpu_of(pids: &[u32]) -> Option<CpuTimes> {
    pids.iter().try_fold(CpuTimes::default(), |acc, &pid| {
        let t = cpu_split(pid)?;
        Some(CpuTimes {
            user: acc.user + t.user,
            sys: acc.sys + t.sys,
        })
    })
}

/// A window being measured.
pub struct Window {
    pids: Vec<u32>,
    started: Instant,
    cpu: Option<CpuTimes>,
    client: Option<f64>,
    perf: Option<Child>,
}

impl Window {
    /// Starts measuring `pids` together for about `length` (`perf` counts for exactly
    /// that long).
    pub fn begin(pids: &[u32], syscalls: bool, length: Duration) -> Window {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let perf = syscalls
            .then(|| {
                Command::new("perf")
                    .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p"])
                    .arg(list.join(","))
                    .args(["--", "sleep", &format!("{:.3}", length.as_secs_f64())])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .flatten();
        Window {
            pids: pids.to_vec(),
            started: Instant::now(),
            cpu: cpu_of(pids),
            client: cpu_seconds(std::process::id()),
            perf,
        }
    }

    /// Ends the window.
    pub fn end(self) -> ServerCost {
        let took = self.started.elapsed().as_secs_f64();
        let (cpu_s, sys_s) = match (self.cpu, cpu_of(&self.pids)) {
            (Some(a), Some(b)) => (Some(b.user + b.sys - a.user - a.sys), Some(b.sys - a.sys)),
            _ => (None, None),
        };
        let client = match (self.client, cpu_seconds(std::process::id())) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let syscalls = self.perf.and_then(|perf| {
            let out = perf.wait_with_output().ok()?;
            let text = String::from_utf8_lossy(&out.stderr);
            text.lines()
                .find(|l| l.contains("raw_syscalls:sys_enter"))
                .and_then(|l| l.split(',').next()?.trim().parse().ok())
        });
        ServerCost {
            cpu_s,
            sys_s,
            cpu_util: cpu_s.map(|c| c / took.max(1e-9)),
            client_util: client.map(|c| c / took.max(1e-9)),
            syscalls,
        }
    }
}

/// Measures `pids` over `warmup` then `length` from now, on a thread of its own (the
/// caller goes on); join it for the cost. `None` without a pid.
pub fn measure_after(
    pids: &[u32],
    syscalls: bool,
    warmup: f64,
    length: f64,
) -> Option<std::thread::JoinHandle<ServerCost>> {
    if pids.is_empty() {
        return None;
    }
    let pids = pids.to_vec();
    Some(std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(warmup.max(0.0)));
        let length = Duration::from_secs_f64(length.max(0.0));
        let window = Window::begin(&pids, syscalls, length);
        std::thread::sleep(length);
        window.end()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("/proc/self/stat");
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && cpu_seconds(me).unwrap() >= before);
        let split = cpu_split(me).unwrap();
        assert_eq!(cpu_seconds(me), Some(split.user + split.sys));
        let window = Window::begin(&[me], false, Duration::ZERO);
        let cost = window.end();
        assert!(cost.sys_s.unwrap() <= cost.cpu_s.unwrap() && cost.client_util.is_some());
        let cost = ServerCost {
            cpu_s: Some(2.0),
            syscalls: Some(10),
            ..ServerCost::default()
        };
        assert_eq!(cost.us_per(4), Some(500_000.0));
        assert_eq!(cost.syscalls_per(5), Some(2.0));
        assert_eq!(ServerCost::default().us_per(1), None);
    }
}
