//! A UDP device's state sync (`0x30`) in cluster mode, against real RabbitMQ, ZooKeeper and
//! Redis (from `scripts/test`): it reaches a queue bound to `MsgTopic` with `#`, routing key
//! `48`, carrying the device id as its source, and the device gets its ACK once the broker
//! confirmed it. (The original dropped these at the msgbus: docs/protocol.md §10.2.) The
//! links open with the link secret; a comet with another secret never links.

mod cluster_support;
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_support::{
    comet_with_secret, next_upload, registered_msgbus, testenv, unique, upload_queue,
};
use support::udp::Device;

#[test]
fn a_udp_devices_state_sync_reaches_rabbitmq_under_its_id() {
    let secret: &[u8] = b"uploads-link-secret";
    let (bus, registration, root) = registered_msgbus("cs-msgbus-up", Some(secret));
    let (_amqp, mut queue) = testenv::within(Duration::from_secs(15), "RabbitMQ", upload_queue);
    let n = unique() % 200 + 20;
    let comets = format!("cs-comets-up-{n}");
    let node = comet_with_secret(&format!("127.0.{n}.4"), &root, &comets, Some(secret));
    let stranger = comet_with_secret(&format!("127.0.{n}.5"), &root, &comets, Some(b"guess"));

    let mac = [0x30, 0x22, 0x33, 0x44, 0x55, 0x66, (n % 250) as u8, 9];
    let mut device = Device::new(node.udp_addr.unwrap(), mac);
    let id = device.online();
    // The comet's msgbus link may still be dialling: the device retries, as devices do.
    let deadline = Instant::now() + Duration::from_secs(30);
    let acked = loop {
        let upload = device.upload(0x30, b"relay=on");
        device.send(&upload);
        if device.upload_ack(&upload, id).is_some() {
            break upload;
        }
        let cluster = node.metrics.cluster.clone().unwrap();
        assert!(
            Instant::now() < deadline,
            "the upload was never acked: comet {:?}, msgbus confirmed {} spooled {}",
            cluster.snapshot(),
            bus.metrics().msgs_to_mq.load(Ordering::Relaxed),
            bus.metrics().spooled.load(Ordering::Relaxed),
        );
    };
    let mut stored = acked.clone();
    stored[16..24].copy_from_slice(&id.to_le_bytes());
    edge_proto::frame::seal(&mut stored).unwrap();
    let found = loop {
        let (key, body) =
            next_upload(&mut queue, Duration::from_secs(10)).expect("the upload in the queue");
        if body == stored {
            break key;
        }
    };
    assert_eq!(found, "48", "routing key: the message id in decimal");
    assert_eq!(i64::from_le_bytes(stored[16..24].try_into().unwrap()), id);

    // The comet with the wrong secret found the msgbus but never linked.
    let metrics = stranger.metrics.cluster.clone().unwrap();
    assert!(support::eventually(|| {
        metrics.link_auth_failures.load(Ordering::Relaxed) >= 1
    }));
    assert_eq!(metrics.link_connects.load(Ordering::Relaxed), 0);
    let refused = &bus.metrics().unauthenticated;
    assert!(support::eventually(|| refused.load(Ordering::Relaxed) >= 1));

    drop(registration);
    stranger.shutdown();
    node.shutdown();
    bus.shutdown();
}
