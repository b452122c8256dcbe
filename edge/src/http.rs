//! The node's small HTTP/1.1 server layer, shared by the status/admin endpoint and the
//! `udpaddr` endpoint: one request per connection (`Connection: close`), the head parsed
//! by `bus::http_request` (`httparse`; the msgbus's status endpoint parses with it too), a
//! bounded head and body, one deadline for the whole request (not per
//! read, so a client dribbling a byte a second is cut off all the same), and a cap on
//! concurrent connections per endpoint. Every refusal is counted in [`HttpCounters`].
//!
//! It does not route (`status` does) and holds no node state.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

pub use bus::http_request::{MAX_BODY, MAX_HEAD, Request, parse_head, percent_decode};

use crate::metrics::bump;

/// Time for a whole request, from accept to the end of its body.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Most connections one endpoint serves at once; beyond, new ones are closed at once.
pub const MAX_CONNS: usize = 64;

/// Refusals of the HTTP endpoints, all endpoints together.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections closed at once: the endpoint already served [`MAX_CONNS`].
    pub busy: AtomicU64,
    /// Requests that did not arrive whole within [`REQUEST_DEADLINE`].
    pub timeouts: AtomicU64,
    /// Requests answered 400 (malformed head, too large).
    pub bad: AtomicU64,
    /// `/admin/*` calls without the right bearer token (answered 401).
    pub unauthorized: AtomicU64,
}

/// What reading a request came to.
pub enum Read {
    /// A whole request.
    Request(Request),
    /// A malformed one: answer 400 with this reason.
    Bad(&'static str),
    /// The peer closed, the deadline passed, or the socket failed: just close.
    Gone,
}

/// Reads one request (head, then its body), all of it within [`REQUEST_DEADLINE`].
pub async fn read_request(stream: &mut TcpStream, counters: &HttpCounters) -> Read {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut parsed = None;
    loop {
        if let Some((_, head_len, body_len)) = &parsed
            && buf.len() >= head_len + body_len
        {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            bump(&counters.timeouts);
            return Read::Gone;
        }
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return Read::Gone,
            Ok(n) => n,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    bump(&counters.timeouts);
                }
                return Read::Gone;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        if parsed.is_none() {
            match parse_head(&buf) {
                Ok(head) => parsed = head,
                Err(why) => {
                    bump(&counters.bad);
                    return Read::Bad(why);
                }
            }
        }
    }
    let Some((mut request, head_len, body_len)) = parsed else {
        return Read::Gone;
    };
    request.body = buf[head_len..head_len + body_len].to_vec();
    Read::Request(request)
}

/// Writes a whole response and closes the connection.
pub async fn respond(
    stream: &mut TcpStream,
    code: u16,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let challenge = if code == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.close().await
}

/// Counts an endpoint's open connections (single-threaded: it lives on the endpoints thread).
#[derive(Clone, Default)]
pub struct Gate(Rc<Cell<usize>>);

/// One admitted connection; dropping it frees its place.
pub struct Admitted(Rc<Cell<usize>>);

impl Gate {
    /// A place for one more connection, or `None` (counted) when [`MAX_CONNS`] are open.
    pub fn admit(&self, counters: &HttpCounters) -> Option<Admitted> {
        if self.0.get() >= MAX_CONNS {
            bump(&counters.busy);
            return None;
        }
        self.0.set(self.0.get() + 1);
        Some(Admitted(self.0.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
