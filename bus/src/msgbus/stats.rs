//! Counters of the msgbus: the original's names plus drops by reason.
//!
//! Owns: [`RouteStats`] (plain integers kept by the pure router), [`Metrics`] (relaxed
//! atomics bumped by the link, upload and Redis threads) and their rendering as the
//! `/stat?type=app` JSON object and Prometheus text. Does **not** own any socket or the
//! HTTP server (`status`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the router dropped something (each has a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// An upstream payload that does not decode.
    BadPayload,
    /// A destination id 0 (never routable at msgbus).
    ZeroId,
    /// A destination id no comet holds (and no UDP fallback applies).
    NoHolder,
    /// A destination id whose comets are known in Redis but not linked to this msgbus.
    CometNotLinked,
    /// An upload shorter than a direct packet (no message id at byte 28).
    UploadTooShort,
    /// An upload whose ACK could not be resealed (not a well-formed packet): no ACK.
    AckUnsealable,
    /// A confirmed upload whose device is on no linked comet: the ACK is lost.
    AckUnroutable,
    /// A `PubKey` payload that does not parse.
    BadPubKey,
    /// The comet name table is full.
    TooManyComets,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 9] = [
        Self::BadPayload,
        Self::ZeroId,
        Self::NoHolder,
        Self::CometNotLinked,
        Self::UploadTooShort,
        Self::AckUnsealable,
        Self::AckUnroutable,
        Self::BadPubKey,
        Self::TooManyComets,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadPayload => "bad_payload",
            Self::ZeroId => "zero_id",
            Self::NoHolder => "no_holder",
            Self::CometNotLinked => "comet_not_linked",
            Self::UploadTooShort => "upload_too_short",
            Self::AckUnsealable => "ack_unsealable",
            Self::AckUnroutable => "ack_unroutable",
            Self::BadPubKey => "bad_pubkey",
            Self::TooManyComets => "too_many_comets",
        }
    }
}

/// The router's counters (no atomics: one thread owns the router).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Frames received from comets (`UpStreamIn`).
    pub upstream_in: u64,
    /// Downstream frames handed to comet queues.
    pub downstream_queued: u64,
    /// Uploads handed to the publisher.
    pub uploads: u64,
    /// Device ids sent to a UDP comet because no comet was known to hold them.
    pub udp_fallback: u64,
    /// `PubKey` events applied.
    pub pubkey_events: u64,
    /// Full reloads of the user map from `Host:*`.
    pub reloads: u64,
    /// Gauge: frames parked for comets with no link (`Parked`).
    pub parked: u64,
    /// Gauge: their bytes (`ParkedBytes`).
    pub parked_bytes: u64,
    /// Drops by [`DropReason`] (indexed like [`DropReason::ALL`]).
    pub drops: [u64; DropReason::ALL.len()],
}

impl RouteStats {
    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(n) = self.drops.get_mut(reason as usize) {
            *n += 1;
        }
    }

    /// Counts `n` drops for `reason`.
    pub fn drop_n(&mut self, reason: DropReason, n: u64) {
        if let Some(count) = self.drops.get_mut(reason as usize) {
            *count += n;
        }
    }

    /// The drops for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }
}

/// Counters bumped by the shell threads (relaxed: they are statistics).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames written whole to a comet socket (`DownStreamOut`).
    pub downstream_out: AtomicU64,
    /// Frames dropped because the comet's queue was full.
    pub queue_full: AtomicU64,
    /// Frames lost with a failed or timed-out socket write (the link is closed).
    pub write_failed: AtomicU64,
    /// Frames written to a comet whose link died before its TCP acknowledged them.
    pub unacked_lost: AtomicU64,
    /// Upstream frames over the size limit, skipped (the link stays up).
    pub oversize: AtomicU64,
    /// Links refused at the handshake: not a link opening.
    pub bad_handshake: AtomicU64,
    /// Links refused: no secret, a wrong one, or the other kind of opening.
    pub unauthenticated: AtomicU64,
    /// Links whose opening did not finish within 5 s.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed at once: `max_links` links were already served.
    pub links_refused: AtomicU64,
    /// Failed accepts (EMFILE and the like), each followed by a short pause.
    pub accept_errors: AtomicU64,
    /// Links opened the original's way, without a secret.
    pub plain_links: AtomicU64,
    /// 1 when links need the secret (`--link-secret`), 0 when they are open to anyone.
    pub link_secret: AtomicU64,
    /// Status connections closed at once: the endpoint was serving its maximum.
    pub status_refused: AtomicU64,
    /// Status requests that did not arrive whole within their deadline.
    pub status_timeouts: AtomicU64,
    /// `/usermap` requests without the status token.
    pub status_unauthorized: AtomicU64,
    /// Status requests answered 400 (malformed or oversized head).
    pub status_bad: AtomicU64,
    /// Live comet links (`CometCount`).
    pub comets: AtomicU64,
    /// Connected RabbitMQ brokers (`RmqCount`).
    pub brokers: AtomicU64,
    /// Uploads confirmed by a broker (`MsgsToMq`).
    pub msgs_to_mq: AtomicU64,
    /// Uploads written to the spool.
    pub spooled: AtomicU64,
    /// Spooled uploads confirmed after replay.
    pub replayed: AtomicU64,
    /// Uploads dropped: the upload queue was full (no ACK; the device retries).
    pub upload_queue_full: AtomicU64,
    /// Uploads dropped: the spool was full or failed (no ACK).
    pub spool_full: AtomicU64,
    /// Records in the spool.
    pub spool_records: AtomicU64,
    /// Bytes in the spool.
    pub spool_bytes: AtomicU64,
    /// Unix ms of the oldest spooled record (0 when empty).
    pub spool_oldest_ms: AtomicU64,
    /// Redis (re)connections that completed subscribe + load.
    pub redis_loads: AtomicU64,
    /// Redis connection failures.
    pub redis_errors: AtomicU64,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Adds one to `counter`.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Every counter as `(name, value)`, original names first.
