//! A shard's turn: one batch of readiness, sidecar messages and other shards' messages,
//! handed to the handlers in `ws`, `route`, `sessions` and `udp`, then the writes and
//! registrations flushed; and what the loop asks before it parks ([`Shard::has_backlog`]).
//! While an upgrade is under way a turn reads no socket and, once frozen, only holds what
//! arrives. Waiting is `run`'s; deadlines are the tick's (`mod.rs`).

use std::time::Instant;

use bus::messages::ToShard;

use super::{
    KIND_CONN, KIND_LISTENER, KIND_SHIFT, KIND_UDP, NEWCOMERS_PER_TURN, PEER_BUDGET, SLOW_TURN,
    Shard, conn, udp,
};
use crate::core::wheel::Secs;
use crate::poller::Readiness;

impl Shard {
    /// One batch: readiness, inbox, backlog, then hand registrations to the kernel and
    /// close what was closed.
    pub(super) fn turn(&mut self) -> Instant {
        let started = Instant::now();
        self.clock = started.saturating_duration_since(self.epoch).as_secs() as Secs;
        self.turn_inner();
        self.account_turn(started, "turn");
        started
    }

    /// Records a turn's length: the longest in `shard_turn_max_us`, a slow one counted
    /// and logged with the shard's index.
    pub(super) fn account_turn(&mut self, started: Instant, what: &str) {
        let took = started.elapsed();
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.metrics
            .shard_turn_max_us
            .fetch_max(us, std::sync::atomic::Ordering::Relaxed);
        self.metrics.turn_time.record(took);
        if took > SLOW_TURN {
            crate::metrics::bump_own(&self.metrics.shard_slow_turns);
            if let Some(held_back) = self.slow_log.admit(Instant::now()) {
                let ms = took.as_millis();
                tracing::warn!(shard = self.index, ms, held_back, "slow {what}");
            }
        }
    }

    fn turn_inner(&mut self) {
        self.poller.drain(&mut self.ready);
        if self.frozen {
            // Only a resume (or the end) changes anything now: what else arrives is kept
            // for a resume (written now, it could land between bytes the new process sends).
            // A `Shutdown` is kept too: the connections may be the new process's by now. The
            // upgrade's deadline ends the freeze: on GO this process exits, on a rollback
            // the resume replays the shutdown.
            self.ready.clear();
            // Before the inbox: a release of what is held must include these.
            self.drain_peers(usize::MAX);
            while let Ok(msg) = self.inbox.try_recv() {
                match msg {
                    ToShard::Upgrade(bus::messages::Upgrade::Resume) => {
                        self.resume();
                        break;
                    }
                    ToShard::Upgrade(bus::messages::Upgrade::Release { pushes, reply }) => {
                        let _ = reply.try_send(self.release_held(pushes));
                    }
                    msg => self.held_while_frozen.push(msg),
                }
            }
            if !self.frozen {
                // Resumed: what the replay wrote, sent and reported goes out now.
                self.flush_registrations();
            }
            return;
        }
        if self.quiet {
            // Sockets are left unread for the new process; answers and relays still land.
            self.ready.clear();
            self.drain_inbox();
            if self.frozen {
                return;
            }
            self.drain_peers(PEER_BUDGET);
            self.flush_peer_backlog();
            self.flush_registrations();
            return;
        }
        let ready = std::mem::take(&mut self.ready);
        if self.udp_again {
            self.on_udp_ready();
        }
        for r in &ready {
            if self.is_newcomer(r) {
                self.newcomers.push_back(*r);
            } else {
                self.on_ready(*r);
            }
        }
        self.ready = ready;
        self.reread();
        for _ in 0..NEWCOMERS_PER_TURN {
            let Some(r) = self.newcomers.pop_front() else {
                break;
            };
            self.on_ready(r);
        }
        self.drain_inbox();
        self.drain_peers(PEER_BUDGET);
        self.flush_peer_backlog();
        self.flush_registrations();
    }

    /// Takes what the other shards sent, up to `budget` from each (kept whole while
    /// frozen, for a resume or the new process).
    fn drain_peers(&mut self, budget: usize) {
        let mut msgs = std::mem::take(&mut self.from_peers);
        self.mesh.recv(budget, &mut msgs);
        for msg in msgs.drain(..) {
            if self.frozen {
                self.held_peer_while_frozen.push(msg);
            } else {
                self.on_peer(msg);
            }
        }
        self.from_peers = msgs;
    }

    fn drain_inbox(&mut self) {
        for _ in 0..1024 {
            match self.inbox.try_recv() {
                Ok(msg) => self.on_bus(msg),
                Err(_) => break,
            }
            // Once an upgrade wrote the state, the rest waits (the frozen turn keeps it).
            if self.frozen {
                break;
            }
        }
    }

