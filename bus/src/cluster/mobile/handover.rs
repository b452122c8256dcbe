//! The cluster sidecar's part in a zero-downtime upgrade (issue 15): what the old process
//! hands over of [`Sessions`] (the online counts behind `Host:<lip>` and every mobile-id
//! lease with its token) and how the new process takes it in, so that `Host:<lip>` is
//! never reset and no lease lapses.
//!
//! The old process's table can hold sessions that did not make it across: a login granted
//! while its connection was closed at the freeze, or a logout the sidecar had not taken
//! when it was asked for its state. The new process keeps, per id, only as many sessions
//! as the shards handed over live ([`Inheritance::live`]) and logs the rest out through
//! the deferred-logout queue (run on the first tick), so nothing leaks either way.
//!
//! Does **not** carry the deferred logouts of a Redis outage (their leases lapse after one
//! TTL, their counts are rewritten by the next resync) or the msgbus links (the new
//! process dials its own; a msgbus sends to the newest link of a comet).

use std::collections::HashMap;

use edge_proto::handover::Lease as LeaseRecord;

use super::{Deferred, Lease, Sessions};

/// What the old process's sidecar hands over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Live sessions per id, as counted in `Host:<lip>`.
    pub online: Vec<(i64, u32)>,
    /// Every lease held, with its token.
    pub leases: Vec<LeaseRecord>,
    /// Msgbus links up (the new process waits for as many before it confirms).
    pub links_up: u32,
    /// `Host:<lip>` was in step with Redis.
    pub redis_synced: bool,
}

/// An upgrade's requests to the cluster sidecar.
#[derive(Debug)]
pub enum Export {
    /// Flush what is written behind and answer the state; then hold lease refreshes,
    /// resyncs and deferred logouts (the new process owns them once it confirms).
    Take(crossbeam_channel::Sender<Snapshot>),
    /// The upgrade failed: carry on.
    Resume,
}

/// What a new process starts its sidecar with.
#[derive(Debug, Clone, Default)]
pub struct Inheritance {
    /// The old process's state.
    pub snapshot: Snapshot,
    /// Sessions per id the shards were handed live (online connections, logged-in UDP
    /// sessions).
    pub live: HashMap<i64, u32>,
}

impl Sessions {
    /// The state to hand over.
    pub fn export(&self) -> (Vec<(i64, u32)>, Vec<LeaseRecord>) {
        let online = self.online.iter().map(|(&id, &n)| (id, n)).collect();
        let leases = self.leases.iter().flat_map(|(&session, leases)| {
            leases.iter().map(move |l| LeaseRecord {
                session,
                user: l.user,
                k: l.k,
                token: l.token.clone(),
            })
        });
        (online, leases.collect())
    }

    /// Whether `Host:<lip>` was written through the store's current connection.
    pub fn in_step(&self, store: &super::Store) -> bool {
        store.is_up() && store.connections() == self.synced
    }

