//! Writing to WebSocket terminals: frames are appended to the connection's outbox (a
//! pooled buffer) and every connection written to in a turn is flushed once at its end,
//! so a burst costs one `sendmsg`. A socket that does not take everything keeps its
//! outbox and asks for write readiness; a reader that falls `--max-outbound` bytes behind
//! is closed with 1008. The shard's queued bytes together have a budget too
//! (`--max-outbound-shard`): past it, frames are written at once and a connection that
//! cannot take its frame is closed with 1008, so many slow readers together cannot grow
//! the node's memory without bound either. An idle connection holds no buffer.

use std::io;
use std::sync::atomic::Ordering;

use edge_proto::ws::{self, OpCode};

use super::net::send2;
use super::{Shard, conn_token};
use crate::core::outbound::{Closed, Verdict};
use crate::metrics::bump_own;

/// Largest outbox buffer kept for reuse, and how many are kept per shard.
const POOLED_BUFFER_MAX: usize = 64 * 1024;
pub(super) const POOLED_BUFFERS: usize = 1024;

impl Shard {
    /// The opcode for messages to terminals (binary, or text like the original).
    fn terminal_opcode(&self) -> OpCode {
        if self.config.text_frames {
            OpCode::Text
        } else {
            OpCode::Binary
        }
    }

    /// Sends an application message to a terminal. False when the connection closed.
    pub(super) fn send_message(&mut self, slot: u32, message: &[u8]) -> bool {
        if slot & super::udp::UDP_BIT != 0 {
            return self.udp_deliver(slot, message);
        }
        let opcode = self.terminal_opcode();
        let sent = self.send_frame(slot, opcode, message);
        if sent {
            bump_own(&self.metrics.msgs_out);
        }
        sent
    }

    /// Queues one frame for the connection; every connection written to in a turn is
    /// flushed once at the end of it ([`Shard::flush_writes`]), so a burst of messages
    /// costs one `sendmsg`. What the socket does not take stays queued (bounded: a reader
    /// that falls `--max-outbound` bytes behind is closed with 1008). False when it closed.
    pub(super) fn send_frame(&mut self, slot: u32, opcode: OpCode, payload: &[u8]) -> bool {
        let (head, head_len) = ws::encode_head(opcode, payload.len() as u64);
        let total = head_len + payload.len();
        let Some(waiting) = self.outbox_len(slot) else {
            return false;
        };
        let over_budget = self.outbound.over_budget(total);
        let mut verdict = Verdict::Queue;
        if self.outbound.needs_flush(waiting, total) {
            // Try the socket first: only a reader that really does not keep up is closed.
            self.flush_conn(slot);
            let waiting = self.outbox_len(slot).unwrap_or(0);
            verdict = self.outbound.verdict(waiting, total, over_budget);
        }
        if let Verdict::Close(why) = verdict {
            return self.close_reader(slot, why);
        }
        let generation = self.conns.generation(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let outbox = conn
            .outbox
            .get_or_insert_with(|| self.buffers.pop().unwrap_or_default());
        outbox.extend_from_slice(&head[..head_len]);
        outbox.extend_from_slice(payload);
        self.outbound.queued_more(total);
        if verdict == Verdict::WriteNow {
            self.flush_conn(slot);
            if self.outbox_len(slot).unwrap_or(0) > 0 {
                return self.close_reader(slot, Closed::Budget);
            }
            return true;
        }
        if !conn.dirty && !conn.write_armed {
            conn.dirty = true;
            self.dirty.push((slot, generation));
        }
        true
    }

    /// Closes a reader the outbound bounds refuse (1008), counted by why. Always false.
    fn close_reader(&mut self, slot: u32, why: Closed) -> bool {
        match why {
            Closed::SlowReader => bump_own(&self.metrics.slow_reader_closed),
            Closed::Budget => bump_own(&self.metrics.outbound_budget_closed),
        }
        self.close(slot, Some(ws::CLOSE_POLICY));
        false
    }

    /// Shows the core's queued total in `/metrics`.
    pub(super) fn publish_queued(&self) {
        let queued = i64::try_from(self.outbound.queued()).unwrap_or(i64::MAX);
        self.metrics
            .outbound_queued_bytes
            .store(queued, Ordering::Relaxed);
    }

    /// Bytes queued for the connection in `slot`; `None` when there is none.
    pub(super) fn outbox_len(&self, slot: u32) -> Option<usize> {
        let conn = self.conns.get(slot)?;
        Some(conn.outbox.as_ref().map_or(0, |o| o.len()))
    }

    /// Flushes every connection written to since the last flush.
    pub(super) fn flush_writes(&mut self) {
        for (slot, generation) in std::mem::take(&mut self.dirty) {
            if let Some(conn) = self.conns.get_gen_mut(slot, generation) {
                conn.dirty = false;
                self.flush_conn(slot);
            }
        }
    }

    fn arm_write(&mut self, slot: u32) {
        let generation = self.conns.generation(slot);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if !conn.write_armed {
            conn.write_armed = true;
            let _ = self
                .poller
                .watch_writable(conn.fd, conn_token(slot, generation), true);
        }
    }

    /// A blocked socket can take more: flush its outbox.
    pub(super) fn on_writable(&mut self, slot: u32) {
        self.flush_conn(slot);
    }

    /// Writes the outbox until it is empty (its buffer goes back to the shard's pool: an
    /// idle connection holds none) or the socket is full (write readiness is requested).
    pub(super) fn flush_conn(&mut self, slot: u32) {
        let generation = self.conns.generation(slot);
        if self.is_tls(slot) && !self.tls_seal(slot) {
            self.close(slot, None);
            return;
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(mut outbox) = conn.outbox.take() else {
            return;
        };
        while !outbox.is_empty() {
            match send2(conn.fd, &outbox, &[]) {
                Ok(n) => {
                    outbox.drain(..n);
                    self.outbound.sent(n);
                    if let Some(tls) = self.tls_conns.get_mut(&slot) {
                        tls.sealed = tls.sealed.saturating_sub(n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    conn.outbox = Some(outbox);
                    self.close(slot, None);
                    return;
                }
            }
        }
        if !outbox.is_empty() {
            conn.outbox = Some(outbox);
            self.arm_write(slot);
            return;
        }
        if conn.write_armed {
            conn.write_armed = false;
            let _ = self
                .poller
                .watch_writable(conn.fd, conn_token(slot, generation), false);
        }
        if outbox.capacity() <= POOLED_BUFFER_MAX && self.buffers.len() < POOLED_BUFFERS {
            self.buffers.push(outbox);
        }
    }
}
