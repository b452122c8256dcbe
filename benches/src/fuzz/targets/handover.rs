//! Fuzz target: the upgrade handover decoder (`edge_proto::handover`). The stream comes from
//! a process of ours, but a truncated or corrupt one must fail cleanly: never a panic, and
//! whatever decodes re-encodes to a stream that decodes to the same records.

use edge_proto::handover::{self, Handover, ListenerKind, Record};

use super::*;

pub(super) fn seeds_handover() -> Vec<Vec<u8>> {
    let h = Handover {
        shard: 0,
        shards: 2,
        records: vec![
            Record::Listener {
                fd: 0,
                kind: ListenerKind::Wss,
            },
            Record::WsConn(handover::WsConn {
                fd: 1,
                id: 16,
                mobile: 1,
                stage: 3,
                heartbeat_secs: 30,
                deadline_in_secs: 90,
                bound: vec![-1],
                outbox: vec![0x82, 0],
                carry: Vec::new(),
                tls: Some(Box::new(handover::TlsKeys {
                    protection: 1,
                    cipher: 0,
                    rx: (vec![7; 16], [1; 12], 9),
                    tx: (vec![8; 16], [2; 12], 10),
                    held: vec![0x17],
                })),
            }),
            Record::UdpSession(handover::UdpSession {
                sid: [3; 16],
                device: -9,
                addr: "[2001:db8::1]:7999"
                    .parse()
                    .unwrap_or_else(|_| ([0u8; 16], 0).into()),
                sidx: 1,
                ridx: 2,
                expires_in_secs: 40,
                bound: vec![16],
            }),
            Record::Directory { key: 16, mask: 1 },
            Record::Binding {
                device: -9,
                user: 16,
            },
            Record::Cluster {
                links_up: 2,
                redis_synced: true,
            },
            Record::Online { id: 17, count: 1 },
            Record::Lease(handover::Lease {
                session: 17,
                user: 16,
                k: 1,
                token: "10.0.0.1#1#1".into(),
            }),
            Record::Relay(handover::Relay {
                everywhere: true,
                ids: vec![-9],
                push: Some(0x36),
                body: vec![5, 0],
            }),
        ],
    };
    let stream = handover::encode(&h);
    vec![
        stream.clone(),
        stream[..stream.len() / 2].to_vec(),
        handover::MAGIC.to_vec(),
    ]
}

pub(super) fn check_handover(data: &[u8]) -> Outcome {
    // As it is (the checksum stops almost every mutation), and with the checksum made to
    // match, so that the header and record parsers see the mutated bytes too.
    let mut fixed = data.to_vec();
    if fixed.len() >= 4 {
        let at = fixed.len() - 4;
        let crc = handover::crc32(&fixed[..at]);
        fixed[at..].copy_from_slice(&crc.to_le_bytes());
    }
    let mut feature = 0;
    for stream in [data, &fixed[..]] {
        feature = feature * 31
            + match handover::decode(stream) {
                Ok(h) => {
                    let again = handover::decode(&handover::encode(&h));
                    ensure!(
                        again.as_ref() == Ok(&h),
                        "re-encoding changed the records: {again:?}"
                    );
                    h.records.len().min(8) as u64
                }
                Err(e) => err_feature(0x48, &e) % 1000 + 100,
            };
    }
    Ok(feature)
}
