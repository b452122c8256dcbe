//! One shard, the shell around its sans-IO core (`crate::core`): its listeners, sockets,
//! buffers and connection records, and the turn that moves bytes between them and the
//! core (which holds the sessions, the directory slice, connection lives, the UDP
//! table, the outbound bounds and the timer wheel).
//!
//! The loop in `run` is the only place that waits: in the poller's `epoll_wait` (socket
//! readiness, and wakes for the sidecars' inbox and the other shards' mesh queues) up to
//! the one-second tick. Each wake drains a batch (`turn`) and runs the synchronous
//! handlers in `ws`, `route`, `sessions` and `udp`; no handler waits.
//!
//! Invariants: a connection belongs to exactly one shard for its whole life; nothing here
//! is shared with another thread except through the mesh, the inbox and the counters.

mod conn;
mod handover;
mod held;
mod login;
mod net;
mod route;
mod run;
mod sessions;
pub mod tls;
mod tls_feed;
mod turn;
mod udp;
mod write;
mod ws;

pub(crate) use handover::STAGE_ONLINE;
pub use ws::PRELOGIN_MAX;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::messages::{ToBus, ToShard};
use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::core::ShardCore;
use crate::core::admission::SourceLimiter;
use crate::core::conn_limits::ConnLimits;
use crate::core::outbound::Outbound;
use crate::core::sessions::Handle;
use crate::core::terminal::Timeouts;
use crate::core::wheel::{Entry, Secs, Wheel};
use crate::logging::Throttle;
use crate::metrics::ShardMetrics;
use crate::msg::PeerMsg;
use crate::poller::{Poller, Readiness};
pub use conn::IdMap;
use conn::{Conn, Slab};

/// Token kinds in the top bits of a readiness token (bit 63 is the poller's).
const KIND_SHIFT: u32 = 60;
const KIND_CONN: u64 = 0;
const KIND_LISTENER: u64 = 1;
const KIND_UDP: u64 = 2;
/// Readiness of listeners and of connections not yet logged in handled per turn, after
/// everything else: a storm of connects or bad logins cannot make a turn long for the
/// logged-in sessions (the rest waits for the next turn, which comes at once).
const NEWCOMERS_PER_TURN: usize = 32;
/// A turn (or tick) longer than this is counted (`shard_slow_turns`) and logged.
const SLOW_TURN: Duration = Duration::from_millis(100);
/// Source addresses whose new-session rate one shard tracks per window.
const TRACKED_SOURCES: usize = 64 * 1024;
/// Messages taken from each other shard's queue per turn.
const PEER_BUDGET: usize = 1024;

fn listener_token(i: usize) -> u64 {
    (KIND_LISTENER << KIND_SHIFT) | i as u64
}

fn conn_token(slot: u32, generation: u32) -> u64 {
    (KIND_CONN << KIND_SHIFT) | (u64::from(generation) << 32) | u64::from(slot)
}

/// What a shard is given at start.
pub struct ShardParts {
    /// This shard's index (its place in the mesh).
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// The node's configuration.
    pub config: Arc<Config>,
    /// The readiness set (created before the thread, so sidecars and peers hold its waker).
    pub poller: Poller,
    /// Messages from the bus sidecar.
    pub inbox: Receiver<ToShard>,
    /// This shard's ends of the shard ↔ shard queues.
    pub mesh: crate::mesh::MeshLink,
    /// Requests to the bus sidecar.
    pub bus: Sender<ToBus>,
    /// The embedded bus's login tables, taken directly on login and logout (`None` in
    /// cluster mode: logins go to the cluster sidecar).
    pub logins: Option<Arc<bus::embedded::Logins>>,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// Bound listening sockets, one per WebSocket address (plain ones, then TLS ones).
    pub listeners: Vec<OwnedFd>,
    /// Listeners from this index on are TLS (`wss://`) listeners.
    pub tls_listener_from: usize,
    /// The TLS settings, when the node has TLS listeners.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The shard's bound UDP socket, when serving devices over UDP.
    pub udp: Option<OwnedFd>,
    /// Calls to the device platform.
    pub platform: Sender<bus::messages::PlatformRequest>,
    /// What an upgrade handed this shard (issue 15).
    pub handover: Option<Handover>,
}

/// A shard's records from an upgrade and the descriptors they name by index.
pub type Handover = (
    Vec<edge_proto::handover::Record>,
    Vec<Option<std::os::fd::OwnedFd>>,
);

