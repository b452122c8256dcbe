//! The command line of `cloudsocket` (clap derive).

use clap::{Parser, Subcommand};

/// cloudsocket: an edge proxy for smart-device fleets.
#[derive(Debug, Parser)]
#[command(name = "cloudsocket", version, about)]
pub struct Cli {
    /// What to run; the embedded node when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The programs in the `cloudsocket` binary.
#[derive(Debug, Default, Subcommand)]
pub enum Command {
    /// A complete single node: no Redis, RabbitMQ or ZooKeeper needed.
    #[default]
    Run,
    /// The comet, configured by the original's flags (cluster mode).
    Comet,
    /// The message bus between comets.
    Msgbus,
    /// The RabbitMQ keeper.
    Rmqkeeper,
    /// Report (and apply) host tuning for a dense edge.
    Tune,
}

impl Command {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Comet => "comet",
            Command::Msgbus => "msgbus",
            Command::Rmqkeeper => "rmqkeeper",
            Command::Tune => "tune",
        }
    }
}
