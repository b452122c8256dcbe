//! Tests of [`Registrar`]: scripted event sequences, and a seeded simulation against an
//! in-memory ZooKeeper model with disconnects, expiries, lost replies and fresh clients.
#![allow(
    clippy::disallowed_methods,
    reason = "one real Instant is the origin of the fake clock"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// A ZooKeeper model: nodes with data and owner, per-parent sequence counters, sessions.
#[derive(Default)]
struct FakeZk {
    /// path → (data, ephemeral owner; 0 = persistent)
    nodes: BTreeMap<String, (Vec<u8>, i64)>,
    sequences: BTreeMap<String, u32>,
    next_session: i64,
}

impl FakeZk {
    fn new_session(&mut self) -> i64 {
        self.next_session += 1;
        self.next_session
    }

    fn expire(&mut self, session: i64) {
        self.nodes.retain(|_, (_, owner)| *owner != session);
    }

    fn apply(&mut self, session: i64, action: &Action) -> Reply {
        match action {
            Action::EnsureRoot { root } => {
                self.nodes.entry(format!("/{root}")).or_default();
                Reply::Done
            }
            Action::Create { root, data } => {
                let parent = format!("/{root}");
                if !self.nodes.contains_key(&parent) {
                    return Reply::NoNode;
                }
                let seq = self.sequences.entry(parent.clone()).or_default();
                let path = format!("{parent}/{seq:010}");
                *seq += 1;
                self.nodes.insert(path.clone(), (data.clone(), session));
                Reply::Created {
                    path,
                    owner: session,
                }
            }
            Action::Check { path } => Reply::Exists(self.nodes.get(path).map(|(_, o)| *o)),
            Action::SetData { path, data } => match self.nodes.get_mut(path) {
                Some(node) => {
                    node.0 = data.clone();
                    Reply::Done
                }
                None => Reply::NoNode,
            },
            Action::Delete { path } => {
                self.nodes.remove(path);
                Reply::Done
            }
            Action::Probe => {
                self.nodes.entry(format!("/{PROBE_ROOT}")).or_default();
                self.apply(
                    session,
                    &Action::Create {
                        root: PROBE_ROOT.into(),
                        data: vec![],
                    },
                )
            }
            Action::Sweep { root } => {
                let prefix = format!("/{root}/");
                let children = self
                    .nodes
                    .iter()
                    .filter(|(p, _)| p.starts_with(&prefix))
                    .map(|(p, (_, o))| (p.clone(), *o))
                    .collect();
                Reply::Children(children)
            }
        }
    }

    /// Ephemeral children of `/<root>`, as (path, data).
    fn children(&self, root: &str) -> Vec<(String, Vec<u8>)> {
        let prefix = format!("/{root}/");
        self.nodes
            .iter()
            .filter(|(p, (_, o))| p.starts_with(&prefix) && *o != 0)
            .map(|(p, (d, _))| (p.clone(), d.clone()))
            .collect()
    }
}

fn config(root: &str, data: &str, enabled: bool) -> NodeConfig {
    NodeConfig {
        root: root.into(),
        data: data.into(),
        enabled,
    }
}

/// Runs every action against the model until the registrar is quiet.
fn settle(reg: &mut Registrar, zk: &mut FakeZk, session: i64, now: Instant) -> Vec<Action> {
    let mut seen = Vec::new();
    while let Some(action) = reg.poll_action() {
        let reply = zk.apply(session, &action);
        seen.push(action);
        reg.handle_event(Event::Reply(reply), now);
        assert!(seen.len() < 1000, "no progress: {seen:?}");
    }
    seen
}

fn connected(reg: &mut Registrar, fresh: bool, now: Instant) {
    reg.handle_event(Event::Connected { fresh }, now);
}

#[test]
fn registers_once_then_refreshes_only_changes() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s = zk.new_session();
    let mut reg = Registrar::new(vec![config("CometServers", "a,0", true)]);
    assert_eq!(reg.poll_action(), None, "offline: nothing to do");
    connected(&mut reg, true, now);
    let actions = settle(&mut reg, &mut zk, s, now);
    assert_eq!(
        actions,
        [
            Action::EnsureRoot {
                root: "CometServers".into()
            },
            Action::Create {
                root: "CometServers".into(),
                data: b"a,0".to_vec()
            },
        ]
    );
    assert_eq!(reg.registered(NodeId(0)), Some("/CometServers/0000000000"));
    reg.handle_event(
        Event::Data {
            node: NodeId(0),
            data: b"a,0".to_vec(),
        },
        now,
    );
    assert_eq!(reg.poll_action(), None, "same data: no write");
    reg.handle_event(
        Event::Data {
            node: NodeId(0),
            data: b"a,1".to_vec(),
        },
        now,
    );
    assert_eq!(
        settle(&mut reg, &mut zk, s, now),
        [Action::SetData {
            path: "/CometServers/0000000000".into(),
            data: b"a,1".to_vec()
        }]
    );
    assert_eq!(
        zk.children("CometServers"),
        [("/CometServers/0000000000".into(), b"a,1".to_vec())]
    );
}

