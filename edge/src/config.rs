//! The validated configuration of a node, built once from the command line and passed
//! down (shards get an `Rc` of it); nothing reads flags or the environment later.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use thiserror::Error;

use crate::cli::NodeArgs;

/// A flag that does not make sense.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// An address flag could not be read.
    #[error("--{flag}: `{value}` is not an address (`host:port` or `:port`)")]
    Address {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// `--type` named something other than `ws` and `udp`.
    #[error("--type: `{0}` is not `ws`, `udp` or `ws,udp`")]
    Kind(String),
    /// `--bind` was not `<device>:<user>` with a negative device and a user multiple of 16.
    #[error(
        "--bind: `{0}` is not `<device>:<user>` (device negative, user a positive multiple of 16)"
    )]
    Bind(String),
    /// `--cores` could not be used.
    #[error("--cores: {0}")]
    Cores(String),
    /// A numeric limit is out of range.
    #[error("{0}")]
    Limit(String),
    /// A setting that would leave the node open to strangers.
    #[error("{0}")]
    Insecure(&'static str),
    /// `--rh` or the Redis password could not be used.
    #[error("{0}")]
    Redis(String),
}

/// Redis AUTH from `CLOUDSOCKET_REDIS_PASSWORD` or the first line of `password_file`,
/// with the ACL user from `CLOUDSOCKET_REDIS_USER`; never from the command line.
pub fn redis_auth(
    password_file: Option<&std::path::Path>,
) -> Result<Option<bus::redis_target::RedisAuth>, ConfigError> {
    let from_file = match password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::Redis(format!("--redis-password-file {}: {e}", path.display()))
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        None => None,
    };
    let password = from_file.or_else(|| std::env::var("CLOUDSOCKET_REDIS_PASSWORD").ok());
    let username = std::env::var("CLOUDSOCKET_REDIS_USER")
        .ok()
        .filter(|u| !u.is_empty());
    match password.filter(|p| !p.is_empty()) {
        Some(password) => Ok(Some(bus::redis_target::RedisAuth { username, password })),
        None if username.is_some() => Err(ConfigError::Redis(
            "CLOUDSOCKET_REDIS_USER is set but no password: set CLOUDSOCKET_REDIS_PASSWORD or --redis-password-file".into(),
        )),
        None => Ok(None),
    }
}

/// Checks a `--rh` value (the node parses it again when it starts the cluster).
pub fn check_redis(rh: &str) -> Result<(), ConfigError> {
    bus::redis_target::RedisTarget::parse(rh, None)
        .map(drop)
        .map_err(|e| ConfigError::Redis(e.to_string()))
}

/// What a comet needs to join a cluster (`cloudsocket comet --rh … --zks …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Redis (`--rh`): `host:port`, a `redis://` URL or `sentinel://h1,h2/master`.
    pub redis: String,
    /// Redis AUTH (`CLOUDSOCKET_REDIS_USER` / `CLOUDSOCKET_REDIS_PASSWORD` or
    /// `--redis-password-file`); `None`: no AUTH.
    pub redis_auth: Option<bus::redis_target::RedisAuth>,
    /// ZooKeeper servers (`host[:port],…`); empty = msgbuses from `--msgbus` only.
    pub zookeeper: String,
    /// ZooKeeper root listing msgbuses.
    pub msgbus_root: String,
    /// ZooKeeper root this comet registers under (WebSocket).
    pub comet_root: String,
    /// ZooKeeper root this comet registers under as a UDP comet.
    pub comet_root_udp: String,
    /// msgbus addresses given directly (`--msgbus`).
    pub msgbus: Vec<String>,
    /// Deliver pushes to UDP devices (`--up`).
    pub pusher: bool,
    /// The msgbus link secret (`--link-secret`); `None`: the original's open opening.
    pub link_secret: Option<Vec<u8>>,
    /// ZooKeeper digest credentials (`--zk-auth user:pass`); `None`: open nodes.
    pub zk_auth: Option<String>,
}

