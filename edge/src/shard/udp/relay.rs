//! Messages to and from UDP devices: forward packets relayed to phones, delivery and
//! pushes to devices (docs/protocol.md §6.4, §6.5, §7.1), Redis write-behind, expiry and removal.

use std::net::SocketAddr;

use bus::messages::ToBus;
use edge_proto::frame;

use super::super::Shard;
use super::UDP_BIT;
use crate::core::sessions::Handle;
use crate::core::udp::Due;
use crate::core::wheel::{Entry, Secs};
use crate::metrics::bump_own;

impl Shard {
    /// A forward message from a device (opcode 3): relayed to its users' phones by the
    /// device rules, with the sid slot cleared (the original leaked it to phones).
    pub(in crate::shard) fn on_forward(&mut self, bytes: &[u8], from: SocketAddr) {
        let check_ok =
            frame::header_check(bytes, frame::FORWARD_DATA_OFFSET) == bytes.get(72).copied();
        if bytes.len() < frame::FORWARD_MIN_LEN || !check_ok {
            bump_own(&self.metrics.udp_drop_malformed);
            return;
        }
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&bytes[24..40]);
        let seq = u16::from_le_bytes([bytes[2], bytes[3]]);
        let Some(slot) = self.accept_session(&sid, seq, bytes, from) else {
            return;
        };
        let Some(session) = self.udp.as_ref().and_then(|u| u.table.get(slot)) else {
            return;
        };
        if session.device == 0 {
            bump_own(&self.metrics.udp_drop_not_logged_in);
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
        bump_own(&self.metrics.msgs_in);
        self.route(device_id, &ids, &message);
        self.dests = ids;
        self.relay = message;
    }

    /// Delivers a terminal message to a UDP device: sequence and sid patched (docs/protocol.md §6.5), the
    /// header check recomputed.
    pub(in crate::shard) fn udp_deliver(&mut self, slot: u32, message: &[u8]) -> bool {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_mut(slot & !UDP_BIT))
        else {
            return false;
        };
        if edge_proto::device::is_upload_ack(message) {
            // The msgbus's ACK of this device's upload: as it is, matched by its sequence.
            let addr = session.addr.socket();
            self.udp_send(addr, message);
            return true;
        }
        if message.len() < frame::PATCH_MIN_LEN {
            bump_own(&self.metrics.udp_drop_malformed);
            return false;
        }
        session.sidx = session.sidx.wrapping_add(1);
        let (seq, sid, addr) = (session.sidx, session.sid, session.addr.socket());
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(message);
        let ok = frame::patch_for_device(&mut out, seq, &sid.0).is_ok();
        if ok {
            self.udp_send(addr, &out);
            bump_own(&self.metrics.msgs_out);
        }
        self.out = out;
        ok
    }

    /// A push to a UDP device: a direct message with the session's next sequence.
    pub(in crate::shard) fn udp_push(&mut self, slot: u32, msg_id: u16, body: &[u8]) -> bool {
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_mut(slot & !UDP_BIT))
        else {
            return false;
        };
        session.sidx = session.sidx.wrapping_add(1);
        let (seq, device, addr) = (session.sidx, session.device, session.addr.socket());
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
    pub(in crate::shard) fn write_behind(&mut self, slot: u32, force: bool) {
        if self.config.cluster.is_none() {
            return;
        }
        let now = self.now();
        let refresh = (self.config.udp_timeout_secs / 3).max(1);
        let Some(session) = self
            .udp
            .as_mut()
            .and_then(|u| u.table.get_mut(slot & !UDP_BIT))
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
            addr: session.addr.socket(),
            last_heartbeat_unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            sidx: session.sidx,
            ridx: session.ridx,
            bound: session.bound.to_vec(),
        };
        if self.bus.try_send(ToBus::UdpSession(state)).is_err() {
            bump_own(&self.metrics.drop_bus_queue_full);
        }
    }

    /// A wheel entry of a UDP session came due.
    pub(in crate::shard) fn on_udp_due(&mut self, entry: Entry, now: Secs) {
        let slot = entry.slot & !UDP_BIT;
        let Some(udp) = self.udp.as_mut() else { return };
        match udp.table.due(slot, now) {
            Due::Stale => {}
            Due::Again { at, generation } => {
                let entry = Entry {
                    slot: entry.slot,
                    generation,
                };
                self.wheel.insert(at, entry);
            }
            Due::Expired => {
                bump_own(&self.metrics.udp_expired);
                self.remove_udp_session(slot);
            }
        }
    }

    /// `udpaddr`: the address of this shard's newest live UDP session of `device`, if
    /// it holds one.
    pub(in crate::shard) fn device_addr(&mut self, device: i64) -> Option<SocketAddr> {
        let mut slots = std::mem::take(&mut self.slots);
        self.live_holders(device, &mut slots);
        let udp = self.udp.as_ref()?;
        let addr = slots
            .iter()
            .rev()
            .filter(|h| h.is_udp())
            .find_map(|h| udp.session(h.slot).map(|session| session.addr.socket()));
        self.slots = slots;
        addr
    }

    /// Ends a session: logout, offline status to its users, release.
    pub(in crate::shard) fn remove_udp_session(&mut self, slot: u32) {
        let Some(udp) = self.udp.as_ref() else { return };
        let Some(session) = udp.table.get(slot) else {
            return;
        };
        let handle = Handle::udp(slot, udp.table.generation(slot));
        let (device_id, users, announced) = (
            session.device,
            session.bound.to_vec(),
            session.joining.is_none(),
        );
        if device_id != 0 {
            self.session_ended(handle, device_id, announced, &users);
        }
        let Some(udp) = self.udp.as_mut() else { return };
        let Some(session) = udp.table.remove(slot) else {
            return;
        };
        self.metrics
            .udp_sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if self.config.cluster.is_some() {
            let gone = ToBus::UdpSessionGone {
                sid: session.sid.0,
                device: device_id,
            };
            if self.bus.try_send(gone).is_err() {
                bump_own(&self.metrics.drop_bus_queue_full);
            }
        }
    }
}
