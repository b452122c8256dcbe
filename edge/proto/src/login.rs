//! The WebSocket login string and its one-byte (or two-byte) reply (docs/protocol.md §3.2, §3.3).
//!
//! Owns: parsing `<id>|<timestamp>|<timeout>|<signature>`, the MD5/Base64 signature with the
//! shared salt, the age and signature checks (time is a parameter), and the reply codes.
//! Also owns the Go-style strict decimal parsers the other text formats of this crate reuse.
//!
//! Does **not** own: the mobile-id allocation, the phone/device decision (`id` module), the
//! Redis online script or the reply's WebSocket framing (`ws`). Fixes over the original:
//! timestamp 0 is refused unless the caller allows it, a future timestamp is refused
//! explicitly, the signature is compared in constant time, and the refusals get their
//! defined reply codes (4, 6) instead of the original's silent close.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use thiserror::Error;

/// The static salt shared with the HTTP platform (the original's hard-coded value).
pub const DEFAULT_SALT: &str = "BlackCrystalWb14527";
/// A login string whose timestamp is this many seconds old (or older) is refused.
pub const MAX_AGE_SECS: u64 = 60;
/// Length of a signature: standard, padded Base64 of a 16-byte MD5.
pub const SIGNATURE_LEN: usize = 24;

/// A parsed login string; `signature` borrows the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest<'a> {
    /// Terminal id: a user id (phones, positive) or a device id (negative).
    pub id: i64,
    /// Unix seconds at which the HTTP platform issued the string (0 = "never expires").
    pub timestamp: u64,
    /// The client's heartbeat period in seconds.
    pub timeout: u64,
    /// The Base64 signature as sent (not checked by [`LoginRequest::parse`]).
    pub signature: &'a [u8],
}

/// The login string is malformed: answer [`LoginReply::WrongParams`] (`[1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LoginError {
    /// Not exactly 4 `|` fields, a number that does not parse, or an empty number.
    #[error("login string: wrong parameters")]
    Params,
}

/// A well-formed login string that is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LoginReject {
    /// Timestamp 0 (not allowed), in the future, or at least [`MAX_AGE_SECS`] old.
    #[error("login string: wrong timestamp")]
    WrongTimestamp,
    /// The signature does not match.
    #[error("login string: wrong signature")]
    WrongMd5,
}

/// The login acknowledgement: one binary WebSocket frame, then a close on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginReply {
    /// Phone logged in with mobile sub-id `k` (1..=15): `[0, k]`.
    PhoneOk(u8),
    /// Device logged in: `[0]`.
    DeviceOk,
    /// `[1]`: malformed login string.
    WrongParams,
    /// `[2]`: wrong login type (defined, unused by the original).
    WrongLoginType,
    /// `[3]`: phone id not a multiple of 16, or all 15 mobile slots taken.
    WrongId,
    /// `[4]`: timestamp expired, in the future, or 0 when that is not allowed.
    WrongTimestamp,
    /// `[5]`: no login message in time.
    LoginTimeout,
    /// `[6]`: signature mismatch.
    WrongMd5,
    /// `[7]`: logged in elsewhere.
    LoggedInElsewhere,
    /// `[8]`: the timeout field could not be used.
    TimeoutParse,
    /// `[9]`: server error (Redis failure).
    ServerError,
    /// `[10]`: the password was changed.
    PasswordModified,
}

// === LoginRequest ===

impl<'a> LoginRequest<'a> {
    /// Parses a login string (the first WebSocket message, text or binary).
    pub fn parse(message: &'a [u8]) -> Result<Self, LoginError> {
        let mut fields = message.split(|&b| b == b'|');
        let (Some(id), Some(timestamp), Some(timeout), Some(signature), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(LoginError::Params);
        };
        Ok(Self {
            id: parse_i64(id).ok_or(LoginError::Params)?,
            timestamp: parse_u64(timestamp).ok_or(LoginError::Params)?,
            timeout: parse_u64(timeout).ok_or(LoginError::Params)?,
            signature,
        })
    }

