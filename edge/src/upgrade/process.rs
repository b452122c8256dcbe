//! The node process's side of an upgrade (issue 15): starting on what an old process
//! handed over (and confirming only once this one can serve all of it), and running one
//! from a running node (exiting once the new process took over).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{config, node, upgrade};

/// Starts the node: on fresh sockets, or, when an upgrade started this process, on what
/// the old process handed over (then the shards wait until the old one lets go).
pub(crate) fn start_node(config: &config::Config) -> anyhow::Result<node::Node> {
    let Some(incoming) = upgrade::inherit::incoming(config.cores.len()) else {
        return node::Node::start(config.clone());
    };
    let incoming = incoming.map_err(|e| anyhow::anyhow!("upgrade refused: {e}"))?;
    let (connections, sessions) = incoming.inherited.shards.iter().fold((0, 0), |(c, u), s| {
        let (ws, udp) = edge_proto::handover::tally(&s.records);
        (c + ws, u + udp)
    });
    let (socket, inherited) = incoming.into_parts();
    let links = inherited.cluster.as_ref().map(|c| c.links_up);
    let node = match node::Node::start_with(config.clone(), Some(inherited)) {
        Ok(node) => node,
        Err(e) => {
            socket.refuse(&e.to_string());
            return Err(anyhow::anyhow!("upgrade refused: {e}"));
        }
    };
    if let Some(links) = links {
        let deadline = std::time::Instant::now() + JOIN_WAIT;
        if let Some(missing) = node.wait_joined(links, deadline) {
            // The old process's deadline is running: confirm anyway (the links and the
            // registration keep trying), and say what was missing.
            tracing::warn!(%missing, "upgrade: confirming before the cluster is joined");
        }
    }
    let mut deliver = |shard, records| node.deliver_released(shard, records);
    let (go, refused) = socket
        .confirm(config.cores.len(), &mut deliver)
        .map_err(|e| anyhow::anyhow!("upgrade abandoned by the old process: {e}"))?;
    node.open_gate();
    let m = &node.metrics.upgrade;
    let set = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
    set(&m.last_stall_us, go.stalled_ms * 1000);
    set(&m.last_connections, connections as u64);
    set(&m.last_udp_sessions, sessions as u64);
    set(&m.last_forwarded, go.forwarded);
    set(&m.last_dropped, go.dropped + refused as u64);
    tracing::info!(
        connections,
        udp_sessions = sessions,
        stalled_ms = go.stalled_ms,
        forwarded = go.forwarded,
        dropped = go.dropped,
        refused,
        "upgrade: took over"
    );
    Ok(node)
}

/// How long a new process in cluster mode waits for its msgbus links and ZooKeeper nodes
/// before it confirms.
const JOIN_WAIT: Duration = Duration::from_secs(3);

/// Runs an upgrade; on success exits the process at once (closing nothing: the new process
/// holds every socket), on failure reports it and returns (the node serves on).
pub(crate) fn try_upgrade(
    node: &mut node::Node,
    binary: &std::path::Path,
    timeout: Duration,
    mut reply: Option<std::os::unix::net::UnixStream>,
) {
    use std::io::Write as _;
    let request = upgrade::Request {
        binary: binary.to_owned(),
        args: std::env::args_os().skip(1).collect(),
        timeout,
    };
    let mut say = |line: &str| {
        tracing::info!("upgrade: {line}");
        if let Some(r) = reply.as_mut() {
            let _ = writeln!(r, "{line}");
        }
    };
    match upgrade::hand_over(node, &request, &mut say) {
        Ok(report) => {
            say(&format!(
                "upgraded: pid {} -> {}, {} connections and {} UDP sessions handed over, serving stopped for {:.1} ms, {:.1} ms in all; {} messages held meanwhile forwarded, {} dropped",
                std::process::id(),
                report.pid,
                report.connections,
                report.udp_sessions,
                report.stalled.as_secs_f64() * 1e3,
                report.total.as_secs_f64() * 1e3,
                report.forwarded,
                report.dropped
            ));
            // The new process registered its own nodes before it confirmed.
            node.leave_zookeeper();
            // Under systemd the unit follows the new process, not this one's exit.
            if upgrade::systemd::notify(&format!("MAINPID={}", report.pid)) {
                upgrade::systemd::barrier(Duration::from_secs(2));
            }
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        Err(e) => {
            node.metrics
                .upgrade
                .failures
                .fetch_add(1, Ordering::Relaxed);
            say(&format!("failed: {e}; serving on"));
        }
    }
}
