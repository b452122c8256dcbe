//! Property tests for the text formats: the login string (`LoginRequest::parse`, `verify`,
//! `signature`), the pub/sub payloads and channel ids, and the ZooKeeper node data, on
//! arbitrary bytes and mutated golden vectors, against std-based models, plus round trips of
//! every encoder. 100 000 cases per property.

mod common;

use edge_proto::login::{
    DEFAULT_SALT, LoginReject, LoginReply, LoginRequest, MAX_AGE_SECS, signature,
};
use edge_proto::pubsub::{
    CommonMsg, DeviceUsersEvent, ModifiedPasswdUser, PUB_COMMON_MSG_PREFIX, PubKeyEvent,
    common_msg_id, write_common_msg, write_common_msg_channel,
};
use edge_proto::zk::{CometNode, MsgbusNode, RabbitNode};
use proptest::prelude::*;

const CASES: u32 = 100_000;

mod mutation;
use mutation::*;

/// Strings of `len` characters drawn from `alphabet`.
fn chars(alphabet: &'static [u8], len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(alphabet), len)
        .prop_map(|bytes| String::from_utf8(bytes).unwrap_or_default())
}

/// Arbitrary bytes, bytes made of the formats' own characters, or mutated seeds.
fn text_input(seeds: &[&[u8]]) -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(
        proptest::sample::select(b"0123456789|,.:+-xX \xff".to_vec()),
        0..40,
    );
    prop_oneof![input(seeds.iter().map(|s| s.to_vec()).collect()), noise]
}

fn login_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        "ws_login_phone_request",
        "ws_login_not_multiple_of_16_request",
        "ws_login_wrong_params_request",
    ]
    .iter()
    .map(|n| common::ws_payload(common::bytes(n)))
    .collect();
    seeds.push(b"-1|0|0|".to_vec());
    seeds
}

fn push_payloads() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        "redis_push_0x36_publish",
        "redis_device_online_published_by_udp_comet",
    ]
    .iter()
    .map(|n| {
        let bytes = common::bytes(n);
        let at = bytes.windows(4).position(|w| w == b"$13\r").unwrap() + 5;
        bytes[at..at + 13].to_vec()
    })
    .collect();
    seeds.push(b"16,-1,x,,+32|a|b".to_vec());
    seeds
}

