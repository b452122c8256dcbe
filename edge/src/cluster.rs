//! A comet's place in a cluster: where its msgbuses are (ZooKeeper `/<zkroot>` children,
//! plus `--msgbus`), and its own ZooKeeper nodes (one per WebSocket URL under
//! `/<zkrootc>`, one UDP URL under `/<zkrootu>`, data `url,cpu,memTotal,memUsed,online`
//! refreshed every second).
//!
//! The ZooKeeper sessions run on keeper's sidecar threads; this module only builds their
//! inputs. Redis and the msgbus links are the bus's cluster sidecar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bus::cluster::MsgbusSource;
use keeper::zk::{Discovery, NodeSpec, Registration, ZkConfig};

use crate::config::{ClusterConfig, Config};
use crate::node::Node;

/// What this comet holds in ZooKeeper; dropping it leaves (its nodes go with its session).
#[derive(Default)]
pub struct ZooKeeper {
    /// Held for its drop: dropping it ends the watch (and the feed to the bus).
    _discovery: Option<Discovery>,
    /// Held for its drop: dropping it closes the session, so the nodes go.
    registration: Option<Registration>,
}

impl ZooKeeper {
    /// Whether every node of this comet is registered on the current session.
    pub fn registered(&self) -> bool {
        self.registration
            .as_ref()
            .is_none_or(|r| r.paths().iter().all(Option::is_some))
    }

    /// Leaves now: closes the registration's session (its nodes go at once, not a session
    /// timeout later) and ends the discovery.
    pub fn leave(mut self) {
        if let Some(registration) = self.registration.take() {
            registration.stop();
        }
    }
}

/// The msgbus addresses to follow: `--msgbus` alone, or with the `/<zkroot>` children.
pub fn discovery(cluster: &ClusterConfig) -> anyhow::Result<(MsgbusSource, Option<ZooKeeper>)> {
    if cluster.zookeeper.is_empty() {
        anyhow::ensure!(
            !cluster.msgbus.is_empty(),
            "cluster mode needs --zks or --msgbus to find a msgbus"
        );
        return Ok((MsgbusSource::Static(cluster.msgbus.clone()), None));
    }
    let zk_config = ZkConfig::new(cluster.zookeeper.clone()).with_auth(cluster.zk_auth.clone());
    let discovery = Discovery::spawn(zk_config, &cluster.msgbus_root)?;
    let members = discovery.members.clone();
    let fixed = cluster.msgbus.clone();
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("zk-msgbus".into())
        .spawn(move || {
            for list in members.iter() {
                let mut addrs = fixed.clone();
                for data in list {
                    if edge_proto::zk::MsgbusNode::parse(data.as_bytes()).is_ok()
                        && !addrs.contains(&data)
                    {
                        addrs.push(data);
                    }
                }
                if tx.send(addrs).is_err() {
                    return;
                }
            }
        })?;
    Ok((
        MsgbusSource::Watch(rx),
        Some(ZooKeeper {
            _discovery: Some(discovery),
            registration: None,
        }),
    ))
}

/// Registers the comet's URLs once its listeners are bound.
pub fn register(
    cluster: &ClusterConfig,
    config: &Config,
    node: &Node,
    zk: Option<ZooKeeper>,
) -> anyhow::Result<Option<ZooKeeper>> {
    if cluster.zookeeper.is_empty() {
        return Ok(zk);
    }
    let online = Arc::new(AtomicU64::new(0));
    let sampled = |root: &str, url: String| {
        let mut data = keeper::load::comet_data(url, online.clone());
        let (online, metrics) = (online.clone(), node.metrics.clone());
        NodeSpec::sampled(root.to_owned(), move || {
            let total: i64 = metrics
                .shards
                .iter()
                .map(|m| m.ws_online.load(Ordering::Relaxed))
                .sum();
            online.store(total.max(0) as u64, Ordering::Relaxed);
            data()
        })
    };
    let mut nodes: Vec<NodeSpec> = node
        .ws_addrs
        .iter()
        .map(|a| {
            sampled(
                &cluster.comet_root,
                format!("ws://{}:{}/ws", config.node_ip, a.port()),
            )
        })
        .collect();
    // Each TLS listener registers as a wss:// URL in the same node-data format.
    nodes.extend(node.wss_addrs.iter().map(|a| {
        sampled(
            &cluster.comet_root,
            format!("wss://{}:{}/ws", config.node_ip, a.port()),
        )
    }));
    if let Some(http) = node.udpaddr_http {
        nodes.push(sampled(
            &cluster.comet_root_udp,
            format!(
                "http://{}:{}/api/device/udpaddr",
                config.node_ip,
                http.port()
            ),
        ));
    }
    let zk_config = ZkConfig::new(cluster.zookeeper.clone()).with_auth(cluster.zk_auth.clone());
    let registration = Registration::spawn(zk_config, nodes)?;
    let mut zk = zk.unwrap_or_default();
    zk.registration = Some(registration);
    Ok(Some(zk))
}
