//! Msgbus links (docs/protocol.md §8): one thread per link dials the msgbus (local side bound to
//! the node's `--lip`, so the msgbus keys it by that IP), does the one-byte handshake and
//! writes the frames queued for it; a reader thread per connection puts each downstream
//! frame (each id group's, when its ids span several directory keys) in the
//! [`crate::messages::RouteBatch`] of its directory shard, and sends each shard one
//! [`ToShard::Routes`] per read.
//!
//! A link that drops or fails to dial is re-dialled with a backoff (100 ms doubling to
//! 1 s, back to 100 ms once a link stayed up a second) — the original re-dialled only on a
//! ZooKeeper change (docs/protocol.md §10.4). [`Links::set_addresses`] follows the msgbus list: new
//! addresses get links, removed ones are closed. Frames go round-robin over the links
//! that are up (phone traffic on WS-kind links, device traffic on UDP-kind links when the
//! node has them); each link's queue is bounded. While no link is up (a msgbus restart)
//! or the queues are full, frames wait in order in a bounded hold queue (16 Ki frames;
//! overflow drops the oldest, counted) and go out as soon as a link is up again. Frames
//! still queued on a link when it drops are taken back into the hold queue, ahead of the
//! rest; only the batch being written when the connection failed (`relay_dropped`) and
//! the frames written that the msgbus's TCP never acknowledged (`relay_unacked_lost`,
//! known from `SIOCOUTQ` sampled after each write) are lost. A silent partition is
//! noticed within about 5 s (keepalive and `TCP_USER_TIMEOUT`, [`crate::net`]; on an
//! authenticated link also pings both ways and a 5 s read deadline); what is written in
//! that window is what `relay_unacked_lost` counts.
//!
//! Does **not** interpret messages: upstream frames are built by the caller, downstream
//! ones are routed by the shards.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select};
use edge_proto::link::{CometKind, DEFAULT_MAX_PAYLOAD, Downstream, LinkDecoder, LinkItem};
use edge_proto::link_auth;
use tracing::{info, warn};

use super::metrics::{ClusterMetrics, bump, bump_by};
use crate::messages::{RouteBatch, ShardInbox, ToShard, dir_shard, route_key};
use crate::net::{
    LinkWriter, SAMPLE_EVERY, SILENCE_LIMIT, read_exact_by, set_liveness, write_all_by,
};

/// Frames queued per link.
pub const LINK_QUEUE_FRAMES: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between dials: a msgbus that returns is found again within about a second.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Frames held while no msgbus link is up (the oldest go first when it overflows).
const PENDING_MAX: usize = 16 * 1024;
/// A link that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// Bytes written per batch of queued frames.
const BATCH_BYTES: usize = 256 * 1024;

/// What every link thread shares.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub node_ip: Option<IpAddr>,
    pub shards: Arc<[ShardInbox]>,
    pub metrics: Arc<ClusterMetrics>,
    /// The link secret: open with the challenge–response; `None`: the original's byte.
    pub secret: Option<Arc<[u8]>>,
}

/// One link as the request thread sees it.
struct Link {
    addr: String,
    kind: CometKind,
    tx: Sender<Vec<u8>>,
    /// The queue's other end, to take frames back while the link is down.
    rx: Receiver<Vec<u8>>,
    up: Arc<AtomicBool>,
    /// Dropped with the link: tells a worker waiting to re-dial to stop.
    _stop: Sender<()>,
}

/// The links of a node.
pub(crate) struct Links {
    context: LinkContext,
    kinds: Vec<CometKind>,
    links: Vec<Link>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
    /// Frames waiting for a link to come up, in order.
    pending: VecDeque<(CometKind, Vec<u8>)>,
}

impl Links {
    /// No links yet; `kinds` are opened per msgbus address.
    pub fn new(context: LinkContext, kinds: Vec<CometKind>) -> Self {
        Self {
            context,
            kinds,
            links: Vec::new(),
            threads: Vec::new(),
            next: 0,
            pending: VecDeque::new(),
        }
    }

    /// Follows the msgbus list: links to new addresses start, removed ones close.
    pub fn set_addresses(&mut self, mut addresses: Vec<String>) {
        addresses.sort();
        addresses.dedup();
        // Dropping a link's sender ends its thread (it closes the socket).
        self.links.retain(|l| addresses.contains(&l.addr));
        for addr in addresses {
            for kind in self.kinds.clone() {
                if !self.links.iter().any(|l| l.addr == addr && l.kind == kind) {
                    self.start(addr.clone(), kind);
                }
            }
        }
        self.threads.retain(|t| !t.is_finished());
    }

