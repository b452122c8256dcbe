//! The command line of `cloudsocket` (clap derive), including the original comet's flag
//! names and its `-name=value` config files.
//!
//! Parsing only: validation into a [`crate::config::Config`] happens in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// cloudsocket: an edge proxy for smart-device fleets.
///
/// With no subcommand it runs the embedded node, and takes `run`'s flags directly:
/// `cloudsocket --cores 0-1` is `cloudsocket run --cores 0-1`.
#[derive(Debug, Parser)]
#[command(
    name = "cloudsocket",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; the embedded node when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The embedded node's flags, when no subcommand is named.
    #[command(flatten)]
    pub run: NodeArgs,
    /// Log lines as text or as one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    /// Log filter (`info`, `debug`, `edge=debug,bus=info`, …); overrides `RUST_LOG`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

/// The programs in the `cloudsocket` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A complete single node: no Redis, RabbitMQ or ZooKeeper needed (the default).
    Run(NodeArgs),
    /// The comet, configured by the original's flags (`--conf comet.conf` works too).
    Comet(NodeArgs),
    /// The message bus between comets: routing, Redis online state, RabbitMQ uploads.
    Msgbus(MsgbusArgs),
    /// The RabbitMQ keeper: registers a healthy broker in ZooKeeper (`-h` is its address;
    /// help is `--help`).
    #[command(disable_help_flag = true)]
    Rmqkeeper(RmqkeeperArgs),
    /// Report (and apply) host tuning for a dense edge.
    Tune(TuneArgs),
    /// Hand a running node's sockets, connections and sessions to a new process of a
    /// (new) binary, without a reconnect (SIGUSR2 does the same with the node's binary).
    Upgrade(UpgradeArgs),
}

