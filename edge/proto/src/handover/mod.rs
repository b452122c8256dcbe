//! The handover stream of a zero-downtime upgrade (issue 15): what one shard of the old
//! process tells the new one about its listeners, live WebSocket connections and UDP
//! sessions; what the node tells it about its bus (bindings, or in cluster mode the online
//! counts and mobile-id leases); and the messages that reached the old process after it
//! wrote its state. File descriptors travel beside it (`SCM_RIGHTS`); records name them
//! by their index in that array. Record bodies are [`records`]'.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "CSHO" · version u16 · shard u16 · shards u16 · records u32
//! records: kind u8 · length u32 · body
//! trailer: CRC-32 (IEEE) u32 of everything before it
//! ```
//!
//! Versioned (a reader refuses any version it does not know: the old process then keeps
//! serving) and checksummed (a truncated or corrupt stream fails as a whole, before any
//! record is used). Pure: bytes in, records or an error out; never a panic.

mod records;

use std::net::SocketAddr;

use thiserror::Error;

use records::{Cursor, decode_record, encode_record};

/// The stream's first bytes.
pub const MAGIC: &[u8; 4] = b"CSHO";
/// The one version this build writes and reads.
pub const VERSION: u16 = 1;
/// Largest stream accepted (a shard holding a million sessions fits).
pub const MAX_LEN: usize = 1 << 30;

/// What kind of listener a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain WebSocket (`ws://`).
    Ws = 0,
    /// WebSocket over TLS (`wss://`).
    Wss = 1,
    /// The UDP device socket.
    Udp = 2,
    /// The status endpoint (`--sh`).
    Status = 3,
    /// The `udpaddr` endpoint (`--hhttp`).
    UdpAddr = 4,
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A listening socket, `fd` its index among the passed descriptors.
    Listener {
        /// Index among the passed descriptors.
        fd: u32,
        /// What it listens for.
        kind: ListenerKind,
    },
    /// A live WebSocket connection.
    WsConn(WsConn),
    /// A UDP device session.
    UdpSession(UdpSession),
    /// A key of the writing shard's directory slice and the shards holding it (a mask).
    Directory {
        /// The route key.
        key: i64,
        /// Bit `s` set: shard `s` holds sessions under the key.
        mask: u64,
    },
    /// The embedded bus: a device bound to a user.
    Binding {
        /// The device id.
        device: i64,
        /// The base user id.
        user: i64,
    },
    /// Cluster mode: live sessions of `id` counted in `Host:<lip>`.
    Online {
        /// The session id.
        id: i64,
        /// Its live sessions.
        count: u32,
    },
    /// Cluster mode: a phone session's mobile-id lease (kept alive by the new process
    /// under the same token, so it never lapses).
    Lease(Lease),
    /// Cluster mode: the sidecar's state besides its tables.
    Cluster {
        /// Its msgbus links up at the handover (the new process waits for as many).
        links_up: u32,
        /// `Host:<lip>` was in step with Redis (else the new process rewrites it).
        redis_synced: bool,
    },
    /// A message that reached a frozen shard after it wrote its state, for the new
    /// process to deliver.
    Relay(Relay),
}

/// A mobile-id lease (`user:mobileid:<user>:<k>:lease` holds `token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The session (user + k).
    pub session: i64,
    /// The base user id.
    pub user: i64,
    /// The mobile sub-id.
    pub k: u8,
    /// The lease's token.
    pub token: String,
}

/// A message held by a frozen shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Deliver on every shard (it was on its way to the ids' directory shard), or only on
    /// the shard whose stream carries it (it was addressed to that shard's sessions).
    pub everywhere: bool,
    /// The destination ids.
    pub ids: Vec<i64>,
    /// A push's message id (the body is built per id), or `None`: bytes as they are.
    pub push: Option<u16>,
    /// The bytes, or the push's body.
    pub body: Vec<u8>,
}

