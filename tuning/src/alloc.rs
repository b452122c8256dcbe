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

/// Keeps this process's memory in 4 KiB pages (`prctl(PR_SET_THP_DISABLE)`), unless the
/// operator asked for huge pages (`--huge-pages`).
///
/// mimalloc asks for transparent huge pages on its arenas wherever the host allows
/// `madvise` (the Debian default), so touching a few bytes faults in 2 MiB: an idle node
/// then grows in 2 MiB steps, and a connection's ~200 bytes read as 300–500 in RSS
/// (`benches/RESULTS.md`, "Connect path and idle memory"). Huge pages save TLB misses on
/// large working sets; a proxy of mostly idle connections has the opposite shape.
pub fn small_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers.
    let ret = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Hands memory the calling thread freed back to the kernel where mimalloc still holds it
/// for reuse (a hash table's old storage after it grew): `mi_collect(false)`. mimalloc
/// purges freed spans only when it is next called after a delay, so an idle shard would
/// otherwise keep them resident. It walks the thread's heap pages, so a shard calls it on
/// its one-second tick, not per event. A no-op for memory another allocator served.
pub fn release_freed() {
    // SAFETY: mi_collect takes a flag and acts on the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_pages_and_release_are_harmless_to_call() {
        super::small_pages().expect("prctl PR_SET_THP_DISABLE");
        super::release_freed();
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
