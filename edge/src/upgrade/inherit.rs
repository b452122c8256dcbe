//! The new process's side of an upgrade: finds the handover socket (fd 3, named by
//! `CLOUDSOCKET_HANDOVER_FD`), says `HELLO`, reads one stream per shard and the node's
//! stream, checks each (version, checksum, shard count) and sorts their records and
//! descriptors into a [`crate::node::Inherited`]. Anything wrong is answered
//! `REFUSE <why>`, and the old process serves on.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use edge_proto::handover::{self, ListenerKind, Record};

use super::{HANDOVER_ENV, HANDOVER_FD, transfer};
use crate::node::{Inherited, InheritedShard};

/// How long each stream may take to arrive.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new process waits for `GO` after `READY`.
const GO_TIMEOUT: Duration = Duration::from_secs(10);

/// The handover socket and what came over it.
pub struct Incoming {
    socket: UnixStream,
    /// What the old process handed over.
    pub inherited: Inherited,
}

/// Whether this process was started by an upgrade: then the handover, read whole, or why
/// it was refused (the old process has been told).
pub fn incoming(shards: usize) -> Option<anyhow::Result<Incoming>> {
    let fd: i32 = std::env::var(HANDOVER_ENV).ok()?.parse().ok()?;
    if fd != HANDOVER_FD {
        return None;
    }
    // SAFETY: the old process put the handover socket at this descriptor for us alone.
    let socket = unsafe { UnixStream::from_raw_fd(fd) };
    // Not for our own children.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(match read(&socket, shards) {
        Ok(inherited) => Ok(Incoming { socket, inherited }),
        Err(e) => {
            let _ = transfer::say(&socket, &format!("REFUSE {e}"));
            Err(e)
        }
    })
}

fn read(socket: &UnixStream, shards: usize) -> anyhow::Result<Inherited> {
    transfer::say(socket, "HELLO")?;
    let mut inherited = Inherited::default();
    let (mut receiving, mut decoding) = (Duration::ZERO, Duration::ZERO);
    for index in 0..=shards {
        let started = std::time::Instant::now();
        let (stream, fds) = transfer::recv_stream(socket, STREAM_TIMEOUT)?;
        let received = std::time::Instant::now();
        let h = handover::decode(&stream)?;
        (receiving, decoding) = (
            receiving + (received - started),
            decoding + received.elapsed(),
        );
        anyhow::ensure!(
            usize::from(h.shards) == shards && usize::from(h.shard) == index,
            "stream {index}: written by shard {} of {}, this process runs {shards} shards",
            h.shard,
            h.shards
        );
        let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut take = |fd: u32| fds.get_mut(fd as usize).and_then(Option::take);
        let mut shard = InheritedShard::default();
        // Listeners and bus records are taken out; the rest stays in the decoded vector
        // (no second copy of a stream's records: they are tens of megabytes at 1 M).
        let mut records = h.records;
        let mut kept = 0;
        for i in 0..records.len() {
            let record = std::mem::replace(&mut records[i], Record::Directory { key: 0, mask: 0 });
            match record {
                Record::Listener { fd, kind } => {
                    let fd = take(fd)
                        .ok_or_else(|| anyhow::anyhow!("a listener without its descriptor"))?;
                    match kind {
                        ListenerKind::Ws => shard.ws.push(fd),
                        ListenerKind::Wss => shard.wss.push(fd),
                        ListenerKind::Udp => shard.udp = Some(fd),
                        ListenerKind::Status => inherited.status = Some(fd),
                        ListenerKind::UdpAddr => inherited.udpaddr = Some(fd),
                    }
                }
                Record::Binding { device, user } => inherited.bus.bindings.push((device, user)),
                Record::Cluster {
                    links_up,
                    redis_synced,
                } => {
                    let cluster = inherited.cluster.get_or_insert_with(Default::default);
                    (cluster.links_up, cluster.redis_synced) = (links_up, redis_synced);
                }
                Record::Online { id, count } => {
                    let cluster = inherited.cluster.get_or_insert_with(Default::default);
                    cluster.online.push((id, count));
                }
                Record::Lease(lease) => {
                    let cluster = inherited.cluster.get_or_insert_with(Default::default);
                    cluster.leases.push(lease);
                }
                other => {
                    records[kept] = other;
                    kept += 1;
                }
            }
        }
        records.truncate(kept);
        shard.records = records;
        shard.fds = fds;
        if index < shards {
            inherited.shards.push(shard);
        }
    }
    inherited.bus.mobiles = mobiles_in_use(&inherited);
    tracing::info!(
        receiving_ms = receiving.as_secs_f64() * 1e3,
        decoding_ms = decoding.as_secs_f64() * 1e3,
        "upgrade: handover received"
    );
    Ok(inherited)
}

