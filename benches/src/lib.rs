//! `benches`: the load generator (`loadgen`), the side-by-side tokio peer (`tokio-peer`)
//! and the compare harness (`compare`). Figures live in `benches/RESULTS.md`, never in
//! timed tests: unit tests here check the generator's own logic only.

pub mod admin;
pub mod args;
pub mod compare;
pub mod fleet;
pub mod fuzz;
pub mod matrix;
pub mod msg;
pub mod poller;
pub mod report;
pub mod scenario;
pub mod server_cost;
pub mod stats;
pub mod svg;
pub mod svg_load;
pub mod udpdev;
pub mod wsclient;
