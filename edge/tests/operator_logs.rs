//! What an operator reads (issue 16, logs): a msgbus and a comet, as processes logging JSON
//! (`--log-format json`), against the Redis from `scripts/test`. Each state change is one
//! line: the comet's link up, the msgbus's comet link up, the comet's link down when the
//! msgbus dies, and Redis connected; a broker that never answers is reported once at first
//! (then every tenth failure), not once per retry; a stranger's refused openings are
//! throttled to a line a second.

#[path = "../../bus/tests/support/testenv.rs"]
mod testenv;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A process whose stderr lines (JSON log records) arrive on a channel.
struct Logged {
    child: Child,
    lines: Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Logged {
    fn spawn(args: &[&str]) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudsocket"))
            .args(args)
            .args(["--log-format", "json", "--log-level", "info"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cloudsocket");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Anything that is not a JSON record (there should be none) is kept as text.
                let record = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send(record).is_err() {
                    break;
                }
            }
        });
        Logged {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a record whose message starts with `message`; returns it.
    #[track_caller]
    fn expect(&mut self, message: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.seen.iter().find(|r| text(r).starts_with(message)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(record) => self.seen.push(record),
                Err(_) => panic!("no {message:?} within {limit:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Every record so far with `message` (after reading what has arrived).
    fn count(&mut self, message: &str) -> usize {
        while let Ok(record) = self.lines.try_recv() {
            self.seen.push(record);
        }
        self.seen.iter().filter(|r| text(r) == message).count()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(record: &serde_json::Value) -> &str {
    record["fields"]["message"].as_str().unwrap_or("")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn state_changes_are_logged_once_each_and_refusals_are_throttled() {
    let redis = testenv::service_addr(testenv::REDIS);
    let (bus_port, dead_broker) = (free_port(), free_port());
    let bus = format!("127.0.0.1:{bus_port}");
    let spool = std::env::temp_dir().join(format!("cloudsocket-logs-{}", std::process::id()));
    let amqp = format!("amqp://guest:secret@127.0.0.1:{dead_broker}/%2f");
    let mut msgbus = Logged::spawn(&[
        "msgbus",
        "--addr",
        &bus,
        "--sh",
        &format!("127.0.0.1:{}", free_port()),
        "--rh",
        &redis,
        "--amqp",
        &amqp,
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    msgbus.expect("online map loaded from Redis", Duration::from_secs(20));
    let refused = msgbus.expect("RabbitMQ cannot connect", Duration::from_secs(20));
    let broker = refused["fields"]["broker"].as_str().unwrap_or("");
    assert!(
        !broker.contains("secret"),
        "the password reached the log: {broker}"
    );

    let mut comet = Logged::spawn(&[
        "comet",
        "--insecure-default-salt",
        "--cores",
        "0",
        "--rh",
        &redis,
        "--msgbus",
        &bus,
        "--ports",
        &format!(":{}", free_port()),
        "--sh",
        &format!("127.0.0.1:{}", free_port()),
        "--hudp",
        &format!("127.0.0.1:{}", free_port()),
        "--hhttp",
        &format!("127.0.0.1:{}", free_port()),
        "--upload-log",
        spool.with_extension("log").to_str().unwrap(),
    ]);
    let up = comet.expect("msgbus link up", Duration::from_secs(20));
    assert_eq!(up["fields"]["msgbus"].as_str(), Some(bus.as_str()));
    comet.expect("Redis connected", Duration::from_secs(20));
    msgbus.expect("comet link up", Duration::from_secs(10));

    // Strangers' openings: 50 refusals within a second make one or two lines.
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(&bus) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
        }
    }
    let started = Instant::now();
    msgbus.expect("link from", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    msgbus.count("");
    let lines = msgbus
        .seen
        .iter()
        .filter(|r| text(r).starts_with("link from"))
        .count();
    assert!(lines <= 2, "{lines} lines for 50 refusals");

    // The broker keeps failing (retries back off from 100 ms): still one line.
    assert_eq!(msgbus.count("RabbitMQ cannot connect"), 1);

    drop(msgbus);
    comet.expect("msgbus link down; redialling", Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_file(spool.with_extension("log"));
}