/// A live WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConn {
    /// Index among the passed descriptors.
    pub fd: u32,
    /// Session id (0 before login).
    pub id: i64,
    /// Phones: the mobile sub-id.
    pub mobile: u8,
    /// The stage (the shell's `State` as a number: upgrading, logging in, online…).
    pub stage: u8,
    /// Heartbeat period, seconds.
    pub heartbeat_secs: u32,
    /// Seconds left before the connection's deadline.
    pub deadline_in_secs: u32,
    /// Bound peers (phones: devices; devices: users).
    pub bound: Vec<i64>,
    /// Bytes queued but not yet written.
    pub outbox: Vec<u8>,
    /// Bytes of an incomplete frame already read.
    pub carry: Vec<u8>,
    /// A `wss` connection's record layer (its outbox is already ciphertext). Boxed: most
    /// connections are plain, and every record is as large as its largest kind.
    pub tls: Option<Box<TlsKeys>>,
}

/// A UDP device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSession {
    /// Session id.
    pub sid: [u8; 16],
    /// Device id (0 before login).
    pub device: i64,
    /// The device's address.
    pub addr: SocketAddr,
    /// Last sequence number used towards the device.
    pub sidx: u16,
    /// Last sequence number accepted from the device.
    pub ridx: u16,
    /// Seconds left before the session expires.
    pub expires_in_secs: u32,
    /// Users bound to the device (base ids).
    pub bound: Vec<i64>,
}

/// The record layer of an established TLS connection: what a handover carries for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeys {
    /// The record protection (TLS 1.3, 1.2 AES-GCM, 1.2 ChaCha20), as the node numbers it.
    pub protection: u8,
    /// The AEAD, as the node numbers it.
    pub cipher: u8,
    /// Receiving: key (16 or 32 bytes), IV, next sequence number.
    pub rx: (Vec<u8>, [u8; 12], u64),
    /// Sending: the same.
    pub tx: (Vec<u8>, [u8; 12], u64),
    /// Ciphertext of an incomplete record already read.
    pub held: Vec<u8>,
}

/// Why a stream cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandoverError {
    /// Not a handover stream.
    #[error("not a handover stream")]
    BadMagic,
    /// Written by a version this build does not read.
    #[error("handover version {0} (this build reads {VERSION})")]
    Version(u16),
    /// Shorter than its header, its records or its trailer say.
    #[error("truncated handover stream")]
    Truncated,
    /// The checksum does not match: corrupt.
    #[error("handover checksum mismatch")]
    Checksum,
    /// A record of an unknown kind, or a body that does not parse.
    #[error("bad handover record {0}")]
    BadRecord(u32),
    /// Longer than [`MAX_LEN`].
    #[error("handover stream too long")]
    TooLong,
}

/// A parsed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The shard that wrote it.
    pub shard: u16,
    /// How many shards the writer ran (a reader with another count refuses it).
    pub shards: u16,
    /// Its records, in order.
    pub records: Vec<Record>,
}

