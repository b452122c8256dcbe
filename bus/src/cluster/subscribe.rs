//! The Redis subscriber thread (docs/protocol.md §9.4, §7): `PSUBSCRIBE PubCommonMsg:*`,
//! `SUBSCRIBE PubDeviceUsers PubModifiedPasswdUser`, each event broadcast to every shard.
//!
//! A session subscribes, then reads with a short timeout (to notice the stop flag) and
//! PINGs when idle; any error ends it and a new one starts after a backoff (100 ms doubling
//! to 5 s) — the original's subscriber goroutines died silently (docs/protocol.md §10.4).
//!
//! Each comet delivers pushes to its own sessions and applies binding events to its own
//! sessions only, so a bind notification reaches each phone once however many comets
//! there are (the original relayed one per comet, docs/protocol.md §10.3).
//!
//! Does **not** publish (the request thread does) or touch Redis keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use edge_proto::pubsub::{
    CommonMsg, DeviceUsersEvent, ModifiedPasswdUser, PUB_COMMON_MSG_PATTERN, PUB_COMMON_MSG_PREFIX,
    PUB_DEVICE_USERS, PUB_MODIFIED_PASSWD_USER, common_msg_id,
};

use tracing::{info, warn};

use super::metrics::{ClusterMetrics, bump};
use crate::messages::{Payload, ShardInbox, ToShard};
use crate::redis_target::RedisTarget;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout between stop-flag checks.
const POLL: Duration = Duration::from_millis(200);
/// Idle polls before a PING proves the subscription alive.
const PING_EVERY_POLLS: u32 = 50;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the subscriber needs.
pub(crate) struct Subscriber {
    pub target: RedisTarget,
    pub shards: Arc<[ShardInbox]>,
    pub pusher: bool,
    pub metrics: Arc<ClusterMetrics>,
    pub stop: Arc<AtomicBool>,
}

/// Starts the subscriber thread; it ends when `stop` is set.
pub(crate) fn spawn(sub: Subscriber) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bus-subscriber".into())
        .spawn(move || {
            let mut backoff = BACKOFF_MIN;
            while !sub.stop.load(Ordering::Acquire) {
                if let Err(error) = session(&sub, &mut backoff) {
                    bump(&sub.metrics.pubsub_errors);
                    if backoff == BACKOFF_MIN {
                        let redis = sub.target.describe();
                        warn!(%redis, %error, "Redis subscription down; resubscribing");
                    }
                }
                sleep_unless_stopped(backoff, &sub.stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let step = left.min(Duration::from_millis(50));
        std::thread::sleep(step);
        left -= step;
    }
}

/// One subscription session; `Ok` when stopped.
fn session(sub: &Subscriber, backoff: &mut Duration) -> redis::RedisResult<()> {
    let client = sub.target.client()?;
    let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut pubsub = con.as_pubsub();
    pubsub.psubscribe(PUB_COMMON_MSG_PATTERN)?;
    pubsub.subscribe(&[PUB_DEVICE_USERS, PUB_MODIFIED_PASSWD_USER])?;
    bump(&sub.metrics.subscribed);
    info!(redis = %sub.target.describe(), "Redis subscription up");
    *backoff = BACKOFF_MIN;
    pubsub.set_read_timeout(Some(POLL))?;
    let mut idle = 0u32;
    loop {
        if sub.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        match pubsub.get_message() {
            Ok(msg) => {
                idle = 0;
                on_message(sub, msg.get_channel_name(), msg.get_payload_bytes());
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

fn on_message(sub: &Subscriber, channel: &str, payload: &[u8]) {
    if channel == PUB_DEVICE_USERS {
        let Ok(event) = DeviceUsersEvent::parse(payload) else {
            return bump(&sub.metrics.pubsub_bad);
        };
        bump(&sub.metrics.bindings);
        broadcast(sub, &|| ToShard::Binding {
            device: event.device,
            user: event.user,
            bound: event.bind,
        });
    } else if channel == PUB_MODIFIED_PASSWD_USER {
        let Ok(ModifiedPasswdUser(user)) = ModifiedPasswdUser::parse(payload) else {
            return bump(&sub.metrics.pubsub_bad);
        };
        bump(&sub.metrics.kicks);
        broadcast(sub, &|| ToShard::Kick { user });
    } else if channel.starts_with(PUB_COMMON_MSG_PREFIX) {
        on_push(sub, channel, payload);
    }
}

fn on_push(sub: &Subscriber, channel: &str, payload: &[u8]) {
    let parsed = common_msg_id(channel).and_then(|id| Ok((id, CommonMsg::parse(payload)?)));
    let Ok((msg_id, msg)) = parsed else {
        return bump(&sub.metrics.pubsub_bad);
    };
    let ids = expand_push(msg.ids(), sub.pusher);
    if ids.is_empty() {
        return bump(&sub.metrics.pubsub_bad);
    }
    bump(&sub.metrics.pushes);
    let ids: Arc<[i64]> = ids.into();
    let body: Arc<[u8]> = msg.body.into();
    broadcast(sub, &|| ToShard::Deliver {
        ids: ids.clone(),
        payload: Payload::Push {
            msg_id,
            body: body.clone(),
        },
    });
}

/// Push ids expanded (docs/protocol.md §7.1): a user → its 15 mobile ids, a concrete mobile id → itself (the
/// original skipped it), a device → itself only on a pusher comet (`-up`), 0 → nothing.
pub(crate) fn expand_push(ids: impl Iterator<Item = i64>, pusher: bool) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        if id > 0 && id % 16 == 0 {
            out.extend((1..16).map(|k| id + k));
        } else if id > 0 || (id < 0 && pusher) {
            out.push(id);
        }
    }
    out
}

fn broadcast(sub: &Subscriber, msg: &dyn Fn() -> ToShard) {
    for shard in sub.shards.iter() {
        if shard.send(msg()).is_err() {
            bump(&sub.metrics.broadcast_dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_expansion() {
        let ids = [16, 0, 33, -7];
        let ws = expand_push(ids.into_iter(), false);
        assert_eq!(ws.len(), 16);
        assert_eq!(ws.first(), Some(&17));
        assert_eq!(ws.last(), Some(&33));
        assert_eq!(expand_push(ids.into_iter(), true).last(), Some(&-7));
        assert!(expand_push([0].into_iter(), true).is_empty());
    }
}
