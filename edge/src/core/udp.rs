//! The UDP sessions of one shard (§10): the records, the sid index, the sequence rule,
//! NAT rebinding and expiry decisions. Pure: the shell owns the socket, the receive and
//! send buffers and the random pool sids are drawn from, and hands in the time.
//!
//! A session belongs to the shard named by its sid's last byte; a packet for a sid owned
//! elsewhere is handed to that shard (`Accept::Handover`).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;

use edge_proto::device::{self, Sid};

use super::slab::{IdHasher, Slab};
use super::wheel::Secs;

/// One device session.
#[derive(Debug)]
pub struct UdpSession {
    /// The session id handed out at `0xE0`.
    pub sid: Sid,
    /// Where the device was last heard from.
    pub addr: SocketAddr,
    /// The device id once logged in (0 before).
    pub device: i64,
    /// Last sequence number used towards the device.
    pub sidx: u16,
    /// Last sequence number accepted from the device.
    pub ridx: u16,
    /// Expiry (`--uto` after the last accepted packet).
    pub deadline: Secs,
    /// Earliest pending wheel entry (0: none).
    pub scheduled: Secs,
    /// Users (base ids) bound to the device.
    pub bound: Box<[i64]>,
    /// The request awaiting a platform or bus answer (only while one is pending).
    pub pending: Option<Box<Pending>>,
    /// Set while a login waits for the directory shard's acknowledgement.
    pub joining: Option<Joining>,
    /// Cluster mode: when the session was last written behind to Redis (0: never).
    pub written: Secs,
}

/// A login waiting for its directory entry.
#[derive(Debug, Clone, Copy)]
pub struct Joining {
    /// The session was not logged in before (its users get the online status).
    pub fresh: bool,
}

/// What a reply to a pending request needs.
#[derive(Debug)]
pub struct Pending {
    /// The request's first 36 bytes (echoed in the reply).
    pub header: [u8; 36],
    /// The request's MAC (echoed by the rename reply).
    pub mac: [u8; 8],
}

/// What became of a packet naming a sid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A session of this shard, refreshed; `moved` when its address changed (NAT).
    Mine {
        /// Its slot.
        slot: u32,
        /// The device's address changed.
        moved: bool,
    },
    /// The sid names another shard: hand the packet over.
    Handover(usize),
    /// No such session (expired, never opened, or a shard byte out of range).
    Unknown,
    /// A sequence number at or behind the last accepted one (a replay).
    StaleSeq,
}

/// The table is at `--max-udp-sessions` (this shard's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The sessions of one shard.
pub struct UdpTable {
    sessions: Slab<UdpSession>,
    by_sid: HashMap<[u8; 16], u32, BuildHasherDefault<IdHasher>>,
    max_sessions: usize,
}

