//! The operator's side of an upgrade. A node listens on the abstract Unix socket
//! `@cloudsocket-upgrade-<pid>` (no file to clean up; only processes of the same user, or
//! root, are served: `SO_PEERCRED`). `cloudsocket upgrade [--pid PID] [--binary PATH]
//! [--timeout SECS]` sends it one line, `upgrade <timeout ms> <binary>`, and prints the
//! lines it answers until `upgraded …` or `failed …`. SIGUSR2 starts the same upgrade to
//! the binary the node was started from. Both reach the node's main thread as [`Event`]s,
//! beside its other signals.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::Sender;

/// What wakes a node's main thread.
#[derive(Debug)]
pub enum Event {
    /// A signal (SIGINT, SIGTERM, SIGHUP, SIGUSR2).
    Signal(i32),
    /// An upgrade asked over the control socket: the binary, the deadline, and where to
    /// write progress and the result.
    Upgrade(Option<PathBuf>, Duration, UnixStream),
}

fn socket_name(pid: u32) -> String {
    format!("cloudsocket-upgrade-{pid}")
}

/// Forwards the blocked `signals` to `events`, from a thread of its own.
pub fn forward_signals(signals: libc::sigset_t, events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let signal = crate::programs::wait_signal(signals);
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}

/// Listens on this process's control socket and forwards upgrade requests to `events`.
pub fn listen(events: Sender<Event>) -> std::io::Result<()> {
    let addr = SocketAddr::from_abstract_name(socket_name(std::process::id()))?;
    let listener = UnixListener::bind_addr(&addr)?;
    std::thread::Builder::new()
        .name("upgrade-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(event) = request(stream) {
                    let _ = events.send(event);
                }
            }
        })
        .map(|_| ())
}

/// Whether the peer runs as this process's user, or as root.
fn trusted(stream: &UnixStream) -> bool {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    peer(stream).is_some_and(|c| c.uid == 0 || c.uid == me)
}

/// The peer's credentials (`SO_PEERCRED`).
fn peer(stream: &UnixStream) -> Option<libc::ucred> {
    use std::os::fd::AsRawFd;
    let mut cred: libc::ucred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred)
}

/// Reads one request line: `upgrade <timeout ms> [binary]`.
fn request(mut stream: UnixStream) -> Option<Event> {
    if !trusted(&stream) {
        let _ = writeln!(stream, "failed: not this node's user");
        return None;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let mut words = line.trim_end().splitn(3, ' ');
    if words.next() != Some("upgrade") {
        let _ = writeln!(stream, "failed: unknown request");
        return None;
    }
    let timeout = Duration::from_millis(words.next()?.parse().ok()?);
    let binary = words.next().filter(|b| !b.is_empty()).map(PathBuf::from);
    let _ = stream.set_read_timeout(None);
    Some(Event::Upgrade(binary, timeout, stream))
}

/// The node to upgrade: `pid`, or the one process running this binary's `run` or `comet`.
fn find_node(pid: Option<u32>) -> anyhow::Result<u32> {
    if let Some(pid) = pid {
        return Ok(pid);
    }
    let me = std::process::id();
    // A node whose binary was replaced on disk shows it as "<path> (deleted)".
    let exe = std::env::current_exe()?;
    let same_binary = |link: PathBuf| {
        let link = link.to_string_lossy().into_owned();
        link == exe.to_string_lossy() || link.strip_suffix(" (deleted)") == exe.to_str()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let same = std::fs::read_link(entry.path().join("exe")).is_ok_and(same_binary);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // `run`, `comet`, or no subcommand at all (a node too): the first word after
        // the program's flags decides; `upgrade`, `msgbus`… are not nodes.
        let node = !cmdline
            .split(|&b| b == 0)
            .skip(1)
            .any(|w| [&b"msgbus"[..], b"rmqkeeper", b"tune", b"upgrade"].contains(&w));
        if pid != me && same && node {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => anyhow::bail!("no running node of this binary found: give --pid"),
        _ => anyhow::bail!(
            "{} running nodes found ({found:?}): give --pid",
            found.len()
        ),
    }
}

/// `cloudsocket upgrade`: asks the node and prints its answers; exit code 0 when it
/// upgraded, 1 when it failed (and serves on).
pub fn run_client(
    pid: Option<u32>,
    binary: Option<PathBuf>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let pid = find_node(pid)?;
    let addr = SocketAddr::from_abstract_name(socket_name(pid))?;
    let mut stream = UnixStream::connect_addr(&addr).map_err(|e| {
        anyhow::anyhow!("node {pid}: no upgrade socket ({e}); is it a cloudsocket run or comet?")
    })?;
    // Anyone may bind an abstract name first: speak only to the node itself.
    let server = peer(&stream).map(|c| c.pid);
    anyhow::ensure!(
        server == i32::try_from(pid).ok(),
        "the upgrade socket of node {pid} is held by another process ({server:?})"
    );
    let binary = match binary {
        Some(b) => {
            std::fs::canonicalize(&b).map_err(|e| anyhow::anyhow!("{}: {e}", b.display()))?
        }
        None => PathBuf::new(),
    };
    writeln!(
        stream,
        "upgrade {} {}",
        timeout.as_millis(),
        binary.display()
    )?;
    let mut upgraded = false;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        println!("{line}");
        upgraded |= line.starts_with("upgraded");
    }
    Ok(if upgraded { 0 } else { 1 })
}
