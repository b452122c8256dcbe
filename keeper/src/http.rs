//! GETs for RabbitMQ's management API, over `ureq` (a maintained blocking client):
//! `http://user:pass@host:port/prefix` URLs, basic auth, one timeout for the whole call,
//! bodies up to 256 KiB.
//!
//! Owns: URL splitting ([`BaseUrl::parse`]) and percent-escaping of a path segment
//! ([`escape_segment`], with `percent-encoding`). Does **not** do TLS or redirects:
//! `https` URLs are refused with an error at start (the original's deployments use plain
//! HTTP on the broker host).

use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use thiserror::Error;

/// The largest response read.
const MAX_RESPONSE: u64 = 256 * 1024;

/// A GET that did not produce a response.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Could not connect, send or read, or not an HTTP response (`ureq`'s reason).
    #[error("HTTP: {0}")]
    Transport(#[from] ureq::Error),
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let url = format!("http://{}{}{path}", self.authority, self.prefix);
        let mut request = agent.get(&url).header("Accept", "application/json");
        if let Some(credentials) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(credentials);
            request = request.header("Authorization", &format!("Basic {token}"));
        }
        let mut response = request.call()?;
        Ok(response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()?)
    }
}

/// What [`escape_segment`] escapes: everything but RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes everything but RFC 3986 unreserved characters (`/` becomes `%2F`).
pub fn escape_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

fn percent_decode(text: &str) -> Result<String, &'static str> {
    // `percent_decode_str` keeps a malformed escape as it is; a userinfo must not have one.
    let malformed = text.match_indices('%').any(|(at, _)| {
        text.get(at + 1..at + 3)
            .is_none_or(|hex| !hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return Err("bad %-escape in userinfo");
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| "userinfo is not UTF-8")
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
    fn segments() {
        assert_eq!(escape_segment("/"), "%2F");
        assert_eq!(escape_segment("my vhost/é"), "my%20vhost%2F%C3%A9");
        assert_eq!(escape_segment("a-b_c.d~"), "a-b_c.d~");
    }
}
