//! `bus`: the msgbus — routing between comets, Redis online state and RabbitMQ uploads.
//!
//! Runs as a threaded sidecar behind bounded channels inside a comet, or as the standalone
//! `cloudsocket msgbus` server. It does not hold terminal connections (the edge does) and
//! does not do ZooKeeper registration (the keeper does).
//!
//! Not built yet beyond the service smoke tests; see the README's status table.
