//! The fuzz targets: one per decoder family, each with seeds and invariants.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use edge_proto::device::{self, Request, Sid};
use edge_proto::frame::{
    self, DirectPacket, FORWARD_DATA_OFFSET, ForwardPacket, FrameHeader, HEADER_CHECK_IN_DATA,
    Packet,
};
use edge_proto::link::{self, Downstream, LinkDecoder, LinkItem, Upstream};
use edge_proto::login::{self, LoginReply, LoginRequest};
use edge_proto::status::StatusBody;
use edge_proto::{pubsub, ws, zk};

use super::{Outcome, Target, feature_of, golden_where};

/// Every target, in report order.
pub const ALL: &[Target] = &[
    Target {
        name: "ws_upgrade",
        seeds: seeds_upgrade,
        check: check_upgrade,
    },
    Target {
        name: "ws_frame",
        seeds: seeds_frame,
        check: check_frame,
    },
    Target {
        name: "login",
        seeds: seeds_login,
        check: check_login,
    },
    Target {
        name: "udp_datagram",
        seeds: seeds_udp,
        check: check_udp,
    },
    Target {
        name: "udp_patch",
        seeds: seeds_patch,
        check: check_patch,
    },
    Target {
        name: "link",
        seeds: seeds_link,
        check: check_link,
    },
    Target {
        name: "link_payload",
        seeds: seeds_link_payload,
        check: check_link_payload,
    },
    Target {
        name: "pubsub",
        seeds: seeds_pubsub,
        check: check_pubsub,
    },
    Target {
        name: "zk_node",
        seeds: seeds_zk,
        check: check_zk,
    },
    Target {
        name: "status_body",
        seeds: seeds_status,
        check: check_status,
    },
    Target {
        name: "session_json",
        seeds: seeds_session,
        check: check_session,
    },
    Target {
        name: "spool_record",
        seeds: seeds_spool,
        check: check_spool,
    },
    Target {
        name: "http_head",
        seeds: seeds_http,
        check: check_http,
    },
    Target {
        name: "conf_file",
        seeds: seeds_conf,
        check: check_conf,
    },
    Target {
        name: "parse_addr",
        seeds: seeds_addr,
        check: check_addr,
    },
];

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// Whether `part` lies inside `whole` (a borrowed view of the input).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    part.is_empty() || (p >= w && p + part.len() <= w + whole.len())
}

fn err_feature<E: std::fmt::Debug>(tag: u64, e: &E) -> u64 {
    // The variant name only: `TooShort { need: 36, got: 3 }` → `TooShort`.
    let text = format!("{e:?}");
    let name = text
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    feature_of(&(tag, name))
}

fn h(tag: u64, data: &[u8]) -> u64 {
    feature_of(&(tag, data))
}

// === WebSocket upgrade ===

fn seeds_upgrade() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.transport == "http");
    seeds.push(
        b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: chat, superchat\r\n\r\n\x81\x80abcd"
            .to_vec(),
    );
    seeds
}

