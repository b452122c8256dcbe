//! Before it logs in, a WebSocket connection may send one frame of at most 1 KiB (the
//! login string): a bigger frame closes it with 1009, more bytes held behind the login
//! close it with 1008, both counted; a handshake dribbled in a byte at a time still
//! upgrades.

mod support;

use std::io::Write;
use std::time::Duration;

use edge_proto::ws::OpCode;
use support::*;

#[test]
fn a_big_first_frame_is_refused() {
    let node = node();
    let mut raw = Raw::connect(node.ws_addrs[0]);
    let mut login = login_string(16).into_bytes();
    login.resize(edge::shard::PRELOGIN_MAX + 1, b' ');
    raw.send_masked(OpCode::Text, &login);
    assert_eq!(raw.close_code(), Some(1009));
    assert_eq!(counter(&node, |m| &m.prelogin_refused), 1);
    assert_node_serves(&node, 32, -2);
    node.shutdown();
}

#[test]
fn bytes_piled_behind_the_login_are_refused() {
    let node = node();
    let mut raw = Raw::connect(node.ws_addrs[0]);
    // A login whose directory entry sits on this shard is answered in place, and what
    // follows it is read as an online connection's; the bound is for bytes that would
    // wait, so log in as a user whose directory is the other shard.
    let upgraded =
        |s: &edge::metrics::ShardMetrics| s.ws_upgraded.load(std::sync::atomic::Ordering::Relaxed);
    // (Counted just after the 101 is sent.)
    let mut here = None;
    assert!(eventually(|| {
        here = node.metrics.shards.iter().position(|s| upgraded(s) == 1);
        here.is_some()
    }));
    let here = here.unwrap();
    let user = (3..)
        .map(|u| u * 16)
        .find(|&u| edge::core::dir_shard(u, node.metrics.shards.len()) != here)
        .unwrap();
    let mut bytes = Vec::new();
    let key = [1, 2, 3, 4];
    edge_proto::ws::write_client_frame(
        &mut bytes,
        OpCode::Text,
        login_string(user).as_bytes(),
        key,
    );
    for _ in 0..4 {
        let m = message(3, -3, &[7u8; 1000]);
        edge_proto::ws::write_client_frame(&mut bytes, OpCode::Binary, &m, key);
    }
    raw.send_raw(&bytes);
    assert!(matches!(raw.close_code(), Some(1008)));
    assert_eq!(counter(&node, |m| &m.prelogin_refused), 1);
    // A login followed by a heartbeat in the same write is fine.
    let mut raw = Raw::connect(node.ws_addrs[0]);
    let mut bytes = Vec::new();
    edge_proto::ws::write_client_frame(&mut bytes, OpCode::Text, login_string(64).as_bytes(), key);
    edge_proto::ws::write_client_frame(&mut bytes, OpCode::Text, b"p", key);
    raw.send_raw(&bytes);
    assert_eq!(raw.next_data().unwrap(), vec![0, 1]);
    assert_eq!(raw.next_data().unwrap(), b"P");
    node.shutdown();
}

#[test]
fn a_handshake_dribbled_a_byte_at_a_time_upgrades() {
    let node = node();
    let mut stream = std::net::TcpStream::connect(node.ws_addrs[0]).unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in upgrade_request("GET", "/ws", 13).bytes() {
        stream.write_all(&[byte]).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut raw = Raw::from_upgraded(stream);
    assert!(raw.read_http_head().starts_with("HTTP/1.1 101"));
    assert_eq!(raw.login(80), vec![0, 1]);
    node.shutdown();
}
