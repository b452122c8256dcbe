//! Starting and stopping a node: listeners, the bus sidecar, one glommio executor per
//! core, and the signal-driven drain. An upgrade's steps on a node (and what a new
//! process was handed) are `handover`'s.
//!
//! Order: bind every socket first (so a bad address fails before anything runs, and a
//! port 0 in tests is resolved once for all shards), then the sidecar, then the shards.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bus::messages::{AdminRequest, ShardInbox, ToBus, ToShard, Wake};
use crossbeam_channel::{Receiver, Sender, bounded};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::metrics::NodeMetrics;
use crate::platform::{HttpPlatform, Platform};
use crate::poller::{Poller, Waker};
use crate::shard::{self, ShardParts, Startup};
use crate::status::{self, StatusServer, UdpAddrServer};

mod handover;
pub use handover::{Gate, Inherited, InheritedShard};

/// Where an upgrade asks the bus sidecar for its state (issue 15).
enum BusExport {
    /// The embedded bus: bindings (and mobile ids, rebuilt by the new process).
    Embedded(Sender<Sender<bus::embedded::Snapshot>>),
    /// The cluster sidecar: online counts and leases; told again on a rollback.
    Cluster(Sender<bus::cluster::Export>),
}

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
    /// WebSocket-over-TLS addresses actually bound.
    pub wss_addrs: Vec<SocketAddr>,
    /// The TLS settings (reloaded from their files while the node runs).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
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
    /// The status and `udpaddr` endpoints' thread.
    endpoints: Option<crate::endpoints::Endpoints>,
    admin: Sender<AdminRequest>,
    stop: Option<Sender<()>>,
    platform_workers: Vec<JoinHandle<()>>,
    /// Cluster mode: ZooKeeper discovery of msgbuses and this comet's registration.
    zookeeper: Option<crate::cluster::ZooKeeper>,
    /// Where an upgrade asks the bus sidecar for its state.
    export: BusExport,
    /// Copies of the status and `udpaddr` listeners, for an upgrade.
    status_fd: Option<OwnedFd>,
    udpaddr_fd: Option<OwnedFd>,
    /// Shut until a new process of an upgrade may serve.
    gate: Arc<Gate>,
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

/// Every socket of a node, bound before anything runs.
struct Sockets {
    /// Each shard's WebSocket listeners (one per address).
    listeners: Vec<Vec<OwnedFd>>,
    ws_addrs: Vec<SocketAddr>,
    wss_addrs: Vec<SocketAddr>,
    status: OwnedFd,
    status_addr: SocketAddr,
    /// Each shard's UDP socket (when serving UDP).
    udp: Vec<Option<OwnedFd>>,
    udp_addr: Option<SocketAddr>,
    udpaddr: Option<OwnedFd>,
    udpaddr_http: Option<SocketAddr>,
}

impl Sockets {
    /// Binds every listener and socket for `n` shards (a bad address fails here).
    fn bind(config: &Config, n: usize) -> anyhow::Result<Sockets> {
        let mut listeners: Vec<Vec<OwnedFd>> = (0..n).map(|_| Vec::new()).collect();
        let mut ws_addrs = Vec::new();
        for &addr in config.ws_addrs.iter().filter(|_| config.ws) {
            let (bound, fds) =
                bind_all(addr, n).map_err(|e| anyhow::anyhow!("WebSocket listener {addr}: {e}"))?;
            ws_addrs.push(bound);
            for (i, fd) in fds.into_iter().enumerate() {
                listeners[i].push(fd);
            }
        }
        // TLS listeners come after the plain ones (the shards tell them apart by index).
        let mut wss_addrs = Vec::new();
        for &addr in config.tls_addrs.iter().filter(|_| config.ws) {
            let (bound, fds) = bind_all(addr, n)
                .map_err(|e| anyhow::anyhow!("WebSocket TLS listener {addr}: {e}"))?;
            wss_addrs.push(bound);
            for (i, fd) in fds.into_iter().enumerate() {
                listeners[i].push(fd);
            }
        }
        let status = status::bind(config.status_addr)
            .map_err(|e| anyhow::anyhow!("status listener {}: {e}", config.status_addr))?;
        let status_addr = shard::local_addr(status.as_raw_fd())?;
        let mut sockets = Sockets {
            listeners,
            ws_addrs,
            wss_addrs,
            status,
            status_addr,
            udp: (0..n).map(|_| None).collect(),
            udp_addr: None,
            udpaddr: None,
            udpaddr_http: None,
        };
        if config.udp {
            sockets.bind_udp(config)?;
        }
        Ok(sockets)
    }

