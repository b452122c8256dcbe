//! Slot storage with generations and the id-keyed map: the plain containers the shard
//! core keeps its records in. Pure data structures: no IO, no clock.

use std::collections::HashMap;

/// Slot storage with generations, so a stale reference never reaches a new occupant.
///
/// Slots live in fixed chunks of [`CHUNK`] entries allocated as needed, never in one
/// growing vector: a table of N records costs N records plus at most one chunk, instead
/// of up to 2N while a doubling vector is half empty (this is most of an idle session's
/// cost), and no record moves.
#[derive(Debug)]
pub struct Slab<T> {
    chunks: Vec<Vec<(u32, Option<T>)>>,
    free: Vec<u32>,
    len: usize,
}

/// Entries per chunk of a [`Slab`].
pub const CHUNK: usize = 1024;

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn entry(&self, slot: u32) -> Option<&(u32, Option<T>)> {
        self.chunks
            .get(slot as usize / CHUNK)?
            .get(slot as usize % CHUNK)
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut (u32, Option<T>)> {
        self.chunks
            .get_mut(slot as usize / CHUNK)?
            .get_mut(slot as usize % CHUNK)
    }

    /// Stores `value`; returns its slot and generation.
    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(slot) = self.free.pop()
            && let Some(entry) = self.entry_mut(slot)
        {
            entry.1 = Some(value);
            return (slot, entry.0);
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        chunk.push((0, Some(value)));
        ((index * CHUNK + chunk.len() - 1) as u32, 0)
    }

    /// The value in `slot`, if occupied.
    pub fn get(&self, slot: u32) -> Option<&T> {
        self.entry(slot)?.1.as_ref()
    }

    /// The value in `slot`, if occupied.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.entry_mut(slot)?.1.as_mut()
    }

    /// The value in `slot` if it is still of `generation`.
    pub fn get_gen(&self, slot: u32, generation: u32) -> Option<&T> {
        let entry = self.entry(slot)?;
        if entry.0 != generation {
            return None;
        }
        entry.1.as_ref()
    }

    /// The value in `slot` if it is still of `generation`.
    pub fn get_gen_mut(&mut self, slot: u32, generation: u32) -> Option<&mut T> {
        let entry = self.entry_mut(slot)?;
        if entry.0 != generation {
            return None;
        }
        entry.1.as_mut()
    }

    /// The generation of `slot` (of its current or next occupant).
    pub fn generation(&self, slot: u32) -> u32 {
        self.entry(slot).map_or(0, |e| e.0)
    }

    /// Frees `slot`, bumping its generation.
    pub fn remove(&mut self, slot: u32) -> Option<T> {
        let entry = self.entry_mut(slot)?;
        let value = entry.1.take()?;
        entry.0 = (entry.0 + 1) & GENERATION_MASK;
        self.free.push(slot);
        self.len -= 1;
        Some(value)
    }

    /// Slots ever handed out (occupied or free): every slot is below it.
    pub fn span(&self) -> u32 {
        let full = self.chunks.len().saturating_sub(1) * CHUNK;
        (full + self.chunks.last().map_or(0, Vec::len)) as u32
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every occupied slot index.
    pub fn slots(&self) -> Vec<u32> {
        let entries = self.chunks.iter().flatten();
        entries
            .enumerate()
            .filter(|(_, e)| e.1.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }
}

/// Generations fit in 30 bits so a readiness token keeps two bits for its kind.
pub const GENERATION_MASK: u32 = (1 << 30) - 1;

/// A map keyed by terminal id. The hash is keyed (foldhash, seeded at random per map):
/// ids are chosen by clients — with the public default salt, freely — so their hashes
/// must not be predictable, or crafted ids could pile into one bucket.
pub type IdMap<V> = HashMap<i64, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_generations_guard_reuse() {
        let mut slab = Slab::default();
        let (a, ga) = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let (b, gb) = slab.insert("b");
        assert_eq!(a, b);
        assert_ne!(ga, gb);
        assert!(slab.get_gen_mut(a, ga).is_none());
        assert_eq!(slab.get_gen_mut(b, gb), Some(&mut "b"));
        assert_eq!(slab.len, 1);
    }

    #[test]
    fn slab_spans_chunks() {
        let mut slab = Slab::default();
        let slots: Vec<u32> = (0..(CHUNK as u32 * 2 + 5))
            .map(|i| slab.insert(i).0)
            .collect();
        assert_eq!(slots[CHUNK + 3], CHUNK as u32 + 3);
        assert_eq!(
            slab.get(CHUNK as u32 * 2 + 4),
            Some(&(CHUNK as u32 * 2 + 4))
        );
        assert_eq!(slab.remove(CHUNK as u32), Some(CHUNK as u32));
        assert_eq!(slab.insert(7).0, CHUNK as u32, "freed slots are reused");
        assert_eq!(slab.slots().len(), CHUNK * 2 + 5);
        assert!(slab.get(u32::MAX).is_none());
    }
}
