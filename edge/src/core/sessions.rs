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

use super::slab::{IdMap, Slab};

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

/// Set in a stored handle's generation (generations use 30 bits, see
/// `slab::GENERATION_MASK`) when its slot is not a session but the index of the id's
/// list in [`SessionIndex::lists`]: one id's entry is 8 bytes whether it has one session
/// (the usual case, inline) or several.
const LIST: u32 = 1 << 31;

/// The index. Every list it keeps is bounded by the per-id cap.
#[derive(Debug)]
pub struct SessionIndex {
    /// id → its only holder, or (generation | [`LIST`]) the slot of its list.
    by_id: IdMap<Handle>,
    /// Holder lists of ids with more than one session (oldest first, 2..=cap long).
    lists: Slab<Vec<Handle>>,
    keys: IdMap<u32>,
    cap: usize,
    len: usize,
}

impl SessionIndex {
    /// An empty index allowing `cap` (at least 1) sessions per id.
    pub fn new(cap: usize) -> Self {
        SessionIndex {
            by_id: IdMap::default(),
            lists: Slab::default(),
            keys: IdMap::default(),
            cap: cap.max(1),
            len: 0,
        }
    }

    /// The local sessions of `id`, oldest first.
    pub fn holders(&self, id: i64) -> &[Handle] {
        match self.by_id.get(&id) {
            None => &[],
            Some(h) if h.generation & LIST != 0 => self.lists.get(h.slot).map_or(&[], |l| l),
            Some(h) => std::slice::from_ref(h),
        }
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
        let list = self.holders(id);
        if list.contains(&handle) {
            return Err(IndexError::Duplicate(handle, id));
        }
        if list.len() >= self.cap {
            return Err(IndexError::Full(id));
        }
        match self.by_id.get(&id).copied() {
            None => {
                self.by_id.insert(id, handle);
            }
            Some(entry) if entry.generation & LIST != 0 => {
                if let Some(list) = self.lists.get_mut(entry.slot) {
                    list.push(handle);
                }
            }
            Some(first) => {
                let (slot, _) = self.lists.insert(vec![first, handle]);
                let entry = Handle {
                    slot,
                    generation: LIST,
                };
                self.by_id.insert(id, entry);
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
        let missing = IndexError::Missing(handle, id);
        match self.by_id.get(&id).copied() {
            None => return Err(missing),
            Some(only) if only == handle => {
                self.by_id.remove(&id);
            }
            Some(entry) if entry.generation & LIST != 0 => {
                let list = self.lists.get_mut(entry.slot).ok_or(missing)?;
                let at = list.iter().position(|&h| h == handle).ok_or(missing)?;
                list.remove(at);
                if let [last] = list[..] {
                    self.lists.remove(entry.slot);
                    self.by_id.insert(id, last);
                }
            }
            Some(_) => return Err(missing),
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
        self.by_id.keys().map(|&id| (id, self.holders(id)))
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
                return Err(format!(
                    "id {id}: {} holders (cap {})",
                    list.len(),
                    self.cap
                ));
            }
            let listed = self
                .by_id
                .get(&id)
                .is_some_and(|h| h.generation & LIST != 0);
            if listed != (list.len() > 1) {
                return Err(format!(
                    "id {id}: {} holders, kept as a list: {listed}",
                    list.len()
                ));
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
        let listed = self
            .by_id
            .values()
            .filter(|h| h.generation & LIST != 0)
            .count();
        if listed != self.lists.len() {
            return Err(format!("{} lists kept for {listed} ids", self.lists.len()));
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
        // (id, entry): no larger than the chain head it replaced.
        assert_eq!(std::mem::size_of::<(i64, Handle)>(), 16);
    }

    #[test]
    fn lists_are_released_when_one_holder_is_left() {
        let mut index = SessionIndex::new(4);
        for slot in 0..3 {
            index.insert(-7, Handle::udp(slot, 0)).unwrap();
        }
        index.remove(-7, Handle::udp(1, 0)).unwrap();
        index.remove(-7, Handle::udp(0, 0)).unwrap();
        assert_eq!(index.holders(-7), &[Handle::udp(2, 0)]);
        index.check().unwrap();
        index.insert(-7, Handle::udp(4, 0)).unwrap();
        assert_eq!(index.holders(-7), &[Handle::udp(2, 0), Handle::udp(4, 0)]);
        index.check().unwrap();
    }
}
