//! UDP sessions written behind to Redis (docs/protocol.md §9.3: `sess:dev:*`, `device:adr`).
//!
//! Shards report every session change ([`UdpSessionState`]) and every expiry; this table
//! keeps only the **latest** per sid and [`SessionWrites::flush`] writes them all in one
//! pipeline (the node calls it every ~200 ms), so a busy device costs one `SETEX` per
//! flush, not one per packet. A failed flush keeps the table for the next one; the table
//! is bounded (updates for new sids beyond it are counted and dropped).
//!
//! The JSON is byte-compatible with the original's Go encoding (field order, `null` for
//! no users, `LastHeartbeat` in RFC 3339 with Go's trimmed nanoseconds), so original UDP
//! comets and tools read it unchanged.
//!
//! Does **not** read sessions back: the owning shard holds the live state.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use edge_proto::device::Sid;

use super::metrics::{ClusterMetrics, bump};
use super::store::{Store, StoreError};
use crate::messages::UdpSessionState;

/// Sids kept between flushes.
const PENDING_MAX: usize = 65_536;
const DEVICE_ADR: &str = "device:adr";

/// What the next flush does for one sid.
#[derive(Debug)]
enum Pending {
    Write(UdpSessionState),
    Gone { device: i64 },
}

/// The write-behind table.
pub(crate) struct SessionWrites {
    ttl_secs: u64,
    pending: HashMap<[u8; 16], Pending>,
    metrics: Arc<ClusterMetrics>,
}

impl SessionWrites {
    /// A table writing sessions with a TTL of `ttl_secs` (`--uto`, at least 1).
    pub fn new(ttl_secs: u64, metrics: Arc<ClusterMetrics>) -> Self {
        Self {
            ttl_secs: ttl_secs.max(1),
            pending: HashMap::new(),
            metrics,
        }
    }

    /// Records the latest state of a session.
    pub fn update(&mut self, state: UdpSessionState) {
        self.put(state.sid, Pending::Write(state));
    }

    /// Records that a session ended.
    pub fn gone(&mut self, sid: [u8; 16], device: i64) {
        self.put(sid, Pending::Gone { device });
    }

    fn put(&mut self, sid: [u8; 16], pending: Pending) {
        if self.pending.len() >= PENDING_MAX && !self.pending.contains_key(&sid) {
            bump(&self.metrics.session_dropped);
            return;
        }
        self.pending.insert(sid, pending);
    }

    /// Writes everything pending in one pipeline; keeps it all when that fails.
    pub fn flush(&mut self, store: &mut Store) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl_secs;
        let pending = &self.pending;
        let result = store.run(|con, scripts| {
            let mut pipe = redis::pipe();
            for (sid, item) in pending {
                let sid_text = Sid(*sid).to_string();
                match item {
                    Pending::Write(state) => {
                        pipe.cmd("SETEX")
                            .arg(format!("sess:dev:{sid_text}"))
                            .arg(ttl)
                            .arg(session_json(state))
                            .ignore();
                        if state.device != 0 {
                            pipe.cmd("SETEX")
                                .arg(format!("sess:dev:sid:{}", state.device))
                                .arg(ttl)
                                .arg(&sid_text)
                                .ignore();
                            pipe.cmd("HSET")
                                .arg(DEVICE_ADR)
                                .arg(state.device)
                                .arg(go_addr(state.addr))
                                .ignore();
                        }
                    }
                    Pending::Gone { device } => {
                        pipe.invoke_script(
                            scripts
                                .session_gone
                                .key(format!("sess:dev:{sid_text}"))
                                .key(format!("sess:dev:sid:{device}"))
                                .key(DEVICE_ADR)
                                .arg(&sid_text)
                                .arg(*device),
                        )
                        .ignore();
                    }
                }
            }
            pipe.query::<()>(con)
        });
        match result {
            Ok(()) => {
                for item in self.pending.values() {
                    match item {
                        Pending::Write(_) => bump(&self.metrics.session_writes),
                        Pending::Gone { .. } => bump(&self.metrics.session_deletes),
                    }
                }
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                bump(&self.metrics.session_flush_errors);
                Err(e)
            }
        }
    }
}

/// The `sess:dev:<sid>` JSON, in Go's field order and number formats.
pub fn session_json(state: &UdpSessionState) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(
        out,
        r#"{{"DeviceID":{},"Addr":{{"IP":"{}","Port":{},"Zone":""}},"LastHeartbeat":"{}","Sidx":{},"Ridx":{},"BindedUsers":"#,
        state.device,
        go_ip(state.addr.ip()),
        state.addr.port(),
        rfc3339_nanos(state.last_heartbeat_unix_nanos),
        state.sidx,
        state.ridx,
    );
    if state.bound.is_empty() {
        out.push_str("null");
    } else {
        out.push('[');
        for (i, user) in state.bound.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{user}");
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// An IP as Go's `net.IP.String` writes it (IPv4-mapped IPv6 as dotted IPv4).
fn go_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// An address as Go's `UDPAddr.String` writes it (`ip:port`, `[ip6]:port`).
pub fn go_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => format!("[{v6}]:{}", addr.port()),
        ip => format!("{}:{}", go_ip(ip), addr.port()),
    }
}

/// Unix nanoseconds as Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z`,
/// trailing zeros of the fraction trimmed (and the dot with them when it is all zeros).
pub fn rfc3339_nanos(unix_nanos: u128) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = (secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_time(nanos: u128, expect: &str) {
        assert_eq!(rfc3339_nanos(nanos), expect, "{nanos}");
    }

    #[test]
    fn rfc3339_like_go() {
        check_time(0, "1970-01-01T00:00:00Z");
        check_time(1_000_000_000, "1970-01-01T00:00:01Z");
        check_time(1_500_000_000, "1970-01-01T00:00:01.5Z");
        check_time(1_000_000_001, "1970-01-01T00:00:01.000000001Z");
        check_time(951_782_400_000_000_000, "2000-02-29T00:00:00Z");
        check_time(4_107_542_399_120_000_000, "2100-02-28T23:59:59.12Z");
        // The golden session (vectors.json `redis_session_value`).
        check_time(1_795_522_895_378_557_011, "2026-11-24T12:21:35.378557011Z");
        check_time(1_795_522_895_378_557_000, "2026-11-24T12:21:35.378557Z");
    }

    #[test]
    fn json_matches_the_golden_session() {
        let state = UdpSessionState {
            sid: [0; 16],
            device: -1,
            addr: "127.0.0.1:45009".parse().unwrap(),
            last_heartbeat_unix_nanos: 1_795_522_895_378_557_011,
            sidx: 1,
            ridx: 5,
            bound: vec![16],
        };
        assert_eq!(
            session_json(&state),
            r#"{"DeviceID":-1,"Addr":{"IP":"127.0.0.1","Port":45009,"Zone":""},"LastHeartbeat":"2026-11-24T12:21:35.378557011Z","Sidx":1,"Ridx":5,"BindedUsers":[16]}"#
        );
        let none = UdpSessionState {
            bound: vec![],
            ..state
        };
        assert!(session_json(&none).ends_with(r#""BindedUsers":null}"#));
    }

    #[test]
    fn addresses_like_go() {
        assert_eq!(go_addr("1.2.3.4:5".parse().unwrap()), "1.2.3.4:5");
        assert_eq!(go_addr("[::1]:7".parse().unwrap()), "[::1]:7");
        assert_eq!(go_addr("[::ffff:1.2.3.4]:7".parse().unwrap()), "1.2.3.4:7");
    }
}
