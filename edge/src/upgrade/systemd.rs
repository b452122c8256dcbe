//! systemd's notification protocol (`sd_notify(3)`), spoken directly: a datagram of
//! `KEY=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract one). Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.
//!
//! A node says `READY=1` once it listens (units of `Type=notify`). An upgrade's old
//! process says `MAINPID=<new pid>` and waits at a barrier (`BARRIER=1` with a pipe's write
//! end; systemd closes it once it has taken every earlier message) before it exits, so
//! systemd follows the new process instead of ending the unit with the old one.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::time::Duration;

/// A datagram socket connected to `$NOTIFY_SOCKET`, if set.
fn connect() -> Option<UnixDatagram> {
    let name = std::env::var_os("NOTIFY_SOCKET")?;
    let name = name.to_str()?;
    let addr = match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name).ok()?,
        None => SocketAddr::from_pathname(name).ok()?,
    };
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect_addr(&addr).ok()?;
    Some(socket)
}

/// Sends `state` (for example `READY=1`); whether it went.
pub fn notify(state: &str) -> bool {
    connect().is_some_and(|s| s.send(state.as_bytes()).is_ok())
}

/// Waits (up to `timeout`) until systemd has taken every notification sent before; true
/// when it has, or when not under systemd.
pub fn barrier(timeout: Duration) -> bool {
    let Some(socket) = connect() else {
        return true;
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    // SAFETY: both are fresh and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // sendmsg on a connected datagram socket needs no address: fd_passing's stream helper
    // serves as it is.
    // SAFETY: the descriptor is ours; the stream wrapper only calls sendmsg on it.
    let stream = unsafe { UnixStream::from_raw_fd(socket.into_raw_fd()) };
    let sent = crate::fd_passing::send_with_fds(&stream, b"BARRIER=1", &[write.as_fd()]);
    drop(write);
    if sent.is_err() {
        return false;
    }
    let mut poll = libc::pollfd {
        fd: read.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut poll, 1, ms) == 1 && poll.revents & libc::POLLHUP != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_and_a_barrier_reach_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("cs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: tests in this module are the only readers of NOTIFY_SOCKET in this binary.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("MAINPID=42"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42");
        // The "manager" takes the barrier's descriptor and closes it.
        let manager = std::thread::spawn(move || {
            let stream = UnixStream::from(OwnedFd::from(listener));
            let (n, fds) = crate::fd_passing::recv_with_fds(&stream, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"BARRIER=1");
            drop(fds);
        });
        assert!(barrier(Duration::from_secs(5)));
        manager.join().unwrap();
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let _ = std::fs::remove_dir_all(&dir);
    }
}