#[test]
fn one_action_in_flight_at_a_time() {
    let now = Instant::now();
    let mut reg = Registrar::new(vec![config("r", "x", true), config("r", "y", true)]);
    connected(&mut reg, true, now);
    assert!(reg.poll_action().is_some());
    assert_eq!(reg.poll_action(), None);
    reg.handle_event(Event::Reply(Reply::Done), now);
    assert!(matches!(reg.poll_action(), Some(Action::Create { .. })));
}

#[test]
fn short_disconnect_keeps_the_node() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s, now);
    reg.handle_event(Event::Disconnected, now);
    assert_eq!(reg.registered(NodeId(0)), None);
    assert_eq!(reg.poll_action(), None);
    connected(&mut reg, false, now);
    let actions = settle(&mut reg, &mut zk, s, now);
    assert_eq!(
        actions,
        [Action::Check {
            path: "/r/0000000000".into()
        }]
    );
    assert_eq!(reg.registered(NodeId(0)), Some("/r/0000000000"));
}

#[test]
fn expiry_on_the_same_client_recreates_once() {
    // The 0.8 client silently opens a new session after an expiry: a non-fresh reconnect.
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s1 = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s1, now);
    reg.handle_event(Event::Disconnected, now);
    zk.expire(s1);
    let s2 = zk.new_session();
    connected(&mut reg, false, now);
    let actions = settle(&mut reg, &mut zk, s2, now);
    assert_eq!(
        actions[0],
        Action::Check {
            path: "/r/0000000000".into()
        }
    );
    assert_eq!(zk.children("r"), [("/r/0000000001".into(), b"x".to_vec())]);
    assert_eq!(reg.registered(NodeId(0)), Some("/r/0000000001"));
}

#[test]
fn fresh_client_deletes_our_node_of_a_live_old_session() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s1 = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s1, now);
    reg.handle_event(Event::Expired, now); // our client gave up; the server still holds s1
    let s2 = zk.new_session();
    connected(&mut reg, true, now);
    let actions = settle(&mut reg, &mut zk, s2, now);
    assert_eq!(
        &actions[..2],
        [
            Action::Check {
                path: "/r/0000000000".into()
            },
            Action::Delete {
                path: "/r/0000000000".into()
            },
        ]
    );
    assert_eq!(zk.children("r"), [("/r/0000000001".into(), b"x".to_vec())]);
}

#[test]
fn a_reused_path_owned_by_someone_else_is_left_alone() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s1 = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s1, now);
    reg.handle_event(Event::Expired, now);
    zk.expire(s1);
    zk.nodes
        .insert("/r/0000000000".into(), (b"other".to_vec(), 99));
    let s2 = zk.new_session();
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s2, now);
    assert_eq!(zk.children("r").len(), 2);
    assert_eq!(zk.nodes["/r/0000000000"].0, b"other");
}

#[test]
fn a_create_with_a_lost_reply_is_swept() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    let ensure = reg.poll_action().expect("ensure root");
    reg.handle_event(Event::Reply(zk.apply(s, &ensure)), now);
    let create = reg.poll_action().expect("create");
    let applied = zk.apply(s, &create); // the server made it, the answer was lost
    assert!(matches!(applied, Reply::Created { .. }));
    reg.handle_event(Event::Reply(Reply::Failed(Failure::Connection)), now);
    reg.handle_event(Event::Disconnected, now);
    connected(&mut reg, false, now);
    let actions = settle(&mut reg, &mut zk, s, now);
    assert!(
        actions.contains(&Action::Sweep { root: "r".into() }),
        "{actions:?}"
    );
    assert_eq!(zk.children("r"), [("/r/0000000001".into(), b"x".to_vec())]);
}

