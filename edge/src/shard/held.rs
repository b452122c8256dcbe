//! What a frozen shard forwards to an upgrade's new process (issue 15): the bus and mesh
//! messages that reached it after it wrote its state. The old process asks once the new
//! one has confirmed (its msgbus links are up, so nothing more is on its way here); the
//! new one delivers them before its first turn. Each is delivered once: the old process
//! exits without delivering, and a copy is kept only for a resume should the upgrade
//! still fail.
//!
//! Forwarded: relays (`Route` from a msgbus link, mesh `Route` and `Deliver`), and pushes
//! the bus sent this shard when the bus was handed over too (embedded mode). Not
//! forwarded, counted: answers to what the freeze closed (logins, platform calls,
//! upload acks), directory reports (the new directory is the handed-over one), datagrams
//! for another shard (the device retries), and in cluster mode the Redis pushes (the new
//! process subscribed before it confirmed and got its own copy).

use bus::messages::{Payload, Released, ToShard};
use edge_proto::handover::{self, Handover, Record, Relay};

use super::Shard;
use crate::msg::PeerMsg;

fn relay(everywhere: bool, ids: &[i64], payload: &Payload) -> Record {
    let (push, body) = match payload {
        Payload::Raw(bytes) => (None, bytes.as_slice()),
        Payload::Push { msg_id, body } => (Some(*msg_id), &body[..]),
    };
    relay_bytes(everywhere, ids, push, body)
}

fn relay_bytes(everywhere: bool, ids: &[i64], push: Option<u16>, body: &[u8]) -> Record {
    Record::Relay(Relay {
        everywhere,
        ids: ids.to_vec(),
        push,
        body: body.to_vec(),
    })
}

impl Shard {
    /// The held messages the new process can deliver, as a handover stream (see the
    /// module doc); they stay held here for a resume.
    pub(super) fn release_held(&self, pushes: bool) -> Released {
        let mut records = Vec::new();
        let mut dropped = 0;
        for msg in &self.held_while_frozen {
            match msg {
                ToShard::Routes(batch) => {
                    for frame in batch.iter() {
                        let ids: Vec<i64> = frame.ids.iter().collect();
                        records.push(relay_bytes(true, &ids, None, frame.message));
                    }
                }
                // Broadcast by the bus: each shard forwards its own copy, for its own.
                ToShard::Deliver { ids, payload } if pushes => {
                    records.push(relay(false, ids, payload));
                }
                _ => dropped += 1,
            }
        }
        for msg in &self.held_peer_while_frozen {
            match msg {
                PeerMsg::Route { ids, payload, .. } => records.push(relay(true, ids, payload)),
                PeerMsg::Deliver { ids, payload } => records.push(relay(false, ids, payload)),
                _ => dropped += 1,
            }
        }
        let forwarded = records.len();
        let stream = handover::encode(&Handover {
            shard: self.index as u16,
            shards: self.count as u16,
            records,
        });
        Released {
            stream,
            forwarded,
            dropped,
        }
    }
}
