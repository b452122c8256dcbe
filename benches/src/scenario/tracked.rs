//! `loadgen relay` in tracked mode (`--reconnect`, `--churn`, `--timeline`,
//! `--device-target`): phones (on `--target`) send paced messages to their device (on
//! `--device-target`, else `--target`), each numbered per pair, so the receiver counts
//! every message once, duplicates by sequence number, and losses as sent − delivered.
//! Closed or refused connections are re-opened every 250 ms (`--reconnect`); `--churn`
//! closes and re-opens a fraction of the pairs every second. Counts are over the whole
//! run (warm-up included, then `--drain` seconds of receiving only); latency only after
//! the warm-up. A phone that is not logged in sends nothing (not counted); a message
//! sent while its device was not logged in is counted apart (`sent_device_offline`): a
//! relay has nowhere to keep it, so its loss says nothing about the proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use edge_proto::ws::OpCode;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::relay::{RelayArgs, RelayReport};
use crate::args::split;
use crate::fleet::Fleet;
use crate::report::{self, Counters, Progress};
use crate::{msg, stats};

/// Re-open delay after a close or a refused login.
const RETRY_NS: u64 = 250_000_000;
/// Most connections mid-handshake per thread.
const OPEN_WINDOW: usize = 256;

/// Tracked-mode figures (whole run, warm-up and drain included).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tracked {
    /// Messages sent by logged-in phones.
    pub sent_total: u64,
    /// Of those, sent while the device was logged in (as far as the generator knew).
    pub sent_device_online: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Of those, ones sent while the device was logged in.
    pub delivered_device_online: u64,
    /// `sent_total − delivered`.
    pub lost: u64,
    /// `sent_device_online − delivered_device_online`: lost although both ends were on.
    pub lost_device_online: u64,
    /// Messages received more than once (by pair and sequence number).
    pub duplicated: u64,
    /// Sends skipped because the phone was not logged in.
    pub skipped_phone_offline: u64,
    /// Connections re-opened after a close or failure.
    pub reopened: u64,
    /// Pairs closed and re-opened by `--churn`.
    pub churned: u64,
    /// Per `--interval` (by send time, from the start of sending).
    pub intervals: Vec<Interval>,
}

/// One `--interval` of a tracked run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Interval {
    /// Seconds from the start of sending.
    pub start_s: f64,
    /// Sent in it.
    pub sent: u64,
    /// Delivered (distinct) of those.
    pub delivered: u64,
    /// Latency of those.
    pub latency: stats::Latency,
}

/// One timeline bucket (by send time, except `arrived`).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    sent: u64,
    sent_on: u64,
    delivered: u64,
    delivered_on: u64,
    dup: u64,
    arrived: u64,
}

struct Out {
    t: Tracked,
    hist: Histogram<u64>,
    interval_hists: Vec<Histogram<u64>>,
    interval_counts: Vec<(u64, u64)>,
    buckets: Vec<Bucket>,
    ready: usize,
    errors: u64,
    notes: Vec<String>,
}

