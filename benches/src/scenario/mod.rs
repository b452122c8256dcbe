//! The `loadgen` scenarios, one module each.

pub mod deadlines;
pub mod idle;
pub mod push;
pub mod relay;
pub mod spoof;
pub mod stall;
pub mod storm;
pub mod tracked;
pub mod udp;
pub mod udp_upload;
pub mod udpset;
pub mod upload;
