//! The user map and the comet name table of the msgbus (docs/protocol.md §9.4), pure.
//!
//! Owns: which comet names (the comets' IPs, as they appear in `PubKey` events and
//! `Host:<ip>` keys) hold each terminal id, and the interning of those names into small
//! [`NameId`]s. Entries whose last holder goes away are **removed** (the original kept
//! them forever), and unreferenced names are collected by [`Names::retain`].
//!
//! Does **not** own: links to comets (the router maps names to links), Redis, or parsing
//! (`edge_proto::pubsub`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// A comet name, interned.
pub type NameId = u32;

/// Interned comet names with a hard cap (names come from Redis, so their number is bounded
/// by the deployment; the cap only guards against garbage).
#[derive(Debug, Clone)]
pub struct Names {
    by_name: HashMap<Box<str>, NameId>,
    slots: Vec<Option<Box<str>>>,
    free: Vec<NameId>,
    max: usize,
}

/// Terminal id → the names of the comets holding it (usually one). Looked up per id of
/// every routed frame: the hash is foldhash, seeded at random per map (as the comet's
/// id maps), not std's SipHash, which took a third of the router's time.
#[derive(Debug, Clone, Default)]
pub struct UserMap {
    ids: HashMap<i64, Vec<NameId>, foldhash::fast::RandomState>,
}

// === Names ===

impl Names {
    /// An empty table holding at most `max` names.
    pub fn new(max: usize) -> Self {
        Self {
            by_name: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            max,
        }
    }

    /// The id of `name`, if known.
    pub fn get(&self, name: &str) -> Option<NameId> {
        self.by_name.get(name).copied()
    }

    /// The id of `name`, interning it; `None` when the table is full.
    pub fn intern(&mut self, name: &str) -> Option<NameId> {
        if let Some(id) = self.get(name) {
            return Some(id);
        }
        if self.by_name.len() >= self.max {
            return None;
        }
        let boxed: Box<str> = name.into();
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.slots.get_mut(id as usize) {
                    *slot = Some(boxed.clone());
                }
                id
            }
            None => {
                let id = NameId::try_from(self.slots.len()).ok()?;
                self.slots.push(Some(boxed.clone()));
                id
            }
        };
        self.by_name.insert(boxed, id);
        Some(id)
    }

    /// The name of `id`.
    pub fn name(&self, id: NameId) -> Option<&str> {
        self.slots.get(id as usize)?.as_deref()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// No names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Forgets every name for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(NameId) -> bool) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Ok(id) = NameId::try_from(index) else {
                break;
            };
            if slot.is_some() && !keep(id) {
                if let Some(name) = slot.take() {
                    self.by_name.remove(&name);
                }
                self.free.push(id);
            }
        }
    }

    /// Largest id ever handed out, plus one (for dense per-name vectors).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

// === UserMap ===

impl UserMap {
    /// Records that comet `name` holds `id`; true if it was new.
    pub fn online(&mut self, id: i64, name: NameId) -> bool {
        let holders = self.ids.entry(id).or_default();
        if holders.contains(&name) {
            return false;
        }
        holders.push(name);
        true
    }

    /// Records that comet `name` no longer holds `id`; true if it did. The entry goes
    /// when its last holder does.
    pub fn offline(&mut self, id: i64, name: NameId) -> bool {
        let Entry::Occupied(mut entry) = self.ids.entry(id) else {
            return false;
        };
        let holders = entry.get_mut();
        let before = holders.len();
        holders.retain(|n| *n != name);
        let removed = holders.len() != before;
        if holders.is_empty() {
            entry.remove();
        }
        removed
    }

    /// Forgets comet `name` everywhere (its `0|<ip>|0` reset); returns how many ids lost it.
    pub fn reset(&mut self, name: NameId) -> usize {
        let mut lost = 0;
        self.ids.retain(|_, holders| {
            let before = holders.len();
            holders.retain(|n| *n != name);
            lost += before - holders.len();
            !holders.is_empty()
        });
        lost
    }

    /// The comets holding `id` (empty if none).
    pub fn holders(&self, id: i64) -> &[NameId] {
        self.ids.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Number of ids with at least one holder.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No ids.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every `(id, holders)` pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[NameId])> + '_ {
        self.ids.iter().map(|(id, h)| (*id, h.as_slice()))
    }

    /// Marks in `used` (indexed by name id) every name some id refers to.
    pub fn mark_names(&self, used: &mut [bool]) {
        for holders in self.ids.values() {
            for name in holders {
                if let Some(flag) = used.get_mut(*name as usize) {
                    *flag = true;
                }
            }
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_offline_removes_empty_entries() {
        let mut map = UserMap::default();
        assert!(map.online(17, 0));
        assert!(!map.online(17, 0));
        assert!(map.online(17, 1));
        assert_eq!(map.holders(17), &[0, 1]);
        assert!(map.offline(17, 0));
        assert!(!map.offline(17, 0));
        assert!(map.offline(17, 1));
        assert!(map.is_empty(), "the original kept empty entries forever");
        assert!(!map.offline(99, 1));
    }

    #[test]
    fn reset_forgets_one_comet_only() {
        let mut map = UserMap::default();
        map.online(17, 0);
        map.online(18, 0);
        map.online(18, 1);
        map.online(-5, 1);
        assert_eq!(map.reset(0), 2);
        assert_eq!(map.holders(17), &[] as &[NameId]);
        assert_eq!(map.holders(18), &[1]);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn names_intern_cap_and_retain() {
        let mut names = Names::new(2);
        let a = names.intern("10.0.0.1").unwrap();
        assert_eq!(names.intern("10.0.0.1"), Some(a));
        let b = names.intern("10.0.0.2").unwrap();
        assert_eq!(names.intern("10.0.0.3"), None);
        names.retain(|id| id == b);
        assert_eq!(names.get("10.0.0.1"), None);
        let c = names.intern("10.0.0.3").unwrap();
        assert_eq!(c, a, "a freed slot is reused");
        assert_eq!(names.name(c), Some("10.0.0.3"));
        assert_eq!(names.len(), 2);
    }
}
