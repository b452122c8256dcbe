//! A node's part in a zero-downtime upgrade (issue 15): what a new process was handed
//! ([`Inherited`]) and the sockets it rebuilds from it, the [`Gate`] its shards wait at,
//! and the old process's steps on its shards (quiesce, freeze, release, resume) and
//! node-wide state (`node_stream`: the embedded bus's bindings, or the cluster sidecar's
//! online counts and leases). The order and the protocol are `crate::upgrade`'s.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::messages::ToShard;
use crossbeam_channel::bounded;

use super::{BusExport, Node, Sockets};
use crate::config::Config;
use crate::{shard, status};

/// What a new process was handed by the old one in an upgrade (issue 15).
#[derive(Default)]
pub struct Inherited {
    /// Per shard, by index.
    pub shards: Vec<InheritedShard>,
    /// The status listener.
    pub status: Option<OwnedFd>,
    /// The `udpaddr` listener.
    pub udpaddr: Option<OwnedFd>,
    /// The embedded bus's state.
    pub bus: bus::embedded::Snapshot,
    /// The cluster sidecar's state (cluster mode).
    pub cluster: Option<bus::cluster::Snapshot>,
}

impl Inherited {
    /// The cluster sidecar's start: the old one's state, and the sessions per id the
    /// shards were handed live (online connections, logged-in UDP sessions) to keep of it.
    pub fn cluster_inheritance(&self) -> Option<bus::cluster::Inheritance> {
        let snapshot = self.cluster.clone()?;
        let mut live = std::collections::HashMap::<i64, u32>::new();
        for record in self.shards.iter().flat_map(|s| &s.records) {
            let id = match record {
                edge_proto::handover::Record::WsConn(c) if c.stage == shard::STAGE_ONLINE => c.id,
                edge_proto::handover::Record::UdpSession(u) => u.device,
                _ => 0,
            };
            if id != 0 {
                *live.entry(id).or_default() += 1;
            }
        }
        Some(bus::cluster::Inheritance { snapshot, live })
    }
}

/// One shard's part of an [`Inherited`].
#[derive(Default)]
pub struct InheritedShard {
    /// Its plain WebSocket listeners, in the order of `--ports`.
    pub ws: Vec<OwnedFd>,
    /// Its TLS listeners, in the order of `--tls-ports`.
    pub wss: Vec<OwnedFd>,
    /// Its UDP socket.
    pub udp: Option<OwnedFd>,
    /// Its other records (connections, UDP sessions, directory).
    pub records: Vec<edge_proto::handover::Record>,
    /// The descriptors the records name, by index (taken as they are used).
    pub fds: Vec<Option<OwnedFd>>,
}

/// Holds the shards before their first turn until the node may serve: a new process of an
/// upgrade opens it once the old one has let go (issue 15).
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    /// Per shard: what the old process's frozen shard held, delivered before the first
    /// turn (so before anything this process received itself).
    released: Mutex<Vec<Vec<ToShard>>>,
}

impl Gate {
    /// A gate, open or shut.
    pub fn new(open: bool) -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(open),
            opened: std::sync::Condvar::new(),
            released: Mutex::new(Vec::new()),
        })
    }

    /// Blocks until the gate is open.
    pub fn wait(&self) {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.wait_unless(&never, Duration::from_secs(3600));
    }

    /// Blocks until the gate is open (true) or `stop` is set (false), looking at `stop`
    /// every `poll`: for a thread that must also end when a start fails before the gate
    /// opens. A poisoned gate counts as open, as in [`Self::wait`].
    pub fn wait_unless(&self, stop: &std::sync::atomic::AtomicBool, poll: Duration) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return true;
        };
        while !*open {
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return false;
            }
            open = match self.opened.wait_timeout(open, poll) {
                Ok((open, _)) => open,
                Err(_) => return true,
            };
        }
        true
    }

    /// Queues `msg` for shard `shard`'s first turn.
    fn hold(&self, shard: usize, msg: ToShard) {
        if let Ok(mut released) = self.released.lock() {
            if released.len() <= shard {
                released.resize_with(shard + 1, Vec::new);
            }
            released[shard].push(msg);
        }
    }

    /// What shard `shard` delivers before its first turn.
    pub fn take_released(&self, shard: usize) -> Vec<ToShard> {
        match self.released.lock() {
            Ok(mut released) => released
                .get_mut(shard)
                .map(std::mem::take)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Opens the gate.
    pub fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
        }
        self.opened.notify_all();
    }
}

