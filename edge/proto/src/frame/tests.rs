//! Unit tests of `frame` (kept beside it so `frame.rs` stays short).

use super::*;

#[test]
fn offsets_match_the_spec() {
    let check = |got: usize, expect: usize| assert_eq!(got, expect);
    check(DIRECT_MIN_LEN, 36);
    check(FORWARD_MIN_LEN, 76);
    check(DIRECT_MSG_ID_OFFSET, 28);
    check(FORWARD_MSG_ID_OFFSET, 68);
    check(DIRECT_DATA_OFFSET + HEADER_CHECK_IN_DATA, 32);
    check(FORWARD_DATA_OFFSET + HEADER_CHECK_IN_DATA, 72);
    check(FORWARD_DATA_OFFSET + BODY_CHECK_IN_DATA, 73);
    check(INNER_HEADER_OFFSET, 40);
}

#[test]
fn opcode_round_trips_all_byte0() {
    for b in 0..=255u8 {
        let op = Opcode::from_byte0(b);
        assert_eq!(op.as_u8(), b & 7);
        assert_eq!(op == Opcode::Direct, b & 7 == 2);
        assert_eq!(op == Opcode::Forward, b & 7 == 3);
    }
}

#[test]
fn frame_header_layout() {
    let h = FrameHeader {
        byte0: 0x83,
        reserved: 0,
        seq: 0x0102,
        timestamp: 0x0304_0506,
        dst: -1,
        src: 17,
    };
    let mut out = Vec::new();
    h.write_to(&mut out);
    let mut expect = vec![0x83, 0, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03];
    expect.extend_from_slice(&[0xff; 8]);
    expect.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(out, expect);
    assert_eq!(FrameHeader::decode(&out), Ok(h));
    assert_eq!(h.opcode(), Opcode::Forward);
}

#[test]
fn data_header_layout() {
    let d = DataHeader {
        flags: 0xc0,
        data_seq: 1,
        device_type: 0x0203,
        msg_id: 0x36,
        body_len: 10,
        header_check: 0xaa,
        body_check: 0xbb,
        reserved: 0x0405,
    };
    let mut out = [0u8; DATA_HEADER_LEN];
    d.encode(&mut out);
    assert_eq!(out, [0xc0, 1, 3, 2, 0x36, 0, 10, 0, 0xaa, 0xbb, 5, 4]);
    assert_eq!(DataHeader::decode(&out), Ok(d));
}

#[test]
fn short_headers_are_errors() {
    for len in 0..FRAME_HEADER_LEN {
        let got = FrameHeader::decode(&vec![0; len]);
        assert_eq!(got, Err(PacketError::TooShort { need: 24, got: len }));
    }
    for len in 0..DATA_HEADER_LEN {
        let got = DataHeader::decode(&vec![0; len]);
        assert_eq!(got, Err(PacketError::TooShort { need: 12, got: len }));
    }
}

#[test]
fn check_helpers_bound_their_input() {
    assert_eq!(header_check(&[0; 31], DIRECT_DATA_OFFSET), None);
    assert_eq!(header_check(&[0; 32], DIRECT_DATA_OFFSET), Some(0));
    assert_eq!(body_check(&[0; 36], DIRECT_DATA_OFFSET, 1), None);
    assert_eq!(body_check(&[0; 36], DIRECT_DATA_OFFSET, usize::MAX), None);
    assert_eq!(body_check(&[0; 37], DIRECT_DATA_OFFSET, 1), Some(0));
}

#[test]
fn put_at_never_writes_out_of_range() {
    let mut buf = [0u8; 4];
    assert!(put_at(&mut buf, 2, &[1, 2]));
    assert!(!put_at(&mut buf, 3, &[1, 2]));
    assert!(!put_at(&mut buf, usize::MAX, &[1]));
    assert_eq!(buf, [0, 0, 1, 2]);
}
