//! Server side of RFC 6455 as the original comet spoke it (original spec §7.1): the HTTP
//! upgrade, frame heads, in-place unmasking and server frame encoding.
//!
//! Owns: parsing and validating the upgrade request (header block capped at
//! [`MAX_HEADER_BYTES`]), the `101` reply byte for byte as the original wrote it, short HTTP
//! error replies, frame-head parsing with the size cap checked from the head alone, and the
//! close-frame helpers. Quirks kept: unmasked client frames are accepted, the first offered
//! subprotocol is echoed, no Origin check, no extensions.
//!
//! Does **not** own: reassembly of fragments (the original delivered every frame on its
//! own), UTF-8 checks of text frames, ping/pong/close policy, timeouts or buffers — the
//! shell decides those from the [`Frame`]s returned here.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};
use thiserror::Error;

/// Largest upgrade request header block accepted (request line to blank line included).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The GUID of RFC 6455 §1.3, appended to the client key.
pub const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only path served.
pub const PATH: &str = "/ws";
/// Close status: normal closure (what the original sends).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close status: going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close status: protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close status: policy violation.
pub const CLOSE_POLICY: u16 = 1008;
/// Close status: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A valid upgrade request; the strings borrow the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// Request target (`/ws` or `/ws?<query>`).
    pub path: &'a str,
    /// `Sec-WebSocket-Key`, trimmed, non-empty.
    pub key: &'a str,
    /// First offered subprotocol, if any (echoed in the reply).
    pub protocol: Option<&'a str>,
    /// Bytes of the request (header block); anything after them is WebSocket data.
    pub consumed: usize,
}

/// Why an upgrade request is refused; [`status`](Self::status) is the HTTP status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The header block exceeds [`MAX_HEADER_BYTES`] (431).
    #[error("request header block too large")]
    TooLarge,
    /// Not parseable as an HTTP/1.x request (400).
    #[error("malformed HTTP request")]
    Malformed,
    /// Path other than `/ws` (404).
    #[error("not found")]
    NotFound,
    /// Method other than GET (405).
    #[error("method not allowed")]
    Method,
    /// Missing `Upgrade: websocket` or `Connection: upgrade` (400).
    #[error("not a websocket handshake")]
    NotWebSocket,
    /// Missing or empty `Sec-WebSocket-Key` (400).
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Version` other than 13 (400, with `Sec-WebSocket-Version: 13`).
    #[error("unsupported websocket version")]
    Version,
}

/// Frame opcodes; the reserved ones are refused by [`parse_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation = 0,
    /// Text data (the original also sends binary data this way).
    Text = 1,
    /// Binary data.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

/// A parsed frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Final fragment.
    pub fin: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Masking key, if the client masked (unmasked frames are accepted).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub payload_len: u64,
    /// Bytes of the head (2 to 14).
    pub header_len: usize,
}

/// A whole frame found in (and unmasked in) the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment.
    pub fin: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Where the (now unmasked) payload lies in the buffer.
    pub payload: Range<usize>,
    /// Bytes of the frame (head and payload); drop them once the payload is used.
    pub consumed: usize,
}

/// A frame the server refuses; [`close_code`](Self::close_code) is the status to close with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WsError {
    /// An RSV bit is set (no extension is negotiated).
    #[error("reserved bits set")]
    Reserved,
    /// A reserved opcode.
    #[error("reserved opcode {0:#x}")]
    OpCode(u8),
    /// A control frame longer than 125 bytes.
    #[error("control frame too long")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A 64-bit length with the most significant bit set.
    #[error("invalid payload length")]
    Length,
    /// The payload exceeds the caller's limit.
    #[error("payload of {len} bytes exceeds the limit")]
    TooBig {
        /// Announced payload length.
        len: u64,
    },
}

// === handshake ===

