//! The deliberately naive reference: one flat list of live records and which id each is
//! logged in as. Everything the core keeps in maps, lists and bitmasks is derived here
//! by scanning that list.

use std::collections::{BTreeMap, BTreeSet};

use edge::core::route_key;
use edge::core::sessions::Handle;

/// A live record (WebSocket connection or UDP session) on some shard.
#[derive(Debug, Clone)]
pub struct Record {
    pub shard: usize,
    pub handle: Handle,
    /// The id it is logged in as.
    pub id: Option<i64>,
    /// When it logged in (a step counter): the oldest is evicted at the cap.
    pub joined: u64,
}

/// The reference state.
#[derive(Debug, Default)]
pub struct Model {
    pub records: Vec<Record>,
    step: u64,
}

impl Model {
    pub fn open(&mut self, shard: usize, handle: Handle) {
        self.records.push(Record {
            shard,
            handle,
            id: None,
            joined: 0,
        });
    }

    pub fn close(&mut self, shard: usize, handle: Handle) {
        self.records
            .retain(|r| !(r.shard == shard && r.handle == handle));
    }

    /// `handle` logs in as `id`; with `cap` sessions of `id` on the shard already, the
    /// one that logged in first is closed. Returns the closed one.
    pub fn login(&mut self, shard: usize, handle: Handle, id: i64, cap: usize) -> Option<Handle> {
        self.step += 1;
        let step = self.step;
        if let Some(r) = self.find_mut(shard, handle) {
            r.id = None;
        }
        let mut same: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.shard == shard && r.id == Some(id))
            .collect();
        same.sort_by_key(|r| r.joined);
        let evicted = (same.len() >= cap).then(|| same[0].handle);
        if let Some(old) = evicted {
            self.close(shard, old);
        }
        if let Some(r) = self.find_mut(shard, handle) {
            r.id = Some(id);
            r.joined = step;
        }
        evicted
    }

    fn find_mut(&mut self, shard: usize, handle: Handle) -> Option<&mut Record> {
        self.records
            .iter_mut()
            .find(|r| r.shard == shard && r.handle == handle)
    }

    pub fn get(&self, shard: usize, handle: Handle) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.shard == shard && r.handle == handle)
    }

    /// Every logged-in session of `id`, on every shard.
    pub fn sessions_of(&self, id: i64) -> BTreeSet<(usize, Handle)> {
        self.records
            .iter()
            .filter(|r| r.id == Some(id))
            .map(|r| (r.shard, r.handle))
            .collect()
    }

    /// Every (id → handles) on one shard.
    pub fn index_of(&self, shard: usize) -> BTreeMap<i64, BTreeSet<Handle>> {
        let mut index: BTreeMap<i64, BTreeSet<Handle>> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.shard == shard) {
            if let Some(id) = r.id {
                index.entry(id).or_default().insert(r.handle);
            }
        }
        index
    }

    /// Directory key → bitmask of shards holding sessions under it.
    pub fn masks(&self) -> BTreeMap<i64, u64> {
        let mut masks: BTreeMap<i64, u64> = BTreeMap::new();
        for r in &self.records {
            if let Some(id) = r.id {
                *masks.entry(route_key(id)).or_default() |= 1 << r.shard;
            }
        }
        masks
    }

    /// How many live records of a kind shard `shard` holds.
    pub fn live_on(&self, udp: bool, shard: usize) -> usize {
        self.live(udp).iter().filter(|(s, _)| *s == shard).count()
    }

    /// Live records of a kind, in a stable order (what an operation's selector indexes).
    pub fn live(&self, udp: bool) -> Vec<(usize, Handle)> {
        let mut live: Vec<(usize, Handle)> = self
            .records
            .iter()
            .filter(|r| r.handle.is_udp() == udp)
            .map(|r| (r.shard, r.handle))
            .collect();
        live.sort();
        live
    }
}
