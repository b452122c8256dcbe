//! Named regression sequences: the two reproductions of the chain defect (issue 11) and
//! every counterexample the randomised runs have found, shrunk.

use super::{Op, run};

/// Several UDP sessions of one device (same MAC) on one shard, logging in again in the
/// order 0, 1, 0, 2, 1, 0: the old chains made a cycle here (the shard spun, growing by
/// gigabytes). Then `udpaddr`, a heartbeat on each session and a relay.
#[test]
fn relogins_of_several_udp_sessions_in_any_order() {
    for shards in 1..=4 {
        let mut ops: Vec<Op> = (0..3).map(|port| Op::UdpOpen { shard: 0, port }).collect();
        for sel in [0, 1, 0, 2, 1, 0] {
            ops.push(Op::UdpLogin { sel, id: 0 });
        }
        ops.push(Op::UdpAddr { id: 0 });
        for sel in 0..3 {
            ops.push(Op::UdpPacket {
                sel,
                shard: 0,
                port: sel,
                replay: false,
            });
        }
        for from in 0..shards as u8 {
            ops.push(Op::Relay { shard: from, id: 0 });
        }
        run(shards, 4, 7, &ops);
    }
}

/// A device on two UDP sessions; the first goes silent and expires while the second
/// heartbeats; eight strangers open sessions (the first reuses the expired slot). The old
/// chains still linked that slot: a stranger received the device's message, and
/// `udpaddr` could answer "unknown device".
#[test]
fn an_expired_session_slot_reused_by_a_stranger_gets_nothing() {
    for shards in 1..=4 {
        let mut ops = vec![
            Op::UdpOpen { shard: 0, port: 0 },
            Op::UdpOpen { shard: 0, port: 1 },
            Op::UdpLogin { sel: 0, id: 0 },
            Op::UdpLogin { sel: 1, id: 0 },
            Op::Tick { secs: 3 },
            Op::UdpPacket {
                sel: 1,
                shard: 0,
                port: 1,
                replay: false,
            },
            Op::Tick { secs: 3 },
        ];
        ops.extend((0..8).map(|_| Op::UdpOpen { shard: 0, port: 2 }));
        for from in 0..shards as u8 {
            ops.push(Op::Relay { shard: from, id: 0 });
        }
        ops.push(Op::UdpAddr { id: 0 });
        ops.push(Op::UdpPacket {
            sel: 1,
            shard: 0,
            port: 1,
            replay: false,
        });
        run(shards, 4, 11, &ops);
    }
}

/// At the cap the oldest session of the id is ended, whatever its kind.
#[test]
fn the_oldest_session_is_evicted_at_the_cap() {
    let mut ops: Vec<Op> = (0..3).map(|port| Op::UdpOpen { shard: 1, port }).collect();
    ops.push(Op::WsOpen { shard: 1 });
    ops.push(Op::WsUpgrade { sel: 0 });
    ops.push(Op::WsLogin {
        sel: 0,
        id: 0,
        period: 0,
    });
    for sel in 0..3 {
        ops.push(Op::UdpLogin { sel, id: 0 });
    }
    ops.push(Op::Relay { shard: 0, id: 0 });
    run(2, 2, 3, &ops);
}

/// A frame moves an online terminal's read deadline to three heartbeat periods from now,
/// never less: the shell used to set `now + window` there, one second short of the
/// `deadline_in` rule the other deadlines follow (a 1 s period could close at 3 s of
/// silence measured from a frame late in its second).
#[test]
fn a_read_deadline_never_fires_early() {
    let ops = vec![
        Op::WsOpen { shard: 0 },
        Op::WsUpgrade { sel: 0 },
        Op::WsLogin {
            sel: 0,
            id: 3,
            period: 1,
        },
        Op::Tick { secs: 2 },
        Op::WsFrame { sel: 0 },
        Op::Tick { secs: 3 },
        Op::Relay { shard: 1, id: 3 },
        Op::Tick { secs: 1 },
        Op::Relay { shard: 1, id: 3 },
    ];
    run(2, 4, 5, &ops);
}
