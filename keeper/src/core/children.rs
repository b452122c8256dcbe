//! The children-watch tracker: "list `/<root>`'s children and read their data", the way
//! comets find msgbuses and msgbus finds brokers (docs/protocol.md §9.5).
//!
//! Owns: which children are known and their data, when to list again (a watch fired, a
//! reconnect, a failure after 1 s, the root missing every 1 s, and a periodic resync), and
//! the member list: the distinct data strings in child (sequence) order, so two nodes with
//! the same data (a duplicate registration) are one member. Reports each member added or
//! removed ([`Change`]).
//!
//! Does **not** own: setting the watch or reading (the adapter does, for [`Action::List`]
//! with a children watch), nor parsing the data (the consumer parses `MsgbusNode` or
//! `RabbitNode`; data that is not UTF-8 is skipped here). Child data is read once, as in
//! the original: a child whose data changes in place is not re-read.
//! While disconnected the last known members are kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::Failure;

/// Retry delay after a failure, and the poll period while the root is missing.
pub const RETRY: Duration = Duration::from_secs(1);

/// Inputs of the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client has a session (new or the same): list again.
    Connected,
    /// The connection is lost.
    Disconnected,
    /// The children watch fired.
    Changed,
    /// The answer to the last action.
    Reply(Reply),
}

/// Calls for the adapter to make, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `get_children(/<root>)` **with a children watch** that feeds [`Event::Changed`].
    List {
        /// The full path of the root.
        path: String,
    },
    /// `get_data(path)` without a watch.
    Read {
        /// The full path of the child.
        path: String,
    },
}

/// The result of an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The child names (not paths) of the root.
    Children(Vec<String>),
    /// A child's data.
    Data(Vec<u8>),
    /// The root (for a list) or the child (for a read) does not exist.
    NoNode,
    /// The call failed.
    Failed(Failure),
}

/// A member appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A data string that no child had before.
    Added(String),
    /// A data string that no child has any more.
    Removed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChildData {
    Unread,
    Text(String),
    /// Not UTF-8: skipped.
    Unusable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    List,
    Read(String),
}

/// Tracks one root's children.
#[derive(Debug)]
pub struct ChildrenTracker {
    root_path: String,
    resync: Duration,
    online: bool,
    list_wanted: bool,
    /// Whether a listing has answered at least once (so the members are known).
    listed: bool,
    children: BTreeMap<String, ChildData>,
    members: Vec<String>,
    changes: VecDeque<Change>,
    retry_at: Option<Instant>,
    resync_at: Option<Instant>,
    in_flight: Option<InFlight>,
}

// === ChildrenTracker ===

impl ChildrenTracker {
    /// Tracks `/<root>`, listing again at least every `resync` (watches are not restored
    /// by the client after a reconnect, so this is the safety net).
    pub fn new(root: &str, resync: Duration) -> Self {
        Self {
            root_path: format!("/{}", root.trim_matches('/')),
            resync,
            online: false,
            list_wanted: true,
            listed: false,
            children: BTreeMap::new(),
            members: Vec::new(),
            changes: VecDeque::new(),
            retry_at: None,
            resync_at: None,
            in_flight: None,
        }
    }

    /// The current members: distinct data strings in child order.
    #[must_use]
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Whether a listing has answered yet (before that the members say nothing).
    #[must_use]
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Feeds one input. Call [`Self::poll_action`] and [`Self::poll_change`] afterwards.
    pub fn handle_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.online = true;
                self.list_wanted = true;
                self.retry_at = None;
            }
            Event::Disconnected => self.online = false,
            Event::Changed => self.list_wanted = true,
            Event::Reply(reply) => self.on_reply(reply, now),
        }
        self.debug_assert_invariants();
    }

    /// Ends a due retry or resync wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.list_wanted = true;
        }
        if self.resync_at.is_some_and(|at| at <= now) {
            self.resync_at = None;
            self.list_wanted = true;
        }
    }

    /// When [`Self::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retry_at, self.resync_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next call to make, or `None`. Feed its reply back before calling again.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if !self.online || self.in_flight.is_some() || self.retry_at.is_some() {
            return None;
        }
        if self.list_wanted {
            self.in_flight = Some(InFlight::List);
            let path = self.root_path.clone();
            return Some(Action::List { path });
        }
        let (name, _) = self
            .children
            .iter()
            .find(|(_, data)| **data == ChildData::Unread)?;
        let path = format!("{}/{name}", self.root_path);
        self.in_flight = Some(InFlight::Read(name.clone()));
        Some(Action::Read { path })
    }

    /// The next member added or removed since the last call, oldest first.
    #[must_use]
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        match (in_flight, reply) {
            (InFlight::List, Reply::Children(names)) => {
                self.list_wanted = false;
                self.listed = true;
                self.resync_at = Some(now + self.resync);
                self.children.retain(|name, _| names.contains(name));
                for name in names {
                    self.children.entry(name).or_insert(ChildData::Unread);
                }
            }
            (InFlight::List, Reply::NoNode) => {
                // No root, so no watch: look again in a second.
                self.listed = true;
                self.children.clear();
                self.retry_at = Some(now + RETRY);
            }
            (InFlight::Read(name), Reply::Data(data)) => {
                if let Some(slot) = self.children.get_mut(&name) {
                    *slot = String::from_utf8(data).map_or(ChildData::Unusable, ChildData::Text);
                }
            }
            (InFlight::Read(name), Reply::NoNode) => {
                self.children.remove(&name);
            }
            (_, _) => {
                // A failure, or an answer that does not fit: list everything again later.
                self.list_wanted = true;
                self.retry_at = Some(now + RETRY);
            }
        }
        self.update_members();
    }

    fn update_members(&mut self) {
        let mut members: Vec<String> = Vec::with_capacity(self.children.len());
        for data in self.children.values() {
            if let ChildData::Text(text) = data
                && !members.contains(text)
            {
                members.push(text.clone());
            }
        }
        for old in &self.members {
            if !members.contains(old) {
                self.changes.push_back(Change::Removed(old.clone()));
            }
        }
        for new in &members {
            if !self.members.contains(new) {
                self.changes.push_back(Change::Added(new.clone()));
            }
        }
        self.members = members;
    }

    fn debug_assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (i, member) in self.members.iter().enumerate() {
            debug_assert!(!self.members[..i].contains(member), "duplicate member");
        }
    }
}

#[cfg(test)]
#[path = "children_tests.rs"]
mod tests;
