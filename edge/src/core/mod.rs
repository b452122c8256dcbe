//! The shard core: the state of one shard and the rules that change it, sans IO.
//!
//! Owns: which local sessions hold each id and the per-id cap (`sessions`), this shard's
//! slice of the partitioned directory (`directory`), the life of a WebSocket connection
//! — stage, heartbeat period, deadlines (`terminal`) —, the UDP session table with its
//! sequence, NAT-rebinding and expiry rules (`udp`) and the compact device address its
//! sessions keep (`device_addr`), the slot storage (`slab`) and the timer wheel (`wheel`).
//! [`ShardCore`] ties the index to the directory: a session that joins or leaves yields
//! the directory report to send, and reports from other shards are applied here.
//!
//! Does not own: sockets, buffers, the clock, glommio, channels. Time comes in as
//! arguments; what must go out (a report to another shard, a session to evict) comes
//! back as return values for the shell (`crate::shard`) to carry out. This is what the
//! model-based tests drive (`edge/tests/core_model.rs`), N cores at a time, against a
//! deliberately naive reference.
//!
//! Bindings of live sessions change through [`update_bound`]; the destination rules
//! applied to them are `edge_proto::id`'s.
//!
//! `cookie` answers `0xE0` statelessly (the session is stored when the device comes
//! back); `admission` rate-limits new UDP sessions per source address; `conn_limits` caps
//! WebSocket connections per source and accepts per second.
//!
//! `outbound` keeps the shard's queued bytes and decides, for each frame, whether it is
//! queued, written at once or its reader closed (`--max-outbound`,
//! `--max-outbound-shard`); the shell owns the buffers and the writes.

pub mod admission;
pub mod conn_limits;
pub mod cookie;
pub mod device_addr;
pub mod directory;
pub mod outbound;
pub mod sessions;
pub mod slab;
pub mod terminal;
pub mod udp;
pub mod wheel;

pub use bus::messages::{dir_shard, route_key};
use directory::Directory;
use sessions::{Handle, IndexError, SessionIndex};

/// A directory report: shard `from` tells the directory shard `to` that it now holds
/// (or no longer holds) sessions under `key`. Never dropped: the shell queues it in
/// order when the mesh is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The directory shard of `key`.
    pub to: usize,
    /// The key.
    pub key: i64,
    /// Holds sessions under it now.
    pub present: bool,
}

/// The session state of one shard.
#[derive(Debug)]
pub struct ShardCore {
    index: usize,
    count: usize,
    /// Local sessions by id.
    pub sessions: SessionIndex,
    /// The keys this shard is the directory of.
    pub directory: Directory,
}

impl ShardCore {
    /// Shard `index` of `count`, with at most `max_per_id` sessions per id.
    pub fn new(index: usize, count: usize, max_per_id: usize) -> Self {
        ShardCore {
            index,
            count,
            sessions: SessionIndex::new(max_per_id),
            directory: Directory::default(),
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The directory shard of `key`.
    pub fn dir_shard(&self, key: i64) -> usize {
        dir_shard(key, self.count)
    }

    /// A session logged in as `id`. `Ok(None)`: every shard can reach it now (its
    /// key's directory is here). `Ok(Some(report))`: the directory is on another shard:
    /// send the report and wait for its acknowledgement before telling the terminal it
    /// is online. That holds for every session, not only the key's first: a second one
    /// joining while the first one's report is still in flight would otherwise be told
    /// it is online before any shard can reach it (a repeated report is harmless, and
    /// the mesh keeps one shard's reports in order). Evict
    /// [`SessionIndex::oldest_if_full`] first.
    pub fn join(&mut self, id: i64, handle: Handle) -> Result<Option<Report>, IndexError> {
        let first = self.sessions.insert(id, handle)?;
        let key = route_key(id);
        let to = self.dir_shard(key);
        if to != self.index {
            return Ok(Some(Report {
                to,
                key,
                present: true,
            }));
        }
        if first {
            self.directory.apply(key, to, true);
        }
        Ok(None)
    }

    /// A session of `id` ended (closed, expired, evicted, or logged in as another id).
    /// `Ok(Some(report))`: the last local session of its key went; send the report.
    pub fn leave(&mut self, id: i64, handle: Handle) -> Result<Option<Report>, IndexError> {
        let last = self.sessions.remove(id, handle)?;
        Ok(last.then(|| self.vanished(route_key(id))).flatten())
    }

    /// A report from shard `from` (this shard is the directory of `key`).
    pub fn on_report(&mut self, key: i64, from: usize, present: bool) {
        self.directory.apply(key, from, present);
    }

    /// Applies a vanished `key` in place, or returns the report for its directory.
    fn vanished(&mut self, key: i64) -> Option<Report> {
        let to = self.dir_shard(key);
        if to == self.index {
            self.directory.apply(key, self.index, false);
            return None;
        }
        Some(Report {
            to,
            key,
            present: false,
        })
    }

    /// The shards holding sessions under `key`, read at its directory shard (this one).
    pub fn holders_of_key(&self, key: i64) -> impl Iterator<Item = usize> + '_ {
        let mask = self.directory.mask(key);
        (0..self.count).filter(move |s| mask & (1 << s) != 0)
    }
}

/// A binding changed: adds `id` to (or takes it from) a live session's bound list
/// (phones: devices; devices: users). Bindings are rare; the list is rebuilt.
pub fn update_bound(list: &mut Box<[i64]>, id: i64, bound: bool) {
    let mut ids: Vec<i64> = list.to_vec();
    if bound && !ids.contains(&id) {
        ids.push(id);
    } else if !bound {
        ids.retain(|&x| x != id);
    }
    *list = ids.into_boxed_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_session_of_a_key_report() {
        let mut shards: Vec<ShardCore> = (0..3).map(|i| ShardCore::new(i, 3, 4)).collect();
        let key = (1..)
            .map(|u| u * 16)
            .find(|&k| dir_shard(k, 3) == 2)
            .unwrap();
        let h = Handle::ws(0, 0);
        let report = shards[0].join(key + 1, h).unwrap().unwrap();
        assert_eq!(
            report,
            Report {
                to: 2,
                key,
                present: true
            }
        );
        assert_eq!(shards[0].join(key + 2, Handle::ws(1, 0)), Ok(Some(report)));
        shards[2].on_report(key, 0, true);
        assert_eq!(shards[2].holders_of_key(key).collect::<Vec<_>>(), [0]);
        assert_eq!(shards[0].leave(key + 2, Handle::ws(1, 0)), Ok(None));
        let gone = shards[0].leave(key + 1, h).unwrap().unwrap();
        assert!(!gone.present);
        // A key whose directory is here is applied in place.
        let own = (1..).map(|u| -u).find(|&k| dir_shard(k, 3) == 1).unwrap();
        assert_eq!(shards[1].join(own, Handle::udp(0, 0)), Ok(None));
        assert_eq!(shards[1].directory.mask(own), 0b10);
    }
}
