//! `loadgen stall`: N logged-in phones that never read (small receive buffers), pushed
//! large messages through `/admin/push` until the target has closed every one of them
//! (1008), while one healthy phone that reads is named in every push. Reports how many
//! were closed and why (`slow_reader_closed`: its own `--max-outbound`;
//! `outbound_budget_closed`: the shard's `--max-outbound-shard`), the target's RSS and
//! queued bytes at their peak and after, and whether the healthy phone got every push.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::idle::rss_of;
use crate::args::Common;
use crate::fleet::{Fleet, open_all};
use crate::{admin, msg, report, stats};

/// `stall` options.
#[derive(Debug, Clone, Args)]
pub struct StallArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// The target's pid (RSS from /proc/<pid>/status).
    #[arg(long)]
    pub pid: u32,
    /// Phones that never read.
    #[arg(long, default_value_t = 10_000)]
    pub phones: usize,
    /// Their sockets' receive buffer, bytes.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer: usize,
    /// Pushed message body, bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    pub body: usize,
    /// Stalled phones named per push request (the healthy phone is added to each).
    #[arg(long, default_value_t = 500)]
    pub ids_per_push: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

/// What a stall run measured.
#[derive(Debug, Clone, Serialize)]
pub struct StallReport {
    /// Stalled phones logged in.
    pub phones_ready: usize,
    /// Push requests answered 200.
    pub pushes: u64,
    /// Push requests that failed.
    pub push_errors: u64,
    /// Closed for their own outbound bound (1008).
    pub slow_reader_closed: u64,
    /// Closed for the shard's outbound budget (1008).
    pub outbound_budget_closed: u64,
    /// Seconds until every stalled phone was closed.
    pub seconds: f64,
    /// Target RSS before, at its peak, and 2 s after the last close, bytes.
    pub rss_before: u64,
    /// Peak RSS while pushing.
    pub rss_peak: u64,
    /// RSS after.
    pub rss_after: u64,
    /// Largest sum of the shards' queued outbound bytes seen.
    pub queued_peak: i64,
    /// Queued outbound bytes after.
    pub queued_after: i64,
    /// Logged-in sessions after (the healthy phone: 1).
    pub online_after: i64,
    /// Pushes the healthy phone received, of `pushes`.
    pub healthy_received: u64,
    /// Push → healthy phone latency.
    pub healthy_latency: stats::Latency,
}

/// One number from the target's `/stat?type=app`.
fn app_counter(admin: SocketAddr, name: &str) -> anyhow::Result<i64> {
    let (_, body) = admin::request(admin, "GET", "/stat?type=app", b"")?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v.get(name)
        .and_then(serde_json::Value::as_i64)
        .with_context(|| format!("no {name}"))
}

