//! Counters of a node: one [`ShardMetrics`] per shard (written only by its shard, with
//! relaxed atomics: no lock, no contention) and the renderers that read them all for the
//! status endpoints (`/stat?type=app` with the original's names, `/metrics` in the
//! Prometheus text format, with the cluster sidecar's counters in cluster mode).
//!
//! This module decides nothing; it counts.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bus::histogram::{Histogram, render_header};

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident),* $(,)?) => {
        /// The counters of one shard.
        #[derive(Debug, Default)]
        pub struct ShardMetrics {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// Open WebSocket connections (any state).
            pub ws_open: AtomicI64,
            /// Logged-in WebSocket sessions.
            pub ws_online: AtomicI64,
            /// Bytes held in outbound queues of blocked writers.
            pub outbound_queued_bytes: AtomicI64,
            /// Live UDP sessions.
            pub udp_sessions: AtomicI64,
            /// Longest shard turn seen, microseconds (a gauge, never reset).
            pub shard_turn_max_us: AtomicU64,
            /// Entries on the shard's timer wheel (set every tick).
            pub timer_entries: AtomicI64,
            /// Shard turn and tick times.
            pub turn_time: Histogram,
            /// WebSocket logins: from the upgrade to the login's ack.
            pub login_time: Histogram,
            /// TLS handshakes: from the accept to the handshake's end.
            pub tls_handshake_time: Histogram,
        }

        /// Every counter name with its help text, in declaration order.
        pub const COUNTERS: &[(&str, &str)] = &[$((stringify!($name), $doc)),*];

        impl ShardMetrics {
            fn values(&self) -> Vec<u64> {
                vec![$(self.$name.load(Ordering::Relaxed)),*]
            }
        }
    };
}

counters! {
    /// WebSocket connections accepted.
    ws_accepted,
    /// WebSocket upgrades completed.
    ws_upgraded,
    /// Upgrade requests refused (bad method, path, version or headers).
    ws_upgrade_refused,
    /// Logins accepted.
    login_ok,
    /// Logins refused: wrong parameters (reply 1).
    login_wrong_params,
    /// Logins refused: bad id or no free mobile id (reply 3).
    login_wrong_id,
    /// Logins refused: timestamp expired, in the future or zero (reply 4).
    login_wrong_timestamp,
    /// Logins refused: wrong signature (reply 6).
    login_wrong_md5,
    /// Logins refused: server error (reply 9).
    login_server_error,
    /// Connections closed for not upgrading within 10 s.
    handshake_timeout,
    /// Connections closed for not logging in within 60 s.
    login_timeout,
    /// Sessions closed for silence beyond three heartbeat periods.
    read_timeout,
    /// Heartbeats (`p`) answered.
    heartbeats,
    /// Terminal messages received (not heartbeats): the original's UpStreamIn.
    msgs_in,
    /// Messages written to terminals: the original's DownStreamOut.
    msgs_out,
    /// Messages handed to another shard.
    cross_shard_out,
    /// Messages received from another shard.
    cross_shard_in,
    /// Messages with no live destination.
    drop_no_destination,
    /// Messages dropped because a shard's mesh queue was full.
    drop_peer_queue_full,
    /// Requests dropped because the bus queue was full.
    drop_bus_queue_full,
    /// Cluster relays whose upstream frame does not encode (over 65 535 ids).
    drop_relay_too_large,
    /// Terminal messages shorter than 16 bytes (connection closed).
    drop_short_message,
    /// Malformed WebSocket frames (connection closed with 1002).
    malformed_frames,
    /// Frames above --max-message (connection closed with 1009).
    oversized_frames,
    /// Readers too slow for their outbound queue (closed with 1008).
    slow_reader_closed,
    /// Readers closed (1008) because the shard's outbound budget was spent.
    outbound_budget_closed,
    /// Uploads handed to the bus.
    uploads,
    /// Pushes delivered to terminals.
    pushes_out,
    /// Datagrams received.
    udp_datagrams_in,
    /// Turns that left datagrams in the UDP socket for the next turn (its read budget, 512 a turn, was spent).
    udp_read_budget_spent,
    /// Datagrams sent.
    udp_sent,
    /// Datagram sends that failed.
    udp_send_errors,
    /// Datagrams dropped: too short, wrong checks, bad lengths, unknown opcode.
    udp_drop_malformed,
    /// Datagrams dropped: stale or replayed sequence number.
    udp_drop_stale_seq,
    /// Datagrams dropped: no such session.
    udp_drop_unknown_session,
    /// Forward messages dropped: the session has not logged in.
    udp_drop_not_logged_in,
    /// Register, login or rename requests dropped: the session's last one still awaited the platform.
    udp_drop_request_pending,
    /// TLS handshakes completed with TLS 1.3.
    tls_handshakes_tls13,
    /// TLS handshakes completed with TLS 1.2.
    tls_handshakes_tls12,
    /// TLS handshakes that resumed an earlier session (a ticket or a session id).
    tls_resumptions,
    /// TLS handshakes that failed: not TLS (a plaintext client, garbage), a bad hello, an alert.
    tls_handshake_errors,
    /// Established TLS connections closed because the client sent a TLS 1.3 KeyUpdate or a TLS 1.2 renegotiation (neither is kept after the handshake).
    tls_key_updates_refused,
    /// Established TLS connections closed on a record that did not decrypt or parse.
    tls_record_errors,
    /// Upgrades: connections closed with 1012 and UDP sessions left out at a handover (TLS connections, logins and platform calls in flight).
    upgrade_closed,
    /// Connections closed at accept: their source IP holds --max-conns-per-ip.
    conns_per_ip_refused,
    /// Times a listener stopped accepting until the next second (--max-accept-rate).
    accept_paused,
    /// Accepts that failed (EMFILE and the like); the listener retries at the next tick.
    accept_errors,
    /// Connections closed for sending more than the login string before logging in.
    prelogin_refused,
    /// New sessions refused: the shard's session table is full.
    udp_drop_full,
    /// New-session requests (0xE0) answered with a cookie sid (nothing stored yet).
    udp_cookies_issued,
    /// New sessions refused: their source IP is over --new-session-rate.
    udp_drop_rate_limited,
    /// New sessions admitted from addresses beyond what the rate limiter tracks.
    udp_untracked_sources,
    /// Sessions that never logged in, ended to make room for new ones.
    udp_anonymous_evicted,
    /// Datagrams handed to the shard owning their session.
    udp_handed_over,
    /// Device heartbeats answered.
    udp_heartbeats,
    /// Commands answered with 1002 (0xE4, 0xE6, unknown).
    udp_bad_command,
    /// Device logins over UDP.
    udp_logins,
    /// UDP sessions expired.
    udp_expired,
    /// Platform calls refused because the platform queue was full.
    drop_platform_queue_full,
    /// Oldest sessions ended because their id reached --max-sessions-per-device.
    sessions_evicted,
    /// The session index and the records disagreed: a bug caught, logged and recovered from.
    invariant_broken,
    /// Shard turns (or ticks) longer than 100 ms.
    shard_slow_turns,
}