/// Everything a node needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cores to run one shard on each.
    pub cores: Vec<usize>,
    /// Serve WebSocket terminals.
    pub ws: bool,
    /// Serve UDP devices.
    pub udp: bool,
    /// WebSocket listen addresses.
    pub ws_addrs: Vec<SocketAddr>,
    /// WebSocket-over-TLS listen addresses (`--tls-ports`).
    pub tls_addrs: Vec<SocketAddr>,
    /// Certificate chain and key files for the TLS listeners.
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Status and admin HTTP address.
    pub status_addr: SocketAddr,
    /// UDP device address.
    pub udp_addr: SocketAddr,
    /// `udpaddr` HTTP address.
    pub udpaddr_http: SocketAddr,
    /// UDP session lifetime without traffic, seconds.
    pub udp_timeout_secs: u32,
    /// Most UDP sessions held by the node.
    pub max_udp_sessions: usize,
    /// WebSocket connections per source IP and shard (0: no cap).
    pub max_conns_per_ip: u32,
    /// Accepts per second per listener and shard (0: no limit).
    pub max_accept_rate: u32,
    /// New UDP sessions per second per source IP and shard (0: no limit).
    pub new_session_rate: u32,
    /// Their burst.
    pub new_session_burst: u32,
    /// Most live sessions of one id on a shard (the oldest is evicted beyond it).
    pub max_sessions_per_device: usize,
    /// The HTTP device platform's root URL (`--hurl`); `None` = the builtin platform.
    pub platform_url: Option<String>,
    /// This node's name in the cluster (`--lip`), `127.0.0.1` when not given.
    pub node_ip: String,
    /// Login signature salt.
    pub salt: Vec<u8>,
    /// True when the salt is the original's public one.
    pub default_salt: bool,
    /// The bearer token `/admin/*` needs; `None`: no check (loopback or --admin-insecure).
    pub admin_token: Option<String>,
    /// Accept login timestamp 0.
    pub allow_zero_timestamp: bool,
    /// Send text frames to terminals (original behaviour) instead of binary.
    pub text_frames: bool,
    /// Leave transparent huge pages on for this process (`--huge-pages`).
    pub huge_pages: bool,
    /// Time to complete the WebSocket upgrade, seconds (10, as the original).
    pub handshake_timeout_secs: u32,
    /// Time to log in after the upgrade, seconds (60, as the original).
    pub login_timeout_secs: u32,
    /// Largest WebSocket frame accepted.
    pub max_message: usize,
    /// Largest outbound queue of one connection, bytes.
    pub max_outbound: usize,
    /// Most bytes queued for blocked writers on one shard, all connections together.
    pub max_outbound_shard: usize,
    /// Embedded node: where uploads are appended.
    pub upload_log: PathBuf,
    /// Embedded node: bindings made at start, `(device, user)`.
    pub binds: Vec<(i64, i64)>,
    /// Cluster mode (Redis, msgbus, ZooKeeper); `None` = the embedded node.
    pub cluster: Option<ClusterConfig>,
}

/// Reads `:port` (all interfaces, or `ip` when given) or `host:port`.
pub fn parse_addr(
    flag: &'static str,
    value: &str,
    ip: Option<IpAddr>,
) -> Result<SocketAddr, ConfigError> {
    let err = || ConfigError::Address {
        flag,
        value: value.to_owned(),
    };
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| err())?;
        return Ok(SocketAddr::new(
            ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port,
        ));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        other => other.parse().map_err(|_| err())?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_bind(text: &str) -> Result<(i64, i64), ConfigError> {
    let err = || ConfigError::Bind(text.to_owned());
    let (device, user) = text.split_once(':').ok_or_else(err)?;
    let device: i64 = device.trim().parse().map_err(|_| err())?;
    let user: i64 = user.trim().parse().map_err(|_| err())?;
    if device >= 0 || user <= 0 || user % 16 != 0 {
        return Err(err());
    }
    Ok((device, user))
}

