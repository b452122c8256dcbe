//! The ZooKeeper adapter: runs the pure `core` machines on sidecar threads against the
//! `zookeeper` 0.8 sync client.
//!
//! Owns: [`ZkConfig`] and connect strings ([`connect_addrs`]: default port 2181), the
//! client lifecycle (`client::Client`: connect with backoff, session events, replacing a
//! dead client), and the two sidecars [`Registration`] and [`Discovery`].
//!
//! Does **not** own: what to call when (the `core` machines decide), node data formats
//! (`edge_proto::zk`), or health checks (`rmq`).
//!
//! Facts about the 0.8 client this relies on (read from its source): requests have no
//! timeout of their own, but a reconnect fails every queued request with `ConnectionLoss`;
//! after an expiry it silently opens a new session on the same client; once it decides the
//! session timed out while reconnecting it reports `Closed` and is dead (we start a new
//! one); its first TCP connect panics when refused (we probe the servers first and catch
//! the unwind); while reconnecting to a server that refuses connections its io thread
//! spins for up to one session timeout. A server that accepts TCP but never answers
//! blocks a call until the client's connect timeout (2 s) makes it reconnect. A server
//! that goes silent after the session is up is noticed only by the client's ping deadline,
//! a whole session timeout: `liveness` gives its socket keepalive and `TCP_USER_TIMEOUT`.

mod client;
mod discovery;
mod liveness;
mod registration;

pub use discovery::Discovery;
pub use registration::{CHILD_PREFIX, NodeSpec, Registration};

use std::time::Duration;

use thiserror::Error;

/// The default ZooKeeper client port.
pub const DEFAULT_PORT: u16 = 2181;

/// Session timeout of the original programs.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// Servers as `host[:port],…` (port 2181 when missing).
    pub servers: String,
    /// Requested session timeout (the server clamps it to its own min/max).
    pub session_timeout: Duration,
    /// How often registered nodes' data is sampled (and written when changed).
    pub refresh: Duration,
    /// How often discovery lists the children again even without a watch event.
    pub resync: Duration,
    /// `user:password` for ZooKeeper's digest scheme (`--zk-auth`): every session adds it,
    /// and every node we create is readable and writable by that identity only
    /// (`CREATOR_ALL_ACL`). `None`: open nodes, as the original made them.
    pub auth: Option<String>,
}

/// Errors of the keeper's adapters.
#[derive(Debug, Error)]
pub enum Error {
    /// `--zks` names no server, or a server that is not `host[:port]`.
    #[error("bad ZooKeeper server list {0:?}")]
    Servers(String),
    /// A node root that is empty after trimming slashes.
    #[error("bad ZooKeeper root {0:?}")]
    Root(String),
    /// The sidecar thread could not be started.
    #[error("cannot start the keeper thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A URL we cannot use.
    #[error("bad URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

// === ZkConfig ===

impl ZkConfig {
    /// `servers` with the original's timings: 60 s session, refresh every second, and a
    /// resync of watched children every 10 s.
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            refresh: Duration::from_secs(1),
            resync: Duration::from_secs(10),
            auth: None,
        }
    }

    /// The same with digest credentials (`user:password`; `None`: open nodes).
    pub fn with_auth(mut self, auth: Option<String>) -> Self {
        self.auth = auth.filter(|a| !a.is_empty());
        self
    }

    /// The same with another session timeout.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }
}

/// Splits a server list into `host:port` entries, adding port 2181 where none is given.
/// IPv6 addresses may be bracketed (`[::1]:2182`) or bare (`::1`, which takes the default
/// port). Empty entries are skipped; a list with no server is an error.
pub fn connect_addrs(servers: &str) -> Result<Vec<String>, Error> {
    let bad = || Error::Servers(servers.to_owned());
    let mut out = Vec::new();
    for entry in servers.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.contains(['/', ' ']) {
            return Err(bad());
        }
        let addr = if let Some(rest) = entry.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
            let host = format!("[{inner}]");
            match after {
                "" => format!("{host}:{DEFAULT_PORT}"),
                port => {
                    host_port(&host, port.strip_prefix(':').ok_or_else(bad)?).ok_or_else(bad)?
                }
            }
        } else {
            match entry.matches(':').count() {
                0 => format!("{entry}:{DEFAULT_PORT}"),
                1 => {
                    let (host, port) = entry.split_once(':').ok_or_else(bad)?;
                    if host.is_empty() {
                        return Err(bad());
                    }
                    host_port(host, port).ok_or_else(bad)?
                }
                _ => format!("[{entry}]:{DEFAULT_PORT}"),
            }
        };
        out.push(addr);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn host_port(host: &str, port: &str) -> Option<String> {
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(format!("{host}:{port}"))
}

/// `root` without slashes at the ends, or an error when nothing is left.
pub(crate) fn clean_root(root: &str) -> Result<String, Error> {
    let clean = root.trim().trim_matches('/');
    if clean.is_empty() || clean.contains("//") {
        return Err(Error::Root(root.to_owned()));
    }
    Ok(clean.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(servers: &str, expect: Option<&[&str]>) {
        let got = connect_addrs(servers).ok();
        let expect = expect.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expect, "{servers:?}");
    }

    #[test]
    fn server_lists() {
        check("zk1", Some(&["zk1:2181"]));
        check(
            "193.168.1.221,193.168.1.222:2182, zk3 ,",
            Some(&["193.168.1.221:2181", "193.168.1.222:2182", "zk3:2181"]),
        );
        check(
            "[::1]:2182,[::1],::1",
            Some(&["[::1]:2182", "[::1]:2181", "[::1]:2181"]),
        );
        for bad in [
            "", " , ", "h:0", "h:x", ":2181", "h:65536", "[::1", "[::1]x", "h/chroot", "a b",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn roots() {
        assert_eq!(clean_root("/Rabbitmq/").ok().as_deref(), Some("Rabbitmq"));
        assert_eq!(clean_root("a/b").ok().as_deref(), Some("a/b"));
        for bad in ["", "/", " // ", "a//b"] {
            assert!(clean_root(bad).is_err(), "{bad:?}");
        }
    }
}
