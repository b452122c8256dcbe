//! Device uploads through the msgbus into a real RabbitMQ: published on `MsgTopic` with
//! the message id as routing key and confirmed before the device's ACK; with no broker
//! reachable, spooled on disk and acknowledged, then replayed in order (across a msgbus
//! restart too) once a live broker is given.

mod msgbus_support;
#[path = "support/testenv.rs"]
mod testenv;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::msgbus::Msgbus;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};
use msgbus_support::{FakeComet, config, direct, eventually, scratch_dir};

const WAIT: Duration = Duration::from_secs(15);
/// A port nothing listens on.
const DEAD_BROKER: &str = "127.0.0.1:1";

/// A queue bound to `MsgTopic` with routing key `msg_id`, and its consumer.
fn bind_queue(uri: &str, msg_id: u16) -> (Connection, Consumer) {
    async_global_executor::block_on(async {
        let conn = Connection::connect(uri, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                "MsgTopic".into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .unwrap();
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                "MsgTopic".into(),
                msg_id.to_string().as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "msgbus-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, consumer)
    })
}

/// The next message: `(routing key, body)`.
fn next_message(consumer: &mut Consumer) -> (String, Vec<u8>) {
    async_global_executor::block_on(async {
        let delivery = consumer.next().await.expect("consumer ended").unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        (delivery.routing_key.as_str().to_owned(), delivery.data)
    })
}

fn expect_ack(comet: &mut FakeComet, device: i64, upload: &[u8]) {
    let (ids, ack) = comet.recv(WAIT).expect("the device's ACK");
    assert_eq!(ids, [device]);
    assert_eq!(ack[24], upload[24] | 0x40, "ACK bit set");
    assert_eq!(ack[..24], upload[..24]);
    edge_proto::frame::verify_direct(&ack).expect("the ACK is resealed");
}

#[test]
fn upload_is_published_with_its_message_id_then_acked() {
    let uri = testenv::service_addr(testenv::AMQP);
    let (_conn, mut consumer) = bind_queue(&uri, 4242);
    let mut config = config("upload");
    config.brokers = vec![uri];
    let bus = Msgbus::start(config).unwrap();
    eventually(WAIT, "the broker connection", || {
        bus.metrics().brokers.load(Ordering::Relaxed) == 1
    });
    let mut comet = FakeComet::connect(bus.local_addr(), "127.0.0.20", 0);
    let upload = direct(-2001, 4242, b"temperature=21");
    comet.send(-2001, &[], &upload);
    expect_ack(&mut comet, -2001, &upload);
    let (key, body) = testenv::within(WAIT, "the upload in the queue", move || {
        next_message(&mut consumer)
    });
    assert_eq!((key.as_str(), body), ("4242", upload));
    assert_eq!(bus.metrics().msgs_to_mq.load(Ordering::Relaxed), 1);
    assert_eq!(bus.metrics().spooled.load(Ordering::Relaxed), 0);
    bus.shutdown();
}

#[test]
fn uploads_spool_while_no_broker_confirms_and_replay_in_order() {
    let uri = testenv::service_addr(testenv::AMQP);
    let (_conn, mut consumer) = bind_queue(&uri, 4343);
    let spool_dir = scratch_dir("spool-replay");
    let mut dead = config("unused");
    dead.spool_dir = spool_dir.clone();
    dead.brokers = vec![DEAD_BROKER.into()];

    // First msgbus: the broker is dead; the upload is spooled and acked.
    let bus = Msgbus::start(dead.clone()).unwrap();
    let mut comet = FakeComet::connect(bus.local_addr(), "127.0.0.21", 0);
    let first = direct(-2002, 4343, b"first");
    comet.send(-2002, &[], &first);
    expect_ack(&mut comet, -2002, &first);
    assert_eq!(bus.metrics().spooled.load(Ordering::Relaxed), 1);
    assert_eq!(bus.metrics().spool_records.load(Ordering::Relaxed), 1);
    bus.shutdown();

    // Second msgbus on the same spool, still no broker: the spool survived the restart.
    let bus = Msgbus::start(dead).unwrap();
    eventually(WAIT, "the spool reopened", || {
        bus.metrics().spool_records.load(Ordering::Relaxed) == 1
    });
    let mut comet = FakeComet::connect(bus.local_addr(), "127.0.0.21", 0);
    let second = direct(-2002, 4343, b"second");
    comet.send(-2002, &[], &second);
    expect_ack(&mut comet, -2002, &second);
    assert_eq!(bus.metrics().spool_records.load(Ordering::Relaxed), 2);

    // A live broker arrives on the feed (as ZooKeeper discovery would send it).
    bus.broker_feed().send(vec![uri]).unwrap();
    let got = testenv::within(WAIT, "the replayed uploads", move || {
        [next_message(&mut consumer), next_message(&mut consumer)]
    });
    assert_eq!(
        got,
        [("4343".to_owned(), first), ("4343".to_owned(), second)]
    );
    eventually(WAIT, "the spool to empty", || {
        bus.metrics().spool_records.load(Ordering::Relaxed) == 0
    });
    assert_eq!(bus.metrics().replayed.load(Ordering::Relaxed), 2);
    let left = std::fs::read_dir(&spool_dir).unwrap().count();
    assert_eq!(left, 0, "confirmed segments are deleted");
    bus.shutdown();
}