    /// Work left after a turn (a read budget ran out, the inbox or a mesh queue holds
    /// messages, or a peer's queue refused a directory report): the loop must come back
    /// instead of parking. Asked again after the parked flag is raised, it must see every
    /// queue a waker guards, frozen or not: a message queued before the flag went up woke
    /// nobody.
    pub(super) fn has_backlog(&self) -> bool {
        let queued = !self.inbox.is_empty() || self.mesh.has_inbound();
        if self.frozen {
            // The frozen turn empties both queues, so this cannot spin; a refused report
            // waits for the resume.
            return queued;
        }
        let to_send = queued || !self.peer_backlog.is_empty();
        if self.quiet {
            // Sockets wait for the new process.
            return to_send;
        }
        to_send || !self.again.is_empty() || self.udp_again || !self.newcomers.is_empty()
    }

    /// A listener, or a connection still upgrading or logging in.
    fn is_newcomer(&self, r: &Readiness) -> bool {
        match (r.token >> KIND_SHIFT) & 0x7 {
            KIND_LISTENER => true,
            KIND_CONN => {
                let generation = ((r.token >> 32) as u32) & conn::GENERATION_MASK;
                self.conns
                    .get_gen(r.token as u32, generation)
                    .is_some_and(|c| c.terminal.newcomer())
            }
            _ => false,
        }
    }

    pub(super) fn flush_registrations(&mut self) {
        self.flush_writes();
        self.flush_udp();
        self.closing.clear();
        self.publish_queued();
        // Once per batch: a parked peer pays one wake for all it was sent.
        self.mesh.wake_sent();
    }

    fn on_ready(&mut self, r: Readiness) {
        let kind = (r.token >> KIND_SHIFT) & 0x7;
        if kind == KIND_LISTENER {
            self.on_listener_ready((r.token & 0xffff) as usize);
            return;
        }
        if kind == KIND_UDP {
            self.on_udp_ready();
            return;
        }
        let slot = r.token as u32;
        let generation = ((r.token >> 32) as u32) & conn::GENERATION_MASK;
        if r.writable && self.conns.get_gen_mut(slot, generation).is_some() {
            self.on_writable(slot);
        }
        if r.readable && self.conns.get_gen_mut(slot, generation).is_some() {
            self.on_readable(slot);
            // A short read ends a read; with the peer gone, the end of the stream may sit
            // behind it with no edge to come: read again next turn.
            if r.hangup && self.conns.get_gen_mut(slot, generation).is_some() {
                self.again.push((slot, generation));
            }
        }
    }

    /// Connections whose read budget ran out with data left: read them again (no new
    /// edge will come for that data).
    fn reread(&mut self) {
        for (slot, generation) in std::mem::take(&mut self.again) {
            if self.conns.get_gen_mut(slot, generation).is_some() {
                self.on_readable(slot);
            }
        }
    }

    pub(super) fn on_bus(&mut self, msg: ToShard) {
        match msg {
            ToShard::LoginDone { conn, result } if conn.slot & udp::UDP_BIT != 0 => {
                self.on_udp_login_done(conn, result)
            }
            ToShard::LoginDone { conn, result } => self.on_login_done(conn, result),
            ToShard::Platform { conn, answer } => self.on_platform(conn, answer),
            ToShard::UploadAck { conn, ack } if conn.slot & udp::UDP_BIT != 0 => {
                self.udp_upload_ack(conn, &ack)
            }
            ToShard::UploadAck { conn, ack } => {
                if self.conns.get_gen_mut(conn.slot, conn.generation).is_some() {
                    self.send_message(conn.slot, &ack);
                }
            }
            ToShard::Binding {
                device,
                user,
                bound,
            } => self.on_binding(device, user, bound),
            ToShard::Deliver { ids, payload } => self.deliver_local(&ids, &payload),
            ToShard::Routes(batch) => self.resolve_batch(&batch),
            ToShard::Kick { user } => self.kick_user(user),
            ToShard::AddrQuery { device, reply } => {
                let addr = self.device_addr(device);
                let _ = reply.try_send(addr);
            }
            ToShard::Shutdown => self.begin_shutdown(),
            ToShard::Upgrade(step) => self.on_upgrade(step),
        }
    }

    fn on_upgrade(&mut self, step: bus::messages::Upgrade) {
        use bus::messages::Upgrade;
        match step {
            Upgrade::Quiesce { done } => {
                self.quiesce();
                let _ = done.try_send(());
            }
            Upgrade::Freeze { reply } => {
                let frozen = self.freeze();
                let _ = reply.try_send(frozen);
            }
            Upgrade::Resume => self.resume(),
            // Only a frozen shard holds anything (its turn answers this).
            Upgrade::Release { reply, .. } => {
                let _ = reply.try_send(bus::messages::Released::default());
            }
        }
    }
}
