//! Server side of RFC 6455 as the original comet spoke it (docs/protocol.md §3.1): the HTTP
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
/// Close code: the server is restarting; reconnect (RFC 6455 registry, "Service Restart").
pub const CLOSE_RESTART: u16 = 1012;
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

mod frame;
mod handshake;

pub use frame::*;
pub use handshake::*;

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
