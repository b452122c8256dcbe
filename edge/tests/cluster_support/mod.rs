//! What the cluster tests share: the services `scripts/test` started (Redis, RabbitMQ,
//! ZooKeeper), a msgbus and comets wired to them, bindings in Redis, and a queue bound to
//! the upload exchange.

#![allow(dead_code)]

#[path = "../../../bus/tests/support/testenv.rs"]
pub mod testenv;

use std::time::Duration;

use edge::config::{ClusterConfig, Config};
use edge::node::Node;
use futures_lite::StreamExt;
use lapin::options::ExchangeDeclareOptions;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};

pub fn redis() -> redis::Connection {
    let client = redis::Client::open(format!(
        "redis://{}/",
        testenv::service_addr(testenv::REDIS)
    ))
    .unwrap();
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

pub fn unique() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    ((nanos / 1000) % 1_000_000_000) as i64 + i64::from(std::process::id() % 1000) * 1_000_000_000
}

pub fn msgbus(listen: &str, tmp: &std::path::Path) -> bus::msgbus::Msgbus {
    msgbus_with_secret(listen, tmp, None)
}

/// A msgbus whose links need `secret` (`--link-secret`), when given.
pub fn msgbus_with_secret(
    listen: &str,
    tmp: &std::path::Path,
    secret: Option<&[u8]>,
) -> bus::msgbus::Msgbus {
    let mut config =
        bus::msgbus::Config::new(listen.to_owned(), tmp.join(format!("spool-{}", unique())));
    config.status = None;
    config.redis = Some(
        bus::redis_target::RedisTarget::parse(&testenv::service_addr(testenv::REDIS), None)
            .unwrap(),
    );
    config.brokers = vec![testenv::service_addr(testenv::AMQP)];
    config.link_secret = secret.map(<[u8]>::to_vec);
    bus::msgbus::Msgbus::start(config).expect("msgbus starts")
}

pub fn comet(ip: &str, zk_root: &str, comet_root: &str) -> Node {
    comet_with_secret(ip, zk_root, comet_root, None)
}

/// A comet that opens its msgbus links with `secret`, when given.
pub fn comet_with_secret(ip: &str, zk_root: &str, comet_root: &str, secret: Option<&[u8]>) -> Node {
    let mut config = Config::for_tests(2);
    config.node_ip = ip.to_owned();
    config.cluster = Some(ClusterConfig {
        redis: testenv::service_addr(testenv::REDIS),
        zookeeper: testenv::service_addr(testenv::ZK),
        msgbus_root: zk_root.to_owned(),
        comet_root: comet_root.to_owned(),
        comet_root_udp: format!("{comet_root}Udp"),
        msgbus: Vec::new(),
        pusher: true,
        link_secret: secret.map(<[u8]>::to_vec),
        zk_auth: None,
        redis_auth: None,
    });
    Node::start(config).expect("comet starts")
}

pub fn bind(con: &mut redis::Connection, device: i64, user: i64) {
    redis::cmd("HSET")
        .arg("device:owner")
        .arg(device)
        .arg(user)
        .query::<()>(con)
        .unwrap();
    redis::cmd("SADD")
        .arg(format!("u:{user}:devices"))
        .arg(device)
        .query::<()>(con)
        .unwrap();
}

/// A msgbus (links needing `secret`, when given) registered in ZooKeeper under a fresh
/// root named after `prefix`: the msgbus, its registration (keep it alive) and the root.
pub fn registered_msgbus(
    prefix: &str,
    secret: Option<&[u8]>,
) -> (bus::msgbus::Msgbus, keeper::zk::Registration, String) {
    let tmp = std::path::PathBuf::from(testenv::service_addr(testenv::TMP));
    let root = format!("{prefix}-{}", unique());
    let bus = msgbus_with_secret("127.0.0.1:0", &tmp, secret);
    let registration = keeper::zk::Registration::spawn(
        keeper::zk::ZkConfig::new(testenv::service_addr(testenv::ZK)),
        vec![keeper::zk::NodeSpec::fixed(
            root.clone(),
            bus.local_addr().to_string().into_bytes(),
        )],
    )
    .unwrap();
    (bus, registration, root)
}

/// A private queue bound to the upload exchange `MsgTopic` with `#` (every upload), and
/// its consumer; the connection must outlive the consumer.
pub fn upload_queue() -> (Connection, Consumer) {
    let uri = testenv::service_addr(testenv::AMQP);
    async_global_executor::block_on(async {
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let topic = ExchangeKind::Topic;
        let none = FieldTable::default;
        channel
            .exchange_declare("MsgTopic".into(), topic, durable, none())
            .await
            .unwrap();
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare("".into(), private, none())
            .await
            .unwrap();
        let bind = QueueBindOptions::default();
        channel
            .queue_bind(
                queue.name().clone(),
                "MsgTopic".into(),
                "#".into(),
                bind,
                none(),
            )
            .await
            .unwrap();
        let consume = BasicConsumeOptions::default();
        let consumer = channel
            .basic_consume(queue.name().clone(), "edge-test".into(), consume, none())
            .await
            .unwrap();
        (conn, consumer)
    })
}

/// The next upload on `consumer`, `(routing key, body)`, waiting at most `limit`.
pub fn next_upload(consumer: &mut Consumer, limit: Duration) -> Option<(String, Vec<u8>)> {
    async_global_executor::block_on(async {
        let next = async { consumer.next().await };
        let timeout = async {
            async_io::Timer::after(limit).await;
            None
        };
        let delivery = futures_lite::future::or(next, timeout).await?.ok()?;
        delivery.ack(BasicAckOptions::default()).await.ok()?;
        Some((delivery.routing_key.as_str().to_owned(), delivery.data))
    })
}