fn check_upgrade(data: &[u8]) -> Outcome {
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

const MAX_PAYLOADS: [usize; 7] = [0, 1, 125, 126, 65_535, 65_536, usize::MAX >> 1];

fn seeds_frame() -> Vec<Vec<u8>> {
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
fn check_frame(data: &[u8]) -> Outcome {
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

fn seeds_login() -> Vec<Vec<u8>> {
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

fn check_login(data: &[u8]) -> Outcome {
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

// === UDP datagrams ===

fn seeds_udp() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.transport == "udp" && !g.bytes.is_empty());
    // Every command with a well-formed, sealed request.
    for (msg_id, body_len) in [
        (0xE0u16, 24usize),
        (0xE1, 324),
        (0xE2, 88),
        (0xE3, 30),
        (0xE4, 16),
        (0xE5, 24),
        (0xE6, 16),
        (0x30, 4),
        (0x31, 0),
        (0x77, 20),
    ] {
        let body: Vec<u8> = (0..body_len).map(|i| (i * 7) as u8).collect();
        let mut out = Vec::new();
        let spec = frame::DirectSpec {
            seq: 3,
            timestamp: 1_700_000_000,
            dst: 0,
            src: -1,
            msg_id,
            body: &body,
        };
        if frame::write_direct(&mut out, &spec).is_ok() {
            out[0] = 0x02;
            let _ = frame::seal(&mut out);
            seeds.push(out);
        }
    }
    seeds
}

fn check_udp(data: &[u8]) -> Outcome {
    let direct = frame::verify_direct(data);
    let forward = frame::verify_forward(data);
    let request = Request::parse_datagram(data);
    let mut feature = err_or(6, &request.as_ref().map(|_| ()));
    if let Ok((packet, req)) = &request {
        ensure!(
            direct.is_ok(),
            "parse_datagram ok but verify_direct {direct:?}"
        );
        ensure!(packet.bytes() == data, "packet bytes");
        check_request(data, req)?;
        feature = feature_of(&(6u8, std::mem::discriminant(req)));
        // Every reply the node builds for it seals and verifies.
        let sid = Sid([0x42; 16]);
        for body in [
            &device::new_session_body(0, &sid)[..],
            &device::login_body(0, &sid, 20)[..],
            &device::status_body(1002, &sid)[..],
        ] {
            let mut out = Vec::new();
            device::write_reply(&mut out, data, body).map_err(|e| format!("write_reply {e:?}"))?;
            ensure!(frame::verify_direct(&out).is_ok(), "reply does not verify");
            ensure!(out[..24] == data[..24], "reply frame header not echoed");
        }
    }
    if let Ok(p) = &direct {
        ensure!(p.body().len() == data.len() - 36, "direct body length");
        ensure!(
            usize::from(p.data().body_len) == p.body().len(),
            "verified length differs"
        );
    }
    if let Ok(p) = &forward {
        ensure!(p.body().len() == data.len() - 76, "forward body length");
    }
    match Packet::parse(data) {
        Ok(p) => {
            ensure!(p.bytes() == data, "packet bytes");
            ensure!(within(data, p.body()), "body outside the datagram");
            let offset = match p {
                Packet::Direct(_) => 36,
                Packet::Forward(_) => 76,
            };
            ensure!(
                data.len() >= offset && p.body().len() == data.len() - offset,
                "body offset"
            );
            let header = FrameHeader::decode(data).map_err(|e| format!("{e:?}"))?;
            let mut enc = [0u8; frame::FRAME_HEADER_LEN];
            header.encode(&mut enc);
            ensure!(enc[..] == data[..24], "frame header round trip");
            feature ^= h(7, &[offset as u8]);
            // Sealing makes it verify (when the declared length is right), touching only
            // the two check bytes.
            let mut copy = data.to_vec();
            let checks = offset - 12 + HEADER_CHECK_IN_DATA;
            match frame::seal(&mut copy) {
                Ok(()) => {
                    let ok = if offset == 36 {
                        frame::verify_direct(&copy).is_ok()
                    } else {
                        frame::verify_forward(&copy).is_ok()
                    };
                    ensure!(ok, "sealed packet does not verify");
                    for (i, (a, b)) in copy.iter().zip(data).enumerate() {
                        ensure!(
                            a == b || i == checks || i == checks + 1,
                            "seal changed byte {i}"
                        );
                    }
                }
                Err(_) => ensure!(copy == data, "failed seal modified the packet"),
            }
        }
        Err(e) => {
            ensure!(
                direct.is_err() && forward.is_err(),
                "verify ok but parse {e:?}"
            );
            feature ^= err_feature(8, &e);
        }
    }
    if let Ok(p) = DirectPacket::parse(data)
        && let Ok(r) = Request::parse(&p)
    {
        check_request(data, &r)?;
    }
    let _ = ForwardPacket::parse(data);
    Ok(feature)
}

fn err_or<E: std::fmt::Debug>(tag: u64, r: &Result<(), E>) -> u64 {
    match r {
        Ok(()) => tag,
        Err(e) => err_feature(tag, e),
    }
}

fn check_request(data: &[u8], req: &Request<'_>) -> Result<(), String> {
    match req {
        Request::Register(r) => {
            ensure!(
                within(data, r.signature) && within(data, r.name),
                "register fields outside"
            );
            ensure!(
                r.signature.len() == device::SIGNATURE_LEN,
                "signature length"
            );
        }
        Request::Login { cookie, .. } => {
            ensure!(
                within(data, cookie) && cookie.len() <= device::COOKIE_LEN,
                "cookie"
            );
            let _ = device::parse_cookie_device_id(cookie);
        }
        Request::Rename { name, .. } => ensure!(within(data, name), "name outside"),
        _ => {}
    }
    Ok(())
}

// === delivery patching ===

fn seeds_patch() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.name.starts_with("relay_") && g.transport == "udp");
    seeds.extend(
        golden_where(|g| g.name == "relay_phone_to_device_sent_by_phone")
            .iter()
            .map(|f| ws_payload(f)),
    );
    seeds
}

/// Patches a relayed message for a device: only bytes 2–3, 24–39 (and the forward header
/// check at 72) change, and a forward packet that verified still verifies.
fn check_patch(data: &[u8]) -> Outcome {
    let seq = u16::from_le_bytes([data.len() as u8, data.first().copied().unwrap_or(0)]);
    let sid = [data.len() as u8 ^ 0x5a; 16];
    let verified = frame::verify_forward(data).is_ok();
    let mut copy = data.to_vec();
    match frame::patch_for_device(&mut copy, seq, &sid) {
        Ok(()) => {
            ensure!(copy.len() == data.len(), "length changed");
            ensure!(
                copy[2..4] == seq.to_le_bytes() && copy[24..40] == sid,
                "patch not applied"
            );
            let check_at = FORWARD_DATA_OFFSET + HEADER_CHECK_IN_DATA;
            for (i, (a, b)) in copy.iter().zip(data).enumerate() {
                let patched = (2..4).contains(&i) || (24..40).contains(&i) || i == check_at;
                ensure!(a == b || patched, "byte {i} changed");
            }
            if verified {
                ensure!(
                    frame::verify_forward(&copy).is_ok(),
                    "patch broke a valid forward packet"
                );
            }
            Ok(1 + u64::from(verified))
        }
        Err(e) => {
            ensure!(
                copy == data && data.len() < frame::PATCH_MIN_LEN,
                "failed patch: {e:?}"
            );
            Ok(0)
        }
    }
}

// === comet ↔ msgbus link ===

fn seeds_link() -> Vec<Vec<u8>> {
    let stream: Vec<u8> =
        golden_where(|g| g.transport == "tcp-msgbus" && g.bytes.len() > 1).concat();
    let mut s = vec![3u8, 5];
    s.extend_from_slice(&stream);
    let mut big = vec![200u8, 1];
    big.extend_from_slice(&70_000u32.to_le_bytes());
    big.extend_from_slice(&[1; 64]);
    big.extend_from_slice(&stream);
    vec![s, big]
}

const LINK_MAX: [usize; 5] = [0, 16, 1024, 32 * 1024, 64 * 1024];

/// `data[0]` picks the limit, `data[1]` the read size; the rest is the byte stream, read
/// the way a link reader does (append a chunk, decode until `None`, drop what was used).
fn check_link(data: &[u8]) -> Outcome {
    let [pick, chunk, stream @ ..] = data else {
        return Ok(0);
    };
    let max = LINK_MAX[usize::from(*pick) % LINK_MAX.len()];
    let chunk = usize::from(*chunk % 64) + 1;
    let mut decoder = LinkDecoder::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let (mut frames, mut skipped, mut used_total) = (0u64, 0u64, 0usize);
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let (mut rounds, start_len) = (0, buf.len());
        while let Some((item, used)) = decoder.decode(&buf) {
            rounds += 1;
            ensure!(rounds <= start_len, "decode does not progress");
            ensure!(
                used > 0 && used <= buf.len(),
                "used {used} of {}",
                buf.len()
            );
            match item {
                LinkItem::Frame(payload) => {
                    ensure!(
                        payload.len() <= max,
                        "frame {} above limit {max}",
                        payload.len()
                    );
                    ensure!(
                        used == payload.len() + link::LENGTH_PREFIX,
                        "used vs payload"
                    );
                    ensure!(
                        payload == &buf[4..used],
                        "payload is not the bytes after the prefix"
                    );
                    check_payload(payload)?;
                    frames += 1;
                }
                LinkItem::Skipped { len } => {
                    ensure!(len as usize > max, "skipped a frame within the limit");
                    skipped += 1;
                }
                LinkItem::Discarded => {}
            }
            used_total += used;
            buf.drain(..used);
        }
    }
    ensure!(
        used_total + buf.len() == stream.len(),
        "bytes lost: {used_total} + {} != {}",
        buf.len(),
        stream.len()
    );
    Ok(frames.min(4) | (skipped.min(2) << 4) | (u64::from(decoder.is_skipping()) << 8))
}

