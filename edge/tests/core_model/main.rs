//! The shard core against a naive reference model: random operation sequences through
//! 2–4 simulated shards, every invariant checked after every step, counterexamples
//! shrunk by proptest, and each one found kept below as a named regression test.
//!
//! `CORE_MODEL_CASES` sets the number of sequences (default 10 000); the long run in
//! `benches/RESULTS.md` is `CORE_MODEL_CASES=… cargo test --release -p edge --test
//! core_model -- --nocapture`.

mod harness;
mod model;
mod sim;

use std::sync::atomic::Ordering;

use harness::{OPS, Run};
use proptest::prelude::*;
use sim::UTO;

/// Ids the operations draw from: three devices, and phones of two users (17 and 18 share
/// the directory key 16), so sessions collide on ids and keys all the time.
const IDS: [i64; 6] = [-1, -2, -3, 17, 18, 33];

#[derive(Debug, Clone)]
enum Op {
    WsOpen {
        shard: u8,
    },
    /// The upgrade request of a connection.
    WsUpgrade {
        sel: u8,
    },
    /// A login asking for a heartbeat period, granted.
    WsLogin {
        sel: u8,
        id: u8,
        period: u8,
    },
    /// A data frame on a connection.
    WsFrame {
        sel: u8,
    },
    WsClose {
        sel: u8,
    },
    UdpOpen {
        shard: u8,
        port: u8,
    },
    /// A device login on a UDP session (again or as another device: `0xE2`).
    UdpLogin {
        sel: u8,
        id: u8,
    },
    /// A heartbeat arriving at `shard`'s socket from `port` (NAT rebinding when they
    /// differ from before); `replay` reuses the last sequence number.
    UdpPacket {
        sel: u8,
        shard: u8,
        port: u8,
        replay: bool,
    },
    Tick {
        secs: u8,
    },
    /// One mesh message, from the `pick`-th busy queue.
    Step {
        pick: u8,
    },
    /// Drain, send a message for an id from a shard, drain, check who got it.
    Relay {
        shard: u8,
        id: u8,
    },
    /// Drain, then `udpaddr` on every shard.
    UdpAddr {
        id: u8,
    },
    /// `/admin/bind` (or unbind) of a device and a user; every live session's bound
    /// list follows.
    Bind {
        device: u8,
        user: u8,
        bound: bool,
    },
    /// Drain, a logged-in session sends to `dst` by its destination rules, drain, check.
    Send {
        sel: u8,
        udp: bool,
        dst: u8,
    },
    /// Drain, `/admin/push` to one id, check who got it.
    Push {
        id: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(|shard| Op::WsOpen { shard }),
        3 => any::<u8>().prop_map(|sel| Op::WsUpgrade { sel }),
        3 => (any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(sel, id, period)| Op::WsLogin { sel, id, period }),
        2 => any::<u8>().prop_map(|sel| Op::WsFrame { sel }),
        2 => any::<u8>().prop_map(|sel| Op::WsClose { sel }),
        4 => (any::<u8>(), 0..4u8).prop_map(|(shard, port)| Op::UdpOpen { shard, port }),
        5 => (any::<u8>(), any::<u8>()).prop_map(|(sel, id)| Op::UdpLogin { sel, id }),
        4 => (any::<u8>(), any::<u8>(), 0..4u8, prop::bool::weighted(0.1))
            .prop_map(|(sel, shard, port, replay)| Op::UdpPacket { sel, shard, port, replay }),
        2 => (1..=(UTO as u8 + 2)).prop_map(|secs| Op::Tick { secs }),
        4 => any::<u8>().prop_map(|pick| Op::Step { pick }),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(shard, id)| Op::Relay { shard, id }),
        1 => any::<u8>().prop_map(|id| Op::UdpAddr { id }),
        2 => (any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(device, user, bound)| Op::Bind { device, user, bound }),
        3 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(sel, udp, dst)| Op::Send { sel, udp, dst }),
        1 => any::<u8>().prop_map(|id| Op::Push { id }),
    ]
}

fn run(shards: usize, cap: usize, seed: u64, ops: &[Op]) {
    let mut r = Run::new(shards, cap, seed);
    for op in ops {
        r.apply(op);
    }
    r.drain();
    r.check();
}

fn cases() -> u32 {
    std::env::var("CORE_MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_matches_the_model(
        shards in 2..=4usize,
        cap in 1..=4usize,
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(shards, cap, seed, &ops);
    }
}

/// The long run recorded in `benches/RESULTS.md` (≥ 10 million operations):
/// `CORE_MODEL_CASES=300000 CORE_MODEL_SEED=20261206 cargo test --release -p edge --test
/// core_model -- --ignored --nocapture long_run`.
#[test]
#[ignore = "long: run by hand, see benches/RESULTS.md"]
fn long_run() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var("CORE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        2..=4usize,
        1..=4usize,
        any::<u64>(),
        prop::collection::vec(op(), 1..120),
    );
    let started = std::time::Instant::now();
    let before = OPS.load(Ordering::Relaxed);
    let result = runner.run(&strategy, |(shards, cap, seed, ops)| {
        run(shards, cap, seed, &ops);
        Ok(())
    });
    let ops = OPS.load(Ordering::Relaxed) - before;
    eprintln!(
        "core_model long run: seed {seed}, {} sequences, {ops} operations checked in {:.1} s: {}",
        cases(),
        started.elapsed().as_secs_f64(),
        if result.is_ok() {
            "0 invariant breaks"
        } else {
            "FAILED"
        }
    );
    result.unwrap();
}

mod regressions;
