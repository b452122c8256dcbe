//! Zero-downtime upgrade (issue 15): the old process starts the new binary with its own
//! arguments and hands it everything over a `SOCK_SEQPACKET` pair (`transfer`): every
//! shard's listeners, UDP socket, WebSocket connections, UDP sessions and directory slice
//! (`shard::handover`), the status listeners and the embedded bus's state. The new
//! process (`inherit`) takes them in before its shards' first turn.
//!
//! The order, and why nothing is lost or duplicated:
//! 1. start the new binary; it says `HELLO` once it has parsed its arguments (a binary
//!    that cannot start fails here, before anything stopped);
//! 2. every shard stops reading and accepting (`quiesce`); what is in flight between
//!    shards and the bus lands for [`SETTLE`];
//! 3. every shard writes its state (`freeze`); the streams and descriptors go over;
//! 4. the new process takes them in, starts its shards held at a gate (in cluster mode:
//!    its sidecar takes the online counts and leases over instead of resetting
//!    `Host:<lip>`, it registers in ZooKeeper and dials every msgbus the old one had
//!    linked, so from here on the msgbuses send to it), and says `READY`;
//! 5. the old process gives the messages its frozen shards got meanwhile
//!    (`shard::held`) to the new one, which queues them for delivery;
//! 6. the old process says `GO` and exits without closing anything (the kernel keeps each
//!    socket open through the new process's copy; it first leaves ZooKeeper); the new one
//!    opens its gate.
//!
//! Until `GO` only the old process ever reads or writes a socket. Any failure before it —
//! the binary does not start or exits, refuses the stream (another handover version or
//! shard count), or does not say `READY` within the deadline — kills the new process and
//! resumes the old shards, which read every socket again for what arrived meanwhile.
//!
//! `control` is the operator's side: `cloudsocket upgrade` and SIGUSR2.

pub mod control;
pub mod inherit;
pub(crate) mod process;
pub mod systemd;
pub mod transfer;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bus::messages::Frozen;
use thiserror::Error;

use crate::node::Node;

/// The descriptor number the new process finds the handover socket at.
pub const HANDOVER_FD: i32 = 3;
/// The environment variable that tells the new process it is one.
pub const HANDOVER_ENV: &str = "CLOUDSOCKET_HANDOVER_FD";
/// How long answers and relays in flight get to land once every shard is quiet.
pub const SETTLE: Duration = Duration::from_millis(50);
/// How long frames a msgbus queued on the old links before the new ones came up get to
/// land, once the new process confirmed.
const HELD_SETTLE: Duration = Duration::from_millis(10);

/// What to upgrade to.
#[derive(Debug, Clone)]
pub struct Request {
    /// The new binary.
    pub binary: PathBuf,
    /// Its arguments (the running node's own).
    pub args: Vec<OsString>,
    /// The deadline for the whole handover, from the start of the new binary to its `READY`.
    pub timeout: Duration,
}

/// How an upgrade went.
#[derive(Debug, Clone)]
pub struct Report {
    /// The new process.
    pub pid: u32,
    /// WebSocket connections handed over.
    pub connections: usize,
    /// UDP sessions handed over.
    pub udp_sessions: usize,
    /// From the quiesce to the `READY`: how long the node did not serve.
    pub stalled: Duration,
    /// From the start of the new binary to the `READY`.
    pub total: Duration,
    /// Messages that reached the frozen shards and were forwarded to the new process.
    pub forwarded: usize,
    /// Messages that reached them and were not (see `shard::held`).
    pub dropped: usize,
}

/// Why an upgrade failed (the old process serves on).
#[derive(Debug, Error)]
pub enum UpgradeError {
    /// The new binary could not be started.
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It ended, or closed the handover socket, before `READY`.
    #[error("the new process went away before it was ready ({0})")]
    Gone(String),
    /// It refused the handover.
    #[error("the new process refused the handover: {0}")]
    Refused(String),
    /// No `HELLO` or no `READY` within the deadline.
    #[error("the new process did not confirm within {0:?}")]
    Timeout(Duration),
    /// The node could not stop, write or send its state.
    #[error("{0}")]
    Node(String),
}

