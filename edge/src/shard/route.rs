//! Where messages go: destination rules (docs/protocol.md §4), the id → shard directory, delivery to
//! local sessions, and binding updates of live sessions.
//!
//! The directory is partitioned: the shard `dir_shard(key)` owns the entry of `key` (a
//! base user id for phones, the device id for devices) — a bitmask of the shards holding
//! sessions under it. A message for a key goes to its directory shard (in place when that
//! is us), which hands it to each holder: at most two hops, O(1), no shared lock. Shards
//! report 0 → 1 and 1 → 0 transitions of their local sessions per key; those reports are
//! never dropped (a full mesh queue parks them in a backlog, in order).

use bus::messages::Payload;
use edge_proto::id;
use edge_proto::status::StatusType;

use super::Shard;
use crate::core::update_bound;
use crate::mesh::Refused;
use crate::metrics::bump_own;
use crate::msg::PeerMsg;

pub use bus::messages::{dir_shard, route_key};

impl Shard {
    /// A terminal sent a message (not a heartbeat): upload it or relay it.
    pub(super) fn on_message(&mut self, slot: u32, payload: &[u8]) -> bool {
        if payload == b"p" {
            bump_own(&self.metrics.heartbeats);
            return self.send_frame(slot, edge_proto::ws::OpCode::Text, b"P");
        }
        bump_own(&self.metrics.msgs_in);
        if payload.len() < 16 {
            bump_own(&self.metrics.drop_short_message);
            self.close(slot, Some(edge_proto::ws::CLOSE_PROTOCOL));
            return false;
        }
        let Some(conn) = self.conns.get(slot) else {
            return false;
        };
        let mut dst = [0u8; 8];
        dst.copy_from_slice(&payload[8..16]);
        let dst = i64::from_le_bytes(dst);
        let src = conn.id;
        if src < 0 && payload[0] & 0x07 != 3 {
            return self.upload(slot, src, payload);
        }
        let mut ids = std::mem::take(&mut self.dests);
        ids.clear();
        if src < 0 {
            id::device_destinations(dst, &conn.bound, &mut ids);
        } else {
            id::phone_destinations(dst, &conn.bound, &mut ids);
        }
        self.route(src, &ids, payload);
        self.dests = ids;
        true
    }

    fn upload(&mut self, slot: u32, src: i64, payload: &[u8]) -> bool {
        let conn = self.conn_ref(slot);
        let request = bus::messages::ToBus::Upload {
            conn,
            src,
            message: payload.to_vec(),
        };
        if self.bus.try_send(request).is_err() {
            bump_own(&self.metrics.drop_bus_queue_full);
        } else {
            bump_own(&self.metrics.uploads);
        }
        true
    }

    /// Sends `payload` to every session of `ids`, wherever it is.
    pub(super) fn route(&mut self, src: i64, ids: &[i64], payload: &[u8]) {
        if ids.is_empty() {
            bump_own(&self.metrics.drop_no_destination);
            return;
        }
        if self.config.cluster.is_some() {
            // Cluster mode: the msgbus knows which comets hold the ids (ours included).
            // The frame is written here, so one buffer goes from the shard to the socket.
            let Some(relay) = bus::messages::ToBus::relay(src, ids, payload) else {
                bump_own(&self.metrics.drop_relay_too_large);
                return;
            };
            if self.bus.try_send(relay).is_err() {
                bump_own(&self.metrics.drop_bus_queue_full);
            }
            return;
        }
        let mut start = 0;
        while start < ids.len() {
            let key = route_key(ids[start]);
            let end = ids[start..]
                .iter()
                .position(|&i| route_key(i) != key)
                .map_or(ids.len(), |n| start + n);
            let dir = dir_shard(key, self.count);
            if dir == self.index {
                self.resolve(key, &ids[start..end], payload);
            } else {
                let msg = PeerMsg::Route {
                    key,
                    ids: ids[start..end].to_vec(),
                    payload: Payload::Raw(payload.to_vec()),
                };
                self.send_peer(dir, msg);
            }
            start = end;
        }
    }

