//! Whole packets: borrowed views ([`Packet`], [`DirectPacket`], [`ForwardPacket`]), the
//! checks (docs/protocol.md §5.1), sealing (recomputing both checks), server messages (§2.5 there)
//! and patching a message for delivery to a UDP device (docs/protocol.md §6.5).
//!
//! Views are structural only (opcode and minimum length); [`verify_direct`] and
//! [`verify_forward`] additionally check the CRCs and the body length.

use super::{
    DATA_ACK, DATA_HEADER_LEN, DATA_READ, DIRECT_DATA_OFFSET, DIRECT_MIN_LEN, DataHeader,
    FORWARD_DATA_OFFSET, FORWARD_MIN_LEN, FrameHeader, HEADER_CHECK_IN_DATA, Opcode, PacketError,
    Reader, SEQ_OFFSET, SERVER_BYTE0, SID_LEN, SID_OFFSET, body_check, header_check, put_at,
};

// === Packet ===

/// A structurally valid packet of either shape, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Opcode 2.
    Direct(DirectPacket<'a>),
    /// Opcode 3.
    Forward(ForwardPacket<'a>),
}

impl<'a> Packet<'a> {
    /// Parses the shape from the opcode: ≥ 24 bytes, opcode 2 (≥ 36 bytes) or 3 (≥ 76 bytes).
    /// Checks and body length are **not** verified here.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        let frame = FrameHeader::decode(buf)?;
        match frame.opcode() {
            Opcode::Direct => DirectPacket::parse(buf).map(Self::Direct),
            Opcode::Forward => ForwardPacket::parse(buf).map(Self::Forward),
            Opcode::Other(op) => Err(PacketError::BadOpcode(op)),
        }
    }

    /// The whole packet.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        match self {
            Self::Direct(p) => p.bytes,
            Self::Forward(p) => p.bytes,
        }
    }

    /// The (outer) frame header: destination and source of the packet.
    #[must_use]
    pub const fn frame(&self) -> &FrameHeader {
        match self {
            Self::Direct(p) => &p.frame,
            Self::Forward(p) => &p.outer,
        }
    }

    /// The data header.
    #[must_use]
    pub const fn data(&self) -> &DataHeader {
        match self {
            Self::Direct(p) => &p.data,
            Self::Forward(p) => &p.data,
        }
    }

    /// Every byte after the data header (equals the declared length once verified).
    #[must_use]
    pub const fn body(&self) -> &'a [u8] {
        match self {
            Self::Direct(p) => p.body,
            Self::Forward(p) => p.body,
        }
    }

    /// The message id (byte 28 or 68).
    #[must_use]
    pub const fn msg_id(&self) -> u16 {
        self.data().msg_id
    }
}

// === DirectPacket ===

/// Opcode-2 packet: `frame header (24) | data header (12) | body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectPacket<'a> {
    bytes: &'a [u8],
    frame: FrameHeader,
    data: DataHeader,
    body: &'a [u8],
}

impl<'a> DirectPacket<'a> {
    /// Parses a direct packet: opcode 2 and at least 36 bytes. Checks are not verified.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        let too_short = PacketError::TooShort {
            need: DIRECT_MIN_LEN,
            got: buf.len(),
        };
        let mut r = Reader::new(buf);
        let frame = FrameHeader::read(&mut r).ok_or(too_short)?;
        if frame.opcode() != Opcode::Direct {
            return Err(PacketError::BadOpcode(frame.opcode().as_u8()));
        }
        let data = DataHeader::read(&mut r).ok_or(too_short)?;
        Ok(Self {
            bytes: buf,
            frame,
            data,
            body: r.rest(),
        })
    }

    /// The whole packet.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The frame header.
    #[must_use]
    pub const fn frame(&self) -> &FrameHeader {
        &self.frame
    }

    /// The data header.
    #[must_use]
    pub const fn data(&self) -> &DataHeader {
        &self.data
    }

    /// Every byte from offset 36.
    #[must_use]
    pub const fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The message id at byte 28 (the UDP command).
    #[must_use]
    pub const fn msg_id(&self) -> u16 {
        self.data.msg_id
    }

    /// The sequence number at bytes 2–3.
    #[must_use]
    pub const fn seq(&self) -> u16 {
        self.frame.seq
    }
}

// === ForwardPacket ===

/// Opcode-3 packet: `outer header (24) | sid slot (16) | inner header (24) | data header (12) | body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardPacket<'a> {
    bytes: &'a [u8],
    outer: FrameHeader,
    sid: [u8; SID_LEN],
    inner: FrameHeader,
    data: DataHeader,
    body: &'a [u8],
}