/// Counters of upgrades, on `/metrics`.
#[derive(Debug, Default)]
pub struct UpgradeMetrics {
    /// Upgrades that failed and were rolled back (in this process).
    pub failures: AtomicU64,
    /// The last upgrade that brought this process up: stall, microseconds.
    pub last_stall_us: AtomicU64,
    /// Its connections and UDP sessions.
    pub last_connections: AtomicU64,
    /// See `last_connections`.
    pub last_udp_sessions: AtomicU64,
    /// Messages the old process's frozen shards got and forwarded.
    pub last_forwarded: AtomicU64,
    /// Messages they got and did not forward, or this process could not queue.
    pub last_dropped: AtomicU64,
    /// An upgrade is under way: `/admin/*` answers 503 meanwhile.
    pub in_progress: std::sync::atomic::AtomicBool,
}

impl UpgradeMetrics {
    /// The `cloudsocket_upgrade_*` families.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let families = [
            (
                "upgrade_failures_total",
                "counter",
                "Upgrades that failed and were rolled back by this process.",
                load(&self.failures) as f64,
            ),
            (
                "upgrade_last_seconds",
                "gauge",
                "How long the upgrade that started this process stopped serving (0: not started by one).",
                load(&self.last_stall_us) as f64 / 1e6,
            ),
            (
                "upgrade_last_connections",
                "gauge",
                "WebSocket connections that upgrade handed over.",
                load(&self.last_connections) as f64,
            ),
            (
                "upgrade_last_udp_sessions",
                "gauge",
                "UDP sessions that upgrade handed over.",
                load(&self.last_udp_sessions) as f64,
            ),
            (
                "upgrade_last_forwarded_messages",
                "gauge",
                "Messages that reached the old process after its freeze and were delivered here.",
                load(&self.last_forwarded) as f64,
            ),
            (
                "upgrade_last_dropped_messages",
                "gauge",
                "Messages that reached the old process after its freeze and were not delivered.",
                load(&self.last_dropped) as f64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP cloudsocket_{name} {help}\n# TYPE cloudsocket_{name} {kind}\ncloudsocket_{name} {value}"
            );
        }
    }
}

/// Starts `request.binary` with the handover socket as its fd 3.
fn spawn(request: &Request, theirs: &UnixStream) -> Result<Child, UpgradeError> {
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&request.binary);
    command
        .args(&request.args)
        .env(HANDOVER_ENV, HANDOVER_FD.to_string());
    // SAFETY: only async-signal-safe calls between fork and exec: dup2 onto fd 3 (which
    // clears close-on-exec) and sigprocmask to hand the new process an empty mask.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, HANDOVER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| UpgradeError::Spawn(request.binary.display().to_string(), e))
}

