//! Terminal identifiers (docs/protocol.md §1.2) and destination computation (§4 there).
//!
//! Phones are positive, devices negative; a **user** id is a positive multiple of 16 and its
//! phones get the **mobile ids** U+1 … U+15. Destination rules are written allocation-free:
//! the caller passes an [`Extend`] sink it reuses (e.g. a cleared `Vec<i64>`).
//!
//! Fixed against the original: a UDP device may address one concrete mobile id (the original
//! had no branch for it, docs/protocol.md §10.3); all arithmetic is checked, so no id — `i64::MIN`,
//! ids near `i64::MAX` — can panic or wrap into another user's range. This module does not
//! know where ids live (shards, comets): that is the shell's and the bus's business.

/// Ids per user: a user id is a multiple of this, its phones are U+1 … U+15.
pub const USER_UNIT: i64 = 16;
/// Mobile ids per user (k ∈ 1..=15).
pub const MOBILES_PER_USER: u8 = 15;

/// A terminal id as it travels on the wire.
pub type TerminalId = i64;

/// What an id denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// 0: no specific destination (broadcast to bound peers).
    Zero,
    /// Negative: a device.
    Device,
    /// Positive multiple of 16: a user (the base id itself).
    User(i64),
    /// Positive, not a multiple of 16: phone `k` (1..=15) of `user`.
    Mobile {
        /// The base user id (`id − k`).
        user: i64,
        /// The slot 1..=15.
        k: u8,
    },
}

/// Classifies `id`.
#[must_use]
pub const fn kind(id: TerminalId) -> IdKind {
    if id == 0 {
        return IdKind::Zero;
    }
    if id < 0 {
        return IdKind::Device;
    }
    let k = id % USER_UNIT; // id > 0: remainder in 0..16, no overflow possible
    if k == 0 {
        IdKind::User(id)
    } else {
        IdKind::Mobile {
            user: id - k,
            k: k as u8,
        }
    }
}

/// The base user of a positive id (`id − id mod 16`); `None` for 0 and devices.
#[must_use]
pub const fn base_user(id: TerminalId) -> Option<i64> {
    match kind(id) {
        IdKind::User(user) | IdKind::Mobile { user, .. } => Some(user),
        IdKind::Zero | IdKind::Device => None,
    }
}

/// Whether `id` is a user id (positive multiple of 16).
#[must_use]
pub const fn is_user(id: TerminalId) -> bool {
    matches!(kind(id), IdKind::User(_))
}

/// The mobile ids U+1 … U+15 of `user`. Empty unless `user` is a user id, so a stray
/// non-user value never produces ids belonging to someone else.
#[must_use]
pub fn mobile_ids(user: i64) -> Ids {
    if is_user(user) {
        Ids {
            next: user + 1,
            remaining: MOBILES_PER_USER,
        }
    } else {
        Ids::EMPTY
    }
}

/// "Expand" an id (docs/protocol.md §1.2): a device or a concrete mobile id yields itself, a user id its 15
/// mobile ids. 0 yields nothing (it names no terminal; the original would have expanded it
/// to 1 … 15, the phones of the bogus user 0).
#[must_use]
pub fn expand(id: TerminalId) -> Ids {
    match kind(id) {
        IdKind::Zero => Ids::EMPTY,
        IdKind::Device | IdKind::Mobile { .. } => Ids {
            next: id,
            remaining: 1,
        },
        IdKind::User(user) => mobile_ids(user),
    }
}

/// Destinations of a message sent by a **phone** whose session is bound to `bound_devices`
/// (docs/protocol.md §4.1): `dst == 0` → every bound device; otherwise `dst` if it is bound, else nothing.
/// Appends to `out`; returns how many ids were appended (0 = nothing to deliver).
pub fn phone_destinations(
    dst: TerminalId,
    bound_devices: &[i64],
    out: &mut impl Extend<i64>,
) -> usize {
    if dst == 0 {
        out.extend(bound_devices.iter().copied());
        bound_devices.len()
    } else if bound_devices.contains(&dst) {
        out.extend([dst]);
        1
    } else {
        0
    }
}

/// Destinations of a message sent by a **device** (WebSocket or UDP) whose bound users are
/// `bound_users` (docs/protocol.md §4.2, with the original's UDP gap fixed):
/// * `dst == 0` → the 15 mobile ids of every bound user (non-user entries are skipped);
/// * `dst` a bound user → its 15 mobile ids;
/// * `dst` a mobile id of a bound user → `[dst]`;
/// * anything else (another user's ids, ids 1–15 of the non-user 0, devices) → nothing.
///
/// Appends to `out`; returns how many ids were appended.
pub fn device_destinations(
    dst: TerminalId,
    bound_users: &[i64],
    out: &mut impl Extend<i64>,
) -> usize {
    if dst == 0 {
        let mut count = 0;
        for &user in bound_users {
            let ids = mobile_ids(user);
            count += ids.len();
            out.extend(ids);
        }
        return count;
    }
    match base_user(dst) {
        Some(user) if is_user(user) && bound_users.contains(&user) => {
            let ids = expand(dst);
            let count = ids.len();
            out.extend(ids);
            count
        }
        _ => 0,
    }
}

