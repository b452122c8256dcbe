//! The tokio peer's UDP device side (docs/protocol.md §5): 0xE0 new session, 0xE1 register
//! (builtin: a stable negative id per MAC, cookie `<id>|token`), 0xE2 login, 0xE5 heartbeat,
//! and forward packets relayed to bound phones. One task on one socket, on thread 0, whose
//! [`Hub`] owns the UDP sessions (no lock); one `recv_from` per datagram (no `recvmmsg`, see
//! README.md).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use edge_proto::device::{self, Request, Sid};
use edge_proto::frame::{ForwardPacket, Opcode};
use tokio::net::UdpSocket;

use crate::hub::{Hub, UdpSession};

/// Serves datagrams forever.
pub async fn serve(hub: Rc<Hub>, sock: Rc<UdpSocket>) {
    hub.udp.borrow_mut().socket = Some(sock.clone());
    let mut buf = vec![0u8; 10240];
    let mut out = Vec::with_capacity(256);
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let data = &buf[..n];
        hub.counters().msgs_in.fetch_add(1, Ordering::Relaxed);
        match data.first().map(|b| Opcode::from_byte0(*b)) {
            Some(Opcode::Forward) => forward(&hub, data),
            Some(Opcode::Direct) => {
                out.clear();
                if direct(&hub, data, from, &mut out) && sock.try_send_to(&out, from).is_err() {
                    let _ = sock.send_to(&out, from).await;
                }
            }
            _ => {}
        }
    }
}

/// Accepts `seq` for session `sid`; returns the session's device id.
fn accept(hub: &Hub, sid: &Sid, seq: u16, from: Option<SocketAddr>) -> Option<i64> {
    let mut udp = hub.udp.borrow_mut();
    let s = udp.sessions.get_mut(&sid.0)?;
    if !device::seq_accepts(s.ridx, seq) {
        return None;
    }
    s.ridx = seq;
    if let Some(a) = from {
        s.addr = a;
    }
    Some(s.device)
}

fn direct(hub: &Hub, data: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
    let Ok((packet, req)) = Request::parse_datagram(data) else {
        return false;
    };
    let seq = packet.frame().seq;
    let body: Vec<u8> = match req {
        Request::NewSession { .. } => {
            let mut udp = hub.udp.borrow_mut();
            udp.opened += 1;
            let counter = udp.opened;
            let mut sid = [0u8; 16];
            sid[..8].copy_from_slice(&counter.to_le_bytes());
            sid[8..].copy_from_slice(&(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            sid[6] = (sid[6] & 0x0f) | 0x40;
            let s = UdpSession {
                device: 0,
                addr: from,
                ridx: 0,
                sidx: 0,
            };
            udp.sessions.insert(sid, s);
            device::new_session_body(0, &Sid(sid)).to_vec()
        }
        Request::Register(r) => {
            if accept(hub, &r.sid, seq, Some(from)).is_none() {
                return false;
            }
            let mut udp = hub.udp.borrow_mut();
            let next = -(udp.macs.len() as i64) - 1_000_000;
            let id = *udp.macs.entry(r.mac).or_insert(next);
            device::register_body(0, &r.sid, id, format!("{id}|token").as_bytes()).to_vec()
        }
        Request::Login { sid, cookie, .. } => {
            if accept(hub, &sid, seq, Some(from)).is_none() {
                return false;
            }
            let Some(id) = device::parse_cookie_device_id(cookie) else {
                return device::write_reply(
                    out,
                    data,
                    &device::status_body(device::STATUS_SERVER_ERROR, &sid),
                )
                .is_ok();
            };
            {
                let mut udp = hub.udp.borrow_mut();
                if let Some(s) = udp.sessions.get_mut(&sid.0) {
                    s.device = id;
                }
                udp.devices.insert(id, sid.0);
            }
            hub.udp_joined(id);
            device::login_body(0, &sid, device::HEARTBEAT_INTERVAL_SECS).to_vec()
        }
        Request::Heartbeat { sid, .. } => {
            if accept(hub, &sid, seq, Some(from)).is_none() {
                return false;
            }
            device::status_body(0, &sid).to_vec()
        }
        _ => return false,
    };
    device::write_reply(out, data, &body).is_ok()
}

fn forward(hub: &Hub, data: &[u8]) {
    let Ok(p) = ForwardPacket::parse(data) else {
        return;
    };
    let Some(dev) = accept(hub, &Sid(*p.sid_slot()), p.outer().seq, None) else {
        return;
    };
    if dev == 0 {
        return;
    }
    hub.relay_to(dev, p.outer().dst, data);
}
