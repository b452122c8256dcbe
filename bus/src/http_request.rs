//! Parsing one HTTP/1.1 request head with `httparse`, for every status endpoint of the
//! project (the node's `edge::http` on glommio, the msgbus's `msgbus::status` on
//! threads): the method, the path, the decoded query, the bearer token and the declared
//! body length, with the head and body bounded. Pure: bytes in, a request or a reason out.
//!
//! Does no IO and keeps no state; the servers own their sockets, deadlines and caps.

/// Largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;
/// A parsed request: method, path, query, the bearer token if any, and the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// The token of an `Authorization: Bearer <token>` header.
    pub bearer: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%xx` escapes and `+` (invalid escapes are kept as they are), as query strings
/// are (`percent-encoding`).
pub fn percent_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a request head; `Ok(None)` while incomplete. Returns the request (body empty),
/// the head length and the declared body length.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize, usize)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err("request head too large"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed request head"),
    };
    let target = parsed.path.ok_or("no request target")?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let (mut body_len, mut bearer) = (0, None);
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| "header is not UTF-8");
        if header.name.eq_ignore_ascii_case("content-length") {
            body_len = value?.trim().parse().map_err(|_| "bad Content-Length")?;
        } else if header.name.eq_ignore_ascii_case("authorization") {
            bearer = edge_proto::secret::bearer(value?).map(str::to_owned);
        }
    }
    if body_len > MAX_BODY {
        return Err("body too large");
    }
    let request = Request {
        method: parsed.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query,
        bearer,
        body: Vec::new(),
    };
    Ok(Some((request, head_len, body_len)))
}
