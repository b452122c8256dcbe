//! The tokio peer's UDP device side (docs/protocol.md §5): 0xE0 new session, 0xE1 register (builtin:
//! a stable negative id per MAC, cookie `<id>|token`), 0xE2 login, 0xE5 heartbeat, and
//! forward packets relayed to bound phones. One task on one socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_proto::device::{self, Request, Sid};
use edge_proto::frame::{ForwardPacket, Opcode};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Bytes;

use crate::hub::{Hub, UdpSession};

/// Serves datagrams forever.
pub async fn serve(hub: Arc<Hub>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 10240];
    let mut out = Vec::with_capacity(256);
    let mut macs: HashMap<[u8; 8], i64> = HashMap::new();
    let mut ids = Vec::new();
    let mut counter = 0u64;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let data = &buf[..n];
        hub.msgs_in.fetch_add(1, Ordering::Relaxed);
        match data.first().map(|b| Opcode::from_byte0(*b)) {
            Some(Opcode::Forward) => forward(&hub, data, &mut ids),
            Some(Opcode::Direct) => {
                out.clear();
                if direct(&hub, data, from, &mut out, &mut macs, &mut counter)
                    && sock.try_send_to(&out, from).is_err()
                {
                    let _ = sock.send_to(&out, from).await;
                }
            }
            _ => {}
        }
    }
}

/// Accepts `seq` for session `sid`; returns the session's device id.
fn accept(hub: &Hub, sid: &Sid, seq: u16, from: Option<SocketAddr>) -> Option<i64> {
    let mut u = hub.udp.lock().unwrap_or_else(|e| e.into_inner());
    let s = u.get_mut(&sid.0)?;
    if !device::seq_accepts(s.ridx, seq) {
        return None;
    }
    s.ridx = seq;
    if let Some(a) = from {
        s.addr = a;
    }
    Some(s.device)
}

fn direct(
    hub: &Hub,
    data: &[u8],
    from: SocketAddr,
    out: &mut Vec<u8>,
    macs: &mut HashMap<[u8; 8], i64>,
    counter: &mut u64,
) -> bool {
    let Ok((packet, req)) = Request::parse_datagram(data) else {
        return false;
    };
    let seq = packet.frame().seq;
    let body: Vec<u8> = match req {
        Request::NewSession { .. } => {
            *counter += 1;
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
            hub.udp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sid, s);
            device::new_session_body(0, &Sid(sid)).to_vec()
        }
        Request::Register(r) => {
            if accept(hub, &r.sid, seq, Some(from)).is_none() {
                return false;
            }
            let next = -(macs.len() as i64) - 1_000_000;
            let id = *macs.entry(r.mac).or_insert(next);
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
            if let Some(s) = hub
                .udp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&sid.0)
            {
                s.device = id;
            }
            hub.udp_devices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, sid.0);
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

fn forward(hub: &Hub, data: &[u8], ids: &mut Vec<i64>) {
    let Ok(p) = ForwardPacket::parse(data) else {
        return;
    };
    let Some(dev) = accept(hub, &Sid(*p.sid_slot()), p.outer().seq, None) else {
        return;
    };
    if dev == 0 {
        return;
    }
    ids.clear();
    hub.destinations(dev, p.outer().dst, ids);
    hub.route(ids, &Bytes::copy_from_slice(data));
}