fn seeds_link_payload() -> Vec<Vec<u8>> {
    golden_where(|g| g.transport == "tcp-msgbus" && g.bytes.len() > 4)
        .into_iter()
        .map(|b| b[4..].to_vec())
        .collect()
}

fn check_link_payload(data: &[u8]) -> Outcome {
    check_payload(data)?;
    let _ = link::CometKind::from_handshake_byte(data.first().copied().unwrap_or(0))
        .map(|k| k.handshake_byte());
    Ok(feature_of(&(
        Upstream::decode(data)
            .map(|_| ())
            .map_err(|e| err_feature(9, &e)),
        Downstream::decode(data)
            .map(|_| ())
            .map_err(|e| err_feature(10, &e)),
    )))
}

/// Both payload decoders: fields inside the input, and a re-encoding equal to the input.
fn check_payload(data: &[u8]) -> Result<(), String> {
    if let Ok(up) = Upstream::decode(data) {
        ensure!(
            within(data, up.message) && within(data, up.ids.as_bytes()),
            "upstream fields outside"
        );
        ensure!(
            10 + up.ids.len() * 8 + up.message.len() == data.len(),
            "upstream sizes"
        );
        let mut out = Vec::new();
        up.write_to(&mut out)
            .map_err(|e| format!("upstream write {e:?}"))?;
        ensure!(out[4..] == *data, "upstream round trip");
        let ids: Vec<i64> = up.ids.iter().collect();
        ensure!(
            ids.len() == up.ids.len() && up.ids.get(ids.len()).is_none(),
            "ids view"
        );
        ensure!(ids.first().copied() == up.ids.get(0), "ids get");
    }
    if let Ok(down) = Downstream::decode(data) {
        ensure!(within(data, down.message), "downstream message outside");
        ensure!(
            2 + down.ids.len() * 8 + down.message.len() == data.len(),
            "downstream sizes"
        );
        let mut out = Vec::new();
        down.write_to(&mut out)
            .map_err(|e| format!("downstream write {e:?}"))?;
        ensure!(out[4..] == *data, "downstream round trip");
    }
    Ok(())
}

