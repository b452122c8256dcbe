//! Cluster sidecar logins against a real Redis: the start-up reset, online/offline counts
//! and `PubKey` events (vectors `redis_pubkey_phone_online`/`_offline`), 15 mobile ids
//! then reply 3, leases that expire when their comet stops refreshing, bindings resolved
//! through families, and reply 9 without Redis.

mod cluster_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::messages::LoginGrant;
use cluster_support::{Harness, PubKeyWatch, config, redis_con, unique_ip, unique_user};
use redis::Commands;

fn lease_key(user: i64, k: u8) -> String {
    format!("user:mobileid:{user}:{k}:lease")
}

fn cleanup(con: &mut redis::Connection, lip: &str, user: i64) {
    let _: () = redis::cmd("DEL")
        .arg(format!("Host:{lip}"))
        .arg(format!("user:mobileid:{user}"))
        .query(con)
        .unwrap();
    for k in 1..=15 {
        let _: i64 = con.del(lease_key(user, k)).unwrap();
    }
}

#[test]
fn login_logout_write_host_and_pubkey() {
    let mut con = redis_con();
    let mut watch = PubKeyWatch::new();
    let lip = unique_ip();
    let user = unique_user();
    let _: () = con.hset(format!("Host:{lip}"), "999", 3).unwrap();
    let node = Harness::start(config(&lip), 2);
    // The reset: the old hash is gone and msgbus is told.
    assert_eq!(watch.next_for(&lip), format!("0|{lip}|0"));
    let exists: bool = con.exists(format!("Host:{lip}")).unwrap();
    assert!(!exists);

    let grant = node.login(user).unwrap();
    assert_eq!((grant.session, grant.mobile), (user + 1, 1));
    // Same shape as the golden `17|127.0.0.1|1`.
    assert_eq!(watch.next_for(&lip), format!("{}|{lip}|1", user + 1));
    let count: i64 = con.hget(format!("Host:{lip}"), user + 1).unwrap();
    assert_eq!(count, 1);
    let member: bool = con.sismember(format!("user:mobileid:{user}"), 1).unwrap();
    assert!(member);
    let lease_ttl: i64 = con.pttl(lease_key(user, 1)).unwrap();
    assert!(lease_ttl > 0, "the mobile id is leased");

    let second = node.login(user).unwrap();
    assert_eq!(second.session, user + 2);
    assert_eq!(watch.next_for(&lip), format!("{}|{lip}|1", user + 2));

    node.logout(user + 1);
    assert_eq!(watch.next_for(&lip), format!("{}|{lip}|0", user + 1));
    let field: bool = con.hexists(format!("Host:{lip}"), user + 1).unwrap();
    let member: bool = con.sismember(format!("user:mobileid:{user}"), 1).unwrap();
    let lease: bool = con.exists(lease_key(user, 1)).unwrap();
    assert!(!field && !member && !lease);

    // A device twice: one online event, one offline event at the last logout.
    let device = -user;
    assert_eq!(node.login(device).unwrap().session, device);
    node.login(device).unwrap();
    assert_eq!(watch.next_for(&lip), format!("{device}|{lip}|1"));
    let count: i64 = con.hget(format!("Host:{lip}"), device).unwrap();
    assert_eq!(count, 2);
    node.logout(device);
    node.logout(device);
    node.logout(user + 2);
    assert_eq!(watch.next_for(&lip), format!("{device}|{lip}|0"));
    assert_eq!(watch.next_for(&lip), format!("{}|{lip}|0", user + 2));
    cluster_support::eventually("four logouts counted", || {
        node.metrics.logouts.load(Ordering::Relaxed) == 4
    });
    node.stop();
    cleanup(&mut con, &lip, user);
}

#[test]
fn fifteen_mobile_ids_then_reply_3() {
    let mut con = redis_con();
    let lip = unique_ip();
    let user = unique_user();
    let node = Harness::start(config(&lip), 1);
    let mut taken: Vec<u8> = (0..15).map(|_| node.login(user).unwrap().mobile).collect();
    taken.sort_unstable();
    assert_eq!(taken, (1..=15).collect::<Vec<u8>>());
    assert_eq!(node.login(user), Err(3));
    assert_eq!(node.login(user + 3), Err(3), "not a user id");
    node.logout(user + 7);
    assert_eq!(node.login(user).map(|g| g.mobile), Ok(7));
    assert_eq!(node.metrics.logins_refused.load(Ordering::Relaxed), 2);
    node.stop();
    cleanup(&mut con, &lip, user);
}

