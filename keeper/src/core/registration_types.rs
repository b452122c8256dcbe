//! The inputs and outputs of [`super::Registrar`]: node identity and configuration,
//! events, actions and replies. Plain data; the behaviour is in `registration.rs`.

use super::Failure;

/// Index of a node in the order given to [`super::Registrar::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// What the node should be: where, with which data, and whether it should exist at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The root without slashes at either end, e.g. `CometServers` (may be nested: `a/b`).
    pub root: String,
    /// The first data.
    pub data: Vec<u8>,
    /// Whether the node should exist now (rmqkeeper: only while the broker is healthy).
    pub enabled: bool,
}

/// Inputs of the registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client has a usable session. `fresh`: a client we have never used before (so a
    /// session we have never seen); otherwise a reconnect of the same client, whose session
    /// may or may not be the one it had.
    Connected {
        /// A brand-new client.
        fresh: bool,
    },
    /// The connection is lost; the session may come back.
    Disconnected,
    /// The client is gone for good (expired, closed, auth failed); the next
    /// [`Event::Connected`] will be fresh.
    Expired,
    /// New data for a node (written when it differs from what the server has).
    Data {
        /// Which node.
        node: NodeId,
        /// The data.
        data: Vec<u8>,
    },
    /// Whether a node should exist.
    Enabled {
        /// Which node.
        node: NodeId,
        /// `true`: register it; `false`: delete it.
        enabled: bool,
    },
    /// The answer to the action returned by the last [`super::Registrar::poll_action`].
    Reply(Reply),
}

/// Calls for the adapter to make, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create `/<root>` (and its parents) as persistent empty nodes with the open ACL;
    /// "already exists" is success.
    EnsureRoot {
        /// The root, no slashes at the ends.
        root: String,
    },
    /// Create an ephemeral-sequential node under `/<root>` (the child's name ends in its
    /// 10-digit sequence), open ACL; reply [`Reply::Created`] with its path and `ephemeral_owner`.
    Create {
        /// The root.
        root: String,
        /// The data.
        data: Vec<u8>,
    },
    /// `exists(path)`: reply [`Reply::Exists`] with its `ephemeral_owner`, or `None`.
    Check {
        /// A full path.
        path: String,
    },
    /// Set the data at any version: [`Reply::Done`] or [`Reply::NoNode`].
    SetData {
        /// A full path.
        path: String,
        /// The data.
        data: Vec<u8>,
    },
    /// Delete at any version: [`Reply::Done`] (also when there was no node).
    Delete {
        /// A full path.
        path: String,
    },
    /// List `/<root>`'s children with their `ephemeral_owner`: [`Reply::Children`].
    Sweep {
        /// The root.
        root: String,
    },
    /// Learn our session id: create an ephemeral-sequential node under
    /// [`PROBE_ROOT`] (creating that persistent root if missing) and reply
    /// [`Reply::Created`]; the registrar deletes it next.
    Probe,
}

/// Where [`Action::Probe`] nodes live for a moment: outside every watched root.
pub const PROBE_ROOT: &str = "cloudsocket-keeper";

/// The result of an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success without a value.
    Done,
    /// The node was created.
    Created {
        /// Its full path, `/<root>/<seq>`.
        path: String,
        /// Its `ephemeral_owner`: our session id.
        owner: i64,
    },
    /// `exists`: the owner of the node, `None` when there is none.
    Exists(Option<i64>),
    /// The children of a swept root: full paths and owners.
    Children(Vec<(String, i64)>),
    /// The node (or, for a create, the root) does not exist.
    NoNode,
    /// The call failed.
    Failed(Failure),
}
