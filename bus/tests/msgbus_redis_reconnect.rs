//! The msgbus resubscribes and reloads `Host:*` after Redis drops its connections (the
//! original's pub/sub silently died). Alone in its binary: it kills every pub/sub client.

mod msgbus_support;
#[path = "support/testenv.rs"]
mod testenv;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::msgbus::Msgbus;
use msgbus_support::{config, eventually, http_get};
use redis::Commands;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn resubscribes_and_reloads_after_a_redis_disconnect() {
    let addr = testenv::service_addr(testenv::REDIS);
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut con = client.get_connection_with_timeout(WAIT).unwrap();
    let _: () = con.del("Host:127.0.0.30").unwrap();
    let mut config = config("reconnect");
    config.redis = Some(bus::redis_target::RedisTarget::parse(&addr, None).unwrap());
    let bus = Msgbus::start(config).unwrap();
    eventually(WAIT, "the first load", || {
        bus.metrics().redis_loads.load(Ordering::Relaxed) == 1
    });

    // Drop the subscription, and change the state while it is down.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    let _: i64 = con.hset("Host:127.0.0.30", "-4001", 1).unwrap();
    eventually(WAIT, "the reload", || {
        bus.metrics().redis_loads.load(Ordering::Relaxed) >= 2
    });
    assert!(http_get(&bus, "/usermap").contains("\"-4001\":[\"127.0.0.30\"]"));

    // And events flow again.
    let _: i64 = con.publish("PubKey", "4017|127.0.0.30|1").unwrap();
    eventually(WAIT, "the event after the reconnect", || {
        http_get(&bus, "/usermap").contains("\"4017\":[\"127.0.0.30\"]")
    });
    assert!(bus.metrics().redis_errors.load(Ordering::Relaxed) >= 1);
    let _: () = con.del("Host:127.0.0.30").unwrap();
    bus.shutdown();
}