/// The state of one shard.
pub struct Shard {
    index: usize,
    count: usize,
    config: Arc<Config>,
    /// The stage timeouts of every connection (from the config).
    timeouts: Timeouts,
    poller: Poller,
    inbox: Receiver<ToShard>,
    bus: Sender<ToBus>,
    logins: Option<Arc<bus::embedded::Logins>>,
    metrics: Arc<ShardMetrics>,
    mesh: crate::mesh::MeshLink,
    /// Reused: the mesh messages one turn takes.
    from_peers: Vec<PeerMsg>,
    /// Directory updates a full mesh queue refused; retried every turn (never dropped).
    peer_backlog: Vec<(usize, PeerMsg)>,
    listeners: Vec<OwnedFd>,
    /// Listeners from this index on are TLS listeners.
    tls_listener_from: usize,
    tls: Option<Arc<crate::tls::ServerTls>>,
    /// TLS state of the connections accepted on TLS listeners, by slot.
    tls_conns: std::collections::HashMap<u32, tls::TlsConn>,
    /// Reused buffers for TLS: ciphertext read, records being decrypted, plaintext sealed.
    tls_cipher: Vec<u8>,
    tls_incoming: Vec<u8>,
    tls_plain: Vec<u8>,
    udp: Option<udp::UdpSide>,
    platform: Sender<bus::messages::PlatformRequest>,
    conns: Slab<Conn>,
    /// The session index and this shard's directory slice (sans IO).
    core: ShardCore,
    /// Bytes queued for readers, and the bounds on them (sans IO).
    outbound: Outbound,
    wheel: Wheel,
    epoch: Instant,
    /// Seconds since `epoch`, read once per turn, tick and peer batch, not per frame: one
    /// `clock_gettime` per frame cost ~34 ns of the ~214 per relayed message (deadlines
    /// have one-second resolution, so a turn-old clock loses nothing).
    clock: Secs,
    /// Read buffer shared by every connection of the shard.
    scratch: Vec<u8>,
    /// A carry buffer whose bytes were taken back into `scratch`, kept for the next carry
    /// (boxed: it moves into a connection's `carry` as it is).
    #[allow(clippy::box_collection)]
    spare_carry: Option<Box<Vec<u8>>>,
    /// Assembly buffer for outgoing frames and server-built messages.
    out: Vec<u8>,
    ready: Vec<Readiness>,
    /// Readiness of listeners and not-yet-logged-in connections, taken
    /// [`NEWCOMERS_PER_TURN`] a turn.
    newcomers: VecDeque<Readiness>,
    /// Connections to read again next turn (their read budget ran out).
    again: Vec<(u32, u32)>,
    /// Scratch for the ids of a msgbus frame being resolved (kept for its capacity).
    route_ids: Vec<i64>,
    /// The UDP socket's read budget ran out with datagrams left: read it again next turn
    /// (edge-triggered: no new edge comes for those).
    udp_again: bool,
    /// Connections written to this turn, flushed at its end.
    dirty: Vec<(u32, u32)>,
    /// Outbox buffers for reuse (a connection holds one only while bytes are queued).
    /// Boxed because that is how a connection record holds its outbox (8 bytes, not 24).
    #[allow(clippy::vec_box)]
    buffers: Vec<Box<Vec<u8>>>,
    due: Vec<Entry>,
    /// Reused destination list (no allocation per relayed message).
    dests: Vec<i64>,
    /// Reused session list for delivery.
    slots: Vec<Handle>,
    /// Reused buffer for a relayed datagram (no allocation per forward message).
    relay: Vec<u8>,
    /// Descriptors closed at the end of the turn (not while its readiness may still name them).
    closing: Vec<OwnedFd>,
    draining: bool,
    done: bool,
    /// An upgrade is under way: sockets are not read, listeners not accepted.
    quiet: bool,
    /// An upgrade wrote this shard's state: nothing changes until it resumes or ends.
    frozen: bool,
    /// Bus and mesh messages that arrived while frozen, for a resume.
    held_while_frozen: Vec<ToShard>,
    held_peer_while_frozen: Vec<PeerMsg>,
    /// One slow-turn warning a second at most (the count of the others goes with it).
    slow_log: Throttle,
    /// One invariant warning a second at most.
    invariant_log: Throttle,
    /// One accept-error warning a second at most.
    accept_log: Throttle,
    /// Connections per source address and accepts per second (`core::conn_limits`).
    conn_limits: ConnLimits,
    /// Listeners that stopped accepting until the next tick (rate, or EMFILE).
    paused_listeners: Vec<usize>,
    /// When each upgraded connection that has not logged in yet was upgraded (for the
    /// login-time histogram); an entry lives from the upgrade to the login or the close.
    upgraded_at: std::collections::HashMap<u32, Instant>,
}

