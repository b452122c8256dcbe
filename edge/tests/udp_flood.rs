//! New-session floods (`0xE0`): one address is held to its token bucket
//! (`--new-session-rate`, `--new-session-burst`); a flood from many spoofed addresses is
//! answered with cookie sids and stores nothing (a forged source never sees its cookie,
//! so it never comes back); and a flood from real addresses that do come back but never
//! log in cannot lock a real device out either: sessions that have not logged in churn
//! among themselves, and a device that logs in keeps its session.

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
    assert!(eventually(|| {
        counter(&node, |m| &m.udp_drop_rate_limited) + counter(&node, |m| &m.udp_cookies_issued)
            == 50
    }));
    let answered = counter(&node, |m| &m.udp_cookies_issued);
    assert!(
        (10..=12).contains(&answered),
        "{answered} answered for one address"
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

fn sessions(node: &edge::node::Node) -> i64 {
    let shards = node.metrics.shards.iter();
    shards
        .map(|m| m.udp_sessions.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

fn timer_entries(node: &edge::node::Node) -> i64 {
    let shards = node.metrics.shards.iter();
    shards
        .map(|s| s.timer_entries.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// `n` sockets on their own addresses (127.1.x.y), as many sources would be.
fn sources(n: u32) -> Vec<UdpSocket> {
    (0..n)
        .map(|n| {
            let ip = [127, 1, (n / 250) as u8, (n % 250 + 2) as u8];
            let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                .unwrap();
            s
        })
        .collect()
}

#[test]
fn a_spoofed_flood_stores_nothing() {
    let node = node_with(|c| c.max_udp_sessions = 128);
    let udp = node.udp_addr.unwrap();
    // 2 000 0xE0 from 500 addresses that never come back (forged ones cannot).
    let mut spoofer = Device::new(udp, [4; 8]);
    let flood = sources(500);
    for _ in 0..4 {
        for source in &flood {
            let _ = source.send_to(&new_session_request(&mut spoofer), udp);
        }
    }
    assert!(eventually(
        || counter(&node, |m| &m.udp_cookies_issued) == 2000
    ));
    assert_eq!(sessions(&node), 0, "no session stored");
    // In the middle of it all, a device comes online.
    let mut late = Device::new(udp, [5; 8]);
    assert!(late.online() < 0);
    assert_eq!(sessions(&node), 1);
    assert_eq!(counter(&node, |m| &m.udp_anonymous_evicted), 0);
    // A cookie brought back from another address opens nothing; from its own, it does.
    let mut asked = Device::new(udp, [6; 8]);
    asked.new_session();
    let mut thief = Device::new(udp, [7; 8]);
    thief.sid = asked.sid;
    let hb = thief.request(0xE5, &asked.sid.0);
    thief.send(&hb);
    assert!(eventually(|| counter(&node, |m| &m
        .udp_drop_unknown_session)
        == 1));
    assert_eq!(sessions(&node), 1);
    assert_eq!(asked.heartbeat(), 0);
    assert_eq!(sessions(&node), 2);
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
    // 500 addresses that take their cookie and come back with a heartbeat, 4 times each,
    // never logging in: 2 000 anonymous sessions through a table of 128.
    let flood = sources(500);
    let mut churner = Device::new(udp, [4; 8]);
    let mut buf = [0u8; 256];
    for round in 0..4 {
        for source in &flood {
            let _ = source.send_to(&new_session_request(&mut churner), udp);
        }
        for source in &flood {
            let Ok(n) = source.recv(&mut buf) else {
                continue;
            };
            if n == 36 + 28 {
                let sid: [u8; 16] = buf[40..56].try_into().unwrap();
                let _ = source.send_to(&churner.request(0xE5, &sid), udp);
            }
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
    let bound = 2 * 64 + 16;
    assert!(eventually(|| (1..=bound).contains(&timer_entries(&node))));
    assert!(
        timer_entries(&node) <= bound,
        "{} timer entries",
        timer_entries(&node)
    );
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
