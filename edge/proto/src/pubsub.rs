//! Redis pub/sub channel names and payloads shared with msgbus and the HTTP platform
//! (docs/protocol.md §9.4, §7).
//!
//! Owns: `PubKey` online/offline/reset events, `PubDeviceUsers` bind events,
//! `PubModifiedPasswdUser`, the `PubCommonMsg:<msgId>` channel id (Go base detection) and
//! its `<id>,<id>,...|<raw body>` payload. Parsers borrow; encoders append to the caller's
//! buffer. Numbers follow Go's `strconv` rules, so `+17` and `017` parse as 17 while the
//! encoders always write canonical decimal.
//!
//! Does **not** own: RESP framing, subscriptions, or what a comet does with an event
//! (id expansion, status messages) — that is the shell's and the `status`/`id` modules'.

use thiserror::Error;

use crate::login::parse_i64;

/// Online/offline events of terminals per comet (published by the comet's Lua scripts).
pub const PUB_KEY: &str = "PubKey";
/// Bind/unbind events (published by the HTTP platform).
pub const PUB_DEVICE_USERS: &str = "PubDeviceUsers";
/// Password changes (published by the HTTP platform).
pub const PUB_MODIFIED_PASSWD_USER: &str = "PubModifiedPasswdUser";
/// Prefix of the push channels `PubCommonMsg:<msgId>`.
pub const PUB_COMMON_MSG_PREFIX: &str = "PubCommonMsg:";
/// The pattern the comets `PSUBSCRIBE` to.
pub const PUB_COMMON_MSG_PATTERN: &str = "PubCommonMsg:*";

/// A payload or channel name that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PubSubError {
    /// Wrong number of `|` fields (or no `|` in a push payload).
    #[error("wrong number of fields")]
    Fields,
    /// A number that does not parse or does not fit.
    #[error("bad number")]
    Number,
    /// An empty or non-UTF-8 comet address, or a flag other than `0`/`1`.
    #[error("bad field value")]
    Value,
    /// A channel that does not start with `PubCommonMsg:`.
    #[error("not a PubCommonMsg channel")]
    Channel,
}

/// `PubKey` payload `<id>|<cometIP>|1` (online) or `|0` (offline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubKeyEvent<'a> {
    /// Terminal id (mobile id for phones, negative for devices; 0 with offline = reset).
    pub id: i64,
    /// The comet's address (`-lip`).
    pub comet: &'a str,
    /// Online (first connection) or offline (last connection gone).
    pub online: bool,
}

/// `PubDeviceUsers` payload `<deviceId>|<userId>|<type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceUsersEvent {
    /// Device id.
    pub device: i64,
    /// Base user id.
    pub user: i64,
    /// Type `0` is an unbind; any other non-empty type a bind.
    pub bind: bool,
}

/// `PubModifiedPasswdUser` payload: the base user id whose phones must be kicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifiedPasswdUser(pub i64);

/// `PubCommonMsg:<msgId>` payload, split at the first `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonMsg<'a> {
    /// The raw comma-separated id list.
    pub ids: &'a [u8],
    /// The binary body (may itself contain `|`).
    pub body: &'a [u8],
}

/// Iterator over the valid ids of a [`CommonMsg`]; invalid ones are skipped and counted.
#[derive(Debug, Clone)]
pub struct CommonIds<'a> {
    rest: Option<&'a [u8]>,
    skipped: usize,
}

// === helpers ===

fn three_fields(payload: &[u8]) -> Result<[&[u8]; 3], PubSubError> {
    let mut fields = payload.split(|&b| b == b'|');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(a), Some(b), Some(c), None) => Ok([a, b, c]),
        _ => Err(PubSubError::Fields),
    }
}

fn number(text: &[u8]) -> Result<i64, PubSubError> {
    parse_i64(text).ok_or(PubSubError::Number)
}

fn write_display(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = out.write_fmt(args);
}

// === PubKeyEvent ===