    /// Checks age then signature, in the original's order.
    ///
    /// `now_unix` is the current Unix time in seconds. With `allow_zero_timestamp` a
    /// timestamp of 0 skips the age check (the original's behaviour, a security hole).
    pub fn verify(
        &self,
        salt: &[u8],
        now_unix: u64,
        allow_zero_timestamp: bool,
    ) -> Result<(), LoginReject> {
        let fresh = match self.timestamp {
            0 => allow_zero_timestamp,
            ts => ts <= now_unix && now_unix - ts < MAX_AGE_SECS,
        };
        if !fresh {
            return Err(LoginReject::WrongTimestamp);
        }
        let expected = signature(self.id, self.timestamp, self.timeout, salt);
        if crate::secret::eq(&expected, self.signature) {
            Ok(())
        } else {
            Err(LoginReject::WrongMd5)
        }
    }

    /// Writes the canonical login string `<id>|<timestamp>|<timeout>|<signature>`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}|{}|{}|", self.id, self.timestamp, self.timeout);
        out.extend_from_slice(self.signature);
    }
}

/// The signature the HTTP platform issues: Base64 (standard, padded) of
/// MD5(`<id>|<timestamp>|<timeout>|<salt>`), numbers in canonical decimal.
pub fn signature(id: i64, timestamp: u64, timeout: u64, salt: &[u8]) -> [u8; SIGNATURE_LEN] {
    use std::fmt::Write as _;
    let mut hasher = HashWriter(Md5::new());
    // HashWriter never fails.
    let _ = write!(hasher, "{id}|{timestamp}|{timeout}|");
    hasher.0.update(salt);
    let digest = hasher.0.finalize();
    let mut out = [0u8; SIGNATURE_LEN];
    // 16 bytes always encode to exactly 24 padded Base64 characters.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

struct HashWriter(Md5);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

// === LoginError / LoginReject ===

impl LoginError {
    /// The reply the client gets.
    pub fn reply(self) -> LoginReply {
        LoginReply::WrongParams
    }
}

impl LoginReject {
    /// The reply the client gets (the original sent nothing here; we send the defined code).
    pub fn reply(self) -> LoginReply {
        match self {
            Self::WrongTimestamp => LoginReply::WrongTimestamp,
            Self::WrongMd5 => LoginReply::WrongMd5,
        }
    }
}

// === LoginReply ===

impl LoginReply {
    /// The first byte of the reply (0 on success).
    pub fn code(self) -> u8 {
        match self {
            Self::PhoneOk(_) | Self::DeviceOk => 0,
            Self::WrongParams => 1,
            Self::WrongLoginType => 2,
            Self::WrongId => 3,
            Self::WrongTimestamp => 4,
            Self::LoginTimeout => 5,
            Self::WrongMd5 => 6,
            Self::LoggedInElsewhere => 7,
            Self::TimeoutParse => 8,
            Self::ServerError => 9,
            Self::PasswordModified => 10,
        }
    }

    /// The reply bytes and how many of them are used (2 for a phone success, else 1).
    pub fn encode(self) -> ([u8; 2], usize) {
        match self {
            Self::PhoneOk(k) => ([0, k], 2),
            other => ([other.code(), 0], 1),
        }
    }

    /// Appends the reply bytes (the WebSocket payload, without a frame header).
    pub fn write_to(self, out: &mut Vec<u8>) {
        let (bytes, len) = self.encode();
        out.extend_from_slice(bytes.get(..len).unwrap_or(&bytes));
    }

    /// Decodes a reply payload (for test clients); `None` for anything [`encode`](Self::encode)
    /// never produces, including a phone sub-id outside 1..=15.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        Some(match *payload {
            [0, k @ 1..=15] => Self::PhoneOk(k),
            [0] => Self::DeviceOk,
            [1] => Self::WrongParams,
            [2] => Self::WrongLoginType,
            [3] => Self::WrongId,
            [4] => Self::WrongTimestamp,
            [5] => Self::LoginTimeout,
            [6] => Self::WrongMd5,
            [7] => Self::LoggedInElsewhere,
            [8] => Self::TimeoutParse,
            [9] => Self::ServerError,
            [10] => Self::PasswordModified,
            _ => return None,
        })
    }
}

