//! Golden vectors for the text formats: the WebSocket login string and its replies, the Redis
//! pub/sub payloads (`PubKey`, `PubCommonMsg:0x36`), and the ZooKeeper node data of docs/protocol.md §9.5.

mod common;

use edge_proto::login::{DEFAULT_SALT, LoginError, LoginReply, LoginRequest, signature};
use edge_proto::pubsub::{
    CommonMsg, PUB_COMMON_MSG_PATTERN, PUB_KEY, PubKeyEvent, common_msg_id, write_common_msg,
    write_common_msg_channel,
};
use edge_proto::zk::{CometNode, MsgbusNode, RabbitNode};

/// The bulk strings of a RESP array of bulk strings (enough for the captured vectors).
fn resp_bulks(mut bytes: &[u8]) -> Vec<&[u8]> {
    fn line(bytes: &[u8]) -> (&[u8], &[u8]) {
        let end = bytes.windows(2).position(|w| w == b"\r\n").expect("CRLF");
        (&bytes[..end], &bytes[end + 2..])
    }
    let (head, rest) = line(bytes);
    assert_eq!(head[0], b'*');
    let count: usize = std::str::from_utf8(&head[1..]).unwrap().parse().unwrap();
    bytes = rest;
    (0..count)
        .map(|_| {
            let (head, rest) = line(bytes);
            assert_eq!(head[0], b'$');
            let len: usize = std::str::from_utf8(&head[1..]).unwrap().parse().unwrap();
            let (bulk, rest) = rest.split_at(len);
            assert_eq!(&rest[..2], b"\r\n");
            bytes = &rest[2..];
            bulk
        })
        .collect()
}

fn login_payloads(name: &str) -> Vec<Vec<u8>> {
    let vector = common::all().iter().find(|v| v.name == name).unwrap();
    let mut runs = vec![common::ws_payload(&vector.bytes)];
    runs.extend(vector.other_run.as_deref().map(common::ws_payload));
    runs
}

#[test]
fn captured_login_strings_verify_at_their_capture_time() {
    for (name, id) in [
        ("ws_login_phone_request", 16),
        ("ws_login_not_multiple_of_16_request", 17),
    ] {
        for payload in login_payloads(name) {
            let request = LoginRequest::parse(&payload).unwrap();
            assert_eq!((request.id, request.timeout), (id, 30), "{name}");
            let now = request.timestamp;
            assert_eq!(
                request.verify(DEFAULT_SALT.as_bytes(), now, false),
                Ok(()),
                "{name}"
            );
            assert_eq!(
                request.verify(DEFAULT_SALT.as_bytes(), now + 59, false),
                Ok(())
            );
            assert!(
                request
                    .verify(DEFAULT_SALT.as_bytes(), now + 60, false)
                    .is_err()
            );
            assert!(request.verify(b"other salt", now, false).is_err());
            let sig = signature(
                request.id,
                request.timestamp,
                request.timeout,
                DEFAULT_SALT.as_bytes(),
            );
            assert_eq!(&sig[..], request.signature);
            let mut again = Vec::new();
            request.write_to(&mut again);
            assert_eq!(again, payload);
        }
    }
}

#[test]
fn captured_login_replies() {
    let wrong = common::ws_payload(common::bytes("ws_login_wrong_params_request"));
    assert_eq!(wrong, b"16|abc|30");
    assert_eq!(LoginRequest::parse(&wrong), Err(LoginError::Params));
    for (name, reply) in [
        ("ws_login_phone_ack", LoginReply::PhoneOk(1)),
        ("ws_login_wrong_params_ack", LoginError::Params.reply()),
        ("ws_login_not_multiple_of_16_ack", LoginReply::WrongId),
    ] {
        let captured = common::ws_payload(common::bytes(name));
        let mut ours = Vec::new();
        reply.write_to(&mut ours);
        assert_eq!(ours, captured, "{name}");
        let (bytes, len) = reply.encode();
        assert_eq!(&bytes[..len], captured.as_slice());
        assert_eq!(LoginReply::decode(&captured), Some(reply));
    }
}

#[test]
fn captured_push_publish() {
    let bulks = resp_bulks(common::bytes("redis_push_0x36_publish"));
    let [command, channel, payload] = bulks[..] else {
        panic!("3 bulks")
    };
    assert_eq!(command, b"PUBLISH");
    assert_eq!(common_msg_id(channel), Ok(0x36));
    let msg = CommonMsg::parse(payload).unwrap();
    let mut ids = msg.ids();
    assert_eq!(ids.by_ref().collect::<Vec<_>>(), [16]);
    assert_eq!(ids.skipped(), 0);
    // Status body: type 5 (invited), id 987654321, empty payload.
    let mut body = vec![5];
    body.extend_from_slice(&987_654_321i64.to_le_bytes());
    body.push(0);
    assert_eq!(msg.body, body.as_slice());
    let mut ours = Vec::new();
    write_common_msg(&mut ours, &[16], &body);
    assert_eq!(ours, payload);
    ours.clear();
    write_common_msg_channel(&mut ours, 0x36);
    assert_eq!(ours, channel);
}

#[test]
fn captured_device_online_push() {
    let bulks = resp_bulks(common::bytes("redis_device_online_published_by_udp_comet"));
    let [kind, pattern, channel, payload] = bulks[..] else {
        panic!("4 bulks")
    };
    assert_eq!(
        (kind, pattern),
        (&b"pmessage"[..], PUB_COMMON_MSG_PATTERN.as_bytes())
    );
    assert_eq!(common_msg_id(channel), Ok(0x36));
    let msg = CommonMsg::parse(payload).unwrap();
    assert_eq!(msg.ids().collect::<Vec<_>>(), [16]);
    let mut body = vec![9];
    body.extend_from_slice(&(-1i64).to_le_bytes());
    body.push(0);
    assert_eq!(msg.body, body.as_slice());
    let mut ours = Vec::new();
    write_common_msg(&mut ours, &[16], msg.body);
    assert_eq!(ours, payload);
}

#[test]
fn captured_pubkey_events() {
    for (name, online) in [
        ("redis_pubkey_phone_online", true),
        ("redis_pubkey_phone_offline", false),
    ] {
        let bulks = resp_bulks(common::bytes(name));
        let [kind, channel, payload] = bulks[..] else {
            panic!("3 bulks")
        };
        assert_eq!((kind, channel), (&b"message"[..], PUB_KEY.as_bytes()));
        let event = PubKeyEvent::parse(payload).unwrap();
        assert_eq!(
            event,
            PubKeyEvent {
                id: 17,
                comet: "127.0.0.1",
                online
            }
        );
        assert!(!event.is_reset());
        let mut ours = Vec::new();
        event.write_to(&mut ours);
        assert_eq!(ours, payload);
    }
}

#[test]
fn documented_zk_node_data() {
    let mut out = Vec::new();
    let comet = CometNode {
        url: "ws://127.0.0.1:1234/ws",
        cpu: 0.25,
        mem_total: 16_318_480,
        mem_used: 9_001,
        online: 3,
    };
    comet.write_to(&mut out);
    assert_eq!(out, b"ws://127.0.0.1:1234/ws,0.250000,16318480,9001,3");
    assert_eq!(CometNode::parse(&out), Ok(comet));
    let msgbus = MsgbusNode::parse(b"192.168.2.13:9923").unwrap();
    assert_eq!((msgbus.host(), msgbus.port), ("192.168.2.13", 9923));
    let rabbit = RabbitNode::parse(b"10.0.0.5:5672,MsgTopic").unwrap();
    assert_eq!(rabbit, RabbitNode::new("10.0.0.5:5672"));
}
