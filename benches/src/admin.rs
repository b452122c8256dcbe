//! A tiny blocking HTTP/1.1 client for the status/admin endpoint (`--sh`): bind, push,
//! stat. One request per connection (`Connection: close`), as the endpoint answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// Sends one request and returns (status code, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("admin endpoint {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    parse_response(&resp)
}

/// Splits a complete response into status and body.
pub fn parse_response(resp: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("truncated HTTP response");
    };
    let head = String::from_utf8_lossy(&resp[..end]);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, resp[end + 4..].to_vec()))
}

/// `POST /admin/bind?device=..&user=..`, failing unless 200.
pub fn bind(addr: SocketAddr, device: i64, user: i64) -> anyhow::Result<()> {
    let (code, body) = request(
        addr,
        "POST",
        &format!("/admin/bind?device={device}&user={user}"),
        b"",
    )?;
    if code != 200 {
        bail!(
            "bind {device}->{user}: HTTP {code} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// `POST /admin/push?ids=..&msgid=..` with `body`; returns the HTTP status.
pub fn push(addr: SocketAddr, ids: &[i64], msg_id: u16, body: &[u8]) -> anyhow::Result<u16> {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let path = format!("/admin/push?ids={}&msgid={msg_id:#x}", list.join("%2C"));
    Ok(request(addr, "POST", &path, body)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let (code, body) = parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nhi\n").unwrap();
        assert_eq!((code, body.as_slice()), (200, &b"hi\n"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