/// Parses the upgrade request at the start of `buf`.
///
/// `Ok(None)`: the blank line has not arrived yet (and the cap is not reached). Each call
/// rescans from the start, bounded by the cap; call it once per read, not per byte.
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<Upgrade<'_>>, HandshakeError> {
    let window = buf.get(..MAX_HEADER_BYTES).unwrap_or(buf);
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEADER_BYTES {
            Err(HandshakeError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = buf.get(..end).ok_or(HandshakeError::Malformed)?;
    let mut rest = Some(head);
    let mut lines = std::iter::from_fn(|| {
        let text = rest?;
        let at = text.windows(2).position(|w| w == b"\r\n");
        rest = at.and_then(|at| text.get(at + 2..));
        at.map_or(Some(text), |at| text.get(..at))
    });
    let request_line = lines.next().ok_or(HandshakeError::Malformed)?;
    let (method, path) = parse_request_line(request_line)?;
    let mut headers = Headers::default();
    for line in lines {
        headers.add(line)?;
    }
    if path != PATH && !path.starts_with("/ws?") {
        return Err(HandshakeError::NotFound);
    }
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    let upgrade_ok = headers
        .upgrade
        .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let connection_ok = headers.connection.is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !upgrade_ok || !connection_ok {
        return Err(HandshakeError::NotWebSocket);
    }
    let key = headers
        .key
        .filter(|k| !k.is_empty())
        .ok_or(HandshakeError::MissingKey)?;
    let key = std::str::from_utf8(key).map_err(|_| HandshakeError::Malformed)?;
    if headers.version != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let protocol = headers
        .protocol
        .and_then(|p| p.split(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii);
    let protocol = match protocol.filter(|p| !p.is_empty()) {
        Some(p) => Some(std::str::from_utf8(p).map_err(|_| HandshakeError::Malformed)?),
        None => None,
    };
    Ok(Some(Upgrade {
        path,
        key,
        protocol,
        consumed: end + 4,
    }))
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str), HandshakeError> {
    if line.iter().any(u8::is_ascii_control) {
        return Err(HandshakeError::Malformed);
    }
    let line = std::str::from_utf8(line).map_err(|_| HandshakeError::Malformed)?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), Some(version), None)
            if !method.is_empty() && path.starts_with('/') && version.starts_with("HTTP/1.") =>
        {
            Ok((method, path))
        }
        _ => Err(HandshakeError::Malformed),
    }
}

/// The headers the handshake looks at (first occurrence wins, like Go's `Header.Get`).
#[derive(Default)]
struct Headers<'a> {
    upgrade: Option<&'a [u8]>,
    connection: Option<&'a [u8]>,
    key: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    protocol: Option<&'a [u8]>,
}

impl<'a> Headers<'a> {
    /// Records one header line; values may hold any byte but a control character.
    fn add(&mut self, line: &'a [u8]) -> Result<(), HandshakeError> {
        let colon = line.iter().position(|&b| b == b':');
        let (Some(name), Some(value)) = (
            colon.and_then(|at| line.get(..at)),
            colon.and_then(|at| line.get(at + 1..)),
        ) else {
            return Err(HandshakeError::Malformed);
        };
        let bad_name = name.is_empty() || !name.iter().all(u8::is_ascii_graphic);
        let bad_value = value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        if bad_name || bad_value {
            return Err(HandshakeError::Malformed);
        }
        let slots = [
            (&b"upgrade"[..], &mut self.upgrade),
            (b"connection", &mut self.connection),
            (b"sec-websocket-key", &mut self.key),
            (b"sec-websocket-version", &mut self.version),
            (b"sec-websocket-protocol", &mut self.protocol),
        ];
        if let Some((_, slot)) = slots
            .into_iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known))
        {
            slot.get_or_insert(value.trim_ascii());
        }
        Ok(())
    }
}

/// `Sec-WebSocket-Accept` for a client key: Base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 padded Base64 characters.
    let _ = STANDARD.encode_slice(sha.finalize(), &mut out);
    out
}

/// Appends the `101 Switching Protocols` reply exactly as the original wrote it.
pub fn write_accept(out: &mut Vec<u8>, key: &[u8], protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete error reply for a refused handshake (then close the connection).
pub fn write_http_error(out: &mut Vec<u8>, error: HandshakeError) {
    write_http_response(out, error.status(), error == HandshakeError::Version);
}

/// Appends a short complete HTTP/1.1 response with `Connection: close` (for example 503
/// when the shard is full); `version_header` adds `Sec-WebSocket-Version: 13`.
pub fn write_http_response(out: &mut Vec<u8>, status: u16, version_header: bool) {
    use std::io::Write as _;
    let reason = reason_phrase(status);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    if version_header {
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    let _ = write!(
        out,
        "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}\n",
        reason.len() + 1
    );
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::NotFound => 404,
            Self::Method => 405,
            Self::Malformed | Self::NotWebSocket | Self::MissingKey | Self::Version => 400,
        }
    }
}

// === frames ===

impl OpCode {
    /// The opcode for the low nibble of byte 0, `None` if reserved.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        self as u8 >= 8
    }
}

impl WsError {
    /// The close status to send before dropping the connection.
    pub fn close_code(self) -> u16 {
        match self {
            Self::TooBig { .. } => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL,
        }
    }
}