impl Sockets {
    /// The sockets an upgrade handed over: every listener and UDP socket as the old
    /// process bound them (so no connection attempt is refused), and the status and
    /// `udpaddr` listeners. Counts that do not match this configuration are refused.
    pub(super) fn inherit(
        config: &Config,
        n: usize,
        inherited: &mut Inherited,
    ) -> anyhow::Result<Sockets> {
        anyhow::ensure!(
            inherited.shards.len() == n,
            "the old process ran {} shards, this one runs {n}",
            inherited.shards.len()
        );
        anyhow::ensure!(
            inherited.cluster.is_some() == config.cluster.is_some(),
            "the old process ran in {} mode, this one in the other",
            if inherited.cluster.is_some() {
                "cluster"
            } else {
                "embedded"
            }
        );
        let mut listeners = Vec::with_capacity(n);
        let mut udp = Vec::with_capacity(n);
        let (plain, tls) = (
            config.ws_addrs.len() * usize::from(config.ws),
            config.tls_addrs.len() * usize::from(config.ws),
        );
        for shard in &mut inherited.shards {
            anyhow::ensure!(
                shard.ws.len() == plain
                    && shard.wss.len() == tls
                    && shard.udp.is_some() == config.udp,
                "the old process's listeners do not match this configuration"
            );
            let mut fds = std::mem::take(&mut shard.ws);
            fds.append(&mut shard.wss);
            for fd in &fds {
                shard::nodelay_for_accepted(fd.as_raw_fd())?;
            }
            listeners.push(fds);
            udp.push(shard.udp.take());
        }
        let addrs = |range: std::ops::Range<usize>| -> anyhow::Result<Vec<SocketAddr>> {
            let first = listeners.first().map(Vec::as_slice).unwrap_or_default();
            range
                .map(|i| Ok(shard::local_addr(first[i].as_raw_fd())?))
                .collect()
        };
        let (ws_addrs, wss_addrs) = (addrs(0..plain)?, addrs(plain..plain + tls)?);
        let status = match inherited.status.take() {
            Some(fd) => fd,
            None => status::bind(config.status_addr)?,
        };
        let status_addr = shard::local_addr(status.as_raw_fd())?;
        let udp_addr = match udp.first() {
            Some(Some(fd)) => Some(shard::local_addr(fd.as_raw_fd())?),
            _ => None,
        };
        let udpaddr = inherited.udpaddr.take();
        let udpaddr_http = match &udpaddr {
            Some(fd) => Some(shard::local_addr(fd.as_raw_fd())?),
            None => None,
        };
        Ok(Sockets {
            listeners,
            ws_addrs,
            wss_addrs,
            status,
            status_addr,
            udp,
            udp_addr,
            udpaddr,
            udpaddr_http,
        })
    }
}

impl Node {
    /// Lets the shards serve (a new process of an upgrade, once the old one let go).
    pub fn open_gate(&self) {
        self.gate.open();
    }

