//! Property tests of `frame`, `status` and `id`: round trips, and for every decoder
//! 100 000 arbitrary or mutated-golden inputs checked against an independent oracle
//! (not just "no panic").

mod common;

use common::reencode;
mod props_support;

use edge_proto::crc::crc8;
use edge_proto::frame::{
    DataHeader, DirectSpec, FrameHeader, Opcode, Packet, PacketError, patch_for_device,
    verify_direct, write_direct,
};
use edge_proto::id::{IdKind, base_user, device_destinations, expand, kind, phone_destinations};
use edge_proto::status::{StatusBody, StatusError};
use props_support::{DECODER_CASES, ROUND_TRIP_CASES, data_offset, packet_bytes};
use proptest::collection::vec;
use proptest::prelude::*;

fn le16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

/// Independent statement of docs/protocol.md §5.1 steps 1–4 (plus opcode 2).
fn direct_is_valid(buf: &[u8]) -> bool {
    buf.len() >= 36
        && buf[0] & 7 == 2
        && buf[32] == crc8(&buf[..32])
        && usize::from(le16(buf, 30)) == buf.len() - 36
        && buf[33] == crc8(&buf[34..])
}

fn frame_header() -> impl Strategy<Value = FrameHeader> {
    (any::<(u8, u8, u16, u32)>(), any::<(i64, i64)>()).prop_map(
        |((byte0, reserved, seq, timestamp), (dst, src))| FrameHeader {
            byte0,
            reserved,
            seq,
            timestamp,
            dst,
            src,
        },
    )
}

