//! Property tests of `device`: the request parser and the sid text parser each get 100 000
//! arbitrary or mutated-golden inputs checked against an independent statement of docs/protocol.md §5.3;
//! replies built by the body builders always verify.

mod common;
mod props_support;

use edge_proto::device::{
    Command, DeviceError, Request, Sid, SidParseError, login_body, new_session_body, register_body,
    rename_body, status_body, write_reply,
};
use edge_proto::frame::{DirectSpec, verify_direct, write_direct};
use props_support::{DECODER_CASES, ROUND_TRIP_CASES, packet_bytes};
use proptest::collection::vec;
use proptest::prelude::*;

const COMMANDS: [u16; 9] = [0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0x30, 0x31];

/// A verified direct packet with a device command and a body whose length fields are
/// often small enough to fit.
fn device_packet() -> impl Strategy<Value = Vec<u8>> {
    let msg_id = prop_oneof![4 => proptest::sample::select(&COMMANDS[..]), 1 => any::<u16>()];
    let body = prop_oneof![
        vec(any::<u8>(), 0..40),
        vec(any::<u8>(), 80..96),
        vec(any::<u8>(), 300..340)
    ];
    (msg_id, body, any::<Option<u8>>(), any::<Option<u8>>()).prop_map(
        |(msg_id, mut body, reg, ren)| {
            if let (Some(n), Some(len)) = (reg, body.get_mut(308..310)) {
                len.copy_from_slice(&u16::from(n % 40).to_le_bytes());
            }
            if let (Some(n), Some(len)) = (ren, body.get_mut(24)) {
                *len = n % 24;
            }
            let mut out = Vec::new();
            write_direct(
                &mut out,
                &DirectSpec {
                    seq: 1,
                    timestamp: 2,
                    dst: 0,
                    src: 0,
                    msg_id,
                    body: &body,
                },
            )
            .unwrap();
            out
        },
    )
}

/// What docs/protocol.md §5.3 says about a body: `Ok` if the command's layout fits it.
fn body_fits(msg_id: u16, body: &[u8]) -> bool {
    let n = body.len();
    match msg_id {
        0xE0 => n == 24,
        0xE1 => n >= 310 && 310 + usize::from(u16::from_le_bytes([body[308], body[309]])) <= n,
        0xE2 => n == 88,
        0xE3 => n >= 25 && 25 + usize::from(body[24]) <= n,
        0xE4..=0xE6 | 0x30 | 0x31 => n >= 16,
        _ => true,
    }
}

fn sid_of(body: &[u8]) -> Sid {
    Sid(body[..16].try_into().unwrap())
}

fn check_fields(request: &Request<'_>, body: &[u8]) -> Result<(), TestCaseError> {
    match *request {
        Request::NewSession { mac, sn } => {
            prop_assert_eq!(&mac[..], &body[..8]);
            prop_assert_eq!(&sn[..], &body[8..24]);
        }
        Request::Register(r) => {
            prop_assert_eq!(r.sid, sid_of(body));
            prop_assert_eq!(r.device_type, u16::from_le_bytes([body[16], body[17]]));
            prop_assert_eq!(&r.mac[..], &body[24..32]);
            prop_assert_eq!(r.signature, &body[48..308]);
            let len = usize::from(u16::from_le_bytes([body[308], body[309]]));
            prop_assert_eq!(r.name, &body[310..310 + len]);
        }
        Request::Login { sid, mac, cookie } => {
            prop_assert_eq!(sid, sid_of(body));
            prop_assert_eq!(&mac[..], &body[16..24]);
            prop_assert_eq!(cookie, &body[24..24 + cookie.len()]);
            prop_assert!(body[24 + cookie.len()..].iter().all(|&b| b == 0));
            prop_assert!(cookie.last() != Some(&0));
        }
        Request::Rename { sid, mac, name } => {
            prop_assert_eq!(sid, sid_of(body));
            prop_assert_eq!(&mac[..], &body[16..24]);
            prop_assert_eq!(name, &body[25..25 + usize::from(body[24])]);
        }
        Request::Heartbeat { sid, device_id } => {
            prop_assert_eq!(sid, sid_of(body));
            let expect = body
                .get(16..24)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
            prop_assert_eq!(device_id, expect);
        }
        Request::Bind { sid } | Request::SubDeviceOffline { sid } => {
            prop_assert_eq!(sid, sid_of(body))
        }
        Request::Upload { msg_id, sid } => {
            prop_assert!(msg_id == 0x30 || msg_id == 0x31);
            prop_assert_eq!(sid, sid_of(body));
        }
        Request::Unknown { msg_id, sid } => {
            let unknown = matches!(Command::from_u16(msg_id), Command::Unknown(_));
            prop_assert!(unknown);
            prop_assert_eq!(sid, body.get(..16).map(sid_of));
        }
    }
    Ok(())
}

