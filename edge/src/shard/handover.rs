//! A shard's side of a zero-downtime upgrade (issue 15): in the old process, stop reading
//! (quiesce), then write the shard's state as a handover stream (`edge_proto::handover`)
//! with the descriptors its records name (freeze), and serve again if the new process
//! fails (resume); in the new process, take a stream's connections, UDP sessions and
//! directory slice in before the first turn (import).
//!
//! What is handed over: every listener and the UDP socket; every WebSocket connection
//! waiting for its upgrade, its login, or online (its id, bound peers, heartbeat period,
//! deadline, unsent bytes and the partial frame read); every UDP session not waiting on
//! the platform or the directory (sid, device, address, both sequence numbers, expiry,
//! bound users); the shard's directory slice; an established TLS connection's record
//! layer (keys, IVs, sequence numbers, a partial record), its outbox sealed first. What is
//! not: a TLS handshake or a login or platform call in flight (closed with 1012,
//! "restarting", so that the client reconnects at once, or, for UDP, the session left out:
//! the device starts over) — counted in `upgrade_closed`.
//!
//! The fds stay the old shard's until the old process exits (after the new one confirms),
//! so a failed upgrade loses nothing: the shard resumes and reads every socket again.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use edge_proto::handover::{self, Handover, ListenerKind, Record};

use super::conn::{Conn, State};
use super::{Shard, udp::UDP_BIT};
use crate::core::sessions::Handle;
use crate::core::terminal::Terminal;
use crate::core::wheel::{Entry, Secs};
use crate::metrics::bump_own;

/// A handed-over connection's stage in the stream: waiting for its upgrade, its login, or
/// online (a login in flight is never handed over).
const STAGE_HANDSHAKE: u8 = 0;
const STAGE_LOGIN: u8 = 1;
/// See [`STAGE_HANDSHAKE`].
pub(crate) const STAGE_ONLINE: u8 = 4;

fn stage_number(state: State) -> Option<u8> {
    match state {
        State::Handshake => Some(STAGE_HANDSHAKE),
        State::Login => Some(STAGE_LOGIN),
        State::Online => Some(STAGE_ONLINE),
        State::LoginPending | State::Joining => None,
    }
}

fn stage_of(number: u8) -> Option<State> {
    match number {
        STAGE_HANDSHAKE => Some(State::Handshake),
        STAGE_LOGIN => Some(State::Login),
        STAGE_ONLINE => Some(State::Online),
        _ => None,
    }
}

impl Shard {
    /// Stops reading sockets and accepting; the inbox and the mesh are still taken.
    pub(super) fn quiesce(&mut self) {
        self.quiet = true;
    }

    /// Writes the handover stream and lists the descriptors it names; from now on the
    /// shard touches nothing until [`Shard::resume`].
    pub(super) fn freeze(&mut self) -> bus::messages::Frozen {
        self.close_unhandable();
        self.frozen = true;
        let now = self.now();
        let mut records = Vec::new();
        let mut fds: Vec<RawFd> = Vec::new();
        let fd_index = |fd: RawFd, fds: &mut Vec<RawFd>| {
            fds.push(fd);
            (fds.len() - 1) as u32
        };
        for (i, listener) in self.listeners.iter().enumerate() {
            let kind = if i >= self.tls_listener_from {
                ListenerKind::Wss
            } else {
                ListenerKind::Ws
            };
            let fd = fd_index(listener.as_raw_fd(), &mut fds);
            records.push(Record::Listener { fd, kind });
        }
        if let Some(udp) = &self.udp {
            let fd = fd_index(udp.raw_fd(), &mut fds);
            records.push(Record::Listener {
                fd,
                kind: ListenerKind::Udp,
            });
        }
        for slot in self.conns.slots() {
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            let Some(stage) = stage_number(conn.terminal.state()) else {
                continue;
            };
            let conn_fd = conn.fd;
            let tls = if self.is_tls(slot) {
                match self.tls_export(slot) {
                    Some(keys) => Some(keys),
                    None => continue,
                }
            } else {
                None
            };
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            let fd = fd_index(conn_fd, &mut fds);
            records.push(Record::WsConn(handover::WsConn {
                fd,
                id: conn.id,
                mobile: conn.mobile,
                stage,
                heartbeat_secs: conn.terminal.period(),
                deadline_in_secs: conn.terminal.deadline().saturating_sub(now),
                bound: conn.bound.to_vec(),
                outbox: conn.outbox.as_deref().cloned().unwrap_or_default(),
                carry: conn.carry.as_deref().cloned().unwrap_or_default(),
                tls,
            }));
        }
        records.extend(
            self.core
                .directory
                .iter()
                .map(|(key, mask)| Record::Directory { key, mask }),
        );
        if let Some(udp) = &self.udp {
            records.extend(udp.table().handover_records(now).0);
        }
        let (connections, udp_sessions) = handover::tally(&records);
        let stream = handover::encode(&Handover {
            shard: self.index as u16,
            shards: self.count as u16,
            records,
        });
        bus::messages::Frozen {
            stream,
            fds,
            connections,
            udp_sessions,
        }
    }

