//! The global allocator type for the `cloudsocket` binary: mimalloc.
//!
//! Owns only the choice of allocator. It does not install it: a library cannot, so the binary
//! declares the `#[global_allocator]` static itself:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: tuning::Allocator = tuning::Allocator;
//!
//! fn main() {
//!     let buffer = vec![0u8; 4096]; // served by mimalloc
//!     assert_eq!(buffer.len(), 4096);
//! }
//! ```
//!
//! mimalloc keeps per-thread heaps, which suits one executor per core: a shard's allocations stay
//! on its thread and never contend with another shard's.

/// The allocator the binary installs with `#[global_allocator]` (see the module docs).
///
/// A re-export rather than `pub type`: a type alias of a unit struct is not a value, so
/// `static GLOBAL: tuning::Allocator = tuning::Allocator;` would not compile with one.
pub use mimalloc::MiMalloc as Allocator;
