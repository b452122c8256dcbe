//! The **cluster** bus sidecar: the node's shards talk to it exactly as to the embedded
//! one ([`crate::sidecar`]), but the state lives in Redis and messages cross comets through
//! msgbus links (docs/protocol.md §9, §7, §8).
//!
//! Threads (all queues bounded):
//!
//! ```text
//!  shards ─ToBus─▶ request thread ──────────────▶ Redis (logins, logouts, leases,
//!  admin  ───────▶   (select!, 200 ms tick)         session write-behind, admin push)
//!  msgbus list ──▶       │ frames (4096/link)
//!                        ▼
//!                  link threads (1 per msgbus × kind) ──tcp──▶ msgbus
//!                  link reader threads ──ToShard::Routes──▶ directory shard
//!  Redis pub/sub ─▶ subscriber thread ──Deliver/Binding/Kick──▶ every shard
//! ```
//!
//! - Start-up: `DEL Host:<lip>` + `PUBLISH PubKey "0|<lip>|0"` (docs/protocol.md §9.3), before any login;
//!   while Redis is unreachable it is retried and logins are refused with 9.
//! - Logins/logouts: [`mobile`] (leased mobile ids, online/offline scripts, bindings).
//! - Relays and uploads: upstream frames on a msgbus link ([`links`]); an upload is a
//!   relay with no ids (the msgbus acks the device with a downstream frame). While no
//!   msgbus link is up, ids held by this comet are delivered here at once and only the
//!   others wait for a link (held, bounded): terminals on one comet keep talking through a
//!   msgbus outage. (A device also logged in on another comet misses what is sent meanwhile
//!   there; a message held from before the outage may arrive after newer local ones.)
//! - UDP sessions: written behind ([`session`]).
//! - Admin: bindings belong to the HTTP platform; a push is a `PUBLISH PubCommonMsg:<id>`
//!   that every comet (this one included) delivers.
//!
//! Redis going away never stops the thread: logins get 9 at once, logouts are queued and
//! retried, session writes wait for the next flush (see [`ClusterMetrics`]).
//!
//! Does **not** hold terminal state (the shards do), register in ZooKeeper or discover
//! msgbuses (the keeper feeds [`MsgbusSource::Watch`]).

mod bindings;
mod links;
pub mod metrics;
mod mobile;
mod session;
mod store;
mod subscribe;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, never, select, tick};
use edge_proto::link::{CometKind, Upstream};
use edge_proto::pubsub::{write_common_msg, write_common_msg_channel};

pub use metrics::ClusterMetrics;
pub use mobile::handover::{Export, Inheritance, Snapshot};
pub use session::{rfc3339_nanos, session_json};

use crate::messages::upstream_frame;
use links::{LinkContext, Links};
use metrics::bump;
use mobile::Sessions;
use session::SessionWrites;
use store::Store;

use crate::messages::{Admin, AdminRequest, ShardInbox, ToBus, ToShard};
use crate::redis_target::RedisTarget;

/// How often sessions are flushed and deferred work retried.
pub const TICK: Duration = Duration::from_millis(200);
/// Default mobile-id lease.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// Where the msgbus addresses come from.
#[derive(Debug)]
pub enum MsgbusSource {
    /// A fixed list of `host:port`.
    Static(Vec<String>),
    /// The current list, each time it changes (ZooKeeper discovery).
    Watch(Receiver<Vec<String>>),
}

