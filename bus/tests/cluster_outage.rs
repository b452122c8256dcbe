//! Redis going away and coming back (a private `redis-server` this test starts and kills):
//! logins get 9 meanwhile, a logout is deferred and written once Redis is back, the
//! request connection is re-dialled and the subscriber resubscribes (the original's did
//! neither, docs/protocol.md §10.4).

mod cluster_support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

use bus::messages::{Payload, ToShard};
use cluster_support::{Harness, config, eventually, unique_ip, unique_user};
use redis::Commands;

/// A private `redis-server`, killed (by its pid) when dropped, even if the test fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(port: u16) -> Server {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/test installs it)");
    eventually("private redis up", || {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .is_ok()
    });
    Server(child)
}

#[test]
fn redis_outage_defers_and_recovers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start_redis(port);
    let mut cfg = config(&unique_ip());
    cfg.redis = bus::redis_target::RedisTarget::parse(&format!("127.0.0.1:{port}"), None).unwrap();
    let node = Harness::start(cfg, 1);
    node.wait_subscribed(1);
    let user = unique_user();
    assert_eq!(node.login(user).map(|g| g.mobile), Ok(1));

    drop(server);
    node.logout(user + 1);
    eventually("logout deferred", || {
        node.metrics.logouts_deferred.load(Ordering::Relaxed) == 1
    });
    assert_eq!(node.login(user), Err(9));

    let _server = start_redis(port);
    node.wait_subscribed(2);
    eventually("deferred logout written", || {
        node.metrics.logouts.load(Ordering::Relaxed) == 1
    });
    assert_eq!(node.login(user).map(|g| g.mobile), Ok(1));
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = con.publish("PubCommonMsg:1", "16|back").unwrap();
    node.next(0, |m| {
        matches!(m, ToShard::Deliver { payload: Payload::Push { body, .. }, .. } if &body[..] == b"back")
    });
    node.stop();
}

#[test]
fn redis_restarted_empty_gets_the_online_state_back() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start_redis(port);
    let ip = unique_ip();
    let mut cfg = config(&ip);
    cfg.redis = bus::redis_target::RedisTarget::parse(&format!("127.0.0.1:{port}"), None).unwrap();
    let node = Harness::start(cfg, 1);
    node.wait_subscribed(1);
    let user = unique_user();
    let device = -user;
    assert_eq!(node.login(user).map(|g| g.mobile), Ok(1));
    assert!(node.login(device).is_ok());

    // Redis dies and comes back empty (no persistence): the comet writes its sessions back.
    drop(server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _server = start_redis(port);
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    eventually("Host:<lip> rebuilt", || {
        let host: std::collections::HashMap<String, i64> =
            con.hgetall(format!("Host:{ip}")).unwrap_or_default();
        host.get(&(user + 1).to_string()) == Some(&1) && host.get(&device.to_string()) == Some(&1)
    });
    // The counter is bumped after the pipeline's answer, which may come after the test
    // already sees its writes: wait for it too.
    eventually("the resync counted", || {
        node.metrics.redis_resyncs.load(Ordering::Relaxed) >= 1
    });
    // A logout after the rebuild counts down from the rebuilt state.
    node.logout(device);
    eventually("device offline", || {
        let host: std::collections::HashMap<String, i64> =
            con.hgetall(format!("Host:{ip}")).unwrap_or_default();
        !host.contains_key(&device.to_string())
    });
    node.stop();
}