/// Runs tracked mode and prints the report.
pub fn run(a: &RelayArgs) -> anyhow::Result<()> {
    if a.rate == 0 {
        bail!("tracked mode (--reconnect/--churn/--timeline/--device-target) needs --rate > 0");
    }
    if a.find_peak.is_some() || a.direction != "p2d" {
        bail!("tracked mode is phone → device only, without --find-peak");
    }
    if a.size < msg::SEQ_LEN {
        bail!("tracked mode needs --size ≥ {}", msg::SEQ_LEN);
    }
    // Unix ns of the benchmark epoch, so buckets line up with the harness's clock.
    let unix_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let epoch_unix_ns = unix_ns - msg::now_ns();
    let counters = Arc::new(Counters::default());
    let threads = a.threads.max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start_ns = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = split(a.pairs, threads)
        .into_iter()
        .map(|range| {
            let (a, counters, barrier, start) = (
                a.clone(),
                counters.clone(),
                barrier.clone(),
                start_ns.clone(),
            );
            std::thread::spawn(move || worker(&a, range, &counters, &barrier, &start))
        })
        .collect();
    barrier.wait();
    start_ns.get_or_init(msg::now_ns);
    let progress = Progress::start("relay", counters);
    let mut total: Option<Out> = None;
    for h in handles {
        let o = h
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        for n in &o.notes {
            eprintln!("relay: {n}");
        }
        total = Some(match total {
            None => o,
            Some(mut t) => {
                merge(&mut t, &o)?;
                t
            }
        });
    }
    drop(progress);
    let Some(mut o) = total else {
        bail!("no load threads")
    };
    let start = *start_ns.get().unwrap_or(&0);
    o.t.lost = o.t.sent_total.saturating_sub(o.t.delivered);
    o.t.lost_device_online =
        o.t.sent_device_online
            .saturating_sub(o.t.delivered_device_online);
    o.t.intervals = o
        .interval_hists
        .iter()
        .zip(&o.interval_counts)
        .enumerate()
        .map(|(i, (h, &(sent, delivered)))| Interval {
            start_s: i as f64 * a.interval,
            sent,
            delivered,
            latency: stats::Latency::of(h),
        })
        .collect();
    if let Some(path) = &a.timeline {
        write_timeline(path, &o.buckets, epoch_unix_ns + start, a.bucket_ms)?;
    }
    let latency = stats::Latency::of(&o.hist);
    let r = RelayReport {
        pairs_ready: o.ready,
        rate: a.rate,
        peak_msgs_s: None,
        sent: o.t.sent_total,
        received: o.t.delivered,
        throughput_msgs_s: o.t.delivered as f64 / (a.warmup + a.duration),
        errors: o.errors,
        // Tracked mode waits for every message itself and reports loss and lateness per
        // message (`tracked`).
        late: 0,
        skipped: 0,
        latency,
        send_lag: None,
        // Tracked mode runs the upgrade and fault benches, not the cost matrix.
        server: Default::default(),
        server_cpu_us_per_msg: None,
        server_syscalls_per_msg: None,
        tracked: Some(o.t.clone()),
    };
    let c = &a.common;
    report::write_files("relay", &o.hist, c.hdr_out.as_deref(), c.svg.as_deref())?;
    let t = &o.t;
    let mut rows = vec![
        (
            "pairs ready at start",
            format!("{} / {}", r.pairs_ready, a.pairs),
        ),
        ("rate", format!("{} msgs/s", r.rate)),
        ("sent", t.sent_total.to_string()),
        ("  device logged in", t.sent_device_online.to_string()),
        ("delivered (distinct)", t.delivered.to_string()),
        ("lost", t.lost.to_string()),
        ("  device logged in", t.lost_device_online.to_string()),
        ("duplicated", t.duplicated.to_string()),
        ("skipped (phone off)", t.skipped_phone_offline.to_string()),
        ("re-opened", t.reopened.to_string()),
        ("churned pairs", t.churned.to_string()),
        ("errors", r.errors.to_string()),
    ];
    rows.extend(report::latency_rows(&r.latency));
    for iv in &t.intervals {
        eprintln!(
            "interval {:>6.0}s: sent {} delivered {} p50 {:.0} µs p99 {:.0} µs p99.9 {:.0} µs",
            iv.start_s,
            iv.sent,
            iv.delivered,
            iv.latency.p50_us,
            iv.latency.p99_us,
            iv.latency.p999_us
        );
    }
    report::emit(c.json, "relay (tracked)", &rows, &serde_json::to_value(&r)?);
    Ok(())
}

