//! Outbound accounting of one shard, sans IO: the bytes queued for readers that have not
//! taken them yet, per connection (`--max-outbound`) and for the shard as a whole
//! (`--max-outbound-shard`), and what to do with a frame given those bounds.
//!
//! Owns: the shard's queued total and the decisions. Does not own: the buffers (each
//! connection's outbox, in the shell), the socket writes, or the closing — the shell
//! writes, reports what went out ([`Outbound::sent`]) and what was thrown away with a
//! closed connection ([`Outbound::discarded`]), and acts on [`Verdict`].
//!
//! The rule: a frame that fits both bounds is queued and flushed with the turn. One that
//! does not is held back until the socket has been tried once: a reader still more than
//! `--max-outbound` behind is closed (slow reader); past the shard's budget nothing may
//! wait — the frame is written at once, and a reader that cannot take it is closed.

/// Why a reader is closed (1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// More than `--max-outbound` behind.
    SlowReader,
    /// The shard's budget is spent and this reader cannot take its frame at once.
    Budget,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it; it goes out with the turn's flush.
    Queue,
    /// Append it and write now: nothing may wait past the shard's budget. Whatever the
    /// socket does not take closes the reader ([`Closed::Budget`]).
    WriteNow,
    /// Close the reader with 1008.
    Close(Closed),
}

/// The shard's outbound accounting.
#[derive(Debug)]
pub struct Outbound {
    per_conn: usize,
    per_shard: usize,
    queued: usize,
}

impl Outbound {
    /// Bounds: `per_conn` bytes behind for one reader, `per_shard` for all together.
    pub fn new(per_conn: usize, per_shard: usize) -> Self {
        Outbound {
            per_conn,
            per_shard,
            queued: 0,
        }
    }

    /// Bytes queued on the shard, all readers together.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether a frame of `len` bytes must wait for a try of the socket before a
    /// [`Outbound::verdict`] (its reader has `waiting` bytes queued).
    pub fn needs_flush(&self, waiting: usize, len: usize) -> bool {
        waiting + len > self.per_conn || self.over_budget(len)
    }

    /// Whether the shard's budget cannot take `len` more bytes.
    pub fn over_budget(&self, len: usize) -> bool {
        self.queued + len > self.per_shard
    }

    /// The verdict on a frame of `len` bytes whose reader still has `waiting` bytes
    /// queued after the socket was tried; `over_budget` as it stood before that try.
    pub fn verdict(&self, waiting: usize, len: usize, over_budget: bool) -> Verdict {
        if waiting + len > self.per_conn {
            Verdict::Close(Closed::SlowReader)
        } else if over_budget && waiting > 0 {
            Verdict::Close(Closed::Budget)
        } else if over_budget {
            Verdict::WriteNow
        } else {
            Verdict::Queue
        }
    }

    /// `len` bytes were appended to a reader's outbox.
    pub fn queued_more(&mut self, len: usize) {
        self.queued += len;
    }

    /// The socket took `len` queued bytes.
    pub fn sent(&mut self, len: usize) {
        self.queued = self.queued.saturating_sub(len);
    }

    /// A closed reader's `len` queued bytes were thrown away.
    pub fn discarded(&mut self, len: usize) {
        self.sent(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_within_both_bounds_is_queued() {
        let out = Outbound::new(100, 1000);
        assert!(!out.needs_flush(50, 50));
        assert_eq!(out.verdict(50, 50, false), Verdict::Queue);
    }

    #[test]
    fn a_reader_too_far_behind_is_closed_after_a_try() {
        let out = Outbound::new(100, 1000);
        assert!(out.needs_flush(60, 50));
        assert_eq!(
            out.verdict(60, 50, false),
            Verdict::Close(Closed::SlowReader)
        );
        assert_eq!(
            out.verdict(0, 50, false),
            Verdict::Queue,
            "the socket took it all"
        );
    }

    #[test]
    fn past_the_budget_nothing_waits() {
        let mut out = Outbound::new(100, 120);
        out.queued_more(100);
        assert!(out.over_budget(30));
        assert!(out.needs_flush(0, 30));
        assert_eq!(out.verdict(0, 30, true), Verdict::WriteNow);
        assert_eq!(out.verdict(10, 30, true), Verdict::Close(Closed::Budget));
        out.sent(60);
        out.discarded(40);
        assert_eq!(out.queued(), 0);
    }
}
