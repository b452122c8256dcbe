//! `edge-proto`: every wire format cloudsocket speaks, and nothing else.
//!
//! This crate is **pure**: no sockets, no clock, no threads, no randomness, no runtime.
//! Callers hand it bytes (and, where a rule depends on it, the current time or a
//! random value) and get back typed values, typed errors or bytes written into a
//! buffer they own. Every decoder returns an error for malformed input; none panics
//! and none reads out of range, whatever the input.
//!
//! It does **not** own connection state, timers, routing tables or any IO: those
//! live in the `edge` shell (per-shard glommio executors) and the `bus`/`keeper`
//! sidecars, which drive these codecs.
#![warn(missing_docs)]
#![deny(clippy::disallowed_methods)]

pub mod crc;
pub mod device;
pub mod frame;
pub mod handover;
pub mod id;
pub mod link;
pub mod link_auth;
pub mod login;
pub mod pubsub;
pub mod secret;
pub mod status;
pub mod ws;
pub mod zk;
