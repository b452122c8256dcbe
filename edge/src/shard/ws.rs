//! The WebSocket terminal side of a shard: reading, the upgrade, frames, heartbeats,
//! deadlines and closing (docs/protocol.md §3). Writing is in `write`; the login is in
//! `login`.
//!
//! Bytes are read into the shard's shared scratch buffer and parsed in place by
//! `edge_proto::ws`; only an incomplete tail is copied into the connection (`carry`), and
//! only a blocked write keeps an `outbox`. Decisions about where a message goes are in
//! `route`; wire formats are in `edge-proto`.

use std::io;
use std::sync::atomic::Ordering;

use bus::messages::ConnRef;
use edge_proto::login::LoginReply;
use edge_proto::ws::{self, OpCode};

use super::Shard;
use super::conn::State;
use super::net::{self, send2};
use crate::core::sessions::Handle;
use crate::core::terminal::Expired;
use crate::metrics::bump_own;

/// Longest upgrade request accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Largest frame, and most bytes held, before a connection has logged in: the login
/// string fits in it with room to spare.
pub const PRELOGIN_MAX: usize = 1024;
/// Reads per readiness event before yielding to other connections.
const READ_BUDGET: usize = 16;

impl Shard {
    pub(super) fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef {
            shard: self.index as u16,
            slot,
            generation: self.conns.generation(slot),
        }
    }

    /// Reads what the socket has and processes it.
    pub(super) fn on_readable(&mut self, slot: u32) {
        for round in 0..=READ_BUDGET {
            if round == READ_BUDGET {
                // More may be waiting: come back next turn (edge-triggered readiness).
                let generation = self.conns.generation(slot);
                self.again.push((slot, generation));
                return;
            }
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            if !conn.terminal.reading() {
                return;
            }
            if self.scratch.is_empty() {
                // Called from inside a read of this turn (the scratch is in use there): a
                // zero-length `recv` would read as end of stream, so read it next turn.
                let generation = self.conns.generation(slot);
                self.again.push((slot, generation));
                return;
            }
            let fd = conn.fd;
            let carry = conn.carry.take();
            let mut buf = std::mem::take(&mut self.scratch);
            let mut len = 0;
            if let Some(carry) = carry {
                buf[..carry.len()].copy_from_slice(&carry);
                len = carry.len();
                // Its allocation serves the next carry: no new one per read.
                self.spare_carry = Some(carry);
            }
            let space = buf.len() - len;
            if self.is_tls(slot) {
                let (alive, more) = self.read_tls(slot, fd, &mut buf, len);
                self.scratch = buf;
                if !alive || !more {
                    return;
                }
                continue;
            }
            match net::recv(fd, &mut buf[len..]) {
                Ok(0) => {
                    self.scratch = buf;
                    self.close(slot, None);
                    return;
                }
                Ok(n) => {
                    let alive = self.process(slot, &mut buf, len, len + n);
                    self.scratch = buf;
                    if !alive || n < space {
                        return;
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    if len > 0 {
                        self.keep_carry(slot, &buf[..len]);
                    }
                    self.scratch = buf;
                    return;
                }
                Err(_) => {
                    self.scratch = buf;
                    self.close(slot, None);
                    return;
                }
            }
        }
    }

    /// Processes bytes carried over (after a login answer resumed reading).
    pub(super) fn process_carry(&mut self, slot: u32) -> bool {
        let Some(carry) = self.conns.get_mut(slot).and_then(|c| c.carry.take()) else {
            return true;
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf[..carry.len()].copy_from_slice(&carry);
        let len = carry.len();
        self.spare_carry = Some(carry);
        let alive = self.process(slot, &mut buf, 0, len);
        self.scratch = buf;
        alive
    }

    pub(super) fn keep_carry(&mut self, slot: u32, bytes: &[u8]) {
        let mut carry = self.spare_carry.take().unwrap_or_default();
        carry.clear();
        carry.extend_from_slice(bytes);
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.carry = Some(carry);
        }
    }

    /// Handles `buf[..len]`, of which `buf[fresh..len]` just arrived; keeps an incomplete
    /// tail. False when the connection closed.
    pub(super) fn process(&mut self, slot: u32, buf: &mut [u8], fresh: usize, len: usize) -> bool {
        let mut pos = 0;
        if self.state(slot) == Some(State::Handshake) {
            // Parse only once the head can be complete, so a request dribbled in a byte at
            // a time costs linear, not quadratic, work.
            let tail = &buf[fresh.saturating_sub(3)..len];
            if len < MAX_REQUEST && !tail.windows(4).any(|w| w == b"\r\n\r\n") {
                self.keep_carry(slot, &buf[..len]);
                return true;
            }
            match self.on_upgrade_bytes(slot, &buf[..len]) {
                Some(0) => {
                    self.keep_carry(slot, &buf[..len]);
                    return true;
                }
                Some(consumed) => pos = consumed,
                None => return false,
            }
        }
        while pos < len {
            let max = match self.state(slot) {
                Some(State::Online) => self.config.max_message,
                Some(State::Login) => PRELOGIN_MAX.min(self.config.max_message),
                Some(_) => break,
                None => return false,
            };
            match ws::next_frame(&mut buf[pos..len], max) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let payload = pos + frame.payload.start..pos + frame.payload.end;
                    pos += frame.consumed;
                    if !self.on_frame(slot, frame.opcode, &buf[payload]) {
                        return false;
                    }
                }
                Err(ws::WsError::TooBig { .. }) => {
                    if self.state(slot) == Some(State::Login) {
                        bump_own(&self.metrics.prelogin_refused);
                    }
                    bump_own(&self.metrics.oversized_frames);
                    self.close(slot, Some(ws::CLOSE_TOO_BIG));
                    return false;
                }
                Err(_) => {
                    bump_own(&self.metrics.malformed_frames);
                    self.close(slot, Some(ws::CLOSE_PROTOCOL));
                    return false;
                }
            }
        }
        let waiting = matches!(
            self.state(slot),
            Some(State::Login | State::LoginPending | State::Joining)
        );
        if waiting && len - pos > PRELOGIN_MAX {
            // More than the login string before logging in: nobody needs to hold that.
            bump_own(&self.metrics.prelogin_refused);
            self.close(slot, Some(ws::CLOSE_POLICY));
            return false;
        }
        if pos < len {
            self.keep_carry(slot, &buf[pos..len]);
        }
        true
    }

    /// The HTTP upgrade: `Some(0)` = incomplete, `Some(n)` = done after n bytes, `None` = refused.
    fn on_upgrade_bytes(&mut self, slot: u32, bytes: &[u8]) -> Option<usize> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let result = match ws::parse_upgrade(bytes) {
            Ok(None) if bytes.len() < MAX_REQUEST => return Some(0),
            Ok(None) => {
                ws::write_http_error(&mut out, ws::HandshakeError::TooLarge);
                None
            }
            Ok(Some(upgrade)) => {
                ws::write_accept(&mut out, upgrade.key.as_bytes(), upgrade.protocol);
                Some(upgrade.consumed)
            }
            Err(e) => {
                ws::write_http_error(&mut out, e);
                None
            }
        };
        let fd = self.conns.get(slot).map(|c| c.fd)?;
        let sent = if self.is_tls(slot) {
            // Through the outbox, where it is sealed into TLS records.
            let conn = self.conns.get_mut(slot)?;
            let outbox = conn
                .outbox
                .get_or_insert_with(|| self.buffers.pop().unwrap_or_default());
            outbox.extend_from_slice(&out);
            self.flush_conn(slot);
            Ok(out.len())
        } else {
            send2(fd, &out, &[])
        };
        self.out = out;
        match result {
            Some(consumed) if sent.is_ok() => {
                bump_own(&self.metrics.ws_upgraded);
                let (now, timeouts) = (self.now(), self.timeouts);
                if let Some(conn) = self.conns.get_mut(slot) {
                    conn.terminal.upgraded(now, &timeouts);
                }
                self.upgraded_at.insert(slot, std::time::Instant::now());
                self.schedule(slot);
                Some(consumed)
            }
            _ => {
                bump_own(&self.metrics.ws_upgrade_refused);
                self.close(slot, None);
                None
            }
        }
    }

    /// One frame; false when the connection closed.
    fn on_frame(&mut self, slot: u32, opcode: OpCode, payload: &[u8]) -> bool {
        match opcode {
            OpCode::Close => {
                let code = ws::parse_close_payload(payload).unwrap_or(ws::CLOSE_NORMAL);
                let code = if code == ws::CLOSE_NORMAL || code == ws::CLOSE_GOING_AWAY {
                    code
                } else {
                    ws::CLOSE_NORMAL
                };
                self.close(slot, Some(code));
                false
            }
            OpCode::Ping => self.send_frame(slot, OpCode::Pong, payload),
            OpCode::Pong => true,
            _ => match self.state(slot) {
                Some(State::Login) => self.on_login(slot, payload),
                Some(State::Online) => {
                    let now = self.now();
                    if let Some(conn) = self.conns.get_mut(slot) {
                        conn.terminal.heard(now);
                    }
                    self.on_message(slot, payload)
                }
                _ => true,
            },
        }
    }

    pub(super) fn state(&self, slot: u32) -> Option<State> {
        self.conns.get(slot).map(|c| c.terminal.state())
    }

    /// A deadline passed: the upgrade, the login or the read window.
    pub(super) fn on_expired(&mut self, slot: u32, expired: Expired) {
        match expired {
            Expired::Handshake => {
                bump_own(&self.metrics.handshake_timeout);
                self.close(slot, None);
            }
            Expired::Login => {
                bump_own(&self.metrics.login_timeout);
                self.refuse(slot, LoginReply::LoginTimeout);
            }
            Expired::Read => {
                bump_own(&self.metrics.read_timeout);
                self.close(slot, Some(ws::CLOSE_NORMAL));
            }
        }
    }

    /// Ends a connection: optional close frame, logout if logged in, disarm, release.
    pub(super) fn close(&mut self, slot: u32, code: Option<u16>) {
        let code = self.tls_close_frame(slot, code);
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        // A close frame may only follow whole frames: a pending outbox (the tail of a frame)
        // goes first, and if it does not all go the close frame is left out.
        let flushed = conn
            .outbox
            .as_ref()
            .is_none_or(|o| send2(conn.fd, o, &[]).is_ok_and(|n| n == o.len()));
        let state = conn.terminal.state();
        if let (Some(code), true, true) = (code, state != State::Handshake, flushed) {
            let mut frame = Vec::with_capacity(4);
            ws::write_close(&mut frame, code);
            let _ = send2(conn.fd, &frame, &[]);
        }
        if conn.terminal.logged_in() {
            let (session, online) = (conn.id, state == State::Online);
            let bound = conn.bound.to_vec();
            let handle = Handle::ws(slot, self.conns.generation(slot));
            self.session_ended(handle, session, online, &bound);
            if online {
                self.metrics.ws_online.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let Some(conn) = self.conns.remove(slot) else {
            return;
        };
        self.upgraded_at.remove(&slot);
        self.tls_conns.remove(&slot);
        self.conn_limits.closed(slot);
        if let Some(outbox) = &conn.outbox {
            self.outbound.discarded(outbox.len());
        }
        // No `EPOLL_CTL_DEL`: closing the last descriptor of a socket takes it out of the
        // epoll set (a syscall a connection saved). Should another reference outlive it (a
        // descriptor an upgrade passed on), a late event carries this slot's old generation,
        // which no record matches.
        // SAFETY: the record owned the descriptor; it is closed at the end of the turn.
        self.closing
            .push(unsafe { std::os::fd::FromRawFd::from_raw_fd(conn.fd) });
        self.metrics.ws_open.fetch_sub(1, Ordering::Relaxed);
    }
}