    /// Takes the old process's state in (see the module doc); returns the sessions logged
    /// out because no shard holds them.
    pub fn inherit(&mut self, inheritance: Inheritance) -> usize {
        let Inheritance { snapshot, live } = inheritance;
        for lease in snapshot.leases {
            let kept = Lease {
                user: lease.user,
                k: lease.k,
                token: lease.token,
            };
            self.leases.entry(lease.session).or_default().push(kept);
        }
        let mut gone = 0;
        for (id, count) in snapshot.online {
            let keep = live.get(&id).copied().unwrap_or(0).min(count);
            if keep > 0 {
                self.online.insert(id, keep);
            }
            for _ in keep..count {
                let lease = self.take_lease(id);
                self.deferred.push_back(Deferred {
                    session: id,
                    offline_done: false,
                    lease,
                });
                gone += 1;
            }
        }
        // Leases of sessions that were never counted online (cannot happen, but a lease
        // without a session would be refreshed forever): released too.
        let orphans: Vec<i64> = self
            .leases
            .keys()
            .filter(|id| !self.online.contains_key(id))
            .copied()
            .collect();
        for id in orphans {
            while let Some(lease) = self.take_lease(id) {
                self.deferred.push_back(Deferred {
                    session: id,
                    offline_done: true,
                    lease: Some(lease),
                });
            }
        }
        if snapshot.redis_synced {
            // The first connection finds `Host:<lip>` as the old process left it.
            self.synced = 1;
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn sessions() -> Sessions {
        Sessions::new("10.0.0.1", Duration::from_secs(60), Arc::default())
    }

    fn lease(session: i64, token: &str) -> LeaseRecord {
        LeaseRecord {
            session,
            user: session - session % 16,
            k: (session % 16) as u8,
            token: token.into(),
        }
    }

    proptest::proptest! {
        /// Against a naive model: per id, the sessions kept are min(counted, handed live);
        /// every other counted session is logged out once; every lease is either kept
        /// (with a session still online) or released, never both, never lost.
        #[test]
        fn inherit_matches_a_naive_model(
            table in proptest::collection::btree_map(1i64..40, (0u32..4, 0usize..3, 0u32..4), 0..20)
        ) {
            let mut snapshot = Snapshot { redis_synced: true, ..Snapshot::default() };
            let mut live = HashMap::new();
            for (&id, &(count, leases, handed)) in &table {
                if count > 0 {
                    snapshot.online.push((id, count));
                }
                for n in 0..leases {
                    snapshot.leases.push(lease(id, &format!("{id}#{n}")));
                }
                if handed > 0 {
                    live.insert(id, handed);
                }
            }
            let mut s = sessions();
            let gone = s.inherit(Inheritance { snapshot, live });
            let mut expected_gone = 0;
            for (&id, &(count, leases, handed)) in &table {
                let keep = count.min(handed);
                expected_gone += (count - keep) as usize;
                proptest::prop_assert_eq!(s.online.get(&id).copied(), (keep > 0).then_some(keep));
                let kept = s.leases.get(&id).map_or(0, Vec::len);
                let released = s.deferred.iter().filter(|d| d.session == id && d.lease.is_some()).count();
                proptest::prop_assert_eq!(kept + released, leases, "leases of {}", id);
                let expected_kept = if keep > 0 {
                    leases.saturating_sub((count - keep) as usize)
                } else {
                    0
                };
                proptest::prop_assert_eq!(kept, expected_kept, "kept leases of {}", id);
                let logouts = s.deferred.iter().filter(|d| d.session == id && !d.offline_done).count();
                proptest::prop_assert_eq!(logouts, (count - keep) as usize);
            }
            proptest::prop_assert_eq!(gone, expected_gone);
        }
    }

    #[test]
    fn what_the_shards_hold_is_kept_and_the_rest_logged_out() {
        let snapshot = Snapshot {
            online: vec![(33, 1), (34, 1), (-5, 2)],
            leases: vec![lease(33, "a"), lease(34, "b")],
            links_up: 1,
            redis_synced: true,
        };
        // 34's connection was closed at the freeze; one of -5's two sessions too.
        let live = HashMap::from([(33, 1), (-5, 1)]);
        let mut s = sessions();
        let gone = s.inherit(Inheritance { snapshot, live });
        assert_eq!(gone, 2);
        assert_eq!(s.online, HashMap::from([(33, 1), (-5, 1)]));
        assert_eq!(s.leased(), 1);
        let out: Vec<(i64, Option<String>)> = s
            .deferred
            .iter()
            .map(|d| (d.session, d.lease.as_ref().map(|l| l.token.clone())))
            .collect();
        assert!(out.contains(&(34, Some("b".into()))) && out.contains(&(-5, None)));
        assert_eq!(s.synced, 1);
        let (online, leases) = s.export();
        assert_eq!(leases, vec![lease(33, "a")]);
        assert_eq!(online.len(), 2);
    }
}
