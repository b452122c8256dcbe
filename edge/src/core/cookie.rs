//! Stateless new-session cookies, as TCP's SYN cookies: the sid a `0xE0` is answered with
//! is a keyed tag of the asking address and the time, and nothing is stored until the
//! device comes back with it from that address (its register, login or heartbeat). A
//! spoofed `0xE0` never sees its answer, so it can never come back: a flood from forged
//! sources costs one hash and one reply each, and no session, table slot or timer.
//!
//! ```text
//!   sid = nonce (4) · issued at, seconds (3) · tag (8) · owning shard (1)
//!   tag = SipHash-1-3 under a random per-shard key of (nonce, issued at, address, shard)
//! ```
//!
//! The sid stays 16 opaque bytes to the device, as the original's random UUID; the last
//! byte names the owning shard as every sid of ours does. A cookie is good for `--uto`
//! after it was issued, and only from the address it was issued to (a device whose NAT
//! rebinds before its first command starts over, as on any lost answer).
//!
//! Pure: the shell brings the key, the nonce and the time.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;

use edge_proto::device::Sid;

use super::wheel::Secs;

/// Issues and checks the sids of one shard.
pub struct SidCookies {
    key: RandomState,
    shard: u8,
}

const TIME_MASK: Secs = (1 << 24) - 1;

impl SidCookies {
    /// Cookies of shard `shard` under `key` (a random key per process: cookies do not
    /// outlive it, and neither do the sessions they open).
    pub fn new(key: RandomState, shard: u8) -> Self {
        SidCookies { key, shard }
    }

    fn tag(&self, nonce: &[u8], issued: &[u8], from: SocketAddr) -> [u8; 8] {
        self.key
            .hash_one((nonce, issued, from, self.shard))
            .to_le_bytes()
    }

    /// The sid for a new session asked for by `from` at `now`.
    pub fn issue(&self, from: SocketAddr, now: Secs, nonce: [u8; 4]) -> Sid {
        let issued = (now & TIME_MASK).to_le_bytes();
        let mut sid = [0u8; 16];
        sid[..4].copy_from_slice(&nonce);
        sid[4..7].copy_from_slice(&issued[..3]);
        sid[7..15].copy_from_slice(&self.tag(&nonce, &issued[..3], from));
        sid[15] = self.shard;
        Sid(sid)
    }

    /// Whether `sid` was issued by this shard to `from` at most `max_age` seconds before
    /// `now` (compared in time independent of where the tags differ).
    pub fn verify(&self, sid: &[u8; 16], from: SocketAddr, now: Secs, max_age: Secs) -> bool {
        if sid[15] != self.shard {
            return false;
        }
        let issued = Secs::from(sid[4]) | Secs::from(sid[5]) << 8 | Secs::from(sid[6]) << 16;
        let age = (now & TIME_MASK).wrapping_sub(issued) & TIME_MASK;
        let expected = self.tag(&sid[..4], &sid[4..7], from);
        let differ = expected
            .iter()
            .zip(&sid[7..15])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        age <= max_age && differ == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_cookie_comes_back_only_from_its_address_and_in_time() {
        let cookies = SidCookies::new(RandomState::new(), 1);
        let sid = cookies.issue(addr(5000), 100, [1, 2, 3, 4]);
        assert_eq!(sid.0[15], 1, "names its shard");
        assert!(cookies.verify(&sid.0, addr(5000), 100, 40));
        assert!(cookies.verify(&sid.0, addr(5000), 140, 40));
        assert!(!cookies.verify(&sid.0, addr(5000), 141, 40), "too old");
        assert!(
            !cookies.verify(&sid.0, addr(5001), 100, 40),
            "another address"
        );
        let mut forged = sid.0;
        forged[10] ^= 1;
        assert!(
            !cookies.verify(&forged, addr(5000), 100, 40),
            "a forged tag"
        );
        let other = SidCookies::new(RandomState::new(), 1);
        assert!(!other.verify(&sid.0, addr(5000), 100, 40), "another key");
        let two = cookies.issue(addr(5000), 100, [9, 9, 9, 9]);
        assert_ne!(sid, two, "the nonce tells two cookies of one second apart");
    }

    #[test]
    fn the_clock_wraps() {
        let cookies = SidCookies::new(RandomState::new(), 0);
        let sid = cookies.issue(addr(1), TIME_MASK - 1, [0; 4]);
        assert!(cookies.verify(&sid.0, addr(1), TIME_MASK + 5, 40));
    }
}
