//! `loadgen spoof`: a spoofed new-session flood — `0xE0` datagrams from many source
//! addresses (sockets bound to `127.2.x.y`, so every "device" has its own address, as
//! spoofed sources would), never followed by a login, for `--duration` seconds at
//! `--rate` datagrams/s in total (0: as fast as one core sends). Replies are drained and
//! counted, not used. Prints what it sent.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::udpdev;

/// `spoof` options.
#[derive(Debug, Clone, Args)]
pub struct SpoofArgs {
    /// The target's UDP address.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub udp_target: SocketAddr,
    /// Source addresses (127.2.0.1 onwards, one socket each).
    #[arg(long, default_value_t = 1000)]
    pub sources: u32,
    /// Datagrams per second in total (0: flat out).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// What the flood did.
#[derive(Debug, Clone, Serialize)]
pub struct SpoofReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Sends the kernel refused (buffer full).
    pub send_errors: u64,
    /// Replies drained.
    pub replies: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

fn source(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 2, (i / 250) as u8, (i % 250 + 1) as u8], 0))
}

/// Runs the flood.
pub fn run(a: &SpoofArgs) -> anyhow::Result<()> {
    let sockets: Vec<UdpSocket> = (0..a.sources.max(1))
        .map(|i| {
            let s = UdpSocket::bind(source(i))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let mut r = SpoofReport {
        sent: 0,
        send_errors: 0,
        replies: 0,
        seconds: 0.0,
    };
    let (start, mut out, mut buf) = (Instant::now(), Vec::new(), [0u8; 256]);
    let end = start + Duration::from_secs_f64(a.duration);
    let mut index = 0i64;
    'flood: loop {
        for s in &sockets {
            let now = Instant::now();
            if now >= end {
                break 'flood;
            }
            if a.rate > 0 {
                let due = start + Duration::from_secs_f64(r.sent as f64 / a.rate as f64);
                std::thread::sleep(due.saturating_duration_since(now));
            }
            index += 1;
            out.clear();
            udpdev::new_session(&mut out, index, udpdev::mac(index as u64));
            match s.send_to(&out, a.udp_target) {
                Ok(_) => r.sent += 1,
                Err(_) => r.send_errors += 1,
            }
            while s.recv(&mut buf).is_ok() {
                r.replies += 1;
            }
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "spoof: {} sent ({:.0}/s) from {} addresses, {} refused by the kernel, {} replies",
            r.sent,
            r.sent as f64 / r.seconds,
            a.sources,
            r.send_errors,
            r.replies
        );
    }
    Ok(())
}
