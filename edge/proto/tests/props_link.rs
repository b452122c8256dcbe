//! Property tests for the comet ↔ msgbus link: the incremental decoder (arbitrary chunking,
//! skipping), `Upstream`/`Downstream` decoding of arbitrary bytes and of mutated golden
//! frames, and encoder round trips. 100 000 cases per property.

mod common;

use edge_proto::link::{Downstream, LinkDecoder, LinkError, LinkItem, Upstream};
use proptest::prelude::*;

const CASES: u32 = 100_000;

mod mutation;
use mutation::*;

const WIRE: [&str; 4] = [
    "msgbus_upstream_phone_to_device",
    "msgbus_downstream_phone_to_device",
    "msgbus_upstream_device_to_phone",
    "msgbus_downstream_device_to_phone",
];

/// Whole captured frames (with length prefix), and concatenations of two.
fn wire_seeds() -> Vec<Vec<u8>> {
    let one: Vec<Vec<u8>> = WIRE.iter().map(|n| common::bytes(n).to_vec()).collect();
    let mut seeds = one.clone();
    seeds.push([one[0].as_slice(), one[3].as_slice()].concat());
    seeds.push([one[2].as_slice(), one[1].as_slice()].concat());
    seeds
}

fn payload_seeds(upstream: bool) -> Vec<Vec<u8>> {
    let names = if upstream {
        [WIRE[0], WIRE[2]]
    } else {
        [WIRE[1], WIRE[3]]
    };
    names
        .iter()
        .map(|n| common::bytes(n)[4..].to_vec())
        .collect()
}

/// `(kind, payload or length)` items, merging consecutive `Discarded` reports.
fn decode_all(max: usize, wire: &[u8], chunks: &[usize]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut decoder = LinkDecoder::new(max);
    let (mut items, mut buf, mut fed, mut chunk) = (Vec::new(), Vec::new(), 0, 0);
    let mut consumed = 0;
    while fed < wire.len() || !buf.is_empty() {
        let step = chunks.get(chunk).copied().unwrap_or(wire.len()).max(1);
        chunk += 1;
        let end = (fed + step).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        while let Some((item, used)) = decoder.decode(&buf) {
            assert!(
                used > 0 && used <= buf.len(),
                "used {used} of {}",
                buf.len()
            );
            consumed += used;
            match item {
                LinkItem::Frame(payload) => {
                    assert!(payload.len() <= max);
                    assert_eq!(used, payload.len() + 4);
                    items.push((0, payload.to_vec()));
                }
                LinkItem::Skipped { len } => {
                    assert!(len as usize > max);
                    items.push((1, len.to_le_bytes().to_vec()));
                }
                LinkItem::Discarded => assert!(matches!(items.last(), Some((1, _)))),
            }
            buf.drain(..used);
        }
        if fed == wire.len() {
            break;
        }
    }
    assert!(consumed <= wire.len());
    assert_eq!(consumed + buf.len(), wire.len());
    (items, consumed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Arbitrary chunking gives the same items as one whole buffer; nothing panics, every
    /// step makes progress, and oversize frames are skipped without being buffered.
    #[test]
    fn link_decoder_is_chunking_invariant(
        wire in input(wire_seeds()),
        max in prop_oneof![Just(1024usize), 0usize..256],
        chunks in proptest::collection::vec(1usize..40, 0..12),
    ) {
        let whole = decode_all(max, &wire, &[]);
        let chunked = decode_all(max, &wire, &chunks);
        prop_assert_eq!(whole, chunked);
    }

    /// Any accepted upstream payload re-encodes to exactly its length prefix and bytes.
    #[test]
    fn upstream_decode_is_consistent(payload in input(payload_seeds(true))) {
        match Upstream::decode(&payload) {
            Ok(up) => {
                let mut ours = Vec::new();
                up.write_to(&mut ours).unwrap();
                prop_assert_eq!(&ours[..4], &(payload.len() as u32).to_le_bytes()[..]);
                prop_assert_eq!(&ours[4..], &payload[..]);
                prop_assert_eq!(up.ids.iter().count(), up.ids.len());
                prop_assert_eq!(up.ids.get(up.ids.len()), None);
            }
            Err(LinkError::Truncated) => prop_assert!(payload.len() < 10),
            Err(LinkError::Count { count }) => {
                prop_assert!(payload.len() >= 10 && 10 + 8 * usize::from(count) > payload.len());
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// Any accepted downstream payload re-encodes to exactly its length prefix and bytes.
    #[test]
    fn downstream_decode_is_consistent(payload in input(payload_seeds(false))) {
        match Downstream::decode(&payload) {
            Ok(down) => {
                let mut ours = Vec::new();
                down.write_to(&mut ours).unwrap();
                prop_assert_eq!(&ours[..4], &(payload.len() as u32).to_le_bytes()[..]);
                prop_assert_eq!(&ours[4..], &payload[..]);
            }
            Err(LinkError::Truncated) => prop_assert!(payload.len() < 2),
            Err(LinkError::Count { count }) => {
                prop_assert!(2 + 8 * usize::from(count) > payload.len())
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// Encode → frame → decode gives back the same values, both directions.
    #[test]
    fn link_round_trip(
        src in any::<i64>(),
        ids in proptest::collection::vec(any::<i64>(), 0..20),
        message in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut wire = Vec::new();
        Upstream::write(&mut wire, src, &ids, &message).unwrap();
        Downstream::write(&mut wire, &ids, &message).unwrap();
        let mut decoder = LinkDecoder::new(1024);
        let (LinkItem::Frame(up), used) = decoder.decode(&wire).unwrap() else {
            panic!("frame")
        };
        let up = Upstream::decode(up).unwrap();
        prop_assert_eq!(
            (up.src, up.ids.iter().collect::<Vec<_>>(), up.message),
            (src, ids.clone(), &message[..])
        );
        let (LinkItem::Frame(down), rest) = decoder.decode(&wire[used..]).unwrap() else {
            panic!("frame")
        };
        prop_assert_eq!(used + rest, wire.len());
        let down = Downstream::decode(down).unwrap();
        prop_assert_eq!(
            (down.ids.iter().collect::<Vec<_>>(), down.message),
            (ids, &message[..])
        );
    }
}
