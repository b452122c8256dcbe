//! A node's part in a zero-downtime upgrade (issue 15): what a new process was handed
//! ([`Inherited`]) and the sockets it rebuilds from it, the [`Gate`] its shards wait at,
//! and the old process's steps on its shards (quiesce, freeze, resume) and node-wide state
//! (`node_stream`). The order and the protocol are `crate::upgrade`'s.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::messages::ToShard;
use crossbeam_channel::bounded;

use super::{Node, Sockets};
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
}

impl Gate {
    /// A gate, open or shut.
    pub fn new(open: bool) -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(open),
            opened: std::sync::Condvar::new(),
        })
    }

    /// Blocks until the gate is open.
    pub fn wait(&self) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open {
            open = match self.opened.wait(open) {
                Ok(open) => open,
                Err(_) => return,
            };
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

    /// Whether this node can be upgraded in place (cluster mode cannot yet: its msgbus
    /// links, Redis leases and ZooKeeper registrations are not handed over).
    pub fn can_hand_over(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.export.is_some(),
            "cluster mode cannot be upgraded in place yet"
        );
        Ok(())
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

    /// Upgrade, old side, after a failure: every shard serves again.
    pub fn resume(&self) {
        for inbox in &self.inboxes {
            let _ = inbox.send(ToShard::Upgrade(bus::messages::Upgrade::Resume));
        }
    }

    /// Upgrade, old side: the node-wide stream (the status and `udpaddr` listeners, the
    /// embedded bus's state) and its descriptors. Cluster mode is refused (its sidecar's
    /// links, leases and registrations are not handed over yet).
    pub fn node_stream(&self, timeout: Duration) -> anyhow::Result<(Vec<u8>, Vec<i32>)> {
        use edge_proto::handover::{Handover, ListenerKind, Record};
        let export = self
            .export
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("cluster mode cannot be upgraded in place yet"))?;
        let (reply, snapshot) = bounded(1);
        export
            .send_timeout(reply, timeout)
            .map_err(|_| anyhow::anyhow!("the bus sidecar is gone"))?;
        let snapshot = snapshot
            .recv_timeout(timeout)
            .map_err(|_| anyhow::anyhow!("the bus sidecar did not answer in {timeout:?}"))?;
        let (mut records, mut fds) = (Vec::new(), Vec::new());
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
        // Mobile sub-ids are not sent: the new process takes them from the online phones.
        let bindings = snapshot.bindings.iter();
        records.extend(bindings.map(|&(device, user)| Record::Binding { device, user }));
        let n = self.inboxes.len() as u16;
        let handover = Handover {
            shard: n,
            shards: n,
            records,
        };
        Ok((edge_proto::handover::encode(&handover), fds))
    }
}