fn sid_text() -> impl Strategy<Value = String> {
    let canonical = any::<[u8; 16]>().prop_map(|b| Sid(b).to_string());
    let edited = (
        canonical.clone(),
        any::<proptest::sample::Index>(),
        any::<char>(),
        0..4u8,
    )
        .prop_map(|(text, at, c, op)| {
            let mut chars: Vec<char> = text.chars().collect();
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => chars[i] = chars[i].to_ascii_uppercase(),
                2 => drop(chars.remove(i)),
                _ => chars.insert(i, c),
            }
            chars.into_iter().collect()
        });
    prop_oneof![canonical, edited, "\\PC{0,40}", "[0-9a-fA-F-]{34,38}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(DECODER_CASES))]

    #[test]
    fn request_parse_matches_the_command_table(buf in prop_oneof![packet_bytes(), device_packet()]) {
        let got = Request::parse_datagram(&buf);
        let verified = verify_direct(&buf);
        match (&got, &verified) {
            (Err(DeviceError::Packet(e)), Err(v)) => prop_assert_eq!(e, v),
            (_, Err(v)) => prop_assert!(false, "packet error {v} not surfaced: {got:?}"),
            (Ok((p, request)), Ok(_)) => {
                prop_assert!(body_fits(p.msg_id(), p.body()));
                let cmd = request.command();
                prop_assert!(cmd.as_u16() == p.msg_id());
                check_fields(request, p.body())?;
            }
            (Err(e), Ok(p)) => {
                let _ = e.to_string();
                prop_assert!(!body_fits(p.msg_id(), p.body()), "{e}");
            }
        }
    }

    #[test]
    fn sid_text_parse(text in sid_text()) {
        match Sid::parse_text(&text) {
            Ok(sid) => prop_assert_eq!(sid.to_string(), text.to_ascii_lowercase()),
            Err(SidParseError::Length(n)) => prop_assert!(n == text.len() && n != 36),
            Err(SidParseError::Invalid(at)) => {
                prop_assert_eq!(text.len(), 36);
                let c = text.as_bytes()[at];
                let wrong = if [8, 13, 18, 23].contains(&at) { c != b'-' } else { !c.is_ascii_hexdigit() };
                prop_assert!(wrong);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ROUND_TRIP_CASES))]

    #[test]
    fn sid_bytes_round_trip(bytes in any::<[u8; 16]>()) {
        let sid = Sid(bytes);
        prop_assert_eq!(sid.to_string().parse::<Sid>(), Ok(sid));
        let text = sid.text();
        prop_assert_eq!(text.as_str(), sid.to_string());
    }

    #[test]
    fn replies_verify(
        request in device_packet(), flags in any::<u8>(), status in any::<i32>(),
        sid in any::<[u8; 16]>(), id in any::<i64>(), cookie in vec(any::<u8>(), 0..80),
        which in 0..5u8,
    ) {
        let mut request = request;
        request[24] = flags;
        let sid = Sid(sid);
        let body: Vec<u8> = match which {
            0 => new_session_body(status, &sid).to_vec(),
            1 => register_body(status, &sid, id, &cookie).to_vec(),
            2 => login_body(status, &sid, 20).to_vec(),
            3 => rename_body(status, &sid, &[7; 8]).to_vec(),
            _ => status_body(status, &sid).to_vec(),
        };
        let mut out = Vec::new();
        write_reply(&mut out, &request, &body).unwrap();
        let reply = verify_direct(&out).unwrap();
        prop_assert_eq!(&out[..24], &request[..24]);
        prop_assert_eq!(reply.data().flags, flags | 0xc0);
        prop_assert_eq!(reply.msg_id(), u16::from_le_bytes([request[28], request[29]]));
        prop_assert_eq!(reply.body(), &body[..]);
        prop_assert_eq!(&body[..4], &status.to_le_bytes());
        prop_assert_eq!(&body[4..20], sid.as_bytes());
    }
}
