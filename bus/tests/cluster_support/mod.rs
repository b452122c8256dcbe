//! Shared by the `cluster_*` tests: a cluster sidecar driven over its channels with fake
//! shards (inboxes with a no-op waker), unique node IPs and user ids (the tests share one
//! Redis), a direct Redis connection, and polling helpers.
#![allow(dead_code, reason = "each test target uses only some of these helpers")]
#![allow(clippy::disallowed_methods, reason = "test harness, not pure code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::cluster::{Cluster, ClusterConfig, ClusterMetrics, Export, MsgbusSource, spawn_cluster};
use bus::messages::{Admin, AdminRequest, ConnRef, LoginGrant, ShardInbox, ToBus, ToShard, Wake};
use crossbeam_channel::{Receiver, Sender, bounded};

#[path = "../support/testenv.rs"]
pub mod testenv;

/// How long any expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

/// A running cluster sidecar and the far ends of its channels.
pub struct Harness {
    pub requests: Sender<ToBus>,
    pub admin: Sender<AdminRequest>,
    pub inboxes: Vec<Receiver<ToShard>>,
    pub metrics: Arc<ClusterMetrics>,
    pub node_ip: String,
    /// An upgrade's requests.
    pub export: Sender<Export>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The test Redis as `host:port`.
pub fn redis_addr() -> String {
    testenv::service_addr(testenv::REDIS)
}

/// A direct connection to the test Redis.
pub fn redis_con() -> redis::Connection {
    let client = redis::Client::open(format!("redis://{}/", redis_addr())).unwrap();
    let con = client.get_connection_with_timeout(WAIT).unwrap();
    con.set_read_timeout(Some(WAIT)).unwrap();
    con
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback IP no other test (this process or the msgbus tests) uses: `127.2xx.y.z`.
pub fn unique_ip() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        200 + pid % 50,
        (pid / 50) % 250,
        1 + n % 250
    )
}

/// A base user id (multiple of 16) no other test uses.
pub fn unique_user() -> i64 {
    let n = i64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let stamp = i64::try_from(nanos / 1000 % 1_000_000_000).unwrap();
    16 * (stamp * 1000 + n % 1000 + 1)
}

/// A config for `node_ip` with no msgbus.
pub fn config(node_ip: &str) -> ClusterConfig {
    let redis = bus::redis_target::RedisTarget::parse(&redis_addr(), None).unwrap();
    ClusterConfig::new(redis, node_ip, MsgbusSource::Static(Vec::new()))
}

impl Harness {
    /// Starts a sidecar with `shards` fake shards.
    pub fn start(config: ClusterConfig, shards: usize) -> Self {
        let node_ip = config.node_ip.clone();
        let (requests, requests_rx) = bounded(1024);
        let (admin, admin_rx) = bounded(16);
        let (stop, stop_rx) = bounded(1);
        let (export, export_rx) = bounded(1);
        let mut inboxes = Vec::new();
        let mut shard_inboxes = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = bounded(4096);
            inboxes.push(rx);
            shard_inboxes.push(ShardInbox {
                tx,
                waker: Arc::new(NoWake),
            });
        }
        let metrics = Arc::new(ClusterMetrics::default());
        let thread = spawn_cluster(Cluster {
            shards: shard_inboxes,
            requests: requests_rx,
            admin: admin_rx,
            stop: stop_rx,
            export: export_rx,
            config,
            metrics: metrics.clone(),
        })
        .unwrap();
        Self {
            requests,
            admin,
            inboxes,
            metrics,
            node_ip,
            export,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A connection reference on `shard`.
    pub fn conn(shard: u16, slot: u32) -> ConnRef {
        ConnRef {
            shard,
            slot,
            generation: 7,
        }
    }

    /// Logs `id` in from a connection on shard 0 and waits for the answer.
    pub fn login(&self, id: i64) -> Result<LoginGrant, u8> {
        let conn = Self::conn(0, 1);
        self.requests.send(ToBus::Login { conn, id }).unwrap();
        let answer = self.next(0, |m| matches!(m, ToShard::LoginDone { .. }));
        match answer {
            ToShard::LoginDone { conn: got, result } => {
                assert_eq!(got, conn);
                result
            }
            _ => unreachable!(),
        }
    }

    /// Sends a logout.
    pub fn logout(&self, session: i64) {
        self.requests.send(ToBus::Logout { session }).unwrap();
    }

    /// The next message on `shard`'s inbox that `wanted` accepts (others are skipped:
    /// pushes of other tests arrive everywhere); panics after [`WAIT`].
    pub fn next(&self, shard: usize, wanted: impl Fn(&ToShard) -> bool) -> ToShard {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.inboxes[shard].recv_deadline(deadline) {
                Ok(msg) if wanted(&msg) => return msg,
                Ok(_) => {}
                Err(_) => panic!("no expected message on shard {shard} within {WAIT:?}"),
            }
        }
    }

    /// Sends an admin request and waits for its answer.
    pub fn admin(&self, admin: Admin) -> Result<String, String> {
        let (reply, answer) = bounded(1);
        self.admin.send(AdminRequest { admin, reply }).unwrap();
        answer.recv_timeout(WAIT).unwrap()
    }

    /// Waits until the subscriber has subscribed `times` times.
    pub fn wait_subscribed(&self, times: u64) {
        eventually("subscribed", || {
            self.metrics.subscribed.load(Ordering::Relaxed) >= times
        });
    }

    /// Stops the sidecar and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Polls `check` every 20 ms until it holds; panics after [`WAIT`].
#[track_caller]
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `PubKey` listener: its own subscribed connection.
pub struct PubKeyWatch {
    pubsub: redis::PubSub<'static>,
}

impl PubKeyWatch {
    /// Subscribes (returns once Redis confirmed).
    pub fn new() -> Self {
        let con = Box::leak(Box::new(redis_con()));
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe("PubKey").unwrap();
        pubsub.set_read_timeout(Some(WAIT)).unwrap();
        Self { pubsub }
    }

    /// The next `PubKey` payload that mentions `|<lip>|`.
    pub fn next_for(&mut self, lip: &str) -> String {
        let needle = format!("|{lip}|");
        loop {
            let msg = self.pubsub.get_message().expect("a PubKey event in time");
            let payload: String = msg.get_payload().unwrap();
            if payload.contains(&needle) {
                return payload;
            }
        }
    }
    /// Every `PubKey` payload mentioning `|<lip>|` that arrives within `window`.
    pub fn all_for(&mut self, lip: &str, window: Duration) -> Vec<String> {
        let needle = format!("|{lip}|");
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.pubsub
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let Ok(msg) = self.pubsub.get_message() else {
                break;
            };
            let payload: String = msg.get_payload().unwrap();
            if payload.contains(&needle) {
                seen.push(payload);
            }
        }
        self.pubsub.set_read_timeout(Some(WAIT)).unwrap();
        seen
    }
}
