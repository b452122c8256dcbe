//! `keeper::core`: the pure state machines of the keeper — which ZooKeeper calls to make
//! and when, decided from scripted events and an injected clock.
//!
//! Owns: [`registration::Registrar`] (ephemeral-sequential nodes we own: create, refresh,
//! re-create after a session change **without duplicates**, delete on demand) and
//! [`children::ChildrenTracker`] (list a root's children and their data, report the
//! deduplicated member list and what was added or removed).
//!
//! Does **not** own: the ZooKeeper client, threads, channels, sleeping or reading the clock
//! (the `zk` adapter does all of that and feeds results back in). Nothing here can fail on
//! IO because nothing here does IO; bad server answers are events like any other.
//!
//! Both machines share the sans-IO verbs: `handle_event(Event, now)`,
//! `handle_timeout(now)`, `poll_action()` (at most one action in flight: call it after every
//! event until it returns `None`, execute each action and feed its reply back before asking
//! again) and `poll_timeout()` (when to call `handle_timeout` next).
#![deny(clippy::disallowed_methods)]

pub mod children;
pub mod registration;

use std::time::Duration;

/// Why a ZooKeeper call failed, as far as the state machines care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection loss, operation timeout, session expired or moved: the outcome of a write
    /// is unknown (it may have been applied), and the session may have changed.
    Connection,
    /// Any other server error (bad arguments, no auth, …): retried with backoff.
    Other,
}

/// Retry delay after `failures` consecutive failures: 250 ms doubling, at most 10 s.
pub fn backoff(failures: u32) -> Duration {
    const BASE_MS: u64 = 250;
    const MAX_MS: u64 = 10_000;
    let shift = failures.saturating_sub(1).min(16);
    Duration::from_millis((BASE_MS << shift).min(MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(6), ms(7), ms(60)],
            [250, 250, 500, 1000, 8000, 10_000, 10_000]
        );
    }
}
