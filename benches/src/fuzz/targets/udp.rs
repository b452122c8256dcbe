//! Fuzz targets: UDP datagrams of every command, and delivery patching.

use super::*;

// === UDP datagrams ===

pub(super) fn seeds_udp() -> Vec<Vec<u8>> {
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
        (0x30, 20),
        (0x31, 16),
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

pub(super) fn check_udp(data: &[u8]) -> Outcome {
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

pub(super) fn err_or<E: std::fmt::Debug>(tag: u64, r: &Result<(), E>) -> u64 {
    match r {
        Ok(()) => tag,
        Err(e) => err_feature(tag, e),
    }
}

pub(super) fn check_request(data: &[u8], req: &Request<'_>) -> Result<(), String> {
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

pub(super) fn seeds_patch() -> Vec<Vec<u8>> {
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
pub(super) fn check_patch(data: &[u8]) -> Outcome {
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
