//! Logins and logouts against Redis: the online/offline counts on `Host:<lip>` (docs/protocol.md §9.3),
//! binding lists (docs/protocol.md §9.3, [`super::bindings`]) and **leased mobile ids**.
//!
//! # Mobile-id leases (fixes "mobile ids leak when a comet crashes", docs/protocol.md §10.4)
//!
//! `user:mobileid:<uid>` stays the set of sub-ids in use (1..=15), as the original wrote
//! it. Each member `k` now has a companion string `user:mobileid:<uid>:<k>:lease` whose
//! value is a token unique to the session holding `k` (`<lip>#<boot nanos>#<n>`) and whose
//! TTL is the lease (default 60 s). While the session lives, this comet refreshes the
//! lease every TTL/3 in one pipeline for all its phones. Allocation (one Lua script, so
//! atomic) takes the first `k` in 1..=15 that is either not in the set (`SADD`), or in
//! the set **without a live lease** — its holder's comet stopped refreshing (crashed,
//! partitioned) or it was leaked by an original Go comet that wrote no lease. A logout
//! frees `k` (`SREM` + `DEL` lease) only if the lease is still its own, so a session whose
//! id was taken over cannot free the new holder's id.
//!
//! A refresh that finds its lease expired but unclaimed takes it back; one that finds
//! another token counts `lease_lost` (two sessions now share the mobile id until one logs
//! out — only possible after a refresh gap longer than the TTL). Mixing with original Go
//! comets is not supported: their members carry no lease and are treated as free.
//!
//! A logout that Redis cannot take is queued (bounded) and retried when Redis is back;
//! its lease stops being refreshed at once, so even a dropped retry frees the id after
//! one TTL.
//!
//! Does **not** talk to shards (the caller answers them) or touch UDP sessions.

pub mod handover;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_proto::pubsub::PUB_KEY;

use super::bindings::{devices_of_user, users_of_device};
use super::metrics::{ClusterMetrics, bump};
use super::store::{Store, StoreError};
use crate::messages::LoginGrant;

/// Reply 3: wrong id / every mobile id in use.
pub(crate) const REPLY_WRONG_ID: u8 = 3;
/// Reply 9: server (Redis) error.
pub(crate) const REPLY_SERVER_ERROR: u8 = 9;
/// Deferred logouts kept while Redis is unavailable.
const DEFERRED_MAX: usize = 65_536;

/// The lease a phone session holds on its mobile id.
#[derive(Debug, Clone)]
struct Lease {
    user: i64,
    k: u8,
    token: String,
}

/// A logout Redis has not taken yet.
#[derive(Debug)]
struct Deferred {
    session: i64,
    offline_done: bool,
    lease: Option<Lease>,
}

/// Online counts, mobile-id leases and deferred logouts of one comet.
pub(crate) struct Sessions {
    lip: String,
    host_key: String,
    lease_ttl: Duration,
    token_seed: String,
    next_token: u64,
    leases: HashMap<i64, Vec<Lease>>,
    deferred: VecDeque<Deferred>,
    next_refresh: Instant,
    metrics: Arc<ClusterMetrics>,
    /// This comet's own view of `Host:<lip>`: live sessions per id. Rewritten into Redis
    /// when a new connection may face a Redis that restarted and lost it.
    online: HashMap<i64, u32>,
    /// The store connection the Redis state was last written through.
    synced: u64,
    /// When Redis is probed next.
    next_ping: Instant,
}

/// How often the request thread probes Redis.
const PING_EVERY: Duration = Duration::from_secs(1);

fn set_key(user: i64) -> String {
    format!("user:mobileid:{user}")
}

