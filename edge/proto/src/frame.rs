//! The application message format (docs/protocol.md §2): the 24-byte frame header, the
//! 12-byte data header, the direct (opcode 2) and forward (opcode 3) packet shapes, their
//! CRC-8 checks, and the few in-place edits the proxy makes (reply sealing, docs/protocol.md §6.5 patching).
//!
//! Every decoder here borrows the input and returns a typed [`PacketError`]; none panics or
//! reads out of range, whatever the bytes (the original crashed on a body length larger than
//! the datagram, docs/protocol.md §10.5). This module does **not** interpret bodies: the UDP device commands
//! live in [`crate::device`], the status body in [`crate::status`], routing in [`crate::id`].

use crate::crc::{Crc8, crc8};

mod packet;

pub use packet::{
    DirectPacket, DirectSpec, ForwardPacket, PATCH_MIN_LEN, Packet, patch_for_device, reply_flags,
    seal, verify_direct, verify_forward, write_direct,
};

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Length of a data header.
pub const DATA_HEADER_LEN: usize = 12;
/// Length of the session-id slot of a forward packet.
pub const SID_LEN: usize = 16;
/// Smallest direct packet: frame header + data header.
pub const DIRECT_MIN_LEN: usize = FRAME_HEADER_LEN + DATA_HEADER_LEN;
/// Smallest forward packet: outer header + sid slot + inner header + data header.
pub const FORWARD_MIN_LEN: usize = FORWARD_DATA_OFFSET + DATA_HEADER_LEN;

/// Offset of the sequence number (u16) in a frame header.
pub const SEQ_OFFSET: usize = 2;
/// Offset of the timestamp (u32) in a frame header.
pub const TIMESTAMP_OFFSET: usize = 4;
/// Offset of the destination id (i64) in a frame header.
pub const DST_OFFSET: usize = 8;
/// Offset of the source id (i64) in a frame header.
pub const SRC_OFFSET: usize = 16;
/// Offset of the sid slot in a forward packet (right after the outer header).
pub const SID_OFFSET: usize = FRAME_HEADER_LEN;
/// Offset of the inner frame header of a forward packet.
pub const INNER_HEADER_OFFSET: usize = SID_OFFSET + SID_LEN;
/// Offset of the data header of a direct packet.
pub const DIRECT_DATA_OFFSET: usize = FRAME_HEADER_LEN;
/// Offset of the data header of a forward packet.
pub const FORWARD_DATA_OFFSET: usize = INNER_HEADER_OFFSET + FRAME_HEADER_LEN;
/// Offset of the message id inside a data header.
pub const MSG_ID_IN_DATA: usize = 4;
/// Offset of the body length inside a data header.
pub const BODY_LEN_IN_DATA: usize = 6;
/// Offset of the header check inside a data header.
pub const HEADER_CHECK_IN_DATA: usize = 8;
/// Offset of the body check inside a data header.
pub const BODY_CHECK_IN_DATA: usize = 9;
/// Offset of the reserved 16-bit field inside a data header (first byte the body check covers).
pub const RESERVED_IN_DATA: usize = 10;
/// Message id offset of a direct packet (28).
pub const DIRECT_MSG_ID_OFFSET: usize = DIRECT_DATA_OFFSET + MSG_ID_IN_DATA;
/// Message id offset of a forward packet (68).
pub const FORWARD_MSG_ID_OFFSET: usize = FORWARD_DATA_OFFSET + MSG_ID_IN_DATA;

/// Frame byte 0 bit 7: FIN (set by the server).
pub const FRAME_FIN: u8 = 0x80;
/// Frame byte 0 of every server-built message: FIN + opcode 2.
pub const SERVER_BYTE0: u8 = FRAME_FIN | 2;
/// Data-header flag bit 7: READ.
pub const DATA_READ: u8 = 0x80;
/// Data-header flag bit 6: ACK.
pub const DATA_ACK: u8 = 0x40;

// === PacketError ===

/// Why bytes are not a (valid) application message. Small and `Copy`: it is a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the shape needs.
    #[error("packet too short: need {need} bytes, got {got}")]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Opcode (frame byte 0 & 7) other than the one(s) accepted here.
    #[error("unsupported opcode {0}")]
    BadOpcode(u8),
    /// Header check byte does not match the CRC of the header bytes.
    #[error("header check mismatch: computed {expected:#04x}, packet has {got:#04x}")]
    HeaderCheck {
        /// CRC computed over the packet.
        expected: u8,
        /// Byte found in the packet.
        got: u8,
    },
    /// Body check byte does not match the CRC of the reserved field and the body.
    #[error("body check mismatch: computed {expected:#04x}, packet has {got:#04x}")]
    BodyCheck {
        /// CRC computed over the packet.
        expected: u8,
        /// Byte found in the packet.
        got: u8,
    },
    /// Declared body length differs from the bytes actually present after the data header.
    #[error("body length {declared} declared, {actual} present")]
    BodyLength {
        /// Length in the data header.
        declared: u16,
        /// Bytes after the data header.
        actual: usize,
    },
    /// A body to encode does not fit the u16 length field.
    #[error("body of {len} bytes does not fit a u16 length")]
    BodyTooLong {
        /// Length of the rejected body.
        len: usize,
    },
}

// === Opcode ===

/// The opcode in bits 2–0 of frame byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 2: addressed to the server.
    Direct,
    /// 3: to be relayed to another terminal.
    Forward,
    /// Any other value 0..=7, kept as is.
    Other(u8),
}

impl Opcode {
    /// The opcode of a frame whose byte 0 is `byte0` (only bits 2–0 count).
    #[must_use]
    pub const fn from_byte0(byte0: u8) -> Self {
        match byte0 & 0x07 {
            2 => Self::Direct,
            3 => Self::Forward,
            other => Self::Other(other),
        }
    }

