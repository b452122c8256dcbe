//! The request thread's Redis connection: dialled lazily, re-dialled after any connection
//! error with a backoff (100 ms doubling to 5 s), and **never** blocking the thread for
//! longer than one connect or command timeout. While Redis is down (between dials) every
//! call fails at once with [`StoreError::Down`], so logins get reply 9 immediately instead
//! of queueing behind a dead socket (the original kept a broken connection forever, docs/protocol.md §10.4).
//!
//! Also owns the Lua scripts (docs/protocol.md §9.3, plus the mobile-id leases described in
//! [`super::mobile`]); they are loaded on every new connection so pipelines may use
//! `EVALSHA`.
//!
//! Does **not** decide what to do on failure (retry, refuse): the callers do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{info, warn};

use crate::redis_target::RedisTarget;

use super::metrics::{ClusterMetrics, bump};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a Redis call did not happen or failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Not connected, and the next dial is not due yet.
    #[error("redis unavailable")]
    Down,
    /// The command (or the dial) failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The Lua scripts, compiled once.
pub(crate) struct Scripts {
    /// Online (docs/protocol.md §9.3): `HINCRBY Host:<lip> <id> 1`, publish `<id>|<lip>|1` at 1.
    pub online: redis::Script,
    /// Offline (docs/protocol.md §9.3): `HINCRBY -1`, publish `<id>|<lip>|0` and `HDEL` at 0.
    pub offline: redis::Script,
    /// Leased "select mobile id" (see `mobile`).
    pub allocate: redis::Script,
    /// Lease refresh (see `mobile`).
    pub refresh: redis::Script,
    /// Lease release (see `mobile`).
    pub release: redis::Script,
    /// UDP session gone: delete its keys unless a newer session owns the device's.
    pub session_gone: redis::Script,
}

/// A Redis connection that re-dials itself.
pub(crate) struct Store {
    target: RedisTarget,
    con: Option<redis::Connection>,
    retry_at: Instant,
    backoff: Duration,
    pub scripts: Scripts,
    metrics: Arc<ClusterMetrics>,
    connections: u64,
}

// === Scripts ===

const ONLINE: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if n == 1 then redis.call('PUBLISH', ARGV[2], ARGV[1] .. '|' .. ARGV[3] .. '|1') end
return n";

// A count below zero (a logout retried after its first try did reach Redis) is repaired
// without a second offline event.
const OFFLINE: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n == 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[1] .. '|' .. ARGV[3] .. '|0')
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif n < 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n";

// KEYS[1] = user:mobileid:<uid>, KEYS[1 + k] = its lease key for k = 1..15;
// ARGV[1] = lease token, ARGV[2] = lease TTL (ms). Returns k, -k when k was taken over
// from an expired (or never written) lease, 0 when all 15 are held.
const ALLOCATE: &str = r"
for k = 1, 15 do
  if redis.call('SADD', KEYS[1], k) == 1 then
    redis.call('SET', KEYS[k + 1], ARGV[1], 'PX', ARGV[2])
    return k
  end
  if redis.call('EXISTS', KEYS[k + 1]) == 0 then
    redis.call('SET', KEYS[k + 1], ARGV[1], 'PX', ARGV[2])
    return -k
  end
end
return 0";

// KEYS[1] = user:mobileid:<uid>, KEYS[2] = lease; ARGV = token, TTL (ms), k.
// 1 refreshed; 2 had expired unclaimed and is taken back; 0 another session holds k.
const REFRESH: &str = r"
local v = redis.call('GET', KEYS[2])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if not v then
  redis.call('SADD', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0";

// KEYS[1] = user:mobileid:<uid>, KEYS[2] = lease; ARGV = token, k. Frees k unless another
// session took it over meanwhile (then its lease holds another token).
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[2])
if (not v) or v == ARGV[1] then
  redis.call('SREM', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0";

// KEYS = sess:dev:<sid>, sess:dev:sid:<device>, device:adr; ARGV = sid text, device.
const SESSION_GONE: &str = r"
redis.call('DEL', KEYS[1])
if ARGV[2] == '0' then return 0 end
local current = redis.call('GET', KEYS[2])
if (not current) or current == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  return 1
end
return 0";

impl Scripts {
    fn new() -> Self {
        Self {
            online: redis::Script::new(ONLINE),
            offline: redis::Script::new(OFFLINE),
            allocate: redis::Script::new(ALLOCATE),
            refresh: redis::Script::new(REFRESH),
            release: redis::Script::new(RELEASE),
            session_gone: redis::Script::new(SESSION_GONE),
        }
    }

    fn load_all(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        for script in [
            &self.online,
            &self.offline,
            &self.allocate,
            &self.refresh,
            &self.release,
            &self.session_gone,
        ] {
            script.prepare_invoke().load(con)?;
        }
        Ok(())
    }
}

// === Store ===

impl Store {
    /// A store for `target`; nothing is dialled yet.
    pub fn new(target: RedisTarget, metrics: Arc<ClusterMetrics>) -> Self {
        Self {
            connections: 0,
            target,
            con: None,
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            scripts: Scripts::new(),
            metrics,
        }
    }

    /// How many connections have been opened so far (a new one may face a Redis that
    /// restarted and lost this comet's state).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// True while a connection is open.
    pub fn is_up(&self) -> bool {
        self.con.is_some()
    }

    /// Where Redis is.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Runs `f` on the connection, dialling first when one is due. A connection error
    /// drops the connection (the next call after the backoff dials again).
    pub fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection, &Scripts) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.con.is_none() {
            self.dial()?;
        }
        let Some(con) = self.con.as_mut() else {
            return Err(StoreError::Down);
        };
        let result = f(con, &self.scripts);
        if let Err(e) = &result {
            bump(&self.metrics.redis_errors);
            if broken(e) {
                warn!(redis = %self.target.describe(), error = %e, "Redis connection lost");
                self.con = None;
                self.retry_at = Instant::now() + BACKOFF_MIN;
            }
        }
        result.map_err(StoreError::Redis)
    }

    fn dial(&mut self) -> Result<(), StoreError> {
        let now = Instant::now();
        if now < self.retry_at {
            return Err(StoreError::Down);
        }
        match self.open() {
            Ok(con) => {
                bump(&self.metrics.redis_connects);
                let redis = self.target.describe();
                match self.connections {
                    0 => info!(%redis, "Redis connected"),
                    _ => info!(%redis, "Redis reconnected"),
                }
                self.connections += 1;
                self.con = Some(con);
                self.backoff = BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                bump(&self.metrics.redis_errors);
                if self.backoff == BACKOFF_MIN {
                    let redis = self.target.describe();
                    warn!(%redis, error = %e, "Redis cannot connect; retrying with backoff");
                }
                self.retry_at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Err(StoreError::Redis(e))
            }
        }
    }

    fn open(&self) -> redis::RedisResult<redis::Connection> {
        let client = self.target.client()?;
        let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        self.scripts.load_all(&mut con)?;
        Ok(con)
    }
}

/// Whether the connection must be replaced after `e` (IO, timeout, a script cache that
/// was flushed under our pipelines, a server that became a replica).
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        // A master demoted by a Sentinel failover: the next connect asks for the new one.
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}