/// Flags of `cloudsocket upgrade`.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// The node's pid (default: the one running `run` or `comet` of this binary).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The binary to start (default: the one the node was started from).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Seconds the new process has to start, take everything in and confirm; after that
    /// the node rolls back and serves on.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Flags of a node (`run` and `comet`); the original comet's names are kept.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Read flags from an original `comet.conf` (`-name=value` words); the command line wins.
    #[arg(long, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Cores to run shards on: `0-3`, `0,2,4-7` or `all`.
    #[arg(long, default_value = "all", env = "CLOUDSOCKET_CORES")]
    pub cores: String,
    /// Comet kind(s): `ws`, `udp` or `ws,udp`.
    #[arg(long = "type", default_value = "ws,udp")]
    pub kind: String,
    /// This node's IP: bind address of the WebSocket listeners and its name in Redis.
    #[arg(long, default_value = "")]
    pub lip: String,
    /// WebSocket listen addresses; only the port is used (the IP comes from --lip).
    #[arg(long, default_value = ":1234,:1235")]
    pub ports: String,
    /// WebSocket-over-TLS (wss://) listen addresses, like --ports; they need --tls-cert
    /// and --tls-key.
    #[arg(long, default_value = "")]
    pub tls_ports: String,
    /// PEM certificate chain for --tls-ports (reloaded when the file changes).
    #[arg(long)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or RSA) for --tls-ports (reloaded when it changes).
    #[arg(long)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Status and admin HTTP address (loopback by default: the admin endpoints change state).
    #[arg(long, default_value = "127.0.0.1:29999")]
    pub sh: String,
    /// UDP listen address for devices.
    #[arg(long, default_value = ":7999")]
    pub hudp: String,
    /// Address of the small HTTP server with `/api/device/udpaddr`.
    #[arg(long, default_value = ":8081")]
    pub hhttp: String,
    /// Root URL of the HTTP device platform; empty = the builtin platform.
    #[arg(long, default_value = "")]
    pub hurl: String,
    /// UDP session lifetime without traffic, seconds.
    #[arg(long, default_value_t = 40)]
    pub uto: u32,
    /// Redis (cluster mode): `host:port`, `redis://host:port/db`, or a Sentinel group
    /// `sentinel://h1:26379,h2:26379/mymaster` (its master found again on each reconnect).
    #[arg(long)]
    pub rh: Option<String>,
    /// A file whose first line is the Redis password (AUTH); or set
    /// CLOUDSOCKET_REDIS_PASSWORD. An ACL user comes from CLOUDSOCKET_REDIS_USER.
    #[arg(long)]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// ZooKeeper servers, comma separated (cluster mode).
    #[arg(long)]
    pub zks: Option<String>,
    /// ZooKeeper root where msgbus nodes are listed.
    #[arg(long, default_value = "MsgBusServers")]
    pub zkroot: String,
    /// ZooKeeper root where this comet registers.
    #[arg(long, default_value = "CometServers")]
    pub zkrootc: String,
    /// ZooKeeper root where this comet registers as a UDP comet (the original's intended
    /// `-zkrootc=CometServersUdp` for UDP comets).
    #[arg(long, default_value = "CometServersUdp")]
    pub zkrootu: String,
    /// msgbus addresses to connect to directly (besides those listed in ZooKeeper).
    #[arg(long, value_name = "HOST:PORT")]
    pub msgbus: Vec<String>,
    /// Force this UDP comet to deliver pushes to devices (else elected).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub up: bool,
    /// Accepted for compatibility: every comet follows binding changes.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub us: bool,
    /// Login signature salt (the original's is the default: a warning on the embedded
    /// node, refused by a cluster comet unless --insecure-default-salt).
    #[arg(long, env = "CLOUDSOCKET_SALT", hide_env_values = true)]
    pub salt: Option<String>,
    /// Let a cluster comet run with the original's public login salt.
    #[arg(long)]
    pub insecure_default_salt: bool,
    /// Bearer token the status endpoint's /admin/* calls need (`Authorization: Bearer …`).
    #[arg(long, env = "CLOUDSOCKET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve /admin/* on a non-loopback --sh without a token.
    #[arg(long)]
    pub admin_insecure: bool,
    /// ZooKeeper digest credentials `user:password`: our nodes are created readable and
    /// writable by that identity only; every msgbus, comet and rmqkeeper needs the same.
    #[arg(long, env = "CLOUDSOCKET_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Secret shared with the msgbuses: links open with an HMAC challenge-response.
    /// Without it, the original's open one-byte opening (a warning at start).
    #[arg(long, env = "CLOUDSOCKET_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// Accept login timestamp 0 (the original's never-expiring tokens).
    #[arg(long)]
    pub allow_zero_timestamp: bool,
    /// Send messages to terminals as text frames, like the original.
    #[arg(long)]
    pub text_frames: bool,
    /// Let the allocator use transparent huge pages (fewer TLB misses on a large working
    /// set; an idle node's memory then grows in 2 MiB steps). Off: 4 KiB pages.
    #[arg(long)]
    pub huge_pages: bool,
    /// Largest WebSocket frame accepted, bytes (larger: close 1009).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_message: usize,
    /// Largest outbound queue of one connection, bytes (beyond: close 1008).
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_outbound: usize,
    /// Most bytes queued for blocked writers per shard, all connections together (beyond:
    /// frames are written at once and a connection that cannot take its frame is closed 1008).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_outbound_shard: usize,
    /// Where the embedded node appends device uploads.
    #[arg(long, default_value = "./uploads.log")]
    pub upload_log: PathBuf,
    /// Most UDP sessions held by the node (a full table drops a session's first datagram,
    /// counted as `udp_full`, once no stale session can make room).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_udp_sessions: usize,
    /// Most WebSocket connections one source IP (an IPv6 /64) may hold open per shard
    /// (0: no cap, the default: phones behind one carrier NAT share an address); beyond
    /// it new ones are closed at once and counted.
    #[arg(long, default_value_t = 0)]
    pub max_conns_per_ip: u32,
    /// Most WebSocket connections each listener accepts per second per shard (0: no
    /// limit); beyond it the rest waits in the kernel's backlog until the next second.
    #[arg(long, default_value_t = 0)]
    pub max_accept_rate: u32,
    /// New UDP sessions (`0xE0`) one source IP may open per second, per shard (0: no
    /// limit). Devices behind one NAT share it: size it for the largest such fleet.
    #[arg(long, default_value_t = 100)]
    pub new_session_rate: u32,
    /// New UDP sessions one source IP may open at once before --new-session-rate applies.
    #[arg(long, default_value_t = 1000)]
    pub new_session_burst: u32,
    /// Most live sessions of one id (a device logged in over several UDP sessions or
    /// connections) per shard; a login beyond it ends the oldest (counted).
    #[arg(long, default_value_t = 4)]
    pub max_sessions_per_device: usize,
    /// Bind a device to a user at start (`<device>:<user>`, repeatable; embedded node).
    #[arg(long = "bind", value_name = "DEVICE:USER")]
    pub binds: Vec<String>,
}

