//! The UDP device side of the load generator: requests 0xE0 (new session), 0xE1
//! (register), 0xE2 (login), 0xE5 (heartbeat) and forward packets, built with edge-proto's
//! codecs, and their replies parsed. The request's source id field carries the session
//! index, which every reply echoes, so one socket serves many sessions.

use edge_proto::device::Sid;
use edge_proto::frame::{DirectSpec, FORWARD_MIN_LEN, verify_direct, write_direct};

/// Where a forward packet's body (and the load stamp in it) starts.
pub const FORWARD_BODY: usize = FORWARD_MIN_LEN;

/// A parsed reply: (session index, msg id, status, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Session index (echoed source id).
    pub index: i64,
    /// Command.
    pub msg_id: u16,
    /// Status (body bytes 0..4).
    pub status: i32,
    /// Session id (body bytes 4..20), zero if absent.
    pub sid: [u8; 16],
    /// Whole body.
    pub body: Vec<u8>,
}

fn request(out: &mut Vec<u8>, index: i64, seq: u16, msg_id: u16, body: &[u8]) {
    out.clear();
    let spec = DirectSpec {
        seq,
        timestamp: 0,
        dst: 0,
        src: index,
        msg_id,
        body,
    };
    // Bodies here are small: cannot exceed the u16 length.
    let _ = write_direct(out, &spec);
}

/// 0xE0: MAC + SN.
pub fn new_session(out: &mut Vec<u8>, index: i64, mac: [u8; 8]) {
    let mut body = [0u8; 24];
    body[..8].copy_from_slice(&mac);
    body[8..].copy_from_slice(&[0x5a; 16]);
    request(out, index, 0, 0xE0, &body);
}

/// 0xE1: register with a name.
pub fn register(out: &mut Vec<u8>, index: i64, seq: u16, sid: &[u8; 16], mac: [u8; 8]) {
    let name = b"loadgen";
    let mut body = vec![0u8; 310 + name.len()];
    body[..16].copy_from_slice(sid);
    body[16..18].copy_from_slice(&1u16.to_le_bytes());
    body[24..32].copy_from_slice(&mac);
    body[308..310].copy_from_slice(&(name.len() as u16).to_le_bytes());
    body[310..].copy_from_slice(name);
    request(out, index, seq, 0xE1, &body);
}

/// 0xE2: login with the cookie from the register reply.
pub fn login(out: &mut Vec<u8>, index: i64, seq: u16, sid: &[u8; 16], mac: [u8; 8], cookie: &[u8]) {
    let mut body = [0u8; 88];
    body[..16].copy_from_slice(sid);
    body[16..24].copy_from_slice(&mac);
    let n = cookie.len().min(64);
    body[24..24 + n].copy_from_slice(&cookie[..n]);
    request(out, index, seq, 0xE2, &body);
}

/// 0xE5: sid + device id.
pub fn heartbeat(out: &mut Vec<u8>, index: i64, seq: u16, sid: &[u8; 16], device: i64) {
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(sid);
    body[16..].copy_from_slice(&device.to_le_bytes());
    request(out, index, seq, 0xE5, &body);
}

/// A state or alarm sync (0x30 / 0x31): sid, then `payload`.
pub fn sync(out: &mut Vec<u8>, index: i64, seq: u16, sid: &[u8; 16], msg_id: u16, payload: &[u8]) {
    let mut body = Vec::with_capacity(16 + payload.len());
    body.extend_from_slice(sid);
    body.extend_from_slice(payload);
    request(out, index, seq, msg_id, &body);
}

/// A forward packet (opcode 3) from `device` (session `sid`) to `dst`, `len` ≥ 92 bytes,
/// carrying a load message stamp at [`FORWARD_BODY`], both checks sealed (a valid packet).
#[allow(clippy::too_many_arguments)] // one per header field of the packet
pub fn forward(
    out: &mut Vec<u8>,
    seq: u16,
    sid: &[u8; 16],
    device: i64,
    dst: i64,
    pair: u32,
    sent_ns: u64,
    len: usize,
) {
    out.clear();
    out.resize(len.max(FORWARD_BODY + 16), 0);
    out[0] = 0x83;
    out[2..4].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&dst.to_le_bytes());
    out[16..24].copy_from_slice(&device.to_le_bytes());
    out[24..40].copy_from_slice(sid);
    out[40] = 0x83;
    out[48..56].copy_from_slice(&dst.to_le_bytes());
    out[56..64].copy_from_slice(&device.to_le_bytes());
    let body_len = (out.len() - FORWARD_BODY) as u16;
    out[64] = 0x80;
    out[68..70].copy_from_slice(&0x10u16.to_le_bytes());
    out[70..72].copy_from_slice(&body_len.to_le_bytes());
    stamp_forward(out, sent_ns, pair);
    let _ = edge_proto::frame::seal(out);
}

