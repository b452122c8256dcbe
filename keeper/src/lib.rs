//! `keeper`: ZooKeeper registration and discovery, and the RabbitMQ keeper.
//!
//! A sidecar thread behind channels in the comet and msgbus, or the standalone
//! `cloudsocket rmqkeeper`. It does not route messages (the bus does) and holds no
//! terminal state (the edge does).
//!
//! Not built yet beyond the service smoke tests; see the README's status table.
