//! `loadgen idle`: hold N logged-in WebSocket phones (and M UDP sessions) against the
//! target and report its RSS per connection as the least-squares **slope** of RSS against
//! N over several steps, and the kernel's memory beside it (slab caches and TCP buffer
//! pages, system-wide: on loopback both ends of a connection are this kernel's, so the
//! per-connection figure counts two sockets). With `--bind` every phone's user has a bound
//! device and every UDP device a bound user, as in real use. Connections are held by child processes (`loadgen idle-worker`,
//! this binary re-executed), at most `--per-worker` each, to stay within the per-process
//! fd limit; the parent talks to them over stdin/stdout (`ws COUNT FIRST` → `ok READY FAILED`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::udpset::UdpSet;
use crate::args::{Common, Steps, parse_steps};
use crate::fleet::{Fleet, open_all};
use crate::{report, stats};

/// `idle` options.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// The target's pid (RSS from /proc/<pid>/status).
    #[arg(long)]
    pub pid: u32,
    /// WebSocket phone counts to sample at.
    #[arg(long, value_parser = parse_steps, default_value = "1000,3000,6000,9000")]
    pub steps: Steps,
    /// UDP session counts at the same steps (same length as --steps), or none.
    #[arg(long, value_parser = parse_steps)]
    pub udp_steps: Option<Steps>,
    /// The target's UDP address.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub udp_target: std::net::SocketAddr,
    /// Connections per worker process.
    #[arg(long, default_value_t = 3000)]
    pub per_worker: usize,
    /// Seconds to wait after each step before sampling.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds to keep holding everything after the last step (an upgrade or a restart
    /// in the meantime: `benches/upgrade`).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Bind a device to every phone's user and a user to every UDP device first.
    #[arg(long)]
    pub bind: bool,
}

/// Hidden `idle-worker` options.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// The target's UDP address.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub udp_target: std::net::SocketAddr,
    /// Bind a user to every UDP device it logs in.
    #[arg(long)]
    pub bind: bool,
}

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Phones held.
    pub ws: usize,
    /// UDP sessions held.
    pub udp: usize,
    /// VmRSS, bytes.
    pub rss: u64,
    /// RssAnon, bytes.
    pub rss_anon: u64,
    /// The kernel's slab caches plus TCP buffer pages, bytes (system-wide; `None` when
    /// `/proc/slabinfo` is unreadable).
    pub kernel: Option<u64>,
}

/// (VmRSS, RssAnon) in bytes of `pid`.
pub fn rss_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("pid {pid}"))?;
    Ok(parse_rss(&text))
}

/// (VmRSS, RssAnon) in bytes from a /proc status text (0 when absent).
pub fn parse_rss(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    held: usize,
}

impl Worker {
    fn spawn(a: &IdleArgs) -> anyhow::Result<Self> {
        let c = &a.common;
        let targets: Vec<String> = c.target.iter().map(ToString::to_string).collect();
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "idle-worker",
                "--target",
                &targets.join(","),
                "--admin",
                &c.admin.to_string(),
            ])
            .args(["--salt", &c.salt, "--udp-target", &a.udp_target.to_string()])
            .args(a.bind.then_some("--bind"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout: ChildStdout = child.stdout.take().context("worker stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            held: 0,
        })
    }

    fn ask(&mut self, cmd: &str) -> anyhow::Result<(usize, usize)> {
        writeln!(self.stdin, "{cmd}")?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(120))
            .context("worker did not answer")?;
        let mut it = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<usize>().unwrap_or(0));
        Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
    }
}

