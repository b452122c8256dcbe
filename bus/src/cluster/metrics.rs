//! Counters of the cluster sidecar: relaxed atomics bumped by its threads, read whole by
//! whoever holds the [`ClusterMetrics`] (the status endpoint, tests).
//!
//! Does **not** format or export them (`/metrics` does).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of the cluster sidecar (relaxed; monotonic unless named a gauge).
        #[derive(Debug, Default)]
        pub struct ClusterMetrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// msgbus link round trips: the kernel's smoothed RTT of each link, sampled
            /// once a second by its writer.
            pub link_rtt: crate::histogram::Histogram,
        }

        impl ClusterMetrics {
            /// Every counter with its name, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }

            /// Every counter with its name and its doc comment (for `# HELP`).
            pub fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((
                    stringify!($name),
                    concat!($($doc),*),
                    self.$name.load(Ordering::Relaxed),
                ),)*]
            }
        }
    };
}

counters! {
    /// Redis connections after which `Host:<lip>` was rewritten from the comet's own counts.
    redis_resyncs,
    /// Logins granted.
    logins_ok,
    /// Logins refused with reply 3 (no free mobile id, bad id).
    logins_refused,
    /// Logins refused with reply 9 (Redis unavailable or failing).
    logins_redis_error,
    /// Grants undone because the shard's inbox was full.
    logins_undone,
    /// Logouts written to Redis.
    logouts,
    /// Logouts queued for a retry (Redis unavailable).
    logouts_deferred,
    /// Deferred logouts dropped (retry queue full; the lease TTL frees the id).
    logouts_dropped,
    /// Mobile ids taken over from a lease that had expired.
    mobile_reclaimed,
    /// Lease refresh rounds written.
    lease_refreshes,
    /// Leases found held by another session at refresh.
    lease_lost,
    /// Leases re-taken at refresh after they had expired unclaimed.
    lease_retaken,
    /// Redis connections opened by the request thread.
    redis_connects,
    /// Redis command or connection errors on the request thread.
    redis_errors,
    /// Frames handed to a msgbus link.
    relays,
    /// Frames dropped: no msgbus link came up before the hold queue overflowed.
    relay_no_link,
    /// Times a link's queue was full (the frame is held and retried).
    relay_queue_full,
    /// Frames dropped: too large to encode, or in the batch being written when the link failed.
    relay_dropped,
    /// Frames written to a link that died before the msgbus's TCP acknowledged them (lost).
    relay_unacked_lost,
    /// Frames taken back from a link that went down (held, then sent on the next link up).
    relay_reclaimed,
    /// Relays delivered on this comet without a msgbus (none was up; ids held here).
    relay_local,
    /// Msgbus links established (handshake done).
    link_connects,
    /// Msgbus link connect or handshake failures.
    link_connect_errors,
    /// Established msgbus links that dropped.
    link_drops,
    /// Link openings whose msgbus did not prove it knows the link secret.
    link_auth_failures,
    /// Gauge: 1 when links open with the link secret, 0 when with the original's byte.
    link_secret,
    /// Downstream frames received.
    downstream_frames,
    /// Downstream frames that did not decode, oversize ones, or ones with no ids.
    downstream_bad,
    /// Route messages a shard's full inbox refused.
    route_dropped,
    /// Redis subscriptions established (each session counts once).
    subscribed,
    /// Subscription sessions ended by an error.
    pubsub_errors,
    /// Pushes delivered to the shards.
    pushes,
    /// Pub/sub payloads that did not parse or had no valid id.
    pubsub_bad,
    /// Binding events delivered.
    bindings,
    /// Password-change kicks delivered.
    kicks,
    /// Messages to shards dropped by a full inbox (pushes, bindings, kicks).
    broadcast_dropped,
    /// UDP session records written (`SETEX`).
    session_writes,
    /// UDP session records deleted.
    session_deletes,
    /// Gauge: msgbus links up (set every tick).
    links_up,
    /// Gauge: 1 while the request thread holds a Redis connection (set every tick).
    redis_up,
    /// Gauge: phone sessions holding a mobile-id lease (set every tick).
    mobile_leases,
    /// UDP session updates dropped (write-behind table full).
    session_dropped,
    /// Write-behind flushes that failed (kept for the next one).
    session_flush_errors,
}

/// The counters that are gauges (they go down as well as up).
pub const GAUGES: &[&str] = &["links_up", "redis_up", "mobile_leases", "link_secret"];

/// Sets gauge `gauge` to `value`.
pub(crate) fn set(gauge: &AtomicU64, value: usize) {
    gauge.store(value as u64, Ordering::Relaxed);
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to `counter`.
pub(crate) fn bump_by(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
