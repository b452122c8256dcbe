//! An upgrade's UDP half against a naive model: random sequences of session operations
//! (open, log in, packets with any sequence number from any address, a platform call left
//! pending, removal, time passing) on a `UdpTable`, then the handover — records written,
//! encoded as the shard's stream, decoded, restored into a fresh table — and the restored
//! table must hold exactly the model's sessions that were not waiting on the platform,
//! each with its sid, address, device, both sequence numbers, remaining time and bound
//! users; its anonymous count must be right; and the sessions must go on as the model says
//! (the next packet's sequence rule). Counterexamples are kept in
//! `handover_model.proptest-regressions`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use edge::core::udp::{Accept, Pending, UdpTable};
use edge_proto::device::{Sid, seq_accepts};
use edge_proto::handover::{Handover, Record, decode, encode};
use proptest::prelude::*;

/// What the model knows of a session.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    addr: SocketAddr,
    device: i64,
    ridx: u16,
    deadline: u32,
    bound: Vec<i64>,
    pending: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Open(u8),
    Login(u8, i64),
    Packet(u8, u16, u8),
    Pend(u8),
    Remove(u8),
    Wait(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Open),
        2 => (any::<u8>(), -5i64..0).prop_map(|(s, d)| Op::Login(s, d)),
        4 => (any::<u8>(), any::<u16>(), 0u8..3).prop_map(|(s, q, a)| Op::Packet(s, q, a)),
        1 => any::<u8>().prop_map(Op::Pend),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => (1u8..30).prop_map(Op::Wait),
    ]
}

fn sid(n: u8) -> Sid {
    let mut s = [n; 16];
    s[15] = 0;
    Sid(s)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7000 + u16::from(n)))
}

const UTO: u32 = 40;

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut table = UdpTable::new(64);
    let mut model: BTreeMap<u8, Session> = BTreeMap::new();
    let mut slots: BTreeMap<u8, u32> = BTreeMap::new();
    let mut now = 1u32;
    for op in ops {
        match *op {
            Op::Open(n) => {
                let n = n % 16;
                if let Ok((slot, _)) = table.open(sid(n), addr(n), now + UTO) {
                    prop_assert!(!model.contains_key(&n));
                    slots.insert(n, slot);
                    let s = Session {
                        addr: addr(n),
                        device: 0,
                        ridx: 0,
                        deadline: now + UTO,
                        bound: vec![],
                        pending: false,
                    };
                    model.insert(n, s);
                }
            }
            Op::Login(n, device) => {
                if let (Some(&slot), Some(s)) = (slots.get(&(n % 16)), model.get_mut(&(n % 16))) {
                    table.set_device(slot, device);
                    let bound = vec![16 * (-device)];
                    table.get_mut(slot).unwrap().bound = bound.clone().into_boxed_slice();
                    (s.device, s.bound) = (device, bound);
                }
            }
            Op::Packet(n, seq, from) => {
                let n = n % 16;
                let verdict = table.accept((0, 1), &sid(n).0, seq, addr(from), now + UTO);
                match model.get_mut(&n) {
                    Some(s) if seq_accepts(s.ridx, seq) => {
                        prop_assert!(matches!(verdict, Accept::Mine { .. }), "{verdict:?}");
                        (s.ridx, s.addr, s.deadline) = (seq, addr(from), now + UTO);
                    }
                    Some(_) => prop_assert_eq!(verdict, Accept::StaleSeq),
                    None => prop_assert_eq!(verdict, Accept::Unknown),
                }
            }
            Op::Pend(n) => {
                if let (Some(&slot), Some(s)) = (slots.get(&(n % 16)), model.get_mut(&(n % 16))) {
                    table.get_mut(slot).unwrap().pending = Some(Box::new(Pending {
                        header: [0; 36],
                        mac: [0; 8],
                    }));
                    s.pending = true;
                }
            }
            Op::Remove(n) => {
                if let Some(slot) = slots.remove(&(n % 16)) {
                    table.remove(slot);
                    model.remove(&(n % 16));
                }
            }
            Op::Wait(secs) => now += u32::from(secs),
        }
    }
    // The handover: records, the stream, and a fresh table at a later clock.
    let (records, left_out) = table.handover_records(now);
    prop_assert_eq!(left_out, model.values().filter(|s| s.pending).count());
    let stream = encode(&Handover {
        shard: 0,
        shards: 1,
        records,
    });
    let decoded = decode(&stream).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let later = now + 1000;
    let mut fresh = UdpTable::new(64);
    for record in decoded.records {
        let Record::UdpSession(session) = record else {
            return Err(TestCaseError::fail(format!("{record:?}")));
        };
        prop_assert!(fresh.restore(session, later).is_some());
    }
    fresh.check().map_err(TestCaseError::fail)?;
    let expected: BTreeMap<u8, &Session> = model
        .iter()
        .filter(|(_, s)| !s.pending)
        .map(|(&n, s)| (n, s))
        .collect();
    prop_assert_eq!(fresh.len(), expected.len());
    for (&n, s) in &expected {
        let (slot, got) = fresh
            .iter()
            .find(|(_, g)| g.sid == sid(n))
            .ok_or_else(|| TestCaseError::fail(format!("session {n} lost")))?;
        prop_assert_eq!(got.addr.socket(), s.addr);
        prop_assert_eq!(got.device, s.device);
        prop_assert_eq!(got.ridx, s.ridx);
        prop_assert_eq!(&got.bound[..], &s.bound[..]);
        prop_assert_eq!(got.deadline - later, s.deadline.saturating_sub(now).max(1));
        // The sequence rule goes on where it was.
        let next = s.ridx.wrapping_add(1);
        let verdict = fresh.accept((0, 1), &sid(n).0, next, s.addr, later + UTO);
        prop_assert_eq!(verdict, Accept::Mine { slot, moved: false });
        let again = fresh.accept((0, 1), &sid(n).0, next, s.addr, later + UTO);
        prop_assert_eq!(again, Accept::StaleSeq);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn udp_sessions_survive_a_handover_as_the_model_says(ops in proptest::collection::vec(op(), 0..80)) {
        run(&ops)?;
    }
}
