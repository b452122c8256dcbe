//! RabbitMQ brokers for uploads (docs/protocol.md §9.6): connections, the `MsgTopic`
//! exchange, round-robin publishing with publisher confirms.
//!
//! Each broker gets one connection and one confirm-mode channel; the exchange is declared
//! (topic, durable) on connect. [`Brokers::publish`] spreads a batch round-robin over the
//! connected brokers, then waits for every confirm under one deadline; a broker whose
//! publish errors or times out is closed and retried later with backoff (1 s doubling to
//! 30 s), a nack only fails that message. The list of addresses comes from outside
//! ([`Brokers::set_list`]: `--amqp` now, ZooKeeper discovery later).
//!
//! Runs on `async-global-executor` (lapin's runtime here) through `block_on` from the
//! upload thread. Does **not** spool or acknowledge anything (`upload` does).

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tracing::{info, warn};

use crate::net::redact_url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

struct Session {
    conn: Connection,
    channel: Channel,
}

struct Broker {
    addr: String,
    session: Option<Session>,
    retry_at: Instant,
    backoff: Duration,
    /// Failed connects since it was last up: the first is logged, then every tenth.
    failures: u64,
}

/// The brokers this msgbus publishes to.
pub(crate) struct Brokers {
    list: Vec<Broker>,
    cursor: usize,
    exchange: String,
    confirm_timeout: Duration,
}

/// AMQP heartbeat asked of the broker, seconds: a broker that went silent (a partition,
/// no RST) is noticed within about two of them, not after TCP's 15 minutes.
pub const HEARTBEAT_SECS: u16 = 5;

/// `amqp://<addr>/%2f` for a bare `host:port`, a URI as given; either way with
/// `heartbeat=` [`HEARTBEAT_SECS`] unless the URI sets its own.
pub fn amqp_uri(addr: &str) -> String {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("amqp://{addr}/%2f")
    };
    if uri.contains("heartbeat=") {
        return uri;
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}heartbeat={HEARTBEAT_SECS}")
}

async fn with_timeout<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        async_io::Timer::after(limit).await;
        None
    })
    .await
}

async fn connect(uri: &str, exchange: &str) -> lapin::Result<Session> {
    let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    Ok(Session { conn, channel })
}

impl Brokers {
    /// No brokers yet.
    pub fn new(exchange: String, confirm_timeout: Duration) -> Self {
        Self {
            list: Vec::new(),
            cursor: 0,
            exchange,
            confirm_timeout,
        }
    }

    /// Makes the broker set equal to `addrs` (duplicates ignored): new ones are tried at
    /// the next [`Brokers::reconnect_due`], missing ones closed.
    pub fn set_list(&mut self, addrs: &[String]) {
        let mut gone = Vec::new();
        self.list.retain_mut(|b| {
            let keep = addrs.contains(&b.addr);
            if !keep {
                gone.extend(b.session.take());
            }
            keep
        });
        for session in gone {
            close(session);
        }
        for addr in addrs {
            if !self.list.iter().any(|b| &b.addr == addr) {
                self.list.push(Broker {
                    addr: addr.clone(),
                    session: None,
                    retry_at: Instant::now(),
                    backoff: BACKOFF_MIN,
                    failures: 0,
                });
            }
        }
    }