/// The handover socket, once what came over it was taken.
pub struct Confirm {
    socket: UnixStream,
}

/// The phones' mobile sub-ids in use, from the online phone connections handed over: the
/// truth, where the old bus's table could still hold the sub-id of a login closed at the
/// freeze (its logout may not have reached the bus before the bus's state was taken).
fn mobiles_in_use(inherited: &Inherited) -> Vec<(i64, u16)> {
    let mut used = std::collections::BTreeMap::<i64, u16>::new();
    for record in inherited.shards.iter().flat_map(|s| &s.records) {
        if let Record::WsConn(c) = record
            && c.stage == crate::shard::STAGE_ONLINE
            && c.id > 0
            && c.id % 16 != 0
        {
            *used.entry(c.id - c.id % 16).or_default() |= 1 << (c.id % 16);
        }
    }
    used.into_iter().collect()
}

impl Incoming {
    /// The socket (to confirm or refuse) and what was handed over.
    pub fn into_parts(self) -> (Confirm, Inherited) {
        (
            Confirm {
                socket: self.socket,
            },
            self.inherited,
        )
    }
}

/// What the old process said with its `GO`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Go {
    /// How long it stopped serving, milliseconds.
    pub stalled_ms: u64,
    /// Messages its frozen shards got and forwarded here.
    pub forwarded: u64,
    /// Messages they got and did not forward (counted there).
    pub dropped: u64,
}

impl Confirm {
    /// The node is built and held at its gate: says `READY`, takes the messages the old
    /// process's frozen shards got meanwhile (one stream per shard, given to `deliver`
    /// with the shard index; it returns how many it could not queue) and waits for `GO`.
    /// An error means the old process serves on (or is gone): this one must exit without
    /// serving.
    pub fn confirm(
        &self,
        shards: usize,
        deliver: &mut dyn FnMut(usize, Vec<Record>) -> usize,
    ) -> anyhow::Result<(Go, usize)> {
        transfer::say(&self.socket, "READY")?;
        let mut refused = 0;
        for index in 0..shards {
            let (stream, _) = transfer::recv_stream(&self.socket, GO_TIMEOUT)?;
            let held = handover::decode(&stream)?;
            anyhow::ensure!(
                usize::from(held.shard) == index,
                "held messages of shard {} where {index} was due",
                held.shard
            );
            refused += deliver(index, held.records);
        }
        let go = transfer::hear(&self.socket, GO_TIMEOUT)?;
        let mut words = go.strip_prefix("GO ").unwrap_or_default().split(' ');
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        let (Some(stalled_ms), Some(forwarded), Some(dropped)) = (number(), number(), number())
        else {
            anyhow::bail!("expected GO, got {go:?}");
        };
        let go = Go {
            stalled_ms,
            forwarded,
            dropped,
        };
        Ok((go, refused))
    }

    /// Refuses after the streams were read (the node could not start on them).
    pub fn refuse(&self, why: &str) {
        let _ = transfer::say(&self.socket, &format!("REFUSE {why}"));
    }
}
