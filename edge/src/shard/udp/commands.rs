//! The device commands of a UDP session (docs/protocol.md §5): new session, register, login,
//! rename, heartbeat, bad commands, and the platform and bus answers that complete them.

use std::net::SocketAddr;

use bus::messages::{ConnRef, LoginGrant, PlatformAnswer, PlatformCall, PlatformRequest, ToBus};
use edge_proto::device::{self, Request, Sid};
use edge_proto::frame;
use edge_proto::status::StatusType;

use super::super::Shard;
use super::super::sessions::LoginAsked;
use super::{Joining, Pending, UDP_BIT};
use crate::core::admission::Admit;
use crate::core::sessions::Handle;
use crate::core::wheel::{Entry, Secs};
use crate::metrics::bump_own;

impl Shard {
    pub(in crate::shard) fn on_direct(&mut self, bytes: &[u8], from: SocketAddr) {
        let request = match Request::parse_datagram(bytes) {
            Ok((_, request)) => request,
            Err(_) => {
                bump_own(&self.metrics.udp_drop_malformed);
                return;
            }
        };
        let seq = u16::from_le_bytes([bytes[2], bytes[3]]);
        match request {
            Request::NewSession { .. } => self.on_new_session(bytes, from),
            other => {
                let Some(sid) = other.sid() else {
                    bump_own(&self.metrics.udp_drop_malformed);
                    return;
                };
                let Some(slot) = self.accept_session(&sid.0, seq, bytes, from) else {
                    return;
                };
                self.on_command(slot, other, bytes, from);
            }
        }
    }

    /// `0xE0`: answered with a cookie sid and nothing stored (`core::cookie`); the session
    /// is opened when the device comes back with it ([`Self::open_udp_session`]).
    pub(in crate::shard) fn on_new_session(&mut self, bytes: &[u8], from: SocketAddr) {
        let now = self.now();
        let Some(udp) = self.udp.as_mut() else { return };
        match udp.limiter.admit(from.ip(), now) {
            Admit::Yes => {}
            Admit::RateLimited => return bump_own(&self.metrics.udp_drop_rate_limited),
            Admit::Untracked => bump_own(&self.metrics.udp_untracked_sources),
        }
        let Ok(nonce) = udp.nonce() else {
            let body = device::new_session_body(device::STATUS_SERVER_ERROR, &Sid([0; 16]));
            return self.udp_reply(from, bytes, &body);
        };
        let sid = udp.cookies.issue(from, now, nonce);
        bump_own(&self.metrics.udp_cookies_issued);
        let body = device::new_session_body(device::STATUS_OK, &sid);
        self.udp_reply(from, bytes, &body);
    }

    /// A device came back from `from` with a cookie sid this shard issued: its session
    /// opens now, expiring at `deadline`. When the table or the anonymous quota is full,
    /// a stale idle anonymous session makes way. `None` (counted) when nothing may.
    pub(in crate::shard) fn open_udp_session(
        &mut self,
        sid: Sid,
        from: SocketAddr,
        deadline: Secs,
    ) -> Option<u32> {
        let udp = self.udp.as_mut()?;
        let mut pending = None;
        if let Some(victim) = udp.table.make_room() {
            pending = udp.table.get(victim).map(|s| (victim, s.scheduled));
            bump_own(&self.metrics.udp_anonymous_evicted);
            self.remove_udp_session(victim);
        }
        let udp = self.udp.as_mut()?;
        let Ok((slot, generation)) = udp.table.open(sid, from, deadline) else {
            bump_own(&self.metrics.udp_drop_full);
            return None;
        };
        self.metrics
            .udp_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // In the slot just freed (the free list is last in, first out), the new session
        // takes over its predecessor's wheel entry rather than adding one.
        let inherited = pending.is_some_and(|(victim, scheduled)| {
            victim == slot && udp.table.inherit(slot, scheduled)
        });
        if !inherited {
            let entry = Entry {
                slot: slot | UDP_BIT,
                generation,
            };
            self.wheel.insert(deadline, entry);
        }
        Some(slot)
    }

