//! `loadgen`: drives cloudsocket (or the tokio peer) with phones, devices and UDP
//! sessions; prints a live line per second and a final table (or `--json`).
//!
//! `loadgen relay --pairs 200 --rate 0`, `loadgen idle --pid $(pidof cloudsocket)`, …

use benches::scenario::{deadlines, idle, push, relay, spoof, stall, storm, udp, upload};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "cloudsocket load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hold N idle logged-in phones (and M UDP sessions); report the target's RSS slope.
    Idle(idle::IdleArgs),
    /// Phone/device pairs: throughput and end-to-end latency.
    Relay(relay::RelayArgs),
    /// Fan-out of /admin/push to many phones.
    Push(push::PushArgs),
    /// UDP heartbeat (0xE5) and forward storms.
    Udp(udp::UdpArgs),
    /// Connect + upgrade + login rate, and time to re-establish N connections.
    Storm(storm::StormArgs),
    /// Device uploads (direct packets) at a steady rate; counts ACKs.
    Upload(upload::UploadArgs),
    /// Phones that never read, pushed to until the target closes them all (1008).
    Stall(stall::StallArgs),
    /// A spoofed new-session (0xE0) flood from many source addresses.
    Spoof(spoof::SpoofArgs),
    /// Slow-loris upgrades and connections that never log in: when the target closes them.
    Deadlines(deadlines::DeadlinesArgs),
    /// Internal: one `idle` worker process (driven over stdin/stdout).
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Idle(a) => idle::run(&a),
        Command::Relay(a) => relay::run(&a),
        Command::Push(a) => push::run(&a),
        Command::Udp(a) => udp::run(&a),
        Command::Storm(a) => storm::run(&a),
        Command::Upload(a) => upload::run(&a),
        Command::Stall(a) => stall::run(&a),
        Command::Deadlines(a) => deadlines::run(&a),
        Command::Spoof(a) => spoof::run(&a),
        Command::IdleWorker(a) => idle::worker_main(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scenarios() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "relay",
            "--pairs",
            "7",
            "--rate",
            "1000",
            "--json",
            "--target",
            "127.0.0.1:9,127.0.0.1:10",
        ])
        .unwrap();
        let Command::Relay(r) = cli.command else {
            panic!("relay")
        };
        assert_eq!(
            (r.pairs, r.rate, r.common.json, r.common.target.len()),
            (7, 1000, true, 2)
        );
        let cli =
            Cli::try_parse_from(["loadgen", "idle", "--pid", "1", "--steps", "10,20"]).unwrap();
        assert!(matches!(cli.command, Command::Idle(_)));
        assert!(Cli::try_parse_from(["loadgen", "relay", "--direction", "sideways"]).is_err());
        let cli = Cli::try_parse_from([
            "loadgen",
            "relay",
            "--no-bind",
            "--device-target",
            "127.0.0.3:1",
            "--reconnect",
            "--churn",
            "0.01",
            "--rate",
            "10",
        ])
        .unwrap();
        let Command::Relay(r) = cli.command else {
            panic!("relay")
        };
        assert!(r.no_bind && r.reconnect && r.tracked() && r.device_target.len() == 1);
        assert!(matches!(
            Cli::try_parse_from(["loadgen", "upload", "--msg-id", "0x30"])
                .unwrap()
                .command,
            Command::Upload(_)
        ));
        assert!(Cli::try_parse_from(["loadgen", "idle", "--steps", "5,1"]).is_err());
    }
}
