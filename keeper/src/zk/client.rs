//! One ZooKeeper client at a time for a sidecar: connecting with backoff, turning the
//! client's state changes into session events, and replacing a client that is dead.
//!
//! Owns: the `zookeeper::ZooKeeper` object, its generation number (events of a replaced
//! client are ignored), the wake channel its listener and watches write into, and the
//! reconnect backoff. Does **not** own: any node or watch bookkeeping (the `core` machines).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{info, warn};
use zookeeper::{WatchedEvent, ZkError, ZkState, ZooKeeper};

use super::liveness;
use crate::core::{Failure, backoff};

/// How long a server probe may take before the next server is tried.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound of the wake channel (state changes and watch events of the current client).
const WAKE_CAPACITY: usize = 1024;

/// A session change, for the core machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    /// Usable; `fresh` for the first time on a new client.
    Connected { fresh: bool },
    /// Connection lost; the same client is reconnecting.
    Disconnected,
    /// The client is dead; a new one will be made.
    Expired,
}

/// What the client's threads tell the sidecar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wake {
    /// The client's state changed.
    State { generation: u64, state: ZkState },
    /// A watch set by the client of that generation fired.
    Watch { generation: u64 },
}

/// How a failed call looks to the core machines: `None` for "no such node".
pub(crate) fn classify(error: ZkError) -> Option<Failure> {
    match error {
        ZkError::NoNode => None,
        ZkError::ConnectionLoss
        | ZkError::OperationTimeout
        | ZkError::SessionExpired
        | ZkError::SessionMoved => Some(Failure::Connection),
        _ => Some(Failure::Other),
    }
}

/// The current client, if any, and how to make the next.
pub(crate) struct Client {
    addrs: Vec<String>,
    session_timeout: Duration,
    /// Digest credentials added to every session.
    auth: Option<String>,
    zk: Option<ZooKeeper>,
    /// The current client's servers, resolved: its sockets get [`liveness::arm`]ed.
    servers: Vec<SocketAddr>,
    generation: u64,
    online: bool,
    connected_once: bool,
    failures: u32,
    next_attempt: Option<Instant>,
    wake_tx: Sender<Wake>,
    wake_rx: Receiver<Wake>,
    /// Set when a wake could not be queued: the client is replaced to resynchronise.
    overflow: Arc<AtomicBool>,
}

// === Client ===

