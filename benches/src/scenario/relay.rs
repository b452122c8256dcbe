//! `loadgen relay`: P phone/device pairs through the target, paced (`--rate`) or flooding
//! with at most `--window` messages in flight per pair; end-to-end latency from the send
//! time carried in each message (the scheduled time when paced, so a stalled target shows
//! up as latency, not as fewer samples).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use edge_proto::ws::OpCode;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Common, split};
use crate::fleet::{Fleet, open_all};
use crate::report::{self, Counters, Progress};
use crate::{admin, msg, stats};

/// `relay` options.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Phone/device pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Load threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Messages per second in total; 0 = flood (window-bound).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Messages in flight per pair when flooding.
    #[arg(long, default_value_t = 32)]
    pub window: u32,
    /// Message size in bytes (≥ 40).
    #[arg(long, default_value_t = 48)]
    pub size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// p2d (phone → device), d2p (device → phones) or both.
    #[arg(long, default_value = "p2d", value_parser = ["p2d", "d2p", "both"])]
    pub direction: String,
    /// First flood for this many seconds to find the peak, then run paced at
    /// `--peak-fraction` of it (the "latency at 70 % of peak" figure).
    #[arg(long)]
    pub find_peak: Option<f64>,
    /// Fraction of the peak for the paced run.
    #[arg(long, default_value_t = 0.7)]
    pub peak_fraction: f64,
    /// Do not call `/admin/bind` (cluster mode: the bindings are already in Redis).
    #[arg(long)]
    pub no_bind: bool,
    /// Devices log in here instead of `--target` (phones stay on `--target`). Implies the
    /// tracked mode (see `--reconnect`).
    #[arg(long, value_delimiter = ',')]
    pub device_target: Vec<std::net::SocketAddr>,
    /// Tracked mode: re-open connections that close or fail (every 250 ms), number every
    /// message per pair and count lost and duplicated ones. Needs `--rate` > 0.
    #[arg(long)]
    pub reconnect: bool,
    /// Tracked mode: every second close and re-open this fraction of the pairs (both ends).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Tracked mode: write a CSV timeline (`--bucket-ms` buckets by send time) here.
    #[arg(long)]
    pub timeline: Option<std::path::PathBuf>,
    /// Timeline bucket, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub bucket_ms: u64,
    /// Tracked mode: latency and counts per interval of this many seconds (by send time).
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Tracked mode: seconds to keep receiving after the last send.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
}

impl RelayArgs {
    /// Whether the tracked (reconnecting, sequence-counting) worker runs.
    pub fn tracked(&self) -> bool {
        self.reconnect
            || self.churn > 0.0
            || self.timeline.is_some()
            || !self.device_target.is_empty()
    }
}

/// What a relay run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// Pairs that logged in.
    pub pairs_ready: usize,
    /// Paced rate (0 = flood).
    pub rate: u64,
    /// Peak found by `--find-peak`, msgs/s.
    pub peak_msgs_s: Option<f64>,
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Messages received in the measured window.
    pub received: u64,
    /// Received per second.
    pub throughput_msgs_s: f64,
    /// Connection failures and closes.
    pub errors: u64,
    /// Messages of the measured window that arrived after it closed (received while
    /// draining for up to a second, not in `latency`): late, not lost.
    pub late: u64,
    /// Paced sends skipped because their pair already had 4096 messages in flight
    /// (counted, never silent; always 0 in a flood run).
    pub skipped: u64,
    /// End-to-end latency.
    pub latency: stats::Latency,
    /// Paced runs: how late the load generator queued each message of the measured window
    /// against its schedule (latency counts from the schedule, so this part of it is the
    /// generator's, not the server's). Read once per pass of its loop, before the pass's
    /// batch is queued and written, so it is a lower bound; values under 1 µs read 1 µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag: Option<stats::Latency>,
    /// The server's CPU (and system calls) over the measured window (`--server-pid`).
    pub server: crate::server_cost::ServerCost,
    /// Microseconds of server CPU per message received.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Server system calls per message received (`--syscalls`).
    pub server_syscalls_per_msg: Option<f64>,
    /// Tracked mode only: loss, duplicates, reconnects, intervals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked: Option<super::tracked::Tracked>,
}

struct ThreadResult {
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    sent: u64,
    received: u64,
    late: u64,
    skipped: u64,
    errors: u64,
    ready: usize,
    notes: Vec<String>,
}

