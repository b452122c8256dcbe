//! The handover channel between the old and the new process: a `SOCK_SEQPACKET` Unix
//! socket pair (message boundaries kept, so descriptors arrive with the bytes they were
//! sent with). Streams go one after another, each as a header message (`S`, its length,
//! its descriptor count), then chunks (`C`, up to 32 KiB of the stream and up to
//! [`MAX_FDS`] descriptors each) until both are sent. Then the new process answers
//! `READY` or `REFUSE <why>`, and the old one says `GO <handover ms>`.
//!
//! Every read has a deadline; a peer that dies shows as end of stream.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::fd_passing::{MAX_FDS, recv_with_fds, send_with_fds};

/// Bytes of a stream per chunk.
const CHUNK: usize = 32 * 1024;
/// The largest stream accepted.
const MAX_STREAM: usize = edge_proto::handover::MAX_LEN;

/// A connected `SOCK_SEQPACKET` pair, close-on-exec (the child's end is moved to fd 3
/// in the child).
pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe {
        (
            UnixStream::from_raw_fd(fds[0]),
            UnixStream::from_raw_fd(fds[1]),
        )
    })
}

/// Sends one stream and its descriptors.
pub fn send_stream(socket: &UnixStream, stream: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut header = vec![b'S'];
    header.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    header.extend_from_slice(&(fds.len() as u64).to_le_bytes());
    send_with_fds(socket, &header, &[])?;
    let (mut bytes, mut descriptors) = (stream, fds);
    while !bytes.is_empty() || !descriptors.is_empty() {
        let (b, rest) = bytes.split_at(bytes.len().min(CHUNK));
        let (d, others) = descriptors.split_at(descriptors.len().min(MAX_FDS));
        let mut chunk = Vec::with_capacity(1 + b.len());
        chunk.push(b'C');
        chunk.extend_from_slice(b);
        // SAFETY: the descriptors stay open (the caller's shards own them) for the call.
        let borrowed: Vec<BorrowedFd<'_>> = d
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        send_with_fds(socket, &chunk, &borrowed)?;
        (bytes, descriptors) = (rest, others);
    }
    Ok(())
}

/// Receives one stream and its descriptors, each read within `timeout`.
pub fn recv_stream(socket: &UnixStream, timeout: Duration) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; CHUNK + 1];
    let (n, _) = recv_with_fds(socket, &mut buf)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if n != 17 || buf[0] != b'S' {
        return Err(if n == 0 {
            io::ErrorKind::UnexpectedEof.into()
        } else {
            bad("no stream header")
        });
    }
    let len = u64::from_le_bytes(buf[1..9].try_into().unwrap_or_default()) as usize;
    let count = u64::from_le_bytes(buf[9..17].try_into().unwrap_or_default()) as usize;
    if len > MAX_STREAM || count > 16 << 20 {
        return Err(bad("stream header out of bounds"));
    }
    let (mut stream, mut fds) = (Vec::with_capacity(len.min(1 << 20)), Vec::new());
    while stream.len() < len || fds.len() < count {
        let (n, got) = recv_with_fds(socket, &mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf[0] != b'C' || stream.len() + n - 1 > len || fds.len() + got.len() > count {
            return Err(bad("chunk out of bounds"));
        }
        stream.extend_from_slice(&buf[1..n]);
        fds.extend(got);
    }
    Ok((stream, fds))
}

/// Sends a one-line word (`READY`, `REFUSE …`, `GO …`).
pub fn say(socket: &UnixStream, line: &str) -> io::Result<()> {
    send_with_fds(socket, line.as_bytes(), &[])
}

/// Waits up to `timeout` for a one-line word; end of stream is an error.
pub fn hear(socket: &UnixStream, timeout: Duration) -> io::Result<String> {
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = recv_with_fds(socket, &mut buf)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_long_stream_with_many_descriptors_arrives_whole() {
        let (a, b) = pair().unwrap();
        let stream: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sockets: Vec<UnixStream> = (0..300).map(|_| pair().unwrap().0).collect();
        let raw: Vec<RawFd> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
        let sender =
            std::thread::spawn(move || send_stream(&a, &stream, &raw).map(|_| (a, stream)));
        let (got, fds) = recv_stream(&b, Duration::from_secs(5)).unwrap();
        let (_a, stream) = sender.join().unwrap().unwrap();
        assert_eq!(got, stream);
        assert_eq!(fds.len(), 300);
    }
}
