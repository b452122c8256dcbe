//! The UDP device side of a shard (docs/protocol.md §5, §6): its socket, its sessions, the device commands,
//! forward messages, delivery to devices and session expiry.
//!
//! `0xE0` is answered with a cookie sid and nothing is stored (`core::cookie`); the
//! session opens on the shard that issued it when the device comes back with it from the
//! same address. The last byte of the sid names that shard, so a packet that the kernel
//! hands to another shard after NAT rebinding is passed to the owner over the mesh and
//! answered from the owner's socket (same port: `SO_REUSEPORT`). Datagrams are read
//! in batches with `recvmmsg` into buffers allocated once per shard; nothing is allocated
//! per datagram on the heartbeat path. Platform calls (register, login, rename) go to the
//! platform workers and are answered when they reply. Expiry is on the shard's wheel.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use bus::messages::ConnRef;
use edge_proto::device::{self, Sid};

use super::Shard;
use crate::core::admission::SourceLimiter;
use crate::core::cookie::SidCookies;
use crate::core::udp::{Accept, UdpTable};
use crate::metrics::bump_own;
use crate::msg::PeerMsg;

mod commands;
mod relay;

pub use crate::core::sessions::UDP_BIT;
pub use crate::core::udp::{Joining, Pending, UdpSession};

/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// `recvmmsg` calls per turn at most: a flood cannot hold the shard in its UDP socket
/// (connections, the inbox and the wheel wait for the turn's end); what is left is read
/// next turn.
const BATCHES_PER_TURN: usize = 16;
/// Largest datagram handled (longer ones are dropped as malformed, never truncated).
const DGRAM: usize = 4096;
/// Datagrams sent per `sendmmsg`.
const OUT_BATCH: usize = 64;

/// The UDP side of a shard: its socket and buffers around the core's session table.
pub struct UdpSide {
    fd: OwnedFd,
    /// The sessions (sans IO: sid index, sequence and expiry rules).
    table: UdpTable,
    /// The sids `0xE0` is answered with (nothing stored until they come back).
    cookies: SidCookies,
    /// New sessions per source address.
    limiter: SourceLimiter,
    bufs: Vec<u8>,
    random: Vec<u8>,
    /// Datagrams to send at the end of the batch (one `sendmmsg`): bytes, then
    /// `(start, len, to)` per datagram.
    out: Vec<u8>,
    out_msgs: Vec<(usize, usize, SocketAddr)>,
}

impl UdpSide {
    /// The UDP state around a bound, non-blocking socket.
    pub fn new(fd: OwnedFd, max_sessions: usize, limiter: SourceLimiter, shard: u8) -> Self {
        let mut seed = [0u8; 8];
        // The eviction sample need not be secret, only not fixed: the clock will do if the
        // random source fails.
        if super::net::fill_random(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            seed = (nanos as u64).to_le_bytes();
        }
        let seed = u64::from_le_bytes(seed);
        UdpSide {
            fd,
            table: UdpTable::new(max_sessions).seeded(seed),
            cookies: SidCookies::new(std::collections::hash_map::RandomState::new(), shard),
            limiter,
            bufs: vec![0; BATCH * DGRAM],
            random: Vec::new(),
            out: Vec::with_capacity(64 * 1024),
            out_msgs: Vec::with_capacity(OUT_BATCH),
        }
    }

    /// The socket descriptor (for readiness).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Four random bytes for a cookie, from a pool refilled from the OS.
    fn nonce(&mut self) -> io::Result<[u8; 4]> {
        if self.random.len() < 4 {
            let mut pool = vec![0u8; 4 * 256];
            super::net::fill_random(&mut pool)?;
            self.random = pool;
        }
        let mut nonce = [0u8; 4];
        nonce.copy_from_slice(&self.random[self.random.len() - 4..]);
        self.random.truncate(self.random.len() - 4);
        Ok(nonce)
    }

    /// The session table.
    pub fn table(&self) -> &UdpTable {
        &self.table
    }

    /// The session table, mutably (an upgrade's import).
    pub fn table_mut(&mut self) -> &mut UdpTable {
        &mut self.table
    }

    /// The generation of session `slot` (with or without the UDP bit).
    pub fn generation(&self, slot: u32) -> u32 {
        self.table.generation(slot & !UDP_BIT)
    }

    /// The session of `slot` (with or without the UDP bit).
    pub fn session(&self, slot: u32) -> Option<&UdpSession> {
        self.table.get(slot & !UDP_BIT)
    }

    /// The session of `slot` (with or without the UDP bit), mutably.
    pub fn session_mut(&mut self, slot: u32) -> Option<&mut UdpSession> {
        self.table.get_mut(slot & !UDP_BIT)
    }
}

impl Shard {
    fn udp_ref(&self, slot: u32) -> Option<ConnRef> {
        let udp = self.udp.as_ref()?;
        Some(ConnRef {
            shard: self.index as u16,
            slot: slot | UDP_BIT,
            generation: udp.generation(slot),
        })
    }

