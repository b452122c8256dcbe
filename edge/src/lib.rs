//! `edge`: the cloudsocket comet.
//!
//! Owns the glommio shards (one per core), their sockets, buffers, timers and session
//! tables, the status endpoint, and the command line of the `cloudsocket` binary. It
//! drives the pure codecs of `edge-proto` and does not define wire formats itself; it
//! talks to the bus sidecar only through bounded channels.
//!
//! Map: [`node`] starts everything; [`shard`] is the per-core event loop (WebSocket
//! terminals, routing, the directory); [`poller`] gives a shard readiness without a task
//! per connection; [`wheel`] holds its deadlines; [`status`] serves `/stat`, `/metrics`
//! and `/admin/*`.

pub mod cli;
pub mod config;
pub mod metrics;
pub mod msg;
pub mod node;
pub mod platform;
pub mod poller;
pub mod shard;
pub mod status;
pub mod wheel;

use std::time::Duration;

use cli::{Command, NodeArgs};

/// Starts what the command line asks for; returns the process exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    match cli.command {
        None => {
            let args = cli::Cli::try_parse_from_defaults();
            run_node(args, false)
        }
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
        Some(Command::Msgbus(args)) => run_msgbus(&args),
        Some(Command::Rmqkeeper(args)) => run_rmqkeeper(args),
    }
}

/// `cloudsocket rmqkeeper`: checks the broker every `-d` and keeps its ZooKeeper node
/// while healthy, until SIGINT/SIGTERM (then the node is deleted).
fn run_rmqkeeper(args: cli::RmqkeeperArgs) -> anyhow::Result<i32> {
    if args.zks.trim().is_empty() {
        eprintln!("cloudsocket rmqkeeper: --zks (ZooKeeper servers) is required");
        return Ok(2);
    }
    let mut config = keeper::RmqConfig::new(keeper::ZkConfig::new(args.zks));
    config.amqp_addr = args.rmq;
    config.management_url = args.url;
    config.vhost = args.vh;
    config.interval = args.interval;
    config.root = args.zkroot;
    let signals = block_signals();
    println!(
        "cloudsocket {} rmqkeeper: {} under /{}, checking {:?} every {:?}",
        env!("CARGO_PKG_VERSION"),
        config.amqp_addr,
        config.root,
        config.vhost,
        config.interval
    );
    let keeper = keeper::RmqKeeper::spawn(config)?;
    let signal = wait_signal(signals);
    println!("signal {signal}: stopping");
    keeper.stop();
    Ok(0)
}

fn run_node(mut args: NodeArgs, comet: bool) -> anyhow::Result<i32> {
    if let Some(path) = args.conf.clone() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("--conf {}: {e}", path.display()))?;
        args = cli::merge_conf(args, &text)?;
    }
    if args.rh.is_some() || args.zks.as_deref().is_some_and(|z| !z.is_empty()) {
        eprintln!(
            "cloudsocket: cluster mode (--rh, --zks) is not built yet; run without them for the embedded node"
        );
        return Ok(2);
    }
    let config = config::Config::from_args(&args)?;
    for report in [
        tuning::limits::raise_nofile(),
        tuning::limits::raise_memlock(tuning::limits::GLOMMIO_MEMLOCK_MIN_BYTES),
    ] {
        println!("limits: {report}");
    }
    let signals = block_signals();
    let node = node::Node::start(config.clone())?;
    let mode = if comet {
        "comet (embedded bus)"
    } else {
        "embedded node"
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
    println!(
        "listening: status http://{}/stat  /metrics  /admin/{{bind,unbind,push}}",
        node.status_addr
    );
    if config.default_salt {
        println!(
            "warning: the login salt is the original's public default; set --salt or CLOUDSOCKET_SALT in production"
        );
    }
    let signal = wait_signal(signals);
    println!("signal {signal}: draining");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        node.shutdown();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        eprintln!("drain took longer than 5 s: exiting");
    }
    Ok(0)
}

/// `cloudsocket msgbus`: runs until SIGINT/SIGTERM. Brokers come from `--amqp`;
/// ZooKeeper registration and broker discovery are not wired yet.
fn run_msgbus(args: &cli::MsgbusArgs) -> anyhow::Result<i32> {
    let mut config = bus::msgbus::Config::new(args.addr.clone(), args.spool_dir.clone());
    config.status = Some(args.sh.clone()).filter(|sh| !sh.is_empty());
    config.redis = args.rh.clone().filter(|rh| !rh.is_empty());
    config.brokers = args.amqp.clone();
    if args.zks.as_deref().is_some_and(|z| !z.is_empty()) {
        eprintln!(
            "warning: --zks is not wired yet: not registering under /{} nor watching /{}; use --amqp",
            args.zkroot, args.zkrootr
        );
    }
    let signals = block_signals();
    let msgbus = bus::msgbus::Msgbus::start(config)?;
    println!(
        "cloudsocket {} msgbus: comets on {}, {} broker(s), redis {}",
        env!("CARGO_PKG_VERSION"),
        msgbus.local_addr(),
        args.amqp.len(),
        args.rh.as_deref().unwrap_or("none")
    );
    if let Some(addr) = msgbus.status_addr() {
        println!("listening: status http://{addr}/stat?type=app  /usermap  /metrics");
    }
    let signal = wait_signal(signals);
    println!("signal {signal}: stopping");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        msgbus.shutdown();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        eprintln!("stop took longer than 5 s: exiting");
    }
    Ok(0)
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so that
/// [`wait_signal`] receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a zeroed, then initialised, set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: set was initialised by block_signals.
    unsafe { libc::sigwait(&set, &mut signal) };
    signal
}
