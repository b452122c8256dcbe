//! `loadgen upload --udp-target`: UDP devices (logged in through 0xE0/0xE1/0xE2) send
//! state syncs (`--msg-id`, 0x30 by default) at a steady total rate and count the ACKs:
//! the sync echoed with the ACK flag, the device id as its source and the request's own
//! sequence number. Each sync's payload is `upload::upload_body` (as for WebSocket
//! uploads), so a consumer can tell every one apart. Sessions get a heartbeat every 5 s.
//! Nothing is re-sent: an unacked sync is reported as such, so `sent` is what reached the
//! wire and a consumer's count can be held against it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;

use super::udpset::UdpSet;
use super::upload::{UploadArgs, UploadReport, upload_body};
use crate::report::{self, Counters, Progress};
use crate::{msg, udpdev};

const HEARTBEAT_NS: u64 = 5_000_000_000;

/// Runs the UDP variant of `upload` and prints its report.
pub fn run(a: &UploadArgs, target: SocketAddr) -> anyhow::Result<()> {
    if a.rate == 0 || a.devices == 0 {
        bail!("--rate and --devices must be > 0");
    }
    let c = &a.common;
    let mut set = UdpSet::new(target, a.devices, a.devices.min(8), c.base_id)?;
    let ready = set.establish(Duration::from_secs(20));
    if ready == 0 {
        bail!("no UDP session with {target}: {:?}", set.notes);
    }
    let live: Vec<usize> = (0..a.devices)
        .filter(|&i| set.sessions[i].step >= 3)
        .collect();
    let mut r = UploadReport {
        reopened: set.restarts,
        ..UploadReport::default()
    };
    // (device id, request sequence) of every sync still waiting for its ACK.
    let mut in_flight: HashMap<(i64, u16), ()> = HashMap::new();
    let counters = Arc::new(Counters::default());
    let progress = Progress::start("upload (udp)", counters.clone());
    let start = msg::now_ns();
    let send_end = start + (a.duration * 1e9) as u64;
    let end = send_end + (a.drain * 1e9) as u64;
    let every = 1e9 / a.rate as f64;
    let (mut next, mut next_heartbeat) = (start as f64, start + HEARTBEAT_NS);
    let (mut rr, mut useq) = (0usize, 0u64);
    let (mut out, mut buf) = (Vec::new(), vec![0u8; 65536]);
    let mut now = start;
    while now < end {
        while now < send_end && next <= now as f64 {
            next += every;
            let i = live[rr % live.len()];
            rr += 1;
            let (sid, device, seq) = (set.sessions[i].sid, set.sessions[i].device, set.next_seq(i));
            let payload = upload_body(device, useq);
            udpdev::sync(
                &mut out,
                c.base_id + i as i64,
                seq,
                &sid,
                a.msg_id,
                &payload,
            );
            if set.send(i, &out) {
                useq += 1;
                r.sent += 1;
                in_flight.insert((device, seq), ());
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if now >= next_heartbeat && now < send_end {
            next_heartbeat = now + HEARTBEAT_NS;
            for &i in &live {
                let (sid, device, seq) =
                    (set.sessions[i].sid, set.sessions[i].device, set.next_seq(i));
                udpdev::heartbeat(&mut out, c.base_id + i as i64, seq, &sid, device);
                set.send(i, &out);
            }
        }
        set.drain(&mut buf, |_, _, _, data| {
            if !edge_proto::device::is_upload_ack(data) {
                return;
            }
            let seq = u16::from_le_bytes([data[2], data[3]]);
            let device = i64::from_le_bytes(data[16..24].try_into().unwrap_or_default());
            if in_flight.remove(&(device, seq)).is_some() {
                r.acked += 1;
                counters.done.fetch_add(1, Ordering::Relaxed);
            } else {
                r.unmatched_acks += 1;
            }
        });
        if now >= send_end && in_flight.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
        now = msg::now_ns();
    }
    drop(progress);
    r.skipped_offline = (a.devices - live.len()) as u64;
    let rows = vec![
        ("sent", r.sent.to_string()),
        ("acked", r.acked.to_string()),
        ("devices without a session", r.skipped_offline.to_string()),
        ("setup restarts", r.reopened.to_string()),
        ("unmatched acks", r.unmatched_acks.to_string()),
    ];
    report::emit(c.json, "upload (udp)", &rows, &serde_json::to_value(&r)?);
    Ok(())
}
