//! The status notification (message id 0x36, docs/protocol.md §2.6): its body
//! `type (1) | id (i64 LE) | payload length (1) | payload`, the 13 known types, and a
//! builder for the complete server-built direct packet that carries it.
//!
//! Encoding is **correct** for non-empty payloads (the original wrote the length one byte
//! late and lost the last payload byte; with the empty payload it always sent, both agree).
//! This module does not decide who receives a status: see [`crate::id`] and the shell.

use crate::frame::{DirectSpec, PacketError, Reader, put_at, write_direct};

/// Message id of the status notification.
pub const STATUS_MSG_ID: u16 = 0x36;
/// Body length of a status with an empty payload (the only kind the proxy itself sends).
pub const STATUS_BODY_EMPTY_LEN: usize = 10;
/// Longest payload the u8 length field can describe.
pub const STATUS_PAYLOAD_MAX: usize = u8::MAX as usize;

/// Why bytes are not a status body, or a status body cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Fewer than 10 bytes.
    #[error("status body too short: need {need} bytes, got {got}")]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The declared payload length does not match the bytes after the header.
    #[error("status payload length {declared} declared, {actual} present")]
    PayloadLength {
        /// Payload length byte.
        declared: u8,
        /// Bytes present after the 10-byte header.
        actual: usize,
    },
    /// A payload longer than 255 bytes cannot be encoded.
    #[error("status payload of {len} bytes exceeds 255")]
    PayloadTooLong {
        /// Length of the rejected payload.
        len: usize,
    },
    /// The surrounding packet could not be built.
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// The status types of docs/protocol.md §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StatusType {
    /// 1: joined family.
    JoinedFamily = 1,
    /// 2: removed from family.
    RemovedFromFamily = 2,
    /// 3: quit family.
    QuitFamily = 3,
    /// 4: family dismissed.
    FamilyDismissed = 4,
    /// 5: invited.
    Invited = 5,
    /// 6: invitation refused.
    InvitationRefused = 6,
    /// 7: device bound.
    DeviceBound = 7,
    /// 8: device unbound.
    DeviceUnbound = 8,
    /// 9: device online.
    DeviceOnline = 9,
    /// 10: device offline.
    DeviceOffline = 10,
    /// 11: e-mail activated.
    EmailActivated = 11,
    /// 12: user mobile bound.
    MobileBound = 12,
    /// 13: kicked off (password changed).
    KickedOff = 13,
}

impl StatusType {
    /// Every type, in wire order.
    pub const ALL: [Self; 13] = [
        Self::JoinedFamily,
        Self::RemovedFromFamily,
        Self::QuitFamily,
        Self::FamilyDismissed,
        Self::Invited,
        Self::InvitationRefused,
        Self::DeviceBound,
        Self::DeviceUnbound,
        Self::DeviceOnline,
        Self::DeviceOffline,
        Self::EmailActivated,
        Self::MobileBound,
        Self::KickedOff,
    ];

    /// The type with wire value `value`, if known.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_u8() == value)
    }

    /// The wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A decoded status body borrowing its payload. `kind` stays a raw byte so unknown types
/// relayed from the platform survive a round trip; see [`StatusBody::status_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusBody<'a> {
    /// Status type byte.
    pub kind: u8,
    /// The id the status is about (device, user, family…).
    pub id: i64,
    /// Payload (empty in everything the proxy builds).
    pub payload: &'a [u8],
}

impl<'a> StatusBody<'a> {
    /// A status with an empty payload.
    #[must_use]
    pub const fn empty(kind: StatusType, id: i64) -> StatusBody<'static> {
        StatusBody {
            kind: kind.as_u8(),
            id,
            payload: &[],
        }
    }

    /// The known type, if `kind` is one.
    #[must_use]
    pub fn status_type(&self) -> Option<StatusType> {
        StatusType::from_u8(self.kind)
    }

    /// Decodes a whole body: exactly `10 + payload length` bytes.
    pub fn decode(buf: &'a [u8]) -> Result<Self, StatusError> {
        let mut r = Reader::new(buf);
        let too_short = StatusError::TooShort {
            need: STATUS_BODY_EMPTY_LEN,
            got: buf.len(),
        };
        let kind = r.u8().ok_or(too_short)?;
        let id = r.i64().ok_or(too_short)?;
        let declared = r.u8().ok_or(too_short)?;
        let payload = r.rest();
        if payload.len() != usize::from(declared) {
            return Err(StatusError::PayloadLength {
                declared,
                actual: payload.len(),
            });
        }
        Ok(Self { kind, id, payload })
    }

    /// Encoded length: 10 + payload.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        STATUS_BODY_EMPTY_LEN + self.payload.len()
    }

    /// Appends the encoded body to `out`; a payload over 255 bytes is an error (nothing appended).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), StatusError> {
        let len = u8::try_from(self.payload.len()).map_err(|_| StatusError::PayloadTooLong {
            len: self.payload.len(),
        })?;
        out.push(self.kind);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(len);
        out.extend_from_slice(self.payload);
        Ok(())
    }
}

