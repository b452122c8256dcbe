//! `tuning`: where shards run and what the host allows.
//!
//! Owns `--cores` parsing and shard/sidecar placement ([`cores`]), raising process limits at start
//! ([`limits`]), host checks for `cloudsocket tune` ([`host`]), the kernel memory figures the
//! benchmarks read ([`memory`]) and the global allocator type ([`alloc`]). It does not start executors or threads (the edge does), does not parse the command
//! line (the binary owns clap), and changes nothing on the host unless [`apply`] is called.
//!
//! ```
//! use tuning::cores::{CoreList, CoreSpec, plan};
//!
//! let spec: CoreSpec = "all".parse()?;
//! let online: CoreList = "0-3".parse()?; // in the binary: CoreList::online()?
//! let placement = plan(&spec.resolve(&online), &online, 2)?;
//! assert_eq!(placement.shards, [0, 1, 2, 3]);
//! assert_eq!(placement.sidecars, None); // every core has a shard: sidecars float
//!
//! let report = tuning::limits::raise_nofile();
//! println!("{report}"); // nofile: soft 1024 -> 20000, hard 20000 (ok)
//!
//! let checks = tuning::report(100_000);
//! print!("{}", tuning::host::render_table(&checks));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alloc;
pub mod cores;
pub mod host;
pub mod limits;
pub mod memory;

pub use alloc::Allocator;
pub use cores::{CoreList, CoreSpec, Placement};
pub use host::{ApplyResult, Check, apply, report};
pub use limits::{Limit, LimitReport};
