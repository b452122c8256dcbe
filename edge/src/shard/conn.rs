//! A shard's WebSocket connection record: what the shell keeps per socket.
//!
//! A connection is a small plain record (`Conn`, under a hundred bytes) in the core's
//! slab; an idle connection owns no buffer (the optional boxes are only filled while a
//! partial frame or a blocked write is pending). Which sessions hold an id is the core's
//! session index (`core::sessions`), not a field of the record.

use std::os::fd::RawFd;

pub use crate::core::slab::{GENERATION_MASK, IdMap, Slab};
use crate::core::wheel::Secs;

/// Where a WebSocket connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the HTTP upgrade request (10 s).
    Handshake,
    /// Upgraded; waiting for the login string (60 s).
    Login,
    /// Login sent to the bus; reading paused until it answers.
    LoginPending,
    /// Login granted and the session indexed; waiting for the directory shard to confirm
    /// its entry before the login reply goes out (so nothing sent to it is lost).
    Joining,
    /// Logged in.
    Online,
}

/// One terminal connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket (owned: closed when the record is released).
    pub fd: RawFd,
    /// Life stage.
    pub state: State,
    /// Write readiness is requested (the socket was full).
    pub write_armed: bool,
    /// Queued in the shard's list of connections to flush this turn.
    pub dirty: bool,
    /// When the current deadline (handshake, login or read) passes.
    pub deadline: Secs,
    /// The earliest time a wheel entry for this record is due (0: none).
    pub scheduled: Secs,
    /// Phones: the mobile sub-id k of the session (user + k).
    pub mobile: u8,
    /// Heartbeat period from the login string, seconds (read deadline = 3×).
    pub timeout_secs: u32,
    /// Login id before login; session id after (mobile id for phones, device id for devices).
    pub id: i64,
    /// Phones: bound devices; devices: bound users (base ids).
    pub bound: Box<[i64]>,
    /// Bytes of an incomplete request or frame, kept between reads. (Boxed: 8 bytes in
    /// the record instead of 24, and idle connections have none.)
    #[allow(clippy::box_collection)]
    pub carry: Option<Box<Vec<u8>>>,
    /// Bytes a blocked socket has not taken yet (boxed for the same reason).
    #[allow(clippy::box_collection)]
    pub outbox: Option<Box<Vec<u8>>>,
}

impl Conn {
    /// A fresh connection waiting for its upgrade.
    pub fn new(fd: RawFd, deadline: Secs) -> Self {
        Conn {
            fd,
            state: State::Handshake,
            write_armed: false,
            dirty: false,
            deadline,
            scheduled: 0,
            mobile: 0,
            timeout_secs: 0,
            id: 0,
            bound: Box::new([]),
            carry: None,
            outbox: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_record_is_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 96,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