    fn bind_udp(&mut self, config: &Config) -> anyhow::Result<()> {
        let first = shard::udp_socket(config.udp_addr)
            .map_err(|e| anyhow::anyhow!("UDP socket {}: {e}", config.udp_addr))?;
        let bound = shard::local_addr(first.as_raw_fd())?;
        self.udp[0] = Some(first);
        for fd in self.udp.iter_mut().skip(1) {
            *fd = Some(shard::udp_socket(bound)?);
        }
        self.udp_addr = Some(bound);
        let http = status::bind(config.udpaddr_http)
            .map_err(|e| anyhow::anyhow!("udpaddr listener {}: {e}", config.udpaddr_http))?;
        self.udpaddr_http = Some(shard::local_addr(http.as_raw_fd())?);
        self.udpaddr = Some(http);
        Ok(())
    }
}

/// The channels between the shards and the sidecars, made before any thread starts.
struct Wiring {
    parts: Vec<Option<ShardParts>>,
    inboxes: Vec<ShardInbox>,
    bus: Receiver<ToBus>,
    platform: Receiver<bus::messages::PlatformRequest>,
}

impl Wiring {
    /// One inbox, readiness set and mesh link per shard; every shard gets the bus and
    /// platform queues' senders (the receivers go to the sidecars).
    fn new(
        config: &Arc<Config>,
        metrics: &NodeMetrics,
        sockets: &mut Sockets,
        tls: &Option<Arc<crate::tls::ServerTls>>,
        mut handovers: Vec<Option<crate::shard::Handover>>,
        logins: &Option<Arc<bus::embedded::Logins>>,
    ) -> anyhow::Result<Wiring> {
        let (platform_tx, platform) = bounded(QUEUE);
        let (bus_tx, bus) = bounded(QUEUE);
        let n = config.cores.len();
        let mut parts = Vec::new();
        let mut inboxes = Vec::new();
        let listeners = std::mem::take(&mut sockets.listeners);
        let udp = std::mem::take(&mut sockets.udp);
        let pollers = (0..n)
            .map(|_| Poller::new())
            .collect::<std::io::Result<Vec<_>>>()?;
        let wakers: Vec<Waker> = pollers.iter().map(Poller::waker).collect();
        let meshes = crate::mesh::full(&wakers, MESH_QUEUE);
        let shards = listeners.into_iter().zip(udp).zip(pollers).zip(meshes);
        for (i, (((listeners, udp), poller), mesh)) in shards.enumerate() {
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
                mesh,
                bus: bus_tx.clone(),
                logins: logins.clone(),
                metrics: metrics.shards[i].clone(),
                listeners,
                tls_listener_from: config.ws_addrs.len() * usize::from(config.ws),
                tls: tls.clone(),
                udp,
                platform: platform_tx.clone(),
                handover: handovers.get_mut(i).and_then(Option::take),
            }));
        }
        Ok(Wiring {
            parts,
            inboxes,
            bus,
            platform,
        })
    }
}

/// What the bus sidecar thread needs.
struct SidecarStart<'a> {
    config: &'a Config,
    /// Embedded mode: where an upgrade asks for the bus state, and the login tables.
    export: Receiver<Sender<bus::embedded::Snapshot>>,
    logins: Option<Arc<bus::embedded::Logins>>,
    /// Cluster mode: the same.
    cluster_export: Receiver<bus::cluster::Export>,
    inherited: Option<bus::cluster::Inheritance>,
    inboxes: &'a [ShardInbox],
    requests: Receiver<ToBus>,
    admin: Receiver<AdminRequest>,
    stop: Receiver<()>,
    metrics: &'a NodeMetrics,
}

