//! The seeded simulation of [`Registrar`](super::super::Registrar): random disconnects,
//! expiries (server-side and by a fresh client), lost replies, enable/disable and data
//! changes; afterwards exactly one node per enabled node and nothing else of ours.
#![allow(
    clippy::disallowed_methods,
    reason = "one real Instant is the origin of the fake clock"
)]

use std::time::{Duration, Instant};

use super::*;

/// A tiny deterministic generator (xorshift), so a failing seed is a regression test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random faults between steps; after the last one, the world settles. Afterwards every
/// enabled node exists exactly once with its latest data, disabled ones not at all, and
/// nothing else of ours is left under the roots.
#[test]
fn simulation_never_leaves_duplicates() {
    for seed in 1..=1000u64 {
        simulate(seed);
    }
}

fn simulate(seed: u64) {
    let t0 = Instant::now();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut zk = FakeZk::default();
    let mut live_sessions = vec![];
    let mut session = zk.new_session();
    let specs = vec![
        config("a", "0", true),
        config("a", "1", true),
        config("b", "2", false),
    ];
    let mut reg = Registrar::new(specs.clone());
    let mut wanted = specs;
    let mut now = t0;
    connected(&mut reg, true, now);
    let mut online = true;
    for step in 0..60 {
        now += Duration::from_millis(300);
        reg.handle_timeout(now);
        match rng.below(10) {
            0 if online => {
                reg.handle_event(Event::Disconnected, now);
                online = false;
            }
            1 if !online => {
                connected(&mut reg, false, now);
                online = true;
            }
            2 => {
                // The client dies; the old session may live on for a while.
                reg.handle_event(Event::Expired, now);
                live_sessions.push(session);
                session = zk.new_session();
                connected(&mut reg, true, now);
                online = true;
            }
            3 if !online => {
                // The server expired the session; the same client reconnects with a new one.
                zk.expire(session);
                session = zk.new_session();
                connected(&mut reg, false, now);
                online = true;
            }
            4 => {
                let i = rng.below(3) as usize;
                wanted[i].enabled = !wanted[i].enabled;
                let event = Event::Enabled {
                    node: NodeId(i),
                    enabled: wanted[i].enabled,
                };
                reg.handle_event(event, now);
            }
            5 => {
                let i = rng.below(3) as usize;
                wanted[i].data = format!("{i}-{step}").into_bytes();
                reg.handle_event(
                    Event::Data {
                        node: NodeId(i),
                        data: wanted[i].data.clone(),
                    },
                    now,
                );
            }
            _ => {}
        }
        // Run a few actions; some replies get lost on the way back.
        for _ in 0..rng.below(4) {
            let Some(action) = reg.poll_action() else {
                break;
            };
            let reply = zk.apply(session, &action);
            let reply = if rng.below(6) == 0 {
                Reply::Failed(Failure::Connection)
            } else {
                reply
            };
            reg.handle_event(Event::Reply(reply), now);
        }
    }
    if !online {
        connected(&mut reg, false, now);
    }
    for _ in 0..50 {
        now += Duration::from_secs(11);
        reg.handle_timeout(now);
        settle(&mut reg, &mut zk, session, now);
    }
    // Old sessions of ours may still hold nodes we could not identify; they expire.
    for old in live_sessions {
        zk.expire(old);
    }
    for (i, want) in wanted.iter().enumerate() {
        let root = &want.root;
        let ours: Vec<_> = zk
            .children(root)
            .into_iter()
            .filter(|(p, _)| reg.registered(NodeId(i)) == Some(p.as_str()))
            .collect();
        if want.enabled {
            assert_eq!(ours.len(), 1, "seed {seed}: node {i} registered once");
            assert_eq!(ours[0].1, want.data, "seed {seed}: node {i} data");
        } else {
            assert!(ours.is_empty(), "seed {seed}: node {i} disabled");
        }
    }
    for root in ["a", "b"] {
        let enabled = wanted
            .iter()
            .filter(|w| w.enabled && w.root == root)
            .count();
        assert_eq!(
            zk.children(root).len(),
            enabled,
            "seed {seed}: root {root}: {:?}",
            zk.children(root)
        );
    }
}
