//! Thin, non-blocking socket calls for the shard: listeners with `SO_REUSEPORT`, accept,
//! receive and gathered send. No buffering and no policy here; errors are returned as
//! `io::Error` and `WouldBlock` means "try when ready".

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::Shard;
use super::conn::Conn;
use crate::core::terminal::Terminal;

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
    let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
    nodelay_for_accepted(fd.as_raw_fd())?;
    Ok(fd)
}

/// Sets `TCP_NODELAY` on a listener: Linux copies it to every connection accepted from
/// it, which saves a `setsockopt` per connection (also done on listeners an upgrade hands
/// over, which an older binary may not have set).
pub fn nodelay_for_accepted(listener: RawFd) -> io::Result<()> {
    // SAFETY: we borrow the descriptor only for the call; ManuallyDrop keeps it open.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(listener) });
    socket.set_tcp_nodelay(true)
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

/// The peer's IP of a connected socket.
pub fn peer_ip(fd: RawFd) -> Option<std::net::IpAddr> {
    // SAFETY: we borrow the descriptor only for the call; ManuallyDrop keeps it open.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    Some(socket.peer_addr().ok()?.as_socket()?.ip())
}

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Accepts one connection, non-blocking and close-on-exec (with `TCP_NODELAY`, from its
/// listener: [`nodelay_for_accepted`]); the descriptor and the peer's address.
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<IpAddr>)> {
    // SAFETY: a zeroed sockaddr_storage is a valid buffer for accept4 to fill.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len describe a buffer of the size accept4 is told.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let peer = sockaddr_to_std(&addr).map(|a| a.ip());
    Ok((owned, peer))
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

/// A non-blocking UDP socket on `addr` with `SO_REUSEPORT` (every shard binds its own).
pub fn udp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    // Room for bursts of small datagrams; the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

/// Fills `buf` from the kernel's random source.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let n = unsafe { libc::getrandom(buf[at..].as_mut_ptr().cast(), buf.len() - at, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        at += n as usize;
    }
    Ok(())
}

/// Receives up to `lens.len()` datagrams with one `recvmmsg`, datagram `i` into
/// `bufs[i * size..][..size]`. `lens[i]` is the datagram's real length (more than `size`
/// when it was truncated), `from[i]` its source. Returns how many arrived (0: none now).
pub fn recv_batch(
    fd: RawFd,
    bufs: &mut [u8],
    size: usize,
    lens: &mut [usize],
    from: &mut [Option<SocketAddr>],
) -> io::Result<usize> {
    let count = lens.len().min(from.len()).min(bufs.len() / size);
    // SAFETY: zeroed iovec, mmsghdr and sockaddr_storage are valid initial values.
    let mut iovs: Vec<libc::iovec> = (0..count)
        .map(|i| libc::iovec {
            iov_base: bufs[i * size..].as_mut_ptr().cast(),
            iov_len: size,
        })
        .collect();
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; count];
    let mut msgs: Vec<libc::mmsghdr> = (0..count)
        .map(|i| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m
        })
        .collect();
    // SAFETY: msgs points at count valid headers whose buffers outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            count as u32,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = n as usize;
    for i in 0..n {
        lens[i] = msgs[i].msg_len as usize;
        from[i] = sockaddr_to_std(&addrs[i]);
    }
    Ok(n)
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(v6.sin6_port))))
        }
        _ => None,
    }
}

/// Sends datagrams `msgs[i] = (start, len, to)` of `bytes` with `sendmmsg`, without
/// blocking; returns (sent, failed). A datagram the socket refuses is counted as failed
/// (UDP has no partial sends; the device retries).
///
/// Every `(start, len)` must lie within `bytes`: one that does not is counted failed and
/// never handed to the kernel (which would read past the buffer).
pub fn send_batch(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    msgs: &[(usize, usize, SocketAddr)],
) -> (usize, usize) {
    let in_bounds = |&&(start, len, _): &&(usize, usize, SocketAddr)| {
        start.checked_add(len).is_some_and(|end| end <= bytes.len())
    };
    let out_of_bounds = msgs.len() - msgs.iter().filter(in_bounds).count();
    let msgs: Vec<(usize, usize, SocketAddr)> = msgs.iter().filter(in_bounds).copied().collect();
    let fd = fd.as_raw_fd();
    let addrs: Vec<socket2::SockAddr> = msgs.iter().map(|m| socket2::SockAddr::from(m.2)).collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|&(start, len, _)| libc::iovec {
            iov_base: bytes[start..start + len].as_ptr() as *mut _,
            iov_len: len,
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..msgs.len())
        .map(|i| {
            // SAFETY: a zeroed mmsghdr is valid; the pointers below outlive the call.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = addrs[i].as_ptr() as *mut _;
            m.msg_hdr.msg_namelen = addrs[i].len();
            m
        })
        .collect();
    let (mut sent, mut failed, mut at) = (0, out_of_bounds, 0);
    while at < hdrs.len() {
        // SAFETY: hdrs[at..] are valid headers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs[at..].as_mut_ptr(),
                (hdrs.len() - at) as u32,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first datagram failed (buffer full, unreachable): skip it.
            failed += 1;
            at += 1;
        } else {
            sent += n as usize;
            at += n as usize;
        }
    }
    (sent, failed)
}