/// Flags of `cloudsocket msgbus` (the original's names, plus `--spool-dir` and `--amqp`).
#[derive(Debug, Clone, Args)]
pub struct MsgbusArgs {
    /// TCP address comets connect to (also what is registered in ZooKeeper).
    #[arg(long, default_value = "127.0.0.1:9923")]
    pub addr: String,
    /// Redis: `host:port`, `redis://…` or `sentinel://h1,h2/mymaster` (see `comet
    /// --help`); without it the user map stays empty.
    #[arg(long)]
    pub rh: Option<String>,
    /// A file whose first line is the Redis password (see `comet --help`).
    #[arg(long)]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// ZooKeeper servers, comma separated: registers the msgbus and discovers brokers.
    #[arg(long)]
    pub zks: Option<String>,
    /// ZooKeeper root where this msgbus registers.
    #[arg(long, default_value = "MsgBusServers")]
    pub zkroot: String,
    /// ZooKeeper root watched for RabbitMQ brokers.
    #[arg(long, default_value = "Rabbitmq")]
    pub zkrootr: String,
    /// Status HTTP address (`/usermap`, `/stat?type=app`, `/metrics`); loopback by
    /// default: `/usermap` lists every online id.
    #[arg(long, default_value = "127.0.0.1:29998")]
    pub sh: String,
    /// Bearer token `/usermap` needs (`/stat`, `/metrics` stay open).
    #[arg(long, env = "CLOUDSOCKET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve `/usermap` on a non-loopback --sh without a token.
    #[arg(long)]
    pub admin_insecure: bool,
    /// ZooKeeper digest credentials `user:password` (see `comet --help`).
    #[arg(long, env = "CLOUDSOCKET_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Secret shared with the comets: links must open with an HMAC challenge-response.
    /// Without it, any TCP peer may link (a warning at start).
    #[arg(long, env = "CLOUDSOCKET_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// Most comet links served at once (each costs two threads).
    #[arg(long, default_value_t = 512)]
    pub max_links: usize,
    /// Directory of the upload spool (uploads wait there while no broker confirms).
    #[arg(long, default_value = "./msgbus-spool")]
    pub spool_dir: PathBuf,
    /// A RabbitMQ broker (`host:port` or an `amqp://` URI); repeatable.
    #[arg(long = "amqp", value_name = "ADDR")]
    pub amqp: Vec<String>,
}

/// Flags of `cloudsocket rmqkeeper` (the original's names; `-h` is the AMQP address as in
/// the original, so help is `--help` only).
#[derive(Debug, Clone, Args)]
pub struct RmqkeeperArgs {
    /// AMQP address of the watched broker (`host:port`), published in ZooKeeper.
    #[arg(short = 'h', long = "rmq", default_value = "127.0.0.1:5672")]
    pub rmq: String,
    /// RabbitMQ management API base URL, credentials in the userinfo (http only). Set
    /// CLOUDSOCKET_RMQ_URL instead to keep the password out of `ps`.
    #[arg(
        long,
        env = "CLOUDSOCKET_RMQ_URL",
        hide_env_values = true,
        default_value = "http://guest:guest@127.0.0.1:15672"
    )]
    pub url: String,
    /// Vhost of the aliveness test.
    #[arg(long, default_value = "/")]
    pub vh: String,
    /// Time between health checks (Go syntax: `10s`, `500ms`, `1m`).
    #[arg(short = 'd', long, default_value = "10s", value_parser = keeper::duration::parse_go_duration)]
    pub interval: std::time::Duration,
    /// ZooKeeper servers, comma separated (port 2181 when missing); required.
    #[arg(long, default_value = "")]
    pub zks: String,
    /// ZooKeeper root to register under. `Rabbitmq` is what msgbus watches; the original
    /// rmqkeeper defaulted to lowercase `rabbitmq` (a bug: msgbus never saw the broker).
    #[arg(long, default_value = keeper::rmq::DEFAULT_ROOT)]
    pub zkroot: String,
    /// ZooKeeper digest credentials `user:password` (see `comet --help`).
    #[arg(long, env = "CLOUDSOCKET_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Flags of `cloudsocket tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Connections the host should be ready for.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
    /// Set what can be set (as root) and say what could not.
    #[arg(long)]
    pub apply: bool,
}

/// Long names of the original comet's flags, which it spelled with one dash.
const ORIGINAL_FLAGS: &[&str] = &[
    "type", "lip", "ports", "rh", "zks", "hudp", "hhttp", "hurl", "uto", "up", "us", "sh",
    "zkroot", "zkrootc", "conf",
];

/// Rewrites the original's single-dash flags (`-lip=1.2.3.4`, `-up`) to clap's `--lip`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            let single = arg.strip_prefix('-').filter(|rest| !rest.starts_with('-'));
            match single {
                Some(rest) if ORIGINAL_FLAGS.contains(&rest.split('=').next().unwrap_or("")) => {
                    format!("-{arg}")
                }
                _ => arg,
            }
        })
        .collect()
}

