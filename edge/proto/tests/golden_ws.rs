//! Golden vectors for the WebSocket codec: the captured upgrade request and the original's
//! exact `101` reply, every captured frame (heartbeat, ping/pong, close, login and acks)
//! decoded and re-encoded byte for byte.

mod common;

use edge_proto::login::LoginReply;
use edge_proto::ws::{
    CLOSE_NORMAL, OpCode, next_frame, parse_close_payload, parse_upgrade, write_accept,
    write_client_frame, write_close, write_frame,
};

/// The capture's fixed client masking key.
const CAPTURE_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn runs(name: &str) -> Vec<Vec<u8>> {
    let vector = common::all().iter().find(|v| v.name == name).unwrap();
    let mut runs = vec![vector.bytes.clone()];
    runs.extend(vector.other_run.clone());
    runs
}

#[test]
fn captured_upgrade_and_exact_accept() {
    let requests = runs("ws_upgrade_request");
    let responses = runs("ws_upgrade_response");
    assert_eq!(requests.len(), 2, "both capture runs are checked");
    for (request, response) in requests.iter().zip(&responses) {
        let upgrade = parse_upgrade(request).unwrap().unwrap();
        assert_eq!(
            (upgrade.path, upgrade.protocol, upgrade.consumed),
            ("/ws", None, request.len())
        );
        for cut in 0..request.len() {
            assert_eq!(parse_upgrade(&request[..cut]), Ok(None), "cut {cut}");
        }
        let mut ours = Vec::new();
        write_accept(&mut ours, upgrade.key.as_bytes(), upgrade.protocol);
        assert_eq!(ours, *response);
    }
}

/// Every captured WS frame decodes to the payload the capture documents and re-encodes
/// to the same bytes (server frames unmasked, client frames with the capture's key).
#[test]
fn every_captured_frame_round_trips() {
    let frames: Vec<_> = common::all()
        .iter()
        .filter(|v| v.transport.starts_with("ws-") && !v.bytes.is_empty())
        .collect();
    assert!(frames.len() >= 12);
    for vector in frames {
        let mut buf = vector.bytes.clone();
        let frame = next_frame(&mut buf, 1 << 16).unwrap().unwrap();
        assert!(frame.fin, "{}", vector.name);
        assert_eq!(frame.consumed, buf.len(), "{}", vector.name);
        let payload = &buf[frame.payload.clone()];
        assert_eq!(
            payload,
            common::ws_payload(&vector.bytes),
            "{}",
            vector.name
        );
        let masked = vector.bytes[1] & 0x80 != 0;
        let mut ours = Vec::new();
        if masked {
            write_client_frame(&mut ours, frame.opcode, payload, CAPTURE_KEY);
        } else {
            write_frame(&mut ours, frame.opcode, payload);
        }
        assert_eq!(ours, vector.bytes, "{}", vector.name);
    }
}

fn frame_of(name: &str) -> (OpCode, Vec<u8>) {
    let mut buf = common::bytes(name).to_vec();
    let frame = next_frame(&mut buf, 1024).unwrap().unwrap();
    (frame.opcode, buf[frame.payload].to_vec())
}

#[test]
fn captured_exchanges() {
    assert_eq!(frame_of("ws_heartbeat_p"), (OpCode::Text, b"p".to_vec()));
    let mut out = Vec::new();
    write_frame(&mut out, OpCode::Text, b"P");
    assert_eq!(out, common::bytes("ws_heartbeat_P"));

    let (opcode, ping) = frame_of("ws_ping");
    assert_eq!(opcode, OpCode::Ping);
    out.clear();
    write_frame(&mut out, OpCode::Pong, &ping);
    assert_eq!(out, common::bytes("ws_pong"));

    for name in [
        "ws_close_reply",
        "ws_login_wrong_params_after",
        "ws_login_not_multiple_of_16_after",
    ] {
        out.clear();
        write_close(&mut out, CLOSE_NORMAL);
        assert_eq!(out, common::bytes(name), "{name}");
        let (opcode, payload) = frame_of(name);
        assert_eq!(
            (opcode, parse_close_payload(&payload)),
            (OpCode::Close, Some(CLOSE_NORMAL))
        );
    }

    for (name, reply) in [
        ("ws_login_phone_ack", LoginReply::PhoneOk(1)),
        ("ws_login_wrong_params_ack", LoginReply::WrongParams),
        ("ws_login_not_multiple_of_16_ack", LoginReply::WrongId),
    ] {
        let mut payload = Vec::new();
        reply.write_to(&mut payload);
        out.clear();
        write_frame(&mut out, OpCode::Binary, &payload);
        assert_eq!(out, common::bytes(name), "{name}");
    }
}

#[test]
fn captured_frames_arrive_byte_by_byte() {
    let mut wire = Vec::new();
    for name in ["ws_login_phone_request", "ws_heartbeat_p", "ws_ping"] {
        wire.extend_from_slice(common::bytes(name));
    }
    let mut got = Vec::new();
    let mut buf = Vec::new();
    for &byte in &wire {
        buf.push(byte);
        if let Some(frame) = next_frame(&mut buf, 1024).unwrap() {
            got.push((frame.opcode, buf[frame.payload].to_vec()));
            buf.drain(..frame.consumed);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [OpCode::Text, OpCode::Text, OpCode::Ping]
    );
    assert_eq!(got[0].1, b"16|1795522893|30|2Kj1z/FAy88XBpbLQ8ZWEA==");
}
