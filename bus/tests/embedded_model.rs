//! The embedded login tables (`bus::embedded::Logins`: striped mobile ids and bindings)
//! against a deliberately naive model: sets of taken `(user, sub-id)` pairs and of
//! `(device, user)` bindings, searched linearly. Random sequences of logins, logouts,
//! binds, unbinds and upgrade round trips (snapshot, then restore) must agree with it
//! after every step; proptest shrinks a failure to its shortest sequence, and each one
//! found is kept below as a regression test.

use std::collections::BTreeSet;

use bus::embedded::{Logins, REPLY_WRONG_ID};
use bus::messages::LoginGrant;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Login(i64),
    Logout(i64),
    Bind(i64, i64),
    Unbind(i64, i64),
    Upgrade,
}

/// Few users and devices, so that ids collide and a user's 15 mobile ids run out.
fn op() -> impl Strategy<Value = Op> {
    let user = (1i64..4).prop_map(|u| u * 16);
    let device = -3i64..0;
    prop_oneof![
        4 => prop_oneof![user.clone(), device.clone(), -2i64..20].prop_map(Op::Login),
        3 => (16i64..64).prop_map(Op::Logout),
        2 => (device.clone(), user.clone()).prop_map(|(d, u)| Op::Bind(d, u)),
        1 => (device, user).prop_map(|(d, u)| Op::Unbind(d, u)),
        1 => Just(Op::Upgrade),
    ]
}

#[derive(Default)]
struct Model {
    taken: BTreeSet<(i64, u8)>,
    bindings: BTreeSet<(i64, i64)>,
}

impl Model {
    fn login(&mut self, id: i64) -> Result<(i64, u8, BTreeSet<i64>), u8> {
        if id > 0 && id % 16 == 0 {
            let k = (1..=15u8)
                .find(|k| !self.taken.contains(&(id, *k)))
                .ok_or(REPLY_WRONG_ID)?;
            self.taken.insert((id, k));
            let devices = self.bindings.iter().filter(|b| b.1 == id).map(|b| b.0);
            Ok((id + i64::from(k), k, devices.collect()))
        } else if id < 0 {
            let users = self.bindings.iter().filter(|b| b.0 == id).map(|b| b.1);
            Ok((id, 0, users.collect()))
        } else {
            Err(REPLY_WRONG_ID)
        }
    }

    fn logout(&mut self, session: i64) {
        if session > 0 && session % 16 != 0 {
            self.taken
                .remove(&(session - session % 16, (session % 16) as u8));
        }
    }
}

fn seen(grant: Result<LoginGrant, u8>) -> Result<(i64, u8, BTreeSet<i64>), u8> {
    grant.map(|g| (g.session, g.mobile, g.bound.into_iter().collect()))
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut logins = Logins::default();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Login(id) => prop_assert_eq!(seen(logins.login(id)), model.login(id), "{:?}", op),
            Op::Logout(session) => {
                logins.logout(session);
                model.logout(session);
            }
            Op::Bind(d, u) => prop_assert_eq!(logins.bind(d, u), model.bindings.insert((d, u))),
            Op::Unbind(d, u) => {
                prop_assert_eq!(logins.unbind(d, u), model.bindings.remove(&(d, u)))
            }
            Op::Upgrade => logins = Logins::restore(&logins.snapshot()),
        }
        for user in [16, 32, 48] {
            let expected = model.taken.iter().filter(|t| t.0 == user).count() as u32;
            prop_assert_eq!(logins.mobiles_in_use(user), expected, "user {}", user);
        }
    }
    let snapshot = logins.snapshot();
    let bindings: BTreeSet<(i64, i64)> = snapshot.bindings.iter().copied().collect();
    prop_assert_eq!(
        bindings.len(),
        snapshot.bindings.len(),
        "a binding listed twice"
    );
    prop_assert_eq!(bindings, model.bindings.clone());
    for &(device, user) in &model.bindings {
        prop_assert!(logins.users_of(device).contains(&user));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn logins_match_a_naive_model(ops in proptest::collection::vec(op(), 0..120)) {
        run(&ops)?;
    }
}

/// A user's 15 mobile ids run out, one comes back, an upgrade keeps what is taken.
#[test]
fn regression_exhausted_user_survives_an_upgrade() {
    let mut ops: Vec<Op> = (0..16).map(|_| Op::Login(16)).collect();
    ops.extend([
        Op::Logout(16 + 4),
        Op::Upgrade,
        Op::Login(16),
        Op::Login(16),
    ]);
    run(&ops).unwrap();
}

/// An unbind after an upgrade finds both halves of the binding.
#[test]
fn regression_unbind_after_upgrade() {
    run(&[
        Op::Bind(-1, 16),
        Op::Bind(-1, 32),
        Op::Upgrade,
        Op::Unbind(-1, 16),
        Op::Login(16),
        Op::Login(-1),
    ])
    .unwrap();
}