fn lease_key(user: i64, k: u8) -> String {
    format!("user:mobileid:{user}:{k}:lease")
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Sessions {
    /// State for the comet `lip` with leases of `lease_ttl`.
    pub fn new(lip: &str, lease_ttl: Duration, metrics: Arc<ClusterMetrics>) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            lip: lip.to_owned(),
            host_key: format!("Host:{lip}"),
            lease_ttl,
            token_seed: format!("{lip}#{boot:x}#{}", std::process::id()),
            next_token: 0,
            leases: HashMap::new(),
            deferred: VecDeque::new(),
            next_refresh: Instant::now() + lease_ttl / 3,
            metrics,
            online: HashMap::new(),
            synced: 0,
            next_ping: Instant::now() + PING_EVERY,
        }
    }

    /// After a reconnect: rewrites `Host:<lip>` from this comet's own counts and announces
    /// every live id on `PubKey` again (msgbuses ignore ids they know), so a Redis that
    /// restarted empty gets the online state back. Deferred logouts are already out of
    /// the counts, so their offline step is dropped (their lease release stays).
    pub fn resync(&mut self, store: &mut Store, now: Instant) {
        // A cheap probe once a second, so a Redis that went away is noticed (and redialled)
        // even while no login or logout needs it.
        if now >= self.next_ping {
            self.next_ping = now + PING_EVERY;
            let _ = store.run(|con, _| redis::cmd("PING").query::<()>(con));
        }
        if !store.is_up() || store.connections() == self.synced {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&self.host_key).ignore();
        for (&id, &count) in &self.online {
            pipe.cmd("HSET")
                .arg(&self.host_key)
                .arg(id)
                .arg(count)
                .ignore();
            pipe.cmd("PUBLISH")
                .arg(PUB_KEY)
                .arg(format!("{id}|{}|1", self.lip))
                .ignore();
        }
        if store.run(|con, _| pipe.query::<()>(con)).is_ok() {
            self.synced = store.connections();
            for job in &mut self.deferred {
                job.offline_done = true;
            }
            bump(&self.metrics.redis_resyncs);
        }
    }

    /// The start-up reset (docs/protocol.md §9.3): `DEL Host:<lip>`, `PUBLISH PubKey "0|<lip>|0"`.
    pub fn reset(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let host_key = self.host_key.clone();
        let payload = format!("0|{}|0", self.lip);
        let done = store.run(|con, _| {
            redis::pipe()
                .cmd("DEL")
                .arg(&host_key)
                .ignore()
                .cmd("PUBLISH")
                .arg(PUB_KEY)
                .arg(&payload)
                .ignore()
                .query::<()>(con)
        });
        if done.is_ok() {
            self.synced = store.connections();
        }
        done
    }

    /// Grants a login for `id` (phones: a leased mobile id and their devices; devices:
    /// their users), counted online; or the reply code to refuse with.
    pub fn login(&mut self, store: &mut Store, id: i64) -> Result<LoginGrant, u8> {
        if id > 0 && id % 16 == 0 {
            self.login_phone(store, id)
        } else if id < 0 {
            let bound = store
                .run(|con, _| users_of_device(con, id))
                .map_err(|_| REPLY_SERVER_ERROR)?;
            self.online(store, id).map_err(|_| REPLY_SERVER_ERROR)?;
            Ok(LoginGrant {
                session: id,
                mobile: 0,
                bound,
            })
        } else {
            Err(REPLY_WRONG_ID)
        }
    }

    fn login_phone(&mut self, store: &mut Store, user: i64) -> Result<LoginGrant, u8> {
        self.next_token += 1;
        let token = format!("{}#{}", self.token_seed, self.next_token);
        let k = self.allocate(store, user, &token)?;
        let lease = Lease { user, k, token };
        let session = user + i64::from(k);
        let granted = store
            .run(|con, _| devices_of_user(con, user))
            .and_then(|bound| self.online(store, session).map(|_| bound));
        match granted {
            Ok(bound) => {
                self.leases.entry(session).or_default().push(lease);
                Ok(LoginGrant {
                    session,
                    mobile: k,
                    bound,
                })
            }
            Err(_) => {
                // The original leaked the id here (docs/protocol.md §10.4); the lease would free it anyway.
                let _ = release(store, &lease);
                Err(REPLY_SERVER_ERROR)
            }
        }
    }

    fn allocate(&mut self, store: &mut Store, user: i64, token: &str) -> Result<u8, u8> {
        let ttl = ttl_ms(self.lease_ttl);
        let picked: i64 = store
            .run(|con, scripts| {
                let mut call = scripts.allocate.key(set_key(user));
                for k in 1..=15u8 {
                    call.key(lease_key(user, k));
                }
                call.arg(token).arg(ttl).invoke(con)
            })
            .map_err(|_| REPLY_SERVER_ERROR)?;
        if picked < 0 {
            bump(&self.metrics.mobile_reclaimed);
        }
        match u8::try_from(picked.unsigned_abs()) {
            Ok(k @ 1..=15) => Ok(k),
            _ => Err(REPLY_WRONG_ID),
        }
    }

    fn online(&mut self, store: &mut Store, session: i64) -> Result<i64, StoreError> {
        let count = store.run(|con, scripts| {
            scripts
                .online
                .key(&self.host_key)
                .arg(session)
                .arg(PUB_KEY)
                .arg(&self.lip)
                .invoke(con)
        })?;
        *self.online.entry(session).or_default() += 1;
        Ok(count)
    }

    /// Whether a session of `id` is logged in on this comet.
    pub fn is_online(&self, id: i64) -> bool {
        self.online.contains_key(&id)
    }

    /// Undoes a grant a shard could not take.
    pub fn undo(&mut self, store: &mut Store, grant: &LoginGrant) {
        self.logout(store, grant.session);
    }

    /// Releases what the login of `session` took; deferred when Redis cannot take it.
    pub fn logout(&mut self, store: &mut Store, session: i64) {
        if let Some(count) = self.online.get_mut(&session) {
            *count -= 1;
            if *count == 0 {
                self.online.remove(&session);
            }
        }
        let lease = self.take_lease(session);
        let job = Deferred {
            session,
            offline_done: false,
            lease,
        };
        if let Some(job) = self.try_logout(store, job) {
            self.defer(job);
        }
    }

    fn take_lease(&mut self, session: i64) -> Option<Lease> {
        let leases = self.leases.get_mut(&session)?;
        let lease = (!leases.is_empty()).then(|| leases.remove(0));
        if leases.is_empty() {
            self.leases.remove(&session);
        }
        lease
    }

    /// Runs what is left of `job`; gives it back when Redis failed.
    fn try_logout(&self, store: &mut Store, mut job: Deferred) -> Option<Deferred> {
        if !job.offline_done {
            let offline = store.run(|con, scripts| {
                scripts
                    .offline
                    .key(&self.host_key)
                    .arg(job.session)
                    .arg(PUB_KEY)
                    .arg(&self.lip)
                    .invoke::<i64>(con)
            });
            if offline.is_err() {
                return Some(job);
            }
            job.offline_done = true;
        }
        if let Some(lease) = &job.lease
            && release(store, lease).is_err()
        {
            return Some(job);
        }
        bump(&self.metrics.logouts);
        None
    }

    fn defer(&mut self, job: Deferred) {
        if self.deferred.len() >= DEFERRED_MAX {
            bump(&self.metrics.logouts_dropped);
            return;
        }
        bump(&self.metrics.logouts_deferred);
        self.deferred.push_back(job);
    }

    /// Retries deferred logouts (in order) while Redis takes them.
    pub fn retry_deferred(&mut self, store: &mut Store) {
        while let Some(job) = self.deferred.pop_front() {
            if let Some(job) = self.try_logout(store, job) {
                self.deferred.push_front(job);
                return;
            }
        }
    }

    /// Refreshes every lease of this comet when a refresh is due (every TTL/3).
    pub fn refresh_due(&mut self, store: &mut Store, now: Instant) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + self.lease_ttl / 3;
        let leases: Vec<&Lease> = self.leases.values().flatten().collect();
        if leases.is_empty() {
            return;
        }
        let ttl = ttl_ms(self.lease_ttl);
        let outcome: Result<Vec<i64>, StoreError> = store.run(|con, scripts| {
            let mut pipe = redis::pipe();
            for lease in &leases {
                pipe.invoke_script(
                    scripts
                        .refresh
                        .key(set_key(lease.user))
                        .key(lease_key(lease.user, lease.k))
                        .arg(&lease.token)
                        .arg(ttl)
                        .arg(lease.k),
                );
            }
            pipe.query(con)
        });
        if let Ok(results) = outcome {
            bump(&self.metrics.lease_refreshes);
            for result in results {
                match result {
                    0 => bump(&self.metrics.lease_lost),
                    2 => bump(&self.metrics.lease_retaken),
                    _ => {}
                }
            }
        }
    }

    /// Phone sessions holding a lease.
    pub fn leased(&self) -> usize {
        self.leases.values().map(Vec::len).sum()
    }
}

fn release(store: &mut Store, lease: &Lease) -> Result<i64, StoreError> {
    store.run(|con, scripts| {
        scripts
            .release
            .key(set_key(lease.user))
            .key(lease_key(lease.user, lease.k))
            .arg(&lease.token)
            .arg(lease.k)
            .invoke(con)
    })
}