    /// Password changed: status 13 to each of the user's phones here, then close them.
    pub(super) fn kick_user(&mut self, user: i64) {
        let mut slots = Vec::new();
        for mobile in id::mobile_ids(user) {
            self.live_holders(mobile, &mut slots);
            for slot in slots.iter().filter(|h| !h.is_udp()).map(|h| h.slot) {
                let mut message = Vec::with_capacity(48);
                edge_proto::status::write_status_message(
                    &mut message,
                    Self::unix_now() as u32,
                    mobile,
                    0,
                    StatusType::KickedOff,
                    mobile,
                );
                self.send_message(slot, &message);
                self.close(slot, Some(edge_proto::ws::CLOSE_NORMAL));
            }
        }
    }

    /// Resolves each frame of a msgbus read (cluster mode): each one's ids share one
    /// directory key, which this shard holds.
    pub(super) fn resolve_batch(&mut self, batch: &bus::messages::RouteBatch) {
        let mut ids = std::mem::take(&mut self.route_ids);
        for frame in batch.iter() {
            ids.clear();
            ids.extend(frame.ids.iter());
            if let Some(&first) = ids.first() {
                self.resolve(route_key(first), &ids, frame.message);
            }
        }
        self.route_ids = ids;
    }

    /// At the directory shard of `key`: hand the message to each holder.
    pub(super) fn resolve(&mut self, key: i64, ids: &[i64], payload: &[u8]) {
        let mask = self.core.directory.mask(key);
        if mask == 0 {
            bump_own(&self.metrics.drop_no_destination);
            return;
        }
        for shard in (0..self.count).filter(|s| mask & (1 << s) != 0) {
            if shard == self.index {
                self.deliver_raw(ids, payload);
            } else {
                let msg = PeerMsg::Deliver {
                    ids: ids.to_vec(),
                    payload: Payload::Raw(payload.to_vec()),
                };
                self.send_peer(shard, msg);
            }
        }
    }

    pub(super) fn send_peer(&mut self, shard: usize, msg: PeerMsg) {
        let ordered = matches!(
            msg,
            PeerMsg::Directory { .. } | PeerMsg::DirectoryAck { .. }
        );
        if ordered && !self.peer_backlog.is_empty() {
            self.peer_backlog.push((shard, msg));
            return;
        }
        match self.mesh.try_send(shard, msg) {
            Ok(()) => bump_own(&self.metrics.cross_shard_out),
            Err(Refused::Full(msg)) if ordered => self.peer_backlog.push((shard, msg)),
            Err(_) => bump_own(&self.metrics.drop_peer_queue_full),
        }
    }

    pub(super) fn flush_peer_backlog(&mut self) {
        if self.peer_backlog.is_empty() {
            return;
        }
        let backlog = std::mem::take(&mut self.peer_backlog);
        let mut iter = backlog.into_iter();
        for (shard, msg) in iter.by_ref() {
            if let Err(Refused::Full(msg)) = self.mesh.try_send(shard, msg) {
                self.peer_backlog.push((shard, msg));
                break;
            }
        }
        self.peer_backlog.extend(iter);
    }

    /// A message from another shard.
    pub(super) fn on_peer(&mut self, msg: PeerMsg) {
        bump_own(&self.metrics.cross_shard_in);
        match msg {
            PeerMsg::Datagram { from, bytes } => self.on_datagram(&bytes, from),
            PeerMsg::Route {
                key,
                ids,
                payload: Payload::Raw(bytes),
            } => self.resolve(key, &ids, &bytes),
            PeerMsg::Route { ids, payload, .. } | PeerMsg::Deliver { ids, payload } => {
                self.deliver_local(&ids, &payload)
            }
            PeerMsg::Directory {
                key,
                shard,
                present,
                ack,
            } => {
                self.core.on_report(key, shard as usize, present);
                if let Some((slot, generation)) = ack {
                    self.send_peer(shard as usize, PeerMsg::DirectoryAck { slot, generation });
                }
            }
            PeerMsg::DirectoryAck { slot, generation } => self.on_directory_ack(slot, generation),
        }
    }