    /// The 3-bit value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Direct => 2,
            Self::Forward => 3,
            Self::Other(v) => v & 0x07,
        }
    }
}

// === FrameHeader ===

/// A decoded 24-byte frame header (docs/protocol.md §2.1). All fields little-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameHeader {
    /// FIN/MASK/version/opcode byte.
    pub byte0: u8,
    /// Byte 1 (reserved, normally 0); kept so that re-encoding is exact.
    pub reserved: u8,
    /// Sequence number.
    pub seq: u16,
    /// Unix seconds.
    pub timestamp: u32,
    /// Destination terminal id.
    pub dst: i64,
    /// Source terminal id.
    pub src: i64,
}

impl FrameHeader {
    /// Decodes the first 24 bytes of `buf` (extra bytes are ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, PacketError> {
        let mut r = Reader::new(buf);
        Self::read(&mut r).ok_or(PacketError::TooShort {
            need: FRAME_HEADER_LEN,
            got: buf.len(),
        })
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            byte0: r.u8()?,
            reserved: r.u8()?,
            seq: r.u16()?,
            timestamp: r.u32()?,
            dst: r.i64()?,
            src: r.i64()?,
        })
    }

    /// The opcode in byte 0.
    #[must_use]
    pub const fn opcode(&self) -> Opcode {
        Opcode::from_byte0(self.byte0)
    }

    /// Encodes into a fixed 24-byte array.
    pub fn encode(&self, out: &mut [u8; FRAME_HEADER_LEN]) {
        let mut w = ArrayWriter::new(out);
        w.put(&[self.byte0, self.reserved]);
        w.put(&self.seq.to_le_bytes());
        w.put(&self.timestamp.to_le_bytes());
        w.put(&self.dst.to_le_bytes());
        w.put(&self.src.to_le_bytes());
    }

    /// Appends the 24 encoded bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        self.encode(&mut bytes);
        out.extend_from_slice(&bytes);
    }
}

// === DataHeader ===

/// A decoded 12-byte data header (docs/protocol.md §2.2). All fields little-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataHeader {
    /// READ (0x80), ACK (0x40), data format, key level, encryption type.
    pub flags: u8,
    /// Data sequence.
    pub data_seq: u8,
    /// Device type.
    pub device_type: u16,
    /// Message id (the UDP command for direct device packets).
    pub msg_id: u16,
    /// Declared body length.
    pub body_len: u16,
    /// Header check byte as found.
    pub header_check: u8,
    /// Body check byte as found.
    pub body_check: u8,
    /// Reserved 16-bit "session id" (0 in server-built messages).
    pub reserved: u16,
}

impl DataHeader {
    /// Decodes the first 12 bytes of `buf` (extra bytes are ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, PacketError> {
        let mut r = Reader::new(buf);
        Self::read(&mut r).ok_or(PacketError::TooShort {
            need: DATA_HEADER_LEN,
            got: buf.len(),
        })
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            flags: r.u8()?,
            data_seq: r.u8()?,
            device_type: r.u16()?,
            msg_id: r.u16()?,
            body_len: r.u16()?,
            header_check: r.u8()?,
            body_check: r.u8()?,
            reserved: r.u16()?,
        })
    }

    /// Encodes into a fixed 12-byte array.
    pub fn encode(&self, out: &mut [u8; DATA_HEADER_LEN]) {
        let mut w = ArrayWriter::new(out);
        w.put(&[self.flags, self.data_seq]);
        w.put(&self.device_type.to_le_bytes());
        w.put(&self.msg_id.to_le_bytes());
        w.put(&self.body_len.to_le_bytes());
        w.put(&[self.header_check, self.body_check]);
        w.put(&self.reserved.to_le_bytes());
    }

    /// Appends the 12 encoded bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut bytes = [0u8; DATA_HEADER_LEN];
        self.encode(&mut bytes);
        out.extend_from_slice(&bytes);
    }
}

// === Checks ===

/// The header check of a packet whose data header starts at `data_offset`: CRC of every
/// byte before the header-check byte. `None` if `buf` is too short.
#[must_use]
pub fn header_check(buf: &[u8], data_offset: usize) -> Option<u8> {
    buf.get(..data_offset + HEADER_CHECK_IN_DATA).map(crc8)
}

/// The body check of a packet whose data header starts at `data_offset`: CRC of the
/// reserved field (data-header bytes 10–11) then `body_len` body bytes. `None` if `buf`
/// is too short for that.
#[must_use]
pub fn body_check(buf: &[u8], data_offset: usize, body_len: usize) -> Option<u8> {
    let reserved_at = data_offset + RESERVED_IN_DATA;
    let end = data_offset
        .checked_add(DATA_HEADER_LEN)?
        .checked_add(body_len)?;
    Some(Crc8::new().update(buf.get(reserved_at..end)?).finish())
}

// === Byte helpers (crate-private) ===

/// Panic-free little-endian reader over a borrowed slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// Everything not read yet.
    pub(crate) const fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// Sequential writer into a fixed array; writes past the end are dropped (and caught by
/// `debug_assert` — every caller writes exactly the array's size).
struct ArrayWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> ArrayWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        debug_assert!(end <= self.out.len(), "ArrayWriter overflow");
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

/// Copies `bytes` into `buf` at `at` if it fits; returns whether it did.
pub(crate) fn put_at(buf: &mut [u8], at: usize, bytes: &[u8]) -> bool {
    match buf.get_mut(at..at.saturating_add(bytes.len())) {
        Some(dst) if dst.len() == bytes.len() => {
            dst.copy_from_slice(bytes);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