pub fn counters(route: &RouteStats, m: &Metrics, now_ms: u64) -> Vec<(&'static str, u64)> {
    let shell_bad = load(&m.queue_full) + load(&m.write_failed);
    let core_bad = route.drops_for(DropReason::CometNotLinked)
        + route.drops_for(DropReason::NoHolder)
        + route.drops_for(DropReason::AckUnroutable);
    let oldest = load(&m.spool_oldest_ms);
    let mut out = vec![
        ("UpStreamIn", route.upstream_in),
        ("DownStreamOut", load(&m.downstream_out)),
        ("DownStreamOutBad", shell_bad + core_bad),
        ("CometCount", load(&m.comets)),
        ("RmqCount", load(&m.brokers)),
        ("MsgsToMq", load(&m.msgs_to_mq)),
        ("DownStreamQueued", route.downstream_queued),
        ("Uploads", route.uploads),
        ("UdpFallback", route.udp_fallback),
        ("PubKeyEvents", route.pubkey_events),
        ("UserMapReloads", route.reloads),
        ("DropQueueFull", load(&m.queue_full)),
        ("DropWriteFailed", load(&m.write_failed)),
        ("DropUnackedLost", load(&m.unacked_lost)),
        ("DropOversize", load(&m.oversize)),
        ("DropBadHandshake", load(&m.bad_handshake)),
        ("DropUnauthenticated", load(&m.unauthenticated)),
        ("DropHandshakeTimeout", load(&m.handshake_timeouts)),
        ("DropLinksRefused", load(&m.links_refused)),
        ("AcceptErrors", load(&m.accept_errors)),
        ("PlainLinks", load(&m.plain_links)),
        ("LinkSecret", load(&m.link_secret)),
        ("DropStatusBusy", load(&m.status_refused)),
        ("DropStatusTimeout", load(&m.status_timeouts)),
        ("DropStatusUnauthorized", load(&m.status_unauthorized)),
        ("DropStatusBad", load(&m.status_bad)),
        ("DropUploadQueueFull", load(&m.upload_queue_full)),
        ("DropSpoolFull", load(&m.spool_full)),
        ("Spooled", load(&m.spooled)),
        ("Replayed", load(&m.replayed)),
        ("SpoolRecords", load(&m.spool_records)),
        ("SpoolBytes", load(&m.spool_bytes)),
        (
            "SpoolAgeMs",
            if oldest == 0 {
                0
            } else {
                now_ms.saturating_sub(oldest)
            },
        ),
        ("Parked", route.parked),
        ("ParkedBytes", route.parked_bytes),
        ("RedisLoads", load(&m.redis_loads)),
        ("RedisErrors", load(&m.redis_errors)),
    ];
    for reason in DropReason::ALL {
        out.push((drop_stat_name(reason), route.drops_for(reason)));
    }
    out
}

fn drop_stat_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::BadPayload => "DropBadPayload",
        DropReason::ZeroId => "DropZeroId",
        DropReason::NoHolder => "DropNoHolder",
        DropReason::CometNotLinked => "DropCometNotLinked",
        DropReason::UploadTooShort => "DropUploadTooShort",
        DropReason::AckUnsealable => "DropAckUnsealable",
        DropReason::AckUnroutable => "DropAckUnroutable",
        DropReason::BadPubKey => "DropBadPubKey",
        DropReason::TooManyComets => "DropTooManyComets",
    }
}

/// `{"UpStreamIn":1,...}`.
pub fn render_app_json(counters: &[(&'static str, u64)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in counters.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}\"{name}\":{value}");
    }
    out.push('}');
    out
}

/// Prometheus text: `msgbus_<snake name> <value>` per counter.
pub fn render_prometheus(counters: &[(&'static str, u64)], user_map_ids: usize) -> String {
    let mut out = String::new();
    for (name, value) in counters {
        let _ = writeln!(out, "msgbus_{} {value}", snake(name));
    }
    let _ = writeln!(out, "msgbus_user_map_ids {user_map_ids}");
    out.push_str(&crate::process_metrics::render());
    out
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_original_names() {
        let mut route = RouteStats {
            upstream_in: 3,
            ..RouteStats::default()
        };
        route.drop(DropReason::NoHolder);
        let m = Metrics::default();
        bump(&m.queue_full);
        let c = counters(&route, &m, 0);
        let json = render_app_json(&c);
        assert!(json.starts_with("{\"UpStreamIn\":3,\"DownStreamOut\":0,\"DownStreamOutBad\":2,"));
        let prom = render_prometheus(&c, 7);
        assert!(prom.contains("msgbus_up_stream_in 3\n"));
        assert!(prom.contains("msgbus_drop_no_holder 1\n"));
        assert!(prom.contains("msgbus_user_map_ids 7\n"));
    }
}
