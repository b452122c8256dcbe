//! The programs of the binary other than the node: `msgbus` and `rmqkeeper`, with their
//! ZooKeeper wiring, and the signal handling every program shares.

use std::time::Duration;

use crate::cli;

/// `cloudsocket rmqkeeper`: checks the broker every `-d` and keeps its ZooKeeper node
/// while healthy, until SIGINT/SIGTERM (then the node is deleted).
pub(crate) fn run_rmqkeeper(args: cli::RmqkeeperArgs) -> anyhow::Result<i32> {
    if args.zks.trim().is_empty() {
        eprintln!("cloudsocket rmqkeeper: --zks (ZooKeeper servers) is required");
        return Ok(2);
    }
    let zk = keeper::ZkConfig::new(args.zks).with_auth(args.zk_auth);
    let mut config = keeper::RmqConfig::new(zk);
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

/// `cloudsocket msgbus`: runs until SIGINT/SIGTERM. Brokers come from `--amqp`;
/// With `--zks`, it registers under `--zkroot` and follows the brokers listed there.
pub(crate) fn run_msgbus(args: &cli::MsgbusArgs) -> anyhow::Result<i32> {
    let mut config = bus::msgbus::Config::new(args.addr.clone(), args.spool_dir.clone());
    config.status = Some(args.sh.clone()).filter(|sh| !sh.is_empty());
    config.status_token = args.admin_token.clone();
    config.link_secret = secret("--link-secret", args.link_secret.as_deref())?;
    config.max_links = args.max_links.max(1);
    if let Some(sh) = &config.status {
        let addr = crate::config::parse_addr("sh", sh, None)?;
        anyhow::ensure!(
            args.admin_token.as_deref() != Some(""),
            "--admin-token: an empty token"
        );
        anyhow::ensure!(
            addr.ip().is_loopback() || args.admin_token.is_some() || args.admin_insecure,
            "--sh is not a loopback address: /usermap would list every online id to anyone; \
             set --admin-token (or CLOUDSOCKET_ADMIN_TOKEN), or --admin-insecure"
        );
    }
    let redis_auth = crate::config::redis_auth(args.redis_password_file.as_deref())?;
    config.redis = match args.rh.as_deref().filter(|rh| !rh.is_empty()) {
        Some(rh) => Some(bus::redis_target::RedisTarget::parse(rh, redis_auth)?),
        None => None,
    };
    config.brokers = args.amqp.clone();
    let signals = block_signals();
    let config_redis = config.redis.clone();
    let msgbus = bus::msgbus::Msgbus::start(config)?;
    let zookeeper = match args.zks.clone().filter(|z| !z.is_empty()) {
        Some(zks) => Some(register_msgbus(&zks, args, &msgbus)?),
        None => None,
    };
    println!(
        "cloudsocket {} msgbus: comets on {}, {} broker(s), redis {}",
        env!("CARGO_PKG_VERSION"),
        msgbus.local_addr(),
        args.amqp.len(),
        config_redis
            .as_ref()
            .map_or("none".into(), bus::redis_target::RedisTarget::describe)
    );
    if let Some(addr) = msgbus.status_addr() {
        println!("listening: status http://{addr}/stat?type=app  /usermap  /metrics");
    }
    if args.link_secret.is_none() {
        println!(
            "warning: no --link-secret: any TCP peer can link as a comet and inject frames; set --link-secret or CLOUDSOCKET_LINK_SECRET on msgbus and comets"
        );
    }
    let signal = wait_signal(signals);
    println!("signal {signal}: stopping");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        if let Some((registration, discovery)) = zookeeper {
            registration.stop();
            discovery.stop();
        }
        msgbus.shutdown();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        tracing::warn!("stop took longer than 5 s: exiting");
    }
    Ok(0)
}

