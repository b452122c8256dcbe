//! Starting and stopping a node: listeners, the bus sidecar, one glommio executor per
//! core, and the signal-driven drain.
//!
//! Order: bind every socket first (so a bad address fails before anything runs, and a
//! port 0 in tests is resolved once for all shards), then the sidecar, then the shards.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bus::messages::{AdminRequest, ToShard, ShardInbox, Wake};
use crossbeam_channel::{Receiver, Sender, bounded};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::metrics::NodeMetrics;
use crate::platform::{HttpPlatform, Platform};
use crate::poller::{Poller, Waker};
use crate::shard::{self, ShardParts, Startup};
use crate::status::{self, StatusServer, UdpAddrServer};

/// Bound of every shard inbox and of the bus request queue.
const QUEUE: usize = 64 * 1024;
/// Bound of each shard → shard channel.
const MESH_QUEUE: usize = 4096;

impl Wake for Waker {
    fn wake(&self) {
        Waker::wake(self);
    }
}

/// A running node.
pub struct Node {
    /// WebSocket addresses actually bound (port 0 resolved).
    pub ws_addrs: Vec<SocketAddr>,
    /// Status address actually bound.
    pub status_addr: SocketAddr,
    /// UDP device address actually bound (when serving UDP).
    pub udp_addr: Option<SocketAddr>,
    /// `udpaddr` HTTP address actually bound (when serving UDP).
    pub udpaddr_http: Option<SocketAddr>,
    /// Every shard's counters.
    pub metrics: NodeMetrics,
    inboxes: Vec<ShardInbox>,
    shards: Vec<JoinHandle<()>>,
    sidecar: Option<JoinHandle<()>>,
    admin: Sender<AdminRequest>,
    stop: Option<Sender<()>>,
    platform_workers: Vec<JoinHandle<()>>,
    /// Cluster mode: ZooKeeper discovery of msgbuses and this comet's registration.
    zookeeper: Option<crate::cluster::ZooKeeper>,
}

fn bind_all(addr: SocketAddr, shards: usize) -> std::io::Result<(SocketAddr, Vec<OwnedFd>)> {
    let first = shard::tcp_listener(addr, 4096)?;
    let bound = shard::local_addr(first.as_raw_fd())?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(shard::tcp_listener(bound, 4096)?);
    }
    Ok((bound, all))
}

/// The online cores no shard runs on, if any.
fn sidecar_cores(shards: &[usize]) -> Option<tuning::cores::CoreList> {
    let online = tuning::cores::CoreList::online().ok()?;
    let free: tuning::cores::CoreList = online.iter().filter(|c| !shards.contains(c)).collect();
    (!free.is_empty()).then_some(free)
}