    /// Connects every broker that is down and due for a retry.
    pub fn reconnect_due(&mut self) {
        let now = Instant::now();
        let exchange = self.exchange.clone();
        for broker in &mut self.list {
            if broker.session.is_some() || broker.retry_at > now {
                continue;
            }
            let uri = amqp_uri(&broker.addr);
            let attempt = async_global_executor::block_on(with_timeout(
                CONNECT_TIMEOUT,
                connect(&uri, &exchange),
            ));
            let broker_name = redact_url(&broker.addr);
            match attempt {
                Some(Ok(session)) => {
                    info!(broker = %broker_name, "RabbitMQ connected");
                    broker.session = Some(session);
                    broker.backoff = BACKOFF_MIN;
                    broker.failures = 0;
                }
                failed => {
                    broker.failures += 1;
                    if broker.failures % 10 == 1 {
                        let error = match failed {
                            Some(Err(e)) => e.to_string(),
                            _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
                        };
                        let (failures, retry_in) = (broker.failures, broker.backoff);
                        warn!(broker = %broker_name, %error, failures, ?retry_in, "RabbitMQ cannot connect");
                    }
                    broker.retry_at = Instant::now() + broker.backoff;
                    broker.backoff = (broker.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connected brokers (a broker whose connection closed is marked down here).
    pub fn connected(&mut self) -> usize {
        for index in 0..self.list.len() {
            let alive = self.list[index]
                .session
                .as_ref()
                .is_some_and(|s| s.conn.status().connected() && s.channel.status().connected());
            if !alive && self.list[index].session.is_some() {
                self.mark_down(index);
            }
        }
        self.list.iter().filter(|b| b.session.is_some()).count()
    }

    /// When the next down broker is due for a retry.
    pub fn next_retry(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter(|b| b.session.is_none())
            .map(|b| b.retry_at)
            .min()
    }

    fn mark_down(&mut self, index: usize) {
        if let Some(broker) = self.list.get_mut(index) {
            if let Some(session) = broker.session.take() {
                warn!(broker = %redact_url(&broker.addr), "RabbitMQ connection lost");
                close(session);
            }
            broker.retry_at = Instant::now() + broker.backoff;
            broker.backoff = (broker.backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn next_connected(&mut self, failed: &[usize]) -> Option<usize> {
        let n = self.list.len();
        for step in 0..n {
            let index = (self.cursor + step) % n;
            if self.list[index].session.is_some() && !failed.contains(&index) {
                self.cursor = (index + 1) % n;
                return Some(index);
            }
        }
        None
    }

    /// Publishes `(msg_id, message)` items round-robin and waits for their confirms;
    /// `true` at index i means item i was confirmed (acked) by a broker.
    pub fn publish(&mut self, items: &[(u16, &[u8])]) -> Vec<bool> {
        let mut failed: Vec<usize> = Vec::new();
        let ok = async_global_executor::block_on(self.publish_async(items, &mut failed));
        for index in failed {
            self.mark_down(index);
        }
        ok
    }

    async fn publish_async(
        &mut self,
        items: &[(u16, &[u8])],
        failed: &mut Vec<usize>,
    ) -> Vec<bool> {
        let mut ok = vec![false; items.len()];
        let mut pending = Vec::with_capacity(items.len());
        let properties = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2);
        for (item, (msg_id, message)) in items.iter().enumerate() {
            let Some(index) = self.next_connected(failed) else {
                break;
            };
            let Some(session) = self.list[index].session.as_ref() else {
                continue;
            };
            let send = session.channel.basic_publish(
                self.exchange.as_str().into(),
                msg_id.to_string().into(),
                BasicPublishOptions::default(),
                message,
                properties.clone(),
            );
            match with_timeout(self.confirm_timeout, send).await {
                Some(Ok(confirm)) => pending.push((item, index, confirm)),
                _ => failed.push(index),
            }
        }
        let deadline = Instant::now() + self.confirm_timeout;
        for (item, index, confirm) in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            match with_timeout(left, confirm).await {
                Some(Ok(confirmation)) => ok[item] = confirmation.is_ack(),
                _ => {
                    if !failed.contains(&index) {
                        failed.push(index);
                    }
                }
            }
        }
        ok
    }

    /// Closes every connection.
    pub fn close_all(&mut self) {
        for broker in &mut self.list {
            if let Some(session) = broker.session.take() {
                close(session);
            }
        }
    }
}

fn close(session: Session) {
    let _ = async_global_executor::block_on(with_timeout(
        CLOSE_TIMEOUT,
        session.conn.close(200, "msgbus: broker dropped".into()),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_uris_ask_for_heartbeats() {
        assert_eq!(
            amqp_uri("10.0.0.5:5672"),
            "amqp://10.0.0.5:5672/%2f?heartbeat=5"
        );
        assert_eq!(
            amqp_uri("amqp://u:p@h:5672/%2f?frame_max=4096"),
            "amqp://u:p@h:5672/%2f?frame_max=4096&heartbeat=5"
        );
        assert_eq!(
            amqp_uri("amqp://h/%2f?heartbeat=30"),
            "amqp://h/%2f?heartbeat=30"
        );
    }
}