impl<'a> PubKeyEvent<'a> {
    /// Parses a `PubKey` payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PubSubError> {
        let [id, comet, flag] = three_fields(payload)?;
        let comet = std::str::from_utf8(comet)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or(PubSubError::Value)?;
        let online = match flag {
            b"1" => true,
            b"0" => false,
            _ => return Err(PubSubError::Value),
        };
        Ok(Self {
            id: number(id)?,
            comet,
            online,
        })
    }

    /// `0|<comet>|0`: forget every id on that comet (sent when a comet starts).
    pub fn is_reset(&self) -> bool {
        self.id == 0 && !self.online
    }

    /// The reset event for `comet`.
    pub fn reset(comet: &'a str) -> Self {
        Self {
            id: 0,
            comet,
            online: false,
        }
    }

    /// Appends the payload.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_display(
            out,
            format_args!("{}|{}|{}", self.id, self.comet, u8::from(self.online)),
        );
    }
}

// === DeviceUsersEvent ===

impl DeviceUsersEvent {
    /// Parses a `PubDeviceUsers` payload.
    pub fn parse(payload: &[u8]) -> Result<Self, PubSubError> {
        let [device, user, kind] = three_fields(payload)?;
        if kind.is_empty() {
            return Err(PubSubError::Value);
        }
        Ok(Self {
            device: number(device)?,
            user: number(user)?,
            bind: kind != b"0",
        })
    }

    /// Appends the payload (type `1` for a bind, `0` for an unbind).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_display(
            out,
            format_args!("{}|{}|{}", self.device, self.user, u8::from(self.bind)),
        );
    }
}

// === ModifiedPasswdUser ===

impl ModifiedPasswdUser {
    /// Parses a `PubModifiedPasswdUser` payload.
    pub fn parse(payload: &[u8]) -> Result<Self, PubSubError> {
        number(payload).map(Self)
    }

    /// Appends the payload.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_display(out, format_args!("{}", self.0));
    }
}

// === PubCommonMsg ===

/// The message id of a `PubCommonMsg:<msgId>` channel, read like Go's
/// `ParseUint(s, 0, 16)` of its day: `0x36`/`0X36` hex, `066` octal, `54` decimal, `0`.
pub fn common_msg_id(channel: impl AsRef<[u8]>) -> Result<u16, PubSubError> {
    let text = channel
        .as_ref()
        .strip_prefix(PUB_COMMON_MSG_PREFIX.as_bytes())
        .ok_or(PubSubError::Channel)?;
    let (radix, digits) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest),
        [b'0'] => (10, text),
        [b'0', rest @ ..] => (8, rest),
        _ => (10, text),
    };
    if digits.is_empty() {
        return Err(PubSubError::Number);
    }
    digits
        .iter()
        .try_fold(0u16, |acc, &b| {
            let digit = char::from(b).to_digit(radix)?;
            acc.checked_mul(radix as u16)?.checked_add(digit as u16)
        })
        .ok_or(PubSubError::Number)
}

/// Appends the channel name for `msg_id` as the original wrote it (`PubCommonMsg:0x36`).
pub fn write_common_msg_channel(out: &mut Vec<u8>, msg_id: u16) {
    write_display(out, format_args!("{PUB_COMMON_MSG_PREFIX}{msg_id:#x}"));
}

impl<'a> CommonMsg<'a> {
    /// Splits a push payload at its first `|`.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PubSubError> {
        let at = payload
            .iter()
            .position(|&b| b == b'|')
            .ok_or(PubSubError::Fields)?;
        let (ids, body) = (payload.get(..at), payload.get(at + 1..));
        match (ids, body) {
            (Some(ids), Some(body)) => Ok(Self { ids, body }),
            _ => Err(PubSubError::Fields),
        }
    }

    /// The valid ids; an empty list yields none and skips none.
    pub fn ids(&self) -> CommonIds<'a> {
        CommonIds {
            rest: (!self.ids.is_empty()).then_some(self.ids),
            skipped: 0,
        }
    }
}

