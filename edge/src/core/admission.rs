//! Admission of new UDP sessions (`0xE0`) per source IP: a token bucket per address, so
//! one address cannot open sessions faster than `rate` a second after a `burst`.
//!
//! Memory stays bounded whatever the number of addresses: buckets live in two maps, the
//! current and the previous window; each window (`burst / rate` seconds, at least one)
//! the previous map is dropped and the current one becomes the previous. A bucket idle
//! for a whole window would have refilled anyway, so dropping it changes nothing. Each map
//! holds at most `max_sources` addresses; an address beyond that is admitted untracked
//! and counted (the anonymous-session quota of the table still bounds what it can take).
//!
//! Pure: the shell hands in the time (whole seconds) and owns nothing here. Does not
//! decide what happens to a refused datagram (the shell drops and counts it).

use std::collections::HashMap;
use std::net::IpAddr;

use super::wheel::Secs;

/// A keyed hash: addresses come from the network, so their hashes must not be chosen.
type SourceMap = HashMap<IpAddr, Bucket, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    at: Secs,
}

/// What [`SourceLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A token was taken.
    Yes,
    /// The address is over its rate: drop.
    RateLimited,
    /// Too many addresses to track: admitted untracked.
    Untracked,
}

/// Token buckets per source address.
pub struct SourceLimiter {
    rate: u32,
    burst: u32,
    window: Secs,
    max_sources: usize,
    window_start: Secs,
    current: SourceMap,
    previous: SourceMap,
}

impl SourceLimiter {
    /// `rate` new sessions a second per address after a `burst`; at most `max_sources`
    /// addresses tracked per window. A `rate` of 0 admits everything.
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> Self {
        let burst = burst.max(rate).max(1);
        SourceLimiter {
            rate,
            burst,
            window: Secs::from((burst / rate.max(1)).max(1)),
            max_sources,
            window_start: 0,
            current: SourceMap::default(),
            previous: SourceMap::default(),
        }
    }

    /// Addresses tracked now (both windows).
    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// One new session from `ip` at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: Secs) -> Admit {
        if self.rate == 0 {
            return Admit::Yes;
        }
        if now >= self.window_start + self.window {
            // Two windows or more idle: nothing in `current` is worth keeping either.
            let idle_long = now >= self.window_start + 2 * self.window;
            self.previous = std::mem::take(&mut self.current);
            if idle_long {
                self.previous.clear();
            }
            self.window_start = now;
        }
        let bucket = match self.current.get_mut(&ip) {
            Some(bucket) => bucket,
            None => {
                let carried = self.previous.remove(&ip);
                if carried.is_none() && self.current.len() >= self.max_sources {
                    return Admit::Untracked;
                }
                let fresh = Bucket {
                    tokens: self.burst,
                    at: now,
                };
                self.current.entry(ip).or_insert(carried.unwrap_or(fresh))
            }
        };
        let earned = now.saturating_sub(bucket.at).saturating_mul(self.rate);
        bucket.tokens = bucket.tokens.saturating_add(earned).min(self.burst);
        bucket.at = now;
        if bucket.tokens == 0 {
            return Admit::RateLimited;
        }
        bucket.tokens -= 1;
        Admit::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn burst_then_rate_per_address() {
        let mut l = SourceLimiter::new(2, 5, 100);
        let admitted = (0..10)
            .filter(|_| l.admit(ip(1), 100) == Admit::Yes)
            .count();
        assert_eq!(admitted, 5, "the burst");
        assert_eq!(
            l.admit(ip(2), 100),
            Admit::Yes,
            "another address is not limited"
        );
        assert_eq!(l.admit(ip(1), 101), Admit::Yes);
        assert_eq!(l.admit(ip(1), 101), Admit::Yes);
        assert_eq!(l.admit(ip(1), 101), Admit::RateLimited, "2 a second");
    }

    #[test]
    fn memory_is_bounded_by_windows_and_the_cap() {
        let mut l = SourceLimiter::new(1, 2, 1000);
        for n in 0..5000 {
            let got = l.admit(ip(n), 10);
            assert!(got == Admit::Yes || (n >= 1000 && got == Admit::Untracked));
        }
        assert_eq!(l.tracked(), 1000);
        // A window later the old addresses are in `previous`; two later, gone.
        l.admit(ip(9_999), 12);
        l.admit(ip(9_999), 14);
        l.admit(ip(9_999), 16);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn a_limited_address_stays_limited_across_a_window_change() {
        let mut l = SourceLimiter::new(1, 3, 100);
        for _ in 0..3 {
            assert_eq!(l.admit(ip(7), 50), Admit::Yes);
        }
        assert_eq!(l.admit(ip(7), 50), Admit::RateLimited);
        // The window (3 s) turns at 53: the bucket is carried, with 3 s of refill.
        assert_eq!(l.admit(ip(7), 53), Admit::Yes);
        assert_eq!(l.admit(ip(7), 53), Admit::Yes);
        assert_eq!(l.admit(ip(7), 53), Admit::Yes);
        assert_eq!(l.admit(ip(7), 53), Admit::RateLimited);
    }

    #[test]
    fn rate_zero_admits_everything() {
        let mut l = SourceLimiter::new(0, 0, 1);
        assert!((0..100).all(|n| l.admit(ip(n), 1) == Admit::Yes));
    }
}