/// The sum over shards of `cloudsocket_outbound_queued_bytes` from `/metrics`.
fn queued_bytes(admin: SocketAddr) -> anyhow::Result<i64> {
    let (_, body) = admin::request(admin, "GET", "/metrics", b"")?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("cloudsocket_outbound_queued_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum())
}

/// Polls `fleet` once (up to `timeout_ms`); records each pushed message's latency (its
/// send time is at byte 36) and returns how many arrived.
fn read_pushes(
    fleet: &mut Fleet,
    timeout_ms: i32,
    hist: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let mut got = 0;
    fleet.poll(
        timeout_ms,
        |_, _, p| {
            if let Some((ts, _)) = msg::parse_at(p, 36) {
                stats::record(hist, msg::now_ns().saturating_sub(ts));
                got += 1;
            }
        },
        |_| {},
    )?;
    Ok(got)
}

fn closed(admin: SocketAddr) -> anyhow::Result<(u64, u64)> {
    Ok((
        app_counter(admin, "slow_reader_closed")? as u64,
        app_counter(admin, "outbound_budget_closed")? as u64,
    ))
}

/// Runs the scenario.
pub fn run(a: &StallArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let ids: Vec<i64> = (0..a.phones).map(|i| c.user(i)).collect();
    let healthy_id = c.user(a.phones);
    let mut stalled = Fleet::new()?;
    stalled.recv_buffer = Some(a.recv_buffer);
    open_all(
        &mut stalled,
        &c.target,
        &ids,
        c.salt.as_bytes(),
        256,
        Duration::from_secs(120),
    )?;
    let mut healthy = Fleet::new()?;
    open_all(
        &mut healthy,
        &c.target,
        &[healthy_id],
        c.salt.as_bytes(),
        1,
        Duration::from_secs(10),
    )?;
    anyhow::ensure!(healthy.ready == 1, "the healthy phone did not log in");

    let (slow0, budget0) = closed(c.admin)?;
    let rss_before = rss_of(a.pid)?.0;
    let (mut rss_peak, mut queued_peak) = (rss_before, 0i64);
    let mut body = vec![0x5au8; a.body.max(16)];
    let mut hist = stats::latency_histogram();
    let (mut pushes, mut push_errors, mut received) = (0u64, 0u64, 0u64);
    let mut batches = ids.chunks(a.ids_per_push.max(1)).cycle();
    let start = Instant::now();
    let mut last_sample = start;
    let (mut slow, mut budget) = (0, 0);
    while slow + budget < stalled.ready as u64 {
        anyhow::ensure!(
            start.elapsed().as_secs_f64() < a.timeout,
            "only {} of {} closed after {pushes} pushes",
            slow + budget,
            stalled.ready
        );
        let mut batch = batches.next().unwrap_or_default().to_vec();
        batch.push(healthy_id);
        body[..8].copy_from_slice(&msg::now_ns().to_le_bytes());
        body[8..12].copy_from_slice(msg::MAGIC);
        match admin::push(c.admin, &batch, 0x36, &body) {
            Ok(200) => pushes += 1,
            _ => push_errors += 1,
        }
        received += read_pushes(&mut healthy, 0, &mut hist)?;
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            rss_peak = rss_peak.max(rss_of(a.pid)?.0);
            queued_peak = queued_peak.max(queued_bytes(c.admin)?);
            let (s, b) = closed(c.admin)?;
            (slow, budget) = (s - slow0, b - budget0);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && received < pushes {
        received += read_pushes(&mut healthy, 10, &mut hist)?;
    }
    std::thread::sleep(settle.saturating_duration_since(Instant::now()));
    let r = StallReport {
        phones_ready: stalled.ready,
        pushes,
        push_errors,
        slow_reader_closed: slow,
        outbound_budget_closed: budget,
        seconds,
        rss_before,
        rss_peak,
        rss_after: rss_of(a.pid)?.0,
        queued_peak,
        queued_after: queued_bytes(c.admin)?,
        online_after: app_counter(c.admin, "ConnOnline")?,
        healthy_received: received,
        healthy_latency: stats::Latency::of(&hist),
    };
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut rows = vec![
        (
            "stalled phones",
            format!("{} / {}", r.phones_ready, a.phones),
        ),
        (
            "push requests",
            format!("{} ({} failed)", r.pushes, r.push_errors),
        ),
        ("closed: own bound", r.slow_reader_closed.to_string()),
        ("closed: shard budget", r.outbound_budget_closed.to_string()),
        ("seconds", format!("{:.1}", r.seconds)),
        (
            "RSS before / peak / after",
            format!(
                "{} / {} / {}",
                mib(r.rss_before),
                mib(r.rss_peak),
                mib(r.rss_after)
            ),
        ),
        (
            "queued peak / after",
            format!(
                "{} / {} B",
                mib(r.queued_peak.max(0) as u64),
                r.queued_after
            ),
        ),
        ("online after", r.online_after.to_string()),
        (
            "healthy phone",
            format!("{} / {} pushes", r.healthy_received, r.pushes),
        ),
    ];
    rows.extend(report::latency_rows(&r.healthy_latency));
    report::emit(c.json, "stall", &rows, &serde_json::to_value(&r)?);
    stalled.close_all();
    healthy.close_all();
    Ok(())
}
