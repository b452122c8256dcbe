//! The `loadgen` scenarios, one module each.

pub mod idle;
pub mod push;
pub mod relay;
pub mod storm;
pub mod udp;
pub mod udpset;
