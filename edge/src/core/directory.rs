//! A shard's slice of the partitioned directory: for each key whose directory shard this
//! is (`dir_shard(key) == index`), the bitmask of shards holding sessions under it.
//!
//! Owns only the masks; the 0 → 1 and 1 → 0 reports that change them come from
//! `core::ShardCore` on the holding shards, over the mesh or in place.

use super::slab::IdMap;

/// Key → bitmask of holder shards (no entry for a zero mask).
#[derive(Debug, Default)]
pub struct Directory {
    masks: IdMap<u64>,
}

impl Directory {
    /// Shard `shard` now holds (or no longer holds) sessions under `key`.
    pub fn apply(&mut self, key: i64, shard: usize, present: bool) {
        let bit = 1u64 << shard;
        if present {
            *self.masks.entry(key).or_default() |= bit;
        } else if let Some(mask) = self.masks.get_mut(&key) {
            *mask &= !bit;
            if *mask == 0 {
                self.masks.remove(&key);
            }
        }
    }

    /// The shards holding sessions under `key` (0: none).
    pub fn mask(&self, key: i64) -> u64 {
        self.masks.get(&key).copied().unwrap_or(0)
    }

    /// Keys with holders.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether no key has holders.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Every (key, mask) pair, in no order (for checks and tests).
    pub fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.masks.iter().map(|(&k, &m)| (k, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_add_and_clear() {
        let mut dir = Directory::default();
        dir.apply(16, 0, true);
        dir.apply(16, 3, true);
        assert_eq!(dir.mask(16), 0b1001);
        dir.apply(16, 0, false);
        dir.apply(16, 0, false);
        assert_eq!(dir.mask(16), 0b1000);
        dir.apply(16, 3, false);
        assert!(dir.is_empty());
    }
}