/// The byte-at-a-time table of [`crc32`] (a stream of a million sessions is tens of
/// megabytes: a bit-at-a-time loop would cost the upgrade's stall ~10 ns a byte).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// How many WebSocket connections and UDP sessions `records` hold.
pub fn tally(records: &[Record]) -> (usize, usize) {
    records.iter().fold((0, 0), |(ws, udp), r| match r {
        Record::WsConn(_) => (ws + 1, udp),
        Record::UdpSession(_) => (ws, udp + 1),
        _ => (ws, udp),
    })
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's): the stream's checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

/// Writes `handover` as a stream.
pub fn encode(handover: &Handover) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&handover.shard.to_le_bytes());
    out.extend_from_slice(&handover.shards.to_le_bytes());
    out.extend_from_slice(&(handover.records.len() as u32).to_le_bytes());
    let mut body = Vec::new();
    for record in &handover.records {
        body.clear();
        let kind = encode_record(record, &mut body);
        out.push(kind);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    }
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a stream: header, checksum, then every record (all or nothing).
pub fn decode(stream: &[u8]) -> Result<Handover, HandoverError> {
    if stream.len() > MAX_LEN {
        return Err(HandoverError::TooLong);
    }
    if stream.len() < 14 + 4 {
        return Err(if stream.starts_with(MAGIC) || MAGIC.starts_with(stream) {
            HandoverError::Truncated
        } else {
            HandoverError::BadMagic
        });
    }
    if &stream[..4] != MAGIC {
        return Err(HandoverError::BadMagic);
    }
    let version = u16::from_le_bytes([stream[4], stream[5]]);
    if version != VERSION {
        return Err(HandoverError::Version(version));
    }
    let (body, trailer) = stream.split_at(stream.len() - 4);
    if crc32(body).to_le_bytes() != trailer {
        return Err(HandoverError::Checksum);
    }
    let mut cur = Cursor(&body[6..]);
    let header = (|| Some((cur.u16()?, cur.u16()?, cur.u32()?)))();
    let (shard, shards, count) = header.ok_or(HandoverError::Truncated)?;
    let mut records = Vec::with_capacity((count as usize).min(body.len() / 5));
    for index in 0..count {
        let kind = cur.u8().ok_or(HandoverError::Truncated)?;
        let len = cur.u32().ok_or(HandoverError::Truncated)? as usize;
        let record_body = cur.take(len).ok_or(HandoverError::Truncated)?;
        let record = decode_record(kind, record_body).ok_or(HandoverError::BadRecord(index))?;
        records.push(record);
    }
    if !cur.0.is_empty() {
        return Err(HandoverError::BadRecord(count));
    }
    Ok(Handover {
        shard,
        shards,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        Handover {
            shard: 1,
            shards: 2,
            records: vec![
                Record::Listener {
                    fd: 0,
                    kind: ListenerKind::Ws,
                },
                Record::Listener {
                    fd: 1,
                    kind: ListenerKind::Udp,
                },
                Record::WsConn(WsConn {
                    fd: 2,
                    id: 17,
                    mobile: 1,
                    stage: 3,
                    heartbeat_secs: 30,
                    deadline_in_secs: 88,
                    bound: vec![-1, -2],
                    outbox: b"queued".to_vec(),
                    carry: vec![0x82],
                    tls: Some(Box::new(TlsKeys {
                        protection: 0,
                        cipher: 2,
                        rx: (vec![1; 32], [2; 12], 3),
                        tx: (vec![4; 32], [5; 12], 6),
                        held: vec![0x17, 3],
                    })),
                }),
                Record::UdpSession(UdpSession {
                    sid: [7; 16],
                    device: -42,
                    addr: "10.1.2.3:7999".parse().unwrap(),
                    sidx: 9,
                    ridx: 4,
                    expires_in_secs: 40,
                    bound: vec![32],
                }),
                Record::Directory { key: 32, mask: 3 },
                Record::Binding {
                    device: -42,
                    user: 32,
                },
                Record::Online { id: 33, count: 2 },
                Record::Lease(Lease {
                    session: 33,
                    user: 32,
                    k: 1,
                    token: "10.0.0.1#5f#7".into(),
                }),
                Record::Cluster {
                    links_up: 2,
                    redis_synced: true,
                },
                Record::Relay(Relay {
                    everywhere: true,
                    ids: vec![-42],
                    push: None,
                    body: b"hello".to_vec(),
                }),
                Record::Relay(Relay {
                    everywhere: false,
                    ids: vec![33, 34],
                    push: Some(0x1234),
                    body: b"pushed".to_vec(),
                }),
            ],
        }
    }

    #[test]
    fn round_trip_and_the_zlib_checksum() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let h = sample();
        assert_eq!(decode(&encode(&h)), Ok(h));
    }

    #[test]
    fn truncated_corrupt_and_foreign_streams_fail_cleanly() {
        let stream = encode(&sample());
        for n in 0..stream.len() {
            assert!(decode(&stream[..n]).is_err(), "a prefix of {n} bytes");
        }
        let mut corrupt = stream.clone();
        corrupt[20] ^= 1;
        assert_eq!(decode(&corrupt), Err(HandoverError::Checksum));
        let mut newer = stream.clone();
        newer[4] = 2;
        assert_eq!(decode(&newer), Err(HandoverError::Version(2)));
        assert_eq!(
            decode(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HandoverError::BadMagic)
        );
    }
}
