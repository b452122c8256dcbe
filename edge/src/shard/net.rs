//! Thin, non-blocking socket calls for the shard: listeners with `SO_REUSEPORT`, accept,
//! receive and gathered send. No buffering and no policy here; errors are returned as
//! `io::Error` and `WouldBlock` means "try when ready".

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::Shard;
use super::conn::Conn;

/// A non-blocking TCP listener on `addr` with `SO_REUSEPORT`, so every shard binds its own
/// and the kernel spreads connections between them.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

/// The local address of a bound socket.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: we borrow the descriptor only for the call; ManuallyDrop keeps it open.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an inet socket"))
}

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Accepts one connection, non-blocking and close-on-exec, with `TCP_NODELAY` set.
pub fn accept(listener: RawFd) -> io::Result<RawFd> {
    // SAFETY: accept4 with null address pointers is valid.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: setting an int option on a socket we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Ok(fd)
}

/// Receives into `buf` without blocking; `Ok(0)` is the peer's end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    cvt(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// Sends `head` then `body` in one call without blocking (no SIGPIPE); returns bytes sent.
pub fn send2(fd: RawFd, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut _,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut _,
            iov_len: body.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid; the iovecs outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    // SAFETY: msg points at valid iovecs.
    cvt(unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
}

/// Closes a descriptor we own.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns fd and forgets it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

impl Shard {
    /// Accepts every pending connection of listener `i`.
    pub(super) fn on_listener_ready(&mut self, i: usize, still_armed: bool) {
        let Some(listener) = self.listeners.get(i).map(std::os::fd::AsRawFd::as_raw_fd) else {
            return;
        };
        if !still_armed {
            let _ = self.poller.watch(listener, super::listener_token(i));
        }
        loop {
            match accept(listener) {
                Ok(fd) => self.on_accepted(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog, try again later.
                    eprintln!("shard {}: accept: {e}", self.index);
                    break;
                }
            }
        }
    }

    fn on_accepted(&mut self, fd: RawFd) {
        if self.draining {
            close(fd);
            return;
        }
        let deadline = self.now() + 10;
        let (slot, generation) = self.conns.insert(Conn::new(fd, deadline));
        if self
            .poller
            .watch(fd, super::conn_token(slot, generation))
            .is_err()
        {
            self.conns.remove(slot);
            close(fd);
            return;
        }
        crate::metrics::bump(&self.metrics.ws_accepted);
        self.metrics
            .ws_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.set_deadline(slot, deadline);
    }
}
