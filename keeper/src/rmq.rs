//! rmqkeeper (docs/protocol.md §9.5): registers a RabbitMQ broker in ZooKeeper while its
//! management API says it is alive, and removes it when not.
//!
//! Owns: [`RmqConfig`], the health check ([`check_health`]: `GET
//! <url>/api/aliveness-test/<vhost>` with basic auth; healthy iff the JSON body has
//! `"status":"ok"`, whatever the HTTP status), the health thread, and [`RmqKeeper`].
//! The node (`<amqp addr>,MsgTopic` under `/<zkroot>`) is one
//! [`crate::zk::Registration`] node, enabled while healthy — so after a ZooKeeper
//! reconnect there is still exactly one node (the original created a new one each time,
//! docs/protocol.md §10.4).
//!
//! Does **not** own: the command line (`edge::cli`), AMQP itself (only the management API
//! is asked), or the node data format (`edge_proto::zk::RabbitNode`).
//!
//! Differences from the original: the default root is `Rabbitmq`, the root msgbus watches
//! (the original rmqkeeper defaulted to lowercase `rabbitmq`, so with defaults msgbus
//! never saw it); a check never takes longer than `min(interval, 5 s)`.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use edge_proto::zk::RabbitNode;

use crate::http::{BaseUrl, HttpError, escape_segment};
use crate::zk::{Error, NodeSpec, Registration, ZkConfig};

/// The root msgbus watches for brokers (`-zkrootr`).
pub const DEFAULT_ROOT: &str = "Rabbitmq";
/// The longest a single health check may take.
const CHECK_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// What rmqkeeper watches and where it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmqConfig {
    /// The broker's AMQP `host:port`, published as the node data (`-h`).
    pub amqp_addr: String,
    /// Management API base URL with credentials (`-url`).
    pub management_url: String,
    /// The vhost of the aliveness test (`-vh`).
    pub vhost: String,
    /// Time between checks (`-d`).
    pub interval: Duration,
    /// ZooKeeper servers and session.
    pub zk: ZkConfig,
    /// Root to register under (`-zkroot`).
    pub root: String,
}

/// A running rmqkeeper: its health thread and its registration.
pub struct RmqKeeper {
    stop: Sender<()>,
    health: Option<JoinHandle<Registration>>,
}

// === RmqConfig ===

impl RmqConfig {
    /// The original's defaults with the given ZooKeeper servers.
    pub fn new(zk: ZkConfig) -> Self {
        Self {
            amqp_addr: "127.0.0.1:5672".into(),
            management_url: "http://guest:guest@127.0.0.1:15672".into(),
            vhost: "/".into(),
            interval: Duration::from_secs(10),
            zk,
            root: DEFAULT_ROOT.into(),
        }
    }

    /// The node data: `<amqp addr>,MsgTopic`.
    pub fn node_data(&self) -> Vec<u8> {
        let mut data = Vec::new();
        RabbitNode::new(&self.amqp_addr).write_to(&mut data);
        data
    }
}

// === RmqKeeper ===

impl RmqKeeper {
    /// Validates the URL, starts the registration (disabled until the first healthy check)
    /// and the health thread, which checks at once and then every `interval`.
    pub fn spawn(config: RmqConfig) -> Result<Self, Error> {
        let url = BaseUrl::parse(&config.management_url).map_err(|why| Error::Url {
            url: config.management_url.clone(),
            why,
        })?;
        if config.amqp_addr.is_empty() || config.amqp_addr.contains(',') {
            return Err(Error::Url {
                url: config.amqp_addr.clone(),
                why: "the AMQP address must be a non-empty host:port without commas",
            });
        }
        let mut node = NodeSpec::fixed(config.root.clone(), config.node_data());
        node.enabled = false;
        let registration = Registration::spawn(config.zk.clone(), vec![node])?;
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let health = std::thread::Builder::new()
            .name("rmq-health".into())
            .spawn(move || health_loop(&url, &config, registration, &stop_rx))?;
        Ok(Self {
            stop,
            health: Some(health),
        })
    }

    /// Stops checking, deletes the node (closing the session) and joins the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(health) = self.health.take()
            && let Ok(registration) = health.join()
        {
            registration.stop();
        }
    }
}

impl Drop for RmqKeeper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn health_loop(
    url: &BaseUrl,
    config: &RmqConfig,
    registration: Registration,
    stop: &Receiver<()>,
) -> Registration {
    let timeout = config
        .interval
        .clamp(Duration::from_millis(100), CHECK_TIMEOUT_MAX);
    let mut healthy = false;
    let mut first = true;
    loop {
        let started = Instant::now();
        let check = check_health(url, &config.vhost, timeout);
        let now_healthy = *check.as_ref().unwrap_or(&false);
        // The first check is always reported, so a broker down from the start is seen too.
        if std::mem::take(&mut first) && !now_healthy {
            let why = check.as_ref().err().map(ToString::to_string);
            tracing::warn!(vhost = %config.vhost, ?why, "RabbitMQ unhealthy at start: not registering it");
        }
        if now_healthy != healthy {
            healthy = now_healthy;
            if healthy {
                tracing::info!(vhost = %config.vhost, "RabbitMQ healthy: registering it");
            } else {
                tracing::warn!(vhost = %config.vhost, "RabbitMQ unhealthy: unregistering it");
            }
            registration.set_enabled(0, healthy);
        }
        let wait = config.interval.saturating_sub(started.elapsed());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return registration,
        }
    }
}

/// Asks the management API whether `vhost` is alive.
pub fn check_health(url: &BaseUrl, vhost: &str, timeout: Duration) -> Result<bool, HttpError> {
    let path = format!("/api/aliveness-test/{}", escape_segment(vhost));
    Ok(is_alive(&url.get(&path, timeout)?))
}

/// Whether an aliveness-test body is a JSON object with `"status": "ok"`.
pub fn is_alive(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("status")?.as_str().map(|s| s == "ok"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliveness_bodies() {
        assert!(is_alive(br#"{"status":"ok"}"#));
        assert!(is_alive(br#" { "status" : "ok", "x": 1 } "#));
        for bad in [
            &br#"{"status":"failed","reason":"x"}"#[..],
            br#"{"error":"not_authorised"}"#,
            br#"["status","ok"]"#,
            br#"{"status":"OK"}"#,
            b"status ok",
            b"",
        ] {
            assert!(!is_alive(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn defaults_and_node_data() {
        let config = RmqConfig::new(ZkConfig::new("zk"));
        assert_eq!(config.root, "Rabbitmq");
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.node_data(), b"127.0.0.1:5672,MsgTopic");
    }

    #[test]
    fn bad_urls_fail_at_spawn() {
        let mut config = RmqConfig::new(ZkConfig::new("127.0.0.1:1"));
        config.management_url = "https://h".into();
        assert!(matches!(
            RmqKeeper::spawn(config.clone()),
            Err(Error::Url { .. })
        ));
        config.management_url = "http://h".into();
        config.amqp_addr = "a,b".into();
        assert!(matches!(RmqKeeper::spawn(config), Err(Error::Url { .. })));
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let url = BaseUrl::parse(&format!("http://g:g@{addr}")).expect("url");
        assert!(check_health(&url, "/", Duration::from_secs(1)).is_err());
    }
}
