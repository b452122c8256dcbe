//! Replies to device requests (docs/protocol.md §5.2, §5.3), the
//! sequence acceptance rule and the device id inside a platform cookie.
//!
//! Body builders return fixed-size arrays (no allocation); [`write_reply`] wraps a body
//! in the request's echoed header. Which status to put in a body is the shell's decision.

use super::Sid;
use crate::frame::{
    BODY_LEN_IN_DATA, DIRECT_DATA_OFFSET, DIRECT_MIN_LEN, DirectPacket, PacketError, put_at,
    reply_flags, seal,
};

/// Reply status: OK.
pub const STATUS_OK: i32 = 0;
/// Reply status: the platform answered non-200 or undecodable JSON.
pub const STATUS_HTTP_ERROR: i32 = 1000;
/// Reply status: HTTP transport failure, or an unparsable register cookie.
pub const STATUS_SERVER_ERROR: i32 = 1001;
/// Reply status: bad command (used for `0xE4` and `0xE6`, which the original ignored or crashed on).
pub const STATUS_BAD_COMMAND: i32 = 1002;
/// Heartbeat interval told to devices in the login reply, seconds.
pub const HEARTBEAT_INTERVAL_SECS: u8 = 20;
/// Size of the cookie field in login requests and register replies.
pub const COOKIE_LEN: usize = 64;

/// Appends the reply to `request` (a verified direct packet): its first 36 bytes with data
/// flags `|= 0xC0` and the body length of `body`, then `body`, both checks recomputed.
///
/// The frame header (sequence, timestamp, ids) is echoed **unchanged for every command**:
/// that is what every captured reply shows (`udp_E1..E5_*_reply` keep the request's
/// timestamp at 4–7 and dst at 8–15). The spec's "reply bytes 4–19 are overwritten with the
/// sid" is the sid at *body* offsets 4–19, which every body builder here writes.
/// Errors (nothing appended): `request` not a direct packet, or `body` over 65 535 bytes.
pub fn write_reply(out: &mut Vec<u8>, request: &[u8], body: &[u8]) -> Result<(), PacketError> {
    let packet = DirectPacket::parse(request)?;
    let body_len =
        u16::try_from(body.len()).map_err(|_| PacketError::BodyTooLong { len: body.len() })?;
    let header = request.get(..DIRECT_MIN_LEN).unwrap_or_default();
    let start = out.len();
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    let reply = out.get_mut(start..).unwrap_or_default();
    put_at(
        reply,
        DIRECT_DATA_OFFSET,
        &[reply_flags(packet.data().flags)],
    );
    put_at(
        reply,
        DIRECT_DATA_OFFSET + BODY_LEN_IN_DATA,
        &body_len.to_le_bytes(),
    );
    let sealed = seal(reply);
    if sealed.is_err() {
        out.truncate(start);
    }
    sealed
}

/// Writes `status` (i32 LE) then the sid: the 20-byte prefix every reply body shares.
fn prefix(out: &mut [u8], status: i32, sid: &Sid) {
    put_at(out, 0, &status.to_le_bytes());
    put_at(out, 4, sid.as_bytes());
}

/// `0xE0` reply body (28): status, the new sid, 8 zero bytes.
#[must_use]
pub fn new_session_body(status: i32, sid: &Sid) -> [u8; 28] {
    let mut out = [0u8; 28];
    prefix(&mut out, status, sid);
    out
}

/// `0xE1` reply body (92): status, sid, device id (i64) at 20, the cookie at 28 truncated
/// or NUL-padded to 64 bytes.
#[must_use]
pub fn register_body(status: i32, sid: &Sid, device_id: i64, cookie: &[u8]) -> [u8; 92] {
    let mut out = [0u8; 92];
    prefix(&mut out, status, sid);
    put_at(&mut out, 20, &device_id.to_le_bytes());
    put_at(&mut out, 28, cookie.get(..COOKIE_LEN).unwrap_or(cookie));
    out
}

/// `0xE2` reply body (21): status, sid, heartbeat interval in seconds
/// ([`HEARTBEAT_INTERVAL_SECS`] in the original).
#[must_use]
pub fn login_body(status: i32, sid: &Sid, heartbeat_secs: u8) -> [u8; 21] {
    let mut out = [0u8; 21];
    prefix(&mut out, status, sid);
    put_at(&mut out, 20, &[heartbeat_secs]);
    out
}

