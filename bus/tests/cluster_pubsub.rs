//! Cluster sidecar subscriptions against a real Redis: pushes (`PubCommonMsg:*`) become
//! one `Deliver` per shard with users expanded, device ids only on a pusher comet;
//! `PubDeviceUsers` becomes `Binding`, `PubModifiedPasswdUser` becomes `Kick`; the admin
//! push publishes (and comes back through the subscription); admin bindings are refused.

mod cluster_support;

use bus::messages::{Admin, Payload, ToShard};
use cluster_support::{Harness, config, redis_con, unique_ip, unique_user};
use redis::Commands;

fn is_push_with(body: &[u8]) -> impl Fn(&ToShard) -> bool + '_ {
    move |m| matches!(m, ToShard::Deliver { payload: Payload::Push { body: b, .. }, .. } if &b[..] == body)
}

fn delivered(msg: ToShard) -> (Vec<i64>, u16) {
    match msg {
        ToShard::Deliver {
            ids,
            payload: Payload::Push { msg_id, .. },
        } => (ids.to_vec(), msg_id),
        other => panic!("not a push: {other:?}"),
    }
}

#[test]
fn a_push_reaches_every_shard_with_users_expanded() {
    let mut con = redis_con();
    let node = Harness::start(config(&unique_ip()), 2);
    node.wait_subscribed(1);
    let body = format!("body|{}", unique_user()).into_bytes();
    let mut payload = b"16|".to_vec();
    payload.extend_from_slice(&body);
    let _: i64 = con.publish("PubCommonMsg:0x36", &payload).unwrap();
    for shard in 0..2 {
        let (ids, msg_id) = delivered(node.next(shard, is_push_with(&body)));
        assert_eq!(ids, (17..=31).collect::<Vec<i64>>());
        assert_eq!(msg_id, 0x36);
    }
}

#[test]
fn device_ids_only_on_a_pusher_comet() {
    let mut con = redis_con();
    let plain = Harness::start(config(&unique_ip()), 1);
    let mut cfg = config(&unique_ip());
    cfg.pusher = true;
    let pusher = Harness::start(cfg, 1);
    plain.wait_subscribed(1);
    pusher.wait_subscribed(1);
    let body = format!("dev|{}", unique_user()).into_bytes();
    let mut payload = b"-9,x,33|".to_vec();
    payload.extend_from_slice(&body);
    let _: i64 = con.publish("PubCommonMsg:54", &payload).unwrap();
    let (ids, msg_id) = delivered(pusher.next(0, is_push_with(&body)));
    assert_eq!((ids, msg_id), (vec![-9, 33], 54));
    let (ids, _) = delivered(plain.next(0, is_push_with(&body)));
    assert_eq!(ids, vec![33], "a concrete mobile id is a valid target");
}

#[test]
fn bind_events_and_password_changes_reach_every_shard() {
    let mut con = redis_con();
    let node = Harness::start(config(&unique_ip()), 2);
    node.wait_subscribed(1);
    let user = unique_user();
    let device = -user;
    let _: i64 = con
        .publish("PubDeviceUsers", format!("{device}|{user}|1"))
        .unwrap();
    let _: i64 = con
        .publish("PubDeviceUsers", format!("{device}|{user}|0"))
        .unwrap();
    let _: i64 = con
        .publish("PubModifiedPasswdUser", user.to_string())
        .unwrap();
    for shard in 0..2 {
        let binding = |bound: bool| {
            move |m: &ToShard| {
                matches!(m, ToShard::Binding { device: d, user: u, bound: b }
                    if *d == device && *u == user && *b == bound)
            }
        };
        node.next(shard, binding(true));
        node.next(shard, binding(false));
        node.next(
            shard,
            |m| matches!(m, ToShard::Kick { user: u } if *u == user),
        );
    }
}

#[test]
fn admin_push_publishes_and_bindings_are_refused() {
    let node = Harness::start(config(&unique_ip()), 2);
    node.wait_subscribed(1);
    let user = unique_user();
    let body = format!("admin|{user}").into_bytes();
    let answer = node.admin(Admin::Push {
        ids: vec![user],
        msg_id: 0x37,
        body: body.clone(),
    });
    assert!(
        answer.as_ref().is_ok_and(|a| a.contains("published to")),
        "{answer:?}"
    );
    for shard in 0..2 {
        let (ids, msg_id) = delivered(node.next(shard, is_push_with(&body)));
        assert_eq!((ids.len(), ids[0], msg_id), (15, user + 1, 0x37));
    }
    let refused = node.admin(Admin::Bind {
        device: -1,
        user: 16,
    });
    assert!(refused.is_err_and(|e| e.starts_with("cluster mode")));
}
