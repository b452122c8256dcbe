//! Phones and devices on WebSocket through a two-shard node: login, heartbeat, relay
//! both ways across shards, device status, admin bind and push.

mod support;

use edge::node::Node;
use edge_proto::ws::OpCode;
use support::*;
use tungstenite::Message;

#[test]
fn phone_and_device_login_and_exchange_messages() {
    let node = node();
    let ws = node.ws_addrs[0];
    bind(&node, -1, 16);

    let (mut phone, reply) = login(ws, 16);
    assert_eq!(reply, vec![0, 1], "phone gets mobile id 16+1");
    let (mut device, reply) = login(ws, -1);
    assert_eq!(reply, vec![0]);

    // The device's login reaches the phone as a status message (type 9, id -1). (The
    // bind's own status, type 7, may arrive first if the phone was quick.)
    let status = next_status(&mut phone, 9).expect("online status");
    assert_eq!(status.len(), 46);
    assert_eq!(u16::from_le_bytes([status[28], status[29]]), 0x36);
    assert_eq!(status[36], 9);
    assert_eq!(i64::from_le_bytes(status[37..45].try_into().unwrap()), -1);

    // Heartbeat.
    phone.send(Message::text("p")).unwrap();
    assert_eq!(next_data(&mut phone).unwrap(), b"P");

    // Phone -> device.
    let to_device = message(3, -1, b"phone->device");
    phone.send(Message::binary(to_device.clone())).unwrap();
    assert_eq!(next_data(&mut device).unwrap(), to_device);

    // Device -> phones (dst 0 = every bound user).
    let to_phone = message(3, 0, b"device->phone");
    device.send(Message::binary(to_phone.clone())).unwrap();
    assert_eq!(next_data(&mut phone).unwrap(), to_phone);
    node.shutdown();
}