/// The `reason` label of a drop counter in `/metrics` (`drop_no_destination` →
/// `no_destination`, `udp_drop_malformed` → `udp_malformed`); `None` for other counters.
/// (`/stat?type=app` keeps every counter's own name.)
fn drop_reason(name: &str) -> Option<String> {
    if let Some(reason) = name.strip_prefix("drop_") {
        return Some(reason.to_owned());
    }
    name.strip_prefix("udp_drop_").map(|r| format!("udp_{r}"))
}

/// All shards' counters, shared read-only with the status endpoints.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// One entry per shard, by shard index.
    pub shards: Arc<[Arc<ShardMetrics>]>,
    /// The cluster sidecar's counters (cluster mode only): msgbus links, Redis, leases.
    pub cluster: Option<Arc<bus::cluster::ClusterMetrics>>,
    /// Refusals of the HTTP endpoints (status, admin, udpaddr).
    pub http: Arc<crate::http::HttpCounters>,
    /// The login salt is the original's public one (`cloudsocket_default_salt 1`).
    pub default_salt: bool,
    /// Upgrades (issue 15).
    pub upgrade: Arc<crate::upgrade::UpgradeMetrics>,
}

impl NodeMetrics {
    /// Fresh counters for `shards` shards.
    pub fn new(shards: usize) -> Self {
        NodeMetrics {
            shards: (0..shards)
                .map(|_| Arc::new(ShardMetrics::default()))
                .collect(),
            cluster: None,
            http: Arc::default(),
            default_salt: false,
            upgrade: Arc::default(),
        }
    }

    fn totals(&self) -> (Vec<u64>, i64, i64, i64) {
        let mut sum = vec![0u64; COUNTERS.len()];
        let (mut open, mut online, mut queued) = (0, 0, 0);
        for shard in self.shards.iter() {
            for (s, v) in sum.iter_mut().zip(shard.values()) {
                *s += v;
            }
            open += shard.ws_open.load(Ordering::Relaxed);
            online += shard.ws_online.load(Ordering::Relaxed);
            queued += shard.outbound_queued_bytes.load(Ordering::Relaxed);
        }
        (sum, open, online, queued)
    }