/// The `strconv.ParseInt`/`ParseUint` model: std's parsers, minus std's `+` on unsigned.
fn model_i64(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn model_u64(field: &[u8]) -> Option<u64> {
    (!field.starts_with(b"+")).then_some(())?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn bytes_of(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// `LoginRequest::parse` agrees with a std-based model, re-encodes stably, and `verify`
    /// agrees with a recomputation of age and signature.
    #[test]
    fn login_parse_is_consistent(
        message in input(login_seeds()),
        now_offset in 0u64..120,
        now in any::<u64>(),
    ) {
        let fields: Vec<&[u8]> = message.split(|&b| b == b'|').collect();
        let model = match fields[..] {
            [id, ts, timeout, _] => model_i64(id).zip(model_u64(ts)).zip(model_u64(timeout)),
            _ => None,
        };
        match LoginRequest::parse(&message) {
            Ok(request) => {
                prop_assert_eq!(
                    model,
                    Some(((request.id, request.timestamp), request.timeout))
                );
                let canonical = bytes_of(|out| request.write_to(out));
                prop_assert_eq!(LoginRequest::parse(&canonical), Ok(request));
                for now in [request.timestamp.saturating_add(now_offset), now] {
                    for allow_zero in [false, true] {
                        let fresh = match request.timestamp {
                            0 => allow_zero,
                            ts => ts <= now && now - ts < MAX_AGE_SECS,
                        };
                        let signed = signature(
                            request.id,
                            request.timestamp,
                            request.timeout,
                            DEFAULT_SALT.as_bytes(),
                        );
                        let expected = if !fresh {
                            Err(LoginReject::WrongTimestamp)
                        } else if signed[..] == *request.signature {
                            Ok(())
                        } else {
                            Err(LoginReject::WrongMd5)
                        };
                        prop_assert_eq!(
                            request.verify(DEFAULT_SALT.as_bytes(), now, allow_zero),
                            expected
                        );
                    }
                }
            }
            Err(error) => {
                prop_assert_eq!(model, None);
                prop_assert_eq!(error.reply(), LoginReply::WrongParams);
            }
        }
    }

    /// A signed login string verifies for 60 s, and any change to its signature is refused.
    #[test]
    fn login_round_trip(
        id in any::<i64>(),
        timestamp in 1u64..,
        timeout in any::<u64>(),
        salt in proptest::collection::vec(any::<u8>(), 0..24),
        age in 0u64..60,
        flip in (0usize..24, 0u8..8),
    ) {
        let sig = signature(id, timestamp, timeout, &salt);
        let wire = bytes_of(|out| {
            LoginRequest {
                id,
                timestamp,
                timeout,
                signature: &sig,
            }
            .write_to(out)
        });
        let request = LoginRequest::parse(&wire).unwrap();
        prop_assert_eq!(
            (
                request.id,
                request.timestamp,
                request.timeout,
                request.signature
            ),
            (id, timestamp, timeout, &sig[..])
        );
        let now = timestamp.saturating_add(age);
        prop_assert_eq!(
            request.verify(&salt, now, false),
            if now - timestamp < 60 {
                Ok(())
            } else {
                Err(LoginReject::WrongTimestamp)
            }
        );
        let mut bad = sig;
        bad[flip.0] ^= 1 << flip.1;
        let forged = LoginRequest {
            signature: &bad,
            ..request
        };
        prop_assert_eq!(
            forged.verify(&salt, timestamp, false),
            Err(LoginReject::WrongMd5)
        );
    }

    /// `PubKeyEvent::parse` agrees with the model and re-encodes to a payload that parses the same.
    #[test]
    fn pubkey_parse_is_consistent(
        payload in text_input(&[b"17|127.0.0.1|1", b"0|127.0.0.1|0"]),
    ) {
        let fields: Vec<&[u8]> = payload.split(|&b| b == b'|').collect();
        let model = match fields[..] {
            [id, comet, flag @ (b"0" | b"1")]
                if !comet.is_empty() && std::str::from_utf8(comet).is_ok() =>
            {
                model_i64(id).map(|id| (id, flag == b"1"))
            }
            _ => None,
        };
        match PubKeyEvent::parse(&payload) {
            Ok(event) => {
                prop_assert_eq!(model, Some((event.id, event.online)));
                let again = bytes_of(|out| event.write_to(out));
                prop_assert_eq!(PubKeyEvent::parse(&again), Ok(event));
                prop_assert_eq!(event.is_reset(), event.id == 0 && !event.online);
            }
            Err(_) => prop_assert_eq!(model, None),
        }
    }

    /// `DeviceUsersEvent::parse` agrees with the model and round-trips.
    #[test]
    fn device_users_parse_is_consistent(payload in text_input(&[b"-1|16|0", b"-1|16|1"])) {
        let fields: Vec<&[u8]> = payload.split(|&b| b == b'|').collect();
        let model = match fields[..] {
            [device, user, kind] if !kind.is_empty() => model_i64(device)
                .zip(model_i64(user))
                .map(|du| (du, kind != b"0")),
            _ => None,
        };
        match DeviceUsersEvent::parse(&payload) {
            Ok(event) => {
                prop_assert_eq!(model, Some(((event.device, event.user), event.bind)));
                prop_assert_eq!(
                    DeviceUsersEvent::parse(&bytes_of(|out| event.write_to(out))),
                    Ok(event)
                );
            }
            Err(_) => prop_assert_eq!(model, None),
        }
    }

    /// `ModifiedPasswdUser::parse` agrees with the model and round-trips.
    #[test]
    fn modified_passwd_parse_is_consistent(payload in text_input(&[b"32", b"-16"])) {
        let parsed = ModifiedPasswdUser::parse(&payload).ok();
        prop_assert_eq!(parsed.map(|u| u.0), model_i64(&payload));
        if let Some(user) = parsed {
            prop_assert_eq!(
                bytes_of(|out| user.write_to(out)),
                user.0.to_string().into_bytes()
            );
        }
    }

    /// `common_msg_id` agrees with a model of Go's base detection.
    #[test]
    fn common_msg_id_is_consistent(
        channel in prop_oneof![
            text_input(&[
                b"PubCommonMsg:0x36",
                b"PubCommonMsg:066",
                b"PubCommonMsg:54",
                b"PubCommonMsg:0"
            ]),
            chars(b"0123456789abcdefxX", 0..8)
                .prop_map(|s| format!("{PUB_COMMON_MSG_PREFIX}{s}").into_bytes()),
        ],
    ) {
        let model = channel
            .strip_prefix(PUB_COMMON_MSG_PREFIX.as_bytes())
            .and_then(|rest| {
                let rest = std::str::from_utf8(rest).ok()?;
                let (radix, digits) = if let Some(hex) =
                    rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X"))
                {
                    (16, hex)
                } else if rest.len() > 1 && rest.starts_with('0') {
                    (8, &rest[1..])
                } else {
                    (10, rest)
                };
                let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
                valid
                    .then(|| u16::from_str_radix(digits, radix).ok())
                    .flatten()
            });
        prop_assert_eq!(common_msg_id(&channel).ok(), model);
    }

    /// `CommonMsg::parse` splits at the first `|`; the ids iterator yields the valid ids
    /// and counts the rest; the payload re-encodes exactly when every id is canonical.
    #[test]
    fn common_msg_parse_is_consistent(
        payload in text_input(
            &push_payloads()
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>()
        ),
    ) {
        match CommonMsg::parse(&payload) {
            Ok(msg) => {
                prop_assert!(!msg.ids.contains(&b'|'));
                prop_assert_eq!([msg.ids, b"|", msg.body].concat(), payload.clone());
                let pieces: Vec<&[u8]> = if msg.ids.is_empty() {
                    vec![]
                } else {
                    msg.ids.split(|&b| b == b',').collect()
                };
                let model: Vec<i64> = pieces.iter().filter_map(|p| model_i64(p)).collect();
                let mut ids = msg.ids();
                let valid: Vec<i64> = ids.by_ref().collect();
                prop_assert_eq!(&valid, &model);
                prop_assert_eq!(ids.skipped(), pieces.len() - valid.len());
                let ours = bytes_of(|out| write_common_msg(out, &valid, msg.body));
                let canonical = pieces
                    .iter()
                    .zip(&valid)
                    .all(|(p, id)| *p == id.to_string().as_bytes());
                if ids.skipped() == 0 && canonical {
                    prop_assert_eq!(ours, payload);
                }
            }
            Err(_) => prop_assert!(!payload.contains(&b'|')),
        }
    }

    /// `CometNode::parse`: accepted data re-encodes to data that parses to the same text.
    #[test]
    fn comet_node_parse_is_consistent(
        data in text_input(&[
            b"ws://127.0.0.1:1234/ws,0.250000,16318480,9001,3",
            b"u,1,0,0,0"
        ]),
    ) {
        if let Ok(node) = CometNode::parse(&data) {
            prop_assert!(!node.url.is_empty() && node.cpu.is_finite() && node.cpu >= 0.0);
            let once = bytes_of(|out| node.write_to(out));
            let again = CometNode::parse(&once).unwrap();
            prop_assert_eq!(
                (again.url, again.mem_total, again.mem_used, again.online),
                (node.url, node.mem_total, node.mem_used, node.online)
            );
            prop_assert_eq!(bytes_of(|out| again.write_to(out)), once);
        }
    }

    /// `RabbitNode::parse` and `MsgbusNode::parse`: accepted data re-encodes byte for byte.
    #[test]
    fn rabbit_and_msgbus_nodes_are_consistent(
        data in text_input(&[
            b"10.0.0.5:5672,MsgTopic",
            b"192.168.2.13:9923"
        ]),
    ) {
        if let Ok(node) = RabbitNode::parse(&data) {
            prop_assert!(
                !node.addr.is_empty() && !node.exchange.is_empty() && !node.addr.contains(',')
            );
            prop_assert_eq!(bytes_of(|out| node.write_to(out)), data.clone());
        }
        if let Ok(node) = MsgbusNode::parse(&data) {
            prop_assert_eq!(bytes_of(|out| node.write_to(out)), data.clone());
            let port = node.port.to_string();
            prop_assert!(node.addr.ends_with(port.as_str()) && node.addr.contains(':'));
            prop_assert!(node.port != 0 && !node.host().is_empty());
        }
    }

    /// Every pub/sub encoder round-trips through its parser.
    #[test]
    fn pubsub_round_trip(
        id in any::<i64>(),
        other in any::<i64>(),
        online in any::<bool>(),
        msg_id in any::<u16>(),
        comet in chars(b"0123456789.abc:", 1..20),
        ids in proptest::collection::vec(any::<i64>(), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let event = PubKeyEvent {
            id,
            comet: &comet,
            online,
        };
        let wire = bytes_of(|out| event.write_to(out));
        prop_assert_eq!(PubKeyEvent::parse(&wire), Ok(event));
        let bind = DeviceUsersEvent {
            device: id,
            user: other,
            bind: online,
        };
        prop_assert_eq!(
            DeviceUsersEvent::parse(&bytes_of(|out| bind.write_to(out))),
            Ok(bind)
        );
        let user = ModifiedPasswdUser(id);
        prop_assert_eq!(
            ModifiedPasswdUser::parse(&bytes_of(|out| user.write_to(out))),
            Ok(user)
        );
        prop_assert_eq!(
            common_msg_id(bytes_of(|out| write_common_msg_channel(out, msg_id))),
            Ok(msg_id)
        );
        let payload = bytes_of(|out| write_common_msg(out, &ids, &body));
        let msg = CommonMsg::parse(&payload).unwrap();
        prop_assert_eq!(msg.body, &body[..]);
        prop_assert_eq!(msg.ids().collect::<Vec<_>>(), ids);
    }

    /// Every ZooKeeper node encoder round-trips through its parser.
    #[test]
    fn zk_round_trip(
        url in chars(b"abcws:/.0123456789,", 1..30),
        micro in 0u64..2_000_000,
        mem in any::<(u64, u64, u64)>(),
        addr in chars(b"abc.0123456789:", 1..20),
        exchange in chars(b"MsgTopic_", 1..10),
        port in 1u16..,
    ) {
        let cpu = micro as f64 / 1e6;
        let node = CometNode {
            url: &url,
            cpu,
            mem_total: mem.0,
            mem_used: mem.1,
            online: mem.2,
        };
        let data = bytes_of(|out| node.write_to(out));
        let back = CometNode::parse(&data).unwrap();
        prop_assert_eq!(
            (back.url, back.mem_total, back.mem_used, back.online),
            (&url[..], mem.0, mem.1, mem.2)
        );
        prop_assert!((back.cpu - cpu).abs() < 1e-9, "{} vs {}", back.cpu, cpu);
        let rabbit = RabbitNode {
            addr: &addr,
            exchange: &exchange,
        };
        let wire = bytes_of(|out| rabbit.write_to(out));
        prop_assert_eq!(RabbitNode::parse(&wire), Ok(rabbit));
        let text = format!("{addr}:{port}");
        let msgbus = MsgbusNode::parse(text.as_bytes()).unwrap();
        prop_assert_eq!((msgbus.host(), msgbus.port), (&addr[..], port));
    }
}

/// Every reply payload of up to 2 bytes: `decode` accepts exactly what `encode` produces.
#[test]
fn login_replies_exhaustive() {
    let mut inputs: Vec<Vec<u8>> = vec![vec![]];
    inputs.extend((0..=255u8).map(|a| vec![a]));
    inputs.extend((0..=u16::MAX).map(|v| v.to_be_bytes().to_vec()));
    let mut accepted = 0;
    for bytes in inputs {
        if let Some(reply) = LoginReply::decode(&bytes) {
            accepted += 1;
            let (encoded, len) = reply.encode();
            assert_eq!(&encoded[..len], bytes.as_slice());
            assert_eq!(reply.code(), bytes[0]);
        }
    }
    assert_eq!(accepted, 11 + 15);
}