/// Cluster settings (validated by the caller from the command line).
#[derive(Debug)]
pub struct ClusterConfig {
    /// Where Redis is (`--rh`: an address, a URL or a Sentinel group).
    pub redis: RedisTarget,
    /// This comet's address (`--lip`): `Host:<lip>`, `PubKey` events, link source IP.
    pub node_ip: String,
    /// The node serves WebSocket terminals (opens WS-kind links).
    pub ws: bool,
    /// The node serves UDP devices (opens UDP-kind links).
    pub udp: bool,
    /// TTL of `sess:dev:*` records (`--uto`).
    pub udp_timeout_secs: u64,
    /// Deliver pushes addressed to devices (`--up`).
    pub pusher: bool,
    /// The msgbus addresses.
    pub msgbus: MsgbusSource,
    /// Mobile-id lease; refreshed every third of it.
    pub lease_ttl: Duration,
    /// The msgbus link secret (`--link-secret`); `None`: the original's open opening.
    pub link_secret: Option<Vec<u8>>,
    /// An upgrade's new process: the old one's state, taken in instead of the start-up
    /// reset (`Host:<lip>` is not deleted, the leases keep their tokens).
    pub inherited: Option<Inheritance>,
}

/// The cluster sidecar's inputs and outputs (mirrors [`crate::sidecar::Embedded`]).
pub struct Cluster {
    /// One inbox per shard, by shard index.
    pub shards: Vec<ShardInbox>,
    /// Requests from the shards.
    pub requests: Receiver<ToBus>,
    /// Requests from the admin endpoints.
    pub admin: Receiver<AdminRequest>,
    /// Closed (dropped) by the node to end the threads.
    pub stop: Receiver<()>,
    /// An upgrade's requests (issue 15).
    pub export: Receiver<Export>,
    /// Settings.
    pub config: ClusterConfig,
    /// Counters (keep a clone to read them).
    pub metrics: Arc<ClusterMetrics>,
}

impl ClusterConfig {
    /// Settings with the defaults: a WS node, `--uto` 40 s, no pusher, 60 s leases.
    pub fn new(redis: RedisTarget, node_ip: impl Into<String>, msgbus: MsgbusSource) -> Self {
        Self {
            redis,
            node_ip: node_ip.into(),
            ws: true,
            udp: false,
            udp_timeout_secs: 40,
            pusher: false,
            msgbus,
            lease_ttl: LEASE_TTL,
            link_secret: None,
            inherited: None,
        }
    }
}

/// Starts the cluster sidecar; it ends (with its helper threads) when `stop` closes or
/// every request sender is gone.
pub fn spawn_cluster(side: Cluster) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bus-cluster".into())
        .spawn(move || run(side))
}

/// The request thread's state.
struct Node {
    shards: Arc<[ShardInbox]>,
    store: Store,
    sessions: Sessions,
    writes: SessionWrites,
    links: Links,
    reset_pending: bool,
    /// The state was handed to an upgrade's new process: leases, resyncs and deferred
    /// logouts are its to run (until a [`Export::Resume`]).
    handed: bool,
    /// Logouts that arrived while handed: the new process logs those sessions out itself
    /// (it keeps only what its shards hold); run here only if the upgrade fails.
    held_logouts: Vec<i64>,
    metrics: Arc<ClusterMetrics>,
}

