//! The life of one WebSocket terminal connection (docs/protocol.md §3), sans IO: its stage, its heartbeat
//! period and the one deadline that stage has (upgrade 10 s, login 60 s, then three
//! heartbeat periods of silence), and what a passed deadline means.
//!
//! Owns: the stage transitions and the deadline arithmetic on the shard's one-second
//! clock (never early: `deadline_in`). Does not own: the socket, the bytes, the wheel
//! entry (the shell schedules [`Terminal::deadline`] and asks [`Terminal::expired`] when
//! it comes due), or the session index (a logged-in terminal joins it through
//! `ShardCore::join`).

use super::wheel::Secs;

/// Heartbeat period assumed when the login says 0, and the longest honoured (seconds).
pub const DEFAULT_PERIOD: u32 = 150;
/// The longest heartbeat period honoured (seconds); the read deadline is three of them.
pub const MAX_PERIOD: u32 = 300;

/// Where a WebSocket connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the HTTP upgrade request.
    Handshake,
    /// Upgraded; waiting for the login string.
    Login,
    /// Login sent to the bus; reading paused until it answers.
    LoginPending,
    /// Login granted and the session indexed; waiting for the directory shard to confirm
    /// its entry before the login reply goes out (so nothing sent to it is lost).
    Joining,
    /// Logged in.
    Online,
}

/// The node's stage timeouts, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To complete the upgrade (10, as the original).
    pub handshake: u32,
    /// To log in after the upgrade (60, as the original).
    pub login: u32,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No upgrade in time: close without a word.
    Handshake,
    /// No login (or no answer to it) in time: reply `[5]` and close.
    Login,
    /// Silent for three heartbeat periods: close 1000.
    Read,
}

/// The deadline `secs` from `now` on the one-second clock: it fires between `secs` and
/// `secs + 1` seconds later, never before (`now` is the current second rounded down).
pub fn deadline_in(now: Secs, secs: u32) -> Secs {
    now + secs + 1
}

/// One connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    state: State,
    deadline: Secs,
    period: u32,
}

impl Terminal {
    /// A connection accepted at `now`, waiting for its upgrade.
    pub fn accepted(now: Secs, t: &Timeouts) -> Self {
        Terminal {
            state: State::Handshake,
            deadline: deadline_in(now, t.handshake),
            period: DEFAULT_PERIOD,
        }
    }

    /// A connection handed over by an upgrade (issue 15) in `state` (not a login in
    /// flight), with its heartbeat period and deadline.
    pub fn restored(state: State, period: u32, deadline: Secs) -> Self {
        Terminal {
            state,
            deadline,
            period: period.clamp(1, MAX_PERIOD),
        }
    }

    /// The heartbeat period, seconds.
    pub fn period(&self) -> u32 {
        self.period
    }

    /// Its stage.
    pub fn state(&self) -> State {
        self.state
    }

    /// When its current deadline passes.
    pub fn deadline(&self) -> Secs {
        self.deadline
    }

    /// The read window once online: three heartbeat periods.
    pub fn read_window(&self) -> u32 {
        3 * self.period
    }

    /// The upgrade completed: the login clock starts. False unless it was waiting for it.
    pub fn upgraded(&mut self, now: Secs, t: &Timeouts) -> bool {
        self.step(State::Handshake, State::Login)
            .then(|| self.deadline = deadline_in(now, t.login))
            .is_some()
    }

    /// A valid login string asked for heartbeat period `requested` seconds (0: the
    /// default; capped at [`MAX_PERIOD`]): reading pauses until the bus answers.
    pub fn login_requested(&mut self, requested: u64) -> bool {
        let period = u32::try_from(requested).unwrap_or(MAX_PERIOD);
        self.period = if period == 0 {
            DEFAULT_PERIOD
        } else {
            period.min(MAX_PERIOD)
        };
        self.step(State::Login, State::LoginPending)
    }

    /// The bus granted the login: the session is being indexed.
    pub fn granted(&mut self) -> bool {
        self.step(State::LoginPending, State::Joining)
    }

    /// The index refused the session after all (counted elsewhere): back to waiting for
    /// an answer, which is now a refusal.
    pub fn join_failed(&mut self) -> bool {
        self.step(State::Joining, State::LoginPending)
    }

    /// Every shard can reach the session: it is online, its read window starts.
    pub fn joined(&mut self, now: Secs) -> bool {
        self.step(State::Joining, State::Online)
            .then(|| self.heard(now))
            .is_some()
    }

    /// A frame arrived: an online terminal's read window starts again.
    pub fn heard(&mut self, now: Secs) {
        if self.state == State::Online {
            self.deadline = deadline_in(now, self.read_window());
        }
    }

    /// Which deadline has passed at `now`, if any.
    pub fn expired(&self, now: Secs) -> Option<Expired> {
        if self.deadline > now {
            return None;
        }
        Some(match self.state {
            State::Handshake => Expired::Handshake,
            State::Login | State::LoginPending | State::Joining => Expired::Login,
            State::Online => Expired::Read,
        })
    }

    /// Whether its bytes are read now (not while a login is being answered).
    pub fn reading(&self) -> bool {
        !matches!(self.state, State::LoginPending | State::Joining)
    }

    /// Whether it holds a session (indexed, online or about to be).
    pub fn logged_in(&self) -> bool {
        matches!(self.state, State::Joining | State::Online)
    }

    /// Whether it is still upgrading or logging in (readiness taken after live traffic).
    pub fn newcomer(&self) -> bool {
        matches!(self.state, State::Handshake | State::Login)
    }

    fn step(&mut self, from: State, to: State) -> bool {
        let ok = self.state == from;
        if ok {
            self.state = to;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        handshake: 10,
        login: 60,
    };

    #[test]
    fn each_stage_has_its_deadline_never_early() {
        let mut t = Terminal::accepted(100, &T);
        assert_eq!(t.expired(110), None);
        assert_eq!(t.expired(111), Some(Expired::Handshake));
        assert!(t.upgraded(105, &T));
        assert_eq!(t.deadline(), 166);
        assert!(t.login_requested(0));
        assert_eq!(t.read_window(), 3 * DEFAULT_PERIOD);
        assert!(t.granted());
        assert_eq!(t.expired(166), Some(Expired::Login));
        assert!(t.joined(120));
        assert_eq!(t.deadline(), 120 + 450 + 1);
        t.heard(200);
        assert_eq!(t.expired(650), None);
        assert_eq!(t.expired(651), Some(Expired::Read));
    }

    #[test]
    fn out_of_order_steps_are_refused() {
        let mut t = Terminal::accepted(0, &T);
        assert!(!t.granted());
        assert!(!t.joined(1));
        assert!(!t.login_requested(20));
        assert_eq!(t.state(), State::Handshake);
        assert!(t.upgraded(1, &T));
        assert!(!t.upgraded(2, &T));
        t.heard(50);
        assert_eq!(t.deadline(), 62, "frames do not move a login deadline");
    }

    #[test]
    fn heartbeat_period_is_clamped() {
        let mut t = Terminal::accepted(0, &T);
        t.upgraded(0, &T);
        t.login_requested(10_000);
        assert_eq!(t.read_window(), 3 * MAX_PERIOD);
        let mut t = Terminal::accepted(0, &T);
        t.upgraded(0, &T);
        t.login_requested(u64::MAX);
        assert_eq!(t.read_window(), 3 * MAX_PERIOD);
    }
}
