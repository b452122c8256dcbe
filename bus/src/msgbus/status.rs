//! The msgbus status endpoint on `--sh` (original spec §13): `GET /usermap`,
//! `GET /stat?type=app`, `GET /stat` and `GET /metrics`.
//!
//! A tiny HTTP/1.0-style server on one thread: one request per connection, answered from
//! a report the router thread builds on request (the router owns the map; nothing is
//! shared). It has no runtime flag editing and no goroutine-dump equivalents.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use super::Event;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_MAX: usize = 8 * 1024;

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

/// Serves until `stop` is set (the shutdown wakes it with a connection).
pub(crate) fn spawn(
    listener: TcpListener,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("msgbus-status".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &events);
                }
            }
        })
}

fn serve(mut stream: TcpStream, events: &Sender<Event>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_MAX {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, route(target)) {
        ("GET", Some(Route::Index)) => ("200 OK", "text/html", index()),
        ("GET", Some(Route::Query(query))) => match ask(events, query) {
            Some(body) => ("200 OK", content_type(query), body),
            None => ("503 Service Unavailable", "text/plain", "busy\n".into()),
        },
        ("GET", None) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
    }
}
