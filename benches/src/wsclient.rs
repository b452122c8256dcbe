//! A minimal non-blocking WebSocket client for load generation: upgrade, login, masked
//! frames out, server frames in (via `edge_proto::ws`). Thousands live on one thread.
//!
//! [`Codec`] is the sans-IO part (buffers and phases, unit-tested against frames from
//! edge-proto); [`Client`] adds the socket. Deliberately not a general client: no
//! fragmentation, no extensions, a fixed handshake key, and a fixed mask key (masking
//! is still applied, so servers unmask for real).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use edge_proto::login::LoginReply;
use edge_proto::ws::{self, OpCode};
use socket2::{Domain, Protocol, Socket, Type};

/// The fixed handshake key (RFC 6455's sample nonce).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX_PAYLOAD: usize = 1 << 20;

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Upgrading,
    /// Login sent, waiting for the reply frame.
    LoggingIn,
    /// Logged in: frames flow.
    Ready,
    /// Closed, with why.
    Closed(String),
}

/// The sans-IO half: inbound and outbound bytes and the phase.
#[derive(Debug)]
pub struct Codec {
    /// Current phase.
    pub phase: Phase,
    /// The login reply, once received.
    pub reply: Option<LoginReply>,
    login: Vec<u8>,
    rbuf: Vec<u8>,
    /// Bytes waiting to be written.
    pub wbuf: Vec<u8>,
}

/// The upgrade request for `host`.
pub fn upgrade_request(host: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ws::PATH
    )
    .into_bytes()
}

/// Checks an upgrade response: `Ok(None)` until the head is complete, then the head length.
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 8192 {
            Err("response head too long".into())
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let accept = ws::accept_key(KEY.as_bytes());
    let accept = std::str::from_utf8(&accept).unwrap_or("");
    let ok = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
        })
    });
    if ok {
        Ok(Some(end + 4))
    } else {
        Err("bad Sec-WebSocket-Accept".into())
    }
}

impl Codec {
    /// A codec that will send `login` (the login string) once upgraded.
    pub fn new(login: Vec<u8>) -> Self {
        Self {
            phase: Phase::Connecting,
            reply: None,
            login,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        }
    }

    /// The TCP connection is up: queue the upgrade request.
    pub fn on_connected(&mut self, host: &str) {
        self.wbuf.extend_from_slice(&upgrade_request(host));
        self.phase = Phase::Upgrading;
    }

    /// Queues a masked data frame.
    pub fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        ws::write_client_frame(&mut self.wbuf, opcode, payload, MASK);
    }

    /// Queues a close frame.
    pub fn send_close(&mut self) {
        self.send(OpCode::Close, &ws::CLOSE_NORMAL.to_be_bytes());
    }

    /// Takes `bytes` from the server and calls `on_message(opcode, payload)` for every data
    /// frame once logged in. Answers pings; a close moves to [`Phase::Closed`].
    pub fn feed(&mut self, bytes: &[u8], mut on_message: impl FnMut(OpCode, &[u8])) {
        self.rbuf.extend_from_slice(bytes);
        let mut at = 0;
        if self.phase == Phase::Upgrading {
            match parse_upgrade_response(&self.rbuf) {
                Ok(None) => return,
                Ok(Some(n)) => {
                    at = n;
                    let login = std::mem::take(&mut self.login);
                    self.send(OpCode::Text, &login);
                    self.phase = Phase::LoggingIn;
                }
                Err(e) => {
                    self.phase = Phase::Closed(e);
                    return;
                }
            }
        }
        while at < self.rbuf.len() && !matches!(self.phase, Phase::Closed(_)) {
            let frame = match ws::next_frame(&mut self.rbuf[at..], MAX_PAYLOAD) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.phase = Phase::Closed(format!("bad frame: {e:?}"));
                    break;
                }
            };
            let payload = &self.rbuf[at + frame.payload.start..at + frame.payload.end];
            match frame.opcode {
                OpCode::Ping => {
                    let p = payload.to_vec();
                    self.send(OpCode::Pong, &p);
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    let code = ws::parse_close_payload(payload);
                    self.phase = Phase::Closed(format!("closed by server: {code:?}"));
                }
                op if self.phase == Phase::LoggingIn => {
                    let _ = op;
                    self.reply = LoginReply::decode(payload);
                    self.phase = match self.reply {
                        Some(LoginReply::PhoneOk(_) | LoginReply::DeviceOk) => Phase::Ready,
                        other => Phase::Closed(format!("login refused: {other:?}")),
                    };
                }
                op => on_message(op, payload),
            }
            at += frame.consumed;
        }
        self.rbuf.drain(..at.min(self.rbuf.len()));
    }
}

