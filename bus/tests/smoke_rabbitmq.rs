//! Smoke test: the RabbitMQ that `scripts/test` starts (or `CLOUDSOCKET_TEST_AMQP` names)
//! routes a confirmed publish through a topic exchange to a bound queue, with `lapin` on
//! `async-global-executor`.

#[path = "support/testenv.rs"]
mod testenv;

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

const ROUTING_KEY: &str = "54";

#[test]
fn rabbitmq_topic_publish_confirm_consume() {
    let uri = testenv::service_addr(testenv::AMQP);
    testenv::within(
        Duration::from_secs(30),
        "the RabbitMQ smoke test",
        move || async_global_executor::block_on(round_trip(uri)),
    )
    .expect("AMQP error");
}

async fn round_trip(uri: String) -> lapin::Result<()> {
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;

    // auto_delete: if an assertion fails before the explicit delete, the broker drops the
    // exchange once the exclusive queue (and with it the last binding) goes away.
    let exchange = testenv::unique_name("smoke");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "smoke".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let body = format!("smoke test via {exchange}").into_bytes();
    let confirm = channel
        .basic_publish(
            exchange.as_str().into(),
            ROUTING_KEY.into(),
            // mandatory: an unroutable message comes back with the confirm instead of vanishing.
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            BasicProperties::default(),
        )
        .await? // sent
        .await?; // confirmed by the broker
    assert!(confirm.is_ack(), "the broker nacked the publish");
    assert!(
        confirm.take_message().is_none(),
        "the message was returned as unroutable"
    );

    let delivery = consumer.next().await.expect("the consumer stream ended")?;
    assert_eq!(delivery.data, body);
    assert_eq!(delivery.exchange.as_str(), exchange);
    assert_eq!(delivery.routing_key.as_str(), ROUTING_KEY);
    delivery.ack(BasicAckOptions::default()).await?;

    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    conn.close(200, "smoke test done".into()).await?;
    Ok(())
}