// === Redis pub/sub payloads ===

/// The last bulk string of a RESP push (`*3 $7 message $6 PubKey $N <payload>`).
fn resp_payload(resp: &[u8]) -> Option<Vec<u8>> {
    let text = resp.strip_suffix(b"\r\n")?;
    let at = text.windows(2).rposition(|w| w == b"\r\n")?;
    Some(text[at + 2..].to_vec())
}

fn seeds_pubsub() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = golden_where(|g| g.transport == "redis")
        .iter()
        .filter_map(|r| resp_payload(r))
        .map(|p| [&[0u8][..], &p[..]].concat())
        .collect();
    seeds.push(b"\x0016|127.0.0.1|1".to_vec());
    seeds.push(b"\x01-1|16|1".to_vec());
    seeds.push(b"\x0232".to_vec());
    seeds.push(b"\x03PubCommonMsg:0x36".to_vec());
    let mut push = vec![4u8];
    pubsub::write_common_msg(&mut push, &[16, 17, -1], b"body|with|bars");
    seeds.push(push);
    seeds
}

/// `data[0]` picks the decoder (as the channel does), the rest is the payload.
fn check_pubsub(data: &[u8]) -> Outcome {
    let Some((&which, payload)) = data.split_first() else {
        return Ok(0);
    };
    let tag = u64::from(which % 5);
    let feature = match which % 5 {
        0 => match pubsub::PubKeyEvent::parse(payload) {
            Ok(e) => {
                ensure!(within(payload, e.comet.as_bytes()), "comet outside");
                let mut out = Vec::new();
                e.write_to(&mut out);
                let again = pubsub::PubKeyEvent::parse(&out);
                ensure!(again == Ok(e), "PubKey round trip {again:?}");
                1 + u64::from(e.online) + 2 * u64::from(e.is_reset())
            }
            Err(e) => err_feature(tag, &e),
        },
        1 => match pubsub::DeviceUsersEvent::parse(payload) {
            Ok(e) => {
                let mut out = Vec::new();
                e.write_to(&mut out);
                let again = pubsub::DeviceUsersEvent::parse(&out);
                ensure!(again == Ok(e), "DeviceUsers round trip {again:?}");
                1 + u64::from(e.bind)
            }
            Err(e) => err_feature(tag, &e),
        },
        2 => match pubsub::ModifiedPasswdUser::parse(payload) {
            Ok(e) => {
                let mut out = Vec::new();
                e.write_to(&mut out);
                let again = pubsub::ModifiedPasswdUser::parse(&out);
                ensure!(again == Ok(e), "ModifiedPasswd round trip {again:?}");
                1
            }
            Err(e) => err_feature(tag, &e),
        },
        3 => match pubsub::common_msg_id(payload) {
            Ok(id) => {
                let mut out = Vec::new();
                pubsub::write_common_msg_channel(&mut out, id);
                let again = pubsub::common_msg_id(&out);
                ensure!(again == Ok(id), "channel round trip {again:?}");
                1
            }
            Err(e) => err_feature(tag, &e),
        },
        _ => match pubsub::CommonMsg::parse(payload) {
            Ok(m) => {
                ensure!(
                    within(payload, m.ids) && within(payload, m.body),
                    "fields outside"
                );
                ensure!(
                    m.ids.len() + 1 + m.body.len() == payload.len(),
                    "split sizes"
                );
                let mut ids = m.ids();
                let mut valid = Vec::new();
                for id in ids.by_ref() {
                    valid.push(id);
                    ensure!(valid.len() <= payload.len(), "more ids than bytes");
                }
                let pieces = if m.ids.is_empty() {
                    0
                } else {
                    m.ids.split(|&b| b == b',').count()
                };
                ensure!(
                    valid.len() + ids.skipped() == pieces,
                    "ids + skipped != pieces"
                );
                let mut out = Vec::new();
                pubsub::write_common_msg(&mut out, &valid, m.body);
                let again = pubsub::CommonMsg::parse(&out).map_err(|e| format!("{e:?}"))?;
                ensure!(again.body == m.body, "push body round trip");
                ensure!(
                    again.ids().collect::<Vec<_>>() == valid,
                    "push ids round trip"
                );
                1 + u64::from(ids.skipped() > 0) + 2 * (valid.len().min(3) as u64)
            }
            Err(e) => err_feature(tag, &e),
        },
    };
    Ok(feature ^ (tag << 56))
}

