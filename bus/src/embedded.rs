//! The embedded node's state, in memory: mobile-id allocation per user, device ↔ user
//! bindings (the upload log is `crate::upload_log`). Pure data structures behind
//! [`Logins`], which the shards call directly on login and logout (no round trip to a
//! thread), and the [`crate::sidecar`] thread for the admin's bindings and an upgrade's
//! snapshot.
//!
//! It mirrors what the cluster keeps in Redis (docs/protocol.md §9.3: `user:mobileid:<uid>`, `device:owner`,
//! `u:<uid>:devices`) without families; it does not survive a restart. It owns no
//! session: which connection holds an id is the shards' business.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::messages::LoginGrant;

/// One stripe's share: mobile sub-ids per user (1..=15) and both halves of the bindings
/// of the users and devices that hash to it. A binding half is one `(id, other)` key in
/// an ordered set (~25 B with the B-tree's nodes), not a map entry holding a list (a
/// hash slot, a list header and its allocation: ~100 B a half as measured); an id's
/// partners are one range.
#[derive(Debug, Default)]
struct State {
    mobiles: HashMap<i64, u16>,
    /// `(device, user)`.
    device_users: BTreeSet<(i64, i64)>,
    /// `(user, device)`.
    user_devices: BTreeSet<(i64, i64)>,
}

/// The partners of `id` in a binding half.
fn partners(half: &BTreeSet<(i64, i64)>, id: i64) -> Vec<i64> {
    half.range((id, i64::MIN)..=(id, i64::MAX))
        .map(|&(_, other)| other)
        .collect()
}

/// What an upgrade hands over of the embedded bus (issue 15): mobile sub-ids in use per
/// user, and every binding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `(user, sub-ids in use)`: bit k for sub-id k.
    pub mobiles: Vec<(i64, u16)>,
    /// `(device, user)`.
    pub bindings: Vec<(i64, i64)>,
}

/// Stripes of [`Logins`]: enough that 64 shards logging in at once rarely meet.
const STRIPES: usize = 64;

/// The embedded login tables, shared by the shards and the sidecar: [`STRIPES`] mutexes,
/// a user's entries (mobile ids, the devices bound to it) in the stripe of the user, a
/// device's (its users) in the stripe of the device. A call holds one stripe at a time,
/// for a few hundred nanoseconds, so no two calls can deadlock. This is the login path
/// only: no message a session relays takes a lock.
#[derive(Debug)]
pub struct Logins {
    stripes: Box<[Mutex<State>]>,
}

