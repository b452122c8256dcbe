//! The UDP device protocol (docs/protocol.md §5, §6): session ids, the command table, request
//! bodies parsed from a verified direct packet, and reply construction (`device/reply.rs`), the
//! sequence acceptance rule and the cookie's device id.
//!
//! Every body of the wrong size is a typed [`DeviceError`]; nothing here panics (the
//! original crashed on short `0xE1`/`0xE2`/`0xE3` bodies and on every `0xE6`, docs/protocol.md §10.5).
//! This module does **not** own sessions, locks, HTTP calls or timers: the shell does,
//! driving these pure functions.

use crate::frame::{DirectPacket, PacketError, Reader, verify_direct};

mod reply;
mod sid;

pub use reply::{
    COOKIE_LEN, HEARTBEAT_INTERVAL_SECS, STATUS_BAD_COMMAND, STATUS_HTTP_ERROR, STATUS_OK,
    STATUS_SERVER_ERROR, login_body, new_session_body, parse_cookie_device_id, register_body,
    rename_body, seq_accepts, status_body, write_reply,
};
pub use sid::{SID_TEXT_LEN, Sid, SidParseError, SidText};

/// Body length of `0xE0` (MAC + SN).
pub const NEW_SESSION_BODY_LEN: usize = 24;
/// Minimum body length of `0xE1` (everything up to and including the name length).
pub const REGISTER_MIN_BODY_LEN: usize = 310;
/// Body length of `0xE2` (sid + MAC + cookie).
pub const LOGIN_BODY_LEN: usize = 88;
/// Minimum body length of `0xE3` (sid + MAC + name length).
pub const RENAME_MIN_BODY_LEN: usize = 25;
/// Length of the register signature (ignored by the proxy).
pub const SIGNATURE_LEN: usize = 260;

// === DeviceError ===

/// Why a datagram is not a well-formed device request. Small and `Copy`: a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The packet itself failed docs/protocol.md §5.1 steps 1–4.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// A fixed-size body of the wrong size.
    #[error("command {command:#06x}: body of {got} bytes, expected exactly {expected}")]
    BodyLength {
        /// Message id.
        command: u16,
        /// Required size.
        expected: usize,
        /// Size present.
        got: usize,
    },
    /// A body shorter than its fixed part.
    #[error("command {command:#06x}: body of {got} bytes, need at least {need}")]
    BodyTooShort {
        /// Message id.
        command: u16,
        /// Minimum size.
        need: usize,
        /// Size present.
        got: usize,
    },
    /// A length-prefixed name runs past the end of the body.
    #[error("command {command:#06x}: name of {declared} bytes, only {available} present")]
    NameOverrun {
        /// Message id.
        command: u16,
        /// Declared name length.
        declared: u16,
        /// Bytes left in the body after the length field.
        available: usize,
    },
}

// === Command ===

/// The device commands of docs/protocol.md §5.3 (the message id of a direct packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `0xE0`: get a token / new session.
    NewSession,
    /// `0xE1`: register.
    Register,
    /// `0xE2`: login.
    Login,
    /// `0xE3`: rename.
    Rename,
    /// `0xE4`: bind (not implemented by the original).
    Bind,
    /// `0xE5`: heartbeat.
    Heartbeat,
    /// `0xE6`: sub-device offline (crashed the original).
    SubDeviceOffline,
    /// `0x30`: device state sync (upload, no session).
    StateSync,
    /// `0x31`: alarm sync (upload, no session).
    AlarmSync,
    /// Anything else.
    Unknown(u16),
}

impl Command {
    /// The command for message id `msg_id`.
    #[must_use]
    pub const fn from_u16(msg_id: u16) -> Self {
        match msg_id {
            0xE0 => Self::NewSession,
            0xE1 => Self::Register,
            0xE2 => Self::Login,
            0xE3 => Self::Rename,
            0xE4 => Self::Bind,
            0xE5 => Self::Heartbeat,
            0xE6 => Self::SubDeviceOffline,
            0x30 => Self::StateSync,
            0x31 => Self::AlarmSync,
            other => Self::Unknown(other),
        }
    }

    /// The message id.
    #[must_use]
    pub const fn as_u16(self) -> u16 {
        match self {
            Self::NewSession => 0xE0,
            Self::Register => 0xE1,
            Self::Login => 0xE2,
            Self::Rename => 0xE3,
            Self::Bind => 0xE4,
            Self::Heartbeat => 0xE5,
            Self::SubDeviceOffline => 0xE6,
            Self::StateSync => 0x30,
            Self::AlarmSync => 0x31,
            Self::Unknown(other) => other,
        }
    }

    /// Whether the command goes through the session path (docs/protocol.md §6.1, §6.2: sid, lock,
    /// sequence check): everything except `0xE0`, `0x30` and `0x31`.
    #[must_use]
    pub const fn needs_session(self) -> bool {
        !matches!(self, Self::NewSession | Self::StateSync | Self::AlarmSync)
    }
}

// === Request ===