// === ZooKeeper node data ===

fn seeds_zk() -> Vec<Vec<u8>> {
    vec![
        b"\x00ws://127.0.0.1:1234/ws,0.250000,16384000,8192000,42".to_vec(),
        b"\x00http://127.0.0.2:8081/api/device/udpaddr,1,0,0,0".to_vec(),
        b"\x01127.0.0.1:8600".to_vec(),
        b"\x01[::1]:8600".to_vec(),
        b"\x02127.0.0.1:5672,MsgTopic".to_vec(),
    ]
}

fn check_zk(data: &[u8]) -> Outcome {
    let Some((&which, payload)) = data.split_first() else {
        return Ok(0);
    };
    let tag = u64::from(which % 3);
    let feature = match which % 3 {
        0 => match zk::CometNode::parse(payload) {
            Ok(n) => {
                ensure!(within(payload, n.url.as_bytes()), "url outside");
                ensure!(n.cpu.is_finite() && n.cpu >= 0.0, "cpu {}", n.cpu);
                let mut out = Vec::new();
                n.write_to(&mut out);
                let again =
                    zk::CometNode::parse(&out).map_err(|e| format!("comet reparse {e:?}"))?;
                ensure!(
                    again.url == n.url
                        && again.mem_total == n.mem_total
                        && again.mem_used == n.mem_used
                        && again.online == n.online,
                    "comet round trip {again:?} vs {n:?}"
                );
                ensure!(
                    (again.cpu - n.cpu).abs() <= 1e-6 * n.cpu.max(1.0),
                    "cpu round trip"
                );
                1
            }
            Err(e) => err_feature(tag, &e),
        },
        1 => match zk::MsgbusNode::parse(payload) {
            Ok(n) => {
                ensure!(n.port != 0 && !n.host().is_empty(), "msgbus node {n:?}");
                let mut out = Vec::new();
                n.write_to(&mut out);
                ensure!(out == payload, "msgbus round trip");
                1
            }
            Err(e) => err_feature(tag, &e),
        },
        _ => match zk::RabbitNode::parse(payload) {
            Ok(n) => {
                let mut out = Vec::new();
                n.write_to(&mut out);
                ensure!(out == payload, "rabbit round trip");
                1
            }
            Err(e) => err_feature(tag, &e),
        },
    };
    Ok(feature ^ (tag << 56))
}

