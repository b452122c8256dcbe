//! A WebSocket connection's login (docs/protocol.md §3.2–3.3): the login string checked, the
//! grant asked for (answered in place by the embedded tables, or later by the cluster
//! sidecar), the session indexed and, once its directory entry is confirmed, the reply
//! and the switch to online; a refusal is a reply code, then a close.
//!
//! It owns no state of its own: the connection's stage is its `Terminal`, the grant's
//! tables are `bus::embedded::Logins` or the cluster sidecar's, the index is `core`'s.

use std::sync::atomic::Ordering;

use bus::messages::{ConnRef, LoginGrant};
use edge_proto::login::{LoginReject, LoginReply, LoginRequest};
use edge_proto::ws::{self, OpCode};

use super::Shard;
use super::conn::State;
use super::sessions::LoginAsked;
use crate::core::sessions::Handle;
use crate::metrics::bump_own;

impl Shard {
    pub(super) fn on_login(&mut self, slot: u32, payload: &[u8]) -> bool {
        let request = match LoginRequest::parse(payload) {
            Ok(request) => request,
            Err(_) => {
                bump_own(&self.metrics.login_wrong_params);
                return self.refuse(slot, LoginReply::WrongParams);
            }
        };
        let config = self.config.clone();
        if let Err(reject) =
            request.verify(&config.salt, Self::unix_now(), config.allow_zero_timestamp)
        {
            return match reject {
                LoginReject::WrongMd5 => {
                    bump_own(&self.metrics.login_wrong_md5);
                    self.refuse(slot, LoginReply::WrongMd5)
                }
                _ => {
                    bump_own(&self.metrics.login_wrong_timestamp);
                    self.refuse(slot, LoginReply::WrongTimestamp)
                }
            };
        }
        let id = request.id;
        if id == 0 || (id > 0 && id % 16 != 0) {
            bump_own(&self.metrics.login_wrong_id);
            return self.refuse(slot, LoginReply::WrongId);
        }
        let conn_ref = self.conn_ref(slot);
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.id = id;
            conn.terminal.login_requested(request.timeout);
        }
        match self.ask_login(conn_ref, id) {
            LoginAsked::Answered(result) => {
                // In the middle of reading: the caller reads on once this returns.
                self.login_answered(conn_ref, result, false);
                self.state(slot).is_some()
            }
            LoginAsked::Sent => true,
            LoginAsked::QueueFull => {
                bump_own(&self.metrics.login_server_error);
                self.refuse(slot, LoginReply::ServerError)
            }
        }
    }

    /// Sends a login reply code, then closes.
    pub(super) fn refuse(&mut self, slot: u32, reply: LoginReply) -> bool {
        let mut bytes = Vec::with_capacity(2);
        reply.write_to(&mut bytes);
        self.send_frame(slot, OpCode::Binary, &bytes);
        self.close(slot, Some(ws::CLOSE_NORMAL));
        false
    }

    /// The cluster sidecar answered a login.
    pub(super) fn on_login_done(&mut self, conn: ConnRef, result: Result<LoginGrant, u8>) {
        self.login_answered(conn, result, true);
    }

    /// A login was answered; `resume`: reading stopped for it, so read again once online.
    fn login_answered(&mut self, conn: ConnRef, result: Result<LoginGrant, u8>, resume: bool) {
        let alive = self
            .conns
            .get_gen_mut(conn.slot, conn.generation)
            .is_some_and(|c| c.terminal.state() == State::LoginPending);
        let slot = conn.slot;
        let grant = match result {
            Ok(grant) if alive => grant,
            Ok(grant) => {
                // The connection went away meanwhile: give the mobile id back.
                return self.release_login(grant.session);
            }
            Err(code) if alive => {
                if code == 3 {
                    bump_own(&self.metrics.login_wrong_id);
                } else {
                    bump_own(&self.metrics.login_server_error);
                }
                self.refuse(
                    slot,
                    LoginReply::decode(&[code]).unwrap_or(LoginReply::ServerError),
                );
                return;
            }
            Err(_) => return,
        };
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        c.id = grant.session;
        c.mobile = grant.mobile;
        c.terminal.granted();
        c.bound = grant.bound.into_boxed_slice();
        match self.join_session(Handle::ws(slot, conn.generation), grant.session) {
            Ok(true) => {
                if self.finish_login(slot) && resume {
                    self.resume_reading(slot);
                }
            }
            Ok(false) => {}
            Err(_) => {
                // Not indexed: give the grant back and refuse, as for a full bus queue.
                if let Some(c) = self.conns.get_mut(slot) {
                    c.terminal.join_failed();
                }
                self.release_login(grant.session);
                bump_own(&self.metrics.login_server_error);
                self.refuse(slot, LoginReply::ServerError);
            }
        }
    }

    /// The directory shard confirmed the entry a login waited for.
    pub(super) fn on_directory_ack(&mut self, slot: u32, generation: u32) {
        if Handle::ws(slot, generation).is_udp() {
            let live = self
                .udp
                .as_ref()
                .is_some_and(|u| u.generation(slot) == generation);
            if live {
                self.finish_udp_login(slot);
            }
        } else if self
            .conns
            .get_gen_mut(slot, generation)
            .is_some_and(|c| c.terminal.state() == State::Joining)
            && self.finish_login(slot)
        {
            self.resume_reading(slot);
        }
    }

    /// The session is reachable from every shard: reply to the login, go online. False
    /// when the connection closed.
    fn finish_login(&mut self, slot: u32) -> bool {
        let now = self.now();
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        let session = c.id;
        c.terminal.joined(now);
        let reply = if session > 0 {
            LoginReply::PhoneOk(c.mobile)
        } else {
            LoginReply::DeviceOk
        };
        let mut bytes = Vec::with_capacity(2);
        reply.write_to(&mut bytes);
        bump_own(&self.metrics.login_ok);
        if let Some(upgraded) = self.upgraded_at.remove(&slot) {
            self.metrics.login_time.record(upgraded.elapsed());
        }
        self.metrics.ws_online.fetch_add(1, Ordering::Relaxed);
        if !self.send_frame(slot, OpCode::Binary, &bytes) {
            return false;
        }
        self.schedule(slot);
        if session < 0 {
            let users = self
                .conns
                .get(slot)
                .map(|c| c.bound.to_vec())
                .unwrap_or_default();
            self.send_device_status(
                session,
                &users,
                edge_proto::status::StatusType::DeviceOnline,
            );
        }
        true
    }

    /// Reading stopped while a login was answered: handle what was carried, then read what
    /// came meanwhile (its readiness edge has passed).
    fn resume_reading(&mut self, slot: u32) {
        if self.process_carry(slot) {
            self.on_readable(slot);
        }
    }
}
