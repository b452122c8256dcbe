//! A shard's WebSocket connection record: what the shell keeps per socket.
//!
//! A connection is a small plain record (`Conn`, under a hundred bytes) in the core's
//! slab; an idle connection owns no buffer (the optional boxes are only filled while a
//! partial frame or a blocked write is pending). Which sessions hold an id is the core's
//! session index (`core::sessions`), not a field of the record.

use std::os::fd::RawFd;

pub use crate::core::slab::{GENERATION_MASK, IdMap, Slab};
use crate::core::wheel::Secs;

pub use crate::core::terminal::State;
use crate::core::terminal::Terminal;

/// One terminal connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket (owned: closed when the record is released).
    pub fd: RawFd,
    /// Its life: stage, heartbeat period, deadline (sans IO, `core::terminal`).
    pub terminal: Terminal,
    /// Write readiness is requested (the socket was full).
    pub write_armed: bool,
    /// Queued in the shard's list of connections to flush this turn.
    pub dirty: bool,
    /// The earliest time a wheel entry for this record is due (0: none).
    pub scheduled: Secs,
    /// Phones: the mobile sub-id k of the session (user + k).
    pub mobile: u8,
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
    pub fn new(fd: RawFd, terminal: Terminal) -> Self {
        Conn {
            fd,
            terminal,
            write_armed: false,
            dirty: false,
            scheduled: 0,
            mobile: 0,
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
            std::mem::size_of::<Conn>() <= 64,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
