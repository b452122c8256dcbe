//! `loadgen upload`: WebSocket devices send device uploads (direct packets, opcode 2,
//! `--msg-id`) at a steady total rate and count the ACKs (data flag 0x40) they get back.
//! Each upload's body is `"CSUP"`, the device id (i64) and a sequence number (u64), so a
//! consumer can tell every upload apart. Closed devices are re-opened every 250 ms; an
//! upload is only sent by a logged-in device. Prints sent / acked (and a per-second line).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use edge_proto::ws::OpCode;
use serde::Serialize;

use crate::args::Common;
use crate::fleet::Fleet;
use crate::msg;
use crate::report::{self, Counters, Progress};

/// `upload` options.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// Shared options (`--target`: where the devices log in).
    #[command(flatten)]
    pub common: Common,
    /// Devices (ids −(base+1), −(base+2), …).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Uploads per second in total.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to keep waiting for ACKs after the last upload.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Message id of the uploads.
    #[arg(long, default_value = "0x30", value_parser = parse_u16)]
    pub msg_id: u16,
    /// Send the uploads as UDP state syncs from logged-in UDP sessions at this address
    /// instead of from WebSocket devices (`--target` is then unused).
    #[arg(long)]
    pub udp_target: Option<std::net::SocketAddr>,
}

pub(crate) fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| e.to_string())
}

/// What an upload run counted.
#[derive(Debug, Clone, Serialize, Default)]
pub struct UploadReport {
    /// Uploads written by logged-in devices.
    pub sent: u64,
    /// ACKs received.
    pub acked: u64,
    /// Sends skipped because the device was not logged in.
    pub skipped_offline: u64,
    /// Devices re-opened after a close.
    pub reopened: u64,
    /// UDP only: ACKs that matched no upload in flight (duplicates).
    pub unmatched_acks: u64,
}

/// The body of upload `seq` from `device`: "CSUP", the id, the sequence number.
pub fn upload_body(device: i64, seq: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(b"CSUP");
    b[4..12].copy_from_slice(&device.to_le_bytes());
    b[12..].copy_from_slice(&seq.to_le_bytes());
    b
}

/// Builds one upload: a direct packet from `device` with `msg_id`, body "CSUP" id seq.
pub fn build_upload(out: &mut Vec<u8>, device: i64, msg_id: u16, seq: u64) -> anyhow::Result<()> {
    out.clear();
    out.resize(36, 0);
    out[0] = 0x82;
    out[16..24].copy_from_slice(&device.to_le_bytes());
    out[28..30].copy_from_slice(&msg_id.to_le_bytes());
    out[30..32].copy_from_slice(&20u16.to_le_bytes());
    out.extend_from_slice(&upload_body(device, seq));
    edge_proto::frame::seal(out).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    Ok(())
}

/// Whether `frame` is an upload ACK (direct packet with the ACK data flag).
pub fn is_ack(frame: &[u8]) -> bool {
    frame.len() >= 36 && frame[0] & 0x0f == 2 && frame[24] & 0x40 != 0
}

/// Runs the scenario and prints its report.
pub fn run(a: &UploadArgs) -> anyhow::Result<()> {
    if a.rate == 0 || a.devices == 0 {
        bail!("--rate and --devices must be > 0");
    }
    if let Some(target) = a.udp_target {
        return super::udp_upload::run(a, target);
    }
    let c = &a.common;
    let counters = Arc::new(Counters::default());
    let mut fleet = Fleet::new()?;
    let ids: Vec<i64> = (0..a.devices).map(|i| c.device(i)).collect();
    let mut tokens: Vec<Option<usize>> = vec![None; a.devices];
    let mut retry = vec![0u64; a.devices];
    let mut owner: Vec<usize> = Vec::new();
    let mut r = UploadReport::default();
    let start = msg::now_ns();
    let send_end = start + (a.duration * 1e9) as u64;
    let end = send_end + (a.drain * 1e9) as u64;
    let every = 1e9 / a.rate as f64;
    let mut next = start as f64;
    let (mut rr, mut seq) = (0usize, 0u64);
    let mut buf = Vec::new();
    let progress = Progress::start("upload", counters.clone());
    let mut now = start;
    let mut next_house = 0;
    while now < end {
        if now >= next_house {
            next_house = now + 50_000_000;
            for k in 0..a.devices {
                if tokens[k].is_some_and(|t| !fleet.is_open(t)) {
                    tokens[k] = None;
                    retry[k] = now + 250_000_000;
                }
                if tokens[k].is_none() && now >= retry[k] && now < send_end {
                    let t =
                        fleet.open(c.target[k % c.target.len()], ids[k], c.salt.as_bytes(), 300);
                    if owner.len() <= t {
                        owner.resize(t + 1, usize::MAX);
                    }
                    owner[t] = k;
                    tokens[k] = Some(t);
                    r.reopened += 1;
                }
            }
        }
        while now < send_end && next <= now as f64 {
            next += every;
            let k = rr % a.devices;
            rr += 1;
            match tokens[k].filter(|&t| fleet.is_ready(t)) {
                Some(t) => {
                    build_upload(&mut buf, ids[k], a.msg_id, seq)?;
                    if fleet.queue(t, OpCode::Binary, &buf) {
                        seq += 1;
                        r.sent += 1;
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => r.skipped_offline += 1,
            }
        }
        fleet.flush();
        fleet.poll(
            1,
            |_, _, payload| {
                if is_ack(payload) {
                    r.acked += 1;
                    counters.done.fetch_add(1, Ordering::Relaxed);
                }
            },
            |_| {},
        )?;
        now = msg::now_ns();
        if now >= send_end && r.acked >= r.sent {
            break;
        }
    }
    drop(progress);
    r.reopened = r.reopened.saturating_sub(a.devices as u64);
    for n in &fleet.errors {
        eprintln!("upload: {n}");
    }
    fleet.close_all();
    std::thread::sleep(Duration::from_millis(10));
    let rows = vec![
        ("sent", r.sent.to_string()),
        ("acked", r.acked.to_string()),
        ("skipped (device off)", r.skipped_offline.to_string()),
        ("re-opened", r.reopened.to_string()),
    ];
    report::emit(c.json, "upload", &rows, &serde_json::to_value(&r)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_sealed_direct_packets() {
        let mut b = Vec::new();
        build_upload(&mut b, -7, 0x30, 9).unwrap();
        assert_eq!(b.len(), 56);
        assert!(edge_proto::frame::Packet::parse(&b).is_ok());
        assert!(!is_ack(&b));
        b[24] |= 0x40;
        assert!(is_ack(&b));
        assert_eq!(parse_u16("0x30"), Ok(0x30));
        assert_eq!(parse_u16("48"), Ok(48));
    }
}