/// Hands the node over to a new process. On success the caller must exit at once without
/// closing anything (the new process serves); on failure the node serves on.
pub fn hand_over(
    node: &Node,
    request: &Request,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, UpgradeError> {
    let started = Instant::now();
    let (ours, theirs) = transfer::pair().map_err(|e| UpgradeError::Node(e.to_string()))?;
    let mut child = spawn(request, &theirs)?;
    drop(theirs);
    progress(&format!(
        "started {} as pid {}",
        request.binary.display(),
        child.id()
    ));
    let result = exchange(node, request, &ours, started, progress)
        .and_then(|(frozen, stall)| Ok((frozen, stall, forward_held(node, &ours)?)));
    match result {
        Ok((frozen, stall, (forwarded, dropped))) => {
            let stalled = stall.elapsed();
            let ms = stalled.as_millis();
            let go = format!("GO {ms} {forwarded} {dropped}");
            if let Err(e) = transfer::say(&ours, &go) {
                rollback(node, &mut child, &UpgradeError::Gone(e.to_string()));
                return Err(UpgradeError::Gone(e.to_string()));
            }
            let (connections, udp_sessions) = counts(&frozen);
            Ok(Report {
                pid: child.id(),
                connections,
                udp_sessions,
                stalled,
                total: started.elapsed(),
                forwarded,
                dropped,
            })
        }
        Err(e) => {
            rollback(node, &mut child, &e);
            Err(e)
        }
    }
}

fn rollback(node: &Node, child: &mut Child, why: &UpgradeError) {
    let _ = child.kill();
    let _ = child.wait();
    node.resume();
    node.metrics
        .upgrade
        .in_progress
        .store(false, Ordering::Relaxed);
    tracing::warn!(error = %why, "upgrade failed: serving on");
}

/// Step 5: what the frozen shards got since the freeze, once nothing more is on its way
/// (the new process's msgbus links are up): one stream per shard. Returns the messages
/// forwarded and those dropped.
fn forward_held(node: &Node, socket: &UnixStream) -> Result<(usize, usize), UpgradeError> {
    std::thread::sleep(HELD_SETTLE);
    let released = node
        .release(Duration::from_secs(2))
        .map_err(|e| UpgradeError::Node(e.to_string()))?;
    let (mut forwarded, mut dropped) = (0, 0);
    for shard in &released {
        transfer::send_stream(socket, &shard.stream, &[])
            .map_err(|e| UpgradeError::Gone(e.to_string()))?;
        forwarded += shard.forwarded;
        dropped += shard.dropped;
    }
    Ok((forwarded, dropped))
}

/// Steps 1 to 4: returns the streams handed over and when serving stopped.
fn exchange(
    node: &Node,
    request: &Request,
    socket: &UnixStream,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Frozen>, Instant), UpgradeError> {
    let left = || {
        request
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    let heard = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            UpgradeError::Timeout(request.timeout)
        }
        _ => UpgradeError::Gone(e.to_string()),
    };
    let hello = transfer::hear(socket, left()).map_err(heard)?;
    if hello != "HELLO" {
        return Err(UpgradeError::Refused(hello));
    }
    let stall = Instant::now();
    node.metrics
        .upgrade
        .in_progress
        .store(true, Ordering::Relaxed);
    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1e3;
    let node_error = |e: anyhow::Error| UpgradeError::Node(e.to_string());
    node.quiesce(Duration::from_secs(2)).map_err(node_error)?;
    std::thread::sleep(SETTLE);
    let step = Instant::now();
    let frozen = node.freeze(Duration::from_secs(5)).map_err(node_error)?;
    let whole = node
        .node_stream(Duration::from_secs(2))
        .map_err(node_error)?;
    let (froze_ms, step) = (ms(step), Instant::now());
    // A new process that stops reading must not hold the frozen node past the deadline.
    socket
        .set_write_timeout(Some(left()))
        .map_err(|e| UpgradeError::Node(e.to_string()))?;
    for (stream, fds) in frozen
        .iter()
        .map(|f| (&f.stream, &f.fds))
        .chain(std::iter::once((&whole.0, &whole.1)))
    {
        transfer::send_stream(socket, stream, fds)
            .map_err(|e| UpgradeError::Gone(e.to_string()))?;
    }
    let (sent_ms, step) = (ms(step), Instant::now());
    let bytes: usize = frozen.iter().map(|f| f.stream.len()).sum();
    progress(&format!(
        "state written in {froze_ms:.1} ms ({bytes} bytes) and sent in {sent_ms:.1} ms"
    ));
    let answer = transfer::hear(socket, left()).map_err(heard)?;
    progress(&format!(
        "taken in by the new process in {:.1} ms",
        ms(step)
    ));
    match answer.strip_prefix("REFUSE ") {
        Some(why) => Err(UpgradeError::Refused(why.to_owned())),
        None if answer == "READY" => Ok((frozen, stall)),
        None => Err(UpgradeError::Refused(answer)),
    }
}

/// WebSocket connections and UDP sessions in the shards' states.
fn counts(frozen: &[Frozen]) -> (usize, usize) {
    frozen.iter().fold((0, 0), |(ws, udp), f| {
        (ws + f.connections, udp + f.udp_sessions)
    })
}
