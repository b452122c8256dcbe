//! A UDP device's state and alarm syncs (`0x30` / `0x31`) on the embedded node: accepted
//! only on a live, logged-in session and under the sequence rule, attributed to the
//! session's device in the upload log, and acked; spoofed, stale and anonymous ones are
//! dropped and counted. (The cluster path, into RabbitMQ, is `cluster_uploads.rs`.)

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::udp::Device;
use support::*;

const MAC: [u8; 8] = [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x30, 0x01];

/// A node with an upload log of its own.
fn node_logging(name: &str) -> (edge::node::Node, PathBuf) {
    let log = std::env::temp_dir().join(format!(
        "cloudsocket-{name}-{}-{}.log",
        std::process::id(),
        unix_now()
    ));
    let path = log.clone();
    (node_with(|c| c.upload_log = path), log)
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn lines_with(log: &Path, hex: &str) -> Vec<String> {
    log_lines(log)
        .into_iter()
        .filter(|l| l.ends_with(hex))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_logged_in_devices_sync_is_logged_under_its_id_and_acked() {
    let (node, log) = node_logging("udp-sync");
    let mut device = Device::new(node.udp_addr.unwrap(), MAC);
    let id = device.online();
    for msg_id in [0x30u16, 0x31] {
        let upload = device.upload(msg_id, b"power=on;temp=21");
        device.send(&upload);
        let ack = device.upload_ack(&upload, id).expect("the upload's ACK");
        assert_eq!(ack[2..4], upload[2..4], "the request's sequence, echoed");
        let mut stored = upload.clone();
        stored[16..24].copy_from_slice(&id.to_le_bytes());
        edge_proto::frame::seal(&mut stored).unwrap();
        let lines = lines_with(&log, &hex(&stored));
        assert_eq!(lines.len(), 1, "logged once: {lines:?}");
        let fields: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(fields[1], id.to_string(), "attributed to the device");
        assert_eq!(fields[2], msg_id.to_string());
    }
    // The same datagram again breaks the sequence rule: dropped, counted, not logged.
    let before = log_lines(&log).len();
    let replay = device.upload(0x30, b"again");
    device.send(&replay);
    assert!(device.upload_ack(&replay, id).is_some());
    device.send(&replay);
    assert!(eventually(|| counter(&node, |m| &m.udp_drop_stale_seq) >= 1));
    assert_eq!(log_lines(&log).len(), before + 1);
    node.shutdown();
}

#[test]
fn syncs_without_a_logged_in_session_are_dropped_and_counted() {
    let (node, log) = node_logging("udp-spoofed-sync");
    let udp = node.udp_addr.unwrap();
    // A session that never logged in.
    let mut anonymous = Device::new(udp, MAC);
    anonymous.new_session();
    let upload = anonymous.upload(0x30, b"who am I");
    anonymous.send(&upload);
    assert!(eventually(
        || counter(&node, |m| &m.udp_drop_not_logged_in) == 1
    ));
    anonymous
        .socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(anonymous.recv().is_none(), "no ACK for an anonymous sync");

    // 100 spoofed syncs with made-up sids, from other addresses: none is stored.
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = Device::new(udp, MAC);
    for i in 0..100u8 {
        forged.sid.0 = [i; 16];
        spoofer
            .send_to(&forged.upload(0x31, b"fake alarm"), udp)
            .unwrap();
    }
    assert!(eventually(|| {
        counter(&node, |m| &m.udp_drop_unknown_session) == 100
    }));
    // A sync with no sid at all is malformed.
    let short = forged.request(0x30, &[1, 2, 3]);
    spoofer.send_to(&short, udp).unwrap();
    assert!(eventually(|| counter(&node, |m| &m.udp_drop_malformed) == 1));
    assert_eq!(counter(&node, |m| &m.uploads), 0);
    assert!(log_lines(&log).is_empty(), "nothing stored");
    node.shutdown();
}