// === decimal helpers (Go `strconv` rules, base 10) ===

/// Go `ParseUint(s, 10, 64)`: one or more ASCII digits, no sign, no overflow.
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Go `ParseInt(s, 10, 64)`: an optional `+`/`-` then digits, within `i64`.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let magnitude = parse_u64(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_522_893;

    fn check_parse(input: &str, expect: Option<(i64, u64, u64, &str)>) {
        let got = LoginRequest::parse(input.as_bytes()).ok();
        let got = got.map(|r| {
            (
                r.id,
                r.timestamp,
                r.timeout,
                std::str::from_utf8(r.signature).unwrap(),
            )
        });
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn parse_cases() {
        check_parse("16|1|30|sig", Some((16, 1, 30, "sig")));
        check_parse("-5|0|0|", Some((-5, 0, 0, "")));
        check_parse("+16|007|30|x", Some((16, 7, 30, "x")));
        check_parse("-9223372036854775808|1|1|s", Some((i64::MIN, 1, 1, "s")));
        check_parse("9223372036854775808|1|1|s", None);
        check_parse("16|abc|30", None);
        check_parse("16|1|30", None);
        check_parse("16|1|30|s|x", None);
        check_parse("16||30|s", None);
        check_parse("16|1||s", None);
        check_parse("|1|1|s", None);
        check_parse("16|+1|30|s", None);
        check_parse("16|-1|30|s", None);
        check_parse("1 6|1|30|s", None);
        check_parse("16|18446744073709551616|30|s", None);
        check_parse("", None);
    }

    fn check_verify(ts: u64, allow_zero: bool, sig_ok: bool, expect: Result<(), LoginReject>) {
        let good = signature(16, ts, 30, DEFAULT_SALT.as_bytes());
        let mut bad = good;
        bad[23] ^= 1;
        let sig: &[u8] = if sig_ok { &good } else { &bad };
        let req = LoginRequest {
            id: 16,
            timestamp: ts,
            timeout: 30,
            signature: sig,
        };
        assert_eq!(
            req.verify(DEFAULT_SALT.as_bytes(), NOW, allow_zero),
            expect,
            "ts {ts}"
        );
    }

    #[test]
    fn verify_cases() {
        check_verify(NOW, false, true, Ok(()));
        check_verify(NOW - 59, false, true, Ok(()));
        check_verify(NOW - 60, false, true, Err(LoginReject::WrongTimestamp));
        check_verify(NOW + 1, false, true, Err(LoginReject::WrongTimestamp));
        check_verify(0, false, true, Err(LoginReject::WrongTimestamp));
        check_verify(0, true, true, Ok(()));
        check_verify(NOW, false, false, Err(LoginReject::WrongMd5));
        check_verify(NOW - 60, false, false, Err(LoginReject::WrongTimestamp));
    }

    #[test]
    fn signature_lengths_must_match() {
        let good = signature(16, NOW, 30, b"salt");
        for sig in [&good[..23], &[], &[good.as_slice(), b"A"].concat()[..]] {
            let req = LoginRequest {
                id: 16,
                timestamp: NOW,
                timeout: 30,
                signature: sig,
            };
            assert_eq!(req.verify(b"salt", NOW, false), Err(LoginReject::WrongMd5));
        }
    }

    #[test]
    fn replies() {
        let cases: [(LoginReply, &[u8]); 4] = [
            (LoginReply::PhoneOk(1), &[0, 1]),
            (LoginReply::DeviceOk, &[0]),
            (LoginReply::WrongParams, &[1]),
            (LoginReply::PasswordModified, &[10]),
        ];
        for (reply, bytes) in cases {
            let mut out = Vec::new();
            reply.write_to(&mut out);
            assert_eq!(out, bytes);
            assert_eq!(LoginReply::decode(bytes), Some(reply));
        }
        assert_eq!(LoginError::Params.reply().code(), 1);
        assert_eq!(LoginReject::WrongTimestamp.reply().code(), 4);
        assert_eq!(LoginReject::WrongMd5.reply().code(), 6);
        assert_eq!(LoginReply::decode(&[0, 16]), None);
    }
}
