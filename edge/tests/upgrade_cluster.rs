//! Zero-downtime upgrade of a comet in cluster mode (issue 15), with real Redis, ZooKeeper
//! and a msgbus (from `scripts/test`): comet A (in this process) holds a phone; comet B (a
//! process, `cloudsocket comet`) holds the phone's device and a second phone. B is upgraded
//! while the phone on A sends numbered messages to the device through the msgbus.
//! Throughout: every message reaches the device once and in order, `Host:<B>` keeps both
//! sessions, the second phone's mobile-id lease keeps its token and never lapses, and
//! ZooKeeper never lists the comets without B.

mod cluster_support;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{bind, comet, redis, registered_msgbus, testenv, unique};
use redis::Commands;
use support::process::{alive, exited, new_pid, spawn_node, upgrade};
use support::*;
use tungstenite::Message;

/// Logs in with retries while the comet's msgbus links and Redis come up.
fn login_when_ready(addr: std::net::SocketAddr, id: i64) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ws, reply) = login(addr, id);
        if reply.first() == Some(&0) {
            return ws;
        }
        assert!(Instant::now() < deadline, "login of {id}: {reply:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the Redis watcher saw go wrong while the upgrade ran.
#[derive(Debug, Default)]
struct Gaps {
    host: Vec<String>,
    lease: Vec<String>,
}

/// Polls Redis every 2 ms until `stop`: `Host:<lip>` must hold `sessions`, `lease` must
/// hold `token` with a TTL.
fn watch_redis(
    lip: String,
    sessions: Vec<i64>,
    lease: (String, String),
    stop: Arc<AtomicBool>,
    gaps: &mut Gaps,
) {
    let mut con = redis();
    while !stop.load(Ordering::Relaxed) {
        let host: HashMap<i64, i64> = con.hgetall(format!("Host:{lip}")).unwrap();
        for id in &sessions {
            if host.get(id) != Some(&1) {
                gaps.host.push(format!("{id}: {host:?}"));
            }
        }
        let token: Option<String> = con.get(&lease.0).unwrap();
        let ttl: i64 = con.pttl(&lease.0).unwrap();
        if token.as_deref() != Some(lease.1.as_str()) || ttl <= 0 {
            gaps.lease.push(format!("{token:?} ttl {ttl}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_cluster_comet_is_upgraded_without_a_gap() {
    let (bus, registration, root) = registered_msgbus("cs-msgbus-upgrade", None);
    let n = unique() % 200 + 20;
    let (ip_a, ip_b) = (format!("127.0.{n}.4"), format!("127.0.{n}.5"));
    let comets = format!("cs-comets-upgrade-{n}");
    let a = comet(&ip_a, &root, &comets);
    let b = spawn_node(&[
        "comet".into(),
        "--insecure-default-salt".into(),
        "--lip".into(),
        ip_b.clone().into(),
        "--rh".into(),
        testenv::service_addr(testenv::REDIS).into(),
        "--zks".into(),
        testenv::service_addr(testenv::ZK).into(),
        "--zkroot".into(),
        root.clone().into(),
        "--zkrootc".into(),
        comets.clone().into(),
        "--zkrootu".into(),
        format!("{comets}Udp").into(),
    ]);
    let b_url = format!("ws://{ip_b}:{}/ws", b.ws.port());
    let mut con = redis();
    let user = 16 * (unique() % 100_000_000 + 1);
    let (other, device) = (user + 16 * 7, -(unique() % 100_000_000 + 1));
    bind(&mut con, device, user);
    let mut phone = login_when_ready(a.ws_addrs[0], user);
    let mut dev = login_when_ready(b.ws, device);
    let (second, reply) = login(b.ws, other);
    assert_eq!(reply.first(), Some(&0));
    let lease_key = format!("user:mobileid:{other}:1:lease");
    let token: String = con.get(&lease_key).expect("the second phone's lease");
    // Through the msgbus both ways before the upgrade (links may still be dialling).
    let probe = message(3, device, b"probe");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        phone.send(Message::binary(probe.clone())).unwrap();
        dev.get_mut()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if matches!(dev.read(), Ok(Message::Binary(m)) if m.ends_with(b"probe")) {
            break;
        }
        assert!(Instant::now() < deadline, "no relay through the msgbus");
    }
    dev.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // ZooKeeper: every change of the comets' list, from now until the end.
    let discovery = keeper::zk::Discovery::spawn(
        keeper::zk::ZkConfig::new(testenv::service_addr(testenv::ZK)),
        &comets,
    )
    .unwrap();
    let lists = discovery.members.clone();
    let first = lists.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.iter().any(|d| d.starts_with(&b_url)), "{first:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, lip) = (stop.clone(), ip_b.clone());
        let lease = (lease_key.clone(), token.clone());
        std::thread::spawn(move || {
            let mut gaps = Gaps::default();
            watch_redis(lip, vec![device, other + 1], lease, stop, &mut gaps);
            gaps
        })
    };
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(m) = next_data(&mut dev) {
            let tail = String::from_utf8_lossy(&m[m.len().saturating_sub(12)..]).into_owned();
            if tail.contains("end") {
                break;
            }
            if let Some(n) = tail.split('#').nth(1).and_then(|n| n.parse::<u32>().ok()) {
                seen.push(n);
            }
        }
        (dev, seen)
    });
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while sending.load(Ordering::Relaxed) {
                let body = format!("load#{n:06}");
                phone
                    .send(Message::binary(message(3, device, body.as_bytes())))
                    .unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (phone, n)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let old = b.child.id();
    let (code, out) = upgrade(old, &[]);
    assert_eq!(code, 0, "{out}");
    eprintln!("{out}");
    assert!(out.contains("2 connections"), "{out}");
    let new = new_pid(&out);
    let mut b = b;
    assert!(exited(&mut b.child).success());
    std::thread::sleep(Duration::from_millis(500));
    sending.store(false, Ordering::Relaxed);
    let (mut phone, sent) = sender.join().unwrap();
    phone
        .send(Message::binary(message(3, device, b"the end")))
        .unwrap();
    let (mut dev, seen) = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let gaps = watcher.join().unwrap();

    assert_eq!(
        seen,
        (0..sent).collect::<Vec<_>>(),
        "every message once, in order ({out})"
    );
    assert!(
        gaps.host.is_empty(),
        "Host:{ip_b} had a gap: {:?}",
        &gaps.host[..gaps.host.len().min(5)]
    );
    assert!(
        gaps.lease.is_empty(),
        "the lease had a gap: {:?}",
        &gaps.lease[..gaps.lease.len().min(5)]
    );
    // ZooKeeper: the old node leaves only once the new one is there.
    let mut zookeeper = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut last, mut both) = (first, false);
    let count = |list: &[String]| list.iter().filter(|d| d.starts_with(&b_url)).count();
    while let Ok(list) = lists.recv_deadline(deadline) {
        if count(&list) == 0 {
            zookeeper.push(format!("{list:?}"));
        }
        both |= count(&list) == 2;
        last = list;
        if both && count(&last) == 1 {
            break;
        }
    }
    assert!(
        zookeeper.is_empty(),
        "ZooKeeper lost comet B: {zookeeper:?}"
    );
    assert_eq!(count(&last), 1, "the old process left: {last:?}");
    // Still both ways on the same connections, and the new process is B now.
    dev.send(Message::binary(message(3, 0, b"device->phone")))
        .unwrap();
    assert!((0..64).any(|_| next_data(&mut phone).is_some_and(|m| m.ends_with(b"device->phone"))));
    assert!(alive(new) && new != old);
    drop(second);
    discovery.stop();
    // SAFETY: kill(2) on the new comet's pid, ours to end.
    unsafe { libc::kill(new as i32, libc::SIGTERM) };
    drop(registration);
    a.shutdown();
    bus.shutdown();
}
