//! Fuzz targets: The comet ↔ msgbus link, Redis pub/sub payloads, ZooKeeper node data, status bodies.

use super::*;

// === comet ↔ msgbus link ===

pub(super) fn seeds_link() -> Vec<Vec<u8>> {
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

pub(super) const LINK_MAX: [usize; 5] = [0, 16, 1024, 32 * 1024, 64 * 1024];

/// `data[0]` picks the limit, `data[1]` the read size; the rest is the byte stream, read
/// the way a link reader does (append a chunk, decode until `None`, drop what was used).
pub(super) fn check_link(data: &[u8]) -> Outcome {
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

pub(super) fn seeds_link_payload() -> Vec<Vec<u8>> {
    golden_where(|g| g.transport == "tcp-msgbus" && g.bytes.len() > 4)
        .into_iter()
        .map(|b| b[4..].to_vec())
        .collect()
}

pub(super) fn check_link_payload(data: &[u8]) -> Outcome {
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
pub(super) fn check_payload(data: &[u8]) -> Result<(), String> {
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
pub(super) fn resp_payload(resp: &[u8]) -> Option<Vec<u8>> {
    let text = resp.strip_suffix(b"\r\n")?;
    let at = text.windows(2).rposition(|w| w == b"\r\n")?;
    Some(text[at + 2..].to_vec())
}

pub(super) fn seeds_pubsub() -> Vec<Vec<u8>> {
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
pub(super) fn check_pubsub(data: &[u8]) -> Outcome {
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

pub(super) fn seeds_zk() -> Vec<Vec<u8>> {
    vec![
        b"\x00ws://127.0.0.1:1234/ws,0.250000,16384000,8192000,42".to_vec(),
        b"\x00http://127.0.0.2:8081/api/device/udpaddr,1,0,0,0".to_vec(),
        b"\x01127.0.0.1:8600".to_vec(),
        b"\x01[::1]:8600".to_vec(),
        b"\x02127.0.0.1:5672,MsgTopic".to_vec(),
    ]
}

pub(super) fn check_zk(data: &[u8]) -> Outcome {
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

pub(super) fn seeds_status() -> Vec<Vec<u8>> {
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

pub(super) fn check_status(data: &[u8]) -> Outcome {
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