    pub(in crate::shard) fn on_command(
        &mut self,
        slot: u32,
        request: Request<'_>,
        bytes: &[u8],
        from: SocketAddr,
    ) {
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
            Request::Upload { .. } => return self.udp_upload(slot, bytes),
            Request::Heartbeat { .. } => {
                bump_own(&self.metrics.udp_heartbeats);
                return self.udp_reply(from, bytes, &device::status_body(device::STATUS_OK, sid));
            }
            _ => {
                bump_own(&self.metrics.udp_bad_command);
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
        let Some(session) = self.udp.as_mut().and_then(|u| u.table.get_mut(slot)) else {
            return;
        };
        // One platform request at a time per session: a second one would take the first's
        // place, the first answer would go out under the second's header, and the second
        // would get none. It is dropped; the device's retry is answered once the first is.
        if session.pending.is_some() {
            bump_own(&self.metrics.udp_drop_request_pending);
            return;
        }
        session.pending = Some(Box::new(Pending { header, mac }));
        if self
            .platform
            .try_send(PlatformRequest { conn, call })
            .is_err()
        {
            bump_own(&self.metrics.drop_platform_queue_full);
            self.finish_pending(slot, |_, sid| {
                device::status_body(device::STATUS_SERVER_ERROR, sid).to_vec()
            });
        }
    }

    /// `0x30` / `0x31` on a live, logged-in session: attributed to the session's device
    /// (the frame's source becomes its id, the header check resealed) and handed to the bus
    /// like any device upload. The ACK comes back as [`ToShard::UploadAck`] (embedded) or
    /// from the msgbus once a broker confirmed it or it was spooled (cluster).
    ///
    /// [`ToShard::UploadAck`]: bus::messages::ToShard::UploadAck
    fn udp_upload(&mut self, slot: u32, bytes: &[u8]) {
        let device = self
            .udp
            .as_ref()
            .and_then(|u| u.session(slot))
            .map_or(0, |s| s.device);
        if device >= 0 {
            bump_own(&self.metrics.udp_drop_not_logged_in);
            return;
        }
        let Some(conn) = self.udp_ref(slot) else {
            return;
        };
        let mut message = bytes.to_vec();
        message[frame::SRC_OFFSET..frame::SRC_OFFSET + 8].copy_from_slice(&device.to_le_bytes());
        if frame::seal(&mut message).is_err() {
            bump_own(&self.metrics.udp_drop_malformed);
            return;
        }
        let upload = ToBus::Upload {
            conn,
            src: device,
            message,
        };
        if self.bus.try_send(upload).is_err() {
            bump_own(&self.metrics.drop_bus_queue_full);
        } else {
            bump_own(&self.metrics.uploads);
        }
    }

    /// Sends a stored upload's ACK to the UDP session that sent it, if it is still live.
    pub(in crate::shard) fn udp_upload_ack(&mut self, conn: ConnRef, ack: &[u8]) {
        let addr = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_gen_mut(conn.slot & !UDP_BIT, conn.generation))
            .map(|s| s.addr.socket());
        if let Some(addr) = addr {
            self.udp_send(addr, ack);
        }
    }

    /// Answers the pending request of `slot` with the body `make` builds.
    pub(in crate::shard) fn finish_pending(
        &mut self,
        slot: u32,
        make: impl FnOnce(&Pending, &Sid) -> Vec<u8>,
    ) {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_mut(slot & !UDP_BIT))
        else {
            return;
        };
        let Some(pending) = session.pending.take() else {
            return;
        };
        let (sid, addr) = (session.sid, session.addr.socket());
        let body = make(&pending, &sid);
        self.udp_reply(addr, &pending.header, &body);
    }

    /// The platform answered.
    pub(in crate::shard) fn on_platform(&mut self, conn: ConnRef, answer: PlatformAnswer) {
        let slot = conn.slot & !UDP_BIT;
        let live = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_gen_mut(slot, conn.generation))
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
                self.answer_udp_login(slot, status);
            }
            PlatformAnswer::Login { device, .. } => match self.ask_login(conn, device) {
                LoginAsked::Answered(result) => self.on_udp_login_done(conn, result),
                LoginAsked::Sent => {}
                LoginAsked::QueueFull => self.answer_udp_login(slot, device::STATUS_SERVER_ERROR),
            },
        }
    }

    /// The bus granted (or refused) a device login: the session goes online.
    pub(in crate::shard) fn on_udp_login_done(
        &mut self,
        conn: ConnRef,
        result: Result<LoginGrant, u8>,
    ) {
        let slot = conn.slot & !UDP_BIT;
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_gen_mut(slot, conn.generation))
        else {
            return;
        };
        let grant = match result {
            Ok(grant) => grant,
            Err(_) => return self.answer_udp_login(slot, device::STATUS_SERVER_ERROR),
        };
        let handle = Handle::udp(slot, conn.generation);
        let previous = session.device;
        if let Some(udp) = self.udp.as_mut() {
            udp.table.set_device(slot, 0);
        }
        if previous != 0 {
            self.leave_session(handle, previous);
        }
        bump_own(&self.metrics.udp_logins);
        let joined = self.join_session(handle, grant.session);
        let Some(session) = self.udp.as_mut().and_then(|u| u.table.get_mut(slot)) else {
            return;
        };
        if joined.is_err() {
            session.bound = Box::new([]);
            return self.answer_udp_login(slot, device::STATUS_SERVER_ERROR);
        }
        session.bound = grant.bound.into_boxed_slice();
        session.joining = Some(Joining {
            fresh: previous == 0,
        });
        if let Some(udp) = self.udp.as_mut() {
            udp.table.set_device(slot, grant.session);
        }
        if joined == Ok(true) {
            self.finish_udp_login(slot);
        }
    }

    /// Answers the pending login of `slot` with `status`.
    fn answer_udp_login(&mut self, slot: u32, status: i32) {
        self.finish_pending(slot, |_, sid| {
            device::login_body(status, sid, device::HEARTBEAT_INTERVAL_SECS).to_vec()
        });
    }

    /// The device's session is reachable from every shard: reply to its login and tell its
    /// users it is online.
    pub(in crate::shard) fn finish_udp_login(&mut self, slot: u32) {
        let slot = slot & !UDP_BIT;
        let Some(session) = self.udp.as_mut().and_then(|u| u.table.get_mut(slot)) else {
            return;
        };
        let Some(joining) = session.joining.take() else {
            return;
        };
        let (device_id, users) = (session.device, session.bound.to_vec());
        self.answer_udp_login(slot, device::STATUS_OK);
        if joining.fresh {
            self.send_device_status(device_id, &users, StatusType::DeviceOnline);
        }
    }
}