/// Connections accepted per listener readiness before the others get their turn.
const ACCEPTS_PER_CALL: usize = 16;

impl Shard {
    /// Accepts up to [`ACCEPTS_PER_CALL`] pending connections of listener `i`; when more
    /// may wait, the listener is queued again behind the other newcomers (no new edge would
    /// come for them).
    pub(super) fn on_listener_ready(&mut self, i: usize) {
        let Some(listener) = self.listeners.get(i).map(std::os::fd::AsRawFd::as_raw_fd) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_CALL {
            if !self.conn_limits.may_accept(i, self.now()) {
                // Over --max-accept-rate: the rest waits in the backlog until the tick.
                crate::metrics::bump_own(&self.metrics.accept_paused);
                if !self.paused_listeners.contains(&i) {
                    self.paused_listeners.push(i);
                }
                return;
            }
            match accept(listener) {
                Ok((fd, peer)) => self.on_accepted(fd, peer, i >= self.tls_listener_from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog, retry at the tick.
                    crate::metrics::bump_own(&self.metrics.accept_errors);
                    self.log_accept_error(&e);
                    if !self.paused_listeners.contains(&i) {
                        self.paused_listeners.push(i);
                    }
                    return;
                }
            }
        }
        self.resume_listener(i);
    }

    /// Queues listener `i` behind the other newcomers (no new edge would come for what
    /// waits in its backlog).
    pub(super) fn resume_listener(&mut self, i: usize) {
        self.newcomers.push_back(crate::poller::Readiness {
            token: super::listener_token(i),
            readable: true,
            writable: false,
            hangup: false,
        });
    }

    fn log_accept_error(&mut self, e: &io::Error) {
        if let Some(held_back) = self.accept_log.admit(std::time::Instant::now()) {
            tracing::warn!(shard = self.index, held_back, "accept: {e}");
        }
    }

    /// Takes a connected socket in as `conn`: a slot, its source counted (refused over
    /// `--max-conns-per-ip` when `capped`, and counted), its readiness watched. From then
    /// on the record owns the descriptor; `None`: nothing is kept and it closes.
    pub(super) fn adopt(
        &mut self,
        fd: OwnedFd,
        mut conn: Conn,
        source: crate::core::conn_limits::SourceKey,
        capped: bool,
    ) -> Option<(u32, u32)> {
        let raw = fd.as_raw_fd();
        conn.fd = raw;
        let (slot, generation) = self.conns.insert(conn);
        if !self.conn_limits.opened(slot, source) && capped {
            self.conns.remove(slot);
            // Counted before `fd` closes (on return), so that whoever sees the close also
            // sees the count.
            crate::metrics::bump_own(&self.metrics.conns_per_ip_refused);
            return None;
        }
        if self
            .poller
            .watch(raw, super::conn_token(slot, generation))
            .is_err()
        {
            self.conns.remove(slot);
            self.conn_limits.closed(slot);
            return None;
        }
        let _ = fd.into_raw_fd();
        Some((slot, generation))
    }

    fn on_accepted(&mut self, fd: OwnedFd, peer: Option<IpAddr>, tls: bool) {
        if self.draining {
            return;
        }
        // A TLS listener's connection gets its rustls state first (nothing to undo if not).
        let session = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(t)) => match rustls::server::UnbufferedServerConnection::new(t.config()) {
                Ok(session) => Some(session),
                Err(_) => {
                    crate::metrics::bump_own(&self.metrics.tls_handshake_errors);
                    return;
                }
            },
            (true, None) => return,
        };
        let terminal = Terminal::accepted(self.now(), &self.timeouts);
        let source = peer.map_or(0, crate::core::conn_limits::source_key);
        let Some((slot, _)) = self.adopt(fd, Conn::new(0, terminal), source, true) else {
            return;
        };
        if let Some(session) = session {
            self.tls_conns
                .insert(slot, super::tls::TlsConn::new(session));
        }
        crate::metrics::bump_own(&self.metrics.ws_accepted);
        self.metrics
            .ws_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.schedule(slot);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn accepted_connections_have_nodelay_from_their_listener() {
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let addr = local_addr(listener.as_raw_fd()).unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match accept(listener.as_raw_fd()) {
                Ok((fd, _)) => break fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        let socket =
            std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(accepted.as_raw_fd()) });
        assert!(socket.tcp_nodelay().unwrap());
    }

    #[test]
    fn send_batch_never_reads_past_its_buffer() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bytes = b"helloworld";
        let msgs = [(0, 5, to), (5, 10, to), (usize::MAX, 2, to), (5, 5, to)];
        let (sent, failed) = send_batch(sender.as_fd(), bytes, &msgs);
        assert_eq!(
            (sent, failed),
            (2, 2),
            "two out of bounds, never handed over"
        );
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"world");
    }
}