/// A client socket plus its codec, and a rustls client when it speaks `wss://`.
pub struct Client {
    /// The socket (non-blocking).
    pub socket: Socket,
    /// Buffers and phase.
    pub codec: Codec,
    /// TLS, when the target is a `wss://` port: the codec's bytes go through it.
    pub tls: Option<Box<rustls::ClientConnection>>,
}

impl Client {
    /// Starts a non-blocking connect to `addr`; the login string is sent once upgraded.
    pub fn connect(addr: SocketAddr, login: Vec<u8>) -> io::Result<Self> {
        Self::connect_with(addr, login, None)
    }

    /// [`Client::connect`] with the socket's receive buffer set to `recv_buffer` bytes
    /// (before the connect, so the window stays that small).
    pub fn connect_with(
        addr: SocketAddr,
        login: Vec<u8>,
        recv_buffer: Option<usize>,
    ) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        // RST on close: no TIME_WAIT, so repeated storms do not run out of ports.
        socket.set_linger(Some(std::time::Duration::ZERO))?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            socket,
            codec: Codec::new(login),
            tls: None,
        })
    }

    /// Speaks TLS (to `localhost`, verified against `config`'s roots) on this connection.
    pub fn with_tls(mut self, config: &std::sync::Arc<rustls::ClientConfig>) -> io::Result<Self> {
        let name =
            rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
        let tls = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        self.tls = Some(Box::new(tls));
        Ok(self)
    }

    /// Whether TLS has records to send (a handshake in progress, sealed data).
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The raw fd, for the poller.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Writable: finish the connect if pending, then flush. `Ok(true)` when all is written.
    pub fn on_writable(&mut self, host: &str) -> io::Result<bool> {
        if self.codec.phase == Phase::Connecting {
            if let Some(e) = self.socket.take_error()? {
                return Err(e);
            }
            self.codec.on_connected(host);
        }
        self.flush()
    }

    /// Writes what it can. `Ok(true)` when the buffer is empty.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = &mut self.tls {
            if !self.codec.wbuf.is_empty() {
                tls.writer().write_all(&self.codec.wbuf)?;
                self.codec.wbuf.clear();
            }
            while tls.wants_write() {
                match tls.write_tls(&mut &self.socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(true);
        }
        while !self.codec.wbuf.is_empty() {
            match (&self.socket).write(&self.codec.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.codec.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads everything available into the codec (scratch is the read buffer).
    /// `Ok(false)` on end of stream.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        mut on_message: impl FnMut(OpCode, &[u8]),
    ) -> io::Result<bool> {
        if self.tls.is_some() {
            return self.on_readable_tls(scratch, on_message);
        }
        loop {
            match (&self.socket).read(scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.codec.feed(&scratch[..n], &mut on_message);
                    if n < scratch.len() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn on_readable_tls(
        &mut self,
        scratch: &mut [u8],
        mut on_message: impl FnMut(OpCode, &[u8]),
    ) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            return Ok(true);
        };
        loop {
            match tls.read_tls(&mut &self.socket) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    tls.process_new_packets().map_err(io::Error::other)?;
                    loop {
                        match tls.reader().read(scratch) {
                            Ok(0) => return Ok(false),
                            Ok(n) => self.codec.feed(&scratch[..n], &mut on_message),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The login string for `id` signed with `salt`, timestamped now, heartbeat `timeout` s.
pub fn login_string(id: i64, timeout: u64, salt: &[u8]) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sig = edge_proto::login::signature(id, ts, timeout, salt);
    let mut out = format!("{id}|{ts}|{timeout}|").into_bytes();
    out.extend_from_slice(&sig);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgraded(login: &[u8]) -> Codec {
        let mut c = Codec::new(login.to_vec());
        c.on_connected("127.0.0.1:1234");
        let mut resp = Vec::new();
        ws::write_accept(&mut resp, KEY.as_bytes(), None);
        c.wbuf.clear();
        c.feed(&resp, |_, _| panic!("no message yet"));
        c
    }

    #[test]
    fn request_is_parsed_by_the_server_codec() {
        let req = upgrade_request("h");
        let up = ws::parse_upgrade(&req).unwrap().unwrap();
        assert_eq!((up.path, up.key, up.consumed), ("/ws", KEY, req.len()));
    }

    #[test]
    fn upgrade_then_login_then_messages() {
        let mut c = upgraded(b"16|1|60|sig");
        assert_eq!(c.phase, Phase::LoggingIn);
        // The login went out as one masked text frame the server can read.
        let f = ws::next_frame(&mut c.wbuf, 1024).unwrap().unwrap();
        assert_eq!(
            (f.opcode, &c.wbuf[f.payload.clone()]),
            (OpCode::Text, &b"16|1|60|sig"[..])
        );
        c.wbuf.clear();
        let mut bytes = Vec::new();
        ws::write_frame(&mut bytes, OpCode::Binary, &[0, 3]);
        ws::write_frame(&mut bytes, OpCode::Binary, b"hello");
        ws::write_frame(&mut bytes, OpCode::Ping, b"x");
        ws::write_frame(&mut bytes, OpCode::Binary, &[7; 300]);
        let mut got = Vec::new();
        // Byte by byte: every split point must work.
        for b in &bytes {
            c.feed(std::slice::from_ref(b), |op, p| got.push((op, p.to_vec())));
        }
        assert_eq!(c.phase, Phase::Ready);
        assert_eq!(c.reply, Some(LoginReply::PhoneOk(3)));
        assert_eq!(
            got,
            vec![
                (OpCode::Binary, b"hello".to_vec()),
                (OpCode::Binary, vec![7; 300])
            ]
        );
        let pong = ws::next_frame(&mut c.wbuf, 1024).unwrap().unwrap();
        assert_eq!(pong.opcode, OpCode::Pong);
    }

    #[test]
    fn refused_login_and_close() {
        let mut c = upgraded(b"x");
        let mut bytes = Vec::new();
        ws::write_frame(&mut bytes, OpCode::Binary, &[6]);
        c.feed(&bytes, |_, _| {});
        assert!(matches!(c.phase, Phase::Closed(ref why) if why.contains("WrongMd5")));
        let mut c = upgraded(b"x");
        bytes.clear();
        ws::write_close(&mut bytes, 1008);
        c.feed(&bytes, |_, _| {});
        assert!(matches!(c.phase, Phase::Closed(ref why) if why.contains("1008")));
    }

    #[test]
    fn bad_upgrade_responses() {
        assert_eq!(parse_upgrade_response(b"HTTP/1.1 101 Sw"), Ok(None));
        assert!(parse_upgrade_response(b"HTTP/1.1 400 Bad\r\n\r\n").is_err());
        assert!(
            parse_upgrade_response(b"HTTP/1.1 101 S\r\nSec-WebSocket-Accept: x\r\n\r\n").is_err()
        );
    }

    #[test]
    fn login_string_verifies() {
        let s = login_string(32, 60, b"salt");
        let req = edge_proto::login::LoginRequest::parse(&s).unwrap();
        assert_eq!(req.verify(b"salt", req.timestamp, false), Ok(()));
    }
}