#[test]
fn a_lease_not_refreshed_frees_its_id() {
    let mut con = redis_con();
    let user = unique_user();
    let (lip_a, lip_b) = (unique_ip(), unique_ip());
    let mut short = config(&lip_a);
    short.lease_ttl = Duration::from_millis(900);
    let a = Harness::start(short, 1);
    assert_eq!(a.login(user).unwrap().mobile, 1);
    // A live comet keeps its lease past the TTL.
    std::thread::sleep(Duration::from_millis(1500));
    let token: Option<String> = con.get(lease_key(user, 1)).unwrap();
    assert!(token.is_some_and(|t| t.starts_with(&lip_a)), "refreshed");
    // The comet dies without logging out (its thread stops; nothing is released).
    a.stop();
    let b = Harness::start(config(&lip_b), 1);
    assert_eq!(b.login(user).unwrap().mobile, 2, "k = 1 is still leased");
    // An id leaked without any lease (an original Go comet) is free at once.
    let _: i64 = con.sadd(format!("user:mobileid:{user}"), 3).unwrap();
    assert_eq!(b.login(user).unwrap().mobile, 3);
    assert_eq!(b.metrics.mobile_reclaimed.load(Ordering::Relaxed), 1);
    std::thread::sleep(Duration::from_millis(1000));
    let grant = b.login(user).unwrap();
    assert_eq!(grant.mobile, 1, "the expired lease is taken over");
    assert_eq!(b.metrics.mobile_reclaimed.load(Ordering::Relaxed), 2);
    b.stop();
    cleanup(&mut con, &lip_a, user);
    cleanup(&mut con, &lip_b, user);
}

#[test]
fn bindings_resolve_through_families() {
    let mut con = redis_con();
    let lip = unique_ip();
    let (alone, head, member) = (unique_user(), unique_user(), unique_user());
    let (d_alone, d_head, d_member, d_orphan) = (-alone - 1, -head - 1, -member - 1, -alone - 2);
    let _: () = redis::pipe()
        .sadd(
            format!("u:{alone}:devices"),
            &[d_alone.to_string(), "junk".into()],
        )
        .hset("device:owner", d_alone, alone)
        .hset("user:family", head, head)
        .hset("user:family", member, head)
        .sadd(format!("family:{head}"), &[head, member])
        .sadd(format!("u:{head}:devices"), d_head)
        .sadd(format!("u:{member}:devices"), d_member)
        .hset("device:owner", d_member, member)
        .query(&mut con)
        .unwrap();
    let node = Harness::start(config(&lip), 1);
    let sorted = |grant: LoginGrant| {
        let mut bound = grant.bound;
        bound.sort_unstable();
        bound
    };
    assert_eq!(sorted(node.login(alone).unwrap()), vec![d_alone]);
    let mut family_devices = vec![d_head, d_member];
    family_devices.sort_unstable();
    assert_eq!(sorted(node.login(member).unwrap()), family_devices);
    assert_eq!(sorted(node.login(head).unwrap()), family_devices);
    assert_eq!(sorted(node.login(d_alone).unwrap()), vec![alone]);
    let mut family = vec![head, member];
    family.sort_unstable();
    assert_eq!(sorted(node.login(d_member).unwrap()), family);
    let orphan = node.login(d_orphan).unwrap();
    assert_eq!((orphan.session, orphan.bound), (d_orphan, vec![]));
    node.stop();
    for user in [alone, head, member] {
        cleanup(&mut con, &lip, user);
    }
}

#[test]
fn without_redis_logins_get_9_and_nothing_stops() {
    let lip = unique_ip();
    let mut cfg = config(&lip);
    cfg.redis = bus::redis_target::RedisTarget::parse("127.0.0.1:1", None).unwrap();
    let node = Harness::start(cfg, 1);
    assert_eq!(node.login(unique_user()), Err(9));
    assert_eq!(node.login(-5), Err(9));
    node.logout(-5);
    let push = node.admin(bus::messages::Admin::Push {
        ids: vec![16],
        msg_id: 1,
        body: vec![1],
    });
    assert!(push.is_err());
    assert_eq!(node.metrics.logins_redis_error.load(Ordering::Relaxed), 2);
    cluster_support::eventually("deferred logout", || {
        node.metrics.logouts_deferred.load(Ordering::Relaxed) == 1
    });
    node.stop();
}
