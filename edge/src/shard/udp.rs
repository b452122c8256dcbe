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

use bus::messages::{ConnRef, LoginGrant, PlatformAnswer, PlatformCall, PlatformRequest, ToBus};
use edge_proto::device::{self, Request, Sid};
use edge_proto::frame;
use edge_proto::status::StatusType;

use super::Shard;
use super::conn::{IdHasher, NONE, Slab};
use crate::metrics::bump;
use crate::msg::PeerMsg;
use crate::wheel::{Entry, Secs};

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
        let timeout = self.config.udp_timeout_secs;
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

    fn on_direct(&mut self, bytes: &[u8], from: SocketAddr) {
        let request = match Request::parse_datagram(bytes) {
            Ok((_, request)) => request,
            Err(_) => {
                bump(&self.metrics.udp_drop_malformed);
                return;
            }
        };
        let seq = u16::from_le_bytes([bytes[2], bytes[3]]);
        match request {
            Request::NewSession { .. } => self.on_new_session(bytes, from),
            Request::Upload { .. } => {
                let conn = ConnRef {
                    shard: self.index as u16,
                    slot: NONE,
                    generation: 0,
                };
                if self
                    .bus
                    .try_send(ToBus::Upload {
                        conn,
                        src: 0,
                        message: bytes.to_vec(),
                    })
                    .is_err()
                {
                    bump(&self.metrics.drop_bus_queue_full);
                } else {
                    bump(&self.metrics.uploads);
                }
            }
            other => {
                let Some(sid) = other.sid() else {
                    bump(&self.metrics.udp_drop_malformed);
                    return;
                };
                let Some(slot) = self.accept_session(&sid.0, seq, bytes, from) else {
                    return;
                };
                self.on_command(slot, other, bytes, from);
            }
        }
    }

    fn on_new_session(&mut self, bytes: &[u8], from: SocketAddr) {
        let (index, now, timeout) = (self.index, self.now(), self.config.udp_timeout_secs);
        let Some(udp) = self.udp.as_mut() else { return };
        if udp.len() >= udp.max_sessions {
            bump(&self.metrics.udp_drop_full);
            let body = device::new_session_body(device::STATUS_SERVER_ERROR, &Sid([0; 16]));
            self.udp_reply(from, bytes, &body);
            return;
        }
        let Ok(sid) = udp.new_sid(index) else { return };
        let session = UdpSession {
            sid,
            addr: from,
            device: 0,
            sidx: 0,
            ridx: 0,
            deadline: now + timeout,
            scheduled: now + timeout,
            next: NONE,
            bound: Box::new([]),
            pending: None,
            joining: None,
            written: 0,
        };
        let (slot, generation) = udp.sessions.insert(session);
        udp.by_sid.insert(sid.0, slot);
        self.metrics
            .udp_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.wheel.insert(
            now + timeout,
            Entry {
                slot: slot | UDP_BIT,
                generation,
            },
        );
        self.write_behind(slot, true);
        let body = device::new_session_body(device::STATUS_OK, &sid);
        self.udp_reply(from, bytes, &body);
    }

    fn on_command(&mut self, slot: u32, request: Request<'_>, bytes: &[u8], from: SocketAddr) {
        let Some(sid) = request.sid() else { return };
        let call = match request {
            Request::Register(r) => PlatformCall::Register {
                mac: r.mac,
                device_type: r.device_type,
                production_time: r.production_time,
                sn: r.sn,
                name: r.name.to_vec(),
            },
            Request::Login { mac, cookie, .. } => PlatformCall::Login {
                mac,
                cookie: cookie.to_vec(),
            },
            Request::Rename { mac, name, .. } => PlatformCall::Rename {
                mac,
                name: name.to_vec(),
            },
            Request::Heartbeat { .. } => {
                bump(&self.metrics.udp_heartbeats);
                return self.udp_reply(from, bytes, &device::status_body(device::STATUS_OK, sid));
            }
            _ => {
                bump(&self.metrics.udp_bad_command);
                return self.udp_reply(
                    from,
                    bytes,
                    &device::status_body(device::STATUS_BAD_COMMAND, sid),
                );
            }
        };
        let mac = match &call {
            PlatformCall::Register { mac, .. }
            | PlatformCall::Login { mac, .. }
            | PlatformCall::Rename { mac, .. } => *mac,
        };
        let mut header = [0u8; 36];
        header.copy_from_slice(&bytes[..36]);
        let Some(conn) = self.udp_ref(slot) else {
            return;
        };
        if let Some(session) = self.udp.as_mut().and_then(|u| u.sessions.get_mut(slot)) {
            session.pending = Some(Box::new(Pending { header, mac }));
        }
        if self
            .platform
            .try_send(PlatformRequest { conn, call })
            .is_err()
        {
            bump(&self.metrics.drop_platform_queue_full);
            self.finish_pending(slot, |_, sid| {
                device::status_body(device::STATUS_SERVER_ERROR, sid).to_vec()
            });
        }
    }

    /// Answers the pending request of `slot` with the body `make` builds.
    fn finish_pending(&mut self, slot: u32, make: impl FnOnce(&Pending, &Sid) -> Vec<u8>) {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_mut(slot & !UDP_BIT))
        else {
            return;
        };
        let Some(pending) = session.pending.take() else {
            return;
        };
        let (sid, addr) = (session.sid, session.addr);
        let body = make(&pending, &sid);
        self.udp_reply(addr, &pending.header, &body);
    }

    /// The platform answered.
    pub(super) fn on_platform(&mut self, conn: ConnRef, answer: PlatformAnswer) {
        let slot = conn.slot & !UDP_BIT;
        let live = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_gen_mut(slot, conn.generation))
            .is_some();
        if !live {
            return;
        }
        match answer {
            PlatformAnswer::Register { status, cookie } => {
                let device = device::parse_cookie_device_id(&cookie).unwrap_or(0);
                self.finish_pending(slot, |_, sid| {
                    device::register_body(status, sid, device, &cookie).to_vec()
                });
            }
            PlatformAnswer::Rename { status } => {
                self.finish_pending(slot, |p, sid| {
                    device::rename_body(status, sid, &p.mac).to_vec()
                });
            }
            PlatformAnswer::Login { status, device }
                if status != device::STATUS_OK || device >= 0 =>
            {
                let status = if status == device::STATUS_OK {
                    device::STATUS_SERVER_ERROR
                } else {
                    status
                };
                self.finish_pending(slot, |_, sid| {
                    device::login_body(status, sid, device::HEARTBEAT_INTERVAL_SECS).to_vec()
                });
            }
            PlatformAnswer::Login { device, .. } => {
                if self
                    .bus
                    .try_send(ToBus::Login { conn, id: device })
                    .is_err()
                {
                    bump(&self.metrics.drop_bus_queue_full);
                    self.finish_pending(slot, |_, sid| {
                        device::login_body(
                            device::STATUS_SERVER_ERROR,
                            sid,
                            device::HEARTBEAT_INTERVAL_SECS,
                        )
                        .to_vec()
                    });
                }
            }
        }
    }

    /// The bus granted (or refused) a device login: the session goes online.
    pub(super) fn on_udp_login_done(&mut self, conn: ConnRef, result: Result<LoginGrant, u8>) {
        let slot = conn.slot & !UDP_BIT;
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_gen_mut(slot, conn.generation))
        else {
            return;
        };
        let grant = match result {
            Ok(grant) => grant,
            Err(_) => {
                return self.finish_pending(slot, |_, sid| {
                    device::login_body(
                        device::STATUS_SERVER_ERROR,
                        sid,
                        device::HEARTBEAT_INTERVAL_SECS,
                    )
                    .to_vec()
                });
            }
        };
        let previous = session.device;
        if previous != 0 {
            self.unregister_session(slot | UDP_BIT, previous);
        }
        let Some(udp) = self.udp.as_mut() else { return };
        let Some(session) = udp.sessions.get_mut(slot) else {
            return;
        };
        session.device = grant.session;
        session.bound = grant.bound.into_boxed_slice();
        let device_id = session.device;
        bump(&self.metrics.udp_logins);
        let joining = Joining {
            fresh: previous == 0,
        };
        if let Some(session) = self.udp.as_mut().and_then(|u| u.sessions.get_mut(slot)) {
            session.joining = Some(joining);
        }
        if self.register_session(slot | UDP_BIT, device_id) {
            self.finish_udp_login(slot);
        }
    }

    /// The device's session is reachable from every shard: reply to its login and tell its
    /// users it is online.
    pub(super) fn finish_udp_login(&mut self, slot: u32) {
        let slot = slot & !UDP_BIT;
        let Some(session) = self.udp.as_mut().and_then(|u| u.sessions.get_mut(slot)) else {
            return;
        };
        let Some(joining) = session.joining.take() else {
            return;
        };
        let (device_id, users) = (session.device, session.bound.to_vec());
        self.finish_pending(slot, |_, sid| {
            device::login_body(device::STATUS_OK, sid, device::HEARTBEAT_INTERVAL_SECS).to_vec()
        });
        if joining.fresh {
            self.send_device_status(device_id, &users, StatusType::DeviceOnline);
        }
    }

    /// A forward message from a device (opcode 3): relayed to its users' phones by the
    /// device rules, with the sid slot cleared (the original leaked it to phones).
    fn on_forward(&mut self, bytes: &[u8], from: SocketAddr) {
        let check_ok =
            frame::header_check(bytes, frame::FORWARD_DATA_OFFSET) == bytes.get(72).copied();
        if bytes.len() < frame::FORWARD_MIN_LEN || !check_ok {
            bump(&self.metrics.udp_drop_malformed);
            return;
        }
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&bytes[24..40]);
        let seq = u16::from_le_bytes([bytes[2], bytes[3]]);
        let Some(slot) = self.accept_session(&sid, seq, bytes, from) else {
            return;
        };
        let Some(session) = self.udp.as_ref().and_then(|u| u.sessions.get(slot)) else {
            return;
        };
        if session.device == 0 {
            bump(&self.metrics.udp_drop_not_logged_in);
            return;
        }
        let mut dst = [0u8; 8];
        dst.copy_from_slice(&bytes[8..16]);
        let mut ids = std::mem::take(&mut self.dests);
        ids.clear();
        edge_proto::id::device_destinations(i64::from_le_bytes(dst), &session.bound, &mut ids);
        // Phones see the session's device id as the source (the original trusted the packet)
        // and no sid (the original leaked it); the header check is recomputed.
        let device_id = session.device;
        let mut message = std::mem::take(&mut self.relay);
        message.clear();
        message.extend_from_slice(bytes);
        message[16..24].copy_from_slice(&device_id.to_le_bytes());
        message[24..40].fill(0);
        if let Some(check) = frame::header_check(&message, frame::FORWARD_DATA_OFFSET) {
            message[72] = check;
        }
        bump(&self.metrics.msgs_in);
        self.route(device_id, &ids, &message);
        self.dests = ids;
        self.relay = message;
    }

    /// Delivers a terminal message to a UDP device: sequence and sid patched (§10.7), the
    /// header check recomputed.
    pub(super) fn udp_deliver(&mut self, slot: u32, message: &[u8]) -> bool {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_mut(slot & !UDP_BIT))
        else {
            return false;
        };
        if message.len() < frame::PATCH_MIN_LEN {
            bump(&self.metrics.udp_drop_malformed);
            return false;
        }
        session.sidx = session.sidx.wrapping_add(1);
        let (seq, sid, addr) = (session.sidx, session.sid, session.addr);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(message);
        let ok = frame::patch_for_device(&mut out, seq, &sid.0).is_ok();
        if ok {
            self.udp_send(addr, &out);
            bump(&self.metrics.msgs_out);
        }
        self.out = out;
        ok
    }

    /// A push to a UDP device: a direct message with the session's next sequence.
    pub(super) fn udp_push(&mut self, slot: u32, msg_id: u16, body: &[u8]) -> bool {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_mut(slot & !UDP_BIT))
        else {
            return false;
        };
        session.sidx = session.sidx.wrapping_add(1);
        let (seq, device, addr) = (session.sidx, session.device, session.addr);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let spec = frame::DirectSpec {
            seq,
            timestamp: Self::unix_now() as u32,
            dst: device,
            src: 0,
            msg_id,
            body,
        };
        let ok = frame::write_direct(&mut out, &spec).is_ok();
        if ok {
            self.udp_send(addr, &out);
        }
        self.out = out;
        ok
    }

    /// Cluster mode: writes the session behind to Redis when it changed (`force`) or its
    /// Redis TTL needs refreshing; never more than one message per third of `--uto`
    /// otherwise, so there is no Redis work per packet.
    fn write_behind(&mut self, slot: u32, force: bool) {
        if self.config.cluster.is_none() {
            return;
        }
        let now = self.now();
        let refresh = (self.config.udp_timeout_secs / 3).max(1);
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_mut(slot & !UDP_BIT))
        else {
            return;
        };
        if !force && session.written != 0 && now < session.written + refresh {
            return;
        }
        session.written = now.max(1);
        let state = bus::messages::UdpSessionState {
            sid: session.sid.0,
            device: session.device,
            addr: session.addr,
            last_heartbeat_unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            sidx: session.sidx,
            ridx: session.ridx,
            bound: session.bound.to_vec(),
        };
        if self.bus.try_send(ToBus::UdpSession(state)).is_err() {
            bump(&self.metrics.drop_bus_queue_full);
        }
    }

    /// A wheel entry of a UDP session came due.
    pub(super) fn on_udp_due(&mut self, entry: Entry, now: Secs) {
        let slot = entry.slot & !UDP_BIT;
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.sessions.get_gen_mut(slot, entry.generation))
        else {
            return;
        };
        if session.deadline > now {
            session.scheduled = session.deadline;
            let at = session.deadline;
            self.wheel.insert(at, entry);
            return;
        }
        bump(&self.metrics.udp_expired);
        self.remove_udp_session(slot);
    }

    /// `udpaddr`: the address of this shard's session of `device`, if it holds one.
    pub(super) fn device_addr(&self, device: i64) -> Option<SocketAddr> {
        let mut slots = Vec::new();
        self.session_slots(device, &mut slots);
        let udp = self.udp.as_ref()?;
        slots
            .iter()
            .filter(|&&s| s & UDP_BIT != 0)
            .find_map(|&s| udp.session(s).map(|session| session.addr))
    }

    /// Ends a session: logout, offline status to its users, release.
    pub(super) fn remove_udp_session(&mut self, slot: u32) {
        let Some(session) = self.udp.as_ref().and_then(|u| u.sessions.get(slot)) else {
            return;
        };
        let (device_id, users, announced) = (
            session.device,
            session.bound.to_vec(),
            session.joining.is_none(),
        );
        if device_id != 0 {
            self.unregister_session(slot | UDP_BIT, device_id);
            if self
                .bus
                .try_send(ToBus::Logout { session: device_id })
                .is_err()
            {
                bump(&self.metrics.drop_bus_queue_full);
            }
            if announced {
                self.send_device_status(device_id, &users, StatusType::DeviceOffline);
            }
        }
        if self.config.cluster.is_some()
            && let Some(session) = self.udp.as_ref().and_then(|u| u.sessions.get(slot))
        {
            let gone = ToBus::UdpSessionGone {
                sid: session.sid.0,
                device: device_id,
            };
            if self.bus.try_send(gone).is_err() {
                bump(&self.metrics.drop_bus_queue_full);
            }
        }
        let Some(udp) = self.udp.as_mut() else { return };
        if let Some(session) = udp.sessions.remove(slot) {
            udp.by_sid.remove(&session.sid.0);
            self.metrics
                .udp_sessions
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
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
