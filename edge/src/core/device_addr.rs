//! A UDP device's address as a session stores it: 24 bytes where `SocketAddr` takes 32
//! (issue 13: the bound UDP session's memory). Pure data; what the session does with it
//! is `core::udp`'s.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// A device's address in 24 bytes, where `SocketAddr` takes 32 (issue 13: the bound UDP
/// session's memory). An IPv6 flow label is not kept: replies go without one, as the
/// kernel sends them by default. IPv4 sits in the first four bytes of `ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAddr {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    v6: bool,
}

const _: () = assert!(std::mem::size_of::<DeviceAddr>() == 24);

impl DeviceAddr {
    /// The address to send to.
    pub fn socket(self) -> SocketAddr {
        if self.v6 {
            let ip = Ipv6Addr::from(self.ip);
            SocketAddr::V6(SocketAddrV6::new(ip, self.port, 0, self.scope_id))
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

impl From<SocketAddr> for DeviceAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                DeviceAddr {
                    ip,
                    scope_id: 0,
                    port: a.port(),
                    v6: false,
                }
            }
            SocketAddr::V6(a) => DeviceAddr {
                ip: a.ip().octets(),
                scope_id: a.scope_id(),
                port: a.port(),
                v6: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for text in ["127.0.0.1:7999", "[2001:db8::1]:40000", "[fe80::1%3]:9"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(DeviceAddr::from(addr).socket(), addr, "{text}");
        }
        let flow = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5, 77, 0));
        let kept = DeviceAddr::from(flow).socket();
        assert_eq!((kept.ip(), kept.port()), (flow.ip(), 5));
        let v4: SocketAddr = "10.0.0.1:5".parse().unwrap();
        let v6: SocketAddr = "[a00:1::]:5".parse().unwrap();
        assert_ne!(DeviceAddr::from(v4), DeviceAddr::from(v6));
    }
}
