//! The registration state machine: ephemeral-sequential nodes that we own, one per
//! [`NodeId`], all on one ZooKeeper session.
//!
//! Owns: the decision of which call to make next for every node — ensure the root exists,
//! create `/<root>/<seq>`, refresh its data when it changed, check a remembered path after
//! a reconnect, delete a node that is disabled or stale — and the bookkeeping that keeps
//! exactly one node per [`NodeId`] (docs/protocol.md §10.4: the original duplicated nodes after
//! reconnects).
//!
//! Does **not** own: the client, the data sampling (the adapter feeds [`Event::Data`]),
//! timing of refreshes (the adapter samples once a second; we write only what changed).
//!
//! How duplicates are avoided:
//! - After any disconnect a remembered path is *checked* before anything else
//!   ([`Action::Check`]). A node there whose `ephemeral_owner` is the session that created
//!   it **and** is our current session is kept; one owned by an older session of ours (a
//!   fresh client while the old session still lives on the server) is deleted before the
//!   new node is created; one owned by anybody else (a sequence number reused after the
//!   root was re-created) is left alone and forgotten.
//! - A create whose outcome is unknown (connection lost before the answer) may have left a
//!   node in the still-live session. Once our session id is confirmed (from a node we
//!   created or checked since the reconnect, or else from a [`Action::Probe`] node outside
//!   every root) the root is swept ([`Action::Sweep`]) and every child owned by our
//!   session that no [`NodeId`] tracks is deleted.
//!   Not covered: an orphan of a session we have since replaced by a fresh client; it
//!   disappears when that session expires (one session timeout).

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Failure, backoff};

#[path = "registration_types.rs"]
mod types;

pub use types::{Action, Event, NodeConfig, NodeId, PROBE_ROOT, Reply};

/// What we know about a remembered path in the current session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    /// Not checked since the last (re)connect.
    Unknown,
    /// Exists, and is owned by our current session.
    Live,
    /// Exists, owned by an older session of ours: delete it.
    Stale,
}

#[derive(Debug, Clone)]
struct Node {
    config: NodeConfig,
    /// The node we created, its owner, and what we know about it now.
    path: Option<(String, i64, PathState)>,
    /// The data last written at `path` (only meaningful while `Live`).
    written: Option<Vec<u8>>,
    retry_at: Option<Instant>,
    failures: u32,
}

/// The action in flight, with what its reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    EnsureRoot(NodeId),
    Create(NodeId, Vec<u8>),
    Check(NodeId),
    SetData(NodeId, Vec<u8>),
    Delete(NodeId),
    Sweep(String),
    Probe,
    DeleteOrphan,
}

/// The registration state machine for every node we own on one session.
#[derive(Debug)]
pub struct Registrar {
    nodes: Vec<Node>,
    online: bool,
    /// Our session id, once learned from a node we created in this client's session.
    session_owner: Option<i64>,
    /// Whether `session_owner` is confirmed since the last reconnect (the same client may
    /// have silently moved to a new session after an expiry).
    session_confirmed: bool,
    ready_roots: BTreeSet<String>,
    /// Roots where a create of this session had an unknown outcome.
    sweep_roots: BTreeSet<String>,
    orphans: Vec<String>,
    /// Backoff for sweeps and orphan deletes.
    sweep_retry_at: Option<Instant>,
    sweep_failures: u32,
    in_flight: Option<InFlight>,
}

// === Registrar ===

impl Registrar {
    /// A registrar for `nodes`, offline until [`Event::Connected`].
    pub fn new(nodes: Vec<NodeConfig>) -> Self {
        let nodes = nodes
            .into_iter()
            .map(|config| Node {
                config,
                path: None,
                written: None,
                retry_at: None,
                failures: 0,
            })
            .collect();
        Self {
            nodes,
            online: false,
            session_owner: None,
            session_confirmed: false,
            ready_roots: BTreeSet::new(),
            sweep_roots: BTreeSet::new(),
            orphans: Vec::new(),
            sweep_retry_at: None,
            sweep_failures: 0,
            in_flight: None,
        }
    }

    /// The path of `node` when it is registered and confirmed in the current session.
    #[must_use]
    pub fn registered(&self, node: NodeId) -> Option<&str> {
        match self.nodes.get(node.0)?.path.as_ref()? {
            (path, _, PathState::Live) if self.online => Some(path),
            _ => None,
        }
    }