    fn start(&mut self, addr: String, kind: CometKind) {
        let (tx, rx) = bounded(LINK_QUEUE_FRAMES);
        let (stop_tx, stop) = bounded(0);
        let up = Arc::new(AtomicBool::new(false));
        let worker = LinkWorker {
            addr: addr.clone(),
            kind,
            rx: rx.clone(),
            stop,
            up: up.clone(),
            context: self.context.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("bus-link".into())
            .spawn(move || worker.run());
        if let Ok(thread) = spawned {
            self.threads.push(thread);
            self.links.push(Link {
                addr,
                kind,
                tx,
                rx,
                up,
                _stop: stop_tx,
            });
        } else {
            bump(&self.context.metrics.link_connect_errors);
        }
    }

    /// Queues `frame` on the next link that is up, preferring `kind`. While none is up,
    /// frames wait (bounded, in order) and go out when one comes back.
    pub fn send(&mut self, kind: CometKind, frame: Vec<u8>) {
        self.flush_pending();
        if !self.pending.is_empty() {
            return self.hold(kind, frame);
        }
        if let Err((kind, frame)) = self.try_link(kind, frame) {
            self.hold(kind, frame);
        }
    }

    /// Hands held frames to links that are up (called on every send and every tick).
    pub fn flush_pending(&mut self) {
        self.reclaim();
        while let Some((kind, frame)) = self.pending.pop_front() {
            if let Err(back) = self.try_link(kind, frame) {
                self.pending.push_front(back);
                return;
            }
        }
    }

    /// Takes the frames still queued on links that are down back into the hold queue,
    /// ahead of what is held (they were queued before it).
    fn reclaim(&mut self) {
        let mut back = Vec::new();
        for link in &self.links {
            if link.up.load(Ordering::Acquire) || link.rx.is_empty() {
                continue;
            }
            back.extend(link.rx.try_iter().map(|frame| (link.kind, frame)));
        }
        if back.is_empty() {
            return;
        }
        bump_by(&self.context.metrics.relay_reclaimed, back.len() as u64);
        for item in back.into_iter().rev() {
            self.pending.push_front(item);
        }
        while self.pending.len() > PENDING_MAX {
            self.pending.pop_front();
            bump(&self.context.metrics.relay_no_link);
        }
    }

    fn hold(&mut self, kind: CometKind, frame: Vec<u8>) {
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
            bump(&self.context.metrics.relay_no_link);
        }
        self.pending.push_back((kind, frame));
    }

    /// Puts `frame` on an up link; gives it back when none is up or its queue is full.
    fn try_link(&mut self, kind: CometKind, frame: Vec<u8>) -> Result<(), (CometKind, Vec<u8>)> {
        let count = self.links.len();
        let pick = (0..count)
            .map(|i| (self.next + i) % count)
            .filter(|&i| self.links[i].up.load(Ordering::Acquire))
            .min_by_key(|&i| self.links[i].kind != kind);
        let Some(index) = pick else {
            return Err((kind, frame));
        };
        self.next = (index + 1) % count;
        match self.links[index].tx.try_send(frame) {
            Ok(()) => {
                bump(&self.context.metrics.relays);
                Ok(())
            }
            Err(TrySendError::Full(frame)) => {
                bump(&self.context.metrics.relay_queue_full);
                Err((kind, frame))
            }
            Err(TrySendError::Disconnected(_)) => {
                bump(&self.context.metrics.relay_dropped);
                Ok(())
            }
        }
    }

    /// Hands `message` for `ids` straight to the directory shards of this node, as if it
    /// had come back from a msgbus (used while none is reachable, for ids held here).
    pub fn deliver_here(&self, ids: Vec<i64>, message: &[u8]) {
        let mut batches = Batches::new(self.context.shards.len());
        route_to_shards(ids, message, &mut batches);
        batches.send(&self.context);
    }

    /// Links that are up.
    pub fn up(&self) -> usize {
        self.links
            .iter()
            .filter(|l| l.up.load(Ordering::Acquire))
            .count()
    }