    /// The UDP socket is readable: read batches until it is drained.
    pub(super) fn on_udp_ready(&mut self) {
        self.udp_again = false;
        for _ in 0..BATCHES_PER_TURN {
            let Some(udp) = self.udp.as_mut() else { return };
            let mut bufs = std::mem::take(&mut udp.bufs);
            let fd = udp.raw_fd();
            let mut lens = [0usize; BATCH];
            let mut from = [None; BATCH];
            let n = super::net::recv_batch(fd, &mut bufs, DGRAM, &mut lens, &mut from)
                .unwrap_or_default();
            for i in 0..n {
                let (Some(addr), len) = (from[i], lens[i]) else {
                    continue;
                };
                bump_own(&self.metrics.udp_datagrams_in);
                if len > DGRAM {
                    bump_own(&self.metrics.udp_drop_malformed);
                    continue;
                }
                let start = i * DGRAM;
                self.on_datagram(&bufs[start..start + len], addr);
            }
            if let Some(udp) = self.udp.as_mut() {
                udp.bufs = bufs;
            }
            self.flush_udp();
            if n < BATCH {
                return;
            }
        }
        self.udp_again = true;
        bump_own(&self.metrics.udp_read_budget_spent);
    }

    /// Queues a datagram; the queue goes out with one `sendmmsg` per [`OUT_BATCH`] at the
    /// end of the batch ([`Shard::flush_udp`]).
    fn udp_send(&mut self, addr: SocketAddr, bytes: &[u8]) {
        let Some(udp) = self.udp.as_mut() else { return };
        let start = udp.out.len();
        udp.out.extend_from_slice(bytes);
        udp.out_msgs.push((start, bytes.len(), addr));
        if udp.out_msgs.len() >= OUT_BATCH {
            self.flush_udp();
        }
    }

    /// Sends every queued datagram.
    pub(super) fn flush_udp(&mut self) {
        let Some(udp) = self.udp.as_mut() else { return };
        if udp.out_msgs.is_empty() {
            return;
        }
        let (sent, failed) = super::net::send_batch(udp.fd.as_fd(), &udp.out, &udp.out_msgs);
        udp.out.clear();
        udp.out_msgs.clear();
        crate::metrics::add_own(&self.metrics.udp_sent, sent as u64);
        crate::metrics::add_own(&self.metrics.udp_send_errors, failed as u64);
    }

    /// Replies to `request` with `body` (docs/protocol.md §5.2).
    fn udp_reply(&mut self, addr: SocketAddr, request: &[u8], body: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if device::write_reply(&mut out, request, body).is_ok() {
            self.udp_send(addr, &out);
        }
        self.out = out;
    }

    /// One datagram, from any shard's socket (or handed over by another shard).
    pub(super) fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        match bytes.first().map(|b| b & 0x07) {
            Some(2) => self.on_direct(bytes, from),
            Some(3) => self.on_forward(bytes, from),
            _ => bump_own(&self.metrics.udp_drop_malformed),
        }
    }

    /// The session a packet names, if this shard owns it; hands it to the owner otherwise.
    /// Checks the sequence number and refreshes the session (address, expiry).
    fn accept_session(
        &mut self,
        sid: &[u8; 16],
        seq: u16,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Option<u32> {
        let here = (self.index, self.count);
        // `now + timeout` on the one-second clock: +1 so it never expires early.
        let now = self.now();
        let deadline = now + self.config.udp_timeout_secs + 1;
        let udp = self.udp.as_mut()?;
        match udp.table.accept(here, sid, seq, from, deadline) {
            Accept::Mine { slot, moved } => {
                self.write_behind(slot, moved);
                Some(slot)
            }
            Accept::Handover(owner) => {
                bump_own(&self.metrics.udp_handed_over);
                let bytes = bytes.to_vec();
                self.send_peer(owner, PeerMsg::Datagram { from, bytes });
                None
            }
            Accept::Unknown => {
                let max_age = self.config.udp_timeout_secs;
                let issued = udp.cookies.verify(sid, from, now, max_age);
                if !issued {
                    bump_own(&self.metrics.udp_drop_unknown_session);
                    return None;
                }
                // A device back with the cookie its 0xE0 was answered with: open it now.
                self.open_udp_session(Sid(*sid), from, deadline)?;
                let udp = self.udp.as_mut()?;
                match udp.table.accept(here, sid, seq, from, deadline) {
                    Accept::Mine { slot, .. } => {
                        self.write_behind(slot, true);
                        Some(slot)
                    }
                    _ => {
                        bump_own(&self.metrics.udp_drop_stale_seq);
                        None
                    }
                }
            }
            Accept::StaleSeq => {
                bump_own(&self.metrics.udp_drop_stale_seq);
                None
            }
        }
    }
}
