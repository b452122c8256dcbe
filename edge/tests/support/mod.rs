//! A node on loopback with two shards, and terminals that speak to it (tungstenite,
//! blocking, with timeouts), for the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge::config::Config;
use edge::node::Node;
use tungstenite::protocol::Message;
use tungstenite::{WebSocket, client};

/// Starts a two-shard node on ephemeral loopback ports.
pub fn node() -> Node {
    node_with(|_| {})
}

/// Starts a two-shard node with a tweaked configuration.
pub fn node_with(tweak: impl FnOnce(&mut Config)) -> Node {
    let mut config = Config::for_tests(2);
    tweak(&mut config);
    Node::start(config).expect("node starts")
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A valid login string for `id` with the default salt.
pub fn login_string(id: i64) -> String {
    login_string_at(id, unix_now())
}

pub fn login_string_at(id: i64, ts: u64) -> String {
    let sig = edge_proto::login::signature(id, ts, 30, edge_proto::login::DEFAULT_SALT.as_bytes());
    format!("{id}|{ts}|30|{}", std::str::from_utf8(&sig).unwrap())
}

pub type Ws = WebSocket<TcpStream>;

/// Connects and upgrades (no login yet).
pub fn connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (ws, _) = client(format!("ws://{addr}/ws"), stream).expect("upgrade");
    ws
}

/// Connects and logs in as `id`; returns the socket and the login reply bytes.
pub fn login(addr: SocketAddr, id: i64) -> (Ws, Vec<u8>) {
    let mut ws = connect(addr);
    ws.send(Message::text(login_string(id))).unwrap();
    let reply = next_data(&mut ws).expect("login reply");
    (ws, reply)
}

/// The next text or binary message (pings answered by tungstenite), or None at close/timeout.
pub fn next_data(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Text(t)) => return Some(t.as_bytes().to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The close code the server sent, reading past data frames.
pub fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return Some(frame.code.into()),
            Ok(Message::Close(None)) => return None,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// A terminal message: forward-shaped header with `dst` at 8..16, then `body`.
pub fn message(opcode: u8, dst: i64, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 24];
    m[0] = 0x80 | opcode;
    m[8..16].copy_from_slice(&dst.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Sends an HTTP request to the status port and returns (status code, body).
pub fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// Waits until `f` holds (polling), up to 5 s.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