impl<'a> ForwardPacket<'a> {
    /// Parses a forward packet: opcode 3 and at least 76 bytes. Checks are not verified
    /// (the original never verified them either, docs/protocol.md §10.2).
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        let too_short = PacketError::TooShort {
            need: FORWARD_MIN_LEN,
            got: buf.len(),
        };
        let mut r = Reader::new(buf);
        let outer = FrameHeader::read(&mut r).ok_or(too_short)?;
        if outer.opcode() != Opcode::Forward {
            return Err(PacketError::BadOpcode(outer.opcode().as_u8()));
        }
        let sid = r.array::<SID_LEN>().ok_or(too_short)?;
        let inner = FrameHeader::read(&mut r).ok_or(too_short)?;
        let data = DataHeader::read(&mut r).ok_or(too_short)?;
        Ok(Self {
            bytes: buf,
            outer,
            sid,
            inner,
            data,
            body: r.rest(),
        })
    }

    /// The whole packet.
    #[must_use]
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The outer frame header (routing: dst at 8, src at 16, seq at 2).
    #[must_use]
    pub const fn outer(&self) -> &FrameHeader {
        &self.outer
    }

    /// The 16-byte session-id slot at 24–39.
    #[must_use]
    pub const fn sid_slot(&self) -> &[u8; SID_LEN] {
        &self.sid
    }

    /// The inner frame header at 40–63.
    #[must_use]
    pub const fn inner(&self) -> &FrameHeader {
        &self.inner
    }

    /// The data header at 64–75.
    #[must_use]
    pub const fn data(&self) -> &DataHeader {
        &self.data
    }

    /// Every byte from offset 76.
    #[must_use]
    pub const fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The message id at byte 68.
    #[must_use]
    pub const fn msg_id(&self) -> u16 {
        self.data.msg_id
    }
}

// === Verification ===

/// docs/protocol.md §5.1 steps 1–4 on a direct packet, in order: length ≥ 36 (and opcode 2), header check,
/// body check, exact body length. A declared body longer than the datagram is a
/// [`PacketError::BodyLength`] (the original read out of range and crashed).
pub fn verify_direct(buf: &[u8]) -> Result<DirectPacket<'_>, PacketError> {
    let packet = DirectPacket::parse(buf)?;
    verify_checks(buf, DIRECT_DATA_OFFSET, &packet.data)?;
    Ok(packet)
}

/// The same checks as [`verify_direct`] on a forward packet (≥ 76 bytes, opcode 3). The
/// original never verified forward packets; the shell decides whether to.
pub fn verify_forward(buf: &[u8]) -> Result<ForwardPacket<'_>, PacketError> {
    let packet = ForwardPacket::parse(buf)?;
    verify_checks(buf, FORWARD_DATA_OFFSET, &packet.data)?;
    Ok(packet)
}

fn verify_checks(buf: &[u8], data_offset: usize, data: &DataHeader) -> Result<(), PacketError> {
    let body_at = data_offset + DATA_HEADER_LEN;
    let too_short = PacketError::TooShort {
        need: body_at,
        got: buf.len(),
    };
    let expected = header_check(buf, data_offset).ok_or(too_short)?;
    if expected != data.header_check {
        return Err(PacketError::HeaderCheck {
            expected,
            got: data.header_check,
        });
    }
    let actual = buf.len().saturating_sub(body_at);
    let length_error = PacketError::BodyLength {
        declared: data.body_len,
        actual,
    };
    let declared = usize::from(data.body_len);
    let expected = body_check(buf, data_offset, declared).ok_or(length_error)?;
    if expected != data.body_check {
        return Err(PacketError::BodyCheck {
            expected,
            got: data.body_check,
        });
    }
    if declared != actual {
        return Err(length_error);
    }
    Ok(())
}

/// Recomputes both checks of a direct or forward packet in place. The declared body length
/// must equal the bytes present (else [`PacketError::BodyLength`]); nothing is written on error.
pub fn seal(buf: &mut [u8]) -> Result<(), PacketError> {
    let data_offset = match Packet::parse(buf)? {
        Packet::Direct(_) => DIRECT_DATA_OFFSET,
        Packet::Forward(_) => FORWARD_DATA_OFFSET,
    };
    let data = DataHeader::decode(buf.get(data_offset..).unwrap_or_default())?;
    let actual = buf.len().saturating_sub(data_offset + DATA_HEADER_LEN);
    let length_error = PacketError::BodyLength {
        declared: data.body_len,
        actual,
    };
    if usize::from(data.body_len) != actual {
        return Err(length_error);
    }
    let header = header_check(buf, data_offset).ok_or(length_error)?;
    let body = body_check(buf, data_offset, actual).ok_or(length_error)?;
    put_at(buf, data_offset + HEADER_CHECK_IN_DATA, &[header, body]);
    Ok(())
}