impl Shard {
    /// Builds the shard's state (no IO yet).
    pub fn new(parts: ShardParts) -> Self {
        let scratch_len = (2 * (parts.config.max_message + 14)).max(64 * 1024);
        let max_udp_sessions = parts.config.max_udp_sessions;
        let max_per_id = parts.config.max_sessions_per_device;
        let (rate, burst) = (
            parts.config.new_session_rate,
            parts.config.new_session_burst,
        );
        let conn_limits = ConnLimits::new(
            parts.config.max_conns_per_ip,
            parts.config.max_accept_rate,
            parts.listeners.len(),
        );
        let outbound = Outbound::new(parts.config.max_outbound, parts.config.max_outbound_shard);
        Shard {
            index: parts.index,
            count: parts.count,
            timeouts: Timeouts {
                handshake: parts.config.handshake_timeout_secs,
                login: parts.config.login_timeout_secs,
            },
            config: parts.config,
            poller: parts.poller,
            inbox: parts.inbox,
            bus: parts.bus,
            logins: parts.logins,
            metrics: parts.metrics,
            mesh: parts.mesh,
            from_peers: Vec::new(),
            peer_backlog: Vec::new(),
            listeners: parts.listeners,
            tls_listener_from: parts.tls_listener_from,
            tls: parts.tls,
            tls_conns: std::collections::HashMap::new(),
            tls_cipher: Vec::new(),
            tls_incoming: Vec::new(),
            tls_plain: Vec::new(),
            udp: parts.udp.map(|fd| {
                let per_shard = max_udp_sessions.div_ceil(parts.count.max(1));
                let limiter = SourceLimiter::new(rate, burst, TRACKED_SOURCES);
                udp::UdpSide::new(fd, per_shard, limiter, parts.index as u8)
            }),
            platform: parts.platform,
            conns: Slab::default(),
            core: ShardCore::new(parts.index, parts.count, max_per_id),
            outbound,
            wheel: Wheel::new(),
            epoch: Instant::now(),
            clock: 0,
            scratch: vec![0; scratch_len],
            spare_carry: None,
            out: Vec::with_capacity(4096),
            ready: Vec::with_capacity(256),
            newcomers: VecDeque::new(),
            again: Vec::new(),
            route_ids: Vec::new(),
            udp_again: false,
            dirty: Vec::new(),
            buffers: Vec::new(),
            due: Vec::new(),
            dests: Vec::with_capacity(64),
            slots: Vec::with_capacity(16),
            relay: Vec::with_capacity(2048),
            closing: Vec::new(),
            draining: false,
            done: false,
            quiet: false,
            frozen: false,
            held_while_frozen: Vec::new(),
            held_peer_while_frozen: Vec::new(),
            slow_log: Throttle::new(),
            invariant_log: Throttle::new(),
            accept_log: Throttle::new(),
            conn_limits,
            paused_listeners: Vec::new(),
            upgraded_at: std::collections::HashMap::new(),
        }
    }

    fn now(&self) -> Secs {
        self.clock
    }

    fn read_clock(&mut self) {
        self.clock = self.epoch.elapsed().as_secs() as Secs;
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The one-second tick: deadlines.
    fn on_tick(&mut self) {
        // Deadlines wait while an upgrade is under way: an expiry now could report to a
        // shard that already wrote its directory.
        if self.quiet || self.frozen {
            return;
        }
        let started = Instant::now();
        self.clock = started.saturating_duration_since(self.epoch).as_secs() as Secs;
        if !self.paused_listeners.is_empty() {
            // Newcomers: the loop does not park while any wait.
            for i in std::mem::take(&mut self.paused_listeners) {
                self.resume_listener(i);
            }
        }
        self.expire_due();
        // Storage freed since the last tick (a table that grew) goes back to the kernel.
        tuning::alloc::release_freed();
        self.metrics.timer_entries.store(
            i64::try_from(self.wheel.len()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.account_turn(started, "tick");
    }

    fn expire_due(&mut self) {
        let now = self.now();
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for entry in due.drain(..) {
            if entry.slot & udp::UDP_BIT != 0 {
                self.on_udp_due(entry, now);
                continue;
            }
            let Some(conn) = self.conns.get_gen_mut(entry.slot, entry.generation) else {
                continue;
            };
            if let Some(expired) = conn.terminal.expired(now) {
                conn.scheduled = 0;
                self.on_expired(entry.slot, expired);
            } else {
                let at = conn.terminal.deadline();
                conn.scheduled = at;
                self.wheel.insert(at, entry);
            }
        }
        self.due = due;
        self.flush_peer_backlog();
        self.flush_registrations();
    }

    /// Puts a connection's deadline on the wheel after its terminal moved it; only an
    /// earlier one costs an insert (a later one is found when the earlier entry is due).
    fn schedule(&mut self, slot: u32) {
        let generation = self.conns.generation(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let at = conn.terminal.deadline();
        let entry = Entry { slot, generation };
        self.wheel.schedule(&mut conn.scheduled, at, entry);
    }

    fn begin_shutdown(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        for listener in self.listeners.drain(..) {
            let _ = self.poller.unwatch(listener.as_raw_fd());
            self.closing.push(listener);
        }
        for slot in self.conns.slots() {
            self.close(slot, Some(edge_proto::ws::CLOSE_GOING_AWAY));
        }
        self.flush_registrations();
        self.done = true;
    }
}

pub use net::{local_addr, nodelay_for_accepted, tcp_listener, udp_socket};
pub use run::{Startup, run};