impl Client {
    /// No client yet; the first [`Self::maintain`] connects.
    pub(crate) fn new(
        addrs: Vec<String>,
        session_timeout: Duration,
        auth: Option<String>,
        now: Instant,
    ) -> Self {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(WAKE_CAPACITY);
        Self {
            addrs,
            session_timeout,
            auth,
            zk: None,
            servers: Vec::new(),
            generation: 0,
            online: false,
            connected_once: false,
            failures: 0,
            next_attempt: Some(now),
            wake_tx,
            wake_rx,
            overflow: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where state changes and watch events arrive; pass them to [`Self::handle_wake`].
    pub(crate) fn wakes(&self) -> &Receiver<Wake> {
        &self.wake_rx
    }

    /// The client, while it has a session.
    pub(crate) fn zk(&self) -> Option<&ZooKeeper> {
        self.zk.as_ref().filter(|_| self.online)
    }

    /// A watcher for a `*_w` call that wakes the sidecar with [`Wake::Watch`].
    pub(crate) fn watcher(&self) -> impl Fn(WatchedEvent) + Send + 'static {
        let (tx, overflow, generation) =
            (self.wake_tx.clone(), self.overflow.clone(), self.generation);
        move |_event: WatchedEvent| {
            if tx.try_send(Wake::Watch { generation }).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
        }
    }

    /// When [`Self::maintain`] should run next (a reconnect attempt is due).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// Connects when an attempt is due, and replaces a client whose wakes overflowed.
    pub(crate) fn maintain(&mut self, now: Instant, out: &mut Vec<SessionEvent>) {
        if self.overflow.swap(false, Ordering::Relaxed) && self.zk.is_some() {
            self.drop_client(now, out);
        }
        if self.next_attempt.is_none_or(|at| at > now) {
            return;
        }
        self.next_attempt = None;
        let Some(zk) = self.connect() else {
            self.failures = self.failures.saturating_add(1);
            if self.failures % 10 == 1 {
                let failures = self.failures;
                warn!(servers = ?self.addrs, failures, "ZooKeeper: no server reachable; retrying");
            }
            self.next_attempt = Some(now + backoff(self.failures));
            return;
        };
        self.generation += 1;
        self.connected_once = false;
        self.online = false;
        let (tx, overflow, generation) =
            (self.wake_tx.clone(), self.overflow.clone(), self.generation);
        zk.add_listener(move |state| {
            if tx.try_send(Wake::State { generation, state }).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
        });
        // The listener may have missed the first Connected: ask the server once.
        let confirmed = zk.exists("/", false).is_ok();
        self.zk = Some(zk);
        if confirmed {
            self.on_connected(out);
        }
    }

    /// Turns a wake into session events; returns `true` for a watch of the current client.
    pub(crate) fn handle_wake(
        &mut self,
        wake: Wake,
        now: Instant,
        out: &mut Vec<SessionEvent>,
    ) -> bool {
        let state = match wake {
            Wake::Watch { generation } => return generation == self.generation,
            Wake::State { generation, .. } if generation != self.generation => return false,
            Wake::State { state, .. } => state,
        };
        #[allow(deprecated, reason = "the 0.8 client still reports NotConnected")]
        match state {
            ZkState::Connected | ZkState::ConnectedReadOnly => self.on_connected(out),
            ZkState::Connecting | ZkState::NotConnected | ZkState::Associating => {
                if std::mem::take(&mut self.online) {
                    warn!(servers = ?self.servers, "ZooKeeper connection lost; reconnecting");
                    out.push(SessionEvent::Disconnected);
                }
            }
            ZkState::Closed | ZkState::AuthFailed => self.drop_client(now, out),
        }
        false
    }

    /// Closes the session (its ephemeral nodes go with it) and forgets the client.
    pub(crate) fn close(&mut self) {
        let Some(zk) = self.zk.take() else {
            return;
        };
        if self.online {
            let _ = zk.close();
        } else {
            // A reconnecting client answers only after its reconnect loop: do not wait.
            let _ = std::thread::Builder::new()
                .name("zk-close".into())
                .spawn(move || drop(zk));
        }
        self.online = false;
    }

    fn on_connected(&mut self, out: &mut Vec<SessionEvent>) {
        if std::mem::replace(&mut self.online, true) {
            return;
        }
        // Each (re)connect is a new socket inside the client.
        liveness::arm(&self.servers);
        let fresh = !std::mem::replace(&mut self.connected_once, true);
        if fresh {
            info!(servers = ?self.servers, "ZooKeeper session up");
        } else {
            info!(servers = ?self.servers, "ZooKeeper reconnected, same session");
        }
        self.failures = 0;
        out.push(SessionEvent::Connected { fresh });
    }

    fn drop_client(&mut self, now: Instant, out: &mut Vec<SessionEvent>) {
        warn!(servers = ?self.servers, "ZooKeeper session ended; starting a new one");
        self.close();
        self.generation += 1;
        out.push(SessionEvent::Expired);
        self.failures = self.failures.saturating_add(1);
        self.next_attempt = Some(now + backoff(self.failures).min(Duration::from_secs(1)));
    }

    /// A new client on the first reachable server (the 0.8 client panics when its very
    /// first TCP connect is refused, so a probe goes first and the unwind is caught).
    fn connect(&mut self) -> Option<ZooKeeper> {
        let resolved: Vec<SocketAddr> = self
            .addrs
            .iter()
            .filter_map(|a| a.to_socket_addrs().ok())
            .flatten()
            .collect();
        let first = resolved
            .iter()
            .position(|addr| TcpStream::connect_timeout(addr, PROBE_TIMEOUT).is_ok())?;
        let mut ordered = resolved;
        ordered.rotate_left(first);
        let servers: Vec<String> = ordered.iter().map(SocketAddr::to_string).collect();
        self.servers = ordered;
        let servers = servers.join(",");
        let timeout = self.session_timeout;
        let zk = std::panic::catch_unwind(AssertUnwindSafe(|| {
            ZooKeeper::connect(&servers, timeout, |_: WatchedEvent| {})
        }))
        .ok()?
        .ok()?;
        if let Some(auth) = &self.auth {
            // Without it every read and write of our nodes would fail: no session at all.
            zk.add_auth("digest", auth.as_bytes().to_vec()).ok()?;
        }
        Some(zk)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
