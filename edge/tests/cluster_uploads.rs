//! A UDP device's state sync (`0x30`) in cluster mode, against real RabbitMQ, ZooKeeper and
//! Redis (from `scripts/test`): it reaches a queue bound to `MsgTopic` with `#`, routing key
//! `48`, carrying the device id as its source, and the device gets its ACK once the broker
//! confirmed it. (The original dropped these at the msgbus: §10.2 step 6, §14.4.)

mod cluster_support;
mod support;

use std::time::{Duration, Instant};

use cluster_support::{comet, msgbus, next_upload, testenv, unique, upload_queue};
use support::udp::Device;

#[test]
fn a_udp_devices_state_sync_reaches_rabbitmq_under_its_id() {
    let tmp = std::path::PathBuf::from(testenv::service_addr(testenv::TMP));
    let root = format!("cs-msgbus-up-{}", unique());
    let bus = msgbus("127.0.0.1:0", &tmp);
    let registration = keeper::zk::Registration::spawn(
        keeper::zk::ZkConfig::new(testenv::service_addr(testenv::ZK)),
        vec![keeper::zk::NodeSpec::fixed(
            root.clone(),
            bus.local_addr().to_string().into_bytes(),
        )],
    )
    .unwrap();
    let (_amqp, mut queue) = testenv::within(Duration::from_secs(15), "RabbitMQ", upload_queue);
    let n = unique() % 200 + 20;
    let node = comet(&format!("127.0.{n}.4"), &root, &format!("cs-comets-up-{n}"));

    let mac = [0x30, 0x22, 0x33, 0x44, 0x55, 0x66, (n % 250) as u8, 9];
    let mut device = Device::new(node.udp_addr.unwrap(), mac);
    let id = device.online();
    // The comet's msgbus link may still be dialling: the device retries, as devices do.
    let deadline = Instant::now() + Duration::from_secs(15);
    let acked = loop {
        let upload = device.upload(0x30, b"relay=on");
        device.send(&upload);
        if device.upload_ack(&upload, id).is_some() {
            break upload;
        }
        assert!(Instant::now() < deadline, "the upload was never acked");
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

    drop(registration);
    node.shutdown();
    bus.shutdown();
}
