//! Property tests for the WebSocket codec: `parse_upgrade`, `parse_head` and `next_frame`
//! on arbitrary bytes and on mutated golden vectors (no panic, ranges in bounds, consistent
//! results, byte-exact re-encoding), plus round trips of every encoder. 100 000 cases each.

mod common;

use edge_proto::ws::{
    CLOSE_PROTOCOL, CLOSE_TOO_BIG, MAX_HEADER_BYTES, OpCode, WsError, accept_key, encode_head,
    next_frame, parse_close_payload, parse_head, parse_upgrade, unmask, write_accept,
    write_client_frame, write_close, write_frame, write_http_error,
};
use proptest::prelude::*;

const CASES: u32 = 100_000;

mod mutation;
use mutation::*;

fn seeds(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| common::bytes(n).to_vec()).collect()
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = common::all()
        .iter()
        .filter(|v| v.transport.starts_with("ws-") && !v.bytes.is_empty())
        .map(|v| v.bytes.clone())
        .collect();
    // Longer lengths: a 16-bit and a 64-bit head (with a short payload behind them).
    let mut long = Vec::new();
    write_frame(&mut long, OpCode::Binary, &[7; 300]);
    seeds.push(long);
    seeds.push(vec![
        0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4, 5,
    ]);
    seeds
}

fn upgrade_seeds() -> Vec<Vec<u8>> {
    let mut seeds = seeds(&["ws_upgrade_request"]);
    seeds.push(
        b"GET /ws?t=1 HTTP/1.1\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, x\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec(),
    );
    seeds
}

/// Bytes drawn mostly from the characters an HTTP request is made of.
fn http_noise() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> =
        b"GET /ws?HTTP/1.1\r\n:, \tUpgrade websocket Connection Sec-WebSocket-Key Version 13"
            .to_vec();
    proptest::collection::vec(proptest::sample::select(alphabet), 0..200)
}

/// Strings of `len` characters drawn from `alphabet`.
fn chars(alphabet: &'static [u8], len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(alphabet), len)
        .prop_map(|bytes| String::from_utf8(bytes).unwrap_or_default())
}

fn naive_unmask(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect()
}

