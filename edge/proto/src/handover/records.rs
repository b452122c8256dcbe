//! The bodies of the handover stream's records: how each [`Record`] is written and read
//! (`super` frames them: kind, length, body, checksum). Every read is bounds-checked; a
//! body that does not parse is `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub(super) fn encode_record(record: &Record, out: &mut Vec<u8>) -> u8 {
    match record {
        Record::Listener { fd, kind } => {
            out.extend_from_slice(&fd.to_le_bytes());
            out.push(*kind as u8);
            0
        }
        Record::WsConn(c) => {
            out.extend_from_slice(&c.fd.to_le_bytes());
            out.extend_from_slice(&c.id.to_le_bytes());
            out.extend_from_slice(&[c.mobile, c.stage]);
            out.extend_from_slice(&c.heartbeat_secs.to_le_bytes());
            out.extend_from_slice(&c.deadline_in_secs.to_le_bytes());
            ids(out, &c.bound);
            bytes(out, &c.outbox);
            bytes(out, &c.carry);
            match &c.tls {
                None => out.push(0),
                Some(t) => {
                    out.extend_from_slice(&[1, t.protection, t.cipher]);
                    for (key, iv, seq) in [&t.rx, &t.tx] {
                        bytes(out, key);
                        out.extend_from_slice(iv);
                        out.extend_from_slice(&seq.to_le_bytes());
                    }
                    bytes(out, &t.held);
                }
            }
            1
        }
        Record::UdpSession(u) => {
            out.extend_from_slice(&u.sid);
            out.extend_from_slice(&u.device.to_le_bytes());
            let ip = match u.addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            out.push(u8::from(u.addr.is_ipv6()));
            out.extend_from_slice(&ip);
            out.extend_from_slice(&u.addr.port().to_le_bytes());
            out.extend_from_slice(&u.sidx.to_le_bytes());
            out.extend_from_slice(&u.ridx.to_le_bytes());
            out.extend_from_slice(&u.expires_in_secs.to_le_bytes());
            ids(out, &u.bound);
            2
        }
        Record::Directory { key, mask } => {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&mask.to_le_bytes());
            3
        }
        Record::Binding { device, user } => {
            out.extend_from_slice(&device.to_le_bytes());
            out.extend_from_slice(&user.to_le_bytes());
            4
        }
        Record::Online { id, count } => {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            5
        }
        Record::Lease(l) => {
            out.extend_from_slice(&l.session.to_le_bytes());
            out.extend_from_slice(&l.user.to_le_bytes());
            out.push(l.k);
            bytes(out, l.token.as_bytes());
            6
        }
        Record::Cluster {
            links_up,
            redis_synced,
        } => {
            out.extend_from_slice(&links_up.to_le_bytes());
            out.push(u8::from(*redis_synced));
            7
        }
        Record::Relay(r) => {
            out.push(u8::from(r.everywhere));
            ids(out, &r.ids);
            match r.push {
                None => out.push(0),
                Some(msg_id) => {
                    out.push(1);
                    out.extend_from_slice(&msg_id.to_le_bytes());
                }
            }
            bytes(out, &r.body);
            8
        }
    }
}

fn ids(out: &mut Vec<u8>, ids: &[i64]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// A cursor over a record body; every read is bounds-checked.
pub(super) struct Cursor<'a>(pub(super) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(super) fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
    pub(super) fn ids(&mut self) -> Option<Vec<i64>> {
        let n = self.u32()? as usize;
        let mut ids = Vec::with_capacity(n.min(self.0.len() / 8));
        for _ in 0..n {
            ids.push(self.i64()?);
        }
        Some(ids)
    }
}

pub(super) fn decode_record(kind: u8, body: &[u8]) -> Option<Record> {
    let mut c = Cursor(body);
    let record = match kind {
        0 => Record::Listener {
            fd: c.u32()?,
            kind: match c.u8()? {
                0 => ListenerKind::Ws,
                1 => ListenerKind::Wss,
                2 => ListenerKind::Udp,
                3 => ListenerKind::Status,
                4 => ListenerKind::UdpAddr,
                _ => return None,
            },
        },
        1 => {
            let (fd, id, mobile, stage) = (c.u32()?, c.i64()?, c.u8()?, c.u8()?);
            let (heartbeat_secs, deadline_in_secs) = (c.u32()?, c.u32()?);
            let (bound, outbox, carry) = (c.ids()?, c.bytes()?, c.bytes()?);
            let tls = decode_tls(&mut c)?;
            Record::WsConn(WsConn {
                fd,
                id,
                mobile,
                stage,
                heartbeat_secs,
                deadline_in_secs,
                bound,
                outbox,
                carry,
                tls,
            })
        }
        2 => {
            let sid: [u8; 16] = c.take(16)?.try_into().ok()?;
            let device = c.i64()?;
            let v6 = c.u8()? != 0;
            let octets: [u8; 16] = c.take(16)?.try_into().ok()?;
            let port = c.u16()?;
            let ip = Ipv6Addr::from(octets);
            let ip = match (v6, ip.to_ipv4_mapped()) {
                (false, Some(v4)) => IpAddr::V4(v4),
                (false, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                (true, _) => IpAddr::V6(ip),
            };
            let (sidx, ridx, expires_in_secs) = (c.u16()?, c.u16()?, c.u32()?);
            Record::UdpSession(UdpSession {
                sid,
                device,
                addr: SocketAddr::new(ip, port),
                sidx,
                ridx,
                expires_in_secs,
                bound: c.ids()?,
            })
        }
        3 => Record::Directory {
            key: c.i64()?,
            mask: c.u64()?,
        },
        4 => Record::Binding {
            device: c.i64()?,
            user: c.i64()?,
        },
        5 => Record::Online {
            id: c.i64()?,
            count: c.u32()?,
        },
        6 => Record::Lease(Lease {
            session: c.i64()?,
            user: c.i64()?,
            k: c.u8()?,
            token: String::from_utf8(c.bytes()?).ok()?,
        }),
        7 => Record::Cluster {
            links_up: c.u32()?,
            redis_synced: flag(c.u8()?)?,
        },
        8 => {
            let (everywhere, ids) = (flag(c.u8()?)?, c.ids()?);
            let push = match c.u8()? {
                0 => None,
                1 => Some(c.u16()?),
                _ => return None,
            };
            Record::Relay(Relay {
                everywhere,
                ids,
                push,
                body: c.bytes()?,
            })
        }
        _ => return None,
    };
    c.0.is_empty().then_some(record)
}

fn flag(b: u8) -> Option<bool> {
    match b {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// A `WsConn`'s optional TLS part: a flag, then the keys.
fn decode_tls(c: &mut Cursor<'_>) -> Option<Option<Box<TlsKeys>>> {
    Some(match c.u8()? {
        0 => None,
        1 => {
            let (protection, cipher) = (c.u8()?, c.u8()?);
            let mut direction = || -> Option<(Vec<u8>, [u8; 12], u64)> {
                Some((c.bytes()?, c.take(12)?.try_into().ok()?, c.u64()?))
            };
            let (rx, tx) = (direction()?, direction()?);
            Some(Box::new(TlsKeys {
                protection,
                cipher,
                rx,
                tx,
                held: c.bytes()?,
            }))
        }
        _ => return None,
    })
}
