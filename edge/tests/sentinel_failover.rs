//! Redis Sentinel (issue 16): a master, a replica and three Sentinels of our own (the
//! `redis-server` that `scripts/test` installs, in `--sentinel` mode for the Sentinels), a
//! msgbus and two comets given `--rh sentinel://…/csmaster`, the RabbitMQ of `scripts/test`,
//! and a phone on comet A sending to a device on comet B every 50 ms while the device
//! uploads every 100 ms. The master is killed with kill -9. After the failover:
//! relays flow again (the time is printed: `benches/RESULTS.md` records it), nothing is
//! delivered twice, the new master holds both comets' online state (`Host:<lip>`) and
//! the phone's mobile-id lease, and every upload the device sent was acked and reached the
//! queue. The data servers take only an ACL user (the default user's password is not
//! given to anyone), so the comets and the msgbus authenticate as that user.

mod cluster_support;
mod support;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{bind, next_upload, testenv, unique, upload_queue};
use edge::config::{ClusterConfig, Config};
use support::*;
use tungstenite::Message;

const GROUP: &str = "csmaster";
/// The ACL user the comets and the msgbus authenticate as (`CLOUDSOCKET_REDIS_USER`).
const USER: &str = "cloudsocket";
const PASSWORD: &str = "sentinel-test-password";

