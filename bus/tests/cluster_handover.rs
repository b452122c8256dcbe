//! The cluster sidecar across a zero-downtime upgrade (issue 15), against a real Redis:
//! the new sidecar takes the old one's online counts and leases instead of the start-up
//! reset, so `Host:<lip>` is never deleted and no lease lapses (the new one refreshes
//! them under the same tokens); sessions the shards did not hand over are logged out by
//! the new sidecar; a logout reaching the old one after it handed its state is left to
//! the new one (no double count), and run by the old one if the upgrade fails.

mod cluster_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bus::cluster::{Export, Inheritance, Snapshot};
use cluster_support::{
    Harness, PubKeyWatch, config, eventually, redis_con, unique_ip, unique_user,
};
use crossbeam_channel::bounded;
use redis::Commands;

fn lease_key(user: i64, k: u8) -> String {
    format!("user:mobileid:{user}:{k}:lease")
}

fn take(node: &Harness) -> Snapshot {
    let (reply, snapshot) = bounded(1);
    node.export.send(Export::Take(reply)).unwrap();
    snapshot.recv_timeout(cluster_support::WAIT).unwrap()
}

fn host(con: &mut redis::Connection, lip: &str) -> HashMap<i64, i64> {
    con.hgetall(format!("Host:{lip}")).unwrap()
}

#[test]
fn the_new_sidecar_keeps_host_and_leases_without_a_gap() {
    let mut con = redis_con();
    let mut watch = PubKeyWatch::new();
    let (lip, user) = (unique_ip(), unique_user());
    let ttl = Duration::from_millis(900);
    let mut old_config = config(&lip);
    old_config.lease_ttl = ttl;
    let old = Harness::start(old_config, 2);
    assert_eq!(watch.next_for(&lip), format!("0|{lip}|0"));
    let (phone, closed) = (old.login(user).unwrap(), old.login(user).unwrap());
    let device = -user;
    old.login(device).unwrap();
    old.login(device).unwrap();
    let token_of =
        |con: &mut redis::Connection, k| -> Option<String> { con.get(lease_key(user, k)).unwrap() };
    let token = token_of(&mut con, phone.mobile).expect("leased");

    let snapshot = take(&old);
    assert_eq!(snapshot.leases.len(), 2);
    assert!(snapshot.redis_synced);
    // Closed at the freeze, after the state was taken: the new sidecar's to log out.
    old.logout(closed.session);
    let mut new_config = config(&lip);
    new_config.lease_ttl = ttl;
    // The shards handed over the first phone and one of the device's two sessions.
    new_config.inherited = Some(Inheritance {
        snapshot,
        live: HashMap::from([(phone.session, 1), (device, 1)]),
    });
    let new = Harness::start(new_config, 2);
    let expected = HashMap::from([(phone.session, 1), (device, 1)]);
    let deadline = Instant::now() + cluster_support::WAIT;
    // Until the new sidecar's first tick `Host:<lip>` is the old one's; it is never gone.
    loop {
        let now = host(&mut con, &lip);
        assert!(
            now.contains_key(&phone.session),
            "Host:{lip} lost the phone: {now:?}"
        );
        if now == expected {
            break;
        }
        assert!(Instant::now() < deadline, "Host:{lip} is {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(token_of(&mut con, closed.mobile).is_none(), "released");
    // The old sidecar stops (the old process exits); two TTLs later the lease is alive,
    // under the same token: the new sidecar refreshed it.
    old.stop();
    std::thread::sleep(2 * ttl);
    assert_eq!(token_of(&mut con, phone.mobile), Some(token));
    // No start-up reset was announced for the new sidecar.
    let events = watch.all_for(&lip, Duration::from_millis(300));
    assert!(
        !events.contains(&format!("0|{lip}|0")),
        "a reset: {events:?}"
    );
    new.logout(phone.session);
    new.logout(device);
    eventually("all logged out", || host(&mut con, &lip).is_empty());
    new.stop();
}

#[test]
fn a_failed_upgrade_runs_the_held_logouts() {
    let mut con = redis_con();
    let (lip, user) = (unique_ip(), unique_user());
    let node = Harness::start(config(&lip), 1);
    let grant = node.login(user).unwrap();
    let _ = take(&node);
    node.logout(grant.session);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host(&mut con, &lip).get(&grant.session), Some(&1), "held");
    node.export.send(Export::Resume).unwrap();
    eventually("logged out after the resume", || {
        host(&mut con, &lip).is_empty()
    });
    node.stop();
}