    /// Cluster mode, new process, before it confirms: waits (until `deadline`) for its
    /// ZooKeeper nodes to be registered and as many msgbus links up as the old process
    /// had, so that from the confirmation on every msgbus sends here (to the newest link)
    /// and the comet is never missing from ZooKeeper. Returns what is still missing.
    pub fn wait_joined(&self, links: u32, deadline: std::time::Instant) -> Option<String> {
        let metrics = self.metrics.cluster.as_ref()?;
        loop {
            // Counted as each link comes up (the `links_up` gauge is sampled every tick).
            let up = metrics
                .link_connects
                .load(std::sync::atomic::Ordering::Relaxed);
            let registered = self.zookeeper.as_ref().is_none_or(|zk| zk.registered());
            let missing = match (up >= u64::from(links), registered) {
                (true, true) => return None,
                (false, _) => format!("{up} of {links} msgbus links up"),
                (true, false) => "ZooKeeper nodes not registered".to_owned(),
            };
            if std::time::Instant::now() >= deadline {
                return Some(missing);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Old process, after `GO`: leaves ZooKeeper at once (the new process's nodes are
    /// registered; the old ones would otherwise linger a session timeout).
    pub fn leave_zookeeper(&mut self) {
        if let Some(zk) = self.zookeeper.take() {
            zk.leave();
        }
    }

    /// Upgrade, old side, once the new process confirmed: each frozen shard's held
    /// messages that the new one can deliver, by shard index.
    pub fn release(&self, timeout: Duration) -> anyhow::Result<Vec<bus::messages::Released>> {
        let pushes = matches!(self.export, BusExport::Embedded(_));
        let mut replies = Vec::new();
        for inbox in &self.inboxes {
            let (reply, released) = bounded(1);
            let step = bus::messages::Upgrade::Release { pushes, reply };
            anyhow::ensure!(
                inbox.send(ToShard::Upgrade(step)).is_ok(),
                "a shard's inbox is full or gone"
            );
            replies.push(released);
        }
        let deadline = std::time::Instant::now() + timeout;
        replies
            .iter()
            .map(|r| {
                r.recv_deadline(deadline)
                    .map_err(|_| anyhow::anyhow!("a shard did not answer in {timeout:?}"))
            })
            .collect()
    }

    /// Upgrade, new side, before the gate opens: queues what shard `shard` of the old
    /// process held for delivery by the shards' first turns; returns the records that are
    /// not messages (none, from a process of ours).
    pub fn deliver_released(
        &self,
        shard: usize,
        records: Vec<edge_proto::handover::Record>,
    ) -> usize {
        let mut refused = 0;
        let n = self.inboxes.len();
        for record in records {
            let edge_proto::handover::Record::Relay(relay) = record else {
                refused += 1;
                continue;
            };
            let payload = match relay.push {
                None => bus::messages::Payload::Raw(relay.body),
                Some(msg_id) => bus::messages::Payload::Push {
                    msg_id,
                    body: relay.body.into(),
                },
            };
            let ids: Arc<[i64]> = relay.ids.into();
            let targets = match relay.everywhere {
                true => 0..n,
                false => shard.min(n - 1)..shard.min(n - 1) + 1,
            };
            for target in targets {
                let msg = ToShard::Deliver {
                    ids: ids.clone(),
                    payload: payload.clone(),
                };
                self.gate.hold(target, msg);
            }
        }
        refused
    }

    /// Upgrade, old side: every shard stops reading sockets and accepting; returns once
    /// all have (within `timeout`).
    pub fn quiesce(&self, timeout: Duration) -> anyhow::Result<()> {
        let (done, quiet) = bounded(self.inboxes.len());
        for inbox in &self.inboxes {
            let step = bus::messages::Upgrade::Quiesce { done: done.clone() };
            anyhow::ensure!(
                inbox.send(ToShard::Upgrade(step)).is_ok(),
                "a shard's inbox is full or gone"
            );
        }
        let deadline = std::time::Instant::now() + timeout;
        for _ in &self.inboxes {
            quiet
                .recv_deadline(deadline)
                .map_err(|_| anyhow::anyhow!("a shard did not quiesce in {timeout:?}"))?;
        }
        Ok(())
    }

    /// Upgrade, old side: every shard's handover stream and the descriptors it names,
    /// by shard index; the shards then wait for [`Node::resume`] or the end.
    pub fn freeze(&self, timeout: Duration) -> anyhow::Result<Vec<bus::messages::Frozen>> {
        let mut replies = Vec::new();
        for inbox in &self.inboxes {
            let (reply, frozen) = bounded(1);
            let step = bus::messages::Upgrade::Freeze { reply };
            anyhow::ensure!(
                inbox.send(ToShard::Upgrade(step)).is_ok(),
                "a shard's inbox is full or gone"
            );
            replies.push(frozen);
        }
        let deadline = std::time::Instant::now() + timeout;
        replies
            .iter()
            .map(|r| {
                r.recv_deadline(deadline)
                    .map_err(|_| anyhow::anyhow!("a shard did not freeze in {timeout:?}"))
            })
            .collect()
    }

    /// Upgrade, old side, after a failure: every shard serves again, and the cluster
    /// sidecar takes up its leases, resyncs and logouts.
    pub fn resume(&self) {
        for inbox in &self.inboxes {
            let _ = inbox.send(ToShard::Upgrade(bus::messages::Upgrade::Resume));
        }
        if let BusExport::Cluster(export) = &self.export {
            let _ = export.send_timeout(bus::cluster::Export::Resume, Duration::from_secs(1));
        }
    }

    /// Upgrade, old side: the node-wide stream (the status and `udpaddr` listeners, the
    /// bus sidecar's state) and its descriptors.
    pub fn node_stream(&self, timeout: Duration) -> anyhow::Result<(Vec<u8>, Vec<i32>)> {
        use edge_proto::handover::{Handover, ListenerKind, Record};
        let mut records = self.bus_records(timeout)?;
        let mut fds = Vec::new();
        for (fd, kind) in [
            (self.status_fd.as_ref(), ListenerKind::Status),
            (self.udpaddr_fd.as_ref(), ListenerKind::UdpAddr),
        ] {
            if let Some(fd) = fd {
                records.push(Record::Listener {
                    fd: fds.len() as u32,
                    kind,
                });
                fds.push(fd.as_raw_fd());
            }
        }
        let n = self.inboxes.len() as u16;
        let handover = Handover {
            shard: n,
            shards: n,
            records,
        };
        Ok((edge_proto::handover::encode(&handover), fds))
    }
}

impl Node {
    /// The bus sidecar's state as handover records.
    fn bus_records(&self, timeout: Duration) -> anyhow::Result<Vec<edge_proto::handover::Record>> {
        use edge_proto::handover::Record;
        let gone = || anyhow::anyhow!("the bus sidecar is gone");
        let late = || anyhow::anyhow!("the bus sidecar did not answer in {timeout:?}");
        match &self.export {
            BusExport::Embedded(export) => {
                let (reply, snapshot) = bounded(1);
                export.send_timeout(reply, timeout).map_err(|_| gone())?;
                let snapshot = snapshot.recv_timeout(timeout).map_err(|_| late())?;
                // Mobile sub-ids are not sent: the new process takes them from the online
                // phones.
                let bindings = snapshot.bindings.into_iter();
                Ok(bindings
                    .map(|(device, user)| Record::Binding { device, user })
                    .collect())
            }
            BusExport::Cluster(export) => {
                let (reply, snapshot) = bounded(1);
                let take = bus::cluster::Export::Take(reply);
                export.send_timeout(take, timeout).map_err(|_| gone())?;
                let snapshot = snapshot.recv_timeout(timeout).map_err(|_| late())?;
                let mut records = vec![Record::Cluster {
                    links_up: snapshot.links_up,
                    redis_synced: snapshot.redis_synced,
                }];
                let online = snapshot.online.into_iter();
                records.extend(online.map(|(id, count)| Record::Online { id, count }));
                records.extend(snapshot.leases.into_iter().map(Record::Lease));
                Ok(records)
            }
        }
    }
}
