//! The HTTP upgrade: request parsing and validation, the `101` reply, error replies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

use super::*;

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