fn run(side: Cluster) {
    let Cluster {
        shards,
        requests,
        mut admin,
        stop,
        mut export,
        config,
        metrics,
    } = side;
    let shards: Arc<[ShardInbox]> = shards.into();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut store = Store::new(config.redis.clone(), metrics.clone());
    let subscriber = subscribe::spawn(subscribe::Subscriber {
        target: store.target().clone(),
        shards: shards.clone(),
        pusher: config.pusher,
        metrics: metrics.clone(),
        stop: stop_flag.clone(),
    });
    let mut kinds = Vec::new();
    if config.ws || !config.udp {
        kinds.push(CometKind::Ws);
    }
    if config.udp {
        kinds.push(CometKind::Udp);
    }
    let context = LinkContext {
        node_ip: config.node_ip.parse::<IpAddr>().ok(),
        shards: shards.clone(),
        metrics: metrics.clone(),
        secret: config.link_secret.as_deref().map(Arc::from),
    };
    metrics::set(
        &metrics.link_secret,
        usize::from(config.link_secret.is_some()),
    );
    let mut links = Links::new(context, kinds);
    let mut addresses = match config.msgbus {
        MsgbusSource::Static(list) => {
            links.set_addresses(list);
            never()
        }
        MsgbusSource::Watch(rx) => rx,
    };
    let mut sessions = Sessions::new(&config.node_ip, config.lease_ttl, metrics.clone());
    let reset_pending = match config.inherited {
        Some(inheritance) => {
            let gone = sessions.inherit(inheritance);
            tracing::info!(gone, "upgrade: online counts and leases taken over");
            false
        }
        None => sessions.reset(&mut store).is_err(),
    };
    let mut node = Node {
        shards,
        store,
        sessions,
        writes: SessionWrites::new(config.udp_timeout_secs, metrics.clone()),
        links,
        reset_pending,
        handed: false,
        held_logouts: Vec::new(),
        metrics,
    };
    let ticker = tick(TICK);
    loop {
        select! {
            recv(requests) -> msg => {
                let Ok(msg) = msg else { break };
                node.handle(msg);
                while let Ok(msg) = requests.try_recv() {
                    node.handle(msg);
                }
            }
            recv(admin) -> req => match req {
                Ok(req) => {
                    let answer = node.admin(req.admin);
                    let _ = req.reply.try_send(answer);
                }
                Err(_) => admin = never(),
            },
            recv(addresses) -> list => match list {
                Ok(list) => node.links.set_addresses(list),
                Err(_) => addresses = never(),
            },
            recv(export) -> req => match req {
                Ok(req) => node.export(req),
                Err(_) => export = never(),
            },
            recv(ticker) -> _ => node.on_tick(Instant::now()),
            recv(stop) -> _ => break,
        }
    }
    stop_flag.store(true, Ordering::Release);
    let _ = node.writes.flush(&mut node.store);
    node.links.shutdown();
    if let Ok(subscriber) = subscriber {
        let _ = subscriber.join();
    }
}

// === Node ===

impl Node {
    fn handle(&mut self, msg: ToBus) {
        match msg {
            ToBus::Login { conn, id } => {
                let result = self.login(id);
                match &result {
                    Ok(_) => bump(&self.metrics.logins_ok),
                    Err(mobile::REPLY_WRONG_ID) => bump(&self.metrics.logins_refused),
                    Err(_) => bump(&self.metrics.logins_redis_error),
                }
                let answer = ToShard::LoginDone { conn, result };
                let refused = match self.shards.get(usize::from(conn.shard)) {
                    Some(shard) => shard.send(answer).err(),
                    None => Some(answer),
                };
                if let Some(ToShard::LoginDone {
                    result: Ok(grant), ..
                }) = refused
                {
                    bump(&self.metrics.logins_undone);
                    self.sessions.undo(&mut self.store, &grant);
                }
            }
            ToBus::Logout { session } if self.handed => self.held_logouts.push(session),
            ToBus::Logout { session } => self.sessions.logout(&mut self.store, session),
            ToBus::Relay { src, frame } => self.relay(src, frame),
            // An upload goes to a msgbus with no ids (the msgbus publishes it).
            ToBus::Upload { src, message, .. } => match upstream_frame(src, &[], &message) {
                Some(frame) => self.send_upstream(src, frame),
                None => bump(&self.metrics.relay_dropped),
            },
            ToBus::UdpSession(state) => self.writes.update(state),
            ToBus::UdpSessionGone { sid, device } => self.writes.gone(sid, device),
        }
    }

    fn login(&mut self, id: i64) -> Result<crate::messages::LoginGrant, u8> {
        if self.reset_pending {
            self.reset_pending = self.sessions.reset(&mut self.store).is_err();
            if self.reset_pending {
                return Err(mobile::REPLY_SERVER_ERROR);
            }
        }
        self.sessions.login(&mut self.store, id)
    }