fn contains(outer: &[u8], inner: &str) -> bool {
    let (start, end) = (
        outer.as_ptr() as usize,
        outer.as_ptr() as usize + outer.len(),
    );
    let at = inner.as_ptr() as usize;
    at >= start && at + inner.len() <= end
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// `parse_upgrade` never panics; an accepted request borrows from the header block,
    /// ends at the blank line and parses the same with anything appended; refusals carry
    /// a status and produce a well-formed reply.
    #[test]
    fn parse_upgrade_is_consistent(
        buf in prop_oneof![input(upgrade_seeds()), http_noise()],
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        match parse_upgrade(&buf) {
            Ok(Some(up)) => {
                prop_assert!(up.consumed <= buf.len() && buf[..up.consumed].ends_with(b"\r\n\r\n"));
                prop_assert!(contains(&buf[..up.consumed], up.key) && !up.key.is_empty());
                prop_assert!(contains(&buf[..up.consumed], up.path) && up.path.starts_with("/ws"));
                if let Some(protocol) = up.protocol {
                    prop_assert!(contains(&buf, protocol) && !protocol.is_empty());
                }
                let mut longer = buf.clone();
                longer.extend_from_slice(&tail);
                prop_assert_eq!(parse_upgrade(&longer), Ok(Some(up)));
                prop_assert_eq!(parse_upgrade(&buf[..up.consumed]), Ok(Some(up)));
                let mut reply = Vec::new();
                write_accept(&mut reply, up.key.as_bytes(), up.protocol);
                prop_assert!(reply.starts_with(b"HTTP/1.1 101 ") && reply.ends_with(b"\r\n\r\n"));
                prop_assert_eq!(reply.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
            }
            Ok(None) => {
                prop_assert!(buf.len() < MAX_HEADER_BYTES);
                prop_assert!(!buf.windows(4).any(|w| w == b"\r\n\r\n"));
            }
            Err(error) => {
                prop_assert!([400, 404, 405, 431].contains(&error.status()));
                let mut reply = Vec::new();
                write_http_error(&mut reply, error);
                let text = String::from_utf8(reply).unwrap();
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                let expected_length = format!("Content-Length: {}", body.len());
                prop_assert!(head.contains(&expected_length), "{}", text);
                prop_assert!(head.contains("Connection: close"));
            }
        }
    }

    /// `parse_head` never panics; an accepted head is refused as incomplete on every strict
    /// prefix, and a refusal stands whatever follows.
    #[test]
    fn parse_head_is_consistent(
        buf in input(frame_seeds()),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        match parse_head(&buf) {
            Ok(Some(head)) => {
                prop_assert!(
                    head.header_len <= buf.len() && [2, 4, 6, 8, 10, 14].contains(&head.header_len)
                );
                prop_assert!(head.payload_len < 1 << 63);
                prop_assert!(!head.opcode.is_control() || (head.fin && head.payload_len <= 125));
                for cut in 0..head.header_len {
                    prop_assert_eq!(parse_head(&buf[..cut]), Ok(None));
                }
                prop_assert_eq!(parse_head(&buf[..head.header_len]), Ok(Some(head)));
            }
            Ok(None) => prop_assert!(buf.len() < 14),
            Err(error) => {
                let mut longer = buf.clone();
                longer.extend_from_slice(&tail);
                prop_assert_eq!(parse_head(&longer), Err(error));
                prop_assert!([CLOSE_PROTOCOL, CLOSE_TOO_BIG].contains(&error.close_code()));
            }
        }
    }

    /// `next_frame` never panics; ranges lie within the buffer, the payload is the unmasked
    /// input, the cap holds, and a frame with a minimal head re-encodes to the same bytes.
    #[test]
    fn next_frame_is_consistent(
        buf in input(frame_seeds()),
        max in prop_oneof![Just(1usize << 16), 0usize..130],
    ) {
        let original = buf.clone();
        let mut buf = buf;
        match next_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                let head = parse_head(&original).unwrap().unwrap();
                prop_assert!(
                    frame.payload.start == head.header_len && frame.payload.end == frame.consumed
                );
                prop_assert!(frame.consumed <= buf.len() && frame.payload.len() <= max);
                prop_assert_eq!(&buf[frame.consumed..], &original[frame.consumed..]);
                let payload = &buf[frame.payload.clone()];
                let wire_payload = &original[frame.payload.clone()];
                let expected = head
                    .mask
                    .map_or(wire_payload.to_vec(), |key| naive_unmask(wire_payload, key));
                prop_assert_eq!(payload, &expected[..]);
                let (_, minimal) = encode_head(frame.opcode, frame.payload.len() as u64);
                if frame.fin && minimal + head.mask.map_or(0, |_| 4) == head.header_len {
                    let mut ours = Vec::new();
                    match head.mask {
                        Some(key) => write_client_frame(&mut ours, frame.opcode, payload, key),
                        None => write_frame(&mut ours, frame.opcode, payload),
                    }
                    prop_assert_eq!(&ours[..], &original[..frame.consumed]);
                }
            }
            Ok(None) => prop_assert_eq!(&buf, &original),
            Err(WsError::TooBig { len }) => prop_assert!(len > max as u64),
            Err(error) => prop_assert_eq!(parse_head(&original), Err(error)),
        }
    }

    /// The word-wise unmask equals the byte-wise definition (and is an involution).
    #[test]
    fn unmask_matches_definition(
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        key in any::<[u8; 4]>(),
    ) {
        let mut fast = payload.clone();
        unmask(&mut fast, key);
        prop_assert_eq!(&fast, &naive_unmask(&payload, key));
        unmask(&mut fast, key);
        prop_assert_eq!(fast, payload);
    }

    /// Server and client frames of every opcode round-trip through `next_frame`.
    #[test]
    fn frames_round_trip(
        op in proptest::sample::select(vec![
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong
        ]),
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        key in proptest::option::of(any::<[u8; 4]>()),
    ) {
        let payload = if op.is_control() {
            &payload[..payload.len().min(125)]
        } else {
            &payload[..]
        };
        let mut wire = Vec::new();
        match key {
            Some(key) => write_client_frame(&mut wire, op, payload, key),
            None => write_frame(&mut wire, op, payload),
        }
        let frame = next_frame(&mut wire, payload.len()).unwrap().unwrap();
        prop_assert_eq!(
            (frame.fin, frame.opcode, frame.consumed),
            (true, op, wire.len())
        );
        prop_assert_eq!(&wire[frame.payload], payload);
    }

    /// Every head length encodes minimally and parses back; close codes survive.
    #[test]
    fn heads_and_close_round_trip(
        len in prop_oneof![0u64..70_000, 0u64..(1 << 63)],
        code in any::<u16>(),
    ) {
        let (head, used) = encode_head(OpCode::Binary, len);
        let parsed = parse_head(&head[..used]).unwrap().unwrap();
        prop_assert_eq!(
            (parsed.payload_len, parsed.header_len, parsed.mask),
            (len, used, None)
        );
        let mut wire = Vec::new();
        write_close(&mut wire, code);
        let frame = next_frame(&mut wire, 125).unwrap().unwrap();
        prop_assert_eq!(parse_close_payload(&wire[frame.payload]), Some(code));
    }

    /// A generated upgrade request (any header case, extra headers, a subprotocol list)
    /// parses back to its key and first protocol, and the reply carries the accept key.
    #[test]
    fn upgrade_round_trip(
        nonce in any::<[u8; 16]>(),
        upper in any::<bool>(),
        query in proptest::option::of(chars(b"abcz09=&", 0..12)),
        protocols in proptest::collection::vec(chars(b"abcxyz019.", 1..9), 0..3),
        extra in proptest::collection::vec(
            (chars(b"abcXYZ-", 1..8), chars(b" !aZ09:;,~", 0..20)),
            0..3
        ),
    ) {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let name = |n: &str| {
            if upper {
                n.to_ascii_uppercase()
            } else {
                n.to_owned()
            }
        };
        let mut text = format!(
            "GET /ws{} HTTP/1.1\r\nHost: h\r\n",
            query.as_ref().map_or(String::new(), |q| format!("?{q}"))
        );
        for (n, v) in &extra {
            text.push_str(&format!("X-{n}: {v}\r\n"));
        }
        text.push_str(&format!(
            "{}: websocket\r\n{}: Upgrade\r\n",
            name("Upgrade"),
            name("Connection")
        ));
        text.push_str(&format!(
            "{}: {key}\r\n{}: 13\r\n",
            name("Sec-WebSocket-Key"),
            name("Sec-WebSocket-Version")
        ));
        if !protocols.is_empty() {
            text.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                protocols.join(", ")
            ));
        }
        text.push_str("\r\n");
        let up = parse_upgrade(text.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(
            (up.key, up.protocol, up.consumed),
            (
                key.as_str(),
                protocols.first().map(String::as_str),
                text.len()
            )
        );
        let mut reply = Vec::new();
        write_accept(&mut reply, up.key.as_bytes(), up.protocol);
        let accept = accept_key(key.as_bytes());
        prop_assert!(reply.windows(accept.len()).any(|w| w == accept));
    }
}