/// Parses a frame head at the start of `buf`; `Ok(None)` until all of it has arrived.
/// Errors are reported as soon as the bytes that prove them are present.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, WsError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(WsError::OpCode(b0 & 0x0f))?;
    let fin = b0 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() && (len7 as usize > MAX_CONTROL_PAYLOAD) {
        return Err(WsError::ControlTooLong);
    }
    if opcode.is_control() && !fin {
        return Err(WsError::FragmentedControl);
    }
    let (payload_len, rest, mut header_len) = match (len7, rest) {
        (126, [a, b, rest @ ..]) => (u64::from(u16::from_be_bytes([*a, *b])), rest, 4),
        (127, [a, b, c, d, e, f, g, h, rest @ ..]) => {
            let len = u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
            if len >> 63 != 0 {
                return Err(WsError::Length);
            }
            (len, rest, 10)
        }
        (126 | 127, _) => return Ok(None),
        (len, rest) => (u64::from(len), rest, 2),
    };
    let mask = if b1 & 0x80 == 0 {
        None
    } else if let [a, b, c, d, ..] = rest {
        header_len += 4;
        Some([*a, *b, *c, *d])
    } else {
        return Ok(None);
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Finds the whole frame at the start of `buf`, unmasks its payload in place and returns
/// where it lies. `Ok(None)`: more bytes are needed. A payload above `max_payload` is refused
/// from the head alone, before it arrives.
pub fn next_frame(buf: &mut [u8], max_payload: usize) -> Result<Option<Frame>, WsError> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let len = usize::try_from(head.payload_len)
        .ok()
        .filter(|len| *len <= max_payload)
        .ok_or(WsError::TooBig {
            len: head.payload_len,
        })?;
    let Some(end) = head.header_len.checked_add(len) else {
        return Err(WsError::TooBig {
            len: head.payload_len,
        });
    };
    let Some(payload) = buf.get_mut(head.header_len..end) else {
        return Ok(None);
    };
    if let Some(key) = head.mask {
        unmask(payload, key);
    }
    Ok(Some(Frame {
        fin: head.fin,
        opcode: head.opcode,
        payload: head.header_len..end,
        consumed: end,
    }))
}

/// XORs `payload` with the masking key (starting at key byte 0), 8 bytes at a time.
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks are a multiple of 4 long, so the tail starts at key byte 0 again.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// A server frame head (FIN set, never masked) and how many of its bytes are used.
pub fn encode_head(opcode: OpCode, len: u64) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode as u8;
    let used = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    (head, used)
}

/// Appends a server frame head for a payload of `len` bytes.
pub fn write_frame_head(out: &mut Vec<u8>, opcode: OpCode, len: u64) {
    let (head, used) = encode_head(opcode, len);
    out.extend_from_slice(head.get(..used).unwrap_or(&head));
}

/// Appends a whole server frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    write_frame_head(out, opcode, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a masked client frame (FIN set) — for test clients and load generators;
/// the caller supplies the random key.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let (mut head, used) = encode_head(opcode, payload.len() as u64);
    head[1] |= 0x80;
    out.extend_from_slice(head.get(..used).unwrap_or(&head));
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(tail) = out.get_mut(start..) {
        unmask(tail, key);
    }
}

/// Appends a close frame carrying `code` (the original's `88 02 03 e8` for 1000).
pub fn write_close(out: &mut Vec<u8>, code: u16) {
    write_frame(out, OpCode::Close, &code.to_be_bytes());
}

