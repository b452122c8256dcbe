//! Fuzz targets: WebSocket upgrades, frames, login strings and replies.

use super::*;

// === WebSocket upgrade ===

pub(super) fn seeds_upgrade() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.transport == "http");
    seeds.push(
        b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: chat, superchat\r\n\r\n\x81\x80abcd"
            .to_vec(),
    );
    seeds
}

pub(super) fn check_upgrade(data: &[u8]) -> Outcome {
    match ws::parse_upgrade(data) {
        Ok(Some(u)) => {
            ensure!(
                u.consumed <= data.len(),
                "consumed {} > len {}",
                u.consumed,
                data.len()
            );
            ensure!(
                u.consumed >= 4 && &data[u.consumed - 4..u.consumed] == b"\r\n\r\n",
                "consumed does not end at the blank line"
            );
            ensure!(
                u.consumed <= ws::MAX_HEADER_BYTES,
                "header block beyond the cap"
            );
            for part in [Some(u.path), Some(u.key), u.protocol]
                .into_iter()
                .flatten()
            {
                ensure!(
                    within(&data[..u.consumed], part.as_bytes()),
                    "{part:?} outside the head"
                );
            }
            ensure!(!u.key.is_empty(), "empty key accepted");
            ensure!(
                u.path == ws::PATH || u.path.starts_with("/ws?"),
                "path {:?}",
                u.path
            );
            let again = ws::parse_upgrade(&data[..u.consumed]);
            ensure!(
                again == Ok(Some(u)),
                "the head alone parses differently: {again:?}"
            );
            let mut out = Vec::new();
            ws::write_accept(&mut out, u.key.as_bytes(), u.protocol);
            ensure!(out.starts_with(b"HTTP/1.1 101"), "accept is not a 101");
            Ok(1 + u64::from(u.protocol.is_some()) + 2 * u64::from(u.path.len() > 3))
        }
        Ok(None) => {
            ensure!(data.len() < ws::MAX_HEADER_BYTES, "incomplete at the cap");
            ensure!(
                !data.windows(4).any(|w| w == b"\r\n\r\n"),
                "a whole head reported incomplete"
            );
            Ok(0)
        }
        Err(e) => {
            let mut out = Vec::new();
            ws::write_http_error(&mut out, e);
            ensure!(out.starts_with(b"HTTP/1.1 4"), "error answer is not 4xx");
            Ok(err_feature(2, &e))
        }
    }
}

// === WebSocket frames ===

pub(super) const MAX_PAYLOADS: [usize; 7] = [0, 1, 125, 126, 65_535, 65_536, usize::MAX >> 1];

pub(super) fn seeds_frame() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (i, g) in golden_where(|g| g.transport.starts_with("ws-"))
        .into_iter()
        .enumerate()
    {
        let mut s = vec![(i % MAX_PAYLOADS.len()) as u8 + 3];
        s.extend_from_slice(&g);
        seeds.push(s);
    }
    let mut s = vec![6u8];
    ws::write_client_frame(&mut s, ws::OpCode::Binary, &[7u8; 300], [1, 2, 3, 4]);
    ws::write_frame(&mut s, ws::OpCode::Ping, b"hi");
    seeds.push(s);
    let mut s = vec![6u8];
    ws::write_client_frame(&mut s, ws::OpCode::Text, &[7u8; 70_000], [9, 8, 7, 6]);
    s.truncate(100);
    seeds.push(s);
    seeds
}