fn merge(t: &mut Out, o: &Out) -> anyhow::Result<()> {
    let (a, b) = (&mut t.t, &o.t);
    a.sent_total += b.sent_total;
    a.sent_device_online += b.sent_device_online;
    a.delivered += b.delivered;
    a.delivered_device_online += b.delivered_device_online;
    a.duplicated += b.duplicated;
    a.skipped_phone_offline += b.skipped_phone_offline;
    a.reopened += b.reopened;
    a.churned += b.churned;
    t.hist.add(&o.hist)?;
    t.ready += o.ready;
    t.errors += o.errors;
    t.notes.extend(o.notes.iter().cloned());
    if t.buckets.len() < o.buckets.len() {
        t.buckets.resize(o.buckets.len(), Bucket::default());
    }
    for (x, y) in t.buckets.iter_mut().zip(&o.buckets) {
        x.sent += y.sent;
        x.sent_on += y.sent_on;
        x.delivered += y.delivered;
        x.delivered_on += y.delivered_on;
        x.dup += y.dup;
        x.arrived += y.arrived;
    }
    while t.interval_hists.len() < o.interval_hists.len() {
        t.interval_hists.push(stats::latency_histogram());
        t.interval_counts.push((0, 0));
    }
    for i in 0..o.interval_hists.len() {
        t.interval_hists[i].add(&o.interval_hists[i])?;
        t.interval_counts[i].0 += o.interval_counts[i].0;
        t.interval_counts[i].1 += o.interval_counts[i].1;
    }
    Ok(())
}

fn write_timeline(
    path: &Path,
    buckets: &[Bucket],
    start_unix_ns: u64,
    bucket_ms: u64,
) -> anyhow::Result<()> {
    let mut s = String::from(
        "unix_ms,sent,sent_device_online,delivered,delivered_device_online,dup,arrived\n",
    );
    let base = start_unix_ns / 1_000_000;
    for (i, b) in buckets.iter().enumerate() {
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            base + i as u64 * bucket_ms,
            b.sent,
            b.sent_on,
            b.delivered,
            b.delivered_on,
            b.dup,
            b.arrived
        ));
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// A pair's state in one worker.
struct Pair {
    phone: Option<usize>,
    device: Option<usize>,
    phone_retry: u64,
    device_retry: u64,
    next_seq: u32,
    /// Bit per sequence number received.
    seen: Vec<u64>,
    msg: Vec<u8>,
}

/// Marks `seq` seen; `false` if it already was.
fn mark(seen: &mut Vec<u64>, seq: u32) -> bool {
    let (word, bit) = ((seq / 64) as usize, seq % 64);
    if seen.len() <= word {
        seen.resize(word + 1, 0);
    }
    let fresh = seen[word] & (1 << bit) == 0;
    seen[word] |= 1 << bit;
    fresh
}

fn bucket_at(buckets: &mut Vec<Bucket>, i: usize) -> &mut Bucket {
    if buckets.len() <= i {
        buckets.resize(i + 1, Bucket::default());
    }
    &mut buckets[i]
}

