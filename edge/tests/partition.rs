//! A silent partition between a comet and its msgbus (issue 12 item 6), against the real
//! Redis from `scripts/test`: the msgbus runs as a process in its own network namespace,
//! joined to ours by a veth pair, and blackhole routes on both sides drop every packet
//! between them for 20 s — no RST, no FIN, no ICMP. A phone sends to a device on the same
//! comet every 100 ms throughout. The comet notices the dead link within about 5 s
//! (keepalive, `TCP_USER_TIMEOUT`) and then delivers locally: every message that arrives
//! does so within 6 s of being sent, none twice, and the only ones lost were sent inside
//! the detection window and are counted (`relay_unacked_lost` and the msgbus's
//! `DropUnackedLost`). The original link protocol has no acknowledgements, so frames
//! already written to the dead link are not resent: resending could deliver twice.
//!
//! Needs root and `ip` (iproute2), as `scripts/test` runs; without them it fails and
//! says so.

mod cluster_support;
#[path = "../../bus/tests/support/netns.rs"]
mod netns;
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{bind, redis, testenv, unique};
use edge::config::{ClusterConfig, Config};
use netns::{Net, forward};
use support::*;
use tungstenite::Message;

const SECRET: &[u8] = b"partition-test-secret";

/// The msgbus's counters (its status endpoint, reached once the partition healed).
fn msgbus_stats(addr: &str) -> HashMap<String, u64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /stat?type=app HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn comet(ip: &str, msgbus: String) -> edge::node::Node {
    let mut config = Config::for_tests(2);
    config.node_ip = ip.to_owned();
    config.cluster = Some(ClusterConfig {
        redis: testenv::service_addr(testenv::REDIS),
        zookeeper: String::new(),
        msgbus_root: String::new(),
        comet_root: String::new(),
        comet_root_udp: String::new(),
        msgbus: vec![msgbus],
        pusher: true,
        link_secret: Some(SECRET.to_vec()),
        zk_auth: None,
        redis_auth: None,
    });
    edge::node::Node::start(config).expect("comet starts")
}

#[test]
fn a_silent_partition_is_noticed_and_same_comet_traffic_flows_locally() {
    let n = std::process::id() % 10_000;
    let mut net = Net::new("csp", 233, n);
    let tmp = std::path::PathBuf::from(testenv::service_addr(testenv::TMP));
    let redis_via = forward(
        &format!("{}:0", net.ours),
        testenv::service_addr(testenv::REDIS),
    );
    let (bus_addr, bus_status) = (
        format!("{}:9923", net.theirs),
        format!("{}:29998", net.theirs),
    );
    let spool = tmp.join(format!("partition-spool-{n}"));
    net.spawn(
        net.inside(env!("CARGO_BIN_EXE_cloudsocket"))
            .arg("msgbus")
            .args(["--addr", &bus_addr, "--sh", &bus_status, "--admin-insecure"])
            .args([
                "--rh",
                &redis_via.to_string(),
                "--spool-dir",
                spool.to_str().unwrap(),
            ])
            .env(
                "CLOUDSOCKET_LINK_SECRET",
                std::str::from_utf8(SECRET).unwrap(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let node = comet(&net.ours, bus_addr);
    let cluster = node.metrics.cluster.clone().unwrap();
    let mut con = redis();
    let user = 16 * (unique() % 100_000_000 + 1);
    let device_id = -(unique() % 100_000_000 + 1);
    bind(&mut con, device_id, user);
    let (mut phone, reply) = login(node.ws_addrs[0], user);
    assert_eq!(reply.first(), Some(&0));
    let (mut device, reply) = login(node.ws_addrs[0], device_id);
    assert_eq!(reply.first(), Some(&0));
    assert!(
        testenv_wait(Duration::from_secs(20), || cluster
            .links_up
            .load(Ordering::Relaxed)
            >= 1),
        "the comet never linked to the msgbus in the namespace"
    );
    device
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    // 100 ms apart: a sequence number in each message; the send times kept.
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for seq in 0u32..330 {
                let at = start + Duration::from_millis(100 * u64::from(seq));
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                sent.lock().unwrap().push(Instant::now());
                let m = message(3, device_id, &seq.to_le_bytes());
                if phone.send(Message::binary(m)).is_err() {
                    break;
                }
            }
            phone
        })
    };
    let mut arrived: HashMap<u32, Vec<Instant>> = HashMap::new();
    let (cut, heal, end) = (
        Duration::from_secs(3),
        Duration::from_secs(23),
        Duration::from_secs(38),
    );
    let (mut cut_at, mut healed) = (None, false);
    while start.elapsed() < end {
        if cut_at.is_none() && start.elapsed() >= cut {
            net.partition(true);
            cut_at = Some(Instant::now());
        }
        if cut_at.is_some() && start.elapsed() >= heal && !healed {
            net.partition(false);
            healed = true;
        }
        match device.read() {
            Ok(Message::Binary(b)) if b.len() == 28 => {
                let seq = u32::from_le_bytes(b[24..28].try_into().unwrap());
                arrived.entry(seq).or_default().push(Instant::now());
            }
            Ok(_) | Err(_) => {}
        }
    }
    let _phone = sender.join().unwrap();
    let cut_at = cut_at.unwrap();
    let sent = sent.lock().unwrap().clone();
    check(&sent, &arrived, cut_at);

    // Every frame lost was counted by one side or the other.
    let lost = sent.len() - arrived.len();
    let stats = msgbus_stats(&bus_status);
    let counted = cluster.relay_unacked_lost.load(Ordering::Relaxed)
        + cluster.relay_dropped.load(Ordering::Relaxed)
        + stats.get("DropUnackedLost").copied().unwrap_or(0)
        + stats.get("DropWriteFailed").copied().unwrap_or(0);
    let local = cluster.relay_local.load(Ordering::Relaxed);
    eprintln!(
        "partition: {} sent, {} arrived, {lost} lost, {counted} counted lost, {local} delivered locally",
        sent.len(),
        arrived.len()
    );
    assert!(
        lost as u64 <= counted,
        "{lost} lost, {counted} counted; msgbus {stats:?}"
    );
    assert!(
        cluster.relay_local.load(Ordering::Relaxed) > 0,
        "delivered locally meanwhile"
    );
    node.shutdown();
}

/// Nothing twice; whatever arrived, within 6 s of being sent; whatever was lost, sent
/// inside the detection window (the 6 s after the cut, and the instant before it).
fn check(sent: &[Instant], arrived: &HashMap<u32, Vec<Instant>>, cut_at: Instant) {
    for (seq, times) in arrived {
        assert_eq!(
            times.len(),
            1,
            "message {seq} delivered {} times",
            times.len()
        );
        let late = times[0].duration_since(sent[*seq as usize]);
        assert!(
            late <= Duration::from_secs(6),
            "message {seq} arrived {late:?} after it was sent"
        );
    }
    for (seq, at) in sent.iter().enumerate() {
        if arrived.contains_key(&(seq as u32)) {
            continue;
        }
        let after_cut = at.saturating_duration_since(cut_at);
        let before_cut = cut_at.saturating_duration_since(*at);
        assert!(
            before_cut <= Duration::from_millis(300) && after_cut <= Duration::from_secs(6),
            "message {seq}, sent {after_cut:?} after the cut, was lost outside the detection window"
        );
    }
}

fn testenv_wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
