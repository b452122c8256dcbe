//! The tokio peer's per-thread state and routing (docs/protocol.md §4 by edge-proto's
//! destination rules).
//!
//! Each runtime thread owns one [`Hub`] (behind an `Rc`, no lock): its WebSocket sessions, a
//! replica of the bindings, and — with more than one thread — a replica of the directory (which
//! threads hold a session of an id). Thread 0 also owns the UDP device sessions. Threads talk
//! through one bounded tokio mpsc inbox each ([`Cmd`]): a message for a session on another
//! thread is handed over by value (dropped and counted when that inbox is full); joins and
//! bindings are broadcast and acknowledged before the login is answered or the bind returns,
//! so a message never races ahead of the directory entry it needs. Only the mobile-id slots
//! ([`Shared::take_mobile`]) sit behind a mutex: they are taken on login, never per message.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use edge_proto::id;
use edge_proto::ws::{self, OpCode};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

/// Largest outbox of one connection (cloudsocket's `--max-outbound` default); a frame that
/// would pass it is dropped and counted.
pub const MAX_OUTBOX: usize = 256 * 1024;
/// Largest WebSocket payload accepted (cloudsocket's `--max-message` default).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bound of each thread's inbox.
pub const INBOX: usize = 16 * 1024;
/// Most runtime threads (one directory bit each, bit 63 marks a UDP device).
pub const MAX_THREADS: usize = 63;
/// Directory bit: the id is a UDP device logged in on thread 0.
const UDP_BIT: u64 = 1 << 63;
/// Spare outbox buffers kept per thread, and the largest one kept.
const POOL: usize = 1024;
const POOL_BUFFER_MAX: usize = 64 * 1024;

mod shared;

use shared::bump;
pub use shared::{Cmd, Counters, Map, Shared};

/// A logged-in WebSocket connection as other tasks of its thread see it: its outbox and the
/// wake of its task.
#[derive(Debug, Default)]
pub struct Conn {
    /// Encoded frames not written yet (empty and unallocated while idle).
    pub outbox: RefCell<Vec<u8>>,
    /// Woken when the outbox goes from empty to non-empty.
    pub wake: Notify,
}

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

/// Thread 0's UDP state.
#[derive(Debug, Default)]
pub struct UdpState {
    /// Sessions by sid.
    pub sessions: Map<[u8; 16], UdpSession>,
    /// Logged-in devices: id → sid.
    pub devices: Map<i64, [u8; 16]>,
    /// Builtin register: a stable id per MAC.
    pub macs: Map<[u8; 8], i64>,
    /// Sessions opened so far (the sid's seed).
    pub opened: u64,
    /// The socket, once bound.
    pub socket: Option<Rc<UdpSocket>>,
    out: Vec<u8>,
}

/// Bindings both ways.
#[derive(Debug, Default)]
struct Binds {
    users_of: Map<i64, Vec<i64>>,
    devices_of: Map<i64, Vec<i64>>,
}

/// One runtime thread's state.
#[derive(Debug)]
pub struct Hub {
    /// This thread's index.
    pub index: usize,
    /// What the threads share.
    pub shared: Arc<Shared>,
    sessions: RefCell<Map<i64, Vec<Rc<Conn>>>>,
    /// Id → bit per thread holding a session (and [`UDP_BIT`]); kept only with > 1 thread.
    directory: RefCell<Map<i64, u64>>,
    binds: RefCell<Binds>,
    /// UDP sessions (thread 0).
    pub udp: RefCell<UdpState>,
    /// The thread's read buffer, shared by its connections (see `tokio_peer::read_scratch`).
    pub scratch: RefCell<Vec<u8>>,
    pool: RefCell<Vec<Vec<u8>>>,
    ids: RefCell<Vec<i64>>,
}

