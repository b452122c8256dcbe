//! The msgbus against a real Redis: `Host:*` loaded at start, `PubKey` events followed,
//! device → phones grouped per comet, phone → device to the comet holding the device,
//! `/usermap` and `/stat?type=app`, and a slow comet not stalling another.
//!
//! Every test uses its own comet IPs (127.0.0.x) and ids: they share one Redis.

mod msgbus_support;
#[path = "support/testenv.rs"]
mod testenv;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::msgbus::Msgbus;
use msgbus_support::{FakeComet, config, eventually, forward, http_get};
use redis::Commands;

const WAIT: Duration = Duration::from_secs(10);

fn redis_con() -> redis::Connection {
    let addr = testenv::service_addr(testenv::REDIS);
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    client.get_connection_with_timeout(WAIT).unwrap()
}

fn publish(con: &mut redis::Connection, event: &str) {
    let _: i64 = con.publish("PubKey", event).unwrap();
}

fn start_with_redis(spool: &str) -> Msgbus {
    let mut config = config(spool);
    config.redis = Some(redis_target(&testenv::service_addr(testenv::REDIS)));
    let bus = Msgbus::start(config).unwrap();
    eventually(WAIT, "the first Redis load", || {
        bus.metrics().redis_loads.load(Ordering::Relaxed) >= 1
    });
    bus
}

#[test]
fn pubkey_routes_device_to_phones_and_phone_to_device() {
    let mut con = redis_con();
    // Loaded with SCAN at start: the device is on comet B.
    let _: () = con.del("Host:127.0.0.3").unwrap();
    let _: i64 = con.hset("Host:127.0.0.3", "-1001", 1).unwrap();
    let bus = start_with_redis("routing");
    let mut a = FakeComet::connect(bus.local_addr(), "127.0.0.2", 0);
    let mut b = FakeComet::connect(bus.local_addr(), "127.0.0.3", 0);
    publish(&mut con, "1017|127.0.0.2|1");
    publish(&mut con, "1019|127.0.0.2|1");
    publish(&mut con, "1018|127.0.0.3|1");
    eventually(WAIT, "the user map", || {
        let map = http_get(&bus, "/usermap");
        map.contains("\"1017\":[\"127.0.0.2\"]")
            && map.contains("\"1018\":[\"127.0.0.3\"]")
            && map.contains("\"-1001\":[\"127.0.0.3\"]")
    });

    // Device → phones: one frame per comet with only its ids.
    let msg = forward(1, 80);
    b.send(-1001, &[1017, 1018, 1019, 1020], &msg);
    assert_eq!(a.recv(WAIT), Some((vec![1017, 1019], msg.clone())));
    assert_eq!(b.recv(WAIT), Some((vec![1018], msg.clone())));

    // Phone → device: to the comet holding the device, id written.
    let reply = forward(2, 90);
    a.send(1017, &[-1001], &reply);
    assert_eq!(b.recv(WAIT), Some((vec![-1001], reply)));
    assert_eq!(a.recv(Duration::from_millis(200)), None);

    // Offline removes the entry; a comet reset forgets the comet.
    publish(&mut con, "1017|127.0.0.2|0");
    publish(&mut con, "0|127.0.0.3|0");
    eventually(WAIT, "offline and reset", || {
        let map = http_get(&bus, "/usermap");
        map.contains("\"1019\"") && !map.contains("\"1017\"") && !map.contains("127.0.0.3")
    });
    let app = http_get(&bus, "/stat?type=app");
    assert!(app.contains("\"UpStreamIn\":2,"), "{app}");
    assert!(app.contains("\"CometCount\":2,"), "{app}");
    assert!(app.contains("\"DropNoHolder\":1"), "{app}");
    assert!(http_get(&bus, "/metrics").contains("msgbus_down_stream_out 3\n"));
    let _: () = con.del("Host:127.0.0.3").unwrap();
    bus.shutdown();
}

#[test]
fn a_slow_comet_does_not_stall_another() {
    let mut con = redis_con();
    let mut config = config("slow");
    config.redis = Some(redis_target(&testenv::service_addr(testenv::REDIS)));
    config.comet_queue_frames = 64;
    let bus = Msgbus::start(config).unwrap();
    eventually(WAIT, "the first Redis load", || {
        bus.metrics().redis_loads.load(Ordering::Relaxed) >= 1
    });
    let _slow = FakeComet::connect_with_rcvbuf(bus.local_addr(), "127.0.0.8", 0, Some(4096));
    let mut fast = FakeComet::connect(bus.local_addr(), "127.0.0.9", 0);
    let mut device = FakeComet::connect(bus.local_addr(), "127.0.0.10", 1);
    publish(&mut con, "3001|127.0.0.8|1");
    publish(&mut con, "3002|127.0.0.9|1");
    eventually(WAIT, "the user map", || {
        let map = http_get(&bus, "/usermap");
        map.contains("\"3001\"") && map.contains("\"3002\"")
    });

    let big = forward(7, 30_000);
    let small = forward(8, 60);
    let started = Instant::now();
    // In lockstep: every frame to the fast comet arrives while the slow one's socket and
    // queue fill up (300 × 30 kB is past both).
    for i in 0..300 {
        device.send(-3000, &[3001], &big);
        device.send(-3000, &[3002], &small);
        let got = fast.recv(WAIT);
        assert_eq!(
            got,
            Some((vec![3002], small.clone())),
            "frame {i} to the fast comet"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the fast comet waited {elapsed:?}"
    );
    assert!(
        bus.metrics().queue_full.load(Ordering::Relaxed) > 0,
        "the slow comet's queue overflowed and was counted"
    );
    bus.shutdown();
}

fn redis_target(addr: &str) -> bus::redis_target::RedisTarget {
    bus::redis_target::RedisTarget::parse(addr, None).unwrap()
}