impl Node {
    /// Binds, starts the sidecar and the shards; returns once they run.
    pub fn start(config: Config) -> anyhow::Result<Node> {
        let config = Arc::new(config);
        let n = config.cores.len();
        anyhow::ensure!(
            n > 0 && n <= 64,
            "between 1 and 64 shards are supported (got {n})"
        );
        let mut metrics = NodeMetrics::new(n);
        if config.cluster.is_some() {
            metrics.cluster = Some(Arc::new(bus::cluster::ClusterMetrics::default()));
        }
        let mut per_shard: Vec<Vec<OwnedFd>> = (0..n).map(|_| Vec::new()).collect();
        let mut ws_addrs = Vec::new();
        if config.ws {
            for &addr in &config.ws_addrs {
                let (bound, fds) = bind_all(addr, n)
                    .map_err(|e| anyhow::anyhow!("WebSocket listener {addr}: {e}"))?;
                ws_addrs.push(bound);
                for (i, fd) in fds.into_iter().enumerate() {
                    per_shard[i].push(fd);
                }
            }
        }
        let status_fd = status::bind(config.status_addr)
            .map_err(|e| anyhow::anyhow!("status listener {}: {e}", config.status_addr))?;
        let status_addr = shard::local_addr(status_fd.as_raw_fd())?;
        let mut udp_fds: Vec<Option<OwnedFd>> = (0..n).map(|_| None).collect();
        let (mut udp_addr, mut udpaddr_http, mut udpaddr_fd) = (None, None, None);
        if config.udp {
            let first = shard::udp_socket(config.udp_addr)
                .map_err(|e| anyhow::anyhow!("UDP socket {}: {e}", config.udp_addr))?;
            let bound = shard::local_addr(first.as_raw_fd())?;
            udp_fds[0] = Some(first);
            for fd in udp_fds.iter_mut().skip(1) {
                *fd = Some(shard::udp_socket(bound)?);
            }
            udp_addr = Some(bound);
            let http = status::bind(config.udpaddr_http)
                .map_err(|e| anyhow::anyhow!("udpaddr listener {}: {e}", config.udpaddr_http))?;
            udpaddr_http = Some(shard::local_addr(http.as_raw_fd())?);
            udpaddr_fd = Some(http);
        }
        let platform = match &config.platform_url {
            Some(url) => {
                Platform::Http(HttpPlatform::from_url(url).map_err(|e| anyhow::anyhow!(e))?)
            }
            None => Platform::Builtin {
                secret: config.salt.clone(),
            },
        };
        let (platform_tx, platform_rx) = bounded(QUEUE);

        let (bus_tx, bus_rx) = bounded(QUEUE);
        let (admin_tx, admin_rx) = bounded(64);
        let mut parts = Vec::new();
        let mut inboxes = Vec::new();
        for (i, (listeners, udp)) in per_shard.into_iter().zip(udp_fds).enumerate() {
            let poller = Poller::new()?;
            let (tx, rx): (Sender<ToShard>, Receiver<ToShard>) = bounded(QUEUE);
            inboxes.push(ShardInbox {
                tx,
                waker: Arc::new(poller.waker()),
            });
            parts.push(Some(ShardParts {
                index: i,
                count: n,
                config: config.clone(),
                poller,
                inbox: rx,
                bus: bus_tx.clone(),
                metrics: metrics.shards[i].clone(),
                listeners,
                udp,
                platform: platform_tx.clone(),
            }));
        }
        drop(bus_tx);
        drop(platform_tx);
        // Sidecar threads (bus, platform, ZooKeeper) start pinned to the cores the shards
        // do not use, when there are any: threads inherit their creator's affinity, so they
        // are created from a thread pinned there (the caller's own affinity is untouched).
        let sidecar_cores = sidecar_cores(&config.cores);
        let pin = || {
            if let Some(cores) = &sidecar_cores {
                let _ = tuning::cores::pin_current_thread_to(cores);
            }
        };
        let platform_workers = std::thread::scope(|s| {
            s.spawn(|| {
                pin();
                crate::platform::spawn(platform, 4, platform_rx, inboxes.clone())
            })
            .join()
        })
        .map_err(|_| anyhow::anyhow!("platform start panicked"))??;
        let (stop_tx, stop_rx) = bounded(0);
        let mut zookeeper = None;
        let sidecar = std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<_> {
                pin();
                Ok(match &config.cluster {
                    None => {
                        let uploads =
                            bus::embedded::UploadLog::open(&config.upload_log).map_err(|e| {
                                anyhow::anyhow!("upload log {}: {e}", config.upload_log.display())
                            })?;
                        bus::sidecar::spawn_embedded(bus::sidecar::Embedded {
                            stop: stop_rx,
                            shards: inboxes.clone(),
                            requests: bus_rx,
                            admin: admin_rx,
                            uploads,
                            binds: config.binds.clone(),
                        })?
                    }
                    Some(cluster) => {
                        let (msgbus, zk) = crate::cluster::discovery(cluster)?;
                        zookeeper = zk;
                        let mut side = bus::cluster::ClusterConfig::new(
                            cluster.redis.clone(),
                            config.node_ip.clone(),
                            msgbus,
                        );
                        side.ws = config.ws;
                        side.udp = config.udp;
                        side.udp_timeout_secs = u64::from(config.udp_timeout_secs);
                        // Sessions live on the comet that holds them, so every comet delivers pushes
                        // to its own devices: exactly once, with no pusher election (`--up` is moot).
                        side.pusher = true;
                        let _ = cluster.pusher;
                        bus::cluster::spawn_cluster(bus::cluster::Cluster {
                            shards: inboxes.clone(),
                            requests: bus_rx,
                            admin: admin_rx,
                            stop: stop_rx,
                            config: side,
                            metrics: metrics.cluster.clone().unwrap_or_default(),
                        })?
                    }
                })
            })
            .join()
        })
        .map_err(|_| anyhow::anyhow!("sidecar start panicked"))??;
        let startup = Arc::new(Startup {
            parts: Mutex::new(parts),
            status: Mutex::new(Some(StatusServer {
                listener: status_fd,
                metrics: metrics.clone(),
                admin: admin_tx.clone(),
            })),
            udpaddr: Mutex::new(udpaddr_fd.map(|listener| UdpAddrServer {
                listener,
                shards: inboxes.clone(),
            })),
        });
        let mesh = MeshBuilder::full(n, MESH_QUEUE);
        let mut shards = Vec::new();
        for (i, &core) in config.cores.iter().enumerate() {
            let startup = startup.clone();
            let mesh = mesh.clone();
            let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
                .name(&format!("shard-{i}"))
                .io_memory(1 << 20)
                .spawn(move || shard::run(startup, mesh))
                .map_err(|e| anyhow::anyhow!("shard {i} on core {core}: {e}"))?;
            shards.push(std::thread::spawn(move || {
                if let Err(e) = handle.join() {
                    eprintln!("shard {i} ended with an error: {e:?}");
                }
            }));
        }
        let mut node = Node {
            ws_addrs,
            status_addr,
            udp_addr,
            udpaddr_http,
            platform_workers,
            zookeeper: None,
            metrics,
            inboxes,
            shards,
            sidecar: Some(sidecar),
            admin: admin_tx,
            stop: Some(stop_tx),
        };
        if let Some(cluster) = &config.cluster {
            node.zookeeper = crate::cluster::register(cluster, &config, &node, zookeeper)?;
        }
        Ok(node)
    }

    /// A sender for admin requests (what `/admin/*` uses).
    pub fn admin(&self) -> Sender<AdminRequest> {
        self.admin.clone()
    }

    /// Drains: every shard stops accepting, closes its terminals with 1001 and ends; then
    /// the sidecar ends. Returns when all threads are gone.
    pub fn shutdown(mut self) {
        // Leave ZooKeeper first, so nobody is sent here while we drain.
        drop(self.zookeeper.take());
        for inbox in &self.inboxes {
            let _ = inbox.send(ToShard::Shutdown);
        }
        for shard in self.shards.drain(..) {
            let _ = shard.join();
        }
        self.inboxes.clear();
        drop(self.admin);
        drop(self.stop.take());
        if let Some(sidecar) = self.sidecar.take() {
            let _ = sidecar.join();
        }
        // The shards held the platform queue's senders: the workers end with them.
        for worker in self.platform_workers.drain(..) {
            let _ = worker.join();
        }
    }
}