/// Runs the scenario and prints its report.
pub fn run(a: &RelayArgs) -> anyhow::Result<()> {
    if a.size < msg::MIN_LEN {
        bail!("--size must be at least {}", msg::MIN_LEN);
    }
    if !a.no_bind {
        for i in 0..a.pairs {
            admin::bind(a.common.admin, a.common.device(i), a.common.user(i))?;
        }
    }
    if a.tracked() {
        return super::tracked::run(a);
    }
    let mut args = a.clone();
    let mut peak = None;
    if let Some(secs) = a.find_peak {
        args.rate = 0;
        args.duration = secs;
        let (r, _) = measure(&args)?;
        let p = r.throughput_msgs_s;
        eprintln!(
            "peak {p:.0} msgs/s; pacing at {:.0} %",
            a.peak_fraction * 100.0
        );
        peak = Some(p);
        args = a.clone();
        args.rate = (p * a.peak_fraction) as u64;
    }
    let (mut r, hist) = measure(&args)?;
    r.peak_msgs_s = peak;
    let c = &a.common;
    report::write_files("relay", &hist, c.hdr_out.as_deref(), c.svg.as_deref())?;
    let mut rows = vec![
        ("pairs ready", format!("{} / {}", r.pairs_ready, a.pairs)),
        (
            "rate",
            if r.rate == 0 {
                "flood".into()
            } else {
                format!("{} msgs/s", r.rate)
            },
        ),
        ("sent", r.sent.to_string()),
        ("received", r.received.to_string()),
        ("late (after the window)", r.late.to_string()),
        ("skipped (pair full)", r.skipped.to_string()),
        ("throughput", format!("{:.0} msgs/s", r.throughput_msgs_s)),
        ("errors", r.errors.to_string()),
    ];
    if let Some(us) = r.server_cpu_us_per_msg {
        rows.push(("server CPU per message", format!("{us:.3} µs")));
    }
    if let Some(n) = r.server_syscalls_per_msg {
        rows.push(("server syscalls per message", format!("{n:.3}")));
    }
    if let Some(p) = r.peak_msgs_s {
        rows.push(("peak (flood)", format!("{p:.0} msgs/s")));
    }
    rows.extend(report::latency_rows(&r.latency));
    report::emit(c.json, "relay", &rows, &serde_json::to_value(&r)?);
    Ok(())
}

/// One connect + measure cycle.
fn measure(a: &RelayArgs) -> anyhow::Result<(RelayReport, Histogram<u64>)> {
    let counters = Arc::new(Counters::default());
    let barrier = Arc::new(Barrier::new(a.threads + 1));
    let handles: Vec<_> = split(a.pairs, a.threads)
        .into_iter()
        .map(|range| {
            let (a, counters, barrier) = (a.clone(), counters.clone(), barrier.clone());
            std::thread::spawn(move || worker(&a, range, &counters, &barrier))
        })
        .collect();
    barrier.wait();
    let c = &a.common;
    let cost = crate::server_cost::measure_after(&c.server_pid, c.syscalls, a.warmup, a.duration);
    let progress = Progress::start("relay", counters);
    let mut hist = stats::latency_histogram();
    let mut lag = stats::latency_histogram();
    let mut out = RelayReport {
        pairs_ready: 0,
        rate: a.rate,
        peak_msgs_s: None,
        sent: 0,
        received: 0,
        throughput_msgs_s: 0.0,
        errors: 0,
        late: 0,
        skipped: 0,
        latency: stats::Latency::default(),
        send_lag: None,
        server: Default::default(),
        server_cpu_us_per_msg: None,
        server_syscalls_per_msg: None,
        tracked: None,
    };
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        hist.add(&t.hist)?;
        lag.add(&t.lag)?;
        out.sent += t.sent;
        out.received += t.received;
        out.late += t.late;
        out.skipped += t.skipped;
        out.errors += t.errors;
        out.pairs_ready += t.ready;
        for n in t.notes {
            eprintln!("relay: {n}");
        }
    }
    drop(progress);
    out.throughput_msgs_s = out.received as f64 / a.duration;
    out.latency = stats::Latency::of(&hist);
    out.send_lag = (a.rate > 0).then(|| stats::Latency::of(&lag));
    if let Some(cost) = cost.and_then(|h| h.join().ok()) {
        out.server_cpu_us_per_msg = cost.us_per(out.received);
        out.server_syscalls_per_msg = cost.syscalls_per(out.received);
        out.server = cost;
    }
    Ok((out, hist))
}

