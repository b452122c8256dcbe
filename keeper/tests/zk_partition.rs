//! A ZooKeeper server gone silent (issue 12 item 6), against the real ZooKeeper from
//! `scripts/test`: the registration's client reaches it first through a path that a
//! blackhole partition cuts (a forwarder inside a network namespace, no RST, no FIN), and
//! second directly. Once cut, its socket fails within about 5 s (keepalive and
//! `TCP_USER_TIMEOUT`, `keeper::zk::liveness`), the client moves to the second server
//! within the same session, and the node's changed data is written: seen by an observer
//! within 8 s, with the node still owned by the first session. Without liveness the 0.8
//! client waits on its own ping deadline, a session timeout or more (30 s here).
//!
//! Needs root, `ip` (iproute2) and `python3`, as `scripts/test` runs.

#[path = "../../bus/tests/support/netns.rs"]
mod netns;
#[path = "../../bus/tests/support/testenv.rs"]
mod testenv;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keeper::{NodeSpec, Registration, ZkConfig};
use netns::{FORWARDER, Net, forward};
use zookeeper::{WatchedEvent, ZooKeeper};

/// Long enough that only liveness, not the client's ping deadline, can explain a move
/// within the test's limit (the server's maximum is 20 ticks: 40 s in `scripts/test`).
const SESSION: Duration = Duration::from_secs(30);
/// Port of the forwarder inside the namespace.
const INSIDE_PORT: u16 = 2281;

#[test]
fn a_silent_server_is_left_within_seconds_and_the_session_survives() {
    let zk_addr = testenv::service_addr(testenv::ZK);
    let n = std::process::id() % 10_000;
    let mut net = Net::new("csz", 234, n);
    // Inside → our end of the veth → the real server on loopback.
    let outside = forward(&format!("{}:0", net.ours), zk_addr.clone());
    net.spawn(
        net.inside("python3")
            .args(["-c", FORWARDER, &net.theirs, &INSIDE_PORT.to_string()])
            .args([net.ours.as_str(), &outside.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let cut_path = format!("{}:{INSIDE_PORT}", net.theirs);
    testenv::wait_for(
        Duration::from_secs(10),
        "the forwarder in the namespace",
        || std::net::TcpStream::connect(&cut_path).ok().map(drop),
    );

    let root = testenv::unique_name("zkpart");
    let value = Arc::new(AtomicU64::new(1));
    let sampled = value.clone();
    let node = NodeSpec::sampled(format!("/{root}/"), move || {
        format!(
            "ws://10.0.0.1:1234/ws,0,0,0,{}",
            sampled.load(Ordering::SeqCst)
        )
        .into_bytes()
    });
    let config = ZkConfig {
        servers: format!("{cut_path},{zk_addr}"),
        session_timeout: SESSION,
        refresh: Duration::from_millis(200),
        resync: Duration::from_secs(1),
        auth: None,
    };
    let registration = Registration::spawn(config, vec![node]).expect("spawn");
    let path = testenv::wait_for(Duration::from_secs(15), "the node", || {
        registration.paths()[0].clone()
    });
    let observer = ZooKeeper::connect(&zk_addr, Duration::from_secs(10), |_: WatchedEvent| {})
        .expect("observer");
    let owner = |want: u64| {
        let (data, stat) = observer.get_data(&path, false).ok()?;
        String::from_utf8_lossy(&data)
            .ends_with(&format!(",{want}"))
            .then_some(stat.ephemeral_owner)
    };
    let first_owner = testenv::wait_for(Duration::from_secs(5), "the first data", || owner(1));

    net.partition(true);
    let cut_at = Instant::now();
    value.store(2, Ordering::SeqCst);
    let second_owner = testenv::wait_for(Duration::from_secs(20), "the data after the cut", || {
        owner(2)
    });
    let took = cut_at.elapsed();
    eprintln!("zk partition: data written {took:?} after the cut");
    assert!(
        took <= Duration::from_secs(8),
        "the silent server was left only after {took:?}"
    );
    assert_eq!(second_owner, first_owner, "the same session carried on");

    registration.stop();
    let _ = observer.delete(&path, None);
    let _ = observer.delete(&format!("/{root}"), None);
}
