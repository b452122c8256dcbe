//! The msgbus status endpoint on `--sh`: `GET /usermap`,
//! `GET /stat?type=app`, `GET /stat` and `GET /metrics`.
//!
//! A tiny HTTP/1.1 server: one request per connection, its head parsed by
//! [`crate::http_request`] (the same `httparse` parser as the node's endpoints; a malformed
//! head gets a 400 and is counted), answered from a report the
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
use crate::http_request::{Request, parse_head};

/// Time for a whole request to arrive, and for the answer to be written.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
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

/// What reading a request came to.
enum Head {
    /// A whole request head.
    Request(Request),
    /// A malformed or oversized one: answer 400 with this reason.
    Bad(&'static str),
    /// The peer went away or the deadline passed: just close.
    Gone,
}

/// Reads a request head within [`REQUEST_DEADLINE`] (one deadline for all of it), parsed
/// by `http_request` as the node's endpoints are.
fn read_head(stream: &mut TcpStream, metrics: &Metrics) -> Head {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match parse_head(&buf) {
            Ok(Some((request, ..))) => return Head::Request(request),
            Ok(None) => {}
            Err(why) => return Head::Bad(why),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            bump(&metrics.status_timeouts);
            return Head::Gone;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Head::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                bump(&metrics.status_timeouts);
                return Head::Gone;
            }
        }
    }
}

fn serve(mut stream: TcpStream, ctx: &StatusContext) -> std::io::Result<()> {
    let head = read_head(&mut stream, &ctx.metrics);
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let request = match head {
        Head::Request(request) => request,
        Head::Bad(why) => {
            bump(&ctx.metrics.status_bad);
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                &format!("{why}\n"),
            );
        }
        Head::Gone => return Ok(()),
    };
    let allowed = |query: Query| {
        query != Query::UserMap
            || ctx.token.as_deref().is_none_or(|token| {
                let presented = request.bearer.as_deref();
                presented.is_some_and(|p| edge_proto::secret::eq(token.as_bytes(), p.as_bytes()))
            })
    };
    let (status, kind, body) = match (request.method.as_str(), route(&request)) {
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
    respond(&mut stream, status, kind, &body)
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
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

fn route(request: &Request) -> Option<Route> {
    match (request.path.as_str(), request.param("type")) {
        ("/usermap", _) => Some(Route::Query(Query::UserMap)),
        ("/metrics", _) => Some(Route::Query(Query::Metrics)),
        ("/stat", Some("app")) => Some(Route::Query(Query::App)),
        ("/stat", None) if request.query.is_empty() => Some(Route::Index),
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
        let route_of = |head: &str| {
            let (request, ..) = parse_head(head.as_bytes()).unwrap().unwrap();
            route(&request)
        };
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(
            route_of(&get("/usermap")),
            Some(Route::Query(Query::UserMap))
        ));
        assert!(matches!(
            route_of(&get("/stat?type=app&refresh=auto")),
            Some(Route::Query(Query::App))
        ));
        assert!(matches!(route_of(&get("/stat")), Some(Route::Index)));
        assert!(route_of(&get("/stat?type=config")).is_none());
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\n");
        assert_eq!(out, r#""a\"b\\c\u000a""#);
        let head = b"GET /usermap HTTP/1.1\r\nAuthorization: Bearer  t0k \r\n\r\n";
        let (request, ..) = parse_head(head).unwrap().unwrap();
        assert_eq!(request.bearer.as_deref(), Some("t0k"));
    }
}