/// A link secret from the command line: `None` when absent, refused when empty.
pub(crate) fn secret(flag: &str, value: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    match value {
        Some("") => anyhow::bail!("{flag}: an empty secret authenticates nothing"),
        Some(v) => Ok(Some(v.as_bytes().to_vec())),
        None => Ok(None),
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so that
/// [`wait_signal`] receives them.
pub(crate) fn block_signals() -> libc::sigset_t {
    block(&[libc::SIGINT, libc::SIGTERM])
}

/// As [`block_signals`], and SIGHUP and SIGUSR2 too: the node's programs (`run`, `comet`)
/// take SIGHUP as "reload" (the TLS certificate and key) and SIGUSR2 as "upgrade" (issue
/// 15), where the others keep their default actions.
pub(crate) fn block_node_signals() -> libc::sigset_t {
    block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR2])
}

fn block(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a zeroed, then initialised, set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub(crate) fn wait_signal(set: libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: set was initialised by block_signals.
    unsafe { libc::sigwait(&set, &mut signal) };
    signal
}

/// Registers the msgbus under `/<zkroot>` (data: the address comets dial) and feeds it the
/// brokers listed under `/<zkrootr>` (`<addr>,<exchange>` nodes written by rmqkeepers).
fn register_msgbus(
    zks: &str,
    args: &cli::MsgbusArgs,
    msgbus: &bus::msgbus::Msgbus,
) -> anyhow::Result<(keeper::zk::Registration, keeper::zk::Discovery)> {
    // The original wrote its -addr string; with port 0 or an unspecified IP that string is
    // not dialable, so the bound address is written instead.
    let bound = msgbus.local_addr();
    let data = if args.addr.ends_with(":0") || bound.ip().is_unspecified() {
        bound.to_string()
    } else {
        args.addr.clone()
    };
    let node = keeper::zk::NodeSpec::fixed(args.zkroot.clone(), data.into_bytes());
    let zk = keeper::zk::ZkConfig::new(zks).with_auth(args.zk_auth.clone());
    let registration = keeper::zk::Registration::spawn(zk.clone(), vec![node])?;
    let discovery = keeper::zk::Discovery::spawn(zk, &args.zkrootr)?;
    let members = discovery.members.clone();
    let feed = msgbus.broker_feed();
    // Brokers given with --amqp stay: ZooKeeper adds to them, it does not replace them.
    let fixed = args.amqp.clone();
    std::thread::Builder::new()
        .name("zk-brokers".into())
        .spawn(move || {
            for list in members.iter() {
                let brokers = merge_brokers(&fixed, &list);
                if feed.send(brokers).is_err() {
                    return;
                }
            }
        })?;
    println!(
        "zookeeper: registered under /{}, brokers from /{}",
        args.zkroot, args.zkrootr
    );
    Ok((registration, discovery))
}

/// The brokers to use: those given with `--amqp`, then those rmqkeepers list in
/// ZooKeeper (`<addr>,<exchange>` node data), without repeats.
fn merge_brokers(fixed: &[String], listed: &[String]) -> Vec<String> {
    let mut brokers = fixed.to_vec();
    for data in listed {
        if let Ok(node) = edge_proto::zk::RabbitNode::parse(data.as_bytes())
            && !brokers.iter().any(|b| b == node.addr)
        {
            brokers.push(node.addr.to_owned());
        }
    }
    brokers
}

/// Makes any panic end the process: a shard that panicked would otherwise leave a node
/// running one shard short (its sockets still bound, its sessions unreachable), which is
/// worse than a clean restart by the supervisor. The message names the thread.
pub(crate) fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        eprintln!(
            "cloudsocket: thread {} panicked; aborting the process (run it under a supervisor that restarts it)",
            thread.name().unwrap_or("unnamed")
        );
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zookeeper_brokers_add_to_the_given_ones() {
        let fixed = vec!["10.0.0.1:5672".to_owned()];
        // An empty listing (no rmqkeeper yet) must not take the --amqp broker away.
        assert_eq!(merge_brokers(&fixed, &[]), fixed);
        let listed = vec![
            "10.0.0.2:5672,MsgTopic".to_owned(),
            "10.0.0.1:5672,MsgTopic".to_owned(),
            "junk".to_owned(),
        ];
        assert_eq!(
            merge_brokers(&fixed, &listed),
            ["10.0.0.1:5672", "10.0.0.2:5672"]
        );
    }
}