/// `0xE3` reply body (28): status, sid, the request's MAC.
#[must_use]
pub fn rename_body(status: i32, sid: &Sid, mac: &[u8; 8]) -> [u8; 28] {
    let mut out = [0u8; 28];
    prefix(&mut out, status, sid);
    put_at(&mut out, 20, mac);
    out
}

/// 20-byte reply body: status and sid (heartbeat, and bad-command replies).
#[must_use]
pub fn status_body(status: i32, sid: &Sid) -> [u8; 20] {
    let mut out = [0u8; 20];
    prefix(&mut out, status, sid);
    out
}

/// The sequence rule of docs/protocol.md §6.2: `seq` is accepted iff it is strictly greater than the
/// session's `Ridx`, or it wrapped (`seq < 10` while `Ridx > 65530`).
#[must_use]
pub const fn seq_accepts(ridx: u16, seq: u16) -> bool {
    seq > ridx || (seq < 10 && ridx > 65530)
}

/// The device id in a platform cookie `<deviceId>|…`: the decimal text before the first
/// `|` (the whole cookie if there is none). `None` if that is not an i64.
#[must_use]
pub fn parse_cookie_device_id(cookie: &[u8]) -> Option<i64> {
    let head = cookie.split(|&b| b == b'|').next()?;
    core::str::from_utf8(head).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_edges() {
        let check = |ridx: u16, seq: u16, expect: bool| {
            assert_eq!(seq_accepts(ridx, seq), expect, "ridx {ridx} seq {seq}");
        };
        check(0, 0, false);
        check(0, 1, true);
        check(5, 5, false);
        check(5, 4, false);
        check(5, 6, true);
        check(65534, 65535, true);
        check(65535, 65535, false);
        check(65530, 0, false);
        check(65531, 0, true);
        check(65531, 9, true);
        check(65531, 10, false);
        check(65535, 9, true);
        check(65535, 10, false);
        check(65531, 65530, false);
    }

    #[test]
    fn cookie_ids() {
        let check = |cookie: &[u8], expect: Option<i64>| {
            assert_eq!(parse_cookie_device_id(cookie), expect, "{cookie:?}");
        };
        check(b"-1|mockcookie", Some(-1));
        check(b"-42", Some(-42));
        check(b"123|a|b", Some(123));
        check(b"|x", None);
        check(b"", None);
        check(b"abc|1", None);
        check(b"-9223372036854775809|x", None);
        check(b"\xff|x", None);
    }

    #[test]
    fn bodies_have_the_spec_layout() {
        let sid = Sid([7; 16]);
        let body = register_body(1000, &sid, -1, &[b'c'; 70]);
        assert_eq!(&body[..4], &1000i32.to_le_bytes());
        assert_eq!(&body[4..20], &[7; 16]);
        assert_eq!(&body[20..28], &[0xff; 8]);
        assert_eq!(&body[28..], &[b'c'; 64]);
        let short = register_body(0, &sid, 5, b"5|x");
        assert_eq!(&short[28..31], b"5|x");
        assert!(short[31..].iter().all(|&b| b == 0));
        assert_eq!(login_body(0, &sid, HEARTBEAT_INTERVAL_SECS)[20], 20);
        assert_eq!(&rename_body(0, &sid, &[1; 8])[20..], &[1; 8]);
        assert_eq!(&new_session_body(0, &sid)[20..], &[0; 8]);
        assert_eq!(
            status_body(STATUS_BAD_COMMAND, &sid)[..4],
            1002i32.to_le_bytes()
        );
    }

    #[test]
    fn reply_rejects_non_requests() {
        let mut out = vec![9];
        let check = |out: &mut Vec<u8>, req: &[u8], expect: PacketError| {
            assert_eq!(write_reply(out, req, &[]), Err(expect));
        };
        check(
            &mut out,
            &[2; 35],
            PacketError::TooShort { need: 36, got: 35 },
        );
        check(&mut out, &[3; 80], PacketError::BadOpcode(3));
        let big = vec![0u8; 65_536];
        let got = write_reply(&mut out, &[2; 36], &big);
        assert_eq!(got, Err(PacketError::BodyTooLong { len: 65_536 }));
        assert_eq!(out, vec![9], "nothing appended on error");
    }
}
