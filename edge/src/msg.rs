//! Messages between shards, over the mesh (`mesh`): owned data moved by value.
//! (Shard ↔ bus messages are `bus::messages`.)

use bus::messages::Payload;

/// Shard → shard, over the mesh.
#[derive(Debug)]
pub enum PeerMsg {
    /// To the directory owner of `key`: find the shards holding it and deliver.
    Route {
        /// Directory key (a base user id, or a device id).
        key: i64,
        /// Destination ids under that key.
        ids: Vec<i64>,
        /// What to deliver.
        payload: Payload,
    },
    /// To a shard holding sessions of these ids: deliver to every local session.
    Deliver {
        /// Destination ids.
        ids: Vec<i64>,
        /// What to deliver.
        payload: Payload,
    },
    /// To the directory owner of `key`: shard `shard` now holds (or no longer holds)
    /// sessions under `key`.
    Directory {
        /// Directory key.
        key: i64,
        /// The reporting shard.
        shard: u16,
        /// Whether it holds sessions under `key` now.
        present: bool,
        /// The session slot (and generation) whose login waits for this entry: the
        /// directory shard answers [`PeerMsg::DirectoryAck`].
        ack: Option<(u32, u32)>,
    },
    /// From a directory shard: the entry a login waited for is in place.
    DirectoryAck {
        /// The waiting session's slot.
        slot: u32,
        /// Its generation.
        generation: u32,
    },
    /// A datagram for a UDP session this shard does not own, handed to its owner.
    Datagram {
        /// The sender.
        from: std::net::SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
}