    fn deliver_raw(&mut self, ids: &[i64], bytes: &[u8]) {
        let mut slots = std::mem::take(&mut self.slots);
        for &id in ids {
            self.live_holders(id, &mut slots);
            for h in &slots {
                self.send_message(h.slot, bytes);
            }
        }
        self.slots = slots;
    }

    /// Delivers to this shard's sessions of `ids`.
    pub(super) fn deliver_local(&mut self, ids: &[i64], payload: &Payload) {
        match payload {
            Payload::Raw(bytes) => self.deliver_raw(ids, bytes),
            Payload::Push { msg_id, body } => {
                let mut slots = Vec::new();
                let mut message = Vec::with_capacity(36 + body.len());
                for &id in ids {
                    self.live_holders(id, &mut slots);
                    if slots.is_empty() {
                        continue;
                    }
                    message.clear();
                    let spec = edge_proto::frame::DirectSpec {
                        seq: 0,
                        timestamp: Self::unix_now() as u32,
                        dst: id,
                        src: 0,
                        msg_id: *msg_id,
                        body,
                    };
                    if edge_proto::frame::write_direct(&mut message, &spec).is_err() {
                        bump_own(&self.metrics.drop_no_destination);
                        return;
                    }
                    for h in &slots {
                        let sent = if h.is_udp() {
                            self.udp_push(h.slot, *msg_id, body)
                        } else {
                            self.send_message(h.slot, &message)
                        };
                        if sent {
                            bump_own(&self.metrics.pushes_out);
                        }
                    }
                }
            }
        }
    }

    /// Sends a device status (online, offline, bound, unbound) to every mobile id of `users`.
    pub(super) fn send_device_status(&mut self, device: i64, users: &[i64], kind: StatusType) {
        if users.is_empty() {
            return;
        }
        let mut message = Vec::with_capacity(48);
        edge_proto::status::write_status_message(
            &mut message,
            Self::unix_now() as u32,
            0,
            device,
            kind,
            device,
        );
        let ids: Vec<i64> = users.iter().flat_map(|&u| id::mobile_ids(u)).collect();
        self.route(device, &ids, &message);
    }

    /// A binding changed: update live sessions; shard 0 tells the user's phones.
    pub(super) fn on_binding(&mut self, device: i64, user: i64, bound: bool) {
        let mut slots = Vec::new();
        for mobile in id::mobile_ids(user) {
            self.live_holders(mobile, &mut slots);
            for h in &slots {
                if let Some(list) = self.bound_mut(h.slot) {
                    update_bound(list, device, bound);
                }
            }
        }
        self.live_holders(device, &mut slots);
        for h in &slots {
            if let Some(list) = self.bound_mut(h.slot) {
                update_bound(list, user, bound);
            }
        }
        let kind = if bound {
            StatusType::DeviceBound
        } else {
            StatusType::DeviceUnbound
        };
        if self.config.cluster.is_some() {
            // Every comet (and shard) hears the event: each tells only its own phones, so
            // each phone gets one status (the original sent one per comet).
            let mut message = Vec::with_capacity(48);
            edge_proto::status::write_status_message(
                &mut message,
                Self::unix_now() as u32,
                0,
                device,
                kind,
                device,
            );
            let ids: Vec<i64> = id::mobile_ids(user).collect();
            self.deliver_raw(&ids, &message);
        } else if self.index == 0 {
            self.send_device_status(device, &[user], kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_phones_by_user() {
        assert_eq!(route_key(17), 16);
        assert_eq!(route_key(31), 16);
        assert_eq!(route_key(32), 32);
        assert_eq!(route_key(-5), -5);
    }

    #[test]
    fn directory_shards_spread_and_stay_in_range() {
        let mut hits = [0usize; 4];
        for user in 1..4000i64 {
            hits[dir_shard(user * 16, 4)] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
        assert!(dir_shard(i64::MIN, 3) < 3);
    }
}
