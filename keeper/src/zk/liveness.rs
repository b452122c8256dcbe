//! Liveness for the ZooKeeper client's connection: the same keepalive and
//! `TCP_USER_TIMEOUT` as msgbus links and Redis (`bus::net::set_liveness`), so that a
//! server gone silent (a partition: no RST, no FIN) fails the socket within about 5 s.
//! The client then reconnects to the next server of the list while the session lives,
//! and calls in flight fail with a connection loss instead of hanging.
//!
//! The 0.8 `zookeeper` client owns its socket and offers no hook to reach it, and its own
//! ping deadline is the whole session timeout (60 s here, as the original). So after each
//! connect we look for our process's sockets whose peer is one of the servers, take a
//! duplicate of each (`dup`: a descriptor of our own, on the same socket) and set the
//! options through it. Options belong to the socket, not the descriptor, so the client's
//! descriptor gets them. A descriptor closed and reused between the listing and the
//! `dup` is harmless: the peer is checked on the duplicate itself, so only a socket
//! connected to a ZooKeeper server is ever touched, and setting the options twice is a
//! no-op.
//!
//! Owns nothing; does **not** know about sessions or nodes (`client`).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Idle time before the first keepalive probe, and between probes (as `bus::net`).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Unanswered probes before the socket fails.
const PROBES: u32 = 3;
/// Longest time written data may stay unacknowledged before the socket fails.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets keepalive and `TCP_USER_TIMEOUT` on every socket of this process connected to one
/// of `servers`; returns how many it found.
pub(crate) fn arm(servers: &[SocketAddr]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE)
        .with_retries(PROBES);
    let mut armed = 0;
    for entry in dir.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok());
        let (true, Some(fd)) = (is_socket, fd) else {
            continue;
        };
        let Some(socket) = duplicate(fd) else {
            continue;
        };
        let socket = SockRef::from(&socket);
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if !peer.is_some_and(|p| servers.contains(&p)) {
            continue;
        }
        if socket.set_tcp_keepalive(&keepalive).is_ok()
            && socket.set_tcp_user_timeout(Some(USER_TIMEOUT)).is_ok()
        {
            armed += 1;
        }
    }
    armed
}

/// A descriptor of our own on the same open file as `fd`, or `None` if `fd` is closed.
fn duplicate(fd: i32) -> Option<OwnedFd> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` takes any integer and touches no memory; for a
    // closed descriptor it fails with EBADF.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(dup) })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn only_sockets_connected_to_the_servers_are_armed() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_server = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert_eq!(arm(&[server.local_addr().unwrap()]), 1);
        let armed = SockRef::from(&to_server);
        assert_eq!(armed.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        assert!(armed.keepalive().unwrap());
        assert_eq!(armed.tcp_keepalive_time().unwrap(), KEEPALIVE);
        let untouched = SockRef::from(&to_other);
        assert_eq!(untouched.tcp_user_timeout().unwrap(), None);
        assert!(!untouched.keepalive().unwrap());
    }
}
