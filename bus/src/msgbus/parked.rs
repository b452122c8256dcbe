//! Frames parked for a comet that holds their ids (the user map says so) but has no link
//! right now: the msgbus just restarted and that comet has not dialled back yet, or its
//! link is being re-established. They go out, in order, when the comet's first link comes
//! up, or are dropped after a grace period (counted by the router as `CometNotLinked`).
//!
//! Bounded in frames and in bytes. When a new frame does not fit, the oldest frames of the
//! comet with the most parked go first: a comet that is gone for good (its ids still in
//! Redis) cannot crowd out one that is about to dial back. Pure data: the router passes
//! the time in.

use std::collections::{HashMap, VecDeque};

use super::usermap::NameId;

/// Parked frames by comet name.
#[derive(Debug)]
pub struct Parked {
    by_name: HashMap<NameId, VecDeque<(u64, Vec<u8>)>>,
    len: usize,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Parked {
    /// An empty table holding at most `max_frames` frames and `max_bytes` bytes of them.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            by_name: HashMap::new(),
            len: 0,
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    /// Parks `frame` for `name` at `now_ms`. Returns how many frames were dropped to make
    /// room (or 1 for the frame itself when it can never fit).
    pub fn park(&mut self, name: NameId, now_ms: u64, frame: Vec<u8>) -> u64 {
        if self.max_frames == 0 || frame.len() > self.max_bytes {
            return 1;
        }
        let mut dropped = 0;
        while self.len >= self.max_frames || self.bytes + frame.len() > self.max_bytes {
            if !self.shed_one() {
                break;
            }
            dropped += 1;
        }
        self.bytes += frame.len();
        self.len += 1;
        self.by_name
            .entry(name)
            .or_default()
            .push_back((now_ms, frame));
        dropped
    }

    /// Drops the oldest frame of the comet with the most parked; false if none is.
    fn shed_one(&mut self) -> bool {
        let Some((&name, _)) = self.by_name.iter().max_by_key(|(_, q)| q.len()) else {
            return false;
        };
        let Some(queue) = self.by_name.get_mut(&name) else {
            return false;
        };
        if let Some((_, frame)) = queue.pop_front() {
            self.len -= 1;
            self.bytes -= frame.len();
        }
        if queue.is_empty() {
            self.by_name.remove(&name);
        }
        true
    }

    /// Everything parked for `name`, oldest first.
    pub fn take(&mut self, name: NameId) -> impl Iterator<Item = Vec<u8>> + use<> {
        let queue = self.by_name.remove(&name).unwrap_or_default();
        self.len -= queue.len();
        self.bytes -= queue.iter().map(|(_, f)| f.len()).sum::<usize>();
        queue.into_iter().map(|(_, frame)| frame)
    }

    /// Drops frames parked before `before_ms`; returns how many.
    pub fn expire(&mut self, before_ms: u64) -> u64 {
        let (mut dropped, mut bytes) = (0, 0);
        self.by_name.retain(|_, queue| {
            while queue.front().is_some_and(|(at, _)| *at < before_ms) {
                if let Some((_, frame)) = queue.pop_front() {
                    dropped += 1;
                    bytes += frame.len();
                }
            }
            !queue.is_empty()
        });
        self.len -= dropped as usize;
        self.bytes -= bytes;
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

    /// Bytes parked.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_takes_in_order_and_expires() {
        let mut p = Parked::new(3, 1 << 20);
        assert_eq!(p.park(1, 10, b"a".to_vec()), 0);
        assert_eq!(p.park(1, 20, b"b".to_vec()), 0);
        assert_eq!(p.park(2, 30, b"c".to_vec()), 0);
        // Full: the comet with the most parked (1) gives up its oldest.
        assert_eq!(p.park(3, 40, b"d".to_vec()), 1);
        assert_eq!(p.len(), 3);
        assert_eq!(p.take(1).collect::<Vec<_>>(), vec![b"b".to_vec()]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.expire(31), 1, "c");
        assert_eq!((p.len(), p.bytes()), (1, 1));
        assert_eq!(p.take(2).count(), 0);
        assert_eq!(Parked::new(0, 100).park(1, 0, Vec::new()), 1);
    }

    #[test]
    fn bytes_are_bounded_too() {
        let mut p = Parked::new(100, 10);
        assert_eq!(p.park(1, 0, vec![0; 6]), 0);
        assert_eq!(p.park(2, 0, vec![0; 6]), 1, "the first had to go");
        assert_eq!((p.len(), p.bytes()), (1, 6));
        assert_eq!(p.park(2, 0, vec![0; 11]), 1, "never fits: refused");
        assert_eq!(p.take(2).count(), 1);
        assert_eq!(p.bytes(), 0);
    }
}
