//! Several UDP sessions of one device, through a real node (issue 11's reproductions):
//! re-logins in any order, and an expired session whose slot a stranger reuses. Each is
//! followed by `udpaddr`, heartbeats on every live session and a relay from a phone.
//! The same sequences run against the sans-IO core in `tests/core_model`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::udp::{Device, forward_packet};
use support::*;
use tungstenite::Message;

const MAC: [u8; 8] = [0x5a, 0x11, 0xc3, 0xd4, 0xe5, 0xf6, 0x00, 0x02];

fn udpaddr(node: &edge::node::Node, device_id: i64) -> String {
    let target = format!("/api/device/udpaddr?deviceId={device_id}");
    http(node.udpaddr_http.unwrap(), "GET", &target, b"").1
}

/// A device session whose replies may be slow on a loaded machine (every reply is
/// expected here; silence is only asserted of strangers, with their own short timeout).
fn patient(udp: SocketAddr, mac: [u8; 8]) -> Device {
    let device = Device::new(udp, mac);
    device
        .socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    device
}

fn addr_of(device: &Device) -> SocketAddr {
    device.socket.local_addr().unwrap()
}

/// The phone sends one message to the device; every session in `to` receives it.
fn relay_reaches(phone: &mut Ws, device_id: i64, to: &[&Device], text: &[u8]) {
    let m = forward_packet(0, device_id, 0, &[0; 16], text);
    phone.send(Message::binary(m)).unwrap();
    for device in to {
        let got = device.recv().expect("the device's session got the relay");
        assert_eq!(&got[76..], text);
    }
}

fn no_invariant_broken(node: &edge::node::Node) {
    assert_eq!(counter(node, |m| &m.invariant_broken), 0);
}

#[test]
fn relogins_of_several_sessions_in_any_order_keep_serving() {
    for cores in [1, 2] {
        let node = node_with(|c| c.cores = (0..cores).collect());
        let udp = node.udp_addr.unwrap();
        let mut sessions: Vec<Device> = (0..3).map(|_| patient(udp, MAC)).collect();
        sessions[0].new_session();
        let (status, device_id, cookie) = sessions[0].register(b"plug");
        assert_eq!(status, 0);
        for s in &mut sessions[1..] {
            s.new_session();
        }
        let user = 64 + 16 * cores as i64;
        let bind = format!("/admin/bind?device={device_id}&user={user}");
        assert_eq!(http(node.status_addr, "POST", &bind, b"").0, 200);
        let (mut phone, reply) = login(node.ws_addrs[0], user);
        assert_eq!(reply, vec![0, 1]);
        // The reproduction: logins 0, 1, 0, 2, 1, 0 (each reply waits on the node).
        for i in [0, 1, 0, 2, 1, 0] {
            assert_eq!(sessions[i].login(&cookie), 0, "login of session {i}");
        }
        let answer = udpaddr(&node, device_id);
        assert!(
            sessions
                .iter()
                .any(|s| answer.contains(&addr_of(s).to_string())),
            "udpaddr answers a live session: {answer}"
        );
        for s in &mut sessions {
            assert_eq!(s.heartbeat(), 0);
        }
        let all: Vec<&Device> = sessions.iter().collect();
        relay_reaches(&mut phone, device_id, &all, b"to every session");
        no_invariant_broken(&node);
        node.shutdown();
    }
}

#[test]
fn an_expired_sessions_slot_reused_by_strangers_gets_nothing() {
    for cores in [1, 2] {
        let node = node_with(|c| {
            c.cores = (0..cores).collect();
            c.udp_timeout_secs = 2;
        });
        let udp = node.udp_addr.unwrap();
        let (mut first, mut second) = (patient(udp, MAC), patient(udp, MAC));
        first.new_session();
        let (_, device_id, cookie) = first.register(b"plug");
        second.new_session();
        let user = 128 + 16 * cores as i64;
        let bind = format!("/admin/bind?device={device_id}&user={user}");
        assert_eq!(http(node.status_addr, "POST", &bind, b"").0, 200);
        let (mut phone, _) = login(node.ws_addrs[0], user);
        assert_eq!(first.login(&cookie), 0);
        assert_eq!(second.login(&cookie), 0);
        // The first session goes silent and expires; the second keeps heartbeating.
        assert!(
            eventually(|| {
                assert_eq!(second.heartbeat(), 0);
                counter(&node, |m| &m.udp_expired) >= 1
            }),
            "the silent session expired"
        );
        let mut strangers: Vec<Device> = (0..8)
            .map(|i| patient(udp, [0xee, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        for s in &mut strangers {
            s.new_session();
            s.socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        relay_reaches(&mut phone, device_id, &[&second], b"for the device only");
        // Delivery to every holder happens in one turn: had a stranger been one, its
        // datagram would be waiting by now.
        for s in &strangers {
            assert!(
                s.recv().is_none(),
                "a stranger received the device's message"
            );
        }
        assert!(
            udpaddr(&node, device_id).contains(&addr_of(&second).to_string()),
            "udpaddr answers the live session"
        );
        assert_eq!(second.heartbeat(), 0);
        no_invariant_broken(&node);
        node.shutdown();
    }
}
