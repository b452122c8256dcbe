//! The tokio peer's shared state: live sessions by terminal id (sharded mutexes),
//! bindings, mobile-id slots, UDP device sessions, counters; and routing by docs/protocol.md §4 using
//! edge-proto's destination rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use edge_proto::id;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const SHARDS: usize = 64;

/// A session's outbound queue.
pub type Tx = mpsc::Sender<Message>;

/// A UDP device session.
#[derive(Debug, Clone)]
pub struct UdpSession {
    /// Device id after login (0 before).
    pub device: i64,
    /// Last source address.
    pub addr: SocketAddr,
    /// Last accepted sequence.
    pub ridx: u16,
    /// Last sequence sent to the device.
    pub sidx: u16,
}

/// Bindings both ways.
#[derive(Default)]
pub struct Binds {
    /// Device → users.
    pub users_of: HashMap<i64, Vec<i64>>,
    /// User → devices.
    pub devices_of: HashMap<i64, Vec<i64>>,
}

/// One shard of the session table: id → (connection number, sender) of each session.
type Sessions = HashMap<i64, Vec<(u64, Tx)>>;

/// Everything shared between connections.
pub struct Hub {
    sessions: Vec<Mutex<Sessions>>,
    /// Bindings.
    pub binds: RwLock<Binds>,
    mobiles: Mutex<HashMap<i64, u16>>,
    /// UDP sessions by sid.
    pub udp: Mutex<HashMap<[u8; 16], UdpSession>>,
    /// Logged-in UDP devices: id → sid.
    pub udp_devices: Mutex<HashMap<i64, [u8; 16]>>,
    /// The UDP socket, once bound.
    pub udp_socket: OnceLock<std::sync::Arc<tokio::net::UdpSocket>>,
    /// Login salt.
    pub salt: Vec<u8>,
    next_conn: AtomicU64,
    /// Counters.
    pub online: AtomicU64,
    /// Messages in.
    pub msgs_in: AtomicU64,
    /// Messages out.
    pub msgs_out: AtomicU64,
    /// Messages dropped (full queue).
    pub dropped: AtomicU64,
}

fn shard(id: i64) -> usize {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

impl Hub {
    /// An empty hub.
    pub fn new(salt: Vec<u8>) -> Self {
        Self {
            sessions: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            binds: RwLock::default(),
            mobiles: Mutex::default(),
            udp: Mutex::default(),
            udp_devices: Mutex::default(),
            udp_socket: OnceLock::new(),
            salt,
            next_conn: AtomicU64::new(1),
            online: AtomicU64::new(0),
            msgs_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes a free mobile slot k (1..=15) of `user`.
    pub fn take_mobile(&self, user: i64) -> Option<u8> {
        let mut m = self.mobiles.lock().unwrap_or_else(|e| e.into_inner());
        let used = m.entry(user).or_default();
        let k = (1..=15u8).find(|k| *used & (1 << k) == 0)?;
        *used |= 1 << k;
        Some(k)
    }

    /// Frees mobile slot `k` of `user`.
    pub fn release_mobile(&self, user: i64, k: u8) {
        let mut m = self.mobiles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(used) = m.get_mut(&user) {
            *used &= !(1 << k);
        }
    }

    /// Registers a session; returns its connection number.
    pub fn register(&self, id: i64, tx: Tx) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut s = self.sessions[shard(id)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.entry(id).or_default().push((conn, tx));
        self.online.fetch_add(1, Ordering::Relaxed);
        conn
    }

    /// Removes a session.
    pub fn unregister(&self, id: i64, conn: u64) {
        let mut s = self.sessions[shard(id)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(v) = s.get_mut(&id) {
            v.retain(|(c, _)| *c != conn);
            if v.is_empty() {
                s.remove(&id);
            }
        }
        self.online.fetch_sub(1, Ordering::Relaxed);
    }

    /// Destinations of a message from `src` to `dst` (docs/protocol.md §4).
    pub fn destinations(&self, src: i64, dst: i64, out: &mut Vec<i64>) {
        let b = self.binds.read().unwrap_or_else(|e| e.into_inner());
        if src < 0 {
            let users = b.users_of.get(&src).map_or(&[][..], Vec::as_slice);
            id::device_destinations(dst, users, out);
        } else {
            let user = id::base_user(src).unwrap_or(src);
            let devices = b.devices_of.get(&user).map_or(&[][..], Vec::as_slice);
            id::phone_destinations(dst, devices, out);
        }
    }

    /// Sends `payload` to every session of `ids` (WebSocket, or UDP for devices).
    pub fn route(&self, ids: &[i64], payload: &Bytes) {
        let mut txs: Vec<Tx> = Vec::new();
        for &id in ids {
            txs.clear();
            {
                let s = self.sessions[shard(id)]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(v) = s.get(&id) {
                    txs.extend(v.iter().map(|(_, tx)| tx.clone()));
                }
            }
            if txs.is_empty() && id < 0 {
                self.send_udp(id, payload);
            }
            for tx in &txs {
                if tx.try_send(Message::Binary(payload.clone())).is_ok() {
                    self.msgs_out.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn send_udp(&self, device: i64, payload: &Bytes) {
        let Some(sock) = self.udp_socket.get() else {
            return;
        };
        let Some(sid) = self
            .udp_devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&device)
            .copied()
        else {
            return;
        };
        let (addr, seq) = {
            let mut u = self.udp.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = u.get_mut(&sid) else { return };
            s.sidx = s.sidx.wrapping_add(1);
            (s.addr, s.sidx)
        };
        let mut buf = payload.to_vec();
        if edge_proto::frame::patch_for_device(&mut buf, seq, &sid).is_ok()
            && sock.try_send_to(&buf, addr).is_ok()
        {
            self.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Binds or unbinds.
    pub fn bind(&self, device: i64, user: i64, on: bool) {
        let mut b = self.binds.write().unwrap_or_else(|e| e.into_inner());
        let users = b.users_of.entry(device).or_default();
        users.retain(|u| *u != user);
        if on {
            users.push(user);
        }
        let devices = b.devices_of.entry(user).or_default();
        devices.retain(|d| *d != device);
        if on {
            devices.push(device);
        }
    }

    /// Pushes a server-built direct packet with `msg_id` and `body` to `ids` (docs/protocol.md §7.1).
    pub fn push(&self, ids: &[i64], msg_id: u16, body: &[u8]) -> usize {
        let mut expanded = Vec::new();
        for &i in ids {
            if i != 0 {
                expanded.extend(id::expand(i));
            }
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let mut n = 0;
        for &i in &expanded {
            let online = self.sessions[shard(i)]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&i);
            if !online {
                continue;
            }
            let mut out = Vec::with_capacity(36 + body.len());
            let spec = edge_proto::frame::DirectSpec {
                seq: 0,
                timestamp: ts,
                dst: i,
                src: 0,
                msg_id,
                body,
            };
            if edge_proto::frame::write_direct(&mut out, &spec).is_ok() {
                self.route(&[i], &Bytes::from(out));
                n += 1;
            }
        }
        n
    }
}