    /// Sends a shard's upstream frame on a msgbus link. With none up, what this comet
    /// holds is delivered here at once; only the rest waits for a link (those ids never
    /// reach a msgbus, so no duplicate).
    fn relay(&mut self, src: i64, frame: Vec<u8>) {
        if self.links.up() == 0 {
            let Some(up) = frame.get(4..).and_then(|p| Upstream::decode(p).ok()) else {
                return bump(&self.metrics.relay_dropped);
            };
            let (here, away): (Vec<i64>, Vec<i64>) =
                up.ids.iter().partition(|&id| self.sessions.is_online(id));
            if !here.is_empty() {
                bump(&self.metrics.relay_local);
                self.links.deliver_here(here, up.message);
                if !away.is_empty() {
                    let Some(rest) = upstream_frame(src, &away, up.message) else {
                        return bump(&self.metrics.relay_dropped);
                    };
                    self.send_upstream(src, rest);
                }
                return;
            }
        }
        self.send_upstream(src, frame);
    }

    /// Queues an upstream frame on a msgbus link (held while none is up).
    fn send_upstream(&mut self, src: i64, frame: Vec<u8>) {
        let kind = if src > 0 {
            CometKind::Ws
        } else {
            CometKind::Udp
        };
        self.links.send(kind, frame);
    }

    fn export(&mut self, req: Export) {
        match req {
            Export::Take(reply) => {
                let _ = self.writes.flush(&mut self.store);
                let (online, leases) = self.sessions.export();
                let snapshot = Snapshot {
                    online,
                    leases,
                    links_up: u32::try_from(self.links.up()).unwrap_or(u32::MAX),
                    redis_synced: !self.reset_pending && self.sessions.in_step(&self.store),
                };
                self.handed = true;
                let _ = reply.try_send(snapshot);
            }
            Export::Resume => {
                self.handed = false;
                for session in std::mem::take(&mut self.held_logouts) {
                    self.sessions.logout(&mut self.store, session);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.links.flush_pending();
        if self.handed {
            // The new process refreshes, resyncs and retries from here on.
            return;
        }
        if self.reset_pending {
            self.reset_pending = self.sessions.reset(&mut self.store).is_err();
        }
        let _ = self.writes.flush(&mut self.store);
        if !self.reset_pending {
            self.sessions.resync(&mut self.store, now);
        }
        self.sessions.retry_deferred(&mut self.store);
        self.sessions.refresh_due(&mut self.store, now);
        metrics::set(&self.metrics.links_up, self.links.up());
        metrics::set(&self.metrics.redis_up, usize::from(self.store.is_up()));
        metrics::set(&self.metrics.mobile_leases, self.sessions.leased());
    }

    fn admin(&mut self, admin: Admin) -> Result<String, String> {
        match admin {
            Admin::Bind { .. } | Admin::Unbind { .. } => {
                Err("cluster mode: bindings come from Redis (device:owner, u:<uid>:devices)".into())
            }
            Admin::Push { ids, msg_id, body } => {
                if ids.iter().all(|&id| id == 0) {
                    return Err("no valid destination id".into());
                }
                let mut channel = Vec::new();
                write_common_msg_channel(&mut channel, msg_id);
                let mut payload = Vec::with_capacity(body.len() + 16 * ids.len());
                write_common_msg(&mut payload, &ids, &body);
                self.store
                    .run(|con, _| {
                        redis::cmd("PUBLISH")
                            .arg(&channel)
                            .arg(&payload)
                            .query::<i64>(con)
                    })
                    .map(|n| format!("push of message {msg_id:#x} published to {n} comet(s)"))
                    .map_err(|e| format!("push not published: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let redis = RedisTarget::parse("127.0.0.1:1", None).unwrap();
        let config = ClusterConfig::new(redis, "10.0.0.1", MsgbusSource::Static(vec![]));
        assert!(config.ws && !config.udp && !config.pusher);
        assert_eq!(config.lease_ttl, LEASE_TTL);
    }
}
