//! The `cloudsocket` binary: parses the command line (the original's single-dash flags
//! included) and starts what it names; `cloudsocket` alone runs the embedded node.

use clap::Parser;

#[global_allocator]
static GLOBAL: tuning::Allocator = tuning::Allocator;

fn main() -> anyhow::Result<()> {
    let cli = edge::cli::Cli::parse_from(edge::cli::normalize_args(std::env::args()));
    let code = edge::run(cli)?;
    std::process::exit(code)
}
