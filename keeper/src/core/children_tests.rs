//! Tests of [`ChildrenTracker`] with scripted replies and a fake clock.
#![allow(
    clippy::disallowed_methods,
    reason = "one real Instant is the origin of the fake clock"
)]

use std::time::{Duration, Instant};

use super::*;

fn list(path: &str) -> Option<Action> {
    Some(Action::List { path: path.into() })
}

fn read(path: &str) -> Option<Action> {
    Some(Action::Read { path: path.into() })
}

fn reply(t: &mut ChildrenTracker, reply: Reply, now: Instant) {
    t.handle_event(Event::Reply(reply), now);
}

fn names(names: &[&str]) -> Reply {
    Reply::Children(names.iter().map(|n| n.to_string()).collect())
}

fn changes(t: &mut ChildrenTracker) -> Vec<Change> {
    std::iter::from_fn(|| t.poll_change()).collect()
}

fn added(s: &str) -> Change {
    Change::Added(s.into())
}

fn removed(s: &str) -> Change {
    Change::Removed(s.into())
}

#[test]
fn lists_reads_and_dedupes() {
    let now = Instant::now();
    let mut t = ChildrenTracker::new("/MsgBusServers/", Duration::from_secs(10));
    assert_eq!(t.poll_action(), None, "offline");
    assert!(!t.is_listed());
    t.handle_event(Event::Connected, now);
    assert_eq!(t.poll_action(), list("/MsgBusServers"));
    assert_eq!(t.poll_action(), None, "one in flight");
    reply(
        &mut t,
        names(&["0000000002", "0000000001", "0000000003"]),
        now,
    );
    assert!(t.is_listed());
    assert_eq!(t.poll_action(), read("/MsgBusServers/0000000001"));
    reply(&mut t, Reply::Data(b"10.0.0.1:9923".to_vec()), now);
    assert_eq!(changes(&mut t), [added("10.0.0.1:9923")]);
    assert_eq!(t.poll_action(), read("/MsgBusServers/0000000002"));
    reply(&mut t, Reply::Data(b"10.0.0.1:9923".to_vec()), now);
    assert_eq!(changes(&mut t), [], "same string: same member");
    assert_eq!(t.poll_action(), read("/MsgBusServers/0000000003"));
    reply(&mut t, Reply::Data(b"10.0.0.2:9923".to_vec()), now);
    assert_eq!(changes(&mut t), [added("10.0.0.2:9923")]);
    assert_eq!(t.members(), ["10.0.0.1:9923", "10.0.0.2:9923"]);
    assert_eq!(t.poll_action(), None);

    // One duplicate goes: still a member. Then the other: removed.
    t.handle_event(Event::Changed, now);
    assert_eq!(t.poll_action(), list("/MsgBusServers"));
    reply(&mut t, names(&["0000000002", "0000000003"]), now);
    assert_eq!(changes(&mut t), []);
    assert_eq!(t.poll_action(), None, "known children are not read again");
    t.handle_event(Event::Changed, now);
    assert!(t.poll_action().is_some());
    reply(&mut t, names(&["0000000003"]), now);
    assert_eq!(changes(&mut t), [removed("10.0.0.1:9923")]);
    assert_eq!(t.members(), ["10.0.0.2:9923"]);
}

#[test]
fn missing_root_is_polled_every_second() {
    let t0 = Instant::now();
    let mut t = ChildrenTracker::new("Rabbitmq", Duration::from_secs(10));
    t.handle_event(Event::Connected, t0);
    assert_eq!(t.poll_action(), list("/Rabbitmq"));
    reply(&mut t, Reply::NoNode, t0);
    assert!(t.is_listed(), "a missing root is a known, empty list");
    assert_eq!(t.poll_action(), None);
    assert_eq!(t.poll_timeout(), Some(t0 + RETRY));
    t.handle_timeout(t0 + RETRY);
    assert_eq!(t.poll_action(), list("/Rabbitmq"));
    reply(&mut t, names(&["0000000000"]), t0 + RETRY);
    assert_eq!(t.poll_action(), read("/Rabbitmq/0000000000"));
    reply(&mut t, Reply::Data(b"h:5672,MsgTopic".to_vec()), t0 + RETRY);
    assert_eq!(changes(&mut t), [added("h:5672,MsgTopic")]);
    // The root is deleted: every member goes.
    t.handle_event(Event::Changed, t0 + RETRY);
    assert!(t.poll_action().is_some());
    reply(&mut t, Reply::NoNode, t0 + RETRY);
    assert_eq!(changes(&mut t), [removed("h:5672,MsgTopic")]);
}