/// A device request, borrowing variable-length fields from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `0xE0`: body exactly MAC (8) + SN (16).
    NewSession {
        /// Device MAC.
        mac: [u8; 8],
        /// Serial number.
        sn: [u8; 16],
    },
    /// `0xE1`.
    Register(Register<'a>),
    /// `0xE2`: body exactly 88.
    Login {
        /// Session id.
        sid: Sid,
        /// Device MAC.
        mac: [u8; 8],
        /// The 64-byte cookie field without its trailing NULs.
        cookie: &'a [u8],
    },
    /// `0xE3`: name length u8 at 24, name at 25 (bounds-checked).
    Rename {
        /// Session id.
        sid: Sid,
        /// Device MAC.
        mac: [u8; 8],
        /// New name.
        name: &'a [u8],
    },
    /// `0xE4`: only the sid is read.
    Bind {
        /// Session id.
        sid: Sid,
    },
    /// `0xE5`: sid, then optionally the device id (the reference client sends it; ignored
    /// by the original). Longer bodies are tolerated, like the original.
    Heartbeat {
        /// Session id.
        sid: Sid,
        /// Body bytes 16–23, when present.
        device_id: Option<i64>,
    },
    /// `0xE6`: only the sid is read.
    SubDeviceOffline {
        /// Session id.
        sid: Sid,
    },
    /// `0x30` / `0x31`: state or alarm sync, uploaded for the session's device. Unlike the
    /// original (no session, source 0), the first 16 body bytes name the session, as for
    /// every session command.
    Upload {
        /// The message id.
        msg_id: u16,
        /// The session id.
        sid: Sid,
    },
    /// Any other message id (the original locked the session, checked the sequence, and
    /// dropped it without reply).
    Unknown {
        /// The message id.
        msg_id: u16,
        /// The first 16 body bytes, when present.
        sid: Option<Sid>,
    },
}

/// The `0xE1` register body.
///
/// Layout: sid (16), device type u16 @16, comm type u16 @18, production time u32 @20,
/// MAC (8) @24, SN (16) @32, signature (260) @48, **name length u16 LE @308, name @310**.
/// The captured device (`udp_E1_register_request`) sends exactly this (length 14 at 308–309,
/// `capture-socket` at 310, body 324 = 310 + 14); the original read a u8 length at 308 and
/// the name from 309, one byte early, and so sent `\0capture-socke` to the platform (docs/protocol.md §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register<'a> {
    /// Session id.
    pub sid: Sid,
    /// Device type.
    pub device_type: u16,
    /// Communication type (ignored by the original).
    pub comm_type: u16,
    /// Production time (Unix seconds).
    pub production_time: u32,
    /// Device MAC.
    pub mac: [u8; 8],
    /// Serial number.
    pub sn: [u8; 16],
    /// Signature (260 bytes, ignored by the original).
    pub signature: &'a [u8],
    /// Device name.
    pub name: &'a [u8],
}

impl<'a> Request<'a> {
    /// docs/protocol.md §5.1 steps 1–4 ([`verify_direct`]) then [`Request::parse`].
    pub fn parse_datagram(buf: &'a [u8]) -> Result<(DirectPacket<'a>, Self), DeviceError> {
        let packet = verify_direct(buf)?;
        let request = Self::parse(&packet)?;
        Ok((packet, request))
    }

    /// The request in a (verified) direct packet, by message id and body.
    pub fn parse(packet: &DirectPacket<'a>) -> Result<Self, DeviceError> {
        let body = packet.body();
        let msg_id = packet.msg_id();
        match Command::from_u16(msg_id) {
            Command::NewSession => parse_new_session(body),
            Command::Register => parse_register(body).map(Self::Register),
            Command::Login => parse_login(body),
            Command::Rename => parse_rename(body),
            Command::Bind => sid_only(body, msg_id).map(|sid| Self::Bind { sid }),
            Command::Heartbeat => {
                let sid = sid_only(body, msg_id)?;
                let device_id = body.get(16..24).and_then(|b| Reader::new(b).i64());
                Ok(Self::Heartbeat { sid, device_id })
            }
            Command::SubDeviceOffline => {
                sid_only(body, msg_id).map(|sid| Self::SubDeviceOffline { sid })
            }
            Command::StateSync | Command::AlarmSync => {
                sid_only(body, msg_id).map(|sid| Self::Upload { msg_id, sid })
            }
            Command::Unknown(_) => Ok(Self::Unknown {
                msg_id,
                sid: Sid::from_prefix(body),
            }),
        }
    }

    /// The command this request came from.
    #[must_use]
    pub const fn command(&self) -> Command {
        match self {
            Self::NewSession { .. } => Command::NewSession,
            Self::Register(_) => Command::Register,
            Self::Login { .. } => Command::Login,
            Self::Rename { .. } => Command::Rename,
            Self::Bind { .. } => Command::Bind,
            Self::Heartbeat { .. } => Command::Heartbeat,
            Self::SubDeviceOffline { .. } => Command::SubDeviceOffline,
            Self::Upload { msg_id, .. } | Self::Unknown { msg_id, .. } => {
                Command::from_u16(*msg_id)
            }
        }
    }

