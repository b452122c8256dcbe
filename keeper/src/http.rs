//! A minimal HTTP/1.1 GET over `std::net::TcpStream`, enough for RabbitMQ's management
//! API: `http://user:pass@host:port/prefix` URLs, basic auth, `Connection: close`,
//! `Content-Length`, chunked or read-to-end bodies, connect/read/write timeouts.
//!
//! Owns: URL splitting ([`BaseUrl::parse`]), percent-escaping of a path segment
//! ([`escape_segment`]), the request and the response parsing ([`parse_response`], pure).
//! Does **not** do TLS, redirects, proxies or keep-alive: `https` URLs are refused with
//! an error at start (the original's deployments use plain HTTP on the broker host).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine as _;
use thiserror::Error;

/// The largest response read.
const MAX_RESPONSE: u64 = 256 * 1024;

/// A GET that did not produce a response.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Could not connect, send or read.
    #[error("HTTP transport: {0}")]
    Io(#[from] std::io::Error),
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Not an HTTP/1.x response we can read.
    #[error("malformed HTTP response")]
    Malformed,
}

/// The parts of an `http://` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `host:port` (port 80 when missing).
    pub authority: String,
    /// The path prefix without a trailing slash (often empty).
    pub prefix: String,
    /// Decoded `user:password` from the userinfo, if any.
    pub credentials: Option<String>,
}

// === BaseUrl ===

impl BaseUrl {
    /// Splits `http://[user[:pass]@]host[:port][/prefix]`; `Err` says what is wrong.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        if path.contains(['?', '#']) {
            return Err("a query or fragment is not supported");
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("no host");
        }
        let has_port = match host.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => {
                port.parse::<u16>().map_err(|_| "bad port")?;
                true
            }
            _ => false,
        };
        let authority = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let credentials = userinfo.map(percent_decode).transpose()?;
        Ok(Self {
            authority,
            prefix: path.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    /// GETs `<prefix><path>` and returns the body (any HTTP status).
    pub fn get(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, HttpError> {
        let addrs = self
            .authority
            .to_socket_addrs()
            .map_err(|_| HttpError::Resolve(self.authority.clone()))?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => return Err(HttpError::Resolve(self.authority.clone())),
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(self.request(path).as_bytes())?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response)?;
        parse_response(&response).ok_or(HttpError::Malformed)
    }

    fn request(&self, path: &str) -> String {
        let mut request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.prefix, self.authority
        );
        if let Some(credentials) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(credentials);
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        request
    }
}

/// Escapes everything but RFC 3986 unreserved characters (`/` becomes `%2F`).
pub fn escape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("bad %-escape in userinfo")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape in userinfo")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape in userinfo")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "userinfo is not UTF-8")
}

/// The body of a complete HTTP/1.x response (status line, headers, body by
/// `Content-Length`, chunked, or to the end); `None` when it is not one.
pub fn parse_response(response: &[u8]) -> Option<Vec<u8>> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    if !lines.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().ok()?);
        }
    }
    if chunked {
        return dechunk(body);
    }
    match length {
        Some(n) => body.get(..n).map(<[u8]>::to_vec),
        None => Some(body.to_vec()),
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&body[..end]).ok()?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let url = BaseUrl::parse("http://guest:guest@127.0.0.1:15672").expect("parses");
        assert_eq!(url.authority, "127.0.0.1:15672");
        assert_eq!(url.prefix, "");
        assert_eq!(url.credentials.as_deref(), Some("guest:guest"));
        let url = BaseUrl::parse("http://a%40b:p%3Aw@host/rabbit/").expect("parses");
        assert_eq!(
            (url.authority.as_str(), url.prefix.as_str()),
            ("host:80", "/rabbit")
        );
        assert_eq!(url.credentials.as_deref(), Some("a@b:p:w"));
        assert_eq!(
            BaseUrl::parse("http://[::1]:8080").map(|u| u.authority),
            Ok("[::1]:8080".into())
        );
        assert_eq!(
            BaseUrl::parse("http://[::1]").map(|u| u.authority),
            Ok("[::1]:80".into())
        );
        for bad in [
            "https://h",
            "h:1",
            "http://",
            "http://u@",
            "http://h:x",
            "http://h/?q",
            "http://u%zz@h",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_has_basic_auth() {
        let url = BaseUrl::parse("http://guest:guest@h:1/p").expect("parses");
        let request = url.request("/api/aliveness-test/%2F");
        assert!(request.starts_with("GET /p/api/aliveness-test/%2F HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(request.contains("Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
    }

    #[test]
    fn segments() {
        assert_eq!(escape_segment("/"), "%2F");
        assert_eq!(escape_segment("my vhost/é"), "my%20vhost%2F%C3%A9");
        assert_eq!(escape_segment("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}trailing";
        assert_eq!(
            parse_response(ok).as_deref(),
            Some(&b"{\"status\":\"ok\"}"[..])
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).as_deref(), Some(&b"abcdef"[..]));
        let to_end = b"HTTP/1.0 401 Unauthorized\r\nServer: x\r\n\r\nnope";
        assert_eq!(parse_response(to_end).as_deref(), Some(&b"nope"[..]));
        for bad in [
            &b""[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbadheader\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert_eq!(
                parse_response(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
