//! Online state from Redis (docs/protocol.md §9.3, §9.4): `PubKey` events and `Host:*` loads.
//!
//! One thread. Each session subscribes to `PubKey` **first** (the subscribe call returns
//! once Redis confirmed it), then loads every `Host:<comet>` hash with `SCAN MATCH Host:*`
//! (not `KEYS`) and `HKEYS`, hands the router the whole snapshot (which replaces the user
//! map), and only then reads the events buffered since the subscription, in order. An
//! event is idempotent on top of a snapshot taken after it, so the map converges to the
//! Redis state whatever interleaving the load had. On any error the session ends and a new
//! one starts after a backoff (1 s doubling to 30 s); the router keeps the last map
//! meanwhile (the original's pub/sub simply died).
//!
//! Does **not** write to Redis or interpret events (the router does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use edge_proto::pubsub::PUB_KEY;
use tracing::{info, warn};

use super::Event;
use super::stats::{Metrics, bump};
use crate::redis_target::RedisTarget;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the subscriber wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(500);
/// Idle polls before a PING checks the subscription is alive.
const PING_EVERY_POLLS: u32 = 20;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Keys asked per SCAN step.
const SCAN_COUNT: usize = 1000;
const HOST_PREFIX: &str = "Host:";

/// Starts the Redis thread for `target`.
pub(crate) fn spawn(
    target: RedisTarget,
    events: Sender<Event>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("msgbus-redis".into())
        .spawn(move || {
            let mut backoff = BACKOFF_MIN;
            while !stop.load(Ordering::Acquire) {
                match session(&target, &events, &metrics, &stop, &mut backoff) {
                    Ok(()) => return,
                    Err(error) => {
                        bump(&metrics.redis_errors);
                        if backoff == BACKOFF_MIN {
                            let redis = target.describe();
                            warn!(%redis, %error, "Redis lost; reloading the online map when back");
                        }
                    }
                }
                sleep_unless_stopped(backoff, &stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let step = left.min(Duration::from_millis(100));
        std::thread::sleep(step);
        left -= step;
    }
}

/// One subscribe + load + follow session; `Ok` only when stopped.
fn session(
    target: &RedisTarget,
    events: &Sender<Event>,
    metrics: &Metrics,
    stop: &AtomicBool,
    backoff: &mut Duration,
) -> redis::RedisResult<()> {
    let client = target.client()?;
    let mut sub = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    sub.set_write_timeout(Some(IO_TIMEOUT))?;
    sub.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(PUB_KEY)?;

    let snapshot = load_hosts(&client)?;
    let snapshot_len = snapshot.len();
    if events.send(Event::Reload(snapshot)).is_err() {
        return Ok(());
    }
    bump(&metrics.redis_loads);
    info!(redis = %target.describe(), comets = snapshot_len, "online map loaded from Redis");
    *backoff = BACKOFF_MIN;

    pubsub.set_read_timeout(Some(POLL))?;
    let mut idle = 0u32;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        match pubsub.get_message() {
            Ok(msg) => {
                idle = 0;
                let event = Event::PubKey(msg.get_payload_bytes().to_vec());
                if events.send(event).is_err() {
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => {
                idle += 1;
                if idle >= PING_EVERY_POLLS {
                    idle = 0;
                    pubsub.set_read_timeout(Some(IO_TIMEOUT))?;
                    let _: redis::Value = pubsub.ping()?;
                    pubsub.set_read_timeout(Some(POLL))?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every `Host:<comet>` hash as `(comet, ids)`; fields that are not ids are skipped.
fn load_hosts(client: &redis::Client) -> redis::RedisResult<Vec<(String, Vec<i64>)>> {
    let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{HOST_PREFIX}*"))
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(&mut con)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort_unstable();
    keys.dedup();
    let mut snapshot = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(comet) = key.strip_prefix(HOST_PREFIX).filter(|c| !c.is_empty()) else {
            continue;
        };
        let fields: Vec<String> = match redis::cmd("HKEYS").arg(&key).query(&mut con) {
            Ok(fields) => fields,
            // A `Host:` key that is not a hash is not ours: skip it.
            Err(e) if !e.is_io_error() && !e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        let ids = fields
            .iter()
            .filter_map(|f| f.parse::<i64>().ok())
            .collect();
        snapshot.push((comet.to_owned(), ids));
    }
    Ok(snapshot)
}
