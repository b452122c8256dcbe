//! A per-shard hashed timer wheel with one-second ticks and lazy rescheduling.
//!
//! Every deadline of a shard (WebSocket handshake and login deadlines, read deadlines,
//! UDP session expiry) lives here: no OS timer and no task per connection. An entry is a
//! `(slot, generation)` pair; the owner keeps the authoritative deadline in its own
//! record, so pushing a deadline *later* (every read does) costs nothing here: when the
//! old entry comes due, [`Wheel::advance`] hands it back and the owner either expires it
//! or re-inserts it at its new deadline. Only a deadline moved *earlier* needs a new
//! insert (a stale duplicate is harmless: the owner checks the generation and deadline).
//!
//! The wheel owns no connection state and never calls back into its owner.

/// Seconds since the shard's epoch.
pub type Secs = u32;

/// What a due entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The owner's slot index.
    pub slot: u32,
    /// The owner's generation of that slot when the entry was made.
    pub generation: u32,
}

/// The wheel: `SLOTS` buckets of one second each; deadlines further out wrap around and
/// are re-inserted when their bucket comes due early.
pub struct Wheel {
    buckets: Vec<Vec<(Secs, Entry)>>,
    now: Secs,
    len: usize,
}

const SLOTS: usize = 512;

impl Default for Wheel {
    fn default() -> Self {
        Self::new()
    }
}

impl Wheel {
    /// An empty wheel at time 0.
    pub fn new() -> Self {
        Wheel {
            buckets: (0..SLOTS).map(|_| Vec::new()).collect(),
            now: 0,
            len: 0,
        }
    }

    /// The wheel's current time.
    pub fn now(&self) -> Secs {
        self.now
    }

    /// Entries held (including stale ones not yet reaped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the wheel holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `entry` at `deadline` (a deadline in the past fires at the next tick).
    pub fn insert(&mut self, deadline: Secs, entry: Entry) {
        let at = deadline.max(self.now + 1);
        self.buckets[at as usize % SLOTS].push((at, entry));
        self.len += 1;
    }

    /// Puts `entry` on the wheel at `at` unless an entry of it already comes due no later
    /// (`scheduled`, the owner's record of its earliest entry; 0: none). A later deadline
    /// costs nothing: the earlier entry comes due, and the owner re-inserts it then.
    pub fn schedule(&mut self, scheduled: &mut Secs, at: Secs, entry: Entry) {
        if *scheduled == 0 || at < *scheduled {
            *scheduled = at;
            self.insert(at, entry);
        }
    }

    /// Advances to `now`, pushing every entry whose deadline has passed into `due`.
    /// Entries scheduled for a later lap stay in place.
    pub fn advance(&mut self, now: Secs, due: &mut Vec<Entry>) {
        while self.now < now {
            self.now += 1;
            let bucket = &mut self.buckets[self.now as usize % SLOTS];
            let before = bucket.len();
            let current = self.now;
            bucket.retain(|&(at, entry)| {
                if at <= current {
                    due.push(entry);
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
            if bucket.is_empty() && bucket.capacity() > 64 {
                bucket.shrink_to(16);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(slot: u32) -> Entry {
        Entry {
            slot,
            generation: 0,
        }
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::new();
        w.insert(3, e(1));
        let mut due = Vec::new();
        w.advance(2, &mut due);
        assert!(due.is_empty());
        w.advance(3, &mut due);
        assert_eq!(due, vec![e(1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_survive_laps() {
        let mut w = Wheel::new();
        w.insert(SLOTS as Secs * 2 + 5, e(7));
        let mut due = Vec::new();
        w.advance(SLOTS as Secs * 2 + 4, &mut due);
        assert!(due.is_empty());
        w.advance(SLOTS as Secs * 2 + 5, &mut due);
        assert_eq!(due, vec![e(7)]);
    }

    #[test]
    fn schedule_inserts_only_an_earlier_deadline() {
        let mut w = Wheel::new();
        let mut scheduled = 0;
        w.schedule(&mut scheduled, 10, e(1));
        w.schedule(&mut scheduled, 20, e(1));
        assert_eq!((scheduled, w.len()), (10, 1));
        w.schedule(&mut scheduled, 5, e(1));
        assert_eq!((scheduled, w.len()), (5, 2));
    }

    #[test]
    fn past_deadline_fires_next_tick() {
        let mut w = Wheel::new();
        w.advance(10, &mut Vec::new());
        w.insert(4, e(2));
        let mut due = Vec::new();
        w.advance(11, &mut due);
        assert_eq!(due, vec![e(2)]);
    }
}