impl Config {
    /// Validates the flags of `run`/`comet`.
    pub fn from_args(args: &NodeArgs) -> Result<Config, ConfigError> {
        let (mut ws, mut udp) = (false, false);
        for kind in args.kind.split(',').map(str::trim) {
            match kind {
                "ws" => ws = true,
                "udp" => udp = true,
                _ => return Err(ConfigError::Kind(args.kind.clone())),
            }
        }
        let lip: Option<IpAddr> = if args.lip.is_empty() {
            None
        } else {
            Some(args.lip.parse().map_err(|_| ConfigError::Address {
                flag: "lip",
                value: args.lip.clone(),
            })?)
        };
        let ports = |flag: &'static str, list: &str| {
            list.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    let addr = parse_addr(flag, p.trim(), lip)?;
                    Ok(SocketAddr::new(lip.unwrap_or(addr.ip()), addr.port()))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let ws_addrs = ports("ports", &args.ports)?;
        let tls_addrs = ports("tls-ports", &args.tls_ports)?;
        let tls_files = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) if tls_addrs.is_empty() => None,
            _ => {
                return Err(ConfigError::Limit(
                    "--tls-ports, --tls-cert and --tls-key go together".into(),
                ));
            }
        };
        let cores = tuning_cores(&args.cores)?;
        let redis_auth = redis_auth(args.redis_password_file.as_deref())?;
        if let Some(rh) = args.rh.as_deref().filter(|r| !r.is_empty()) {
            check_redis(rh)?;
        }
        if args.max_message < 16 || args.max_message > 16 << 20 {
            return Err(ConfigError::Limit(
                "--max-message must be between 16 B and 16 MiB".into(),
            ));
        }
        if args.max_outbound < args.max_message {
            return Err(ConfigError::Limit(
                "--max-outbound must be at least --max-message".into(),
            ));
        }
        if args.max_sessions_per_device == 0 || args.max_sessions_per_device > 64 {
            return Err(ConfigError::Limit(
                "--max-sessions-per-device must be between 1 and 64".into(),
            ));
        }
        if args.max_outbound_shard < args.max_outbound {
            return Err(ConfigError::Limit(
                "--max-outbound-shard must be at least --max-outbound".into(),
            ));
        }
        let salt = args.salt.clone();
        let status_addr = parse_addr("sh", &args.sh, None)?;
        let admin_token = check_security(args, status_addr)?;
        Ok(Config {
            cores,
            ws,
            udp,
            ws_addrs,
            tls_addrs,
            tls_files,
            status_addr,
            admin_token,
            udp_addr: parse_addr("hudp", &args.hudp, lip)?,
            udpaddr_http: parse_addr("hhttp", &args.hhttp, lip)?,
            udp_timeout_secs: args.uto.max(1),
            max_udp_sessions: args.max_udp_sessions.max(1),
            max_conns_per_ip: args.max_conns_per_ip,
            max_accept_rate: args.max_accept_rate,
            new_session_rate: args.new_session_rate,
            new_session_burst: args.new_session_burst,
            max_sessions_per_device: args.max_sessions_per_device,
            platform_url: Some(args.hurl.trim().to_owned()).filter(|u| !u.is_empty()),
            node_ip: lip.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
            default_salt: salt.is_none(),
            salt: salt
                .unwrap_or_else(|| edge_proto::login::DEFAULT_SALT.to_owned())
                .into_bytes(),
            allow_zero_timestamp: args.allow_zero_timestamp,
            text_frames: args.text_frames,
            huge_pages: args.huge_pages,
            handshake_timeout_secs: 10,
            login_timeout_secs: 60,
            max_message: args.max_message,
            max_outbound: args.max_outbound,
            max_outbound_shard: args.max_outbound_shard,
            upload_log: args.upload_log.clone(),
            binds: args
                .binds
                .iter()
                .map(|b| parse_bind(b))
                .collect::<Result<_, _>>()?,
            cluster: args
                .rh
                .as_ref()
                .filter(|r| !r.is_empty())
                .map(|redis| ClusterConfig {
                    redis: redis.clone(),
                    zookeeper: args.zks.clone().unwrap_or_default(),
                    msgbus_root: args.zkroot.clone(),
                    comet_root: args.zkrootc.clone(),
                    comet_root_udp: args.zkrootu.clone(),
                    msgbus: args
                        .msgbus
                        .iter()
                        .flat_map(|m| m.split(','))
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    pusher: args.up,
                    link_secret: args.link_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                    zk_auth: args.zk_auth.clone().filter(|a| !a.is_empty()),
                    redis_auth: redis_auth.clone(),
                }),
        })
    }

    /// A configuration for tests: `shards` shards, every listener on an ephemeral
    /// loopback port (the caller fills in real ports).
    pub fn for_tests(shards: usize) -> Config {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Config {
            cores: (0..shards).collect(),
            ws: true,
            udp: true,
            ws_addrs: vec![any],
            tls_addrs: Vec::new(),
            tls_files: None,
            status_addr: any,
            udp_addr: any,
            udpaddr_http: any,
            udp_timeout_secs: 40,
            max_udp_sessions: 100_000,
            max_conns_per_ip: 0,
            max_accept_rate: 0,
            new_session_rate: 100,
            new_session_burst: 1000,
            max_sessions_per_device: 4,
            platform_url: None,
            node_ip: "127.0.0.1".into(),
            salt: edge_proto::login::DEFAULT_SALT.as_bytes().to_vec(),
            default_salt: true,
            admin_token: None,
            allow_zero_timestamp: false,
            text_frames: false,
            huge_pages: false,
            handshake_timeout_secs: 10,
            login_timeout_secs: 60,
            max_message: 64 * 1024,
            max_outbound: 256 * 1024,
            max_outbound_shard: 64 << 20,
            upload_log: std::env::temp_dir()
                .join(format!("cloudsocket-uploads-{}.log", std::process::id())),
            binds: Vec::new(),
            cluster: None,
        }
    }
}

