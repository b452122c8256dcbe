//! Admission of WebSocket connections on one shard: at most `max_per_source` open
//! connections per source address (`--max-conns-per-ip`), and at most `rate` accepts a
//! second per listener (`--max-accept-rate`, as EMQX's `max_conn_rate`): beyond it the
//! shard stops accepting on that listener until the next second, so the rest waits in
//! the kernel's backlog instead of costing a record each.
//!
//! A source is a [`SourceKey`]: the IPv4 address, or the /64 prefix of an IPv6 one (one
//! host's share), folded to 32 bits. Pure: the shell hands in sources and the time, and
//! keeps the key in its connection record to give the place back.

use std::collections::HashMap;
use std::net::IpAddr;

use super::wheel::Secs;

/// Where a connection comes from, as counted.
pub type SourceKey = u32;

/// The key of `ip`.
pub fn source_key(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4),
            None => {
                let prefix = (u128::from(v6) >> 64) as u64;
                (prefix ^ (prefix >> 32)) as u32
            }
        },
    }
}

/// Per-source counts and per-listener accept budgets of one shard.
pub struct ConnLimits {
    max_per_source: u32,
    rate: u32,
    open: HashMap<SourceKey, u32, foldhash::fast::RandomState>,
    /// Accepts left this second, per listener.
    tokens: Vec<u32>,
    second: Secs,
}

impl ConnLimits {
    /// `max_per_source` open connections per source (0: no cap), `rate` accepts a second
    /// on each of `listeners` listeners (0: no limit).
    pub fn new(max_per_source: u32, rate: u32, listeners: usize) -> Self {
        ConnLimits {
            max_per_source,
            rate,
            open: HashMap::default(),
            tokens: vec![rate; listeners],
            second: 0,
        }
    }

    /// Whether listener `i` may accept one more connection at `now` (takes the token).
    pub fn may_accept(&mut self, i: usize, now: Secs) -> bool {
        if self.rate == 0 {
            return true;
        }
        if now != self.second {
            self.second = now;
            self.tokens.iter_mut().for_each(|t| *t = self.rate);
        }
        match self.tokens.get_mut(i) {
            Some(0) => false,
            Some(t) => {
                *t -= 1;
                true
            }
            None => true,
        }
    }

    /// A connection from `source` was accepted: false (nothing counted) when the source
    /// already holds its maximum.
    pub fn opened(&mut self, source: SourceKey) -> bool {
        let count = self.open.entry(source).or_insert(0);
        if self.max_per_source != 0 && *count >= self.max_per_source {
            if *count == 0 {
                self.open.remove(&source);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// A connection [`opened`](Self::opened) from `source` closed.
    pub fn closed(&mut self, source: SourceKey) {
        if let Some(count) = self.open.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&source);
            }
        }
    }

    /// Sources with open connections.
    pub fn sources(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_cap_and_release() {
        let mut l = ConnLimits::new(2, 0, 1);
        assert!(l.opened(1) && l.opened(1));
        assert!(!l.opened(1), "the third from one source");
        assert!(l.opened(2));
        l.closed(1);
        assert!(l.opened(1));
        l.closed(1);
        l.closed(1);
        l.closed(2);
        assert_eq!(
            l.sources(),
            0,
            "no entry kept for a source with nothing open"
        );
    }

    #[test]
    fn accept_rate_per_listener_per_second() {
        let mut l = ConnLimits::new(0, 3, 2);
        assert_eq!((0..5).filter(|_| l.may_accept(0, 7)).count(), 3);
        assert!(l.may_accept(1, 7), "the other listener has its own budget");
        assert!(!l.may_accept(0, 7));
        assert!(l.may_accept(0, 8), "a new second");
    }

    #[test]
    fn keys() {
        assert_eq!(source_key("10.0.0.1".parse().unwrap()), 0x0a00_0001);
        assert_eq!(source_key("::ffff:10.0.0.1".parse().unwrap()), 0x0a00_0001);
        let a = source_key("2001:db8:1:2::1".parse().unwrap());
        let b = source_key("2001:db8:1:2::ffff".parse().unwrap());
        assert_eq!(a, b, "one /64, one source");
    }
}
