//! Golden tests of `frame`, `status`, `crc` and `id` against bytes captured from the
//! original system (`data/vectors.json`): packet views, checks, server-built status
//! messages, delivery patching and destination rules.

mod common;

use common::reencode;

use edge_proto::crc::crc8;
use edge_proto::frame::{
    DataHeader, FrameHeader, Opcode, Packet, PacketError, patch_for_device, verify_direct,
    verify_forward,
};
use edge_proto::id::{device_destinations, phone_destinations};
use edge_proto::status::{
    STATUS_MSG_ID, StatusBody, StatusType, empty_status_body, write_status_message,
};

const SID_HEX: [u8; 16] = [
    0x5b, 0xc6, 0x71, 0x07, 0x5b, 0x5d, 0x4e, 0x88, 0x7e, 0x06, 0x54, 0x0b, 0x0b, 0x48, 0x70, 0x95,
];

/// Both captured runs of a vector (run 2 only where it differs).
fn runs(name: &str) -> Vec<Vec<u8>> {
    let v = common::all()
        .iter()
        .find(|v| v.name == name)
        .expect("vector exists");
    std::iter::once(v.bytes.clone())
        .chain(v.other_run.clone())
        .collect()
}

#[test]
fn every_udp_packet_parses_and_reencodes_exactly() {
    let mut seen = 0;
    for v in common::all()
        .iter()
        .filter(|v| v.transport == "udp" && !v.bytes.is_empty())
    {
        for bytes in std::iter::once(&v.bytes).chain(v.other_run.as_ref()) {
            let packet = Packet::parse(bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(reencode(&packet), *bytes, "{}", v.name);
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} udp packets");
}

#[test]
fn device_requests_and_replies_verify() {
    let names = [
        "udp_E0_token_request",
        "udp_E0_token_reply",
        "udp_E1_register_request",
        "udp_E1_register_reply",
        "udp_E2_login_request",
        "udp_E2_login_reply",
        "udp_E3_rename_request",
        "udp_E3_rename_reply",
        "udp_E5_heartbeat_request",
        "udp_E5_heartbeat_reply",
        "udp_stale_sequence_request",
    ];
    for name in names {
        for bytes in runs(name) {
            let packet = verify_direct(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(packet.data().header_check, crc8(&bytes[..32]), "{name}");
            assert_eq!(
                usize::from(packet.data().body_len),
                bytes.len() - 36,
                "{name}"
            );
        }
    }
}

#[test]
fn e0_request_fields() {
    let bytes = common::bytes("udp_E0_token_request");
    let frame = FrameHeader::decode(bytes).unwrap();
    assert_eq!(
        (frame.opcode(), frame.seq, frame.timestamp),
        (Opcode::Direct, 1, 1_795_522_894)
    );
    assert_eq!((frame.dst, frame.src), (0, 0));
    let data = DataHeader::decode(&bytes[24..]).unwrap();
    assert_eq!((data.flags, data.msg_id, data.body_len), (0, 0xE0, 24));
    assert_eq!((data.header_check, data.body_check), (0x35, 0x46));
}

#[test]
fn corrupted_request_is_rejected_in_spec_order() {
    let good = common::bytes("udp_E5_heartbeat_request").to_vec();
    let check = |bytes: &[u8], expect: PacketError| {
        assert_eq!(verify_direct(bytes).map(|_| ()), Err(expect));
    };
    check(&good[..35], PacketError::TooShort { need: 36, got: 35 });
    let mut bad = good.clone();
    bad[0] = 0x03;
    check(&bad, PacketError::BadOpcode(3));
    let mut bad = good.clone();
    bad[32] ^= 0xff;
    check(
        &bad,
        PacketError::HeaderCheck {
            expected: good[32],
            got: good[32] ^ 0xff,
        },
    );
    let mut bad = good.clone();
    bad[40] ^= 1;
    check(
        &bad,
        PacketError::BodyCheck {
            expected: crc8(&bad[34..]),
            got: good[33],
        },
    );
    // Declared length beyond the datagram: an error, not the original's crash.
    let mut bad = good.clone();
    bad[30] = 0xff;
    bad[32] = crc8(&bad[..32]);
    check(
        &bad,
        PacketError::BodyLength {
            declared: 0xff,
            actual: 24,
        },
    );
    // Trailing garbage with a body check that matches the declared part.
    let mut long = good.clone();
    long.push(0);
    check(
        &long,
        PacketError::BodyLength {
            declared: 24,
            actual: 25,
        },
    );
}

#[test]
fn phone_to_device_relay_is_patched_with_a_fresh_header_check() {
    let sent = common::ws_payload(common::bytes("relay_phone_to_device_sent_by_phone"));
    let received = common::bytes("relay_phone_to_device_received_by_device");
    let Packet::Forward(fwd) = Packet::parse(&sent).unwrap() else {
        panic!("not forward")
    };
    assert_eq!(
        (fwd.outer().dst, fwd.outer().src, fwd.msg_id()),
        (-1, 17, 0x101)
    );
    assert_eq!(fwd.sid_slot(), &[0; 16]);
    assert_eq!(fwd.inner().opcode(), Opcode::Direct);
    assert_eq!(fwd.body(), b"phone->device golden");
    verify_forward(&sent).expect("the phone sealed its packet");
    let mut bounds = Vec::new();
    phone_destinations(fwd.outer().dst, &[-1], &mut bounds);
    assert_eq!(bounds, vec![-1]);

    let mut patched = sent.clone();
    patch_for_device(&mut patched, 1, &SID_HEX).unwrap();
    assert_eq!(patched.len(), received.len());
    for (i, (ours, theirs)) in patched.iter().zip(received).enumerate() {
        if i != 72 {
            assert_eq!(ours, theirs, "byte {i}");
        }
    }
    // The original left 0x15 (stale); ours is the CRC of the patched header.
    assert_eq!(received[72], 0x15);
    assert_eq!(patched[72], crc8(&received[..72]));
    assert_eq!(patched[72], 0xca);
    verify_forward(&patched).expect("patched packet verifies");
}

#[test]
fn device_to_phone_relay_routes_to_the_users_phones() {
    for bytes in runs("relay_device_to_phone_sent_by_device") {
        let Packet::Forward(fwd) = Packet::parse(&bytes).unwrap() else {
            panic!("not forward")
        };
        assert_eq!(
            (fwd.outer().dst, fwd.outer().src, fwd.outer().seq),
            (16, -1, 6)
        );
        verify_forward(&bytes).expect("device sealed its packet");
        let mut out = Vec::new();
        assert_eq!(device_destinations(fwd.outer().dst, &[16], &mut out), 15);
        assert_eq!(out, (17..=31).collect::<Vec<i64>>());
    }
    assert_eq!(
        runs("relay_device_to_phone_sent_by_device")[0][24..40],
        SID_HEX
    );
}

fn check_status_message(name: &str, kind: StatusType, id: i64) {
    let v = common::all().iter().find(|v| v.name == name).unwrap();
    for frame in std::iter::once(&v.bytes).chain(v.other_run.as_ref()) {
        let payload = common::ws_payload(frame);
        let timestamp = u32::from_le_bytes(payload[4..8].try_into().unwrap());
        let mut built = Vec::new();
        write_status_message(&mut built, timestamp, 17, 0, kind, id);
        assert_eq!(built, payload, "{name}");

        let packet = verify_direct(&payload).unwrap();
        assert_eq!(packet.msg_id(), STATUS_MSG_ID);
        let status = StatusBody::decode(packet.body()).unwrap();
        assert_eq!(
            (status.status_type(), status.id, status.payload),
            (Some(kind), id, &[][..])
        );
    }
}

#[test]
fn device_online_status_message_is_byte_exact() {
    check_status_message(
        "relay_device_online_status_to_phone",
        StatusType::DeviceOnline,
        -1,
    );
}

#[test]
fn pushed_status_message_is_byte_exact() {
    check_status_message(
        "push_0x36_received_by_phone",
        StatusType::Invited,
        987_654_321,
    );
}

#[test]
fn published_status_bodies_match() {
    let cases = [
        (
            "redis_device_online_published_by_udp_comet",
            StatusType::DeviceOnline,
            -1,
        ),
        ("redis_push_0x36_publish", StatusType::Invited, 987_654_321),
    ];
    for (name, kind, id) in cases {
        let resp = common::bytes(name);
        let body = empty_status_body(kind, id);
        let mut needle = b"16|".to_vec();
        needle.extend_from_slice(&body);
        assert!(resp.windows(needle.len()).any(|w| w == needle), "{name}");
    }
}