// === Ids ===

/// Iterator over a short run of consecutive ids (at most 15); allocation-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    next: i64,
    remaining: u8,
}

impl Ids {
    /// No ids.
    pub const EMPTY: Self = Self {
        next: 0,
        remaining: 0,
    };
}

impl Iterator for Ids {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        if self.remaining == 0 {
            return None;
        }
        let id = self.next;
        self.remaining -= 1;
        // Only advance while more ids follow, so the last id may be i64::MAX.
        if self.remaining > 0 {
            self.next = id.checked_add(1)?;
        }
        Some(id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (
            usize::from(self.remaining),
            Some(usize::from(self.remaining)),
        )
    }
}

impl ExactSizeIterator for Ids {}
impl core::iter::FusedIterator for Ids {}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_USER: i64 = i64::MAX - 15;

    fn collect(ids: Ids) -> Vec<i64> {
        ids.collect()
    }

    #[test]
    fn kinds() {
        let check = |id: i64, expect: IdKind| assert_eq!(kind(id), expect, "{id}");
        check(0, IdKind::Zero);
        check(-1, IdKind::Device);
        check(i64::MIN, IdKind::Device);
        check(16, IdKind::User(16));
        check(17, IdKind::Mobile { user: 16, k: 1 });
        check(31, IdKind::Mobile { user: 16, k: 15 });
        check(15, IdKind::Mobile { user: 0, k: 15 });
        check(MAX_USER, IdKind::User(MAX_USER));
        check(
            i64::MAX,
            IdKind::Mobile {
                user: MAX_USER,
                k: 15,
            },
        );
    }

    #[test]
    fn base_users() {
        let check = |id: i64, expect: Option<i64>| assert_eq!(base_user(id), expect, "{id}");
        check(0, None);
        check(-16, None);
        check(i64::MIN, None);
        check(33, Some(32));
        check(32, Some(32));
        check(i64::MAX, Some(MAX_USER));
    }

    #[test]
    fn expansion() {
        let check = |id: i64, expect: Vec<i64>| assert_eq!(collect(expand(id)), expect, "{id}");
        check(0, vec![]);
        check(-1, vec![-1]);
        check(i64::MIN, vec![i64::MIN]);
        check(17, vec![17]);
        check(i64::MAX, vec![i64::MAX]);
        check(16, (17..=31).collect());
        check(MAX_USER, (MAX_USER + 1..=i64::MAX).collect());
        assert_eq!(expand(16).len(), 15);
        assert_eq!(collect(mobile_ids(17)), Vec::<i64>::new());
        assert_eq!(collect(mobile_ids(-16)), Vec::<i64>::new());
        assert_eq!(collect(mobile_ids(0)), Vec::<i64>::new());
    }

    fn phone(dst: i64, bound: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        let n = phone_destinations(dst, bound, &mut out);
        assert_eq!(n, out.len());
        out
    }

    fn device(dst: i64, bound: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        let n = device_destinations(dst, bound, &mut out);
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn phone_rules() {
        assert_eq!(phone(0, &[-1, -2]), vec![-1, -2]);
        assert_eq!(phone(0, &[]), Vec::<i64>::new());
        assert_eq!(phone(-2, &[-1, -2]), vec![-2]);
        assert_eq!(phone(-3, &[-1, -2]), Vec::<i64>::new());
        assert_eq!(phone(17, &[-1]), Vec::<i64>::new());
        assert_eq!(phone(i64::MIN, &[i64::MIN]), vec![i64::MIN]);
    }

    #[test]
    fn device_rules() {
        let mobiles_16: Vec<i64> = (17..=31).collect();
        assert_eq!(device(0, &[16]), mobiles_16);
        assert_eq!(device(0, &[16, 32]).len(), 30);
        assert_eq!(device(0, &[16, 17, -1, 0]), mobiles_16, "non-users skipped");
        assert_eq!(device(16, &[16]), mobiles_16);
        assert_eq!(
            device(20, &[16]),
            vec![20],
            "concrete mobile id (original: nothing)"
        );
        assert_eq!(device(32, &[16]), Vec::<i64>::new());
        assert_eq!(device(33, &[16]), Vec::<i64>::new());
        assert_eq!(device(-1, &[16]), Vec::<i64>::new());
        assert_eq!(device(-1, &[0]), Vec::<i64>::new());
        assert_eq!(device(5, &[0]), Vec::<i64>::new(), "user 0 is no user");
        assert_eq!(device(i64::MIN, &[i64::MIN]), Vec::<i64>::new());
        assert_eq!(device(i64::MAX, &[MAX_USER]), vec![i64::MAX]);
        assert_eq!(device(MAX_USER, &[MAX_USER]).last(), Some(&i64::MAX));
    }

    #[test]
    fn sinks_are_reusable() {
        let mut out = Vec::with_capacity(64);
        device_destinations(16, &[16], &mut out);
        out.clear();
        device_destinations(17, &[16], &mut out);
        assert_eq!(out, vec![17]);
    }
}
