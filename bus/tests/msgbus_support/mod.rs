//! Shared by the `msgbus_*` tests: a fake comet speaking the link protocol over plain TCP
//! from a chosen loopback IP, a msgbus started on free ports, and small polling helpers.
#![allow(dead_code, reason = "each test target uses only some of these helpers")]
#![allow(clippy::disallowed_methods, reason = "test harness, not pure code")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bus::msgbus::{Config, Msgbus};
use edge_proto::frame::{DirectSpec, write_direct};
use edge_proto::link::{Downstream, LinkDecoder, LinkItem, Upstream};
use socket2::{Domain, Socket, Type};

/// A comet as the msgbus sees it: one link, from `ip`.
pub struct FakeComet {
    stream: TcpStream,
    decoder: LinkDecoder,
    buf: Vec<u8>,
}

impl FakeComet {
    /// Connects from `ip` (e.g. `127.0.0.2`) and does the handshake with `kind` (0 WS, 1 UDP).
    pub fn connect(bus: SocketAddr, ip: &str, kind: u8) -> Self {
        Self::connect_with_rcvbuf(bus, ip, kind, None)
    }

    /// Connects from `ip` and opens the link with the challenge–response for `secret`.
    pub fn connect_authenticated(bus: SocketAddr, ip: &str, kind: u8, secret: &[u8]) -> Self {
        use edge_proto::link::CometKind;
        use edge_proto::link_auth;
        let mut stream = tcp_from(bus, ip, None);
        let kind = CometKind::from_handshake_byte(kind).unwrap();
        let nonce = [7u8; link_auth::NONCE_LEN];
        stream.write_all(&link_auth::hello(kind, &nonce)).unwrap();
        let mut challenge = [0u8; link_auth::CHALLENGE_LEN];
        stream.read_exact(&mut challenge).unwrap();
        let proof = link_auth::answer(secret, kind, &nonce, &challenge)
            .expect("the msgbus knows the secret");
        stream.write_all(&proof).unwrap();
        Self {
            stream,
            decoder: LinkDecoder::new(1 << 20),
            buf: Vec::new(),
        }
    }

    /// Like [`FakeComet::connect`], with a small receive buffer (a slow comet).
    pub fn connect_with_rcvbuf(bus: SocketAddr, ip: &str, kind: u8, rcvbuf: Option<usize>) -> Self {
        let mut stream = tcp_from(bus, ip, rcvbuf);
        stream.write_all(&[kind]).unwrap();
        let mut echo = [9u8];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(echo, [kind], "the msgbus echoes the handshake byte");
        Self {
            stream,
            decoder: LinkDecoder::new(1 << 20),
            buf: Vec::new(),
        }
    }

    /// Sends an upstream frame.
    pub fn send(&mut self, src: i64, ids: &[i64], message: &[u8]) {
        let mut frame = Vec::new();
        Upstream::write(&mut frame, src, ids, message).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    /// The next downstream frame as `(ids, message)`, or `None` after `limit`.
    pub fn recv(&mut self, limit: Duration) -> Option<(Vec<i64>, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((LinkItem::Frame([]), used)) = self.decoder.decode(&self.buf) {
                self.buf.drain(..used); // a ping
                continue;
            }
            if let Some((LinkItem::Frame(payload), used)) = self.decoder.decode(&self.buf) {
                let down = Downstream::decode(payload).unwrap();
                let out = (down.ids.iter().collect(), down.message.to_vec());
                self.buf.drain(..used);
                return Some(out);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }
}

/// A TCP connection to `bus` from `ip` (comets are keyed by IP), 10 s read timeout.
pub fn tcp_from(bus: SocketAddr, ip: &str, rcvbuf: Option<usize>) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let local: SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&bus.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A direct packet (uploads use these) from `src` with message id `msg_id`.
pub fn direct(src: i64, msg_id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let spec = DirectSpec {
        seq: 7,
        timestamp: 1_700_000_000,
        dst: 0,
        src,
        msg_id,
        body,
    };
    write_direct(&mut out, &spec).unwrap();
    out
}

/// A forward-shaped message (opcode 3: relayed, never uploaded) of `len` bytes.
pub fn forward(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag; len.max(1)];
    out[0] = 0x83;
    out
}

/// A scratch directory for a spool.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = std::env::var("CLOUDSOCKET_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("msgbus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A config on free loopback ports with a status endpoint.
pub fn config(spool: &str) -> Config {
    let mut config = Config::new("127.0.0.1:0", scratch_dir(spool));
    config.status = Some("127.0.0.1:0".into());
    config
}

/// `GET path` on the msgbus's status endpoint; the body.
pub fn http_get(bus: &Msgbus, path: &str) -> String {
    let addr = bus.status_addr().expect("a status endpoint");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_owned()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