#[test]
fn messages_cross_shards() {
    let node = node();
    let ws = node.ws_addrs[0];
    let mut phones = Vec::new();
    let mut devices = Vec::new();
    // Eight users, each with one device; the kernel spreads connections over both shards.
    for u in 1..=8i64 {
        http(
            node.status_addr,
            "POST",
            &format!("/admin/bind?device=-{u}&user={}", u * 16),
            b"",
        );
        phones.push(login(ws, u * 16).0);
        devices.push(login(ws, -u).0);
    }
    for p in phones.iter_mut() {
        next_status(p, 9).expect("device online status");
    }
    for (u, (p, d)) in phones.iter_mut().zip(devices.iter_mut()).enumerate() {
        let m = message(3, -(u as i64 + 1), format!("to device {u}").as_bytes());
        p.send(Message::binary(m.clone())).unwrap();
        assert_eq!(next_data(d).unwrap(), m);
        let back = message(3, 0, format!("to phone {u}").as_bytes());
        d.send(Message::binary(back.clone())).unwrap();
        assert_eq!(next_not_status(p).unwrap(), back);
    }
    let cross: u64 = node
        .metrics
        .shards
        .iter()
        .map(|s| s.cross_shard_in.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(cross > 0, "some traffic crossed shards");
    node.shutdown();
}

#[test]
fn admin_push_reaches_phones_and_devices() {
    let node = node();
    let ws = node.ws_addrs[0];
    let (mut phone, _) = login(ws, 32);
    let (mut device, _) = login(ws, -7);
    assert!(eventually(|| node
        .metrics
        .render_app_json()
        .contains("\"ConnOnline\":2")));
    let (code, text) = http(
        node.status_addr,
        "POST",
        "/admin/push?ids=32,-7&msgid=0x36",
        b"hello",
    );
    assert_eq!(code, 200, "{text}");
    for (ws, id) in [(&mut phone, 33i64), (&mut device, -7)] {
        let m = next_data(ws).unwrap();
        assert_eq!(m.len(), 36 + 5);
        assert_eq!(
            i64::from_le_bytes(m[8..16].try_into().unwrap()),
            id,
            "destination is the receiving id"
        );
        assert_eq!(&m[36..], b"hello");
    }
    node.shutdown();
}

#[test]
fn a_message_right_after_login_is_not_lost() {
    // The login reply goes out only once the session's directory entry is in place, so a
    // message sent to it the moment the reply arrives finds it, whichever shards are involved.
    let node = node();
    let ws = node.ws_addrs[0];
    for u in 1..=12i64 {
        http(
            node.status_addr,
            "POST",
            &format!("/admin/bind?device=-{u}&user={}", u * 16),
            b"",
        );
    }
    let mut devices: Vec<_> = (1..=12i64).map(|u| login(ws, -u).0).collect();
    for (u, device) in devices.iter_mut().enumerate() {
        let (mut phone, reply) = login(ws, (u as i64 + 1) * 16);
        assert_eq!(reply, vec![0, 1]);
        let m = message(3, 0, format!("hello {u}").as_bytes());
        device.send(Message::binary(m.clone())).unwrap();
        assert_eq!(next_not_status(&mut phone).unwrap(), m, "pair {u}");
    }
    node.shutdown();
}

#[test]
fn login_and_turn_times_are_histograms_in_metrics() {
    let node = node();
    let (_phone, reply) = login(node.ws_addrs[0], 16 * 9_901);
    assert_eq!(reply.first(), Some(&0));
    let (code, text) = http(node.status_addr, "GET", "/metrics", b"");
    assert_eq!(code, 200);
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(text.contains("# TYPE cloudsocket_login_seconds histogram"));
    assert_eq!(
        sum("cloudsocket_login_seconds_count{"),
        1,
        "one login timed"
    );
    assert!(
        sum("cloudsocket_shard_turn_seconds_count{") > 0,
        "turns timed"
    );
    assert!(text.contains("cloudsocket_shard_turn_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    node.shutdown();
}

/// On one shard every directory entry is local, so an embedded login is answered in the
/// middle of the read that carried it: the connection must read on from there, a frame
/// that came in the same write as the login must be handled after it, and a phone that
/// closes gives its mobile id back at once.
#[test]
fn a_one_shard_node_answers_logins_where_it_reads_them() {
    let node = Node::start(edge::config::Config::for_tests(1)).expect("node starts");
    let ws = node.ws_addrs[0];
    bind(&node, -1, 16);
    let (mut device, reply) = login(ws, -1);
    assert_eq!(reply, vec![0]);

    // The login and a heartbeat in one write.
    let mut phone = support::Raw::connect(ws);
    let mut both = Vec::new();
    let mask = [1, 2, 3, 4];
    edge_proto::ws::write_client_frame(&mut both, OpCode::Text, login_string(16).as_bytes(), mask);
    edge_proto::ws::write_client_frame(&mut both, OpCode::Text, b"p", mask);
    phone.send_raw(&both);
    assert_eq!(phone.next_data().unwrap(), vec![0, 1]);
    assert_eq!(phone.next_data().unwrap(), b"P");

    // The connection reads on after the login: both directions flow.
    let to_device = message(3, -1, b"phone->device");
    phone.send_masked(OpCode::Binary, &to_device);
    assert_eq!(next_not_status(&mut device).unwrap(), to_device);
    let to_phone = message(3, 0, b"device->phone");
    device.send(Message::binary(to_phone.clone())).unwrap();
    let got = loop {
        let data = phone.next_data().expect("still open");
        if !is_status(&data) {
            break data;
        }
    };
    assert_eq!(got, to_phone);

    // The mobile id comes back when the phone goes: the next phone gets 16+1 again.
    drop(phone);
    assert!(eventually(|| login(ws, 16).1 == vec![0, 1]));
    node.shutdown();
}

/// Binds `device` to `user` through the admin endpoint.
fn bind(node: &Node, device: i64, user: i64) {
    let target = format!("/admin/bind?device={device}&user={user}");
    let (code, text) = http(node.status_addr, "POST", &target, b"");
    assert_eq!(code, 200, "{text}");
}
