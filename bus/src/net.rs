//! Socket helpers both ends of a msgbus link share: liveness settings that notice a
//! silent partition within seconds, which frames a dead link never delivered
//! ([`InFlight`]), reads and writes bounded by one deadline, and nonces from the OS's
//! random source for the authenticated opening.
//!
//! Does **not** speak the link protocol (`edge_proto::link`, `edge_proto::link_auth`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_proto::link_auth::NONCE_LEN;

use crate::cluster::ClusterMetrics;

/// Idle time before the first keepalive probe, and the time between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes before the kernel gives up on an idle connection.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest time sent data may stay unacknowledged before the kernel gives up.
pub const USER_TIMEOUT: Duration = Duration::from_secs(5);
/// On an authenticated link (both ends ours), each end sends a ping (an empty frame,
/// [`PING`]) after this long without writing anything…
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// …and gives the link up after this long without reading anything, pings included: a
/// peer whose process hangs, or a middlebox that answers keepalives for it, is noticed too.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// A link ping: a frame with an empty payload (it carries nothing and is never routed).
pub const PING: [u8; 4] = [0; 4];

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

/// A Redis client for `url` whose connections get the same liveness settings as the
/// links (keepalive, `TCP_USER_TIMEOUT`): a Redis that went silent is noticed within
/// about 5 s and the usual reconnect path runs.
pub fn redis_client(info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_INTERVAL)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let tcp = redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(USER_TIMEOUT);
    redis::Client::open(info.set_tcp_settings(tcp))
}

/// A fresh nonce from the OS.
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut out = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut out).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(out)
}

/// `url` with the password of its userinfo replaced by `***` (`redis://:pw@h:6379/0` →
/// `redis://:***@h:6379/0`), for logs and start lines; anything without one is as given.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let hidden = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://password@host`: a lone userinfo is the password.
        "***".to_owned()
    };
    format!("{scheme}://{hidden}{}", &rest[at..])
}

/// Bytes written to `stream` that its peer has not acknowledged yet (`SIOCOUTQ`), if the
/// kernel says.
fn unacked_bytes(stream: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (rc == 0).then(|| u64::try_from(queued).unwrap_or(0))
}

/// How often a link's round trip is sampled.
const RTT_EVERY: Duration = Duration::from_secs(1);

/// The kernel's smoothed round-trip time of `stream` (`TCP_INFO`), if it says.
fn round_trip(stream: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain old data; all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// Which frames written to a link its peer has not acknowledged yet, by batch: sampled
/// after every write, so when the link dies the frames lost with it are known, up to one
/// batch of precision.
#[derive(Default)]
struct InFlight {
    written: u64,
    acked: u64,
    /// `(end offset, frames)` of batches not known to be acknowledged, oldest first.
    batches: VecDeque<(u64, u64)>,
}

impl InFlight {
    /// `bytes` carrying `frames` were written (0 and 0: just a sample), and the kernel
    /// says `unacked` of all written bytes are not acknowledged yet.
    fn written(&mut self, bytes: u64, frames: u64, unacked: Option<u64>) {
        self.written += bytes;
        if frames > 0 {
            self.batches.push_back((self.written, frames));
        }
        if let Some(unacked) = unacked {
            self.acked = self.written.saturating_sub(unacked);
        }
        while self
            .batches
            .front()
            .is_some_and(|&(end, _)| end <= self.acked)
        {
            self.batches.pop_front();
        }
    }

    fn unacked_frames(&self) -> u64 {
        self.batches.iter().map(|&(_, frames)| frames).sum()
    }
}

/// How often an idle link's writer samples what its peer acknowledged (and checks whether
/// a ping is due).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What the writer of one link keeps between writes: which frames its peer has not
/// acknowledged yet, and — on a link that pings — when it last wrote. Both ends' write
/// loops drive it the same way: [`Self::wrote`] after each batch, [`Self::idle`] every
/// [`SAMPLE_EVERY`] without one, [`Self::unacked_frames`] when the link dies.
pub(crate) struct LinkWriter {
    in_flight: InFlight,
    pings: bool,
    last_write: Instant,
    /// Where round trips go (the comet's links), and when the last was sampled.
    rtt: Option<(Arc<ClusterMetrics>, Instant)>,
}

impl LinkWriter {
    /// A writer that pings an idle link (`pings`: both ends are ours) or not.
    pub(crate) fn new(pings: bool) -> Self {
        LinkWriter {
            in_flight: InFlight::default(),
            pings,
            last_write: Instant::now(),
            rtt: None,
        }
    }

    /// Also samples the link's round trip into `metrics.link_rtt` once a second.
    pub(crate) fn with_rtt(mut self, metrics: Arc<ClusterMetrics>) -> Self {
        self.rtt = Some((metrics, Instant::now()));
        self
    }

    fn sample_rtt(&mut self, stream: &TcpStream) {
        let Some((metrics, last)) = &mut self.rtt else {
            return;
        };
        if last.elapsed() < RTT_EVERY {
            return;
        }
        *last = Instant::now();
        if let Some(rtt) = round_trip(stream) {
            metrics.link_rtt.record(rtt);
        }
    }

    /// A batch of `frames` frames, `bytes` long, was written to `stream`.
    pub(crate) fn wrote(&mut self, stream: &TcpStream, bytes: usize, frames: u64) {
        self.in_flight
            .written(bytes as u64, frames, unacked_bytes(stream));
        self.last_write = Instant::now();
        self.sample_rtt(stream);
    }

    /// Nothing to write: learn what the peer acknowledged since, and ping when one is due.
    pub(crate) fn idle(&mut self, mut stream: &TcpStream) -> io::Result<()> {
        self.in_flight.written(0, 0, unacked_bytes(stream));
        self.sample_rtt(stream);
        if self.pings && self.last_write.elapsed() >= PING_EVERY {
            stream.write_all(&PING)?;
            self.last_write = Instant::now();
            self.in_flight.written(PING.len() as u64, 0, None);
        }
        Ok(())
    }

    /// Frames written but not acknowledged when last sampled: lost if the link is dead.
    pub(crate) fn unacked_frames(&self) -> u64 {
        self.in_flight.unacked_frames()
    }
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

#[cfg(test)]
mod tests {
    use super::{USER_TIMEOUT, redact_url, redis_client};

    #[test]
    fn redis_connections_notice_a_silent_server() {
        use redis::IntoConnectionInfo;
        let info = "redis://127.0.0.1:6379/".into_connection_info().unwrap();
        let client = redis_client(info).unwrap();
        let tcp = client.get_connection_info().tcp_settings();
        assert!(tcp.keepalive().is_some());
        assert_eq!(tcp.user_timeout(), Some(USER_TIMEOUT));
    }

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.9:6379/0"),
            "redis://:***@10.0.0.9:6379/0"
        );
        assert_eq!(redact_url("redis://app:s3cret@h/"), "redis://app:***@h/");
        assert_eq!(redact_url("redis://s3cret@h"), "redis://***@h");
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("10.0.0.9:6379"), "10.0.0.9:6379");
        assert_eq!(
            redact_url("redis://h:6379/a@b"),
            "redis://h:6379/a@b",
            "an @ in the path"
        );
    }
}
