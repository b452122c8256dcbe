//! Socket helpers both ends of a msgbus link share: liveness settings that notice a
//! silent partition within seconds, reads and writes bounded by one deadline, and nonces
//! from the OS's random source for the authenticated opening.
//!
//! Does **not** speak the link protocol (`edge_proto::link`, `edge_proto::link_auth`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use edge_proto::link_auth::NONCE_LEN;

/// Idle time before the first keepalive probe, and the time between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes before the kernel gives up on an idle connection.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest time sent data may stay unacknowledged before the kernel gives up.
pub const USER_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a silent peer visible within about 5 s, with no protocol change: keepalive
/// probes after 1 s of idleness (1 s apart, 3 of them) cover an idle link, and
/// `TCP_USER_TIMEOUT` covers a link with data in flight. Either way the socket then fails
/// like a reset one, and the usual reconnect path runs.
pub fn set_liveness(stream: &TcpStream) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_INTERVAL)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

/// A fresh nonce from the OS.
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut out = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut out).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(out)
}

fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake deadline",
        ));
    }
    Ok(left)
}

/// Fills `buf` before `deadline` (one deadline for the whole read, not one per call).
pub fn read_exact_by(mut stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        stream.set_read_timeout(Some(left(deadline)?))?;
        match stream.read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake deadline",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `bytes` before `deadline`.
pub fn write_all_by(mut stream: &TcpStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    stream.set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(bytes)
}
