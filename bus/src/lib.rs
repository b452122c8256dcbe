//! `bus`: the msgbus — routing between comets, online state, device uploads.
//!
//! Inside a node it runs as a **sidecar thread behind bounded channels**: shards send it
//! [`messages::ToBus`] requests and receive [`messages::ToShard`] answers in their inbox,
//! woken through [`messages::Wake`]. The embedded backend ([`embedded`]) keeps online
//! state, mobile ids and bindings in memory and appends uploads to a log file; the
//! cluster backend ([`cluster`]) keeps them in Redis and relays through msgbus links;
//! [`msgbus`] is the msgbus program itself.
//!
//! It does not hold terminal connections (the edge does) and does not do ZooKeeper
//! registration (the keeper does).

pub mod cluster;
pub mod embedded;
pub mod frames;
pub mod histogram;
pub mod http_request;
pub mod messages;
pub mod msgbus;
pub mod net;
pub mod process_metrics;
pub mod redis_target;
pub mod sidecar;
pub mod throttle;
pub mod upload_log;