/// Starts the embedded or cluster sidecar; in cluster mode also returns the ZooKeeper
/// discovery handle.
fn start_sidecar(
    s: SidecarStart<'_>,
) -> anyhow::Result<(JoinHandle<()>, Option<crate::cluster::ZooKeeper>)> {
    let config = s.config;
    let Some(cluster) = &config.cluster else {
        // The shards hold these tables already: a second, empty one here would split them.
        let logins = s
            .logins
            .ok_or_else(|| anyhow::anyhow!("embedded bus started without its login tables"))?;
        let uploads = bus::embedded::UploadLog::open(&config.upload_log)
            .map_err(|e| anyhow::anyhow!("upload log {}: {e}", config.upload_log.display()))?;
        let handle = bus::sidecar::spawn_embedded(bus::sidecar::Embedded {
            stop: s.stop,
            shards: s.inboxes.to_vec(),
            requests: s.requests,
            admin: s.admin,
            uploads,
            export: s.export,
            logins,
        })?;
        return Ok((handle, None));
    };
    let (msgbus, zk) = crate::cluster::discovery(cluster)?;
    let redis = bus::redis_target::RedisTarget::parse(&cluster.redis, cluster.redis_auth.clone())?;
    let mut side = bus::cluster::ClusterConfig::new(redis, config.node_ip.clone(), msgbus);
    side.ws = config.ws;
    side.udp = config.udp;
    side.udp_timeout_secs = u64::from(config.udp_timeout_secs);
    side.link_secret = cluster.link_secret.clone();
    side.inherited = s.inherited;
    // Sessions live on the comet that holds them, so every comet delivers pushes to its
    // own devices: exactly once, with no pusher election (`--up` is moot).
    side.pusher = true;
    let handle = bus::cluster::spawn_cluster(bus::cluster::Cluster {
        shards: s.inboxes.to_vec(),
        requests: s.requests,
        admin: s.admin,
        stop: s.stop,
        export: s.cluster_export,
        config: side,
        metrics: s.metrics.cluster.clone().unwrap_or_default(),
    })?;
    Ok((handle, zk))
}

/// One glommio executor per core, each running [`shard::run`].
fn spawn_shards(config: &Config, startup: &Arc<Startup>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut shards = Vec::new();
    for (i, &core) in config.cores.iter().enumerate() {
        let startup = startup.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("shard-{i}"))
            .io_memory(1 << 20)
            .spawn(move || async move { shard::run(&startup, i) })
            .map_err(|e| anyhow::anyhow!("shard {i} on core {core}: {e}"))?;
        shards.push(std::thread::spawn(move || {
            if let Err(e) = handle.join() {
                tracing::error!(shard = i, "shard ended with an error: {e:?}");
            }
        }));
    }
    Ok(shards)
}

/// Runs `f` on a thread pinned to the cores no shard uses, when there are any: threads
/// inherit their creator's affinity, so sidecar threads created there start there (the
/// caller's own affinity is untouched).
fn on_sidecar_cores<T: Send>(config: &Config, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let cores = sidecar_cores(&config.cores);
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(cores) = &cores {
                let _ = tuning::cores::pin_current_thread_to(cores);
            }
            f()
        })
        .join()
    })
    .map_err(|_| anyhow::anyhow!("sidecar start panicked"))
}

impl Node {
    /// Binds, starts the sidecars and the shards; returns once they run.
    pub fn start(config: Config) -> anyhow::Result<Node> {
        Self::start_with(config, None)
    }