    fn total(&self, name: &str) -> u64 {
        let (sum, ..) = self.totals();
        COUNTERS
            .iter()
            .position(|(n, _)| *n == name)
            .map_or(0, |i| sum[i])
    }

    /// `/stat?type=app`: the original's counter names plus ours.
    pub fn render_app_json(&self) -> String {
        let (sum, _open, online, _) = self.totals();
        let mut out = String::from("{");
        let _ = write!(
            out,
            "\"ConnTotal\":{},\"ConnOnline\":{},\"UpStreamIn\":{},\"DownStreamOut\":{}",
            self.total("login_ok"),
            online,
            self.total("msgs_in"),
            self.total("msgs_out"),
        );
        for ((name, _), value) in COUNTERS.iter().zip(&sum) {
            let _ = write!(out, ",\"{name}\":{value}");
        }
        out.push('}');
        out
    }

    /// `/metrics` in the Prometheus text format: node totals and per-shard figures.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let values: Vec<Vec<u64>> = self.shards.iter().map(|m| m.values()).collect();
        for (i, (name, help)) in COUNTERS.iter().enumerate() {
            if drop_reason(name).is_some() {
                continue;
            }
            let _ = writeln!(out, "# HELP cloudsocket_{name}_total {}", help.trim());
            let _ = writeln!(out, "# TYPE cloudsocket_{name}_total counter");
            for (shard, v) in values.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cloudsocket_{name}_total{{shard=\"{shard}\"}} {}",
                    v[i]
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP cloudsocket_drops_total Messages, datagrams and requests dropped, by reason."
        );
        let _ = writeln!(out, "# TYPE cloudsocket_drops_total counter");
        for (i, (name, _)) in COUNTERS.iter().enumerate() {
            let Some(reason) = drop_reason(name) else {
                continue;
            };
            for (shard, v) in values.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cloudsocket_drops_total{{shard=\"{shard}\",reason=\"{reason}\"}} {}",
                    v[i]
                );
            }
        }
        type Gauge = (&'static str, &'static str, fn(&ShardMetrics) -> i64);
        type Timed = (&'static str, &'static str, fn(&ShardMetrics) -> &Histogram);
        let gauges: [Gauge; 6] = [
            (
                "timer_entries",
                "Entries on the shard's timer wheel.",
                |m| m.timer_entries.load(Ordering::Relaxed),
            ),
            ("udp_sessions", "Live UDP device sessions.", |m| {
                m.udp_sessions.load(Ordering::Relaxed)
            }),
            ("ws_connections", "Open WebSocket connections.", |m| {
                m.ws_open.load(Ordering::Relaxed)
            }),
            ("ws_sessions", "Logged-in WebSocket sessions.", |m| {
                m.ws_online.load(Ordering::Relaxed)
            }),
            (
                "outbound_queued_bytes",
                "Bytes queued for blocked writers.",
                |m| m.outbound_queued_bytes.load(Ordering::Relaxed),
            ),
            (
                "shard_turn_max_us",
                "Longest shard turn or tick seen, microseconds.",
                |m| m.shard_turn_max_us.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP cloudsocket_{name} {help}");
            let _ = writeln!(out, "# TYPE cloudsocket_{name} gauge");
            for (shard, m) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "cloudsocket_{name}{{shard=\"{shard}\"}} {}", get(m));
            }
        }
        let histograms: [Timed; 3] = [
            ("shard_turn_seconds", "Shard turn and tick times.", |m| {
                &m.turn_time
            }),
            (
                "login_seconds",
                "WebSocket logins, from the upgrade to the login's ack.",
                |m| &m.login_time,
            ),
            (
                "tls_handshake_seconds",
                "TLS handshakes, from the accept to the handshake's end.",
                |m| &m.tls_handshake_time,
            ),
        ];
        for (name, help, get) in histograms {
            let name = format!("cloudsocket_{name}");
            render_header(&mut out, &name, help);
            for (shard, m) in self.shards.iter().enumerate() {
                get(m).render(&mut out, &name, &format!("shard=\"{shard}\""));
            }
        }
        self.render_node(&mut out);
        self.upgrade.render(&mut out);
        out.push_str(&bus::process_metrics::render());
        if let Some(cluster) = &self.cluster {
            // Monotonic counters, except the gauges links_up, redis_up and mobile_leases.
            for (name, help, value) in cluster.described() {
                let kind = if bus::cluster::metrics::GAUGES.contains(&name) {
                    "gauge"
                } else {
                    "counter"
                };
                let help = help.trim();
                let _ = writeln!(out, "# HELP cloudsocket_cluster_{name} {help}");
                let _ = writeln!(out, "# TYPE cloudsocket_cluster_{name} {kind}");
                let _ = writeln!(out, "cloudsocket_cluster_{name} {value}");
            }
            let name = "cloudsocket_cluster_link_rtt_seconds";
            let help =
                "msgbus link round trip (the kernel's smoothed RTT), sampled each second per link.";
            render_header(&mut out, name, help);
            cluster.link_rtt.render(&mut out, name, "");
        }
        out
    }
}