impl UdpTable {
    /// An empty table of at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        UdpTable {
            sessions: Slab::default(),
            by_sid: HashMap::default(),
            max_sessions,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.by_sid.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_sid.is_empty()
    }

    /// Opens a session for `sid` (drawn by the shell, last byte = this shard) heard from
    /// `addr`, expiring at `deadline`. Returns its slot and generation.
    pub fn open(&mut self, sid: Sid, addr: SocketAddr, deadline: Secs) -> Result<(u32, u32), Full> {
        if self.len() >= self.max_sessions || self.by_sid.contains_key(&sid.0) {
            return Err(Full);
        }
        let session = UdpSession {
            sid,
            addr,
            device: 0,
            sidx: 0,
            ridx: 0,
            deadline,
            scheduled: deadline,
            bound: Box::new([]),
            pending: None,
            joining: None,
            written: 0,
        };
        let (slot, generation) = self.sessions.insert(session);
        self.by_sid.insert(sid.0, slot);
        Ok((slot, generation))
    }

    /// A packet with `sid` and sequence `seq` came from `from`: on shard `index` of
    /// `count`, checks the sequence and refreshes the session (address, expiry).
    pub fn accept(
        &mut self,
        (index, count): (usize, usize),
        sid: &[u8; 16],
        seq: u16,
        from: SocketAddr,
        deadline: Secs,
    ) -> Accept {
        let owner = sid[15] as usize;
        if owner != index {
            return if owner < count {
                Accept::Handover(owner)
            } else {
                Accept::Unknown
            };
        }
        let Some(&slot) = self.by_sid.get(sid) else {
            return Accept::Unknown;
        };
        let Some(session) = self.sessions.get_mut(slot) else {
            return Accept::Unknown;
        };
        if !device::seq_accepts(session.ridx, seq) {
            return Accept::StaleSeq;
        }
        session.ridx = seq;
        session.deadline = deadline;
        let moved = session.addr != from;
        session.addr = from;
        Accept::Mine { slot, moved }
    }

    /// The session in `slot`.
    pub fn get(&self, slot: u32) -> Option<&UdpSession> {
        self.sessions.get(slot)
    }

    /// The session in `slot`, mutably.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut UdpSession> {
        self.sessions.get_mut(slot)
    }

    /// The session in `slot` if it is still of `generation`.
    pub fn get_gen(&self, slot: u32, generation: u32) -> Option<&UdpSession> {
        self.sessions.get_gen(slot, generation)
    }

    /// The session in `slot` if it is still of `generation`, mutably.
    pub fn get_gen_mut(&mut self, slot: u32, generation: u32) -> Option<&mut UdpSession> {
        self.sessions.get_gen_mut(slot, generation)
    }

    /// The generation of `slot`.
    pub fn generation(&self, slot: u32) -> u32 {
        self.sessions.generation(slot)
    }

    /// Ends the session in `slot` (its slot's generation moves on).
    pub fn remove(&mut self, slot: u32) -> Option<UdpSession> {
        let session = self.sessions.remove(slot)?;
        self.by_sid.remove(&session.sid.0);
        Some(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn sid(n: u8, shard: u8) -> Sid {
        let mut s = [n; 16];
        s[15] = shard;
        Sid(s)
    }

    #[test]
    fn accept_checks_owner_sequence_and_address() {
        let mut table = UdpTable::new(8);
        let (slot, _) = table.open(sid(1, 0), addr(1), 10).unwrap();
        let here = (0, 2);
        assert_eq!(
            table.accept(here, &sid(1, 0).0, 1, addr(1), 20),
            Accept::Mine { slot, moved: false }
        );
        assert_eq!(
            table.accept(here, &sid(1, 0).0, 1, addr(1), 20),
            Accept::StaleSeq
        );
        assert_eq!(
            table.accept(here, &sid(1, 0).0, 2, addr(2), 30),
            Accept::Mine { slot, moved: true }
        );
        assert_eq!(table.get(slot).unwrap().deadline, 30);
        assert_eq!(
            table.accept(here, &sid(1, 1).0, 3, addr(2), 30),
            Accept::Handover(1)
        );
        assert_eq!(
            table.accept(here, &sid(1, 9).0, 3, addr(2), 30),
            Accept::Unknown
        );
        assert_eq!(
            table.accept(here, &sid(2, 0).0, 3, addr(2), 30),
            Accept::Unknown
        );
    }

    #[test]
    fn removal_frees_the_sid_and_moves_the_generation() {
        let mut table = UdpTable::new(1);
        let (slot, generation) = table.open(sid(1, 0), addr(1), 10).unwrap();
        assert_eq!(table.open(sid(2, 0), addr(1), 10), Err(Full));
        table.remove(slot).unwrap();
        let (again, next) = table.open(sid(2, 0), addr(1), 10).unwrap();
        assert_eq!(again, slot);
        assert_ne!(next, generation);
        assert!(table.get_gen(slot, generation).is_none());
        assert_eq!(
            table.accept((0, 1), &sid(1, 0).0, 5, addr(1), 10),
            Accept::Unknown
        );
    }

    #[test]
    fn session_record_is_small() {
        let size = std::mem::size_of::<(u32, Option<UdpSession>)>();
        assert!(size <= 128, "{size}");
    }
}
