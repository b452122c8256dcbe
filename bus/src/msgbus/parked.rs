//! Frames parked for a comet that holds their ids (the user map says so) but has no link
//! right now: the msgbus just restarted and that comet has not dialled back yet, or its
//! link is being re-established. They go out, in order, when the comet's first link comes
//! up, or are dropped after a grace period (counted by the router as `CometNotLinked`).
//!
//! Bounded: at most `max` frames in all; a full table drops the oldest frame of the comet
//! being parked for (or refuses the new one when that comet has none). Pure data: the
//! router passes the time in.

use std::collections::{HashMap, VecDeque};

use super::usermap::NameId;

/// Parked frames by comet name.
#[derive(Debug)]
pub struct Parked {
    by_name: HashMap<NameId, VecDeque<(u64, Vec<u8>)>>,
    len: usize,
    max: usize,
}

impl Parked {
    /// An empty table holding at most `max` frames.
    pub fn new(max: usize) -> Self {
        Self {
            by_name: HashMap::new(),
            len: 0,
            max,
        }
    }

    /// Parks `frame` for `name` at `now_ms`. Returns how many frames were dropped for it
    /// (0 or 1: the oldest of this name, or the new frame itself).
    pub fn park(&mut self, name: NameId, now_ms: u64, frame: Vec<u8>) -> u64 {
        if self.max == 0 {
            return 1;
        }
        let queue = self.by_name.entry(name).or_default();
        let mut dropped = 0;
        if self.len >= self.max {
            if queue.pop_front().is_none() {
                return 1;
            }
            self.len -= 1;
            dropped = 1;
        }
        queue.push_back((now_ms, frame));
        self.len += 1;
        dropped
    }

    /// Everything parked for `name`, oldest first.
    pub fn take(&mut self, name: NameId) -> impl Iterator<Item = Vec<u8>> + use<> {
        let queue = self.by_name.remove(&name).unwrap_or_default();
        self.len -= queue.len();
        queue.into_iter().map(|(_, frame)| frame)
    }

    /// Drops frames parked before `before_ms`; returns how many.
    pub fn expire(&mut self, before_ms: u64) -> u64 {
        let mut dropped = 0;
        self.by_name.retain(|_, queue| {
            while queue.front().is_some_and(|(at, _)| *at < before_ms) {
                queue.pop_front();
                dropped += 1;
            }
            !queue.is_empty()
        });
        self.len -= dropped as usize;
        dropped
    }

    /// Marks every name with parked frames as in use (`used[name] = true`).
    pub fn mark_names(&self, used: &mut [bool]) {
        for name in self.by_name.keys() {
            if let Some(flag) = used.get_mut(*name as usize) {
                *flag = true;
            }
        }
    }

    /// Frames parked.
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_takes_in_order_and_expires() {
        let mut p = Parked::new(3);
        assert_eq!(p.park(1, 10, b"a".to_vec()), 0);
        assert_eq!(p.park(1, 20, b"b".to_vec()), 0);
        assert_eq!(p.park(2, 30, b"c".to_vec()), 0);
        // Full: the oldest of name 1 goes; name 3 has none to give up.
        assert_eq!(p.park(1, 40, b"d".to_vec()), 1);
        assert_eq!(p.park(3, 40, b"e".to_vec()), 1);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.take(1).collect::<Vec<_>>(),
            vec![b"b".to_vec(), b"d".to_vec()]
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p.expire(31), 1);
        assert_eq!(p.len(), 0);
        assert_eq!(p.take(2).count(), 0);
        assert_eq!(Parked::new(0).park(1, 0, Vec::new()), 1);
    }
}