#[test]
fn failures_retry_after_a_second_and_resync_is_periodic() {
    let t0 = Instant::now();
    let resync = Duration::from_secs(10);
    let mut t = ChildrenTracker::new("r", resync);
    t.handle_event(Event::Connected, t0);
    assert!(t.poll_action().is_some());
    reply(&mut t, Reply::Failed(Failure::Connection), t0);
    assert_eq!(t.poll_action(), None);
    t.handle_timeout(t0 + Duration::from_millis(999));
    assert_eq!(t.poll_action(), None);
    t.handle_timeout(t0 + RETRY);
    assert_eq!(t.poll_action(), list("/r"));
    reply(&mut t, names(&["1"]), t0 + RETRY);
    assert_eq!(t.poll_action(), read("/r/1"));
    reply(&mut t, Reply::Failed(Failure::Other), t0 + RETRY);
    assert_eq!(t.poll_action(), None, "waits before listing again");
    t.handle_timeout(t0 + RETRY * 2);
    assert_eq!(t.poll_action(), list("/r"));
    reply(&mut t, names(&["1"]), t0 + RETRY * 2);
    assert_eq!(
        t.poll_action(),
        read("/r/1"),
        "an unread child is read again"
    );
    reply(&mut t, Reply::Data(b"x".to_vec()), t0 + RETRY * 2);
    assert_eq!(t.poll_action(), None);
    assert_eq!(t.poll_timeout(), Some(t0 + RETRY * 2 + resync));
    t.handle_timeout(t0 + RETRY * 2 + resync);
    assert_eq!(t.poll_action(), list("/r"));
}

#[test]
fn vanished_and_binary_children_are_skipped() {
    let now = Instant::now();
    let mut t = ChildrenTracker::new("r", Duration::from_secs(10));
    t.handle_event(Event::Connected, now);
    assert!(t.poll_action().is_some());
    reply(&mut t, names(&["1", "2", "3"]), now);
    assert_eq!(t.poll_action(), read("/r/1"));
    reply(&mut t, Reply::NoNode, now);
    assert_eq!(t.poll_action(), read("/r/2"));
    reply(&mut t, Reply::Data(vec![0xff, 0xfe]), now);
    assert_eq!(t.poll_action(), read("/r/3"));
    reply(&mut t, Reply::Data(b"ok".to_vec()), now);
    assert_eq!(t.poll_action(), None);
    assert_eq!(t.members(), ["ok"]);
}

#[test]
fn disconnect_keeps_members_and_reconnect_lists_again() {
    let now = Instant::now();
    let mut t = ChildrenTracker::new("r", Duration::from_secs(10));
    t.handle_event(Event::Connected, now);
    assert!(t.poll_action().is_some());
    reply(&mut t, names(&["1"]), now);
    assert!(t.poll_action().is_some());
    reply(&mut t, Reply::Data(b"a".to_vec()), now);
    t.handle_event(Event::Disconnected, now);
    t.handle_event(Event::Changed, now);
    assert_eq!(t.poll_action(), None, "offline");
    assert_eq!(t.members(), ["a"]);
    t.handle_event(Event::Connected, now);
    assert_eq!(t.poll_action(), list("/r"));
    // A reply after nothing was asked is ignored.
    reply(&mut t, names(&[]), now);
    reply(&mut t, names(&["9"]), now);
    assert_eq!(t.members(), Vec::<String>::new());
    assert_eq!(changes(&mut t), [added("a"), removed("a")]);
}