    /// Number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Feeds one input. Call [`Self::poll_action`] afterwards.
    pub fn handle_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected { fresh } => self.on_connected(fresh),
            Event::Disconnected => self.on_offline(false),
            Event::Expired => self.on_offline(true),
            Event::Data { node, data } => {
                if let Some(n) = self.nodes.get_mut(node.0) {
                    n.config.data = data;
                }
            }
            Event::Enabled { node, enabled } => {
                if let Some(n) = self.nodes.get_mut(node.0) {
                    n.config.enabled = enabled;
                }
            }
            Event::Reply(reply) => self.on_reply(reply, now),
        }
        self.debug_assert_invariants();
    }

    /// Ends every backoff that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for node in &mut self.nodes {
            if node.retry_at.is_some_and(|at| at <= now) {
                node.retry_at = None;
            }
        }
        if self.sweep_retry_at.is_some_and(|at| at <= now) {
            self.sweep_retry_at = None;
        }
        self.debug_assert_invariants();
    }

    /// When [`Self::handle_timeout`] should be called next (a backoff ends).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| n.retry_at)
            .chain(self.sweep_retry_at)
            .min()
    }

    /// The next call to make, or `None` (offline, one already in flight, or nothing to do).
    /// Call after every event; feed the result back as [`Event::Reply`] before calling again.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if !self.online || self.in_flight.is_some() {
            return None;
        }
        let (in_flight, action) = self
            .next_sweep()
            .or_else(|| (0..self.nodes.len()).find_map(|i| self.next_for(NodeId(i))))?;
        self.in_flight = Some(in_flight);
        self.debug_assert_invariants();
        Some(action)
    }

    fn next_sweep(&mut self) -> Option<(InFlight, Action)> {
        if self.sweep_retry_at.is_some() || self.sweep_roots.is_empty() && self.orphans.is_empty() {
            return None;
        }
        if !self.session_confirmed {
            return Some((InFlight::Probe, Action::Probe));
        }
        if let Some(path) = self.orphans.last() {
            let action = Action::Delete { path: path.clone() };
            return Some((InFlight::DeleteOrphan, action));
        }
        let root = self.sweep_roots.first()?.clone();
        Some((InFlight::Sweep(root.clone()), Action::Sweep { root }))
    }

    fn next_for(&self, id: NodeId) -> Option<(InFlight, Action)> {
        let node = &self.nodes[id.0];
        if node.retry_at.is_some() {
            return None;
        }
        let enabled = node.config.enabled;
        match &node.path {
            Some((path, _, PathState::Unknown)) => {
                Some((InFlight::Check(id), Action::Check { path: path.clone() }))
            }
            Some((path, _, PathState::Stale)) => {
                Some((InFlight::Delete(id), Action::Delete { path: path.clone() }))
            }
            Some((path, _, PathState::Live)) if !enabled => {
                Some((InFlight::Delete(id), Action::Delete { path: path.clone() }))
            }
            Some((path, _, PathState::Live)) => {
                let data = &node.config.data;
                (node.written.as_ref() != Some(data)).then(|| {
                    let action = Action::SetData {
                        path: path.clone(),
                        data: data.clone(),
                    };
                    (InFlight::SetData(id, data.clone()), action)
                })
            }
            None if !enabled => None,
            None if !self.ready_roots.contains(&node.config.root) => {
                let root = node.config.root.clone();
                Some((InFlight::EnsureRoot(id), Action::EnsureRoot { root }))
            }
            None => {
                let data = node.config.data.clone();
                let root = node.config.root.clone();
                let action = Action::Create {
                    root,
                    data: data.clone(),
                };
                Some((InFlight::Create(id, data), action))
            }
        }
    }

    fn on_connected(&mut self, fresh: bool) {
        if self.online && !fresh {
            return;
        }
        if fresh {
            self.forget_session();
        }
        self.online = true;
        for node in &mut self.nodes {
            node.retry_at = None;
            node.failures = 0;
        }
        self.sweep_retry_at = None;
    }

    fn on_offline(&mut self, expired: bool) {
        self.online = false;
        self.session_confirmed = false;
        self.ready_roots.clear();
        for node in &mut self.nodes {
            if let Some((_, _, state @ PathState::Live)) = &mut node.path {
                *state = PathState::Unknown;
            }
        }
        if expired {
            self.forget_session();
        }
    }

    /// A new session: nothing of the old one is ours to sweep, and its id is not ours.
    fn forget_session(&mut self) {
        self.session_owner = None;
        self.sweep_roots.clear();
        self.orphans.clear();
        self.on_offline(false);
    }

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        match in_flight {
            InFlight::Sweep(root) => self.on_sweep(root, reply, now),
            InFlight::Probe => match reply {
                Reply::Created { path, owner } if self.online => {
                    self.confirm_session(owner);
                    self.orphans.push(path);
                    self.sweep_failures = 0;
                }
                _ => self.sweep_failed(now),
            },
            InFlight::DeleteOrphan => match reply {
                Reply::Done | Reply::NoNode => {
                    self.orphans.pop();
                    self.sweep_failures = 0;
                }
                _ => self.sweep_failed(now),
            },
            InFlight::EnsureRoot(id) => match reply {
                Reply::Done => {
                    let root = self.nodes[id.0].config.root.clone();
                    self.ready_roots.insert(root);
                    self.nodes[id.0].failures = 0;
                }
                _ => self.node_failed(id, now),
            },
            InFlight::Create(id, data) => self.on_created(id, data, reply, now),
            InFlight::Check(id) => self.on_checked(id, reply, now),
            InFlight::SetData(id, data) => match reply {
                Reply::Done => {
                    let node = &mut self.nodes[id.0];
                    node.written = Some(data);
                    node.failures = 0;
                }
                Reply::NoNode => self.forget_path(id),
                _ => self.write_failed(id, &reply, now),
            },
            InFlight::Delete(id) => match reply {
                Reply::Done | Reply::NoNode => self.forget_path(id),
                _ => self.write_failed(id, &reply, now),
            },
        }
    }

    fn on_created(&mut self, id: NodeId, data: Vec<u8>, reply: Reply, now: Instant) {
        match reply {
            Reply::Created { path, owner } => {
                // A reply that arrives after the session went away is checked on reconnect.
                let state = if self.online {
                    self.confirm_session(owner);
                    PathState::Live
                } else {
                    PathState::Unknown
                };
                let node = &mut self.nodes[id.0];
                node.path = Some((path, owner, state));
                node.written = Some(data);
                node.failures = 0;
            }
            Reply::NoNode => {
                let root = self.nodes[id.0].config.root.clone();
                self.ready_roots.remove(&root);
                self.node_failed(id, now);
            }
            Reply::Failed(Failure::Connection) => {
                let root = self.nodes[id.0].config.root.clone();
                self.sweep_roots.insert(root);
                self.node_failed(id, now);
            }
            _ => self.node_failed(id, now),
        }
    }

    fn on_checked(&mut self, id: NodeId, reply: Reply, now: Instant) {
        let Some((_, owner, _)) = self.nodes[id.0].path else {
            return;
        };
        let next = match reply {
            Reply::Exists(Some(found)) if found == owner && self.session_owner == Some(found) => {
                // The node of our session lives on: the session is still ours.
                self.session_confirmed = true;
                PathState::Live
            }
            Reply::Exists(Some(found)) if found == owner => PathState::Stale,
            // Gone, or somebody else's node at a reused sequence number: not ours to touch.
            Reply::Exists(_) | Reply::NoNode => return self.forget_path(id),
            _ => return self.node_failed(id, now),
        };
        let node = &mut self.nodes[id.0];
        if let Some((_, _, state)) = &mut node.path {
            *state = next;
        }
        node.failures = 0;
    }

    fn on_sweep(&mut self, root: String, reply: Reply, now: Instant) {
        let Reply::Children(children) = reply else {
            if reply == Reply::NoNode {
                self.sweep_roots.remove(&root);
            } else {
                self.sweep_failed(now);
            }
            return;
        };
        self.sweep_roots.remove(&root);
        self.sweep_failures = 0;
        let Some(ours) = self.session_owner else {
            return;
        };
        let tracked: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.path.as_ref().map(|(p, _, _)| p.as_str()))
            .collect();
        let orphans = children
            .into_iter()
            .filter(|(path, owner)| *owner == ours && !tracked.contains(path.as_str()))
            .map(|(path, _)| path);
        self.orphans.extend(orphans);
    }

    fn confirm_session(&mut self, owner: i64) {
        if self.session_owner != Some(owner) {
            // A new session: orphans of the old one went with it.
            self.orphans.clear();
        }
        self.session_owner = Some(owner);
        self.session_confirmed = true;
    }

    fn forget_path(&mut self, id: NodeId) {
        let node = &mut self.nodes[id.0];
        node.path = None;
        node.written = None;
        node.failures = 0;
    }

    /// A write to a known path failed; after a connection failure its outcome is unknown,
    /// so the path is checked again before anything else.
    fn write_failed(&mut self, id: NodeId, reply: &Reply, now: Instant) {
        if *reply == Reply::Failed(Failure::Connection)
            && let Some((_, _, state)) = &mut self.nodes[id.0].path
        {
            *state = PathState::Unknown;
        }
        self.node_failed(id, now);
    }

    fn node_failed(&mut self, id: NodeId, now: Instant) {
        let node = &mut self.nodes[id.0];
        node.failures = node.failures.saturating_add(1);
        node.retry_at = Some(now + backoff(node.failures));
    }

    fn sweep_failed(&mut self, now: Instant) {
        self.sweep_failures = self.sweep_failures.saturating_add(1);
        self.sweep_retry_at = Some(now + backoff(self.sweep_failures));
    }

    fn debug_assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for node in &self.nodes {
            if let Some((_, owner, PathState::Live)) = &node.path {
                debug_assert!(self.online, "a Live node while offline");
                debug_assert_eq!(self.session_owner, Some(*owner), "Live but not our session");
            }
        }
        debug_assert!(self.online || self.ready_roots.is_empty());
        debug_assert!(self.online || !self.session_confirmed);
        if self.session_owner.is_none() {
            debug_assert!(self.orphans.is_empty(), "orphans without a known session");
        }
    }
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