impl Default for Logins {
    fn default() -> Self {
        Logins {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Logins {
    /// The state a handover carried.
    pub fn restore(snapshot: &Snapshot) -> Self {
        let logins = Logins::default();
        for &(user, used) in &snapshot.mobiles {
            if used & !1 != 0 {
                logins.stripe(user).mobiles.insert(user, used & !1);
            }
        }
        for &(device, user) in &snapshot.bindings {
            logins.bind(device, user);
        }
        logins
    }

    /// The stripe of a user or device (a panic elsewhere aborts the process, so a
    /// poisoned stripe cannot be half-written).
    fn stripe(&self, key: i64) -> MutexGuard<'_, State> {
        // Fibonacci hashing: users are multiples of 16, so the low bits say nothing.
        let i = ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES;
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Grants a login for `id`: a free mobile sub-id and the devices for a user, the users
    /// for a device. Refuses with reply 3 when the user's 15 mobile ids are taken or the
    /// id is neither a user nor a device.
    pub fn login(&self, id: i64) -> Result<LoginGrant, u8> {
        if id > 0 && id % 16 == 0 {
            self.stripe(id).login_phone(id)
        } else if id < 0 {
            let bound = partners(&self.stripe(id).device_users, id);
            Ok(LoginGrant {
                session: id,
                mobile: 0,
                bound,
            })
        } else {
            Err(REPLY_WRONG_ID)
        }
    }

    /// Releases what the login of session `session` took (a phone's mobile sub-id).
    pub fn logout(&self, session: i64) {
        if session > 0 && session % 16 != 0 {
            let user = session - session % 16;
            self.stripe(user).logout_phone(user, (session % 16) as u16);
        }
    }

    /// Mobile sub-ids in use for `user`.
    pub fn mobiles_in_use(&self, user: i64) -> u32 {
        self.stripe(user)
            .mobiles
            .get(&user)
            .map_or(0, |m| m.count_ones())
    }

    /// Binds `device` to `user`; false if it already was.
    pub fn bind(&self, device: i64, user: i64) -> bool {
        if !self.stripe(device).device_users.insert((device, user)) {
            return false;
        }
        self.stripe(user).user_devices.insert((user, device));
        true
    }

    /// Unbinds `device` from `user`; false if it was not bound.
    pub fn unbind(&self, device: i64, user: i64) -> bool {
        if !self.stripe(device).device_users.remove(&(device, user)) {
            return false;
        }
        self.stripe(user).user_devices.remove(&(user, device));
        true
    }

    /// Everything, for a handover (a stripe at a time).
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for stripe in &self.stripes {
            let state = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            snapshot
                .mobiles
                .extend(state.mobiles.iter().map(|(&u, &m)| (u, m)));
            snapshot.bindings.extend(state.device_users.iter().copied());
        }
        snapshot
    }

    /// The users a device is bound to.
    pub fn users_of(&self, device: i64) -> Vec<i64> {
        partners(&self.stripe(device).device_users, device)
    }
}

/// Why a login was refused, as the WebSocket reply code.
pub const REPLY_WRONG_ID: u8 = 3;

impl State {
    /// A phone of `user`: the lowest free mobile sub-id, and the user's devices.
    fn login_phone(&mut self, user: i64) -> Result<LoginGrant, u8> {
        let used = self.mobiles.entry(user).or_default();
        let k = (1..=15u8)
            .find(|k| *used & (1 << k) == 0)
            .ok_or(REPLY_WRONG_ID)?;
        *used |= 1 << k;
        let bound = partners(&self.user_devices, user);
        Ok(LoginGrant {
            session: user + i64::from(k),
            mobile: k,
            bound,
        })
    }

    fn logout_phone(&mut self, user: i64, k: u16) {
        if let Some(used) = self.mobiles.get_mut(&user) {
            *used &= !(1 << k);
            if *used == 0 {
                self.mobiles.remove(&user);
            }
        }
    }
}

pub use crate::upload_log::UploadLog;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_mobile_ids_then_refused_then_reused() {
        let s = Logins::default();
        let ks: Vec<u8> = (0..15).map(|_| s.login(16).unwrap().mobile).collect();
        assert_eq!(ks, (1..=15).collect::<Vec<_>>());
        assert_eq!(s.login(16), Err(REPLY_WRONG_ID));
        s.logout(16 + 7);
        assert_eq!(s.login(16).unwrap().mobile, 7);
        assert_eq!(s.mobiles_in_use(16), 15);
    }

    #[test]
    fn non_users_refused() {
        let s = Logins::default();
        assert_eq!(s.login(0), Err(REPLY_WRONG_ID));
        assert_eq!(s.login(17), Err(REPLY_WRONG_ID));
    }

    #[test]
    fn bindings_both_ways() {
        let s = Logins::default();
        assert!(s.bind(-1, 16));
        assert!(!s.bind(-1, 16));
        assert!(s.bind(-1, 32));
        assert_eq!(s.login(16).unwrap().bound, vec![-1]);
        assert_eq!(s.login(-1).unwrap().bound, vec![16, 32]);
        assert!(s.unbind(-1, 16));
        assert!(!s.unbind(-1, 16));
        assert_eq!(s.users_of(-1), vec![32]);
        assert!(s.login(16).unwrap().bound.is_empty());
    }

    #[test]
    fn shards_logging_in_at_once_get_distinct_mobile_ids() {
        let s = std::sync::Arc::new(Logins::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..3)
                        .map(|_| s.login(16).unwrap().mobile)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ks: Vec<u8> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        ks.sort_unstable();
        assert_eq!(ks, (1..=12).collect::<Vec<_>>());
    }
}