/// The status code of a close payload; `None` when it has none (empty or 1 byte).
pub fn parse_close_payload(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut text = lines.join("\r\n");
        text.push_str("\r\n\r\n");
        text.into_bytes()
    }

    const OK: [&str; 5] = [
        "GET /ws HTTP/1.1",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    fn check_upgrade(edit: (usize, &str), expect: Result<(), HandshakeError>) {
        let mut lines = OK.to_vec();
        lines[edit.0] = edit.1;
        let got = parse_upgrade(&request(&lines)).map(|u| assert!(u.is_some()));
        assert_eq!(got, expect, "{edit:?}");
    }

    #[test]
    fn upgrade_validation() {
        check_upgrade((0, "GET /ws?x=1 HTTP/1.1"), Ok(()));
        check_upgrade((0, "GET /wss HTTP/1.1"), Err(HandshakeError::NotFound));
        check_upgrade((0, "POST /ws HTTP/1.1"), Err(HandshakeError::Method));
        check_upgrade((0, "POST /x HTTP/1.1"), Err(HandshakeError::NotFound));
        check_upgrade((0, "GET /ws"), Err(HandshakeError::Malformed));
        check_upgrade((1, "upgrade:WebSocket"), Ok(()));
        check_upgrade((1, "Upgrade: h2c"), Err(HandshakeError::NotWebSocket));
        check_upgrade((2, "Connection: close"), Err(HandshakeError::NotWebSocket));
        check_upgrade(
            (2, "Connection: upgrades"),
            Err(HandshakeError::NotWebSocket),
        );
        check_upgrade(
            (3, "Sec-WebSocket-Key:   "),
            Err(HandshakeError::MissingKey),
        );
        check_upgrade(
            (4, "Sec-WebSocket-Version: 8"),
            Err(HandshakeError::Version),
        );
        check_upgrade((4, "no colon"), Err(HandshakeError::Malformed));
        check_upgrade((4, "X-Bad: a\rb"), Err(HandshakeError::Malformed));
    }

    #[test]
    fn upgrade_protocol_incomplete_and_cap() {
        let mut lines = OK.to_vec();
        lines.push("Sec-WebSocket-Protocol:  chat , superchat");
        let bytes = request(&lines);
        let up = parse_upgrade(&bytes).unwrap().unwrap();
        assert_eq!((up.protocol, up.consumed), (Some("chat"), bytes.len()));
        assert_eq!(parse_upgrade(&bytes[..bytes.len() - 1]), Ok(None));
        assert_eq!(
            parse_upgrade(&vec![b'a'; MAX_HEADER_BYTES]),
            Err(HandshakeError::TooLarge)
        );
    }

    #[test]
    fn upgrade_header_bytes() {
        let mut latin1 = request(&OK);
        latin1.splice(18..18, b"User-Agent: caf\xe9\r\n".iter().copied());
        assert!(matches!(parse_upgrade(&latin1), Ok(Some(_))));
        let bare_lf = b"GET /ws HTTP/1.1\nUpgrade: websocket\r\n\r\n";
        assert_eq!(parse_upgrade(bare_lf), Err(HandshakeError::Malformed));
        let bad_key = request(&[OK[0], OK[1], OK[2], "Sec-WebSocket-Key: \u{0}", OK[4]]);
        assert_eq!(parse_upgrade(&bad_key), Err(HandshakeError::Malformed));
    }

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn http_error_has_length_and_version_header() {
        let mut out = Vec::new();
        write_http_error(&mut out, HandshakeError::Version);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\nContent-Length: 12\r\n\r\nBad Request\n"));
    }

    fn check_head(bytes: &[u8], expect: Result<Option<(bool, OpCode, u64, usize)>, WsError>) {
        let got =
            parse_head(bytes).map(|h| h.map(|h| (h.fin, h.opcode, h.payload_len, h.header_len)));
        assert_eq!(got, expect, "{bytes:02x?}");
    }

    #[test]
    fn heads() {
        check_head(&[0x81], Ok(None));
        check_head(&[0x81, 0x05], Ok(Some((true, OpCode::Text, 5, 2))));
        check_head(&[0x02, 0x85, 1, 2, 3], Ok(None));
        check_head(
            &[0x02, 0x85, 1, 2, 3, 4],
            Ok(Some((false, OpCode::Binary, 5, 6))),
        );
        check_head(&[0x82, 0x7e, 0x01], Ok(None));
        check_head(
            &[0x82, 0x7e, 0x01, 0x00],
            Ok(Some((true, OpCode::Binary, 256, 4))),
        );
        check_head(
            &[0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0],
            Ok(Some((true, OpCode::Binary, 1 << 32, 10))),
        );
        check_head(
            &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
            Err(WsError::Length),
        );
        check_head(&[0xc1, 0x00], Err(WsError::Reserved));
        check_head(&[0x83, 0x00], Err(WsError::OpCode(3)));
        check_head(&[0x89, 0x7e], Err(WsError::ControlTooLong));
        check_head(&[0x09, 0x00], Err(WsError::FragmentedControl));
    }

    #[test]
    fn frames_unmask_and_cap() {
        let mut wire = Vec::new();
        write_client_frame(
            &mut wire,
            OpCode::Binary,
            b"hello, masked world",
            [1, 2, 3, 4],
        );
        wire.extend_from_slice(b"next");
        let frame = next_frame(&mut wire, 64).unwrap().unwrap();
        assert_eq!(&wire[frame.payload.clone()], b"hello, masked world");
        assert_eq!(frame.consumed, wire.len() - 4);
        assert_eq!(next_frame(&mut wire[..10], 64), Ok(None));
        let mut big = [0x82, 0x7e, 0x10, 0x00];
        assert_eq!(
            next_frame(&mut big, 4095),
            Err(WsError::TooBig { len: 4096 })
        );
        assert_eq!(WsError::TooBig { len: 1 }.close_code(), CLOSE_TOO_BIG);
    }

    #[test]
    fn server_heads_and_close() {
        for (len, used) in [(0u64, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let (head, n) = encode_head(OpCode::Text, len);
            assert_eq!(n, used);
            let parsed = parse_head(&head[..n]).unwrap().unwrap();
            assert_eq!((parsed.payload_len, parsed.mask), (len, None));
        }
        let mut out = Vec::new();
        write_close(&mut out, CLOSE_NORMAL);
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(parse_close_payload(&out[2..]), Some(1000));
        assert_eq!(parse_close_payload(&[3]), None);
    }
}