/// Writes the load stamp (send ns, magic, pair) into a forward-shaped packet's body.
pub fn stamp_forward(out: &mut [u8], sent_ns: u64, pair: u32) {
    out[FORWARD_BODY..FORWARD_BODY + 8].copy_from_slice(&sent_ns.to_le_bytes());
    out[FORWARD_BODY + 8..FORWARD_BODY + 12].copy_from_slice(crate::msg::MAGIC);
    out[FORWARD_BODY + 12..FORWARD_BODY + 16].copy_from_slice(&pair.to_le_bytes());
}

/// Parses a reply datagram; `None` for anything that is not a verified direct reply.
pub fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let p = verify_direct(buf).ok()?;
    let body = p.body();
    let status = i32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let mut sid = [0u8; 16];
    if let Some(s) = body.get(4..20) {
        sid.copy_from_slice(s);
    }
    Some(Reply {
        index: p.frame().src,
        msg_id: p.msg_id(),
        status,
        sid,
        body: body.to_vec(),
    })
}

/// (device id, cookie without trailing NULs) from a register reply body.
pub fn register_result(body: &[u8]) -> Option<(i64, Vec<u8>)> {
    let id = i64::from_le_bytes(body.get(20..28)?.try_into().ok()?);
    let cookie = body.get(28..92)?;
    let end = cookie.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Some((id, cookie[..end].to_vec()))
}

/// A stable fake MAC for session `index`.
pub fn mac(index: u64) -> [u8; 8] {
    let mut m = (index ^ 0x00c5_0c4e_7000_0000).to_be_bytes();
    m[0] = 0x02;
    m
}

/// The sid of a session as edge-proto's type.
pub fn sid(bytes: [u8; 16]) -> Sid {
    Sid(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::device::{Request, register_body, status_body, write_reply};

    #[test]
    fn requests_parse_with_the_device_codec() {
        let mut out = Vec::new();
        new_session(&mut out, 7, mac(7));
        assert!(matches!(
            Request::parse_datagram(&out),
            Ok((_, Request::NewSession { .. }))
        ));
        let sid = [9u8; 16];
        register(&mut out, 7, 1, &sid, mac(7));
        let (_, r) = Request::parse_datagram(&out).unwrap();
        assert!(matches!(r, Request::Register(reg) if reg.name == b"loadgen" && reg.mac == mac(7)));
        login(&mut out, 7, 2, &sid, mac(7), b"-5|token");
        let (_, r) = Request::parse_datagram(&out).unwrap();
        assert!(matches!(r, Request::Login { cookie, .. } if cookie == b"-5|token"));
        heartbeat(&mut out, 7, 3, &sid, -5);
        let (p, r) = Request::parse_datagram(&out).unwrap();
        assert_eq!(p.frame().seq, 3);
        assert!(matches!(
            r,
            Request::Heartbeat {
                device_id: Some(-5),
                ..
            }
        ));
    }

    #[test]
    fn replies_round_trip() {
        let mut req = Vec::new();
        let sid = [3u8; 16];
        heartbeat(&mut req, 42, 5, &sid, -1);
        let mut reply = Vec::new();
        write_reply(&mut reply, &req, &status_body(0, &Sid(sid))).unwrap();
        let r = parse_reply(&reply).unwrap();
        assert_eq!((r.index, r.msg_id, r.status, r.sid), (42, 0xE5, 0, sid));
        reply.clear();
        write_reply(
            &mut reply,
            &req,
            &register_body(0, &Sid(sid), -77, b"-77|token"),
        )
        .unwrap();
        let r = parse_reply(&reply).unwrap();
        assert_eq!(register_result(&r.body), Some((-77, b"-77|token".to_vec())));
        assert_eq!(parse_reply(&[0u8; 10]), None);
    }

    #[test]
    fn forward_packets_carry_the_stamp() {
        let mut f = Vec::new();
        forward(&mut f, 4, &[1; 16], -3, 0, 9, 1234, 0);
        let p = edge_proto::frame::ForwardPacket::parse(&f).unwrap();
        assert_eq!(
            (p.outer().dst, p.outer().src, p.sid_slot()),
            (0, -3, &[1; 16])
        );
        assert_eq!(crate::msg::parse_at(&f, FORWARD_BODY), Some((1234, 9)));
    }
}