// === status bodies ===

fn seeds_status() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> =
        golden_where(|g| g.name.contains("status") || g.name.starts_with("push_0x36"))
            .iter()
            .map(|f| ws_payload(f))
            .filter(|p| p.len() >= 36)
            .map(|p| p[36..].to_vec())
            .collect();
    let mut out = Vec::new();
    let _ = StatusBody {
        kind: 7,
        id: -1,
        payload: b"abc",
    }
    .write_to(&mut out);
    seeds.push(out);
    seeds
}

fn check_status(data: &[u8]) -> Outcome {
    match StatusBody::decode(data) {
        Ok(b) => {
            ensure!(within(data, b.payload), "payload outside");
            ensure!(b.encoded_len() == data.len(), "encoded_len");
            let mut out = Vec::new();
            b.write_to(&mut out).map_err(|e| format!("{e:?}"))?;
            ensure!(out == data, "status round trip");
            Ok(1 + u64::from(b.status_type().is_some()))
        }
        Err(e) => Ok(err_feature(11, &e)),
    }
}

// === session JSON (an encoder: its output must be valid JSON carrying the fields) ===

fn seeds_session() -> Vec<Vec<u8>> {
    let mut s = vec![0u8; 63];
    s[..16].copy_from_slice(&[0xab; 16]);
    s[16..24].copy_from_slice(&(-1i64).to_le_bytes());
    s[24] = 0;
    s[25..29].copy_from_slice(&[127, 0, 0, 1]);
    s[41..43].copy_from_slice(&7999u16.to_le_bytes());
    s[43..59].copy_from_slice(&1_795_522_895_378_557_011u128.to_le_bytes());
    vec![
        s.clone(),
        [&s[..], &16i64.to_le_bytes()[..], &32i64.to_le_bytes()[..]].concat(),
    ]
}

