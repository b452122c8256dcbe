//! A node on loopback with two shards, and terminals that speak to it (tungstenite,
//! blocking, with timeouts), for the integration tests.
#![allow(dead_code)]

pub mod deploy;
pub mod process;
pub mod tls;
pub mod udp;

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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
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
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (ws, _) = client(format!("ws://{addr}/ws"), stream).expect("upgrade");
    ws
}

/// Connects and logs in as `id`; returns the socket and the login reply bytes. The node
/// replies only once every shard can reach the session (its directory shard has
/// acknowledged it), so a test may send to it as soon as the reply is in: no sleep.
pub fn login(addr: SocketAddr, id: i64) -> (Ws, Vec<u8>) {
    let mut ws = connect(addr);
    ws.send(Message::text(login_string(id))).unwrap();
    let reply = next_data(&mut ws).expect("login reply");
    (ws, reply)
}

/// The next text or binary message (pings answered by tungstenite), or None at close/timeout.
/// A read that a signal interrupts is retried (timed socket calls are not restarted).
pub fn next_data(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Text(t)) => return Some(t.as_bytes().to_vec()),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
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
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
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

/// The sum over shards of one counter.
pub fn counter(
    node: &Node,
    f: impl Fn(&edge::metrics::ShardMetrics) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    node.metrics
        .shards
        .iter()
        .map(|s| f(s).load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// An upgrade request with a chosen method, path and version.
pub fn upgrade_request(method: &str, path: &str, version: u8) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// A hand-driven WebSocket client over a raw `TcpStream`: frames built with
/// `edge_proto::ws`, masked or not, and server frames parsed by hand.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A server frame as the raw client sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Frame(u8, Vec<u8>),
    Close(Option<u16>),
    /// The connection ended (EOF, reset or timeout) without a close frame.
    End,
}

impl Raw {
    /// Connects and upgrades.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::upgrade(TcpStream::connect(addr).expect("connect"))
    }

    /// Upgrades an already connected stream.
    pub fn upgrade(mut stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(upgrade_request("GET", "/ws", 13).as_bytes())
            .unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.read_http_head();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade answered {head:?}"
        );
        raw
    }

    /// Wraps a stream whose upgrade request was already written (its answer unread).
    pub fn from_upgraded(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads up to the end of an HTTP head; keeps what follows.
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            if !self.fill() {
                return String::from_utf8_lossy(&self.buf).into_owned();
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends one masked frame (as a browser would).
    pub fn send_masked(&mut self, opcode: edge_proto::ws::OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        edge_proto::ws::write_client_frame(&mut out, opcode, payload, [0x12, 0x34, 0x56, 0x78]);
        self.send_raw(&out);
    }

    /// Sends one unmasked frame (tolerated, like the original).
    pub fn send_unmasked(&mut self, opcode: edge_proto::ws::OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        edge_proto::ws::write_frame(&mut out, opcode, payload);
        self.send_raw(&out);
    }

    /// The next server frame.
    pub fn next(&mut self) -> Got {
        loop {
            match edge_proto::ws::next_frame(&mut self.buf, usize::MAX >> 1) {
                Ok(Some(frame)) => {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[frame.payload.clone()].to_vec();
                    self.buf.drain(..frame.consumed);
                    if opcode == 8 {
                        return Got::Close(edge_proto::ws::parse_close_payload(&payload));
                    }
                    return Got::Frame(opcode, payload);
                }
                Ok(None) => {
                    if !self.fill() {
                        return Got::End;
                    }
                }
                Err(e) => panic!("server sent a bad frame: {e:?}"),
            }
        }
    }

    /// The next data frame's payload, `None` at close or end.
    pub fn next_data(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.next() {
                Got::Frame(1 | 2, payload) => return Some(payload),
                Got::Frame(..) => continue,
                _ => return None,
            }
        }
    }

    /// The close code, reading past data frames.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next() {
                Got::Frame(..) => continue,
                Got::Close(code) => return code,
                Got::End => return None,
            }
        }
    }

    /// Logs in as `id` (masked text frame) and returns the reply bytes.
    pub fn login(&mut self, id: i64) -> Vec<u8> {
        self.send_masked(edge_proto::ws::OpCode::Text, login_string(id).as_bytes());
        self.next_data().expect("login reply")
    }
}

/// Checks the node still serves: a fresh phone and device bound together log in and relay.
pub fn assert_node_serves(node: &Node, user: i64, device: i64) {
    let ws = node.ws_addrs[0];
    let (code, text) = http(
        node.status_addr,
        "POST",
        &format!("/admin/bind?device={device}&user={user}"),
        b"",
    );
    assert_eq!(code, 200, "{text}");
    let (mut phone, reply) = login(ws, user);
    assert_eq!(reply[0], 0, "phone login ok");
    let (mut dev, reply) = login(ws, device);
    assert_eq!(reply, vec![0], "device login ok");
    let m = message(3, device, b"still alive");
    phone.send(Message::binary(m.clone())).unwrap();
    assert_eq!(next_data(&mut dev).unwrap(), m);
    let back = message(3, 0, b"still alive too");
    dev.send(Message::binary(back.clone())).unwrap();
    assert_eq!(next_not_status(&mut phone).unwrap(), back);
}

/// Whether `m` is a status message the proxy sends (msgid 0x36, empty payload).
pub fn is_status(m: &[u8]) -> bool {
    m.len() == 46 && u16::from_le_bytes([m[28], m[29]]) == 0x36
}

/// The next data message that is not a status message (bound, online, ...).
pub fn next_not_status(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        let m = next_data(ws)?;
        if !is_status(&m) {
            return Some(m);
        }
    }
}

/// The next status message of type `kind`, skipping others (a "device bound" (7) from
/// an admin bind just before a login may or may not reach the new session).
pub fn next_status(ws: &mut Ws, kind: u8) -> Option<Vec<u8>> {
    loop {
        let m = next_data(ws)?;
        if is_status(&m) && m[36] == kind {
            return Some(m);
        }
    }
}
