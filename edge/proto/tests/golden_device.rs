//! Golden tests of `device` against the captured UDP exchanges: every request parses to the
//! expected [`Request`], and every reply built from its request equals the captured reply
//! byte for byte, for both captured runs (their sids and timestamps differ).

mod common;

use edge_proto::device::{
    Command, HEARTBEAT_INTERVAL_SECS, Register, Request, STATUS_OK, Sid, login_body,
    new_session_body, parse_cookie_device_id, register_body, rename_body, seq_accepts, status_body,
    write_reply,
};

const MAC: [u8; 8] = [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x00, 0x01];
const SN: [u8; 16] = [
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const COOKIE: &[u8] = b"-1|mockcookie";

/// (request, reply) pairs of both runs of the exchange `name` (`udp_<name>_request/reply`).
fn exchanges(request: &str, reply: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let find = |name: &str| common::all().iter().find(|v| v.name == name).unwrap();
    let (req, rep) = (find(request), find(reply));
    let mut out = vec![(req.bytes.clone(), rep.bytes.clone())];
    if let (Some(a), Some(b)) = (&req.other_run, &rep.other_run) {
        out.push((a.clone(), b.clone()));
    }
    out
}

/// The sid a reply carries at body offset 4 (what the shell would take from its session).
fn reply_sid(reply: &[u8]) -> Sid {
    Sid(reply[40..56].try_into().unwrap())
}

fn reply(request: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_reply(&mut out, request, body).unwrap();
    // The frame header is echoed unchanged for every command (see `write_reply`).
    assert_eq!(out[..24], request[..24]);
    out
}

#[test]
fn e0_new_session() {
    for (req, rep) in exchanges("udp_E0_token_request", "udp_E0_token_reply") {
        let (packet, request) = Request::parse_datagram(&req).unwrap();
        assert_eq!(request, Request::NewSession { mac: MAC, sn: SN });
        assert_eq!(request.command(), Command::NewSession);
        assert_eq!(packet.seq(), 1);
        let sid = reply_sid(&rep);
        assert_eq!(reply(&req, &new_session_body(STATUS_OK, &sid)), rep);
    }
    let sid = reply_sid(common::bytes("udp_E0_token_reply"));
    assert_eq!(sid.to_string(), "5bc67107-5b5d-4e88-7e06-540b0b487095");
}

#[test]
fn e1_register() {
    for (req, rep) in exchanges("udp_E1_register_request", "udp_E1_register_reply") {
        let (_, request) = Request::parse_datagram(&req).unwrap();
        let Request::Register(register) = request else {
            panic!("not register: {request:?}")
        };
        let sid = reply_sid(&rep);
        let expect = Register {
            sid,
            device_type: 1,
            comm_type: 1,
            production_time: 1_700_000_000,
            mac: MAC,
            sn: SN,
            signature: &req[84..344],
            name: b"capture-socket",
        };
        assert_eq!(register, expect);
        let device_id = parse_cookie_device_id(COOKIE).unwrap();
        assert_eq!(device_id, -1);
        let body = register_body(STATUS_OK, &sid, device_id, COOKIE);
        assert_eq!(reply(&req, &body), rep);
    }
}

#[test]
fn e2_login() {
    for (req, rep) in exchanges("udp_E2_login_request", "udp_E2_login_reply") {
        let (_, request) = Request::parse_datagram(&req).unwrap();
        let sid = reply_sid(&rep);
        assert_eq!(
            request,
            Request::Login {
                sid,
                mac: MAC,
                cookie: COOKIE
            }
        );
        assert_eq!(request.sid(), Some(&sid));
        let body = login_body(STATUS_OK, &sid, HEARTBEAT_INTERVAL_SECS);
        assert_eq!(reply(&req, &body), rep);
    }
}

#[test]
fn e3_rename() {
    for (req, rep) in exchanges("udp_E3_rename_request", "udp_E3_rename_reply") {
        let (_, request) = Request::parse_datagram(&req).unwrap();
        let sid = reply_sid(&rep);
        assert_eq!(
            request,
            Request::Rename {
                sid,
                mac: MAC,
                name: b"renamed"
            }
        );
        assert_eq!(reply(&req, &rename_body(STATUS_OK, &sid, &MAC)), rep);
    }
}

#[test]
fn e5_heartbeat() {
    for (req, rep) in exchanges("udp_E5_heartbeat_request", "udp_E5_heartbeat_reply") {
        let (packet, request) = Request::parse_datagram(&req).unwrap();
        let sid = reply_sid(&rep);
        assert_eq!(
            request,
            Request::Heartbeat {
                sid,
                device_id: Some(-1)
            }
        );
        assert_eq!(packet.seq(), 5);
        assert_eq!(reply(&req, &status_body(STATUS_OK, &sid)), rep);
    }
}

#[test]
fn stale_sequence_is_rejected() {
    // The capture's session (`redis_session_value`) has Ridx 5 after the heartbeat with
    // sequence 5; the stale request re-uses 5 and was dropped without reply.
    let (packet, request) =
        Request::parse_datagram(common::bytes("udp_stale_sequence_request")).unwrap();
    assert_eq!(request.command(), Command::Heartbeat);
    let session = String::from_utf8_lossy(common::bytes("redis_session_value")).into_owned();
    assert!(session.contains("\"Ridx\":5"), "{session}");
    assert!(!seq_accepts(5, packet.seq()));
    assert!(common::bytes("udp_stale_sequence_reply").is_empty());
    // The sequence of the exchange itself: 1..=5, each accepted after the previous one.
    for seq in 1..=5u16 {
        assert!(seq_accepts(seq - 1, seq));
    }
}

#[test]
fn sid_text_is_the_redis_key() {
    let sid = reply_sid(common::bytes("udp_E0_token_reply"));
    let get = common::bytes("redis_session_get");
    let key = format!("sess:dev:{}", sid.text().as_str());
    assert!(get.windows(key.len()).any(|w| w == key.as_bytes()));
    let value = common::bytes("redis_session_sid_value");
    let text = std::str::from_utf8(&value[5..41]).unwrap();
    assert_eq!(text.parse::<Sid>(), Ok(sid));
}
