//! The session index of one shard: which local sessions hold each terminal id, and how
//! many local sessions each directory key has.
//!
//! Owns: id → holders (handles of WebSocket records and UDP sessions, oldest first),
//! key → local count, and the per-id cap. Does not own the records themselves (the
//! shell's slabs), the directory (`core::directory`), or any IO.
//!
//! This replaces the chains the shard used to thread through its records (a `next` slot
//! in every WebSocket record and UDP session). Unlinking walked those chains through the
//! WebSocket slab even for UDP sessions, so a UDP session that was not the head stayed
//! linked: a re-login then made a cycle (a shard spinning and growing by gigabytes), and
//! an expiry left a freed slot in the chain, so the next stranger given that slot
//! received the device's messages. Here a holder list is a plain vector no longer than
//! the cap, every handle carries its slot's generation (a reused slot never matches),
//! and every operation checks what it assumes and says so instead of guessing.

use thiserror::Error;

use super::slab::IdMap;

/// Marks a handle's slot as a UDP session (WebSocket slots never have it).
pub const UDP_BIT: u32 = 1 << 31;

/// A local session: its slot (with [`UDP_BIT`] for UDP sessions) and that slot's
/// generation when the session logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    /// Slot in the shell's WebSocket slab, or UDP table slot | [`UDP_BIT`].
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
}

impl Handle {
    /// A WebSocket record.
    pub fn ws(slot: u32, generation: u32) -> Self {
        Handle { slot, generation }
    }

    /// A UDP session (`slot` without the bit).
    pub fn udp(slot: u32, generation: u32) -> Self {
        Handle {
            slot: slot | UDP_BIT,
            generation,
        }
    }

    /// Whether this is a UDP session.
    pub fn is_udp(self) -> bool {
        self.slot & UDP_BIT != 0
    }

    /// The slot in its own table (without the UDP bit).
    pub fn index(self) -> u32 {
        self.slot & !UDP_BIT
    }
}

/// What the index refused: the caller's view and the index disagree. Never expected;
/// the shell counts it (`invariant_broken`) and carries on without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IndexError {
    /// The handle already holds this id.
    #[error("session {0:?} already holds id {1}")]
    Duplicate(Handle, i64),
    /// The handle does not hold this id.
    #[error("session {0:?} does not hold id {1}")]
    Missing(Handle, i64),
    /// The id already has the most sessions allowed (evict the oldest first).
    #[error("id {0} already has the most sessions allowed")]
    Full(i64),
}

/// The holders of one id: inline for the usual single session (16 bytes either way).
#[derive(Debug)]
enum Holders {
    One(Handle),
    #[allow(clippy::box_collection)] // a thin pointer keeps the map entry at 24 bytes
    Many(Box<Vec<Handle>>),
}

impl Holders {
    fn as_slice(&self) -> &[Handle] {
        match self {
            Holders::One(h) => std::slice::from_ref(h),
            Holders::Many(v) => v,
        }
    }
}

/// The index. Every list it keeps is bounded by the per-id cap.
#[derive(Debug)]
pub struct SessionIndex {
    by_id: IdMap<Holders>,
    keys: IdMap<u32>,
    cap: usize,
    len: usize,
}

impl SessionIndex {
    /// An empty index allowing `cap` (at least 1) sessions per id.
    pub fn new(cap: usize) -> Self {
        SessionIndex {
            by_id: IdMap::default(),
            keys: IdMap::default(),
            cap: cap.max(1),
            len: 0,
        }
    }

    /// The local sessions of `id`, oldest first.
    pub fn holders(&self, id: i64) -> &[Handle] {
        self.by_id.get(&id).map_or(&[], Holders::as_slice)
    }

    /// The oldest session of `id` when it already has `cap` sessions: the one to end
    /// before another may join.
    pub fn oldest_if_full(&self, id: i64) -> Option<Handle> {
        let holders = self.holders(id);
        (holders.len() >= self.cap).then(|| holders[0])
    }

    /// Indexes `handle` under `id`. Ok(true) when it is the first local session of the
    /// id's directory key (the directory must hear of it).
    pub fn insert(&mut self, id: i64, handle: Handle) -> Result<bool, IndexError> {
        let cap = self.cap;
        match self.by_id.get_mut(&id) {
            None => {
                self.by_id.insert(id, Holders::One(handle));
            }
            Some(holders) => {
                let list = holders.as_slice();
                if list.contains(&handle) {
                    return Err(IndexError::Duplicate(handle, id));
                }
                if list.len() >= cap {
                    return Err(IndexError::Full(id));
                }
                match holders {
                    Holders::One(first) => {
                        *holders = Holders::Many(Box::new(vec![*first, handle]));
                    }
                    Holders::Many(list) => list.push(handle),
                }
            }
        }
        self.len += 1;
        let count = self.keys.entry(super::route_key(id)).or_default();
        *count += 1;
        Ok(*count == 1)
    }