impl CommonIds<'_> {
    /// How many invalid ids were skipped so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl Iterator for CommonIds<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        while let Some(rest) = self.rest {
            let (piece, tail) = match rest.iter().position(|&b| b == b',') {
                Some(at) => (rest.get(..at).unwrap_or(rest), rest.get(at + 1..)),
                None => (rest, None),
            };
            self.rest = tail;
            match parse_i64(piece) {
                Some(id) => return Some(id),
                None => self.skipped += 1,
            }
        }
        None
    }
}

/// Appends a push payload `<id>,<id>,...|<body>`.
pub fn write_common_msg(out: &mut Vec<u8>, ids: &[i64], body: &[u8]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_display(out, format_args!("{id}"));
    }
    out.push(b'|');
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubkey_cases() {
        let ev = PubKeyEvent::parse(b"17|127.0.0.1|1").unwrap();
        assert_eq!(
            (ev.id, ev.comet, ev.online, ev.is_reset()),
            (17, "127.0.0.1", true, false)
        );
        assert!(PubKeyEvent::parse(b"0|10.0.0.1|0").unwrap().is_reset());
        for bad in [
            &b"17|127.0.0.1"[..],
            b"17|127.0.0.1|2",
            b"17||1",
            b"x|a|1",
            b"1|a|1|",
            b"1|\xff|1",
        ] {
            assert!(PubKeyEvent::parse(bad).is_err(), "{bad:?}");
        }
        let mut out = Vec::new();
        PubKeyEvent::reset("10.0.0.1").write_to(&mut out);
        assert_eq!(out, b"0|10.0.0.1|0");
    }

    #[test]
    fn device_users_and_password() {
        let check = |p: &[u8]| DeviceUsersEvent::parse(p).map(|e| (e.device, e.user, e.bind));
        assert_eq!(check(b"-1|16|0"), Ok((-1, 16, false)));
        assert_eq!(check(b"-1|16|1"), Ok((-1, 16, true)));
        assert_eq!(check(b"-1|16|bind"), Ok((-1, 16, true)));
        assert_eq!(check(b"-1|16|"), Err(PubSubError::Value));
        assert_eq!(check(b"-1|x|1"), Err(PubSubError::Number));
        assert_eq!(ModifiedPasswdUser::parse(b"32"), Ok(ModifiedPasswdUser(32)));
        assert_eq!(ModifiedPasswdUser::parse(b""), Err(PubSubError::Number));
    }

    #[test]
    fn common_msg_ids() {
        let check = |c: &str| common_msg_id(c).ok();
        for (channel, expect) in [
            ("PubCommonMsg:0x36", Some(54)),
            ("PubCommonMsg:0X36", Some(54)),
            ("PubCommonMsg:066", Some(54)),
            ("PubCommonMsg:54", Some(54)),
            ("PubCommonMsg:0", Some(0)),
            ("PubCommonMsg:65535", Some(65535)),
            ("PubCommonMsg:0xffff", Some(65535)),
            ("PubCommonMsg:65536", None),
            ("PubCommonMsg:0x", None),
            ("PubCommonMsg:08", None),
            ("PubCommonMsg:", None),
            ("PubCommonMsg:+5", None),
            ("PubKey", None),
        ] {
            assert_eq!(check(channel), expect, "{channel}");
        }
        let mut out = Vec::new();
        write_common_msg_channel(&mut out, 0x36);
        assert_eq!(out, b"PubCommonMsg:0x36");
    }

    #[test]
    fn common_msg_payloads() {
        let msg = CommonMsg::parse(b"16,x,,-1,32|a|b").unwrap();
        assert_eq!(msg.body, b"a|b");
        let mut ids = msg.ids();
        assert_eq!(ids.by_ref().collect::<Vec<_>>(), [16, -1, 32]);
        assert_eq!(ids.skipped(), 2);
        let empty = CommonMsg::parse(b"|").unwrap();
        assert_eq!((empty.ids().count(), empty.body), (0, &b""[..]));
        assert_eq!(CommonMsg::parse(b"16"), Err(PubSubError::Fields));
        let mut out = Vec::new();
        write_common_msg(&mut out, &[16, -1], b"x|y");
        assert_eq!(out, b"16,-1|x|y");
    }
}