    /// Closes every link and waits for the threads.
    pub fn shutdown(&mut self) {
        self.links.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// === LinkWorker ===

struct LinkWorker {
    addr: String,
    kind: CometKind,
    rx: Receiver<Vec<u8>>,
    /// Disconnected when the link is removed.
    stop: Receiver<()>,
    up: Arc<AtomicBool>,
    context: LinkContext,
}

/// How a connected link ended.
enum Ended {
    /// The link was removed: stop.
    Removed,
    /// The connection failed: re-dial.
    Dropped,
}

impl LinkWorker {
    fn run(self) {
        let metrics = self.context.metrics.clone();
        let (addr, kind) = (self.addr.as_str(), self.kind);
        let mut backoff = BACKOFF_MIN;
        // Failed dials since the link was last up: the first is logged, then every tenth.
        let mut failures = 0u64;
        loop {
            match self.connect() {
                Ok(stream) => {
                    bump(&metrics.link_connects);
                    info!(msgbus = addr, ?kind, "msgbus link up");
                    failures = 0;
                    let since = Instant::now();
                    self.up.store(true, Ordering::Release);
                    let ended = self.serve(stream);
                    self.up.store(false, Ordering::Release);
                    if let Ended::Removed = ended {
                        info!(msgbus = addr, ?kind, "msgbus link removed");
                        return;
                    }
                    bump(&metrics.link_drops);
                    let up_for = since.elapsed();
                    warn!(
                        msgbus = addr,
                        ?kind,
                        ?up_for,
                        "msgbus link down; redialling"
                    );
                    if up_for >= STABLE_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(error) => {
                    bump(&metrics.link_connect_errors);
                    failures += 1;
                    if failures % 10 == 1 {
                        warn!(msgbus = addr, ?kind, %error, failures, ?backoff, "msgbus link cannot open");
                    }
                }
            }
            if !self.wait(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Waits `backoff` (what is queued stays for the request thread to take back); false
    /// when the link was removed.
    fn wait(&self, backoff: Duration) -> bool {
        matches!(
            self.stop.recv_timeout(backoff),
            Err(RecvTimeoutError::Timeout)
        )
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let target = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let stream = dial(target, self.context.node_ip)?;
        stream.set_nodelay(true)?;
        set_liveness(&stream)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        match &self.context.secret {
            Some(secret) => self.open_authenticated(&stream, secret, deadline)?,
            None => {
                let byte = [self.kind.handshake_byte()];
                write_all_by(&stream, &byte, deadline)?;
                let mut echo = [0u8; 1];
                read_exact_by(&stream, &mut echo, deadline)?;
                if echo != byte {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "handshake refused",
                    ));
                }
            }
        }
        // Both ends are ours on an authenticated link: the msgbus pings, so silence is death.
        let silence = self.context.secret.as_ref().map(|_| SILENCE_LIMIT);
        stream.set_read_timeout(silence)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(stream)
    }

    /// The comet's half of the challenge–response (`edge_proto::link_auth`).
    fn open_authenticated(
        &self,
        stream: &TcpStream,
        secret: &[u8],
        deadline: Instant,
    ) -> io::Result<()> {
        let nonce = crate::net::nonce()?;
        write_all_by(stream, &link_auth::hello(self.kind, &nonce), deadline)?;
        let mut challenge = [0u8; link_auth::CHALLENGE_LEN];
        read_exact_by(stream, &mut challenge, deadline)?;
        let Ok(proof) = link_auth::answer(secret, self.kind, &nonce, &challenge) else {
            bump(&self.context.metrics.link_auth_failures);
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the msgbus does not know the link secret",
            ));
        };
        write_all_by(stream, &proof, deadline)
    }

    fn serve(&self, stream: TcpStream) -> Ended {
        let (done_tx, done_rx) = bounded::<()>(0);
        let reader = match stream.try_clone() {
            Ok(read_half) => {
                let context = self.context.clone();
                std::thread::Builder::new()
                    .name("bus-link-rx".into())
                    .spawn(move || {
                        read_downstream(read_half, &context);
                        drop(done_tx);
                    })
                    .ok()
            }
            Err(_) => None,
        };
        let ended = if reader.is_some() {
            self.write_loop(&stream, &done_rx)
        } else {
            Ended::Dropped
        };
        let _ = stream.shutdown(Shutdown::Both);
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        ended
    }

    fn write_loop(&self, stream: &TcpStream, done: &Receiver<()>) -> Ended {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        let mut writer =
            LinkWriter::new(self.context.secret.is_some()).with_rtt(self.context.metrics.clone());
        loop {
            select! {
                recv(self.rx) -> frame => {
                    let Ok(frame) = frame else { return Ended::Removed };
                    batch.clear();
                    batch.extend_from_slice(&frame);
                    let mut frames = 1;
                    while batch.len() < BATCH_BYTES {
                        let Ok(more) = self.rx.try_recv() else { break };
                        batch.extend_from_slice(&more);
                        frames += 1;
                    }
                    let mut out = stream;
                    if out.write_all(&batch).is_err() {
                        bump_by(&self.context.metrics.relay_dropped, frames);
                        return self.dropped(&writer);
                    }
                    writer.wrote(stream, batch.len(), frames);
                }
                recv(done) -> _ => return self.dropped(&writer),
                // Idle: learn what the msgbus acknowledged since the last write, and ping.
                default(SAMPLE_EVERY) => {
                    if writer.idle(stream).is_err() {
                        return self.dropped(&writer);
                    }
                }
            }
        }
    }

    /// The link died: frames written but never acknowledged by the msgbus's TCP are lost
    /// (the original link protocol has no acknowledgements to resend them by).
    fn dropped(&self, writer: &LinkWriter) -> Ended {
        bump_by(
            &self.context.metrics.relay_unacked_lost,
            writer.unacked_frames(),
        );
        Ended::Dropped
    }
}

/// Connects to `target`, the local side bound to `node_ip` when it is of the same family.
fn dial(target: SocketAddr, node_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(target);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(ip) = node_ip.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Reads downstream frames until the connection ends.
fn read_downstream(mut stream: TcpStream, context: &LinkContext) {
    let mut decoder = LinkDecoder::new(DEFAULT_MAX_PAYLOAD);
    let mut buf = vec![0u8; DEFAULT_MAX_PAYLOAD + 4];
    let mut filled = 0;
    let mut batches = Batches::new(context.shards.len());
    loop {
        let Some(spare) = buf.get_mut(filled..) else {
            return;
        };
        match stream.read(spare) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        while let Some((item, used)) = buf.get(start..filled).and_then(|b| decoder.decode(b)) {
            match item {
                LinkItem::Frame([]) => {} // a ping from the msgbus
                LinkItem::Frame(payload) => on_frame(payload, context, &mut batches),
                LinkItem::Skipped { .. } => bump(&context.metrics.downstream_bad),
                LinkItem::Discarded => {}
            }
            start += used;
        }
        // One message per shard per read, not per frame.
        batches.send(context);
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// Adds one downstream payload to the batch of its directory shard (of each key group's
/// shard, when its ids span several keys).
fn on_frame(payload: &[u8], context: &LinkContext, batches: &mut Batches) {
    bump(&context.metrics.downstream_frames);
    let Ok(frame) = Downstream::decode(payload) else {
        return bump(&context.metrics.downstream_bad);
    };
    match frame.ids.len() {
        0 => bump(&context.metrics.downstream_bad),
        // Nearly every frame: one id, one key, taken as it came.
        1 => {
            let id = frame.ids.iter().next().unwrap_or_default();
            batches.shard_of(route_key(id)).push_payload(payload);
        }
        _ => route_to_shards(frame.ids.iter().collect(), frame.message, batches),
    }
}

/// One frame per directory key group of `ids`, in the batch of the key's shard.
fn route_to_shards(mut ids: Vec<i64>, message: &[u8], batches: &mut Batches) {
    ids.sort_by_key(|&id| route_key(id));
    for group in ids.chunk_by(|a, b| route_key(*a) == route_key(*b)) {
        let Some(&first) = group.first() else {
            continue;
        };
        // A group of a decoded frame re-encodes (fewer ids, the same message).
        let _ = batches.shard_of(route_key(first)).push(group, message);
    }
}

/// A [`RouteBatch`] per shard, filled from one read and sent at its end.
struct Batches(Vec<RouteBatch>);

impl Batches {
    fn new(shards: usize) -> Self {
        Self((0..shards.max(1)).map(|_| RouteBatch::default()).collect())
    }

    /// The batch of the directory shard of `key`.
    fn shard_of(&mut self, key: i64) -> &mut RouteBatch {
        let at = dir_shard(key, self.0.len());
        &mut self.0[at]
    }

    /// Sends every non-empty batch to its shard (a full inbox: its frames counted dropped).
    fn send(&mut self, context: &LinkContext) {
        for (at, batch) in self.0.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            let frames = batch.len() as u64;
            let shard = context.shards.get(at);
            if shard.is_none_or(|shard| shard.send(ToShard::Routes(batch)).is_err()) {
                bump_by(&context.metrics.route_dropped, frames);
            }
        }
    }
}
