//! Unit tests of `device` (kept beside it so `device.rs` stays short).

use super::*;
use crate::frame::{DirectSpec, write_direct};

const SID: Sid = Sid([
    0x5b, 0xc6, 0x71, 0x07, 0x5b, 0x5d, 0x4e, 0x88, 0x7e, 0x06, 0x54, 0x0b, 0x0b, 0x48, 0x70, 0x95,
]);

fn packet(msg_id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let spec = DirectSpec {
        seq: 1,
        timestamp: 2,
        dst: 0,
        src: 0,
        msg_id,
        body,
    };
    write_direct(&mut out, &spec).unwrap();
    out
}

fn check(msg_id: u16, body: &[u8], expect: Result<Request<'_>, DeviceError>) {
    let bytes = packet(msg_id, body);
    let got = Request::parse_datagram(&bytes).map(|(_, r)| r);
    // Compare through Debug: `expect` borrows `body`, `got` borrows `bytes`.
    assert_eq!(
        format!("{got:?}"),
        format!("{expect:?}"),
        "msg {msg_id:#x} body {}",
        body.len()
    );
}

fn sid_then(rest: &[u8]) -> Vec<u8> {
    let mut body = SID.0.to_vec();
    body.extend_from_slice(rest);
    body
}

#[test]
fn sid_text_round_trip() {
    let text = "5bc67107-5b5d-4e88-7e06-540b0b487095";
    assert_eq!(SID.to_string(), text);
    assert_eq!(SID.text().as_str(), text);
    assert_eq!(text.parse::<Sid>(), Ok(SID));
    assert_eq!(Sid::parse_text(&text.to_uppercase()), Ok(SID));
    assert_eq!(format!("{SID:?}"), format!("Sid({text})"));
}

#[test]
fn sid_text_errors() {
    let check = |text: &str, expect: SidParseError| assert_eq!(Sid::parse_text(text), Err(expect));
    check("", SidParseError::Length(0));
    check(
        "5bc671075b5d4e887e06540b0b487095",
        SidParseError::Length(32),
    );
    check(
        "5bc67107-5b5d-4e88-7e06-540b0b4870951",
        SidParseError::Length(37),
    );
    check(
        "5bc67107x5b5d-4e88-7e06-540b0b487095",
        SidParseError::Invalid(8),
    );
    check(
        "5bc67107-5b5d-4e88-7e06-540b0b48709g",
        SidParseError::Invalid(35),
    );
    check(
        "-bc67107-5b5d-4e88-7e06-540b0b487095",
        SidParseError::Invalid(0),
    );
    check(
        "5bc67107-5b5d-4e88-7e06-540b0b4870é",
        SidParseError::Invalid(34),
    );
}

#[test]
fn commands_round_trip() {
    for id in 0..=u16::MAX {
        assert_eq!(Command::from_u16(id).as_u16(), id);
    }
    assert!(!Command::NewSession.needs_session());
    assert!(!Command::StateSync.needs_session());
    assert!(Command::Unknown(0x99).needs_session());
}

#[test]
fn new_session_bodies() {
    let body: Vec<u8> = (0..24).collect();
    let mac = [0, 1, 2, 3, 4, 5, 6, 7];
    let sn = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23];
    check(0xE0, &body, Ok(Request::NewSession { mac, sn }));
    let err = |got| {
        Err(DeviceError::BodyLength {
            command: 0xE0,
            expected: 24,
            got,
        })
    };
    check(0xE0, &body[..23], err(23));
    check(0xE0, &[0; 25], err(25));
    check(0xE0, &[], err(0));
}

#[test]
fn login_bodies() {
    let mut rest = vec![0xa1; 8];
    rest.extend_from_slice(b"-1|cookie");
    rest.resize(72, 0);
    let body = sid_then(&rest);
    let expect = Request::Login {
        sid: SID,
        mac: [0xa1; 8],
        cookie: b"-1|cookie",
    };
    check(0xE2, &body, Ok(expect));
    let err = |got| {
        Err(DeviceError::BodyLength {
            command: 0xE2,
            expected: 88,
            got,
        })
    };
    check(0xE2, &body[..87], err(87));
    check(0xE2, &[0; 89], err(89));
    let empty = sid_then(&[0; 72]);
    check(
        0xE2,
        &empty,
        Ok(Request::Login {
            sid: SID,
            mac: [0; 8],
            cookie: b"",
        }),
    );
}

#[test]
fn rename_bodies() {
    let mut body = sid_then(&[0xa1; 8]);
    body.push(7);
    body.extend_from_slice(b"renamed");
    check(
        0xE3,
        &body,
        Ok(Request::Rename {
            sid: SID,
            mac: [0xa1; 8],
            name: b"renamed",
        }),
    );
    let overrun = |available| {
        Err(DeviceError::NameOverrun {
            command: 0xE3,
            declared: 7,
            available,
        })
    };
    check(0xE3, &body[..31], overrun(6));
    check(0xE3, &body[..25], overrun(0));
    check(
        0xE3,
        &body[..24],
        Err(DeviceError::BodyTooShort {
            command: 0xE3,
            need: 25,
            got: 24,
        }),
    );
    body.push(b'!');
    check(
        0xE3,
        &body,
        Ok(Request::Rename {
            sid: SID,
            mac: [0xa1; 8],
            name: b"renamed",
        }),
    );
}