fn check_session(data: &[u8]) -> Outcome {
    let mut raw = [0u8; 63];
    let n = data.len().min(raw.len());
    raw[..n].copy_from_slice(&data[..n]);
    let tail = data.get(63..).unwrap_or_default();
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&raw[..16]);
    let device = i64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let ip = if raw[24] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(raw[25], raw[26], raw[27], raw[28]))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&raw[25..41]).unwrap_or_default(),
        ))
    };
    let port = u16::from_le_bytes([raw[41], raw[42]]);
    let nanos = u128::from_le_bytes(raw[43..59].try_into().unwrap_or_default());
    // Realistic clocks (up to year 9999) and, now and then, any u128.
    let nanos = if raw[24] & 2 == 0 {
        nanos % 253_402_300_800_000_000_000
    } else {
        nanos
    };
    let bound: Vec<i64> = tail
        .chunks_exact(8)
        .take(64)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let state = bus::messages::UdpSessionState {
        sid,
        device,
        addr: SocketAddr::new(ip, port),
        last_heartbeat_unix_nanos: nanos,
        sidx: u16::from_le_bytes([raw[59], raw[60]]),
        ridx: u16::from_le_bytes([raw[61], raw[62]]),
        bound: bound.clone(),
    };
    let json = bus::cluster::session_json(&state);
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| format!("session JSON does not parse: {e}: {json}"))?;
    ensure!(
        value["DeviceID"].as_i64() == Some(device),
        "DeviceID in {json}"
    );
    ensure!(
        value["Addr"]["Port"].as_u64() == Some(u64::from(port)),
        "Port in {json}"
    );
    let ip_text = value["Addr"]["IP"].as_str().unwrap_or_default();
    let back: Option<IpAddr> = ip_text.parse().ok();
    let same_ip = match (ip, back) {
        (IpAddr::V6(v6), Some(IpAddr::V4(v4))) => v6.to_ipv4_mapped() == Some(v4),
        (a, Some(b)) => a == b,
        _ => false,
    };
    ensure!(same_ip, "IP {ip_text} for {ip}");
    ensure!(
        value["Sidx"].as_u64() == Some(u64::from(state.sidx)),
        "Sidx"
    );
    ensure!(
        value["Ridx"].as_u64() == Some(u64::from(state.ridx)),
        "Ridx"
    );
    let users: Vec<i64> = value["BindedUsers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    ensure!(users == bound, "BindedUsers");
    ensure!(
        bound.is_empty() == value["BindedUsers"].is_null(),
        "null for no users"
    );
    let time = value["LastHeartbeat"].as_str().unwrap_or_default();
    ensure!(time == bus::cluster::rfc3339_nanos(nanos), "LastHeartbeat");
    if nanos < 253_402_300_800_000_000_000 {
        ensure!(
            time.len() >= 20 && time.ends_with('Z') && &time[4..5] == "-",
            "RFC 3339 shape {time}"
        );
    }
    // The sid's text form round-trips too.
    let text = Sid(sid).text();
    ensure!(
        Sid::parse_text(text.as_str()) == Ok(Sid(sid)),
        "sid text round trip"
    );
    let _ = Sid::parse_text(&String::from_utf8_lossy(tail));
    Ok(u64::from(bound.is_empty()) | (u64::from(ip.is_ipv4()) << 1))
}

// === msgbus spool records ===

fn seeds_spool() -> Vec<Vec<u8>> {
    let mut a = Vec::new();
    bus::msgbus::spool::encode_record(&mut a, 1_700_000_000_000, 0x30, b"upload body");
    let mut b = a.clone();
    bus::msgbus::spool::encode_record(&mut b, 1, 0x31, &[0xff; 100]);
    vec![a, b]
}

