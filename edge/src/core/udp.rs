//! The UDP sessions of one shard (docs/protocol.md §6): the records, the sid index, the sequence rule,
//! NAT rebinding and expiry decisions. Pure: the shell owns the socket, the receive and
//! send buffers and the random pool sids are drawn from, and hands in the time.
//!
//! A session belongs to the shard named by its sid's last byte; a packet for a sid owned
//! elsewhere is handed to that shard (`Accept::Handover`).
//!
//! Headroom for devices that log in: sessions that have not logged in (anonymous: all a
//! flood of spoofed `0xE0` can make) may fill at most three quarters of the table. When
//! the table or that quota is full, [`UdpTable::make_room`] names an anonymous session
//! with no request pending for the shell to end — from a random sample of slots (as Redis
//! approximates LRU, so it costs no memory per session), one never heard from after
//! `0xE0` before one a device is setting up, the stalest first — and a new device still
//! gets a session while the flood only churns its own.

use std::hash::BuildHasher;
use std::net::SocketAddr;

use hashbrown::HashTable;

pub use super::device_addr::DeviceAddr;

use edge_proto::device::{self, Sid};

use edge_proto::handover::{self, Record};

use super::slab::Slab;
use super::wheel::Secs;

/// One device session.
#[derive(Debug)]
pub struct UdpSession {
    /// The session id handed out at `0xE0`.
    pub sid: Sid,
    /// Where the device was last heard from.
    pub addr: DeviceAddr,
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

/// What a wheel entry of a UDP slot means when it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not the entry the slot's session waits on (or no session): drop it.
    Stale,
    /// The session was heard from since: put it back on the wheel at `at`.
    Again {
        /// Its deadline.
        at: Secs,
        /// The session's generation, for the new entry.
        generation: u32,
    },
    /// Its deadline passed: end it.
    Expired,
}

/// The table is at `--max-udp-sessions` (this shard's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The sessions of one shard.
pub struct UdpTable {
    sessions: Slab<UdpSession>,
    /// The slot of each session, found by its sid's hash and compared against the sid the
    /// session holds (4 bytes an entry; a map would keep a 16-byte copy of the key too).
    by_sid: HashTable<u32>,
    /// Keyed hash: a sid comes off the network before it is known to be ours.
    hasher: foldhash::fast::RandomState,
    max_sessions: usize,
    /// Most sessions that have not logged in.
    max_anonymous: usize,
    /// Live sessions that have not logged in.
    anonymous: usize,
    /// xorshift64* state for [`Self::make_room`]'s sample (seeded by the shell).
    rng: u64,
}

/// Slots [`UdpTable::make_room`] looks at.
const ROOM_SAMPLES: usize = 32;

impl UdpTable {
    /// An empty table of at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        UdpTable {
            sessions: Slab::default(),
            by_sid: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            max_sessions,
            max_anonymous: (max_sessions - max_sessions / 4).max(1),
            anonymous: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The same, sampling with `seed` (non-zero) instead of a fixed one.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = seed | 1;
        self
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Live sessions that have not logged in.
    pub fn anonymous(&self) -> usize {
        self.anonymous
    }