fn data_header() -> impl Strategy<Value = DataHeader> {
    any::<(u8, u8, u16, u16, u16, u8, u8, u16)>().prop_map(|t| DataHeader {
        flags: t.0,
        data_seq: t.1,
        device_type: t.2,
        msg_id: t.3,
        body_len: t.4,
        header_check: t.5,
        body_check: t.6,
        reserved: t.7,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(DECODER_CASES))]

    #[test]
    fn packet_parse_is_exact(buf in packet_bytes()) {
        match Packet::parse(&buf) {
            Ok(packet) => {
                prop_assert_eq!(reencode(&packet), buf.clone());
                let (op, min) = match packet { Packet::Direct(_) => (2, 36), Packet::Forward(_) => (3, 76) };
                prop_assert_eq!(buf[0] & 7, op);
                prop_assert!(buf.len() >= min);
                prop_assert_eq!(packet.msg_id(), le16(&buf, data_offset(&buf) + 4));
                prop_assert_eq!(packet.frame().dst, i64::from_le_bytes(buf[8..16].try_into().unwrap()));
            }
            Err(PacketError::TooShort { need, got }) => {
                prop_assert_eq!(got, buf.len());
                prop_assert!(got < need && [24, 36, 76].contains(&need));
            }
            Err(PacketError::BadOpcode(op)) => {
                prop_assert!(buf.len() >= 24 && op == buf[0] & 7 && op != 2 && op != 3);
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn verify_direct_matches_the_oracle(buf in packet_bytes()) {
        let got = verify_direct(&buf);
        prop_assert_eq!(got.is_ok(), direct_is_valid(&buf), "{:?}", got);
        if let Ok(p) = got {
            prop_assert_eq!(p.data().header_check, crc8(&buf[..32]));
            prop_assert_eq!(usize::from(p.data().body_len), p.body().len());
            prop_assert_eq!(p.body(), &buf[36..]);
        } else if let Err(e) = got {
            let _ = e.to_string();
        }
    }

    #[test]
    fn frame_header_decode(buf in packet_bytes()) {
        match FrameHeader::decode(&buf) {
            Ok(h) => {
                let mut out = [0u8; 24];
                h.encode(&mut out);
                prop_assert_eq!(&out[..], &buf[..24]);
                prop_assert_eq!(h.opcode().as_u8(), buf[0] & 7);
            }
            Err(e) => prop_assert_eq!(e, PacketError::TooShort { need: 24, got: buf.len() }),
        }
    }

    #[test]
    fn data_header_decode(buf in packet_bytes()) {
        match DataHeader::decode(&buf) {
            Ok(h) => {
                let mut out = [0u8; 12];
                h.encode(&mut out);
                prop_assert_eq!(&out[..], &buf[..12]);
            }
            Err(e) => prop_assert_eq!(e, PacketError::TooShort { need: 12, got: buf.len() }),
        }
    }

    #[test]
    fn status_body_decode(buf in prop_oneof![
        vec(any::<u8>(), 0..40),
        packet_bytes().prop_map(|b| b.get(36..).unwrap_or_default().to_vec()),
        (any::<u8>(), any::<i64>(), vec(any::<u8>(), 0..30), -2i16..3).prop_map(|(k, id, p, d)| {
            let mut out = vec![k];
            out.extend_from_slice(&id.to_le_bytes());
            out.push((p.len() as i16 + d).clamp(0, 255) as u8);
            out.extend_from_slice(&p);
            out
        }),
    ]) {
        match StatusBody::decode(&buf) {
            Ok(s) => {
                let mut out = Vec::new();
                s.write_to(&mut out).unwrap();
                prop_assert_eq!(out, buf.clone());
            }
            Err(StatusError::TooShort { need: 10, got }) => prop_assert!(got == buf.len() && got < 10),
            Err(StatusError::PayloadLength { declared, actual }) => {
                prop_assert!(buf.len() >= 10 && declared == buf[9] && actual == buf.len() - 10);
                prop_assert_ne!(usize::from(declared), actual);
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn patch_for_device_patches_only_what_it_must(
        buf in packet_bytes(), seq in any::<u16>(), sid in any::<[u8; 16]>(),
    ) {
        let mut patched = buf.clone();
        let got = patch_for_device(&mut patched, seq, &sid);
        if buf.len() < 40 {
            prop_assert_eq!(got, Err(PacketError::TooShort { need: 40, got: buf.len() }));
            prop_assert_eq!(patched, buf);
            return Ok(());
        }
        prop_assert_eq!(got, Ok(()));
        prop_assert_eq!(le16(&patched, 2), seq);
        prop_assert_eq!(&patched[24..40], &sid[..]);
        let forward = buf.len() >= 76 && buf[0] & 7 == 3;
        for i in (0..buf.len()).filter(|i| !(2..4).contains(i) && !(24..40).contains(i)) {
            if i != 72 || !forward {
                prop_assert_eq!(patched[i], buf[i], "byte {}", i);
            }
        }
        if forward {
            // The header check's error syndrome is preserved: valid stays valid.
            let syndrome = |b: &[u8]| b[72] ^ crc8(&b[..72]);
            prop_assert_eq!(syndrome(&patched), syndrome(&buf));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ROUND_TRIP_CASES))]

    #[test]
    fn headers_round_trip(f in frame_header(), d in data_header()) {
        let mut out = Vec::new();
        f.write_to(&mut out);
        d.write_to(&mut out);
        prop_assert_eq!(out.len(), 36);
        prop_assert_eq!(FrameHeader::decode(&out), Ok(f));
        prop_assert_eq!(DataHeader::decode(&out[24..]), Ok(d));
        prop_assert_eq!(f.opcode(), Opcode::from_byte0(f.byte0));
    }

    #[test]
    fn write_direct_verifies(
        seq in any::<u16>(), timestamp in any::<u32>(), dst in any::<i64>(), src in any::<i64>(),
        msg_id in any::<u16>(), body in vec(any::<u8>(), 0..300), prefix in vec(any::<u8>(), 0..4),
    ) {
        let mut out = prefix.clone();
        write_direct(&mut out, &DirectSpec { seq, timestamp, dst, src, msg_id, body: &body }).unwrap();
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        let p = verify_direct(&out[prefix.len()..]).unwrap();
        let f = *p.frame();
        prop_assert_eq!((f.byte0, f.reserved, f.seq, f.timestamp, f.dst, f.src), (0x82, 0, seq, timestamp, dst, src));
        let d = *p.data();
        prop_assert_eq!((d.flags, d.data_seq, d.device_type, d.msg_id, d.reserved), (0x80, 0, 0, msg_id, 0));
        prop_assert_eq!(p.body(), &body[..]);
    }

    #[test]
    fn status_body_round_trips(kind in any::<u8>(), id in any::<i64>(), payload in vec(any::<u8>(), 0..300)) {
        let status = StatusBody { kind, id, payload: &payload };
        let mut out = Vec::new();
        match status.write_to(&mut out) {
            Ok(()) => {
                prop_assert!(payload.len() <= 255);
                prop_assert_eq!(out.len(), status.encoded_len());
                prop_assert_eq!(StatusBody::decode(&out), Ok(status));
            }
            Err(e) => {
                prop_assert_eq!(e, StatusError::PayloadTooLong { len: payload.len() });
                prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn destinations_stay_in_bounds(
        dst in prop_oneof![any::<i64>(), -40i64..80, Just(i64::MIN), Just(i64::MAX), Just(i64::MAX - 15)],
        bound in vec(prop_oneof![any::<i64>(), -40i64..80, Just(i64::MAX - 15)], 0..5),
    ) {
        let mut out = Vec::new();
        let n = device_destinations(dst, &bound, &mut out);
        prop_assert_eq!(n, out.len());
        for &id in &out {
            let mobile = matches!(kind(id), IdKind::Mobile { .. });
            prop_assert!(mobile);
            prop_assert!(bound.contains(&base_user(id).unwrap()));
            prop_assert!(dst == 0 || base_user(id) == base_user(dst));
        }
        out.clear();
        let n = phone_destinations(dst, &bound, &mut out);
        prop_assert_eq!(n, out.len());
        prop_assert!(out.iter().all(|id| bound.contains(id) && (dst == 0 || *id == dst)));
        let expanded: Vec<i64> = expand(dst).collect();
        prop_assert!(expanded.len() <= 15);
    }
}
