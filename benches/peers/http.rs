//! The tokio peer's status/admin endpoint: `POST /admin/bind|unbind?device=&user=`,
//! `POST /admin/push?ids=&msgid=` with the raw body, `GET /stat?type=app`. Served by tasks
//! on thread 0 (not on the message path): a bind returns once every thread has applied it.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::hub::Hub;

/// Serves the endpoint forever.
pub async fn serve(hub: Rc<Hub>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(handle(hub.clone(), stream));
            }
            Err(e) => {
                eprintln!("status accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn handle(hub: Rc<Hub>, mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + len];
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query.replace("%2C", ",").replace("%2c", ",");
    let num = |n: &str| param(&query, n).and_then(|v| v.parse::<i64>().ok());
    let (code, text) = match (method, path) {
        ("POST", "/admin/bind" | "/admin/unbind") => match (num("device"), num("user")) {
            (Some(d), Some(u)) => {
                hub.bind_everywhere(d, u, path == "/admin/bind").await;
                (200, format!("{path} {d} {u}"))
            }
            _ => (400, "need device=<id>&user=<id>".into()),
        },
        ("POST", "/admin/push") => {
            let ids: Vec<i64> = param(&query, "ids")
                .unwrap_or("")
                .split(',')
                .filter_map(|i| i.parse().ok())
                .collect();
            let msg = param(&query, "msgid").and_then(|m| match m.strip_prefix("0x") {
                Some(hex) => u16::from_str_radix(hex, 16).ok(),
                None => m.parse().ok(),
            });
            match msg {
                Some(m) if !ids.is_empty() => (
                    200,
                    format!("pushed to {} session(s)", hub.push(&ids, m, body)),
                ),
                _ => (400, "need ids=<id,id,...>&msgid=<n>".into()),
            }
        }
        ("GET", "/stat") => {
            let s = &hub.shared;
            (
                200,
                format!(
                    "{{\"ConnOnline\":{},\"UpStreamIn\":{},\"DownStreamOut\":{},\"Dropped\":{}}}",
                    s.sum(|c| &c.online),
                    s.sum(|c| &c.msgs_in),
                    s.sum(|c| &c.msgs_out),
                    s.sum(|c| &c.dropped)
                ),
            )
        }
        _ => (404, "not found".into()),
    };
    let resp = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}
