//! Passing file descriptors between processes over a Unix socket (`SCM_RIGHTS`), for the
//! zero-downtime upgrade (issue 15): the old process sends each shard's listeners and live
//! connections beside the handover stream (`edge_proto::handover`), which names them by
//! their index in the batch. Batches hold at most [`MAX_FDS`] descriptors (the kernel's
//! `SCM_MAX_FD` is 253).
//!
//! Owns only the `sendmsg`/`recvmsg` plumbing; what is sent, and when, is the upgrade's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors in one message.
pub const MAX_FDS: usize = 250;

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `data` (at least one byte) with `fds` attached, in one `sendmsg`.
pub fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "1 byte or more, at most MAX_FDS fds",
        ));
    }
    let mut control = vec![0u8; cmsg_space(fds.len().max(1))];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all zeros is valid, the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        // SAFETY: the control buffer is CMSG_SPACE(n) bytes, room for one header and n fds.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len =
                libc::CMSG_LEN((fds.len() * std::mem::size_of::<RawFd>()) as u32) as _;
            let slots = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                slots.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points at live buffers (iov, control) for the duration of the call.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if (n as usize) < data.len() => {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"))
        }
        _ => Ok(()),
    }
}

/// Receives one message into `buf`: its length and the descriptors attached (owned, close
/// on exec). A message whose descriptors did not all fit is an error (they were closed).
pub fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u8; cmsg_space(MAX_FDS)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG macros walk it
    // within that length, and each SCM_RIGHTS descriptor is a new one we now own.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let slots = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(slots.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors truncated",
        ));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_listening_socket_crosses_and_keeps_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (old, new) = UnixStream::pair().unwrap();
        send_with_fds(&old, b"listeners", &[listener.as_fd()]).unwrap();
        drop(listener); // the old process lets go of its copy
        let mut buf = [0u8; 64];
        let (n, mut fds) = recv_with_fds(&new, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"listeners");
        assert_eq!(fds.len(), 1);
        let inherited = TcpListener::from(fds.remove(0));
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"hello").unwrap();
        let (mut served, _) = inherited.accept().unwrap();
        let mut got = [0u8; 5];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn many_descriptors_in_one_message_and_none() {
        let sockets: Vec<UnixStream> = (0..MAX_FDS)
            .map(|_| UnixStream::pair().unwrap().0)
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"x", &borrowed).unwrap();
        let (_, fds) = recv_with_fds(&b, &mut [0u8; 8]).unwrap();
        assert_eq!(fds.len(), MAX_FDS);
        send_with_fds(&a, b"y", &[]).unwrap();
        let (n, fds) = recv_with_fds(&b, &mut [0u8; 8]).unwrap();
        assert_eq!((n, fds.len()), (1, 0));
        assert!(send_with_fds(&a, b"", &[]).is_err());
    }
}
