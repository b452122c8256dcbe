//! The embedded node's state, in memory: mobile-id allocation per user, device ↔ user
//! bindings (the upload log is `crate::upload_log`). Pure data structures; the
//! [`crate::sidecar`] thread owns one and answers the shards from it.
//!
//! It mirrors what the cluster keeps in Redis (docs/protocol.md §9.3: `user:mobileid:<uid>`, `device:owner`,
//! `u:<uid>:devices`) without families; it does not survive a restart.

use std::collections::HashMap;

use crate::messages::LoginGrant;

/// Mobile sub-ids per user (1..=15) and bindings.
#[derive(Debug, Default)]
pub struct State {
    mobiles: HashMap<i64, u16>,
    device_users: HashMap<i64, Vec<i64>>,
    user_devices: HashMap<i64, Vec<i64>>,
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

/// Why a login was refused, as the WebSocket reply code.
pub const REPLY_WRONG_ID: u8 = 3;

impl State {
    /// Grants a login for `id`: a free mobile sub-id and the devices for a user, the users
    /// for a device. Refuses with reply 3 when the user's 15 mobile ids are taken or the
    /// id is neither a user nor a device.
    pub fn login(&mut self, id: i64) -> Result<LoginGrant, u8> {
        if id > 0 && id % 16 == 0 {
            let used = self.mobiles.entry(id).or_default();
            let k = (1..=15u8)
                .find(|k| *used & (1 << k) == 0)
                .ok_or(REPLY_WRONG_ID)?;
            *used |= 1 << k;
            let bound = self.user_devices.get(&id).cloned().unwrap_or_default();
            Ok(LoginGrant {
                session: id + i64::from(k),
                mobile: k,
                bound,
            })
        } else if id < 0 {
            let bound = self.device_users.get(&id).cloned().unwrap_or_default();
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
    pub fn logout(&mut self, session: i64) {
        if session > 0 && session % 16 != 0 {
            let user = session - session % 16;
            if let Some(used) = self.mobiles.get_mut(&user) {
                *used &= !(1 << (session % 16));
                if *used == 0 {
                    self.mobiles.remove(&user);
                }
            }
        }
    }

    /// Mobile sub-ids in use for `user`.
    pub fn mobiles_in_use(&self, user: i64) -> u32 {
        self.mobiles.get(&user).map_or(0, |m| m.count_ones())
    }

    /// Binds `device` to `user`; false if it already was.
    pub fn bind(&mut self, device: i64, user: i64) -> bool {
        let users = self.device_users.entry(device).or_default();
        if users.contains(&user) {
            return false;
        }
        users.push(user);
        self.user_devices.entry(user).or_default().push(device);
        true
    }

    /// Unbinds `device` from `user`; false if it was not bound.
    pub fn unbind(&mut self, device: i64, user: i64) -> bool {
        let Some(users) = self.device_users.get_mut(&device) else {
            return false;
        };
        let before = users.len();
        users.retain(|u| *u != user);
        if users.len() == before {
            return false;
        }
        if users.is_empty() {
            self.device_users.remove(&device);
        }
        if let Some(devices) = self.user_devices.get_mut(&user) {
            devices.retain(|d| *d != device);
            if devices.is_empty() {
                self.user_devices.remove(&user);
            }
        }
        true
    }

    /// Everything, for a handover.
    pub fn snapshot(&self) -> Snapshot {
        let mobiles = self.mobiles.iter().map(|(&u, &m)| (u, m)).collect();
        let bindings = self
            .device_users
            .iter()
            .flat_map(|(&d, users)| users.iter().map(move |&u| (d, u)))
            .collect();
        Snapshot { mobiles, bindings }
    }

    /// The state a handover carried.
    pub fn restore(snapshot: &Snapshot) -> Self {
        let mut state = State::default();
        for &(user, used) in &snapshot.mobiles {
            if used != 0 {
                state.mobiles.insert(user, used & !1);
            }
        }
        for &(device, user) in &snapshot.bindings {
            state.bind(device, user);
        }
        state
    }

    /// The users a device is bound to.
    pub fn users_of(&self, device: i64) -> &[i64] {
        self.device_users.get(&device).map_or(&[], Vec::as_slice)
    }
}

pub use crate::upload_log::UploadLog;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_mobile_ids_then_refused_then_reused() {
        let mut s = State::default();
        let ks: Vec<u8> = (0..15).map(|_| s.login(16).unwrap().mobile).collect();
        assert_eq!(ks, (1..=15).collect::<Vec<_>>());
        assert_eq!(s.login(16), Err(REPLY_WRONG_ID));
        s.logout(16 + 7);
        assert_eq!(s.login(16).unwrap().mobile, 7);
        assert_eq!(s.mobiles_in_use(16), 15);
    }

    #[test]
    fn non_users_refused() {
        let mut s = State::default();
        assert_eq!(s.login(0), Err(REPLY_WRONG_ID));
        assert_eq!(s.login(17), Err(REPLY_WRONG_ID));
    }

    #[test]
    fn bindings_both_ways() {
        let mut s = State::default();
        assert!(s.bind(-1, 16));
        assert!(!s.bind(-1, 16));
        assert!(s.bind(-1, 32));
        assert_eq!(s.login(16).unwrap().bound, vec![-1]);
        assert_eq!(s.login(-1).unwrap().bound, vec![16, 32]);
        assert!(s.unbind(-1, 16));
        assert!(!s.unbind(-1, 16));
        assert_eq!(s.users_of(-1), &[32]);
        assert!(s.login(16).unwrap().bound.is_empty());
    }
}