fn check_spool(data: &[u8]) -> Outcome {
    use bus::msgbus::spool::{decode_record, encode_record};
    let mut at = 0;
    let mut records = 0u64;
    while let Some((record, used)) = decode_record(&data[at..]) {
        ensure!(used > 0 && used <= data.len() - at, "used {used}");
        let mut out = Vec::new();
        encode_record(&mut out, record.unix_ms, record.msg_id, &record.message);
        ensure!(out == data[at..at + used], "spool record round trip");
        at += used;
        records += 1;
    }
    Ok(records.min(3))
}

// === the node's HTTP request heads (status and udpaddr endpoints) ===

fn seeds_http() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.transport == "http" && g.name.ends_with("request"));
    seeds.push(
        b"POST /admin/push?ids=16,17&msgid=0x36 HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
            .to_vec(),
    );
    seeds.push(b"GET /stat?type=app&x=%41%zz+y HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    seeds
}

fn check_http(data: &[u8]) -> Outcome {
    match edge::status::parse_head(data) {
        Ok(Some((request, head, body))) => {
            ensure!(head <= data.len(), "head {head} > len {}", data.len());
            ensure!(
                head >= 4 && &data[head - 4..head] == b"\r\n\r\n",
                "head end"
            );
            ensure!(body <= 1024 * 1024, "body {body} above the cap");
            ensure!(request.body.is_empty(), "body filled by parse_head");
            let again = edge::status::parse_head(&data[..head]);
            let same = matches!(&again, Ok(Some((r, h, b))) if *h == head && *b == body
                && r.path == request.path && r.method == request.method && r.query == request.query);
            ensure!(same, "the head alone parses differently");
            for (_, v) in &request.query {
                let _ = edge::status::parse_msg_id(v);
            }
            let metrics = edge::metrics::NodeMetrics::new(1);
            let _ = edge::status::route(&request, &metrics);
            Ok(1 + request.query.len().min(3) as u64 + 4 * u64::from(body > 0))
        }
        Ok(None) => Ok(0),
        Err(why) => Ok(feature_of(why)),
    }
}

// === comet.conf and addresses ===

fn seeds_conf() -> Vec<Vec<u8>> {
    vec![
        b"args=\"-lip=127.0.0.2 -ports=:1234,:1235 -rh=127.0.0.1:6379 -logtostderr -v=2\"\n"
            .to_vec(),
        b"-type=udp\n-hudp=:7999 --uto=40 '-zks=127.0.0.1:2181'".to_vec(),
    ]
}

fn check_conf(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let args = edge::cli::conf_file_args(&text);
    for arg in &args {
        ensure!(arg.starts_with("--") && arg.len() > 2, "argument {arg:?}");
        ensure!(
            text.contains(&arg[2..]),
            "argument {arg:?} not from the file"
        );
    }
    let normalized = edge::cli::normalize_args(args.clone());
    ensure!(
        normalized.len() == args.len(),
        "normalize changed the count"
    );
    Ok(args.len().min(4) as u64)
}

fn seeds_addr() -> Vec<Vec<u8>> {
    [
        ":1234",
        "127.0.0.1:29999",
        "localhost:80",
        "[::1]:8081",
        ":0",
        "host:1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn check_addr(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let ip = data
        .len()
        .is_multiple_of(2)
        .then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    match edge::config::parse_addr("--fuzz", &text, ip) {
        Ok(addr) => {
            if let Some(port) = text.strip_prefix(':') {
                ensure!(port.parse::<u16>() == Ok(addr.port()), "port of {text:?}");
                ensure!(Some(addr.ip()) == ip || ip.is_none(), "ip of {text:?}");
            } else {
                ensure!(text.ends_with(&addr.port().to_string()), "port of {text:?}");
            }
            Ok(1 + u64::from(addr.is_ipv6()))
        }
        Err(e) => Ok(err_feature(12, &e)),
    }
}