#[allow(clippy::too_many_lines, clippy::needless_range_loop)]
fn worker(
    a: &RelayArgs,
    range: std::ops::Range<usize>,
    counters: &Counters,
    barrier: &Barrier,
    start_ns: &std::sync::OnceLock<u64>,
) -> anyhow::Result<Out> {
    let c = &a.common;
    let phone_addrs: &[SocketAddr] = &c.target;
    let device_addrs: &[SocketAddr] = if a.device_target.is_empty() {
        &c.target
    } else {
        &a.device_target
    };
    let salt = c.salt.as_bytes();
    let mut fleet = Fleet::new()?;
    // token → (local pair, is phone)
    let mut owner: Vec<(usize, bool)> = Vec::new();
    let mut pairs: Vec<Pair> = range
        .clone()
        .enumerate()
        .map(|(k, i)| {
            let mut m = Vec::new();
            msg::build(&mut m, c.device(i), c.user(i), k as u32, 0, a.size);
            Pair {
                phone: None,
                device: None,
                phone_retry: 0,
                device_retry: 0,
                next_seq: 0,
                seen: Vec::new(),
                msg: m,
            }
        })
        .collect();
    let open =
        |fleet: &mut Fleet, owner: &mut Vec<(usize, bool)>, k: usize, phone: bool| -> usize {
            let i = range.start + k;
            let (addrs, id) = if phone {
                (phone_addrs, c.user(i))
            } else {
                (device_addrs, c.device(i))
            };
            let t = fleet.open(addrs[i % addrs.len()], id, salt, 300);
            if owner.len() <= t {
                owner.resize(t + 1, (usize::MAX, false));
            }
            owner[t] = (k, phone);
            t
        };
    // Initial logins, at most OPEN_WINDOW mid-handshake.
    let deadline = msg::now_ns() + 30_000_000_000;
    for k in 0..pairs.len() {
        for phone in [false, true] {
            while fleet.pending >= OPEN_WINDOW && msg::now_ns() < deadline {
                fleet.poll(10, |_, _, _| {}, |_| {})?;
            }
            let t = open(&mut fleet, &mut owner, k, phone);
            if phone {
                pairs[k].phone = Some(t)
            } else {
                pairs[k].device = Some(t)
            }
        }
    }
    fleet.settle(Duration::from_nanos(deadline.saturating_sub(msg::now_ns())))?;
    let ready = pairs
        .iter()
        .filter(|p| {
            p.phone.is_some_and(|t| fleet.is_ready(t))
                && p.device.is_some_and(|t| fleet.is_ready(t))
        })
        .count();
    barrier.wait();
    let start = loop {
        if let Some(&s) = start_ns.get() {
            break s;
        }
        std::hint::spin_loop();
    };
    let measure_from = start + (a.warmup * 1e9) as u64;
    let send_end = measure_from + (a.duration * 1e9) as u64;
    let end = send_end + (a.drain * 1e9) as u64;
    let bucket_ns = a.bucket_ms.max(1) * 1_000_000;
    let interval_ns = ((a.interval.max(0.001)) * 1e9) as u64;
    let n = pairs.len();
    let send_every = 1e9 * a.threads.max(1) as f64 / a.rate as f64;
    let failed_before = fleet.failed;
    let mut t = Tracked::default();
    let mut hist = stats::latency_histogram();
    let mut interval_hists: Vec<Histogram<u64>> = Vec::new();
    let mut interval_counts: Vec<(u64, u64)> = Vec::new();
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut next_send = start as f64;
    let mut next_house = start;
    let mut next_churn = start + 1_000_000_000;
    let (mut rr, mut churn_cursor, mut churn_carry) = (0usize, 0usize, 0.0f64);
    let mut now = start;
    while now < end && n > 0 {
        if now >= next_house {
            next_house = now + 50_000_000;
            for k in 0..n {
                for phone in [true, false] {
                    let p = &mut pairs[k];
                    let (tok, retry) = if phone {
                        (&mut p.phone, &mut p.phone_retry)
                    } else {
                        (&mut p.device, &mut p.device_retry)
                    };
                    if tok.is_some_and(|x| !fleet.is_open(x)) {
                        *tok = None;
                        *retry = now + RETRY_NS;
                    }
                    if tok.is_none()
                        && a.reconnect
                        && now >= *retry
                        && now < send_end
                        && fleet.pending < OPEN_WINDOW
                    {
                        let x = open(&mut fleet, &mut owner, k, phone);
                        let p = &mut pairs[k];
                        if phone {
                            p.phone = Some(x)
                        } else {
                            p.device = Some(x)
                        }
                        t.reopened += 1;
                    }
                }
            }
        }
        if a.churn > 0.0 && now >= next_churn && now < send_end {
            next_churn += 1_000_000_000;
            churn_carry += a.churn * n as f64;
            while churn_carry >= 1.0 {
                churn_carry -= 1.0;
                let k = churn_cursor % n;
                churn_cursor += 1;
                for phone in [true, false] {
                    let tok = if phone {
                        pairs[k].phone.take()
                    } else {
                        pairs[k].device.take()
                    };
                    if let Some(x) = tok {
                        fleet.close(x);
                    }
                    let x = open(&mut fleet, &mut owner, k, phone);
                    if phone {
                        pairs[k].phone = Some(x)
                    } else {
                        pairs[k].device = Some(x)
                    }
                }
                t.churned += 1;
            }
        }
        let mut batch = 0u64;
        while now < send_end && next_send <= now as f64 && batch < 4096 {
            let k = rr % n;
            rr += 1;
            let at = next_send as u64;
            next_send += send_every;
            let p = &mut pairs[k];
            let Some(ptok) = p.phone.filter(|&x| fleet.is_ready(x)) else {
                t.skipped_phone_offline += 1;
                continue;
            };
            let on = p.device.is_some_and(|x| fleet.is_ready(x));
            msg::stamp(&mut p.msg, at);
            msg::set_seq(&mut p.msg, p.next_seq, u8::from(on));
            if fleet.queue(ptok, OpCode::Binary, &p.msg) {
                p.next_seq += 1;
                batch += 1;
                t.sent_total += 1;
                let b = bucket_at(&mut buckets, ((at - start) / bucket_ns) as usize);
                b.sent += 1;
                if on {
                    t.sent_device_online += 1;
                    b.sent_on += 1;
                }
                let iv = ((at - start) / interval_ns) as usize;
                while interval_counts.len() <= iv {
                    interval_counts.push((0, 0));
                    interval_hists.push(stats::latency_histogram());
                }
                interval_counts[iv].0 += 1;
            }
        }
        counters.sent.fetch_add(batch, Ordering::Relaxed);
        fleet.flush();
        let mut got = 0u64;
        fleet.poll(
            if batch > 0 { 0 } else { 1 },
            |token, _, payload| {
                let Some((ts, k)) = msg::parse(payload) else {
                    return;
                };
                let Some((seq, flag)) = msg::seq_of(payload) else {
                    return;
                };
                let Some(p) = pairs.get_mut(k as usize) else {
                    return;
                };
                let _ = owner.get(token);
                let now = msg::now_ns();
                let arrived = now.saturating_sub(start) / bucket_ns;
                bucket_at(&mut buckets, arrived as usize).arrived += 1;
                let b = bucket_at(
                    &mut buckets,
                    (ts.saturating_sub(start) / bucket_ns) as usize,
                );
                if !mark(&mut p.seen, seq) {
                    b.dup += 1;
                    t.duplicated += 1;
                    return;
                }
                b.delivered += 1;
                t.delivered += 1;
                if flag == 1 {
                    b.delivered_on += 1;
                    t.delivered_device_online += 1;
                }
                let iv = (ts.saturating_sub(start) / interval_ns) as usize;
                if let (Some(h), Some(cnt)) =
                    (interval_hists.get_mut(iv), interval_counts.get_mut(iv))
                {
                    stats::record(h, now.saturating_sub(ts));
                    cnt.1 += 1;
                }
                if ts >= measure_from {
                    stats::record(&mut hist, now.saturating_sub(ts));
                }
                got += 1;
            },
            |_| {},
        )?;
        counters.done.fetch_add(got, Ordering::Relaxed);
        now = msg::now_ns();
    }
    let errors = (fleet.failed - failed_before) as u64;
    counters.errors.fetch_add(errors, Ordering::Relaxed);
    let notes = fleet.errors.clone();
    fleet.close_all();
    Ok(Out {
        t,
        hist,
        interval_hists,
        interval_counts,
        buckets,
        ready,
        errors,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_count_duplicates() {
        let mut seen = Vec::new();
        assert!(mark(&mut seen, 0));
        assert!(mark(&mut seen, 200));
        assert!(!mark(&mut seen, 200));
        assert!(!mark(&mut seen, 0));
        assert!(mark(&mut seen, 63) && mark(&mut seen, 64));
        assert_eq!(seen.len(), 4);
    }
}
