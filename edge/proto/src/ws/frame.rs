//! Frames: head parsing with the size cap, in-place unmasking, server frame encoding and
//! the close-frame helpers.

use super::*;

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
