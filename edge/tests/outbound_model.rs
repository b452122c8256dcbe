//! The outbound bounds of the shard core (`edge::core::outbound`) under random sends,
//! readers reading, turn ends, closes and reconnects, through a simulated shell that
//! mirrors `shard::write::send_frame` with sockets of limited room. Checked after every
//! step against plain sums: the core's total is exactly what the outboxes hold, no
//! outbox passes `--max-outbound`, the total never passes `--max-outbound-shard`, and a
//! reader that always keeps up is never closed.

use edge::core::outbound::{Outbound, Verdict};
use proptest::prelude::*;

const PER_CONN: usize = 1000;
const PER_SHARD: usize = 2500;
const CONNS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Send { conn: u8, len: u16 },
    Read { conn: u8, len: u16 },
    TurnEnd,
    Close { conn: u8 },
    Reopen { conn: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 1..600u16).prop_map(|(conn, len)| Op::Send { conn, len }),
        3 => (any::<u8>(), 1..1500u16).prop_map(|(conn, len)| Op::Read { conn, len }),
        2 => Just(Op::TurnEnd),
        1 => any::<u8>().prop_map(|conn| Op::Close { conn }),
        1 => any::<u8>().prop_map(|conn| Op::Reopen { conn }),
    ]
}

/// One reader: its outbox, the room its socket has, and whether it always keeps up.
#[derive(Debug, Clone, Default)]
struct Reader {
    open: bool,
    outbox: usize,
    room: usize,
    keeps_up: bool,
}

struct Sim {
    core: Outbound,
    readers: Vec<Reader>,
}

impl Sim {
    fn flush(&mut self, c: usize) {
        let r = &mut self.readers[c];
        let n = if r.keeps_up {
            r.outbox
        } else {
            r.outbox.min(r.room)
        };
        r.outbox -= n;
        r.room = r.room.saturating_sub(n);
        self.core.sent(n);
    }

    fn close(&mut self, c: usize) {
        let r = &mut self.readers[c];
        self.core.discarded(r.outbox);
        *r = Reader::default();
    }

    /// Mirrors `send_frame`.
    fn send(&mut self, c: usize, len: usize) {
        if !self.readers[c].open {
            return;
        }
        let over_budget = self.core.over_budget(len);
        let mut verdict = Verdict::Queue;
        if self.core.needs_flush(self.readers[c].outbox, len) {
            self.flush(c);
            verdict = self.core.verdict(self.readers[c].outbox, len, over_budget);
        }
        if let Verdict::Close(_) = verdict {
            return self.close(c);
        }
        self.readers[c].outbox += len;
        self.core.queued_more(len);
        if verdict == Verdict::WriteNow {
            self.flush(c);
            if self.readers[c].outbox > 0 {
                self.close(c);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Send { conn, len } => self.send(conn as usize % CONNS, len as usize),
            Op::Read { conn, len } => self.readers[conn as usize % CONNS].room += len as usize,
            Op::TurnEnd => (0..CONNS).for_each(|c| self.flush(c)),
            Op::Close { conn } => self.close(conn as usize % CONNS),
            Op::Reopen { conn } => {
                let c = conn as usize % CONNS;
                if !self.readers[c].open {
                    self.readers[c] = Reader {
                        open: true,
                        keeps_up: c == 0,
                        ..Reader::default()
                    };
                }
            }
        }
    }

    fn check(&self, step: usize) {
        let sum: usize = self.readers.iter().map(|r| r.outbox).sum();
        assert_eq!(
            self.core.queued(),
            sum,
            "step {step}: the total is the outboxes' sum"
        );
        assert!(
            sum <= PER_SHARD,
            "step {step}: {sum} queued past the shard's budget"
        );
        for (c, r) in self.readers.iter().enumerate() {
            assert!(
                r.outbox <= PER_CONN,
                "step {step}: reader {c} holds {}",
                r.outbox
            );
        }
    }
}

fn run(ops: &[Op]) {
    let mut sim = Sim {
        core: Outbound::new(PER_CONN, PER_SHARD),
        readers: (0..CONNS)
            .map(|c| Reader {
                open: true,
                keeps_up: c == 0,
                ..Reader::default()
            })
            .collect(),
    };
    for (step, op) in ops.iter().enumerate() {
        let keeper_open = sim.readers[0].open;
        sim.apply(op);
        let closed_by_hand =
            matches!(op, Op::Close { conn } if (*conn as usize).is_multiple_of(CONNS));
        assert!(
            !keeper_open || sim.readers[0].open || closed_by_hand,
            "step {step}: a reader that keeps up was closed"
        );
        sim.check(step);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn outbound_bounds_hold(ops in prop::collection::vec(op(), 1..200)) {
        run(&ops);
    }
}

/// Many slow readers together reach the shard's budget: the next frame for one that
/// cannot take it at once closes it; the reader that keeps up goes on.
#[test]
fn the_budget_closes_slow_readers_not_the_one_that_keeps_up() {
    let mut ops: Vec<Op> = (1..CONNS as u8)
        .flat_map(|conn| [Op::Send { conn, len: 599 }, Op::Send { conn, len: 100 }])
        .collect();
    ops.extend((0..10).map(|_| Op::Send { conn: 0, len: 599 }));
    ops.push(Op::Send { conn: 1, len: 50 });
    run(&ops);
}
