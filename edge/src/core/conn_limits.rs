//! Admission of WebSocket connections on one shard: at most `max_per_source` open
//! connections per source address (`--max-conns-per-ip`), and at most `rate` accepts a
//! second per listener (`--max-accept-rate`, as EMQX's `max_conn_rate`): beyond it the
//! shard stops accepting on that listener until the next second, so the rest waits in
//! the kernel's backlog instead of costing a record each.
//!
//! A source is a [`SourceKey`]: the IPv4 address, or the /64 prefix of an IPv6 one (one
//! host's share), folded to 32 bits. With the cap on, each connection's key is kept here
//! by slot (4 bytes a slot) to give its place back; with it off (the default) nothing is
//! kept and connection records stay as small as they were. Pure: the shell hands in
//! slots, sources and the time.

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
    /// The source of each connection slot (only with the cap on).
    by_slot: Vec<SourceKey>,
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
            by_slot: Vec::new(),
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

    /// A connection from `source` was accepted into `slot`: false (nothing counted) when
    /// the source already holds its maximum.
    pub fn opened(&mut self, slot: u32, source: SourceKey) -> bool {
        if self.max_per_source == 0 {
            return true;
        }
        let count = self.open.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return false;
        }
        *count += 1;
        let slot = slot as usize;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, 0);
        }
        self.by_slot[slot] = source;
        true
    }

    /// The connection in `slot` (which [`opened`](Self::opened)) closed.
    pub fn closed(&mut self, slot: u32) {
        if self.max_per_source == 0 {
            return;
        }
        let Some(&source) = self.by_slot.get(slot as usize) else {
            return;
        };
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
        assert!(l.opened(0, 1) && l.opened(1, 1));
        assert!(!l.opened(2, 1), "the third from one source");
        assert!(l.opened(2, 2));
        l.closed(0);
        assert!(l.opened(0, 1));
        l.closed(0);
        l.closed(1);
        l.closed(2);
        assert_eq!(
            l.sources(),
            0,
            "no entry kept for a source with nothing open"
        );
    }

    #[test]
    fn no_cap_keeps_nothing() {
        let mut l = ConnLimits::new(0, 0, 1);
        assert!((0..100).all(|slot| l.opened(slot, 7)));
        assert_eq!((l.sources(), l.by_slot.len()), (0, 0));
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
