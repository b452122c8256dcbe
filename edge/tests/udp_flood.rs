//! Spoofed new-session floods (`0xE0`): one address is held to its token bucket
//! (`--new-session-rate`, `--new-session-burst`), and a flood from many addresses cannot
//! lock a real device out: sessions that never log in only churn each other, and a device
//! that logs in keeps its session.

mod support;

use std::net::{SocketAddr, UdpSocket};

use support::udp::Device;
use support::*;

fn new_session_request(device: &mut Device) -> Vec<u8> {
    let mut body = device.mac.to_vec();
    body.extend_from_slice(&[0x10; 16]);
    device.request(0xE0, &body)
}

#[test]
fn one_address_is_held_to_its_bucket() {
    let node = node_with(|c| {
        c.new_session_rate = 1;
        c.new_session_burst = 10;
    });
    let udp = node.udp_addr.unwrap();
    let mut device = Device::new(udp, [1; 8]);
    // One socket: one source address and port, so one shard sees all of it.
    for _ in 0..50 {
        let request = new_session_request(&mut device);
        device.send(&request);
    }
    let sessions = |node: &edge::node::Node| {
        node.metrics
            .shards
            .iter()
            .map(|m| m.udp_sessions.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<i64>()
    };
    assert!(eventually(|| {
        counter(&node, |m| &m.udp_drop_rate_limited) + sessions(&node) as u64 == 50
    }));
    let opened = sessions(&node);
    assert!(
        (10..=12).contains(&opened),
        "{opened} sessions from one address"
    );
    // Another address is not affected.
    let mut other = Device::new(udp, [2; 8]);
    other.socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .socket
        .set_read_timeout(Some(std::time::Duration::from_millis(1500)))
        .unwrap();
    other.new_session();
    node.shutdown();
}

#[test]
fn a_flood_from_many_addresses_does_not_lock_a_real_device_out() {
    // 64 sessions per shard: 48 may be anonymous.
    let node = node_with(|c| c.max_udp_sessions = 128);
    let udp = node.udp_addr.unwrap();
    // A device that logged in before the flood.
    let mut early = Device::new(udp, [3; 8]);
    let early_id = early.online();
    // 2 000 spoofed 0xE0 from 500 addresses (127.0.x.y), never followed by a login.
    let mut spoofer = Device::new(udp, [4; 8]);
    let sources: Vec<UdpSocket> = (0..500u32)
        .map(|n| {
            let ip = [127, 1, (n / 250) as u8, (n % 250 + 2) as u8];
            UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap()
        })
        .collect();
    for round in 0..4 {
        for source in &sources {
            let request = new_session_request(&mut spoofer);
            let _ = source.send_to(&request, udp);
        }
        if round == 1 {
            // In the middle of the flood, a new device comes online.
            let mut late = Device::new(udp, [5; 8]);
            assert!(late.online() < 0, "a session, registered and logged in");
        }
    }
    assert!(eventually(
        || counter(&node, |m| &m.udp_anonymous_evicted) > 1000
    ));
    assert_eq!(counter(&node, |m| &m.udp_drop_full), 0, "nobody refused");
    // The churn leaves one timer entry per slot, not one per session it went through
    // (2 000 without the hand-over of an evicted slot's entry; the gauge is set each tick).
    let timers = |node: &edge::node::Node| -> i64 {
        let shards = node.metrics.shards.iter();
        shards
            .map(|s| s.timer_entries.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let bound = 2 * 64 + 16;
    assert!(eventually(|| (1..=bound).contains(&timers(&node))));
    assert!(timers(&node) <= bound, "{} timer entries", timers(&node));
    // The device that logged in before kept its session all along.
    assert_eq!(early.heartbeat(), 0);
    let (code, body) = http(
        node.udpaddr_http.unwrap(),
        "GET",
        &format!("/api/device/udpaddr?deviceId={early_id}"),
        b"",
    );
    assert_eq!(code, 200);
    assert!(body.contains("\"status\":0"), "{body}");
    node.shutdown();
}
