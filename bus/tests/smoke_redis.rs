//! Smoke test: the Redis that `scripts/test` starts (or `CLOUDSOCKET_TEST_REDIS` names)
//! answers PING and round-trips a key through the sync `redis` client.

#[path = "support/testenv.rs"]
mod testenv;

use std::time::Duration;

use redis::Commands;

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn redis_ping_and_set_get_round_trip() {
    let addr = testenv::service_addr(testenv::REDIS);
    let client = redis::Client::open(format!("redis://{addr}/")).expect("a valid Redis URL");
    let mut con = client
        .get_connection_with_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {addr}: {e}"));
    con.set_read_timeout(Some(TIMEOUT)).unwrap();
    con.set_write_timeout(Some(TIMEOUT)).unwrap();

    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");

    let key = testenv::unique_name("cloudsocket-smoke");
    let value = format!("value of {key}");
    // With a TTL, so a failed run cannot leave the key behind for long.
    let () = con.set_ex(&key, &value, 60).expect("SET");
    let got: Option<String> = con.get(&key).expect("GET");
    let deleted: u64 = con.del(&key).expect("DEL");
    assert_eq!(got.as_deref(), Some(value.as_str()));
    assert_eq!(deleted, 1);
    let gone: Option<String> = con.get(&key).expect("GET after DEL");
    assert_eq!(gone, None);
}