    /// When a new session would not fit (the table or the anonymous quota is full): the
    /// slot of an anonymous session with nothing pending — among [`ROOM_SAMPLES`] random
    /// slots, one never heard from after `0xE0` before one being set up, then the one heard
    /// from longest ago — for the shell to end before it opens the new one. `None`: there
    /// is room, or the sample found nothing that may be ended.
    pub fn make_room(&mut self) -> Option<u32> {
        if self.len() < self.max_sessions && self.anonymous < self.max_anonymous {
            return None;
        }
        let span = u64::from(self.sessions.span().max(1));
        // Ranked: sessions never heard from after `0xE0` (all a spoofed one can be) before
        // those a device is setting up, then the stalest.
        let mut best: Option<((bool, Secs), u32)> = None;
        for _ in 0..ROOM_SAMPLES {
            let slot = (self.next_random() % span) as u32;
            let Some(s) = self.sessions.get(slot) else {
                continue;
            };
            let idle = s.device == 0 && s.pending.is_none() && s.joining.is_none();
            let rank = (s.ridx != 0, s.deadline);
            if idle && best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, slot));
            }
        }
        best.map(|(_, slot)| slot)
    }

    /// The session in `slot` is now logged in as `device` (0: not logged in), which moves
    /// it out of or back into the anonymous quota. The only way `device` changes.
    pub fn set_device(&mut self, slot: u32, device: i64) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        match (session.device == 0, device == 0) {
            (true, false) => self.anonymous -= 1,
            (false, true) => self.anonymous += 1,
            _ => {}
        }
        session.device = device;
    }

    /// Every live session with its slot (for an upgrade's handover).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &UdpSession)> + '_ {
        self.by_sid
            .iter()
            .filter_map(|&slot| Some((slot, self.sessions.get(slot)?)))
    }

    /// The slot of the session holding `sid`.
    fn slot_of(&self, sid: &[u8; 16]) -> Option<u32> {
        let sessions = &self.sessions;
        self.by_sid
            .find(self.hasher.hash_one(sid), |&slot| {
                sessions.get(slot).is_some_and(|s| &s.sid.0 == sid)
            })
            .copied()
    }

    /// An upgrade's records of the sessions it can hand over (issue 15): every one not
    /// waiting on the platform or the directory, its expiry relative to `now`. Returns
    /// also how many were left out.
    pub fn handover_records(&self, now: Secs) -> (Vec<Record>, usize) {
        let mut left_out = 0;
        let mut records = Vec::with_capacity(self.len());
        for (_, s) in self.iter() {
            if s.pending.is_some() || s.joining.is_some() {
                left_out += 1;
                continue;
            }
            records.push(Record::UdpSession(handover::UdpSession {
                sid: s.sid.0,
                device: s.device,
                addr: s.addr.socket(),
                sidx: s.sidx,
                ridx: s.ridx,
                expires_in_secs: s.deadline.saturating_sub(now),
                bound: s.bound.to_vec(),
            }));
        }
        (records, left_out)
    }

    /// How many sessions an upgrade would leave out (waiting on the platform or the
    /// directory), without writing any record.
    pub fn handover_left_out(&self) -> usize {
        self.iter()
            .filter(|(_, s)| s.pending.is_some() || s.joining.is_some())
            .count()
    }

    /// Takes in a handed-over session at `now`: its slot, generation, device and deadline
    /// (the caller puts it on the wheel and, when logged in, in the session index). `None`
    /// for a sid already here, or a full table.
    pub fn restore(&mut self, u: handover::UdpSession, now: Secs) -> Option<(u32, u32, i64, Secs)> {
        let deadline = now + u.expires_in_secs.max(1);
        let (slot, generation) = self.open(Sid(u.sid), u.addr, deadline).ok()?;
        self.set_device(slot, u.device);
        let session = self.sessions.get_mut(slot)?;
        (session.sidx, session.ridx) = (u.sidx, u.ridx);
        session.bound = u.bound.into_boxed_slice();
        Some((slot, generation, u.device, deadline))
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
        if self.len() >= self.max_sessions
            || self.anonymous >= self.max_anonymous
            || self.slot_of(&sid.0).is_some()
        {
            return Err(Full);
        }
        let session = UdpSession {
            sid,
            addr: addr.into(),
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
        let (sessions, hasher) = (&self.sessions, &self.hasher);
        self.by_sid
            .insert_unique(hasher.hash_one(sid.0), slot, |&slot| {
                // Every slot in the index holds a session (removed from both together).
                sessions.get(slot).map_or(0, |s| hasher.hash_one(s.sid.0))
            });
        self.anonymous += 1;
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
        let Some(slot) = self.slot_of(sid) else {
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
        let from = DeviceAddr::from(from);
        let moved = session.addr != from;
        session.addr = from;
        Accept::Mine { slot, moved }
    }

    /// A wheel entry for `slot` came due at `now`. The session in the slot decides by its
    /// `scheduled` time, whatever generation the entry carries: a session opened in the
    /// slot of one just ended to make room takes over that one's pending entry
    /// ([`Self::inherit`]) instead of adding its own, so a flood of sessions churned
    /// through one slot leaves one wheel entry behind, not one per session.
    pub fn due(&mut self, slot: u32, now: Secs) -> Due {
        let generation = self.sessions.generation(slot);
        let Some(s) = self.sessions.get_mut(slot) else {
            return Due::Stale;
        };
        if s.scheduled == 0 || s.scheduled > now {
            return Due::Stale;
        }
        if s.deadline > now {
            s.scheduled = s.deadline;
            return Due::Again {
                at: s.deadline,
                generation,
            };
        }
        s.scheduled = 0;
        Due::Expired
    }

    /// The session just opened in `slot` takes over the wheel entry its predecessor in the
    /// slot had pending at `scheduled` (not later than its own deadline): true, and the
    /// caller adds no entry of its own; false (nothing pending), and it must.
    pub fn inherit(&mut self, slot: u32, scheduled: Secs) -> bool {
        match self.sessions.get_mut(slot) {
            Some(s) if scheduled != 0 && scheduled <= s.deadline => {
                s.scheduled = scheduled;
                true
            }
            _ => false,
        }
    }

    /// Checks the anonymous count against the sessions, and that the index finds every
    /// session by its sid and nothing else (for tests: it walks the table).
    pub fn check(&self) -> Result<(), String> {
        let anonymous = self.iter().filter(|(_, s)| s.device == 0).count();
        let indexed: std::collections::BTreeSet<u32> = self.by_sid.iter().copied().collect();
        if indexed.len() != self.by_sid.len() || indexed.len() != self.sessions.len() {
            return Err(format!(
                "{} index entries, {} distinct, {} sessions stored",
                self.by_sid.len(),
                indexed.len(),
                self.sessions.len()
            ));
        }
        if let Some((slot, _)) = self
            .iter()
            .find(|(slot, s)| self.slot_of(&s.sid.0) != Some(*slot))
        {
            return Err(format!(
                "the session in slot {slot} is not found by its sid"
            ));
        }
        if anonymous != self.anonymous {
            return Err(format!(
                "{anonymous} anonymous sessions, counted {}",
                self.anonymous
            ));
        }
        Ok(())
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
        if let Ok(entry) = self
            .by_sid
            .find_entry(self.hasher.hash_one(session.sid.0), |&s| s == slot)
        {
            entry.remove();
        }
        if session.device == 0 {
            self.anonymous -= 1;
        }
        Some(session)
    }
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
