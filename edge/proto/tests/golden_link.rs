//! Golden vectors for the comet ↔ msgbus link: the handshake bytes and the captured
//! upstream/downstream frames, decoded to the documented ids and messages and re-encoded
//! byte for byte.

mod common;

use edge_proto::link::{
    CometKind, DEFAULT_MAX_PAYLOAD, Downstream, LinkDecoder, LinkItem, ORIGINAL_COMET_MAX_PAYLOAD,
    Upstream,
};

fn runs(name: &str) -> Vec<Vec<u8>> {
    let vector = common::all().iter().find(|v| v.name == name).unwrap();
    let mut runs = vec![vector.bytes.clone()];
    runs.extend(vector.other_run.clone());
    runs
}

/// The single frame of a captured vector, checked to use every byte.
fn only_frame(wire: &[u8], max: usize) -> &[u8] {
    let mut decoder = LinkDecoder::new(max);
    let (item, used) = decoder.decode(wire).expect("a whole frame");
    assert_eq!(used, wire.len());
    let LinkItem::Frame(payload) = item else {
        panic!("not a frame: {item:?}")
    };
    payload
}

#[test]
fn captured_handshakes() {
    for (name, kind) in [
        ("msgbus_handshake_ws_comet_to_msgbus", CometKind::Ws),
        ("msgbus_handshake_ws_msgbus_to_comet", CometKind::Ws),
        ("msgbus_handshake_udp_comet_to_msgbus", CometKind::Udp),
        ("msgbus_handshake_udp_msgbus_to_comet", CometKind::Udp),
    ] {
        let bytes = common::bytes(name);
        assert_eq!(CometKind::from_handshake_byte(bytes[0]), Ok(kind), "{name}");
        assert_eq!([kind.handshake_byte()], bytes, "{name}");
    }
}

#[test]
fn captured_upstream_frames() {
    let device_to_phone: Vec<i64> = (17..=31).collect();
    for (name, src, ids, body) in [
        (
            "msgbus_upstream_phone_to_device",
            17,
            vec![-1],
            &b"phone->device golden"[..],
        ),
        (
            "msgbus_upstream_device_to_phone",
            -1,
            device_to_phone,
            b"device->phone golden",
        ),
    ] {
        for wire in runs(name) {
            let payload = only_frame(&wire, DEFAULT_MAX_PAYLOAD);
            let up = Upstream::decode(payload).unwrap();
            assert_eq!(
                (up.src, up.ids.iter().collect::<Vec<_>>()),
                (src, ids.clone()),
                "{name}"
            );
            assert_eq!(up.ids.len(), ids.len());
            assert!(up.message.ends_with(body), "{name}");
            assert_eq!(up.message.len(), wire.len() - 14 - 8 * ids.len());
            let mut ours = Vec::new();
            up.write_to(&mut ours).unwrap();
            assert_eq!(ours, wire, "{name}");
            ours.clear();
            Upstream::write(&mut ours, src, &ids, up.message).unwrap();
            assert_eq!(ours, wire, "{name}");
        }
    }
}

#[test]
fn captured_downstream_frames() {
    for (name, ids, body) in [
        (
            "msgbus_downstream_phone_to_device",
            [-1],
            &b"phone->device golden"[..],
        ),
        (
            "msgbus_downstream_device_to_phone",
            [17],
            b"device->phone golden",
        ),
    ] {
        for wire in runs(name) {
            // The original comet's own limit still admits these frames.
            let payload = only_frame(&wire, ORIGINAL_COMET_MAX_PAYLOAD);
            let down = Downstream::decode(payload).unwrap();
            assert_eq!(down.ids.iter().collect::<Vec<_>>(), ids, "{name}");
            assert_eq!(down.ids.get(0), Some(ids[0]));
            assert!(down.message.ends_with(body));
            assert_eq!(down.message.len(), 96);
            let mut ours = Vec::new();
            down.write_to(&mut ours).unwrap();
            assert_eq!(ours, wire, "{name}");
            ours.clear();
            Downstream::write(&mut ours, &ids, down.message).unwrap();
            assert_eq!(ours, wire, "{name}");
        }
    }
}

/// Upstream phone→device and downstream phone→device carry the same message bytes.
#[test]
fn msgbus_relays_the_message_unmodified() {
    let up = common::bytes("msgbus_upstream_phone_to_device");
    let down = common::bytes("msgbus_downstream_phone_to_device");
    let up = Upstream::decode(only_frame(up, DEFAULT_MAX_PAYLOAD)).unwrap();
    let down = Downstream::decode(only_frame(down, DEFAULT_MAX_PAYLOAD)).unwrap();
    assert_eq!(up.message, down.message);
    assert_eq!(up.ids, down.ids);
}

#[test]
fn captured_stream_byte_by_byte_with_a_skip() {
    let mut wire = common::bytes("msgbus_upstream_device_to_phone").to_vec(); // 226-byte payload
    wire.extend_from_slice(common::bytes("msgbus_upstream_phone_to_device")); // 114-byte payload
    let mut decoder = LinkDecoder::new(200);
    let (mut buf, mut items) = (Vec::new(), Vec::new());
    for &byte in &wire {
        buf.push(byte);
        while let Some((item, used)) = decoder.decode(&buf) {
            items.push(match item {
                LinkItem::Frame(p) => format!("frame {}", Upstream::decode(p).unwrap().src),
                other => format!("{other:?}"),
            });
            buf.drain(..used);
        }
    }
    assert!(buf.is_empty());
    items.dedup();
    assert_eq!(items, ["Skipped { len: 226 }", "Discarded", "frame 17"]);
}