/// The 10-byte body of a status with an empty payload (what `PubCommonMsg:0x36` carries
/// after the `<users>|` prefix, docs/protocol.md §7.1).
#[must_use]
pub fn empty_status_body(kind: StatusType, id: i64) -> [u8; STATUS_BODY_EMPTY_LEN] {
    let mut out = [0u8; STATUS_BODY_EMPTY_LEN];
    put_at(&mut out, 0, &[kind.as_u8()]);
    put_at(&mut out, 1, &id.to_le_bytes());
    out
}

/// Appends a complete status message (docs/protocol.md §2.6) with sequence 0 and an empty payload:
/// byte 0 0x82, `timestamp`, `dst`, `src`, flags READ, message id 0x36, sealed checks.
pub fn write_status_message(
    out: &mut Vec<u8>,
    timestamp: u32,
    dst: i64,
    src: i64,
    kind: StatusType,
    id: i64,
) {
    let body = empty_status_body(kind, id);
    let spec = DirectSpec {
        seq: 0,
        timestamp,
        dst,
        src,
        msg_id: STATUS_MSG_ID,
        body: &body,
    };
    let written = write_direct(out, &spec);
    debug_assert_eq!(written, Ok(()), "a 10-byte body always fits");
}

/// Appends a complete status message with an explicit sequence (UDP pushes use the
/// session's next `Sidx`) and any body. Nothing is appended on error.
pub fn write_status_message_seq(
    out: &mut Vec<u8>,
    seq: u16,
    timestamp: u32,
    dst: i64,
    src: i64,
    status: &StatusBody<'_>,
) -> Result<(), StatusError> {
    let len = u8::try_from(status.payload.len()).map_err(|_| StatusError::PayloadTooLong {
        len: status.payload.len(),
    })?;
    let mut body = [0u8; STATUS_BODY_EMPTY_LEN + STATUS_PAYLOAD_MAX];
    put_at(&mut body, 0, &[status.kind]);
    put_at(&mut body, 1, &status.id.to_le_bytes());
    put_at(&mut body, 9, &[len]);
    put_at(&mut body, STATUS_BODY_EMPTY_LEN, status.payload);
    let body = body.get(..status.encoded_len()).unwrap_or_default();
    let spec = DirectSpec {
        seq,
        timestamp,
        dst,
        src,
        msg_id: STATUS_MSG_ID,
        body,
    };
    Ok(write_direct(out, &spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(buf: &[u8], expect: Result<(u8, i64, &[u8]), StatusError>) {
        let got = StatusBody::decode(buf).map(|s| (s.kind, s.id, s.payload));
        assert_eq!(got, expect, "{buf:02x?}");
    }

    #[test]
    fn decode_cases() {
        let mut online = vec![9];
        online.extend_from_slice(&(-1i64).to_le_bytes());
        online.push(0);
        check(&online, Ok((9, -1, &[])));
        check(
            &online[..9],
            Err(StatusError::TooShort { need: 10, got: 9 }),
        );
        check(&[], Err(StatusError::TooShort { need: 10, got: 0 }));
        let mut with = online.clone();
        with[9] = 2;
        with.extend_from_slice(b"ab");
        check(&with, Ok((9, -1, b"ab")));
        check(
            &with[..11],
            Err(StatusError::PayloadLength {
                declared: 2,
                actual: 1,
            }),
        );
        online.push(7);
        check(
            &online,
            Err(StatusError::PayloadLength {
                declared: 0,
                actual: 1,
            }),
        );
    }

    #[test]
    fn encode_puts_length_at_9_and_keeps_the_whole_payload() {
        let mut out = Vec::new();
        let body = StatusBody {
            kind: 5,
            id: 987_654_321,
            payload: b"xyz",
        };
        body.write_to(&mut out).unwrap();
        assert_eq!(out.len(), 13);
        assert_eq!(out[9], 3);
        assert_eq!(&out[10..], b"xyz");
        assert_eq!(StatusBody::decode(&out), Ok(body));
    }

    #[test]
    fn oversized_payload_is_an_error() {
        let payload = [0u8; 256];
        let body = StatusBody {
            kind: 1,
            id: 0,
            payload: &payload,
        };
        let mut out = Vec::new();
        assert_eq!(
            body.write_to(&mut out),
            Err(StatusError::PayloadTooLong { len: 256 })
        );
        assert!(out.is_empty());
        let got = write_status_message_seq(&mut out, 1, 2, 3, 4, &body);
        assert_eq!(got, Err(StatusError::PayloadTooLong { len: 256 }));
        assert!(out.is_empty());
    }

    #[test]
    fn types_round_trip() {
        for v in 0..=255u8 {
            let t = StatusType::from_u8(v);
            assert_eq!(t.is_some(), (1..=13).contains(&v));
            if let Some(t) = t {
                assert_eq!(t.as_u8(), v);
            }
        }
    }

    #[test]
    fn empty_body_matches_the_encoder() {
        for (t, id) in [
            (StatusType::DeviceOnline, -1),
            (StatusType::KickedOff, i64::MAX),
        ] {
            let mut out = Vec::new();
            StatusBody::empty(t, id).write_to(&mut out).unwrap();
            assert_eq!(out, empty_status_body(t, id));
        }
    }
}