    /// Closes what cannot be handed over with 1012 (TLS connections, logins in flight),
    /// and flushes what it can of the rest.
    fn close_unhandable(&mut self) {
        for slot in self.conns.slots() {
            let Some(conn) = self.conns.get(slot) else {
                continue;
            };
            let handshaking = self.is_tls(slot) && !self.tls_established(slot);
            if handshaking || stage_number(conn.terminal.state()).is_none() {
                bump_own(&self.metrics.upgrade_closed);
                self.close(slot, Some(edge_proto::ws::CLOSE_RESTART));
            }
        }
        if let Some(udp) = &self.udp {
            let left_out = udp.table().handover_left_out();
            crate::metrics::add_own(&self.metrics.upgrade_closed, left_out as u64);
        }
        self.flush_registrations();
    }

    /// The upgrade failed: serve again, reading every socket for what arrived meanwhile
    /// (no readiness edge will come for it).
    pub(super) fn resume(&mut self) {
        self.quiet = false;
        self.frozen = false;
        for slot in self.conns.slots() {
            self.again.push((slot, self.conns.generation(slot)));
            // Write readiness seen while quiet was dropped: try every queued outbox now.
            if self.outbox_len(slot).unwrap_or(0) > 0 {
                self.on_writable(slot);
            }
        }
        for i in 0..self.listeners.len() {
            self.newcomers.push_back(crate::poller::Readiness {
                token: super::listener_token(i),
                readable: true,
                writable: false,
                hangup: false,
            });
        }
        if self.udp.is_some() {
            self.on_udp_ready();
        }
        for msg in std::mem::take(&mut self.held_peer_while_frozen) {
            self.on_peer(msg);
        }
        for msg in std::mem::take(&mut self.held_while_frozen) {
            self.on_bus(msg);
        }
    }

    /// Takes in the connections, UDP sessions and directory slice of a handover stream
    /// (its listeners and UDP socket were given to the shard at start). `fds[i]` is the
    /// descriptor the records name as `i`.
    pub(super) fn import(&mut self, records: Vec<Record>, fds: &mut [Option<OwnedFd>]) {
        let now = self.now();
        for record in records {
            match record {
                Record::WsConn(conn) => self.import_conn(conn, fds, now),
                Record::UdpSession(session) => self.import_udp(session, now),
                Record::Directory { key, mask } => {
                    for shard in (0..self.count).filter(|s| mask & (1 << s) != 0) {
                        self.core.directory.apply(key, shard, true);
                    }
                }
                _ => {}
            }
        }
    }

    fn import_conn(&mut self, c: handover::WsConn, fds: &mut [Option<OwnedFd>], now: Secs) {
        let (Some(fd), Some(state)) = (
            fds.get_mut(c.fd as usize).and_then(Option::take),
            stage_of(c.stage),
        ) else {
            return;
        };
        let tls = match c.tls.as_deref() {
            Some(keys) => match super::tls::TlsConn::restored(keys, c.outbox.len()) {
                Some(tls) => Some(tls),
                None => {
                    // Keys that make no record layer: the connection cannot go on.
                    bump_own(&self.metrics.upgrade_closed);
                    return; // `fd` closes here.
                }
            },
            None => None,
        };
        let deadline = now + Secs::from(c.deadline_in_secs);
        let mut conn = Conn::new(
            fd.as_raw_fd(),
            Terminal::restored(state, c.heartbeat_secs, deadline),
        );
        conn.id = c.id;
        conn.mobile = c.mobile;
        conn.bound = c.bound.into_boxed_slice();
        conn.carry = (!c.carry.is_empty()).then(|| Box::new(c.carry));
        let source =
            super::net::peer_ip(fd.as_raw_fd()).map_or(0, crate::core::conn_limits::source_key);
        // A connection already up is never refused for its source's count.
        let Some((slot, generation)) = self.adopt(fd, conn, source, false) else {
            return;
        };
        if let Some(tls) = tls {
            self.tls_conns.insert(slot, tls);
        }
        let (id, outbox) = (c.id, c.outbox);
        self.metrics.ws_open.fetch_add(1, Ordering::Relaxed);
        if state == State::Online {
            self.metrics.ws_online.fetch_add(1, Ordering::Relaxed);
            let handle = Handle::ws(slot, generation);
            if let Err(e) = self.core.sessions.insert(id, handle) {
                self.invariant_broken(&e);
            }
        }
        if !outbox.is_empty() {
            self.outbound.queued_more(outbox.len());
            // Flushed by the first turn, after the gate: nothing is written before GO
            // (a rollback then sends these bytes from the old process, once).
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.outbox = Some(Box::new(outbox));
                conn.dirty = true;
                self.dirty.push((slot, generation));
            }
        }
        self.schedule(slot);
        // A frame may wait whole in the carried bytes, or more behind them in the socket.
        self.again.push((slot, generation));
    }

    fn import_udp(&mut self, record: handover::UdpSession, now: Secs) {
        let Some(udp) = self.udp.as_mut() else {
            return;
        };
        let Some((slot, generation, device, deadline)) = udp.table_mut().restore(record, now)
        else {
            bump_own(&self.metrics.udp_drop_full);
            return;
        };
        self.metrics.udp_sessions.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            slot: slot | UDP_BIT,
            generation,
        };
        self.wheel.insert(deadline, entry);
        if device != 0
            && let Err(e) = self
                .core
                .sessions
                .insert(device, Handle::udp(slot, generation))
        {
            self.invariant_broken(&e);
        }
    }
}
