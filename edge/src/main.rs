//! The `cloudsocket` binary: parses the command line and starts the node.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = edge::cli::Cli::parse();
    edge::run(cli)
}
