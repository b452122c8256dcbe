//! Property: any handover the old process could write decodes to itself, and any single
//! flipped byte or cut makes the whole stream fail (never a partial or wrong result).

use edge_proto::handover::{
    Handover, ListenerKind, Record, TlsKeys, UdpSession, WsConn, decode, encode,
};
use proptest::prelude::*;

fn tls_keys() -> impl Strategy<Value = TlsKeys> {
    let direction = || {
        (
            prop_oneof![Just(16usize), Just(32)]
                .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)),
            any::<[u8; 12]>(),
            any::<u64>(),
        )
    };
    (
        any::<u8>(),
        any::<u8>(),
        direction(),
        direction(),
        proptest::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(protection, cipher, rx, tx, held)| TlsKeys {
            protection,
            cipher,
            rx,
            tx,
            held,
        })
}

fn record() -> impl Strategy<Value = Record> {
    let listener = (any::<u32>(), 0u8..5).prop_map(|(fd, k)| Record::Listener {
        fd,
        kind: [
            ListenerKind::Ws,
            ListenerKind::Wss,
            ListenerKind::Udp,
            ListenerKind::Status,
            ListenerKind::UdpAddr,
        ][k as usize],
    });
    let ws = (
        (any::<u32>(), any::<i64>(), any::<u8>(), any::<u8>()),
        (any::<u32>(), any::<u32>()),
        proptest::collection::vec(any::<i64>(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::option::of(tls_keys().prop_map(Box::new)),
    )
        .prop_map(
            |(
                (fd, id, mobile, stage),
                (heartbeat_secs, deadline_in_secs),
                bound,
                outbox,
                carry,
                tls,
            )| {
                Record::WsConn(WsConn {
                    fd,
                    id,
                    mobile,
                    stage,
                    heartbeat_secs,
                    deadline_in_secs,
                    bound,
                    outbox,
                    carry,
                    tls,
                })
            },
        );
    let udp = (
        any::<[u8; 16]>(),
        any::<i64>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        (any::<u16>(), any::<u16>(), any::<u32>()),
        proptest::collection::vec(any::<i64>(), 0..4),
    )
        .prop_map(
            |(sid, device, v6, octets, port, (sidx, ridx, expires_in_secs), bound)| {
                let ip = if v6 {
                    std::net::IpAddr::V6(octets.into())
                } else {
                    std::net::IpAddr::V4([octets[0], octets[1], octets[2], octets[3]].into())
                };
                Record::UdpSession(UdpSession {
                    sid,
                    device,
                    addr: std::net::SocketAddr::new(ip, port),
                    sidx,
                    ridx,
                    expires_in_secs,
                    bound,
                })
            },
        );
    let directory =
        (any::<i64>(), any::<u64>()).prop_map(|(key, mask)| Record::Directory { key, mask });
    let binding =
        (any::<i64>(), any::<i64>()).prop_map(|(device, user)| Record::Binding { device, user });
    prop_oneof![listener, ws, udp, directory, binding]
}

proptest! {
    #[test]
    fn every_handover_round_trips_and_every_corruption_fails(
        shard in any::<u16>(),
        shards in any::<u16>(),
        records in proptest::collection::vec(record(), 0..12),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let h = Handover { shard, shards, records };
        let stream = encode(&h);
        prop_assert_eq!(decode(&stream), Ok(h));
        let mut corrupt = stream.clone();
        corrupt[flip.index(stream.len())] ^= 0x5a;
        prop_assert!(decode(&corrupt).is_err());
        prop_assert!(decode(&stream[..cut.index(stream.len())]).is_err());
    }
}
