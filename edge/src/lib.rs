//! `edge`: the cloudsocket comet.
//!
//! Owns the glommio shards (one per core), their sockets, buffers, timers and session
//! tables, and the command line of the `cloudsocket` binary. It drives the pure codecs of
//! `edge-proto`; it does not define wire formats itself, and it talks to the bus and keeper
//! sidecars only through bounded channels.

pub mod cli;

/// Starts what the command line asks for.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or_default() {
        cli::Command::Run => {
            println!("cloudsocket {}: the embedded node is not built yet", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => {
            eprintln!("cloudsocket {}: `{}` is not built yet", env!("CARGO_PKG_VERSION"), other.name());
            std::process::exit(2)
        }
    }
}