    /// The session id the request names, if any.
    #[must_use]
    pub const fn sid(&self) -> Option<&Sid> {
        match self {
            Self::Register(Register { sid, .. })
            | Self::Login { sid, .. }
            | Self::Rename { sid, .. }
            | Self::Bind { sid }
            | Self::Heartbeat { sid, .. }
            | Self::SubDeviceOffline { sid }
            | Self::Upload { sid, .. } => Some(sid),
            Self::Unknown { sid, .. } => sid.as_ref(),
            Self::NewSession { .. } => None,
        }
    }
}

/// Whether `message` is the ACK of a device upload (docs/protocol.md §7.3): a direct packet whose
/// data header carries the ACK flag and message id `0x30` or `0x31`. Such an ACK goes to a
/// UDP device as it is (its sequence number is the request's, which the device matches),
/// not patched like a relayed message (docs/protocol.md §6.5).
#[must_use]
pub fn is_upload_ack(message: &[u8]) -> bool {
    use crate::frame::{DATA_ACK, DIRECT_DATA_OFFSET, DIRECT_MIN_LEN, DIRECT_MSG_ID_OFFSET};
    if message.len() < DIRECT_MIN_LEN || message[0] & 0x07 != 2 {
        return false;
    }
    let msg_id = u16::from_le_bytes([
        message[DIRECT_MSG_ID_OFFSET],
        message[DIRECT_MSG_ID_OFFSET + 1],
    ]);
    message[DIRECT_DATA_OFFSET] & DATA_ACK != 0
        && matches!(
            Command::from_u16(msg_id),
            Command::StateSync | Command::AlarmSync
        )
}

fn exact(body: &[u8], command: Command, expected: usize) -> Result<(), DeviceError> {
    if body.len() == expected {
        Ok(())
    } else {
        Err(DeviceError::BodyLength {
            command: command.as_u16(),
            expected,
            got: body.len(),
        })
    }
}

fn too_short(body: &[u8], command: Command, need: usize) -> DeviceError {
    DeviceError::BodyTooShort {
        command: command.as_u16(),
        need,
        got: body.len(),
    }
}

fn sid_only(body: &[u8], msg_id: u16) -> Result<Sid, DeviceError> {
    Sid::from_prefix(body).ok_or(too_short(body, Command::from_u16(msg_id), 16))
}

/// A length-prefixed name: `len` bytes from the reader, or [`DeviceError::NameOverrun`].
fn name<'a>(r: &mut Reader<'a>, command: Command, len: u16) -> Result<&'a [u8], DeviceError> {
    let available = r.rest().len();
    let overrun = DeviceError::NameOverrun {
        command: command.as_u16(),
        declared: len,
        available,
    };
    r.bytes(usize::from(len)).ok_or(overrun)
}

fn parse_new_session(body: &[u8]) -> Result<Request<'_>, DeviceError> {
    exact(body, Command::NewSession, NEW_SESSION_BODY_LEN)?;
    let mut r = Reader::new(body);
    let short = too_short(body, Command::NewSession, NEW_SESSION_BODY_LEN);
    Ok(Request::NewSession {
        mac: r.array().ok_or(short)?,
        sn: r.array().ok_or(short)?,
    })
}

fn parse_register(body: &[u8]) -> Result<Register<'_>, DeviceError> {
    let short = too_short(body, Command::Register, REGISTER_MIN_BODY_LEN);
    let mut r = Reader::new(body);
    let sid = Sid(r.array().ok_or(short)?);
    let device_type = r.u16().ok_or(short)?;
    let comm_type = r.u16().ok_or(short)?;
    let production_time = r.u32().ok_or(short)?;
    let mac = r.array().ok_or(short)?;
    let sn = r.array().ok_or(short)?;
    let signature = r.bytes(SIGNATURE_LEN).ok_or(short)?;
    let name_len = r.u16().ok_or(short)?;
    let name = name(&mut r, Command::Register, name_len)?;
    Ok(Register {
        sid,
        device_type,
        comm_type,
        production_time,
        mac,
        sn,
        signature,
        name,
    })
}

fn parse_login(body: &[u8]) -> Result<Request<'_>, DeviceError> {
    exact(body, Command::Login, LOGIN_BODY_LEN)?;
    let short = too_short(body, Command::Login, LOGIN_BODY_LEN);
    let mut r = Reader::new(body);
    let sid = Sid(r.array().ok_or(short)?);
    let mac = r.array().ok_or(short)?;
    let cookie = r.rest();
    let kept = cookie
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    Ok(Request::Login {
        sid,
        mac,
        cookie: cookie.get(..kept).unwrap_or_default(),
    })
}

fn parse_rename(body: &[u8]) -> Result<Request<'_>, DeviceError> {
    let short = too_short(body, Command::Rename, RENAME_MIN_BODY_LEN);
    let mut r = Reader::new(body);
    let sid = Sid(r.array().ok_or(short)?);
    let mac = r.array().ok_or(short)?;
    let name_len = r.u8().ok_or(short)?;
    let name = name(&mut r, Command::Rename, name_len.into())?;
    Ok(Request::Rename { sid, mac, name })
}

#[cfg(test)]
mod tests;