/// Runs the scenario.
pub fn run(a: &IdleArgs) -> anyhow::Result<()> {
    if let Some(u) = &a.udp_steps
        && u.0.len() != a.steps.0.len()
    {
        bail!("--udp-steps needs as many entries as --steps");
    }
    if a.bind {
        let phones = a.steps.0.last().copied().unwrap_or(0);
        for i in 0..phones {
            crate::admin::bind(a.common.admin, a.common.device(i), a.common.user(i))?;
        }
    }
    let base = rss_of(a.pid)?;
    let mut workers: Vec<Worker> = Vec::new();
    let mut points = vec![Point {
        ws: 0,
        udp: 0,
        rss: base.0,
        rss_anon: base.1,
        kernel: tuning::memory::kernel_bytes(),
    }];
    let (mut ws_held, mut udp_held, mut failed) = (0usize, 0usize, 0usize);
    for (k, &step) in a.steps.0.iter().enumerate() {
        let mut need = step.saturating_sub(ws_held + failed);
        while need > 0 {
            if workers.last().is_none_or(|w| w.held >= a.per_worker) {
                workers.push(Worker::spawn(a)?);
            }
            let w = workers.last_mut().context("worker")?;
            let n = need.min(a.per_worker - w.held);
            let (ok, bad) = w.ask(&format!("ws {n} {}", ws_held + failed))?;
            w.held += n;
            ws_held += ok;
            failed += bad;
            need -= n;
        }
        if let Some(u) = a.udp_steps.as_ref().map(|u| u.0[k]) {
            let n = u.saturating_sub(udp_held);
            if n > 0 {
                let w = workers.first_mut().context("worker")?;
                let (ok, bad) = w.ask(&format!("udp {n} {}", 1_000_000 + udp_held))?;
                udp_held += ok;
                if bad > 0 {
                    eprintln!("idle: {bad} UDP sessions failed (is the target serving UDP?)");
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(a.settle));
        let (rss, rss_anon) = rss_of(a.pid)?;
        eprintln!(
            "[idle] ws {ws_held} udp {udp_held} failed {failed}: RSS {:.1} MiB",
            rss as f64 / 1048576.0
        );
        points.push(Point {
            ws: ws_held,
            udp: udp_held,
            rss,
            rss_anon,
            kernel: tuning::memory::kernel_bytes(),
        });
    }
    let ws_pts: Vec<(f64, f64)> = points.iter().map(|p| (p.ws as f64, p.rss as f64)).collect();
    let anon_pts: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.ws as f64, p.rss_anon as f64))
        .collect();
    // With UDP in the mix, the WS slope is taken from the points before UDP was added only
    // when UDP was absent; the combined figure is reported per connection of either kind.
    let slope = stats::slope(&ws_pts[1..]).unwrap_or(f64::NAN);
    let slope_anon = stats::slope(&anon_pts[1..]).unwrap_or(f64::NAN);
    // UDP sessions hold no socket of their own. Their slope is RSS against the session
    // count over every point: meaningful when the phone steps are tiny beside them (e.g.
    // `--steps 1,2,3,4,5 --udp-steps 8000,…,40000`, a span over a table doubling).
    let kernel_pts: Vec<(f64, f64)> = points[1..]
        .iter()
        .filter_map(|p| Some((p.ws as f64, p.kernel? as f64)))
        .collect();
    let kernel_slope = stats::slope(&kernel_pts).unwrap_or(f64::NAN);
    let udp_pts: Vec<(f64, f64)> = points[1..]
        .iter()
        .map(|p| (p.udp as f64, p.rss as f64))
        .collect();
    let udp_slope = stats::slope(&udp_pts).unwrap_or(f64::NAN);
    let udp_kernel_pts: Vec<(f64, f64)> = points[1..]
        .iter()
        .filter_map(|p| Some((p.udp as f64, p.kernel? as f64)))
        .collect();
    let udp_kernel_slope = stats::slope(&udp_kernel_pts).unwrap_or(f64::NAN);
    if a.hold > 0.0 {
        eprintln!("[idle] holding for {} s", a.hold);
        std::thread::sleep(Duration::from_secs_f64(a.hold));
    }
    for w in &mut workers {
        let _ = writeln!(w.stdin, "quit");
        let _ = w.child.wait();
    }
    let mut rows: Vec<(&str, String)> = vec![("baseline RSS", format!("{} KiB", base.0 / 1024))];
    let labels: Vec<String> = points[1..]
        .iter()
        .map(|p| format!("ws {} udp {}", p.ws, p.udp))
        .collect();
    for (l, p) in labels.iter().zip(&points[1..]) {
        let per = (p.rss.saturating_sub(base.0)) as f64 / (p.ws + p.udp).max(1) as f64;
        rows.push((
            l.as_str(),
            format!("RSS {} KiB ({per:.0} B/conn over baseline)", p.rss / 1024),
        ));
    }
    rows.push(("slope VmRSS", format!("{slope:.0} B/conn")));
    rows.push(("slope RssAnon", format!("{slope_anon:.0} B/conn")));
    rows.push((
        "slope kernel (both ends)",
        format!("{kernel_slope:.0} B/conn"),
    ));
    rows.push(("slope VmRSS per UDP session", format!("{udp_slope:.0} B")));
    rows.push((
        "slope kernel per UDP session",
        format!("{udp_kernel_slope:.0} B"),
    ));
    rows.push(("failed", failed.to_string()));
    let value = serde_json::json!({ "points": points, "bytes_per_conn": slope,
        "anon_bytes_per_conn": slope_anon, "kernel_bytes_per_conn": kernel_slope,
        "bytes_per_udp_session": udp_slope, "kernel_bytes_per_udp_session": udp_kernel_slope,
        "failed": failed, "errors": failed });
    report::emit(a.common.json, "idle", &rows, &value);
    Ok(())
}

/// The worker process: holds connections until stdin closes.
pub fn worker_main(a: &WorkerArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut fleet = Fleet::new()?;
    let mut udp: Vec<UdpSet> = Vec::new();
    let mut last_beat = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(line) => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let num = |i: usize| {
                    parts
                        .get(i)
                        .and_then(|x| x.parse::<usize>().ok())
                        .unwrap_or(0)
                };
                let (ok, bad) = match parts.first().copied() {
                    Some("ws") => {
                        let ids: Vec<i64> = (0..num(1)).map(|j| c.user(num(2) + j)).collect();
                        let (r0, f0) = (fleet.ready, fleet.failed);
                        open_all(
                            &mut fleet,
                            &c.target,
                            &ids,
                            c.salt.as_bytes(),
                            128,
                            Duration::from_secs(60),
                        )?;
                        (fleet.ready - r0, fleet.failed - f0 + fleet.pending)
                    }
                    Some("udp") => {
                        let mut set =
                            UdpSet::new(a.udp_target, num(1), 16, c.base_id + num(2) as i64)?;
                        let ok = set.establish(Duration::from_secs(20));
                        if a.bind {
                            for (j, s) in set.sessions.iter().enumerate() {
                                if s.step >= 3 {
                                    crate::admin::bind(c.admin, s.device, c.user(num(2) + j))?;
                                }
                            }
                        }
                        udp.push(set);
                        (ok, num(1) - ok)
                    }
                    _ => break,
                };
                println!("ok {ok} {bad}");
                std::io::stdout().flush()?;
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        fleet.poll(100, |_, _, _| {}, |_| {})?;
        if last_beat.elapsed() > Duration::from_secs(15) {
            for set in &mut udp {
                set.heartbeat_all();
            }
            last_beat = std::time::Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_fields() {
        let text = "Name:\tx\nVmRSS:\t  2048 kB\nRssAnon:\t 1024 kB\n";
        assert_eq!(parse_rss(text), (2048 * 1024, 1024 * 1024));
        assert_eq!(parse_rss(""), (0, 0));
    }
}