impl NodeMetrics {
    /// The node-wide families: HTTP refusals by endpoint reason, and the salt gauge.
    fn render_node(&self, out: &mut String) {
        let h = &self.http;
        let _ = writeln!(
            out,
            "# HELP cloudsocket_http_refused_total HTTP requests refused, by reason.\n# TYPE cloudsocket_http_refused_total counter"
        );
        for (reason, c) in [
            ("busy", &h.busy),
            ("timeout", &h.timeouts),
            ("bad_request", &h.bad),
            ("unauthorized", &h.unauthorized),
        ] {
            let v = c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cloudsocket_http_refused_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cloudsocket_default_salt 1 while logins are signed with the original's public salt.\n# TYPE cloudsocket_default_salt gauge\ncloudsocket_default_salt {}",
            u8::from(self.default_salt)
        );
    }
}

/// Adds one to a counter.
#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter that only the calling thread writes: a shard's own counters
/// ([`ShardMetrics`]; scrapes on other threads only read them). A plain load and store, not
/// a locked read-modify-write: that instruction waits until every store before it has
/// drained — a relayed message's copy into an outbox — which made the counter of relayed
/// messages ~10 % of a shard's samples at 1 KiB (issue 13). Readers still see whole values.
#[inline]
pub fn add_own(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// [`add_own`] of one.
#[inline]
pub fn bump_own(counter: &AtomicU64) {
    add_own(counter, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_shards_and_render() {
        let m = NodeMetrics::new(2);
        bump(&m.shards[0].msgs_in);
        bump(&m.shards[1].msgs_in);
        bump(&m.shards[1].login_ok);
        let app = m.render_app_json();
        assert!(app.contains("\"UpStreamIn\":2"), "{app}");
        assert!(app.contains("\"ConnTotal\":1"), "{app}");
        let prom = m.render_prometheus();
        assert!(
            prom.contains("cloudsocket_msgs_in_total{shard=\"1\"} 1"),
            "{prom}"
        );
    }

    #[test]
    fn drops_are_one_family_with_a_reason() {
        let m = NodeMetrics::new(2);
        bump(&m.shards[1].udp_drop_malformed);
        bump(&m.shards[0].drop_no_destination);
        let prom = m.render_prometheus();
        for line in [
            "cloudsocket_drops_total{shard=\"1\",reason=\"udp_malformed\"} 1",
            "cloudsocket_drops_total{shard=\"0\",reason=\"no_destination\"} 1",
            "cloudsocket_drops_total{shard=\"0\",reason=\"platform_queue_full\"} 0",
        ] {
            assert!(prom.contains(line), "{line} in {prom}");
        }
        assert!(!prom.contains("cloudsocket_drop_no_destination_total"));
        assert!(!prom.contains("cloudsocket_udp_drop_"));
        assert!(m.render_app_json().contains("\"drop_no_destination\":1"));
    }

    #[test]
    fn process_families_are_exported() {
        let prom = NodeMetrics::new(1).render_prometheus();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value = prom
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in {prom}"));
            assert!(value >= 0.0, "{name}");
        }
    }

    #[test]
    fn cluster_counters_are_exported_in_cluster_mode() {
        let mut m = NodeMetrics::new(1);
        assert!(!m.render_prometheus().contains("cloudsocket_cluster_"));
        let cluster = Arc::new(bus::cluster::ClusterMetrics::default());
        cluster.relay_local.fetch_add(3, Ordering::Relaxed);
        m.cluster = Some(cluster);
        let text = m.render_prometheus();
        assert!(
            text.contains("\ncloudsocket_cluster_relay_local 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE cloudsocket_cluster_relay_local counter\n"));
        assert!(text.contains("# TYPE cloudsocket_cluster_links_up gauge\n"));
        assert!(text.contains("# HELP cloudsocket_cluster_relay_local Relays delivered"));
        assert!(
            text.contains("\ncloudsocket_cluster_links_up 0\n"),
            "{text}"
        );
    }
}
