//! `tuning`: where shards run and what the host allows.
//!
//! Owns `--cores` parsing and shard/sidecar placement, raising process limits at start,
//! host checks for `cloudsocket tune`, and the global allocator type. It does not start
//! executors (the edge does) and changes nothing on the host unless asked to.