#[test]
fn register_bodies() {
    let mut body = sid_then(&[1, 0, 2, 0, 0, 0xf1, 0x53, 0x65]);
    body.extend_from_slice(&[0xa1; 8]);
    body.extend_from_slice(&[0x10; 16]);
    body.extend_from_slice(&[0x55; 260]);
    body.extend_from_slice(&[4, 0]);
    body.extend_from_slice(b"plug");
    let register = Register {
        sid: SID,
        device_type: 1,
        comm_type: 2,
        production_time: 0x6553_f100,
        mac: [0xa1; 8],
        sn: [0x10; 16],
        signature: &[0x55; 260],
        name: b"plug",
    };
    check(0xE1, &body, Ok(Request::Register(register)));
    let overrun = DeviceError::NameOverrun {
        command: 0xE1,
        declared: 4,
        available: 3,
    };
    check(0xE1, &body[..313], Err(overrun));
    let short = |got| {
        Err(DeviceError::BodyTooShort {
            command: 0xE1,
            need: 310,
            got,
        })
    };
    check(0xE1, &body[..309], short(309));
    check(0xE1, &[], short(0));
    body.truncate(308);
    body.extend_from_slice(&[0, 1]);
    let overrun = DeviceError::NameOverrun {
        command: 0xE1,
        declared: 256,
        available: 0,
    };
    check(0xE1, &body, Err(overrun));
}

#[test]
fn session_only_bodies() {
    let short = |command, got| {
        Err(DeviceError::BodyTooShort {
            command,
            need: 16,
            got,
        })
    };
    check(
        0xE5,
        &SID.0,
        Ok(Request::Heartbeat {
            sid: SID,
            device_id: None,
        }),
    );
    let body = sid_then(&(-1i64).to_le_bytes());
    check(
        0xE5,
        &body,
        Ok(Request::Heartbeat {
            sid: SID,
            device_id: Some(-1),
        }),
    );
    check(
        0xE5,
        &body[..20],
        Ok(Request::Heartbeat {
            sid: SID,
            device_id: None,
        }),
    );
    check(0xE5, &body[..15], short(0xE5, 15));
    check(0xE4, &SID.0, Ok(Request::Bind { sid: SID }));
    check(0xE4, &[], short(0xE4, 0));
    check(0xE6, &body, Ok(Request::SubDeviceOffline { sid: SID }));
    check(0xE6, &[1], short(0xE6, 1));
    check(
        0x30,
        &body,
        Ok(Request::Upload {
            msg_id: 0x30,
            sid: SID,
        }),
    );
    let mut long = vec![1u8; 900];
    long[..16].copy_from_slice(&SID.0);
    check(
        0x31,
        &long,
        Ok(Request::Upload {
            msg_id: 0x31,
            sid: SID,
        }),
    );
    check(0x30, &[], short(0x30, 0));
    check(0x31, &body[..15], short(0x31, 15));
    check(
        0x101,
        &[],
        Ok(Request::Unknown {
            msg_id: 0x101,
            sid: None,
        }),
    );
    check(
        0xE7,
        &body,
        Ok(Request::Unknown {
            msg_id: 0xE7,
            sid: Some(SID),
        }),
    );
}

#[test]
fn request_accessors() {
    let hb = Request::Heartbeat {
        sid: SID,
        device_id: None,
    };
    assert_eq!(hb.command(), Command::Heartbeat);
    assert_eq!(hb.sid(), Some(&SID));
    let up = Request::Upload {
        msg_id: 0x31,
        sid: SID,
    };
    assert_eq!((up.command(), up.sid()), (Command::AlarmSync, Some(&SID)));
    let unknown = Request::Unknown {
        msg_id: 0x99,
        sid: None,
    };
    assert_eq!(unknown.command(), Command::Unknown(0x99));
}

#[test]
fn packet_errors_surface() {
    let mut bytes = packet(0xE5, &SID.0);
    bytes[32] ^= 1;
    let got = Request::parse_datagram(&bytes).map(|(_, r)| r);
    assert!(matches!(
        got,
        Err(DeviceError::Packet(PacketError::HeaderCheck { .. }))
    ));
}

#[test]
fn upload_acks_are_recognised() {
    let mut up = packet(0x30, &SID.0);
    assert!(!is_upload_ack(&up), "a request is not an ACK");
    up[crate::frame::DIRECT_DATA_OFFSET] |= crate::frame::DATA_ACK;
    assert!(is_upload_ack(&up));
    let mut other = packet(0xE5, &SID.0);
    other[crate::frame::DIRECT_DATA_OFFSET] |= crate::frame::DATA_ACK;
    assert!(!is_upload_ack(&other), "only 0x30 and 0x31");
    assert!(!is_upload_ack(&up[..35]), "too short");
    up[0] = (up[0] & !7) | 3;
    assert!(!is_upload_ack(&up), "a forward packet");
}
