//! `loadgen udp`: M UDP device sessions (0xE0/0xE1/0xE2 setup), then a heartbeat (0xE5)
//! storm — replies/s and round-trip latency — or a forward storm: opcode-3 packets from
//! the devices to bound WebSocket phones, deliveries/s and latency.
//! Until the target serves UDP this fails with a clear message.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::udpset::UdpSet;
use crate::args::Common;
use crate::fleet::{Fleet, open_all};
use crate::report::{self, Counters, Progress};
use crate::{admin, msg, stats, udpdev};

/// `udp` options.
#[derive(Debug, Clone, Args)]
pub struct UdpArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// The target's UDP address.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub udp_target: std::net::SocketAddr,
    /// Sessions.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Client sockets the sessions share.
    #[arg(long, default_value_t = 16)]
    pub sockets: usize,
    /// heartbeat or forward.
    #[arg(long, default_value = "heartbeat", value_parser = ["heartbeat", "forward"])]
    pub mode: String,
    /// Requests in flight per session.
    #[arg(long, default_value_t = 4)]
    pub window: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Forward packet size in bytes (≥ 92: the load stamp rides in the body).
    #[arg(long, default_value_t = 92)]
    pub size: usize,
    /// Forward mode: phones logged in per device's user (a fan-out: each packet is
    /// delivered to every one of them; `handled` counts deliveries).
    #[arg(long, default_value_t = 1)]
    pub phones_per_user: usize,
}

/// What a UDP run measured.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    /// Sessions established.
    pub sessions_ready: usize,
    /// Devices that started over with a new session while setting up.
    pub setup_restarts: u64,
    /// Packets sent.
    pub sent: u64,
    /// Replies (heartbeat) or deliveries (forward).
    pub handled: u64,
    /// Per second.
    pub handled_per_s: f64,
    /// Lost (sent − handled at the end).
    pub lost: u64,
    /// Round-trip (heartbeat) or one-way (forward) latency.
    pub latency: stats::Latency,
    /// The server's CPU (and system calls) over the run (`--server-pid`).
    pub server: crate::server_cost::ServerCost,
    /// Microseconds of server CPU per packet handled.
    pub server_cpu_us_per_msg: Option<f64>,
    /// Server system calls per packet handled (`--syscalls`).
    pub server_syscalls_per_msg: Option<f64>,
}

/// Runs the scenario.
pub fn run(a: &UdpArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let mut set = UdpSet::new(a.udp_target, a.sessions, a.sockets, c.base_id)?;
    let ready = set.establish(Duration::from_secs(20));
    if ready == 0 {
        bail!(
            "no UDP session could be established with {} (is the target serving UDP? {:?})",
            a.udp_target,
            set.notes
        );
    }
    let forward = a.mode == "forward";
    let mut fleet = Fleet::new()?;
    if forward {
        for i in 0..a.sessions {
            if set.sessions[i].step >= 3 {
                admin::bind(c.admin, set.sessions[i].device, c.user(i))?;
            }
        }
        let per_user = a.phones_per_user.clamp(1, 15);
        let ids: Vec<i64> = (0..a.sessions)
            .flat_map(|i| std::iter::repeat_n(c.user(i), per_user))
            .collect();
        open_all(
            &mut fleet,
            &c.target,
            &ids,
            c.salt.as_bytes(),
            256,
            Duration::from_secs(30),
        )?;
    }
    let counters = Arc::new(Counters::default());
    let cost = crate::server_cost::measure_after(&c.server_pid, c.syscalls, 0.0, a.duration);
    let progress = Progress::start(&format!("udp {}", a.mode), counters.clone());
    let mut hist = stats::latency_histogram();
    let (mut sent, mut handled) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let end = msg::now_ns() + (a.duration * 1e9) as u64;
    let mut sent_at: Vec<u64> = vec![0; a.sessions];
    let fanout = if forward {
        a.phones_per_user.clamp(1, 15) as u32
    } else {
        1
    };
    while msg::now_ns() < end {
        let mut batch = 0u64;
        #[allow(clippy::needless_range_loop)] // `i` indexes the session set and `sent_at` alike
        for i in 0..a.sessions {
            let s = &set.sessions[i];
            // In flight counts deliveries: a forward makes `fanout` of them.
            if s.step < 3 || s.inflight >= a.window * fanout {
                continue;
            }
            let (sid, dev, seq) = (s.sid, s.device, set.next_seq(i));
            let now = msg::now_ns();
            if forward {
                udpdev::forward(&mut out, seq, &sid, dev, 0, i as u32, now, a.size);
            } else {
                udpdev::heartbeat(&mut out, c.base_id + i as i64, seq, &sid, dev);
                sent_at[i] = now;
            }
            if set.send(i, &out) {
                set.sessions[i].inflight += if forward { fanout } else { 1 };
                batch += 1;
            }
        }
        sent += batch;
        counters.sent.fetch_add(batch, Ordering::Relaxed);
        let mut got = 0u64;
        if forward {
            fleet.poll(
                0,
                |_, _, p| {
                    if let Some((ts, k)) = msg::parse_at(p, udpdev::FORWARD_BODY) {
                        stats::record(&mut hist, msg::now_ns().saturating_sub(ts));
                        if let Some(s) = set.sessions.get_mut(k as usize) {
                            s.inflight = s.inflight.saturating_sub(1);
                        }
                        got += 1;
                    }
                },
                |_| {},
            )?;
        } else {
            set.drain(&mut buf, |set, idx, reply, _| {
                if let (Some(i), Some(r)) = (idx, reply)
                    && r.msg_id == 0xE5
                {
                    let s = &mut set.sessions[i];
                    s.inflight = s.inflight.saturating_sub(1);
                    stats::record(&mut hist, msg::now_ns().saturating_sub(sent_at[i]));
                    got += 1;
                }
            });
            // Lost heartbeats: let a session send again after 100 ms of silence.
            let now = msg::now_ns();
            for (i, s) in set.sessions.iter_mut().enumerate() {
                if s.inflight > 0 && now.saturating_sub(sent_at[i]) > 100_000_000 {
                    s.inflight = 0;
                }
            }
        }
        if batch == 0 && got == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
        handled += got;
        counters.done.fetch_add(got, Ordering::Relaxed);
    }
    drop(progress);
    let cost = cost.and_then(|h| h.join().ok()).unwrap_or_default();
    let r = UdpReport {
        sessions_ready: ready,
        setup_restarts: set.restarts,
        sent,
        handled,
        handled_per_s: handled as f64 / a.duration,
        lost: sent.saturating_sub(handled),
        latency: stats::Latency::of(&hist),
        server_cpu_us_per_msg: cost.us_per(handled),
        server_syscalls_per_msg: cost.syscalls_per(handled),
        server: cost,
    };
    report::write_files("udp", &hist, c.hdr_out.as_deref(), c.svg.as_deref())?;
    let mut rows = vec![
        ("sessions ready", format!("{ready} / {}", a.sessions)),
        ("sent", r.sent.to_string()),
        (
            if forward { "delivered" } else { "replied" },
            r.handled.to_string(),
        ),
        ("per second", format!("{:.0}", r.handled_per_s)),
        ("lost or late", r.lost.to_string()),
    ];
    if let Some(us) = r.server_cpu_us_per_msg {
        rows.push(("server CPU per packet", format!("{us:.3} µs")));
    }
    rows.extend(report::latency_rows(&r.latency));
    report::emit(
        c.json,
        &format!("udp {}", a.mode),
        &rows,
        &serde_json::to_value(&r)?,
    );
    fleet.close_all();
    Ok(())
}
