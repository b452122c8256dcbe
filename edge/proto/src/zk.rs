//! ZooKeeper node data formats (docs/protocol.md §9.5): comet nodes
//! `<url>,<cpu>,<memTotal>,<memUsed>,<online>`, msgbus nodes `host:port`, and RabbitMQ
//! nodes `<addr>,<exchange>`.
//!
//! Owns: parsing (borrowing the node data) and formatting (appending to the caller's
//! buffer) of the node data, byte-compatible with the original (`cpu` printed like Go's
//! `%f`, six decimals).
//!
//! Does **not** own: paths, sessions, watches or ephemeral-node bookkeeping (the `keeper`
//! sidecar), nor measuring cpu/memory (the shell reads `/proc`).

use std::io::Write as _;

use thiserror::Error;

use crate::login::parse_u64;

/// The exchange name rmqkeeper publishes with every RabbitMQ address.
pub const DEFAULT_EXCHANGE: &str = "MsgTopic";

/// Node data that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ZkError {
    /// Not UTF-8 text.
    #[error("node data is not UTF-8")]
    Utf8,
    /// Wrong number of `,` fields, or an empty field.
    #[error("wrong number of fields")]
    Fields,
    /// A number that does not parse.
    #[error("bad number")]
    Number,
    /// Not `host:port` with a non-empty host and a port in 1..=65535.
    #[error("bad address")]
    Address,
}

/// A comet's node: where phones (or the platform) reach it, and its load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CometNode<'a> {
    /// `ws://<lip>:<port>/ws` or `http://<lip>:<port>/api/device/udpaddr`.
    pub url: &'a str,
    /// Host CPU busy fraction in [0, 1].
    pub cpu: f64,
    /// `MemTotal` in kB.
    pub mem_total: u64,
    /// `MemTotal − MemFree` in kB.
    pub mem_used: u64,
    /// Current connection count.
    pub online: u64,
}

/// A msgbus node: the exact `-addr` string comets dial (and dedupe by string equality).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgbusNode<'a> {
    /// The address as written, `host:port`.
    pub addr: &'a str,
    /// Its port.
    pub port: u16,
}

/// A RabbitMQ node written by rmqkeeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RabbitNode<'a> {
    /// AMQP `host:port`.
    pub addr: &'a str,
    /// Topic exchange name ([`DEFAULT_EXCHANGE`]).
    pub exchange: &'a str,
}

fn text(data: &[u8]) -> Result<&str, ZkError> {
    std::str::from_utf8(data).map_err(|_| ZkError::Utf8)
}

fn number(field: &str) -> Result<u64, ZkError> {
    parse_u64(field.as_bytes()).ok_or(ZkError::Number)
}

/// A non-negative plain decimal (`0.250000`, `1`), as Go's `%f` prints one.
fn fraction(field: &str) -> Result<f64, ZkError> {
    let (int, frac) = field.split_once('.').unwrap_or((field, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(ZkError::Number);
    }
    let value: f64 = field.parse().map_err(|_| ZkError::Number)?;
    // Hundreds of digits parse to infinity: not a load figure.
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ZkError::Number)
    }
}

// === CometNode ===

impl<'a> CometNode<'a> {
    /// The first data a comet writes: zero load.
    pub fn idle(url: &'a str) -> Self {
        Self {
            url,
            cpu: 0.0,
            mem_total: 0,
            mem_used: 0,
            online: 0,
        }
    }

    /// Parses comet node data (the url may itself contain commas; the numbers are the last 4).
    pub fn parse(data: &'a [u8]) -> Result<Self, ZkError> {
        let mut fields = text(data)?.rsplitn(5, ',');
        let (Some(online), Some(mem_used), Some(mem_total), Some(cpu), Some(url)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(ZkError::Fields);
        };
        if url.is_empty() {
            return Err(ZkError::Fields);
        }
        Ok(Self {
            url,
            cpu: fraction(cpu)?,
            mem_total: number(mem_total)?,
            mem_used: number(mem_used)?,
            online: number(online)?,
        })
    }

    /// Appends the node data; `cpu` with six decimals (a negative or non-finite value is
    /// written as `0.000000`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let cpu = if self.cpu.is_finite() && self.cpu > 0.0 {
            self.cpu
        } else {
            0.0
        };
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{},{cpu:.6},{},{},{}",
            self.url, self.mem_total, self.mem_used, self.online
        );
    }
}

