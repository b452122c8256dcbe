//! The shell's side of the session index: carrying out what `core::ShardCore` decides
//! when a session joins or leaves (directory reports over the mesh, evicting the oldest
//! session of an id at the cap), and checking each holder against its record before
//! anything is written to it. Also where a login is asked for and given back: in the
//! embedded tables directly, or through the cluster sidecar.
//!
//! A holder whose record is gone, reused or logged in as another id is an invariant
//! broken: it is counted (`invariant_broken`), logged with the shard's index, taken out
//! of the index, and never written to.

use edge_proto::status::StatusType;

use bus::messages::{ConnRef, LoginGrant, ToBus};

use super::Shard;
use crate::core::Report;
use crate::core::sessions::{Handle, IndexError};
use crate::metrics::bump_own;
use crate::msg::PeerMsg;

/// What asking for a login came to.
pub(super) enum LoginAsked {
    /// The embedded tables answered at once.
    Answered(Result<LoginGrant, u8>),
    /// Sent to the cluster sidecar: its answer comes as `ToShard::LoginDone`.
    Sent,
    /// The bus queue was full (counted).
    QueueFull,
}

impl Shard {
    /// Asks for a login of `id` for `conn`.
    pub(super) fn ask_login(&mut self, conn: ConnRef, id: i64) -> LoginAsked {
        if let Some(logins) = &self.logins {
            return LoginAsked::Answered(logins.login(id));
        }
        if self.bus.try_send(ToBus::Login { conn, id }).is_err() {
            bump_own(&self.metrics.drop_bus_queue_full);
            return LoginAsked::QueueFull;
        }
        LoginAsked::Sent
    }

    /// Gives back what the login of `session` took (a phone's mobile id, a lease).
    pub(super) fn release_login(&mut self, session: i64) {
        if let Some(logins) = &self.logins {
            logins.logout(session);
        } else if self.bus.try_send(ToBus::Logout { session }).is_err() {
            bump_own(&self.metrics.drop_bus_queue_full);
        }
    }

    /// Indexes a logged-in session of `id` and reports a new key to its directory. At
    /// `--max-sessions-per-device` the id's oldest local session is ended first. Ok(true)
    /// when every shard can reach the session now; Ok(false) when its login must wait
    /// for the directory shard's `DirectoryAck`; Err when the index refused it (counted).
    pub(super) fn join_session(&mut self, handle: Handle, id: i64) -> Result<bool, IndexError> {
        // Bounded: each round ends one session; the cap is at most 64.
        for _ in 0..=self.config.max_sessions_per_device {
            let Some(oldest) = self.core.sessions.oldest_if_full(id) else {
                break;
            };
            bump_own(&self.metrics.sessions_evicted);
            self.evict(oldest, id);
        }
        match self.core.join(id, handle) {
            Ok(None) => Ok(true),
            Ok(Some(report)) => {
                self.send_report(report, Some(handle));
                Ok(false)
            }
            Err(e) => {
                self.invariant_broken(&e);
                Err(e)
            }
        }
    }

    /// Takes a session of `id` out of the index and reports a vanished key. Returns
    /// whether it was the id's last local session.
    pub(super) fn leave_session(&mut self, handle: Handle, id: i64) -> bool {
        match self.core.leave(id, handle) {
            Ok(Some(report)) => self.send_report(report, None),
            Ok(None) => {}
            Err(e) => self.invariant_broken(&e),
        }
        self.core.sessions.holders(id).is_empty()
    }

    fn send_report(&mut self, report: Report, ack: Option<Handle>) {
        let msg = PeerMsg::Directory {
            key: report.key,
            shard: self.index as u16,
            present: report.present,
            ack: ack.map(|h| (h.slot, h.generation)),
        };
        self.send_peer(report.to, msg);
    }

    /// Ends `handle`, the oldest session of `id`, to make room for a newer one.
    fn evict(&mut self, handle: Handle, id: i64) {
        if !self.holds(handle, id) {
            self.forget_stale(handle, id);
        } else if handle.is_udp() {
            self.remove_udp_session(handle.index());
        } else {
            self.close(handle.slot, Some(edge_proto::ws::CLOSE_POLICY));
        }
    }

    /// The bound-ids list of a session's record (phones: devices; devices: users).
    pub(super) fn bound_mut(&mut self, slot: u32) -> Option<&mut Box<[i64]>> {
        if slot & crate::core::sessions::UDP_BIT != 0 {
            let udp = self.udp.as_mut()?;
            udp.session_mut(slot).map(|s| &mut s.bound)
        } else {
            self.conns.get_mut(slot).map(|c| &mut c.bound)
        }
    }

    /// Whether `handle`'s record is alive and logged in as `id`.
    fn holds(&self, handle: Handle, id: i64) -> bool {
        if handle.is_udp() {
            let udp = self.udp.as_ref();
            let session = udp.and_then(|u| u.table().get_gen(handle.index(), handle.generation));
            session.is_some_and(|s| s.device == id)
        } else {
            let conn = self.conns.get_gen(handle.slot, handle.generation);
            conn.is_some_and(|c| c.id == id && c.terminal.logged_in())
        }
    }

    /// Copies the live local sessions of `id` into `out` (cleared first); holders that
    /// fail [`Shard::holds`] are taken out of the index, counted and logged.
    pub(super) fn live_holders(&mut self, id: i64, out: &mut Vec<Handle>) {
        out.clear();
        out.extend_from_slice(self.core.sessions.holders(id));
        let before = out.len();
        out.retain(|&h| self.holds(h, id));
        if out.len() == before {
            return;
        }
        let stale: Vec<Handle> = self
            .core
            .sessions
            .holders(id)
            .iter()
            .copied()
            .filter(|h| !out.contains(h))
            .collect();
        for handle in stale {
            self.forget_stale(handle, id);
        }
    }

    fn forget_stale(&mut self, handle: Handle, id: i64) {
        self.broken(format_args!(
            "{handle:?} is indexed under {id} but its record is gone or elsewhere; removed"
        ));
        self.leave_session(handle, id);
    }

    /// Counts and logs an index refusal.
    pub(super) fn invariant_broken(&mut self, error: &IndexError) {
        self.broken(format_args!("{error}"));
    }

    /// Counts a broken invariant; logs it, at most once a second with the count held back.
    fn broken(&mut self, what: std::fmt::Arguments<'_>) {
        bump_own(&self.metrics.invariant_broken);
        if let Some(held_back) = self.invariant_log.admit(std::time::Instant::now()) {
            tracing::error!(shard = self.index, held_back, "invariant broken: {what}");
        }
    }

    /// A logged-in session ended: take it out of the index, log it out with the bus, and
    /// for a device that had been announced online, tell its users it went offline when
    /// no other session of it is left on this shard.
    pub(super) fn session_ended(
        &mut self,
        handle: Handle,
        id: i64,
        announced: bool,
        users: &[i64],
    ) {
        let last = self.leave_session(handle, id);
        self.release_login(id);
        if announced && last && id < 0 {
            self.send_device_status(id, users, StatusType::DeviceOffline);
        }
    }
}
