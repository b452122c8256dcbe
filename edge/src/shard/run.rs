//! A shard's thread: taking its parts, arming its sockets, then turning whenever
//! readiness, the inbox, a peer shard or the one-second tick calls, and parking in its
//! poller's `epoll_wait` when nothing is left. The state it turns is [`Shard`]'s; this
//! file only waits.
//!
//! The shard is the one task of its glommio executor (which pins the thread) and never
//! awaits glommio: everything that can wake a shard — a socket, a sidecar's inbox message,
//! another shard's message, the tick — reaches it through its epoll set or the wait's
//! timeout, so the loop may block there. The status and `udpaddr` endpoints, which do run
//! on glommio's reactor, have an executor of their own (`endpoints`).

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{KIND_SHIFT, KIND_UDP, Shard, ShardParts, listener_token, udp};

/// The period of [`Shard::on_tick`] (deadlines have one-second resolution).
const TICK: Duration = Duration::from_secs(1);

/// What every shard thread is handed.
pub struct Startup {
    /// `parts[i]` is taken by shard `i`.
    pub parts: Mutex<Vec<Option<ShardParts>>>,
    /// Every shard waits here before its first turn (shut while an upgrade's old process
    /// still serves).
    pub gate: Arc<crate::node::Gate>,
}

/// Runs shard `index` until shutdown: takes its parts, arms the listeners, loops.
pub fn run(startup: &Startup, index: usize) {
    let parts = startup
        .parts
        .lock()
        .ok()
        .and_then(|mut p| p.get_mut(index).and_then(Option::take));
    let Some(mut parts) = parts else {
        tracing::error!(shard = index, "no parts");
        return;
    };
    let handover = parts.handover.take();
    let mut shard = Shard::new(parts);
    if let Some((records, mut fds)) = handover {
        shard.read_clock();
        shard.import(records, &mut fds);
    }
    for i in 0..shard.listeners.len() {
        let fd = shard.listeners[i].as_raw_fd();
        if let Err(e) = shard.poller.watch(fd, listener_token(i)) {
            tracing::error!(shard = shard.index, "cannot watch listener: {e}");
        }
    }
    if let Some(fd) = shard.udp.as_ref().map(udp::UdpSide::raw_fd)
        && let Err(e) = shard.poller.watch(fd, KIND_UDP << KIND_SHIFT)
    {
        tracing::error!(shard = shard.index, "cannot watch the UDP socket: {e}");
    }
    // No flush before the gate: an upgrade's imported outboxes are written only after GO
    // (on a rollback the old process sends them, once).
    startup.gate.wait();
    // What the old process of an upgrade held since its freeze goes first.
    for msg in startup.gate.take_released(shard.index) {
        shard.read_clock();
        shard.on_bus(msg);
    }
    shard.flush_registrations();
    turn_until_done(&mut shard);
    // The other shards see this one gone; the shard (its sockets, channel ends) drops here.
    shard.mesh.close();
}

/// Turns until shutdown; parks whenever a turn leaves nothing to do.
fn turn_until_done(shard: &mut Shard) {
    let mut next_tick = Instant::now() + TICK;
    loop {
        let now = shard.turn();
        if shard.done {
            return;
        }
        if now >= next_tick {
            shard.on_tick();
            next_tick = now + TICK;
        }
        if shard.has_backlog() {
            continue;
        }
        shard.poller.set_parked(true);
        // The queues a waker guards, looked at again after the announcement: what came
        // before it found the flag down and woke nobody. Sockets need no second look:
        // the epoll set keeps their readiness for the wait.
        if !shard.has_backlog() {
            shard
                .poller
                .wait(next_tick.saturating_duration_since(Instant::now()));
        }
        shard.poller.set_parked(false);
    }
}