#[test]
fn failures_back_off_and_timeouts_resume() {
    let t0 = Instant::now();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, t0);
    assert!(matches!(reg.poll_action(), Some(Action::EnsureRoot { .. })));
    reg.handle_event(Event::Reply(Reply::Failed(Failure::Other)), t0);
    assert_eq!(reg.poll_action(), None);
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    reg.handle_timeout(t0 + Duration::from_millis(249));
    assert_eq!(reg.poll_action(), None);
    reg.handle_timeout(t0 + Duration::from_millis(250));
    assert!(matches!(reg.poll_action(), Some(Action::EnsureRoot { .. })));
    reg.handle_event(Event::Reply(Reply::Failed(Failure::Other)), t0);
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    // A reconnect retries at once.
    reg.handle_event(Event::Disconnected, t0);
    connected(&mut reg, false, t0);
    assert_eq!(reg.poll_timeout(), None);
    assert!(reg.poll_action().is_some());
}

#[test]
fn create_without_root_ensures_it_again() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s = zk.new_session();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    connected(&mut reg, true, now);
    settle(&mut reg, &mut zk, s, now);
    zk.nodes.clear(); // an operator removed the whole root (its sequence restarts)
    zk.sequences.clear();
    reg.handle_event(
        Event::Data {
            node: NodeId(0),
            data: b"y".to_vec(),
        },
        now,
    );
    assert!(matches!(reg.poll_action(), Some(Action::SetData { .. })));
    reg.handle_event(Event::Reply(Reply::NoNode), now);
    assert!(matches!(reg.poll_action(), Some(Action::Create { .. })));
    reg.handle_event(Event::Reply(Reply::NoNode), now);
    reg.handle_timeout(now + Duration::from_secs(1));
    settle(&mut reg, &mut zk, s, now);
    assert_eq!(zk.children("r"), [("/r/0000000000".into(), b"y".to_vec())]);
}

#[test]
fn disable_deletes_and_enable_recreates() {
    let now = Instant::now();
    let mut zk = FakeZk::default();
    let s = zk.new_session();
    let mut reg = Registrar::new(vec![config("Rabbitmq", "h:5672,MsgTopic", false)]);
    connected(&mut reg, true, now);
    assert_eq!(settle(&mut reg, &mut zk, s, now), []);
    reg.handle_event(
        Event::Enabled {
            node: NodeId(0),
            enabled: true,
        },
        now,
    );
    settle(&mut reg, &mut zk, s, now);
    assert_eq!(zk.children("Rabbitmq").len(), 1);
    reg.handle_event(
        Event::Enabled {
            node: NodeId(0),
            enabled: false,
        },
        now,
    );
    assert_eq!(
        settle(&mut reg, &mut zk, s, now),
        [Action::Delete {
            path: "/Rabbitmq/0000000000".into()
        }]
    );
    assert_eq!(zk.children("Rabbitmq"), []);
    assert_eq!(reg.registered(NodeId(0)), None);
    // Disabled while disconnected: the old path is checked, then deleted (it is ours).
    reg.handle_event(
        Event::Enabled {
            node: NodeId(0),
            enabled: true,
        },
        now,
    );
    settle(&mut reg, &mut zk, s, now);
    reg.handle_event(Event::Disconnected, now);
    reg.handle_event(
        Event::Enabled {
            node: NodeId(0),
            enabled: false,
        },
        now,
    );
    connected(&mut reg, false, now);
    let actions = settle(&mut reg, &mut zk, s, now);
    assert_eq!(
        actions,
        [
            Action::EnsureRoot {
                root: "Rabbitmq".into()
            }
            .clone(),
            Action::Check {
                path: "/Rabbitmq/0000000001".into()
            },
            Action::Delete {
                path: "/Rabbitmq/0000000001".into()
            },
        ][1..]
    );
    assert_eq!(zk.children("Rabbitmq"), []);
}

#[test]
fn replies_without_an_action_and_unknown_nodes_are_ignored() {
    let now = Instant::now();
    let mut reg = Registrar::new(vec![config("r", "x", true)]);
    reg.handle_event(Event::Reply(Reply::Done), now);
    reg.handle_event(
        Event::Data {
            node: NodeId(7),
            data: vec![],
        },
        now,
    );
    reg.handle_event(
        Event::Enabled {
            node: NodeId(7),
            enabled: false,
        },
        now,
    );
    assert_eq!(reg.registered(NodeId(7)), None);
    assert_eq!((reg.len(), reg.is_empty()), (1, false));
}

#[path = "registration_sim_tests.rs"]
mod simulation;