    /// Takes `handle` out of `id`. Ok(true) when it was the last local session of the
    /// id's directory key (the directory must hear of it).
    pub fn remove(&mut self, id: i64, handle: Handle) -> Result<bool, IndexError> {
        let Some(holders) = self.by_id.get_mut(&id) else {
            return Err(IndexError::Missing(handle, id));
        };
        match holders {
            Holders::One(only) if *only == handle => {
                self.by_id.remove(&id);
            }
            Holders::One(_) => return Err(IndexError::Missing(handle, id)),
            Holders::Many(list) => {
                let Some(at) = list.iter().position(|&h| h == handle) else {
                    return Err(IndexError::Missing(handle, id));
                };
                list.remove(at);
                if let [last] = list[..] {
                    *holders = Holders::One(last);
                }
            }
        }
        self.len -= 1;
        let key = super::route_key(id);
        let Some(count) = self.keys.get_mut(&key) else {
            return Ok(false);
        };
        *count -= 1;
        if *count == 0 {
            self.keys.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    /// Sessions indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no session is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Local sessions under a directory key.
    pub fn key_count(&self, key: i64) -> u32 {
        self.keys.get(&key).copied().unwrap_or(0)
    }

    /// Every (id, holders) pair, in no order (for checks and tests).
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[Handle])> {
        self.by_id.iter().map(|(&id, h)| (id, h.as_slice()))
    }

    /// Every directory key with local sessions, with its count (for checks and tests).
    pub fn keys(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.keys.iter().map(|(&k, &c)| (k, c))
    }

    /// Checks the index against itself: lists within the cap and free of duplicates, no
    /// empty list, key counts equal to the sessions under each key, `len` their sum.
    pub fn check(&self) -> Result<(), String> {
        let mut keys: IdMap<u32> = IdMap::default();
        let mut len = 0;
        for (id, list) in self.iter() {
            if list.is_empty() || list.len() > self.cap {
                return Err(format!("id {id}: {} holders (cap {})", list.len(), self.cap));
            }
            if matches!(self.by_id.get(&id), Some(Holders::Many(l)) if l.len() < 2) {
                return Err(format!("id {id}: a list of {} kept out of line", list.len()));
            }
            for (i, h) in list.iter().enumerate() {
                if list[..i].contains(h) {
                    return Err(format!("id {id}: {h:?} listed twice"));
                }
            }
            *keys.entry(super::route_key(id)).or_default() += list.len() as u32;
            len += list.len();
        }
        if keys != self.keys {
            return Err(format!("key counts {:?} != {:?}", self.keys, keys));
        }
        if len != self.len {
            return Err(format!("len {} != {len}", self.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_stay_in_order_and_keys_count() {
        let mut index = SessionIndex::new(4);
        let (a, b, c) = (Handle::udp(0, 0), Handle::udp(1, 0), Handle::ws(0, 0));
        assert_eq!(index.insert(-7, a), Ok(true));
        assert_eq!(index.insert(-7, b), Ok(false));
        assert_eq!(index.insert(-7, c), Ok(false));
        assert_eq!(index.holders(-7), &[a, b, c]);
        assert_eq!(index.insert(-7, b), Err(IndexError::Duplicate(b, -7)));
        assert_eq!(index.remove(-7, b), Ok(false));
        assert_eq!(index.remove(-7, b), Err(IndexError::Missing(b, -7)));
        assert_eq!(index.holders(-7), &[a, c]);
        assert_eq!(index.remove(-7, a), Ok(false));
        assert_eq!(index.remove(-7, c), Ok(true));
        assert!(index.is_empty());
        index.check().unwrap();
    }

    #[test]
    fn a_reused_slot_is_another_handle() {
        let mut index = SessionIndex::new(4);
        index.insert(-7, Handle::udp(3, 0)).unwrap();
        assert_eq!(
            index.remove(-7, Handle::udp(3, 1)),
            Err(IndexError::Missing(Handle::udp(3, 1), -7))
        );
        assert_eq!(index.holders(-7), &[Handle::udp(3, 0)]);
    }

    #[test]
    fn the_cap_names_the_oldest() {
        let mut index = SessionIndex::new(2);
        index.insert(-7, Handle::udp(0, 0)).unwrap();
        assert_eq!(index.oldest_if_full(-7), None);
        index.insert(-7, Handle::udp(1, 0)).unwrap();
        assert_eq!(index.oldest_if_full(-7), Some(Handle::udp(0, 0)));
        assert_eq!(
            index.insert(-7, Handle::udp(2, 0)),
            Err(IndexError::Full(-7))
        );
        index.check().unwrap();
    }

    #[test]
    fn phones_of_one_user_share_a_key() {
        let mut index = SessionIndex::new(4);
        assert_eq!(index.insert(17, Handle::ws(0, 0)), Ok(true));
        assert_eq!(index.insert(18, Handle::ws(1, 0)), Ok(false));
        assert_eq!(index.key_count(16), 2);
        assert_eq!(index.remove(17, Handle::ws(0, 0)), Ok(false));
        assert_eq!(index.remove(18, Handle::ws(1, 0)), Ok(true));
    }

    #[test]
    fn map_entry_is_small() {
        assert_eq!(std::mem::size_of::<Holders>(), 16);
    }
}
