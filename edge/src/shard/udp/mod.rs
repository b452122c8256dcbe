//! The UDP device side of a shard (§10): its socket, its sessions, the device commands,
//! forward messages, delivery to devices and session expiry.
//!
//! A session belongs to the shard that created it at `0xE0`; the last byte of its sid
//! names that shard (the other 15 bytes are random: 120 bits), so a packet that the
//! kernel hands to another shard after NAT rebinding is passed to the owner over the mesh
//! and answered from the owner's socket (same port: `SO_REUSEPORT`). Datagrams are read
//! in batches with `recvmmsg` into buffers allocated once per shard; nothing is allocated
//! per datagram on the heartbeat path. Platform calls (register, login, rename) go to the
//! platform workers and are answered when they reply. Expiry is on the shard's wheel.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use bus::messages::ConnRef;
use edge_proto::device::{self, Sid};

use super::Shard;
use super::conn::{IdHasher, Slab};
use crate::metrics::bump;
use crate::msg::PeerMsg;
use crate::wheel::Secs;

mod commands;
mod relay;

/// Marks a session-index slot as a UDP session (WebSocket slots never reach it).
pub const UDP_BIT: u32 = 1 << 31;
/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Largest datagram handled (longer ones are dropped as malformed, never truncated).
const DGRAM: usize = 4096;
/// Datagrams sent per `sendmmsg`.
const OUT_BATCH: usize = 64;

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
    /// Next session-index slot with the same device id.
    pub next: u32,
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

/// The UDP state of a shard.
pub struct UdpSide {
    fd: OwnedFd,
    sessions: Slab<UdpSession>,
    by_sid: HashMap<[u8; 16], u32, BuildHasherDefault<IdHasher>>,
    bufs: Vec<u8>,
    random: Vec<u8>,
    max_sessions: usize,
    /// Datagrams to send at the end of the batch (one `sendmmsg`): bytes, then
    /// `(start, len, to)` per datagram.
    out: Vec<u8>,
    out_msgs: Vec<(usize, usize, SocketAddr)>,
}

impl UdpSide {
    /// The UDP state around a bound, non-blocking socket.
    pub fn new(fd: OwnedFd, max_sessions: usize) -> Self {
        UdpSide {
            fd,
            sessions: Slab::default(),
            by_sid: HashMap::default(),
            bufs: vec![0; BATCH * DGRAM],
            random: Vec::new(),
            max_sessions,
            out: Vec::with_capacity(64 * 1024),
            out_msgs: Vec::with_capacity(OUT_BATCH),
        }
    }

    /// The socket descriptor (for readiness).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Live sessions.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.by_sid.len()
    }

    fn new_sid(&mut self, shard: usize) -> io::Result<Sid> {
        if self.random.len() < 15 {
            let mut pool = vec![0u8; 15 * 256];
            super::net::fill_random(&mut pool)?;
            self.random = pool;
        }
        let mut sid = [0u8; 16];
        sid[..15].copy_from_slice(&self.random[self.random.len() - 15..]);
        self.random.truncate(self.random.len() - 15);
        sid[15] = shard as u8;
        Ok(Sid(sid))
    }

    /// The generation of session `slot` (without the UDP bit).
    pub fn generation(&self, slot: u32) -> u32 {
        self.sessions.generation(slot & !UDP_BIT)
    }

    /// The session of `slot` (without the UDP bit).
    pub fn session(&self, slot: u32) -> Option<&UdpSession> {
        self.sessions.get(slot & !UDP_BIT)
    }

    /// The session of `slot` (without the UDP bit), mutably.
    pub fn session_mut(&mut self, slot: u32) -> Option<&mut UdpSession> {
        self.sessions.get_mut(slot & !UDP_BIT)
    }
}

impl Shard {
    fn udp_ref(&self, slot: u32) -> Option<ConnRef> {
        let udp = self.udp.as_ref()?;
        Some(ConnRef {
            shard: self.index as u16,
            slot: slot | UDP_BIT,
            generation: udp.sessions.generation(slot & !UDP_BIT),
        })
    }

    /// The UDP socket is readable: read batches until it is drained.
    pub(super) fn on_udp_ready(&mut self) {
        loop {
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
                bump(&self.metrics.udp_datagrams_in);
                if len > DGRAM {
                    bump(&self.metrics.udp_drop_malformed);
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
        let (sent, failed) = super::net::send_batch(udp.fd.as_raw_fd(), &udp.out, &udp.out_msgs);
        udp.out.clear();
        udp.out_msgs.clear();
        self.metrics
            .udp_sent
            .fetch_add(sent as u64, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .udp_send_errors
            .fetch_add(failed as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replies to `request` with `body` (§10.2 reply construction).
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
            _ => bump(&self.metrics.udp_drop_malformed),
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
        let owner = sid[15] as usize;
        if owner != self.index {
            if owner >= self.count {
                bump(&self.metrics.udp_drop_unknown_session);
            } else {
                bump(&self.metrics.udp_handed_over);
                self.send_peer(
                    owner,
                    PeerMsg::Datagram {
                        from,
                        bytes: bytes.to_vec(),
                    },
                );
            }
            return None;
        }
        let now = self.now();
        let timeout = self.config.udp_timeout_secs + 1; // never early (see deadline_in)
        let udp = self.udp.as_mut()?;
        let Some(&slot) = udp.by_sid.get(sid) else {
            bump(&self.metrics.udp_drop_unknown_session);
            return None;
        };
        let session = udp.sessions.get_mut(slot)?;
        if !device::seq_accepts(session.ridx, seq) {
            bump(&self.metrics.udp_drop_stale_seq);
            return None;
        }
        session.ridx = seq;
        session.deadline = now + timeout;
        let moved = session.addr != from;
        if moved {
            session.addr = from;
        }
        self.write_behind(slot, moved);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_record_is_small() {
        let size = std::mem::size_of::<(u32, Option<UdpSession>)>();
        eprintln!(
            "udp session slot: {size} B, SocketAddr {} B",
            std::mem::size_of::<SocketAddr>()
        );
        assert!(size <= 128, "{size}");
    }
}
