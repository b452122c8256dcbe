//! The `cloudsocket` binary: parses the command line (the original's single-dash flags
//! included) and starts what it names; `cloudsocket` alone runs the embedded node.
//!
//! A user's mistake (a bad flag value, an address in use, an unreadable file) ends in one
//! line on stderr and exit status 1, whatever `RUST_BACKTRACE` says; a bug panics, and the
//! panic hook aborts with its backtrace.

use clap::Parser;

// `--features heap-profile` leaves the C allocator in place, so that heaptrack (or any
// `malloc` interposer) sees every allocation: `docs/operations.md` §2.5.
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static GLOBAL: tuning::Allocator = tuning::Allocator;

fn main() {
    let cli = edge::cli::Cli::parse_from(edge::cli::normalize_args(std::env::args()));
    match edge::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // `{:#}`: the error and its causes on one line, never a backtrace.
            eprintln!("cloudsocket: {e:#}");
            std::process::exit(1)
        }
    }
}