fn auth() -> Option<bus::redis_target::RedisAuth> {
    Some(bus::redis_target::RedisAuth {
        username: Some(USER.into()),
        password: PASSWORD.into(),
    })
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Our own Redis group; every process is killed on drop.
struct Group {
    dir: PathBuf,
    master: u16,
    replica: u16,
    sentinels: Vec<u16>,
    children: Vec<(u16, Child)>,
}

impl Group {
    fn start() -> Group {
        let dir = PathBuf::from(testenv::service_addr(testenv::TMP))
            .join(format!("sentinel-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut g = Group {
            dir,
            master: free_port(),
            replica: free_port(),
            sentinels: (0..3).map(|_| free_port()).collect(),
            children: Vec::new(),
        };
        g.redis(g.master, &[]);
        let master = g.master.to_string();
        let replica_of = ["--replicaof", "127.0.0.1", &master, "--masteruser", USER];
        g.redis(g.replica, &replica_of);
        for port in g.sentinels.clone() {
            let conf = g.dir.join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {GROUP} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {GROUP} 1000\nsentinel failover-timeout {GROUP} 5000\n\
                 sentinel auth-user {GROUP} {USER}\nsentinel auth-pass {GROUP} {PASSWORD}\n",
                g.dir.display(),
                g.master
            );
            std::fs::write(&conf, text).unwrap();
            g.spawn(
                port,
                Command::new("redis-server").arg(&conf).arg("--sentinel"),
            );
        }
        g
    }

    fn redis(&mut self, port: u16, extra: &[&str]) {
        let dir = self.dir.to_str().unwrap().to_owned();
        let p = port.to_string();
        let args = [
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            &dir,
        ];
        // The default user has a password nobody here knows: only the ACL user gets in.
        let pass = format!(">{PASSWORD}");
        let acl = [USER, "on", &pass, "~*", "&*", "+@all"];
        let auth = [
            "--requirepass",
            "not-for-the-comets",
            "--masterauth",
            PASSWORD,
        ];
        let mut command = Command::new("redis-server");
        command.args(args).args(auth).arg("--user").args(acl);
        self.spawn(port, command.args(extra));
    }

    fn spawn(&mut self, port: u16, command: &mut Command) {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/test: run the tests with it)");
        self.children.push((port, child));
    }

    fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.children {
            if *p == port {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("sentinel://{}/{GROUP}", hosts.join(","))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection to a Sentinel (no AUTH) or, `as_user`, to a data server.
fn con_as(port: u16, as_user: bool) -> Option<redis::Connection> {
    let userinfo = if as_user {
        format!("{USER}:{PASSWORD}@")
    } else {
        String::new()
    };
    let client = redis::Client::open(format!("redis://{userinfo}127.0.0.1:{port}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(con)
}

fn con(port: u16) -> Option<redis::Connection> {
    con_as(port, false)
}

/// The master's port according to the first Sentinel that answers.
fn master_port(g: &Group) -> Option<u16> {
    g.sentinels.iter().find_map(|&s| {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(GROUP)
            .query(&mut con(s)?)
            .ok()?;
        Some(port)
    })
}

/// Until every Sentinel knows the replica and the two other Sentinels.
fn group_ready(g: &Group) -> bool {
    g.sentinels.iter().all(|&s| {
        let Some(mut c) = con(s) else { return false };
        let count = |what: &str, c: &mut redis::Connection| {
            redis::cmd("SENTINEL")
                .arg(what)
                .arg(GROUP)
                .query::<Vec<redis::Value>>(c)
                .map_or(0, |v| v.len())
        };
        count("replicas", &mut c) == 1 && count("sentinels", &mut c) == 2
    })
}

fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn comet(ip: &str, redis: &str, msgbus: &str) -> edge::node::Node {
    let mut config = Config::for_tests(1);
    config.node_ip = ip.to_owned();
    config.cluster = Some(ClusterConfig {
        redis: redis.to_owned(),
        zookeeper: String::new(),
        msgbus_root: String::new(),
        comet_root: String::new(),
        comet_root_udp: String::new(),
        msgbus: vec![msgbus.to_owned()],
        pusher: true,
        link_secret: None,
        zk_auth: None,
        redis_auth: auth(),
    });
    edge::node::Node::start(config).expect("comet starts")
}

/// A device upload (direct packet, msg id 0x30) carrying `seq`.
fn upload(device: i64, seq: u32) -> Vec<u8> {
    let mut out = vec![0u8; 36];
    out[0] = 0x82;
    out[16..24].copy_from_slice(&device.to_le_bytes());
    out[28..30].copy_from_slice(&0x30u16.to_le_bytes());
    out[30..32].copy_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(b"SNTL");
    out.extend_from_slice(&seq.to_le_bytes());
    edge_proto::frame::seal(&mut out).unwrap();
    out
}

#[test]
fn a_master_killed_under_load_fails_over_and_everything_flows_again() {
    let mut group = Group::start();
    wait(Duration::from_secs(30), "the Sentinel group", || {
        group_ready(&group)
    });
    let url = group.url();
    let (_amqp, mut queue) = testenv::within(Duration::from_secs(15), "RabbitMQ", upload_queue);

    let bus_addr = format!("127.0.0.1:{}", free_port());
    let tmp = PathBuf::from(testenv::service_addr(testenv::TMP));
    let mut config =
        bus::msgbus::Config::new(bus_addr.clone(), tmp.join(format!("spool-{}", unique())));
    config.redis = Some(bus::redis_target::RedisTarget::parse(&url, auth()).unwrap());
    config.brokers = vec![testenv::service_addr(testenv::AMQP)];
    let msgbus = bus::msgbus::Msgbus::start(config).expect("msgbus");
    let n = unique() % 200 + 20;
    let (ip_a, ip_b) = (format!("127.0.{n}.6"), format!("127.0.{n}.7"));
    let (a, b) = (comet(&ip_a, &url, &bus_addr), comet(&ip_b, &url, &bus_addr));

    let user = 16 * (unique() % 100_000_000 + 1);
    let device_id = -(unique() % 100_000_000 + 1);
    let mut master = con_as(group.master, true).expect("the master");
    bind(&mut master, device_id, user);
    // WAIT blocks up to its own 2 s when the replica is slow to acknowledge: read for
    // longer than that, or the connection's 2 s read timeout races it (EAGAIN).
    master
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let _: redis::Value = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut master)
        .unwrap();
    let (mut phone, reply) = login(a.ws_addrs[0], user);
    assert_eq!(reply.first(), Some(&0));
    let (mut device, reply) = login(b.ws_addrs[0], device_id);
    assert_eq!(reply.first(), Some(&0));
    wait(Duration::from_secs(20), "relays through the msgbus", || {
        let m = message(3, device_id, &u32::MAX.to_le_bytes());
        phone.send(Message::binary(m)).unwrap();
        device
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(device.read(), Ok(Message::Binary(b)) if b.len() == 28)
    });
    device
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();

    // The phone sends every 50 ms from its own thread; the device uploads every 100 ms.
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for seq in 0u32..600 {
                let at = start + Duration::from_millis(50 * u64::from(seq));
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                sent.lock().unwrap().push(Instant::now());
                if phone
                    .send(Message::binary(message(3, device_id, &seq.to_le_bytes())))
                    .is_err()
                {
                    break;
                }
            }
            phone
        })
    };
    let mut arrived: HashMap<u32, Vec<Instant>> = HashMap::new();
    let (mut uploads_sent, mut acked) = (0u32, HashSet::new());
    let mut killed_at = None;
    let mut login_probe = None;
    let connects_before = redis_connects(&a) + redis_connects(&b);
    while start.elapsed() < Duration::from_secs(31) {
        if killed_at.is_none() && start.elapsed() >= Duration::from_secs(3) {
            group.kill(group.master);
            killed_at = Some(Instant::now());
            login_probe = Some(probe_logins(a.ws_addrs[0], Instant::now()));
        }
        let upload_due = start.elapsed() < Duration::from_secs(30)
            && start.elapsed() >= Duration::from_millis(100 * u64::from(uploads_sent));
        if upload_due
            && device
                .send(Message::binary(upload(device_id, uploads_sent)))
                .is_ok()
        {
            uploads_sent += 1;
        }
        match device.read() {
            Ok(Message::Binary(m)) if m.len() == 28 => {
                let seq = u32::from_le_bytes(m[24..28].try_into().unwrap());
                arrived.entry(seq).or_default().push(Instant::now());
            }
            Ok(Message::Binary(m)) if m.len() == 44 && m[24] & 0x40 != 0 => {
                acked.insert(u32::from_le_bytes(m[40..44].try_into().unwrap()));
            }
            _ => {}
        }
    }
    let _phone = sender.join().unwrap();
    let killed_at = killed_at.unwrap();
    let sent = sent.lock().unwrap().clone();
    let logins_back = login_probe.unwrap().join().unwrap();
    eprintln!(
        "sentinel failover: a new phone's login succeeds again {logins_back:?} after the kill"
    );
    assert!(logins_back < Duration::from_secs(20), "logins work again");
    assert!(
        redis_connects(&a) + redis_connects(&b) >= connects_before + 2,
        "both comets reconnected to the new master"
    );

    // The failover happened, and the comets found the new master.
    wait(Duration::from_secs(10), "the failover", || {
        master_port(&group) == Some(group.replica)
    });
    report_and_check(&sent, &arrived, killed_at);
    let mut new_master = con_as(group.replica, true).expect("the new master");
    for ip in [&ip_a, &ip_b] {
        let online: usize = redis::cmd("HLEN")
            .arg(format!("Host:{ip}"))
            .query(&mut new_master)
            .unwrap();
        assert!(online >= 1, "Host:{ip} rebuilt on the new master");
    }
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg(format!("user:mobileid:{user}:*:lease"))
        .query(&mut new_master)
        .unwrap();
    assert_eq!(
        leases.len(),
        1,
        "the phone's lease on the new master: {leases:?}"
    );

    // Uploads: every one acked, every one in the queue.
    assert_eq!(acked.len() as u32, uploads_sent, "uploads acked");
    let mut stored = HashSet::new();
    while let Some((_, body)) = next_upload(&mut queue, Duration::from_secs(5)) {
        if body.len() == 44 && body[16..24] == device_id.to_le_bytes() {
            stored.insert(u32::from_le_bytes(body[40..44].try_into().unwrap()));
        }
        if stored.len() as u32 == uploads_sent {
            break;
        }
    }
    assert_eq!(stored.len() as u32, uploads_sent, "uploads in the queue");
    let rtt = &a.metrics.cluster.as_ref().unwrap().link_rtt;
    assert!(rtt.count() > 0, "link round trips sampled");
    a.shutdown();
    b.shutdown();
    msgbus.shutdown();
}

fn redis_connects(node: &edge::node::Node) -> u64 {
    let cluster = node.metrics.cluster.as_ref().unwrap();
    cluster
        .redis_connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// From `since`, a new phone logs in every 200 ms (a login needs Redis: the mobile-id
/// lease) until one is accepted; how long that took.
fn probe_logins(addr: std::net::SocketAddr, since: Instant) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        loop {
            let user = 16 * (unique() % 100_000_000 + 1);
            let (_ws, reply) = login(addr, user);
            if reply.first() == Some(&0) {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "no login for 30 s: {reply:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Nothing twice; the messages sent from 15 s after the kill on all arrived; prints how
/// long after the kill the first message sent after it arrived, and the last gap.
fn report_and_check(sent: &[Instant], arrived: &HashMap<u32, Vec<Instant>>, killed_at: Instant) {
    for (seq, times) in arrived {
        assert_eq!(
            times.len(),
            1,
            "message {seq} delivered {} times",
            times.len()
        );
    }
    let lost_after: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i] >= killed_at + Duration::from_secs(15))
        .filter(|&i| !arrived.contains_key(&(i as u32)))
        .collect();
    assert!(
        lost_after.is_empty(),
        "sent 15 s after the kill and lost: {lost_after:?}"
    );
    let flowing = (0..sent.len())
        .filter(|&i| sent[i] > killed_at && arrived.contains_key(&(i as u32)))
        .filter_map(|i| arrived[&(i as u32)].first())
        .min()
        .map(|t| t.duration_since(killed_at));
    let lost = sent.len() - arrived.len();
    eprintln!(
        "sentinel failover: {} sent, {} arrived, {lost} lost; the first message sent after the kill arrived {flowing:?} after it",
        sent.len(),
        arrived.len()
    );
    assert!(
        flowing.is_some_and(|f| f < Duration::from_secs(15)),
        "relays flow again"
    );
}
