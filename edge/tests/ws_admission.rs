//! WebSocket admission on a one-shard node: `--max-conns-per-ip` closes connections
//! beyond the cap at once (counted; other addresses unaffected; a closed one frees its
//! place), and `--max-accept-rate` leaves the excess in the kernel's backlog, accepted in
//! later seconds rather than refused.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn one_shard(tweak: impl FnOnce(&mut edge::config::Config)) -> edge::node::Node {
    node_with(|c| {
        c.cores = vec![0];
        tweak(c)
    })
}

fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// True when the node closed `stream` without a word.
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(upgrade_request("GET", "/ws", 13).as_bytes());
    let mut buf = [0u8; 256];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn connections_per_address_are_capped() {
    let node = one_shard(|c| c.max_conns_per_ip = 3);
    let ws = node.ws_addrs[0];
    let mut held: Vec<Raw> = (0..3).map(|_| Raw::connect(ws)).collect();
    let mut fourth = TcpStream::connect(ws).unwrap();
    assert!(closed(&mut fourth), "the fourth from one address");
    assert_eq!(counter(&node, |m| &m.conns_per_ip_refused), 1);
    // Another address is not affected.
    let mut other = Raw::upgrade(connect_from("127.0.0.2", ws));
    assert_eq!(other.login(16), vec![0, 1]);
    // A closed connection gives its place back.
    drop(held.pop());
    assert!(eventually(|| {
        let mut s = TcpStream::connect(ws).unwrap();
        !closed(&mut s)
    }));
    node.shutdown();
}

#[test]
fn accepts_beyond_the_rate_wait_in_the_backlog() {
    let node = one_shard(|c| c.max_accept_rate = 5);
    let ws = node.ws_addrs[0];
    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..15).map(|_| TcpStream::connect(ws).unwrap()).collect();
    // All of them get upgraded in the end, five a second.
    let upgraded: Vec<Raw> = streams.into_iter().map(Raw::upgrade).collect();
    assert_eq!(upgraded.len(), 15);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(counter(&node, |m| &m.accept_paused) >= 1);
    assert_eq!(counter(&node, |m| &m.ws_accepted), 15);
    node.shutdown();
}