    /// As [`Node::start`], or, with `inherited`, on what an upgrade handed over: its
    /// sockets instead of new ones, its connections, sessions and bus state taken in, and
    /// the shards held at [`Node::open_gate`] until the old process has let go.
    pub fn start_with(config: Config, inherited: Option<Inherited>) -> anyhow::Result<Node> {
        let config = Arc::new(config);
        let n = config.cores.len();
        anyhow::ensure!(
            n > 0 && n <= 64,
            "between 1 and 64 shards are supported (got {n})"
        );
        let mut metrics = NodeMetrics::new(n);
        metrics.default_salt = config.default_salt;
        if config.cluster.is_some() {
            metrics.cluster = Some(Arc::new(bus::cluster::ClusterMetrics::default()));
        }
        let gate = Gate::new(inherited.is_none());
        let (mut sockets, handovers, restored, cluster_state) = match inherited {
            Some(mut inherited) => {
                let sockets = Sockets::inherit(&config, n, &mut inherited)?;
                let cluster_state = inherited.cluster_inheritance();
                let handovers = inherited
                    .shards
                    .into_iter()
                    .map(|s| Some((s.records, s.fds)))
                    .collect();
                (sockets, handovers, Some(inherited.bus), cluster_state)
            }
            None => (Sockets::bind(&config, n)?, Vec::new(), None, None),
        };
        let status_fd = sockets.status.try_clone().ok();
        let udpaddr_fd = sockets.udpaddr.as_ref().and_then(|f| f.try_clone().ok());
        let platform = match &config.platform_url {
            Some(url) => {
                Platform::Http(HttpPlatform::from_url(url).map_err(|e| anyhow::anyhow!(e))?)
            }
            None => Platform::Builtin {
                secret: config.salt.clone(),
            },
        };
        let tls = match &config.tls_files {
            Some((cert, key)) => {
                let tls = crate::tls::ServerTls::load(cert, key)
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
                tls.watch()?;
                Some(tls)
            }
            None => None,
        };
        let logins = config.cluster.is_none().then(|| {
            // Before any shard or the sidecar runs: `--bind` holds from the first login.
            let logins = restored
                .as_ref()
                .map_or_else(Default::default, bus::embedded::Logins::restore);
            for &(device, user) in &config.binds {
                logins.bind(device, user);
            }
            Arc::new(logins)
        });
        let wiring = Wiring::new(&config, &metrics, &mut sockets, &tls, handovers, &logins)?;
        let (export_tx, export_rx) = bounded(1);
        let (cluster_export_tx, cluster_export_rx) = bounded(1);
        let (admin_tx, admin_rx) = bounded(64);
        let (stop_tx, stop_rx) = bounded(0);
        let inboxes = wiring.inboxes;
        let platform_rx = wiring.platform;
        let platform_workers = on_sidecar_cores(&config, || {
            crate::platform::spawn(platform, 4, platform_rx, inboxes.clone())
        })??;
        let start = SidecarStart {
            config: &config,
            export: export_rx,
            logins,
            cluster_export: cluster_export_rx,
            inherited: cluster_state,
            inboxes: &inboxes,
            requests: wiring.bus,
            admin: admin_rx,
            stop: stop_rx,
            metrics: &metrics,
        };
        let (sidecar, zookeeper) = on_sidecar_cores(&config, || start_sidecar(start))??;
        let status = StatusServer {
            listener: sockets.status,
            metrics: metrics.clone(),
            admin: admin_tx.clone(),
            admin_token: config.admin_token.clone(),
        };
        let udpaddr = sockets.udpaddr.map(|listener| UdpAddrServer {
            listener,
            shards: inboxes.clone(),
            counters: metrics.http.clone(),
        });
        let endpoints = on_sidecar_cores(&config, || {
            crate::endpoints::spawn(status, udpaddr, gate.clone())
        })??;
        let startup = Arc::new(Startup {
            parts: Mutex::new(wiring.parts),
            gate: gate.clone(),
        });
        let shards = spawn_shards(&config, &startup)?;
        let mut node = Node {
            ws_addrs: sockets.ws_addrs,
            wss_addrs: sockets.wss_addrs,
            tls,
            status_addr: sockets.status_addr,
            udp_addr: sockets.udp_addr,
            udpaddr_http: sockets.udpaddr_http,
            platform_workers,
            zookeeper: None,
            metrics,
            inboxes,
            shards,
            sidecar: Some(sidecar),
            endpoints: Some(endpoints),
            admin: admin_tx,
            stop: Some(stop_tx),
            export: match config.cluster {
                None => BusExport::Embedded(export_tx),
                Some(_) => BusExport::Cluster(cluster_export_tx),
            },
            status_fd,
            udpaddr_fd,
            gate,
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
        if let Some(tls) = &self.tls {
            tls.stop();
        }
        // Leave ZooKeeper first, so nobody is sent here while we drain.
        drop(self.zookeeper.take());
        for inbox in &self.inboxes {
            let _ = inbox.send(ToShard::Shutdown);
        }
        for shard in self.shards.drain(..) {
            let _ = shard.join();
        }
        if let Some(endpoints) = self.endpoints.take() {
            endpoints.stop();
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