// === MsgbusNode ===

impl<'a> MsgbusNode<'a> {
    /// Parses and validates msgbus node data as `host:port`.
    pub fn parse(data: &'a [u8]) -> Result<Self, ZkError> {
        let addr = text(data)?;
        let (host, port) = addr.rsplit_once(':').ok_or(ZkError::Address)?;
        let port = parse_u64(port.as_bytes())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or(ZkError::Address)?;
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ZkError::Address);
        }
        Ok(Self { addr, port })
    }

    /// The host part (name, IPv4, or bracketed IPv6).
    pub fn host(&self) -> &'a str {
        self.addr
            .rsplit_once(':')
            .map_or(self.addr, |(host, _)| host)
    }

    /// Appends the node data (the address exactly as parsed).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.addr.as_bytes());
    }
}

// === RabbitNode ===

impl<'a> RabbitNode<'a> {
    /// A node for `addr` with the [`DEFAULT_EXCHANGE`].
    pub fn new(addr: &'a str) -> Self {
        Self {
            addr,
            exchange: DEFAULT_EXCHANGE,
        }
    }

    /// Parses `addr,exchange`: exactly one comma, both parts non-empty.
    pub fn parse(data: &'a [u8]) -> Result<Self, ZkError> {
        let mut parts = text(data)?.split(',');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(addr), Some(exchange), None) if !addr.is_empty() && !exchange.is_empty() => {
                Ok(Self { addr, exchange })
            }
            _ => Err(ZkError::Fields),
        }
    }

    /// Appends the node data.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "{},{}", self.addr, self.exchange);
    }
}

#[cfg(test)]
mod infinite_tests {
    use super::*;

    #[test]
    fn a_cpu_field_too_long_to_be_finite_is_refused() {
        let huge = "9".repeat(400);
        let data = format!("ws://1.2.3.4:1234/ws,{huge},1,1,1");
        assert!(CometNode::parse(data.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comet_nodes() {
        let node = CometNode {
            url: "ws://10.0.0.1:1234/ws",
            cpu: 0.25,
            mem_total: 8000,
            mem_used: 3000,
            online: 7,
        };
        let mut out = Vec::new();
        node.write_to(&mut out);
        assert_eq!(out, b"ws://10.0.0.1:1234/ws,0.250000,8000,3000,7");
        assert_eq!(CometNode::parse(&out), Ok(node));
        out.clear();
        CometNode::idle("u").write_to(&mut out);
        assert_eq!(out, b"u,0.000000,0,0,0");
        out.clear();
        CometNode {
            cpu: f64::NAN,
            ..node
        }
        .write_to(&mut out);
        assert!(out.starts_with(b"ws://10.0.0.1:1234/ws,0.000000,"));
        for bad in [
            &b",0.1,1,2,3"[..],
            b"u,1,2,3",
            b"u,-0.1,1,2,3",
            b"u,inf,1,2,3",
            b"u,.5,1,2,3",
            b"u,1.,1,2,3",
            b"u,0.1,1,2,x",
        ] {
            assert!(
                CometNode::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(CometNode::parse(b"a,b,1,2,3,4").map(|n| n.url), Ok("a,b"));
    }

    #[test]
    fn msgbus_nodes() {
        let node = MsgbusNode::parse(b"192.168.2.13:9923").unwrap();
        assert_eq!((node.host(), node.port), ("192.168.2.13", 9923));
        assert_eq!(
            MsgbusNode::parse(b"[::1]:80").map(|n| n.host()),
            Ok("[::1]")
        );
        for bad in [
            &b"host"[..],
            b":80",
            b"h:0",
            b"h:65536",
            b"h:",
            b"h o:1",
            b"h:+1",
        ] {
            assert_eq!(MsgbusNode::parse(bad), Err(ZkError::Address), "{bad:?}");
        }
    }

    #[test]
    fn rabbit_nodes() {
        let mut out = Vec::new();
        RabbitNode::new("10.0.0.5:5672").write_to(&mut out);
        assert_eq!(out, b"10.0.0.5:5672,MsgTopic");
        assert_eq!(
            RabbitNode::parse(&out),
            Ok(RabbitNode::new("10.0.0.5:5672"))
        );
        for bad in [&b"a"[..], b"a,b,c", b",b", b"a,", b"\xff,b"] {
            assert!(RabbitNode::parse(bad).is_err(), "{bad:?}");
        }
    }
}