// === Building ===

/// What a server-built direct message carries (docs/protocol.md §2.5); everything else is fixed: byte 0
/// 0x82, reserved 0, data flags READ, data seq 0, device type 0, reserved 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectSpec<'a> {
    /// Sequence number (0 for WS, the session's next `Sidx` for UDP pushes).
    pub seq: u16,
    /// Unix seconds (injected by the caller).
    pub timestamp: u32,
    /// Destination id.
    pub dst: i64,
    /// Source id.
    pub src: i64,
    /// Message id.
    pub msg_id: u16,
    /// Body.
    pub body: &'a [u8],
}

/// Appends a complete, sealed direct packet built from `spec` to `out`.
/// Errors only if the body exceeds 65 535 bytes (nothing is appended then).
pub fn write_direct(out: &mut Vec<u8>, spec: &DirectSpec<'_>) -> Result<(), PacketError> {
    let body_len = u16::try_from(spec.body.len()).map_err(|_| PacketError::BodyTooLong {
        len: spec.body.len(),
    })?;
    let start = out.len();
    let frame = FrameHeader {
        byte0: SERVER_BYTE0,
        reserved: 0,
        seq: spec.seq,
        timestamp: spec.timestamp,
        dst: spec.dst,
        src: spec.src,
    };
    frame.write_to(out);
    let data = DataHeader {
        flags: DATA_READ,
        msg_id: spec.msg_id,
        body_len,
        ..DataHeader::default()
    };
    data.write_to(out);
    out.extend_from_slice(spec.body);
    let sealed = seal(out.get_mut(start..).unwrap_or_default());
    debug_assert_eq!(sealed, Ok(()));
    sealed
}

/// Data-header flags of a reply: the request's flags with ACK and READ set.
#[must_use]
pub const fn reply_flags(request_flags: u8) -> u8 {
    request_flags | DATA_ACK | DATA_READ
}

// === Delivery patching ===

/// Bytes a message needs for [`patch_for_device`]: sequence and the whole sid slot.
pub const PATCH_MIN_LEN: usize = SID_OFFSET + SID_LEN;

/// Prepares a relayed message for a UDP device (docs/protocol.md §6.5): sequence := `seq` (bytes 2–3),
/// sid slot := `sid` (bytes 24–39). Fewer than 40 bytes is [`PacketError::TooShort`] and
/// leaves `buf` untouched (the original panicked).
///
/// Unlike the original, which left the header check stale, a full forward packet (opcode 3,
/// ≥ 76 bytes) gets its header check at 72 updated by the CRC difference of the patch:
/// a packet whose check was right is right afterwards (equal to a fresh CRC), and a packet
/// whose check was already wrong stays wrong by the same amount, so the device can still
/// detect corruption that happened before the proxy. Other packets are patched only.
pub fn patch_for_device(buf: &mut [u8], seq: u16, sid: &[u8; SID_LEN]) -> Result<(), PacketError> {
    if buf.len() < PATCH_MIN_LEN {
        return Err(PacketError::TooShort {
            need: PATCH_MIN_LEN,
            got: buf.len(),
        });
    }
    let check_at = FORWARD_DATA_OFFSET + HEADER_CHECK_IN_DATA;
    let is_forward = buf.len() >= FORWARD_MIN_LEN
        && buf.first().map(|&b| Opcode::from_byte0(b)) == Some(Opcode::Forward);
    let before = if is_forward {
        header_check(buf, FORWARD_DATA_OFFSET)
    } else {
        None
    };
    put_at(buf, SEQ_OFFSET, &seq.to_le_bytes());
    put_at(buf, SID_OFFSET, sid);
    if let (Some(before), Some(after), Some(&old)) = (
        before,
        header_check(buf, FORWARD_DATA_OFFSET),
        buf.get(check_at),
    ) {
        // CRC-8 with init 0 and no xorout is linear: keep the old check's error syndrome.
        put_at(buf, check_at, &[old ^ before ^ after]);
    }
    Ok(())
}
