//! `edge`: the cloudsocket comet.
//!
//! Owns the glommio shards (one per core), their sockets, buffers, timers and session
//! tables, the status endpoint, and the command line of the `cloudsocket` binary. It
//! drives the pure codecs of `edge-proto` and does not define wire formats itself; it
//! talks to the bus sidecar only through bounded channels.
//!
//! Map: [`node`] starts everything; [`core`] is a shard's state and rules with no IO
//! (session index, directory slice, UDP session table, timer wheel); [`shard`] is the
//! per-core event loop around it that moves bytes (sockets, frames, the mesh);
//! [`poller`] gives a shard readiness without a task per connection; [`status`] serves
//! `/stat`, `/metrics` and `/admin/*`.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod endpoints;
pub mod fd_passing;
pub mod http;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod msg;
pub mod node;
pub mod platform;
pub mod poller;
mod programs;
pub mod shard;
pub mod status;
pub mod tls;
pub mod tls_record;
pub mod upgrade;

use std::time::Duration;

use cli::{Command, NodeArgs};

/// Starts what the command line asks for; returns the process exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    programs::abort_on_panic();
    logging::init(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        None => run_node(cli.run, false),
        Some(Command::Run(args)) => run_node(args, false),
        Some(Command::Comet(args)) => run_node(args, true),
        Some(Command::Tune(args)) => {
            let checks = tuning::report(args.connections);
            print!("{}", tuning::host::render_table(&checks));
            if args.apply {
                print!(
                    "{}",
                    tuning::host::render_apply(&tuning::apply(&checks, false))
                );
            }
            Ok(0)
        }
        Some(Command::Msgbus(args)) => programs::run_msgbus(&args),
        Some(Command::Rmqkeeper(args)) => programs::run_rmqkeeper(args),
        Some(Command::Upgrade(args)) => {
            upgrade::control::run_client(args.pid, args.binary, Duration::from_secs(args.timeout))
        }
    }
}

/// SIGHUP on a node: the TLS certificate and key are read again (as when the files change);
/// a bad file keeps the old ones. Live connections keep theirs.
fn reload(node: &node::Node) {
    match &node.tls {
        Some(tls) => {
            tracing::info!("SIGHUP: reloading the TLS certificate and key");
            tls.reload();
        }
        None => tracing::info!("SIGHUP: nothing to reload (no --tls-ports)"),
    }
}

fn run_node(mut args: NodeArgs, comet: bool) -> anyhow::Result<i32> {
    if let Some(path) = args.conf.clone() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("--conf {}: {e}", path.display()))?;
        args = cli::merge_conf(args, &text)?;
    }
    if args.rh.as_deref().is_none_or(str::is_empty)
        && args.zks.as_deref().is_some_and(|z| !z.is_empty())
    {
        eprintln!("cloudsocket: --zks needs --rh: cluster mode keeps online state in Redis");
        return Ok(2);
    }
    let config = config::Config::from_args(&args)?;
    for report in [
        tuning::limits::raise_nofile(),
        tuning::limits::raise_memlock(tuning::limits::GLOMMIO_MEMLOCK_MIN_BYTES),
    ] {
        println!("limits: {report}");
    }
    if !config.huge_pages {
        // Before the shards allocate: an idle connection's memory is then counted in 4 KiB
        // pages, not 2 MiB ones (`tuning::alloc::small_pages`).
        if let Err(e) = tuning::alloc::small_pages() {
            println!("memory: transparent huge pages stay allowed ({e})");
        }
    }
    let signals = programs::block_node_signals();
    // Captured now: once an upgrade replaced the file, /proc/self/exe says "(deleted)".
    let binary = std::env::current_exe()?;
    let mut node = upgrade::process::start_node(&config)?;
    let mode = match (&config.cluster, comet) {
        (Some(_), _) => "comet (cluster: Redis, msgbus)",
        (None, true) => "comet (embedded bus)",
        (None, false) => "embedded node",
    };
    println!(
        "cloudsocket {} {mode}: {} shard(s) on cores {:?}",
        env!("CARGO_PKG_VERSION"),
        config.cores.len(),
        config.cores
    );
    for addr in &node.ws_addrs {
        println!("listening: WebSocket ws://{addr}/ws");
    }
    for addr in &node.wss_addrs {
        println!("listening: WebSocket over TLS wss://{addr}/ws");
    }
    if let Some(addr) = node.udp_addr {
        println!("listening: UDP devices udp://{addr}");
    }
    if let Some(addr) = node.udpaddr_http {
        println!("listening: udpaddr http://{addr}/api/device/udpaddr?deviceId=<id>");
    }
    println!(
        "listening: status http://{}/stat  /metrics  /admin/{{bind,unbind,push}}",
        node.status_addr
    );
    if let Some(cluster) = &config.cluster
        && cluster.link_secret.is_none()
    {
        println!(
            "warning: no --link-secret: msgbus links open the original's unauthenticated way; set --link-secret or CLOUDSOCKET_LINK_SECRET on msgbus and comets"
        );
    }
    if config.default_salt {
        println!(
            "warning: the login salt is the original's public default; set --salt or CLOUDSOCKET_SALT in production"
        );
    }
    upgrade::systemd::notify("READY=1");
    let (events_tx, events) = crossbeam_channel::bounded(8);
    upgrade::control::forward_signals(signals, events_tx.clone())?;
    if let Err(e) = upgrade::control::listen(events_tx) {
        tracing::warn!("no upgrade control socket: {e}");
    }
    let signal = loop {
        match events.recv() {
            Ok(upgrade::control::Event::Signal(libc::SIGHUP)) => reload(&node),
            Ok(upgrade::control::Event::Signal(libc::SIGUSR2)) => {
                let timeout = Duration::from_secs(10);
                upgrade::process::try_upgrade(&mut node, &binary, timeout, None);
            }
            Ok(upgrade::control::Event::Upgrade(to, timeout, reply)) => {
                let to = to.unwrap_or_else(|| binary.clone());
                upgrade::process::try_upgrade(&mut node, &to, timeout, Some(reply));
            }
            Ok(upgrade::control::Event::Signal(signal)) => break signal,
            Err(_) => break 0,
        }
    };
    println!("signal {signal}: draining");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        node.shutdown();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        tracing::warn!("drain took longer than 5 s: exiting");
    }
    Ok(0)
}