fn worker(
    a: &RelayArgs,
    range: std::ops::Range<usize>,
    counters: &Counters,
    barrier: &Barrier,
) -> anyhow::Result<ThreadResult> {
    let c = &a.common;
    let mut fleet = Fleet::new()?;
    fleet.tls = c.tls_config()?;
    let ids: Vec<i64> = range
        .clone()
        .flat_map(|i| [c.user(i), c.device(i)])
        .collect();
    let opened = open_all(
        &mut fleet,
        &c.target,
        &ids,
        c.salt.as_bytes(),
        256,
        Duration::from_secs(30),
    );
    barrier.wait();
    let tokens = opened?;
    let n = range.len();
    // Per local pair: (phone token, device token) and message templates.
    let mut p2d = Vec::with_capacity(n);
    let mut d2p = Vec::with_capacity(n);
    for (k, i) in range.clone().enumerate() {
        let mut m = Vec::new();
        msg::build(&mut m, c.device(i), c.user(i), k as u32, 0, a.size);
        p2d.push(m);
        let mut m = Vec::new();
        msg::build(&mut m, 0, c.device(i), k as u32, 0, a.size);
        d2p.push(m);
    }
    let ready: Vec<bool> = (0..n)
        .map(|k| fleet.is_ready(tokens[2 * k]) && fleet.is_ready(tokens[2 * k + 1]))
        .collect();
    let ready_pairs: Vec<usize> = (0..n).filter(|&k| ready[k]).collect();
    let mut inflight = vec![0u32; n];
    let mut hist = stats::latency_histogram();
    let mut lag = stats::latency_histogram();
    let (mut sent, mut received, mut skipped) = (0u64, 0u64, 0u64);
    let failed_before = fleet.failed;
    let start = msg::now_ns();
    let measure_from = start + (a.warmup * 1e9) as u64;
    let end = measure_from + (a.duration * 1e9) as u64;
    let threads = a.threads.max(1) as f64;
    let interval_ns = if a.rate == 0 {
        0.0
    } else {
        1e9 * threads / a.rate as f64
    };
    let mut next_send = start as f64;
    let (mut rr, mut flip) = (0usize, false);
    let mut now = start;
    while now < end && !ready_pairs.is_empty() {
        let measuring = now >= measure_from;
        let mut batch = 0u64;
        let mut send = |k: usize, now: u64, fleet: &mut Fleet, flip: &mut bool| {
            let from_phone = match a.direction.as_str() {
                "p2d" => true,
                "d2p" => false,
                _ => {
                    *flip = !*flip;
                    *flip
                }
            };
            let (m, token) = if from_phone {
                (&mut p2d[k], tokens[2 * k])
            } else {
                (&mut d2p[k], tokens[2 * k + 1])
            };
            msg::stamp(m, now);
            fleet.queue(token, OpCode::Binary, m)
        };
        if a.rate == 0 {
            for &k in &ready_pairs {
                while inflight[k] < a.window && send(k, now, &mut fleet, &mut flip) {
                    inflight[k] += 1;
                    batch += 1;
                }
            }
        } else {
            while next_send <= now as f64 && batch < 4096 {
                let k = ready_pairs[rr % ready_pairs.len()];
                rr += 1;
                if inflight[k] >= 4096 {
                    skipped += u64::from(measuring);
                } else if send(k, next_send as u64, &mut fleet, &mut flip) {
                    inflight[k] += 1;
                    batch += 1;
                    if measuring {
                        stats::record(&mut lag, now.saturating_sub(next_send as u64));
                    }
                }
                next_send += interval_ns;
            }
        }
        if measuring {
            sent += batch;
        }
        counters.sent.fetch_add(batch, Ordering::Relaxed);
        fleet.flush();
        // Paced: never sleep past the next scheduled send (epoll's 1 ms grain would bunch
        // sends at high rates); a flood waits only when nothing could be sent.
        let until_next = next_send - now as f64;
        let wait = if a.rate == 0 || batch > 0 || until_next < 1e6 {
            0
        } else {
            1
        };
        let mut got = 0u64;
        fleet.poll(
            if batch == 0 && a.rate == 0 { 1 } else { wait },
            |_, _, payload| {
                if let Some((ts, k)) = msg::parse(payload) {
                    let now = msg::now_ns();
                    if let Some(f) = inflight.get_mut(k as usize) {
                        *f = f.saturating_sub(1);
                    }
                    if ts >= measure_from && now <= end {
                        stats::record(&mut hist, now.saturating_sub(ts));
                        received += 1;
                    }
                    got += 1;
                }
            },
            |_| {},
        )?;
        counters.done.fetch_add(got, Ordering::Relaxed);
        now = msg::now_ns();
    }
    // Keep receiving after the window closes: what was sent in it and arrives now is late,
    // not lost (up to a second, or until nothing is in flight).
    let mut late = 0u64;
    let drain_end = msg::now_ns() + 1_000_000_000;
    while inflight.iter().any(|&f| f > 0) && msg::now_ns() < drain_end {
        fleet.poll(
            1,
            |_, _, payload| {
                if let Some((ts, k)) = msg::parse(payload) {
                    if let Some(f) = inflight.get_mut(k as usize) {
                        *f = f.saturating_sub(1);
                    }
                    late += u64::from(ts >= measure_from);
                }
            },
            |_| {},
        )?;
    }
    let errors = (fleet.failed - failed_before) as u64;
    counters.errors.fetch_add(errors, Ordering::Relaxed);
    let notes = fleet.errors.clone();
    let ready_count = ready_pairs.len();
    fleet.close_all();
    Ok(ThreadResult {
        hist,
        lag,
        sent,
        received,
        late,
        skipped,
        errors: errors + (n - ready_count) as u64,
        ready: ready_count,
        notes,
    })
}