impl Hub {
    /// Thread `index`'s empty state.
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        Self {
            index,
            shared,
            sessions: RefCell::default(),
            directory: RefCell::default(),
            binds: RefCell::default(),
            udp: RefCell::default(),
            scratch: RefCell::new(vec![0; 2 * (MAX_PAYLOAD + 14)]),
            pool: RefCell::default(),
            ids: RefCell::default(),
        }
    }

    /// This thread's counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    fn threads(&self) -> usize {
        self.shared.inboxes.len()
    }

    fn others(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.index;
        (0..self.threads()).filter(move |&t| t != me)
    }

    // === sessions and directory ===

    /// Registers a logged-in session of `key`; with several threads, returns once every
    /// other thread's directory knows this thread holds `key`.
    pub async fn join(&self, key: i64, conn: Rc<Conn>) {
        self.sessions
            .borrow_mut()
            .entry(key)
            .or_default()
            .push(conn);
        bump(&self.counters().online);
        if self.threads() == 1 {
            return;
        }
        *self.directory.borrow_mut().entry(key).or_default() |= 1 << self.index;
        let mut acks = Vec::with_capacity(self.threads() - 1);
        for t in self.others() {
            let (ack, done) = oneshot::channel();
            let join = Cmd::Join {
                id: key,
                from: self.index,
                ack,
            };
            if self.shared.inboxes[t].send(join).await.is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            let _ = done.await;
        }
    }

    /// Removes a session of `key`; the last one on this thread leaves the directory.
    pub async fn leave(&self, key: i64, conn: &Rc<Conn>) {
        let last = {
            let mut s = self.sessions.borrow_mut();
            let Some(v) = s.get_mut(&key) else { return };
            v.retain(|c| !Rc::ptr_eq(c, conn));
            let last = v.is_empty();
            if last {
                s.remove(&key);
            }
            last
        };
        self.counters().online.fetch_sub(1, Ordering::Relaxed);
        if !last || self.threads() == 1 {
            return;
        }
        self.directory_clear(key, 1 << self.index);
        for t in self.others() {
            let leave = Cmd::Leave {
                id: key,
                from: self.index,
            };
            let _ = self.shared.inboxes[t].send(leave).await;
        }
    }

    fn directory_clear(&self, id: i64, bit: u64) {
        let mut d = self.directory.borrow_mut();
        if let Some(mask) = d.get_mut(&id) {
            *mask &= !bit;
            if *mask == 0 {
                d.remove(&id);
            }
        }
    }

    /// Whether `id` has a WebSocket session on any thread.
    pub fn online(&self, id: i64) -> bool {
        if self.threads() == 1 {
            self.sessions.borrow().contains_key(&id)
        } else {
            self.directory
                .borrow()
                .get(&id)
                .is_some_and(|m| m & !UDP_BIT != 0)
        }
    }

    /// A UDP device logged in (thread 0): tells the other threads' directories.
    pub fn udp_joined(&self, device: i64) {
        if self.threads() == 1 {
            return;
        }
        let first = {
            let mut d = self.directory.borrow_mut();
            let mask = d.entry(device).or_default();
            let first = *mask & UDP_BIT == 0;
            *mask |= UDP_BIT;
            first
        };
        if first {
            for t in self.others() {
                if self.shared.inboxes[t]
                    .try_send(Cmd::UdpJoin { id: device })
                    .is_err()
                {
                    bump(&self.counters().dropped);
                }
            }
        }
    }

    // === bindings ===

    /// Binds or unbinds on every thread; returns once all have applied it.
    pub async fn bind_everywhere(&self, device: i64, user: i64, on: bool) {
        self.bind(device, user, on);
        let mut acks = Vec::new();
        for t in self.others() {
            let (ack, done) = oneshot::channel();
            let bind = Cmd::Bind {
                device,
                user,
                on,
                ack,
            };
            if self.shared.inboxes[t].send(bind).await.is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            let _ = done.await;
        }
    }

    fn bind(&self, device: i64, user: i64, on: bool) {
        let mut b = self.binds.borrow_mut();
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

    // === routing ===

    /// Relays a message from session `src` to its destinations (bytes 8–15 name `dst`).
    pub fn relay(&self, src: i64, payload: &[u8]) {
        let Some(dst) = payload.get(8..16) else {
            return;
        };
        self.relay_to(
            src,
            i64::from_le_bytes(dst.try_into().unwrap_or_default()),
            payload,
        );
    }

    /// Relays a message from session `src` addressed to `dst`.
    pub fn relay_to(&self, src: i64, dst: i64, payload: &[u8]) {
        let mut ids = self.ids.borrow_mut();
        ids.clear();
        {
            let b = self.binds.borrow();
            if src < 0 {
                let users = b.users_of.get(&src).map_or(&[][..], Vec::as_slice);
                id::device_destinations(dst, users, &mut *ids);
            } else {
                let user = id::base_user(src).unwrap_or(src);
                let devices = b.devices_of.get(&user).map_or(&[][..], Vec::as_slice);
                id::phone_destinations(dst, devices, &mut *ids);
            }
        }
        let mut shared = None;
        for &id in ids.iter() {
            self.route(id, payload, &mut shared);
        }
    }

    /// Sends `payload` to every session of `id`: on this thread into the outboxes, on others
    /// through their inboxes (one `Arc` copy per message, made on first need), or to the UDP
    /// device when no WebSocket session holds the id.
    pub fn route(&self, id: i64, payload: &[u8], shared: &mut Option<Arc<[u8]>>) {
        if self.threads() == 1 {
            if !self.deliver_local(id, payload) && id < 0 {
                self.send_udp(id, payload);
            }
            return;
        }
        let mask = self.directory.borrow().get(&id).copied().unwrap_or(0);
        let ws = mask & !UDP_BIT;
        if ws == 0 {
            if mask & UDP_BIT == 0 {
                return;
            }
            if self.index == 0 {
                self.send_udp(id, payload);
            } else {
                let payload = shared.get_or_insert_with(|| Arc::from(payload)).clone();
                self.hand_over(
                    0,
                    Cmd::Udp {
                        device: id,
                        payload,
                    },
                );
            }
            return;
        }
        let me = 1u64 << self.index;
        if ws & me != 0 {
            self.deliver_local(id, payload);
        }
        let mut rest = ws & !me;
        while rest != 0 {
            let t = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let payload = shared.get_or_insert_with(|| Arc::from(payload)).clone();
            self.hand_over(t, Cmd::Deliver { id, payload });
        }
    }

    fn hand_over(&self, thread: usize, cmd: Cmd) {
        if self.shared.inboxes[thread].try_send(cmd).is_err() {
            bump(&self.counters().dropped);
        }
    }

    /// Appends `payload` to the outbox of every session of `id` on this thread.
    fn deliver_local(&self, id: i64, payload: &[u8]) -> bool {
        let sessions = self.sessions.borrow();
        let Some(conns) = sessions.get(&id) else {
            return false;
        };
        for conn in conns {
            if self.queue(conn, OpCode::Binary, payload) {
                bump(&self.counters().msgs_out);
            } else {
                bump(&self.counters().dropped);
            }
        }
        true
    }

    /// Appends a frame to `conn`'s outbox (taking a pooled buffer when it has none) and
    /// wakes its task if the outbox was empty; `false` when it would pass [`MAX_OUTBOX`].
    pub fn queue(&self, conn: &Conn, opcode: OpCode, payload: &[u8]) -> bool {
        let mut out = conn.outbox.borrow_mut();
        if out.len() + payload.len() + 14 > MAX_OUTBOX {
            return false;
        }
        if out.is_empty() {
            if out.capacity() == 0
                && let Some(buffer) = self.pool.borrow_mut().pop()
            {
                *out = buffer;
            }
            conn.wake.notify_one();
        }
        ws::write_frame(&mut out, opcode, payload);
        true
    }

    /// Takes a connection's pending frames (the outbox is left empty and unallocated).
    pub fn take_outbox(&self, conn: &Conn) -> Vec<u8> {
        std::mem::take(&mut *conn.outbox.borrow_mut())
    }

    /// Returns a written outbox buffer to the thread's pool.
    pub fn recycle(&self, mut buffer: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if pool.len() < POOL && buffer.capacity() <= POOL_BUFFER_MAX {
            buffer.clear();
            pool.push(buffer);
        }
    }

    /// Sends `payload` to UDP device `device` (thread 0), patched with its sequence and sid.
    pub fn send_udp(&self, device: i64, payload: &[u8]) {
        let mut udp = self.udp.borrow_mut();
        let udp = &mut *udp;
        let Some(sock) = udp.socket.clone() else {
            return;
        };
        let Some(sid) = udp.devices.get(&device).copied() else {
            return;
        };
        let Some(s) = udp.sessions.get_mut(&sid) else {
            return;
        };
        s.sidx = s.sidx.wrapping_add(1);
        let (addr, seq) = (s.addr, s.sidx);
        udp.out.clear();
        udp.out.extend_from_slice(payload);
        if edge_proto::frame::patch_for_device(&mut udp.out, seq, &sid).is_ok()
            && sock.try_send_to(&udp.out, addr).is_ok()
        {
            bump(&self.counters().msgs_out);
        }
    }

    /// Pushes a server-built direct packet with `msg_id` and `body` to the online sessions of
    /// `ids` (docs/protocol.md §7.1); returns how many ids it went to.
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
        let mut out = Vec::with_capacity(36 + body.len());
        for &i in &expanded {
            if !self.online(i) {
                continue;
            }
            out.clear();
            let spec = edge_proto::frame::DirectSpec {
                seq: 0,
                timestamp: ts,
                dst: i,
                src: 0,
                msg_id,
                body,
            };
            if edge_proto::frame::write_direct(&mut out, &spec).is_ok() {
                self.route(i, &out, &mut None);
                n += 1;
            }
        }
        n
    }

    // === the inbox ===

    /// Carries out what other threads sent, until every sender is gone.
    pub async fn serve_inbox(&self, mut inbox: mpsc::Receiver<Cmd>) {
        while let Some(cmd) = inbox.recv().await {
            self.apply(cmd);
            while let Ok(cmd) = inbox.try_recv() {
                self.apply(cmd);
            }
        }
    }

    fn apply(&self, cmd: Cmd) {
        match cmd {
            Cmd::Deliver { id, payload } => {
                self.deliver_local(id, &payload);
            }
            Cmd::Udp { device, payload } => self.send_udp(device, &payload),
            Cmd::Join { id, from, ack } => {
                *self.directory.borrow_mut().entry(id).or_default() |= 1 << from;
                let _ = ack.send(());
            }
            Cmd::Leave { id, from } => self.directory_clear(id, 1 << from),
            Cmd::UdpJoin { id } => {
                *self.directory.borrow_mut().entry(id).or_default() |= UDP_BIT;
            }
            Cmd::Bind {
                device,
                user,
                on,
                ack,
            } => {
                self.bind(device, user, on);
                let _ = ack.send(());
            }
        }
    }
}