/// The login salt and admin rules (issue 12): an empty salt is refused everywhere, the
/// public default salt by a cluster comet unless `--insecure-default-salt`, and a status
/// endpoint off loopback needs `--admin-token` unless `--admin-insecure`. Returns the token.
fn check_security(args: &NodeArgs, status: SocketAddr) -> Result<Option<String>, ConfigError> {
    let cluster = args.rh.as_deref().is_some_and(|r| !r.is_empty());
    match args.salt.as_deref() {
        Some("") => return Err(ConfigError::Insecure("--salt: an empty salt signs nothing")),
        None if cluster && !args.insecure_default_salt => {
            return Err(ConfigError::Insecure(
                "a cluster comet needs --salt (or CLOUDSOCKET_SALT): the default salt is public; \
                 --insecure-default-salt runs with it anyway",
            ));
        }
        _ => {}
    }
    if args.link_secret.as_deref() == Some("") {
        return Err(ConfigError::Insecure(
            "--link-secret: an empty secret authenticates nothing",
        ));
    }
    let token = args.admin_token.clone();
    if token.as_deref() == Some("") {
        return Err(ConfigError::Insecure("--admin-token: an empty token"));
    }
    if token.is_none() && !status.ip().is_loopback() && !args.admin_insecure {
        return Err(ConfigError::Insecure(
            "--sh is not a loopback address: /admin/* would take binds and pushes from anyone; \
             set --admin-token (or CLOUDSOCKET_ADMIN_TOKEN), or --admin-insecure",
        ));
    }
    Ok(token)
}

fn tuning_cores(text: &str) -> Result<Vec<usize>, ConfigError> {
    use tuning::cores::{CoreList, CoreSpec};
    let err = |e: &dyn std::fmt::Display| ConfigError::Cores(e.to_string());
    let online = CoreList::online().map_err(|e| err(&e))?;
    let spec: CoreSpec = text.parse().map_err(|e| err(&e))?;
    let plan = tuning::cores::plan(&spec.resolve(&online), &online, 1).map_err(|e| err(&e))?;
    Ok(plan.shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_password_comes_from_a_file_and_a_bad_rh_is_one_line() {
        if std::env::var_os("CLOUDSOCKET_REDIS_USER").is_some() {
            return; // the environment decides the user; nothing to check here
        }
        let file = std::env::temp_dir().join(format!("cs-redis-pw-{}", std::process::id()));
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let auth = redis_auth(Some(&file)).unwrap().unwrap();
        assert_eq!((auth.username, auth.password.as_str()), (None, "s3cret"));
        std::fs::remove_file(&file).unwrap();
        let missing = redis_auth(Some(&file)).unwrap_err().to_string();
        assert!(missing.starts_with("--redis-password-file"), "{missing}");
        assert!(check_redis("sentinel://h1:26379").is_err());
        assert!(check_redis("sentinel://h1,h2/mymaster").is_ok());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("x", ":1234", None).unwrap().to_string(),
            "0.0.0.0:1234"
        );
        assert_eq!(
            parse_addr("x", "localhost:9", None).unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(
            parse_addr("x", "10.1.2.3:80", None).unwrap().to_string(),
            "10.1.2.3:80"
        );
        assert!(parse_addr("x", "nonsense", None).is_err());
        assert!(parse_addr("x", ":99999", None).is_err());
    }

    fn from(words: &[&str]) -> Result<Config, ConfigError> {
        use clap::Parser;
        let mut all = vec!["cloudsocket", "run", "--cores", "0"];
        all.extend_from_slice(words);
        match crate::cli::Cli::try_parse_from(all).unwrap().command {
            Some(crate::cli::Command::Run(args)) => Config::from_args(&args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn salt_and_admin_rules() {
        let insecure = |r: Result<Config, ConfigError>| matches!(r, Err(ConfigError::Insecure(_)));
        assert!(
            from(&[]).unwrap().default_salt,
            "the embedded node warns only"
        );
        assert!(insecure(from(&["--salt", ""])));
        assert!(insecure(from(&["--rh", "127.0.0.1:6379"])));
        assert!(from(&["--rh", "127.0.0.1:6379", "--salt", "s3cret"]).is_ok());
        assert!(from(&["--rh", "127.0.0.1:6379", "--insecure-default-salt"]).is_ok());
        assert!(
            insecure(from(&["--sh", ":29999"])),
            "the original's -sh=:29999"
        );
        assert!(insecure(from(&["--sh", ":29999", "--admin-token", ""])));
        let open = from(&["--sh", ":29999", "--admin-insecure"]).unwrap();
        assert_eq!(open.admin_token, None);
        let guarded = from(&["--sh", "0.0.0.0:29999", "--admin-token", "t0ken"]).unwrap();
        assert_eq!(guarded.admin_token.as_deref(), Some("t0ken"));
        let local = from(&["--admin-token", "t0ken"]).unwrap();
        assert_eq!(
            local.admin_token.as_deref(),
            Some("t0ken"),
            "loopback may have one too"
        );
    }

    #[test]
    fn binds() {
        assert_eq!(parse_bind("-1:16").unwrap(), (-1, 16));
        assert!(parse_bind("1:16").is_err());
        assert!(parse_bind("-1:17").is_err());
        assert!(parse_bind("-1").is_err());
    }
}
