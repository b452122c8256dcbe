//! The msgbus status endpoint on `--sh`: `GET /usermap`,
//! `GET /stat?type=app`, `GET /stat` and `GET /metrics`.
//!
//! A tiny HTTP/1.0-style server: one request per connection, answered from a report the
//! router thread builds on request (the router owns the map; nothing is shared). Each
//! connection gets its own short-lived thread, at most [`MAX_CONNS`] at once (beyond,
//! closed and counted), and one deadline for its whole request, so no slow client holds
//! the endpoint. `/usermap` lists every online id and its comet: with a status token set
//! it needs `Authorization: Bearer <token>`; `/stat` and `/metrics` stay open. It has no
//! runtime flag editing and no goroutine-dump equivalents.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};

use super::Event;
use super::stats::{Metrics, bump};

/// Time for a whole request to arrive, and for the answer to be written.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_MAX: usize = 8 * 1024;
/// Most requests served at once.
pub(crate) const MAX_CONNS: usize = 16;

/// What a status request asks the router for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// `/usermap` JSON.
    UserMap,
    /// `/stat?type=app` JSON.
    App,
    /// `/metrics` text.
    Metrics,
}

/// What the status threads share.
#[derive(Clone)]
pub(crate) struct StatusContext {
    pub events: Sender<Event>,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// The bearer token `/usermap` needs, if any.
    pub token: Option<Arc<str>>,
    pub live: Arc<AtomicUsize>,
}

/// Serves until `stop` is set (the shutdown wakes it with a connection).
pub(crate) fn spawn(listener: TcpListener, ctx: StatusContext) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("msgbus-status".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if ctx.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if ctx.live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNS {
                    ctx.live.fetch_sub(1, Ordering::AcqRel);
                    bump(&ctx.metrics.status_refused);
                    continue;
                }
                let conn = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("msgbus-status-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &conn);
                        conn.live.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    ctx.live.fetch_sub(1, Ordering::AcqRel);
                    bump(&ctx.metrics.status_refused);
                }
            }
        })
}

/// Reads a request head within [`REQUEST_DEADLINE`]; `None` when it did not come whole.
fn read_head(stream: &mut TcpStream, metrics: &Metrics) -> Option<Vec<u8>> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            bump(&metrics.status_timeouts);
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
            Err(_) => {
                bump(&metrics.status_timeouts);
                return None;
            }
        }
    }
    Some(request)
}

/// The token of the request's `Authorization: Bearer` header line, if any.
fn bearer(request: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        edge_proto::secret::bearer(value).map(str::to_owned)
    })
}

fn serve(mut stream: TcpStream, ctx: &StatusContext) -> std::io::Result<()> {
    let Some(request) = read_head(&mut stream, &ctx.metrics) else {
        return Ok(());
    };
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let allowed = |query: Query| {
        query != Query::UserMap
            || ctx.token.as_deref().is_none_or(|token| {
                let presented = bearer(&request);
                presented.is_some_and(|p| edge_proto::secret::eq(token.as_bytes(), p.as_bytes()))
            })
    };
    let (status, kind, body) = match (method, route(target)) {
        ("GET", Some(Route::Index)) => ("200 OK", "text/html", index()),
        ("GET", Some(Route::Query(query))) if !allowed(query) => {
            bump(&ctx.metrics.status_unauthorized);
            ("401 Unauthorized", "text/plain", "token needed\n".into())
        }
        ("GET", Some(Route::Query(query))) => match ask(&ctx.events, query) {
            Some(body) => ("200 OK", content_type(query), body),
            None => ("503 Service Unavailable", "text/plain", "busy\n".into()),
        },
        ("GET", None) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let challenge = if status.starts_with("401") {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

enum Route {
    Index,
    Query(Query),
}

fn route(target: &str) -> Option<Route> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let type_app = query.split('&').any(|kv| kv == "type=app");
    match path {
        "/usermap" => Some(Route::Query(Query::UserMap)),
        "/metrics" => Some(Route::Query(Query::Metrics)),
        "/stat" if type_app => Some(Route::Query(Query::App)),
        "/stat" if query.is_empty() => Some(Route::Index),
        _ => None,
    }
}

fn content_type(query: Query) -> &'static str {
    match query {
        Query::UserMap | Query::App => "application/json",
        Query::Metrics => "text/plain; version=0.0.4",
    }
}

fn index() -> String {
    "<html><body><a href=\"/stat?type=app\">app</a> <a href=\"/usermap\">usermap</a> \
     <a href=\"/metrics\">metrics</a></body></html>\n"
        .into()
}

fn ask(events: &Sender<Event>, query: Query) -> Option<String> {
    let (reply, answer) = bounded(1);
    events
        .send_timeout(Event::Status { query, reply }, REPORT_TIMEOUT)
        .ok()?;
    answer.recv_timeout(REPORT_TIMEOUT).ok()
}

/// Appends `text` as a JSON string literal.
pub(crate) fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_escaping() {
        assert!(matches!(
            route("/usermap"),
            Some(Route::Query(Query::UserMap))
        ));
        assert!(matches!(
            route("/stat?type=app&refresh=auto"),
            Some(Route::Query(Query::App))
        ));
        assert!(matches!(route("/stat"), Some(Route::Index)));
        assert!(route("/stat?type=config").is_none());
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\n");
        assert_eq!(out, r#""a\"b\\c\u000a""#);
        let head = b"GET /usermap HTTP/1.1\r\nAuthorization: Bearer  t0k \r\n\r\n";
        assert_eq!(bearer(head).as_deref(), Some("t0k"));
        assert_eq!(
            bearer(b"GET / HTTP/1.1\r\nAuthorization: Basic x\r\n\r\n"),
            None
        );
    }
}