/// `data[0]` picks the payload limit; the rest is a stream of frames read as a shard does.
pub(super) fn check_frame(data: &[u8]) -> Outcome {
    let Some((&pick, rest)) = data.split_first() else {
        return Ok(0);
    };
    let max = MAX_PAYLOADS[usize::from(pick) % MAX_PAYLOADS.len()];
    let mut buf = rest.to_vec();
    let orig = buf.clone();
    let mut at = 0;
    let mut frames = 0u64;
    let last = loop {
        ensure!(frames <= orig.len() as u64, "more frames than bytes");
        let window = &mut buf[at..];
        let before = window.to_vec();
        match ws::next_frame(window, max) {
            Ok(Some(f)) => {
                let head = ws::parse_head(&before)
                    .map_err(|e| format!("next_frame ok but parse_head {e:?}"))?
                    .ok_or("next_frame ok but parse_head incomplete")?;
                ensure!(
                    f.consumed <= window.len(),
                    "consumed {} > len {}",
                    f.consumed,
                    window.len()
                );
                ensure!(f.consumed >= 2, "consumed {} < 2", f.consumed);
                ensure!(
                    f.payload.start == head.header_len && f.payload.end == f.consumed,
                    "payload {:?} vs head {} consumed {}",
                    f.payload,
                    head.header_len,
                    f.consumed
                );
                ensure!(
                    f.payload.len() as u64 == head.payload_len,
                    "length mismatch"
                );
                ensure!(
                    f.payload.len() <= max,
                    "payload {} above limit {max}",
                    f.payload.len()
                );
                ensure!(
                    (2..=14).contains(&head.header_len),
                    "header_len {}",
                    head.header_len
                );
                ensure!(
                    f.opcode == head.opcode && f.fin == head.fin,
                    "head mismatch"
                );
                ensure!(
                    !f.opcode.is_control() || (f.fin && f.payload.len() <= 125),
                    "bad control frame accepted"
                );
                ensure!(
                    window[f.consumed..] == before[f.consumed..],
                    "bytes after the frame changed"
                );
                ensure!(
                    window[..f.payload.start] == before[..f.payload.start],
                    "head bytes changed"
                );
                let mut payload = window[f.payload.clone()].to_vec();
                if let Some(key) = head.mask {
                    ws::unmask(&mut payload, key);
                }
                ensure!(
                    payload == before[f.payload.clone()],
                    "unmask is not an involution"
                );
                let payload = &window[f.payload.clone()];
                // Round trip: the payload as a server frame and as a masked client frame.
                if f.fin {
                    let mut out = Vec::new();
                    ws::write_frame(&mut out, f.opcode, payload);
                    let back = ws::next_frame(&mut out, usize::MAX >> 1);
                    ensure!(
                        matches!(&back, Ok(Some(g)) if g.opcode == f.opcode && g.consumed == out.len()),
                        "server frame round trip {back:?}"
                    );
                    ensure!(
                        &out[out.len() - payload.len()..] == payload,
                        "server payload differs"
                    );
                    let mut out = Vec::new();
                    ws::write_client_frame(&mut out, f.opcode, payload, [0xa5, 0x5a, 0x01, 0xfe]);
                    let back = ws::next_frame(&mut out, usize::MAX >> 1);
                    let ok = matches!(&back, Ok(Some(g)) if g.consumed == out.len()
                        && out[g.payload.clone()] == *payload);
                    ensure!(ok, "client frame round trip {back:?}");
                }
                if f.opcode == ws::OpCode::Close {
                    let _ = ws::parse_close_payload(payload);
                }
                at += f.consumed;
                frames += 1;
                if at > buf.len() {
                    return Err("read past the buffer".into());
                }
            }
            Ok(None) => {
                ensure!(*window == *before, "incomplete frame modified the buffer");
                break 0u64;
            }
            Err(e) => {
                ensure!(*window == *before, "refused frame modified the buffer");
                let code = e.close_code();
                ensure!(
                    code == ws::CLOSE_PROTOCOL || code == ws::CLOSE_TOO_BIG,
                    "close code {code}"
                );
                if let ws::WsError::TooBig { len } = e {
                    ensure!(len > max as u64, "TooBig {len} within limit {max}");
                }
                break err_feature(3, &e);
            }
        }
    };
    Ok(last ^ (frames.min(3) << 60) ^ (usize::from(pick) % MAX_PAYLOADS.len()) as u64)
}

// === login strings and replies ===

pub(super) fn seeds_login() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = golden_where(|g| g.name.starts_with("ws_login"))
        .iter()
        .map(|frame| ws_payload(frame))
        .collect();
    let sig = login::signature(16, 1_700_000_000, 30, login::DEFAULT_SALT.as_bytes());
    let mut s = b"16|1700000000|30|".to_vec();
    s.extend_from_slice(&sig);
    seeds.push(s);
    seeds.push(b"-1|0|0|AAAAAAAAAAAAAAAAAAAAAA==".to_vec());
    seeds.push(vec![0, 3]);
    seeds
}

/// The payload of a captured single-frame WebSocket vector (unmasked).
pub fn ws_payload(frame: &[u8]) -> Vec<u8> {
    let mut buf = frame.to_vec();
    match ws::next_frame(&mut buf, usize::MAX >> 1) {
        Ok(Some(f)) => buf[f.payload].to_vec(),
        _ => frame.to_vec(),
    }
}

pub(super) fn check_login(data: &[u8]) -> Outcome {
    let salt = login::DEFAULT_SALT.as_bytes();
    let parsed = LoginRequest::parse(data);
    let mut feature = match &parsed {
        Ok(r) => {
            ensure!(within(data, r.signature), "signature outside the input");
            let mut out = Vec::new();
            r.write_to(&mut out);
            let again = LoginRequest::parse(&out);
            ensure!(again == Ok(*r), "write_to round trip {again:?}");
            let now = 1_700_000_030;
            for allow_zero in [false, true] {
                let verdict = r.verify(salt, now, allow_zero);
                let fresh = match r.timestamp {
                    0 => allow_zero,
                    ts => ts <= now && now - ts < login::MAX_AGE_SECS,
                };
                let expected = login::signature(r.id, r.timestamp, r.timeout, salt);
                let want = if !fresh {
                    Err(login::LoginReject::WrongTimestamp)
                } else if expected.as_slice() == r.signature {
                    Ok(())
                } else {
                    Err(login::LoginReject::WrongMd5)
                };
                ensure!(verdict == want, "verify {verdict:?}, expected {want:?}");
            }
            1 + u64::from(r.id < 0) + 2 * u64::from(r.timestamp == 0)
        }
        Err(e) => err_feature(4, e),
    };
    if let Some(reply) = LoginReply::decode(data) {
        let (bytes, len) = reply.encode();
        ensure!(&bytes[..len] == data, "reply round trip {reply:?}");
        ensure!(reply.code() == data[0], "reply code");
        feature ^= h(5, data);
    }
    Ok(feature)
}
