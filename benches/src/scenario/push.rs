//! `loadgen push`: N logged-in phones; `/admin/push` requests, each naming a batch of their
//! users, from `--pushers` HTTP threads; deliveries/s and latency from the send time in the
//! pushed body (the delivered message is a direct packet: body at byte 36).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::args::Common;
use crate::fleet::{Fleet, open_all};
use crate::report::{self, Counters, Progress};
use crate::{admin, msg, stats};

/// `push` options.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Phones.
    #[arg(long, default_value_t = 1000)]
    pub phones: usize,
    /// User ids per push request.
    #[arg(long, default_value_t = 100)]
    pub ids_per_push: usize,
    /// Push requests per second in total (0 = back to back).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Threads issuing push requests.
    #[arg(long, default_value_t = 2)]
    pub pushers: usize,
    /// Message id.
    #[arg(long, default_value_t = 0x36)]
    pub msg_id: u16,
    /// Seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// What a push run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// Phones logged in.
    pub phones_ready: usize,
    /// Push requests answered 200.
    pub pushes: u64,
    /// Messages received by phones.
    pub deliveries: u64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// Failed requests or connections.
    pub errors: u64,
    /// Push request → phone latency.
    pub latency: stats::Latency,
}

/// Runs the scenario.
pub fn run(a: &PushArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let ids: Vec<i64> = (0..a.phones).map(|i| c.user(i)).collect();
    let mut fleet = Fleet::new()?;
    open_all(
        &mut fleet,
        &c.target,
        &ids,
        c.salt.as_bytes(),
        256,
        Duration::from_secs(60),
    )?;
    let ready = fleet.ready;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let per = a.ids_per_push.max(1);
    let pushers: Vec<_> = (0..a.pushers.max(1))
        .map(|t| {
            let (a, ids, counters, stop) = (a.clone(), ids.clone(), counters.clone(), stop.clone());
            std::thread::spawn(move || {
                let batches: Vec<&[i64]> = ids.chunks(per).collect();
                let interval = if a.rate == 0 {
                    0.0
                } else {
                    a.pushers as f64 / a.rate as f64
                };
                let start = Instant::now();
                let (mut ok, mut errors, mut i) = (0u64, 0u64, t);
                while !stop.load(Ordering::Relaxed) {
                    let mut body = Vec::with_capacity(16);
                    body.extend_from_slice(&msg::now_ns().to_le_bytes());
                    body.extend_from_slice(msg::MAGIC);
                    body.extend_from_slice(&0u32.to_le_bytes());
                    match admin::push(a.common.admin, batches[i % batches.len()], a.msg_id, &body) {
                        Ok(200) => ok += 1,
                        _ => errors += 1,
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    i += a.pushers.max(1);
                    let due = interval * (i / a.pushers.max(1)) as f64;
                    let wait = due - start.elapsed().as_secs_f64();
                    if wait > 0.0 {
                        std::thread::sleep(Duration::from_secs_f64(wait));
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let progress = Progress::start("push", counters.clone());
    let mut hist = stats::latency_histogram();
    let mut deliveries = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    while Instant::now() < end + Duration::from_millis(200) {
        if Instant::now() >= end {
            stop.store(true, Ordering::Relaxed);
        }
        let mut got = 0;
        fleet.poll(
            5,
            |_, _, p| {
                if let Some((ts, _)) = msg::parse_at(p, 36) {
                    stats::record(&mut hist, msg::now_ns().saturating_sub(ts));
                    got += 1;
                }
            },
            |_| {},
        )?;
        deliveries += got;
        counters.done.fetch_add(got, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let (mut pushes, mut errors) = (0, (a.phones - ready) as u64);
    for p in pushers {
        let (o, e) = p.join().map_err(|_| anyhow::anyhow!("pusher panicked"))?;
        pushes += o;
        errors += e;
    }
    drop(progress);
    let r = PushReport {
        phones_ready: ready,
        pushes,
        deliveries,
        deliveries_per_s: deliveries as f64 / a.duration,
        errors: errors + fleet.failed as u64,
        latency: stats::Latency::of(&hist),
    };
    report::write_files("push", &hist, c.hdr_out.as_deref(), c.svg.as_deref())?;
    let mut rows = vec![
        ("phones ready", format!("{} / {}", r.phones_ready, a.phones)),
        ("push requests", r.pushes.to_string()),
        ("deliveries", r.deliveries.to_string()),
        ("deliveries/s", format!("{:.0}", r.deliveries_per_s)),
        ("errors", r.errors.to_string()),
    ];
    rows.extend(report::latency_rows(&r.latency));
    report::emit(c.json, "push", &rows, &serde_json::to_value(&r)?);
    fleet.close_all();
    Ok(())
}