/// Reads an original `comet.conf`: the `-name=value` words of its `args="..."` line (or
/// of the whole file), skipping glog flags and the ones we do not know.
pub fn conf_file_args(text: &str) -> Vec<String> {
    let body = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("args=").map(str::to_owned))
        .unwrap_or_else(|| text.to_owned());
    body.split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
        .filter_map(|w| {
            let rest = w.strip_prefix("--").or_else(|| w.strip_prefix('-'))?;
            let name = rest.split('=').next()?;
            ORIGINAL_FLAGS.contains(&name).then(|| format!("--{rest}"))
        })
        .collect()
}

impl Cli {
    /// The flags of `run` with every default (what a bare `cloudsocket` runs).
    pub fn try_parse_from_defaults() -> NodeArgs {
        match Cli::parse_from(["cloudsocket", "run"]).command {
            Some(Command::Run(args)) => args,
            _ => unreachable!("`run` parses to Command::Run"),
        }
    }
}

/// Applies a `comet.conf` under the command line: values from the file are used only for
/// flags the command line left at their defaults.
pub fn merge_conf(args: NodeArgs, conf: &str) -> Result<NodeArgs, clap::Error> {
    let defaults = Cli::try_parse_from_defaults();
    let mut words = vec!["cloudsocket".to_owned(), "run".to_owned()];
    words.extend(conf_file_args(conf));
    let from_file = match Cli::try_parse_from(words)?.command {
        Some(Command::Run(file)) => file,
        _ => unreachable!("`run` parses to Command::Run"),
    };
    macro_rules! pick {
        ($($f:ident),*) => { NodeArgs { $($f: if args.$f == defaults.$f { from_file.$f } else { args.$f },)* ..args } };
    }
    Ok(pick!(
        kind, lip, ports, sh, hudp, hhttp, hurl, uto, rh, zks, zkroot, zkrootc, up, us
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_single_dash_flags_become_long() {
        let args = normalize_args(
            [
                "cloudsocket",
                "comet",
                "-lip=10.0.0.1",
                "-up",
                "--uto",
                "5",
                "-x",
            ]
            .map(String::from),
        );
        assert_eq!(
            args,
            [
                "cloudsocket",
                "comet",
                "--lip=10.0.0.1",
                "--up",
                "--uto",
                "5",
                "-x"
            ]
        );
    }

    #[test]
    fn conf_file_words() {
        let conf = "args=\"-hhttp=:8081 -hudp=:7999 -hurl= -lip= -logtostderr=true -ports=:1234,:1235 -rh=127.0.0.1:6379 -sh=:29999 -type=ws -up=false -v=0\"\n";
        let words = conf_file_args(conf);
        assert!(words.contains(&"--ports=:1234,:1235".to_owned()));
        assert!(words.contains(&"--up=false".to_owned()));
        assert!(!words.iter().any(|w| w.contains("logtostderr")));
    }

    #[test]
    fn parses_run_with_defaults() {
        let cli = Cli::try_parse_from(["cloudsocket", "run"]).unwrap();
        match cli.command {
            Some(Command::Run(args)) => {
                assert_eq!(args.ports, ":1234,:1235");
                assert_eq!(args.sh, "127.0.0.1:29999");
                assert_eq!(args.uto, 40);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_command_takes_run_flags() {
        let cli = Cli::try_parse_from(normalize_args(
            ["cloudsocket", "--cores", "1", "-lip=127.0.0.1"].map(String::from),
        ))
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            (cli.run.cores.as_str(), cli.run.lip.as_str()),
            ("1", "127.0.0.1")
        );
        assert!(Cli::try_parse_from(["cloudsocket", "--cores", "1", "run"]).is_err());
    }

    /// Every `cloudsocket …` line `cloudsocket tune` prints runs as printed: the ones for
    /// this host parse and validate; the shapes it prints for other topologies parse.
    #[test]
    fn every_command_tune_prints_runs_as_printed() {
        let words = |line: &str| -> Vec<String> {
            let command = line.split('#').next().unwrap_or("");
            normalize_args(command.split_whitespace().map(str::to_owned))
        };
        let here: Vec<String> = tuning::report(100_000)
            .into_iter()
            .map(|c| c.command)
            .filter(|c| c.starts_with("cloudsocket "))
            .collect();
        assert!(!here.is_empty(), "tune prints a --cores line");
        for line in &here {
            let cli = Cli::try_parse_from(words(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(cli.command.is_none(), "{line}");
            crate::config::Config::from_args(&cli.run).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        let shapes = [
            "cloudsocket --cores all",
            "cloudsocket --cores 0-7",
            "cloudsocket --cores 0-1,4-5  # cat /sys/class/net/IFACE/device/numa_node",
        ];
        for line in shapes {
            Cli::try_parse_from(words(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}
