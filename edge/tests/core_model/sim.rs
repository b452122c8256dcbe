//! N shards of the real core (`edge::core`) with a simulated shell: the decisions the
//! glommio shell makes around the core (`edge/src/shard/sessions.rs`: evict at the cap,
//! report to the directory, check each holder against its record) without the bytes,
//! and a mesh of per-pair FIFO queues whose messages are delivered in an order the test
//! chooses (any interleaving the real mesh allows).

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use edge::core::sessions::{Handle, UDP_BIT};
use edge::core::slab::Slab;
use edge::core::terminal::{State, Terminal, Timeouts};
use edge::core::udp::{Accept, Due, UdpTable};
use edge::core::wheel::{Entry, Wheel};
use edge::core::{ShardCore, route_key, update_bound};
use edge_proto::device::Sid;

/// UDP session lifetime in the simulation, seconds.
pub const UTO: u32 = 5;

/// A WebSocket record: enough of `shard::conn::Conn` for the index.
#[derive(Debug)]
pub struct Ws {
    pub id: i64,
    /// Its life: stage and deadline (the real `core::terminal`).
    pub terminal: Terminal,
    /// The earliest wheel entry for it (0: none), as the shell keeps it.
    pub scheduled: u32,
    /// Phones: bound devices; devices: bound users.
    pub bound: Box<[i64]>,
}

/// The node's stage timeouts (as `Config`'s).
pub const TIMEOUTS: Timeouts = Timeouts {
    handshake: 10,
    login: 60,
};

/// Shard → shard messages (the subset of `msg::PeerMsg` the core's state depends on).
#[derive(Debug, Clone)]
pub enum Mesh {
    Report {
        key: i64,
        from: usize,
        present: bool,
        ack: Option<Handle>,
    },
    Ack(Handle),
    Route {
        id: i64,
    },
    Deliver {
        id: i64,
    },
    Datagram {
        sid: [u8; 16],
        seq: u16,
        from: SocketAddr,
    },
}

/// One shard: the core, and the records the shell keeps beside it.
pub struct Shard {
    pub core: ShardCore,
    pub ws: Slab<Ws>,
    pub udp: UdpTable,
    pub wheel: Wheel,
}

/// The simulated node.
pub struct Sim {
    pub shards: Vec<Shard>,
    pub cap: usize,
    /// Queue `from * n + to`.
    pub queues: Vec<VecDeque<Mesh>>,
    /// Deliveries of the current relay: (shard, handle).
    pub delivered: Vec<(usize, Handle)>,
    /// Invariants the shell found broken (stale holders, refused index operations).
    pub broken: u64,
    /// Sessions evicted at the cap: (shard, handle).
    pub evicted: Vec<(usize, Handle)>,
    /// The bus's bindings (device, user): what a login is granted.
    pub bindings: BTreeSet<(i64, i64)>,
    pub now: u32,
    sids: u64,
}

impl Sim {
    pub fn new(count: usize, cap: usize) -> Self {
        Sim {
            shards: (0..count)
                .map(|i| Shard {
                    core: ShardCore::new(i, count, cap),
                    ws: Slab::default(),
                    udp: UdpTable::new(1 << 20),
                    wheel: Wheel::new(),
                })
                .collect(),
            cap,
            queues: (0..count * count).map(|_| VecDeque::new()).collect(),
            delivered: Vec::new(),
            broken: 0,
            evicted: Vec::new(),
            bindings: BTreeSet::new(),
            now: 0,
            sids: 0,
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Mesh) {
        let n = self.shards.len();
        self.queues[from * n + to].push_back(msg);
    }

    /// Delivers the head of the `pick`-th non-empty queue. False when all are empty.
    pub fn step(&mut self, pick: usize) -> bool {
        let busy: Vec<usize> = (0..self.queues.len())
            .filter(|&q| !self.queues[q].is_empty())
            .collect();
        let Some(&q) = busy.get(pick % busy.len().max(1)) else {
            return false;
        };
        let msg = self.queues[q].pop_front().expect("non-empty");
        let n = self.shards.len();
        self.on_mesh(q / n, q % n, msg);
        true
    }

    /// Delivers everything in flight, in an order drawn from `seed`.
    pub fn drain(&mut self, mut seed: u64) {
        for _ in 0..1_000_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if !self.step(seed as usize) {
                return;
            }
        }
        panic!("the mesh did not drain");
    }

    fn on_mesh(&mut self, from: usize, at: usize, msg: Mesh) {
        match msg {
            Mesh::Report {
                key,
                from: f,
                present,
                ack,
            } => {
                self.shards[at].core.on_report(key, f, present);
                if let Some(h) = ack {
                    self.send(at, from, Mesh::Ack(h));
                }
            }
            Mesh::Ack(h) => {
                let now = self.now;
                if !h.is_udp()
                    && let Some(ws) = self.shards[at].ws.get_gen_mut(h.slot, h.generation)
                    && ws.terminal.joined(now)
                {
                    self.schedule(at, h.slot);
                }
            }
            Mesh::Route { id } => self.resolve(at, id),
            Mesh::Deliver { id } => self.deliver(at, id),
            Mesh::Datagram { sid, seq, from } => self.packet(at, sid, seq, from),
        }
    }

    // ---- the shell's session decisions (mirrors edge/src/shard/sessions.rs) ----

    pub fn join(&mut self, at: usize, handle: Handle, id: i64) -> bool {
        for _ in 0..=self.cap {
            let Some(oldest) = self.shards[at].core.sessions.oldest_if_full(id) else {
                break;
            };
            self.evicted.push((at, oldest));
            self.evict(at, oldest, id);
        }
        match self.shards[at].core.join(id, handle) {
            Ok(None) => true,
            Ok(Some(r)) => {
                let msg = Mesh::Report {
                    key: r.key,
                    from: at,
                    present: true,
                    ack: Some(handle),
                };
                self.send(at, r.to, msg);
                true
            }
            Err(_) => {
                self.broken += 1;
                false
            }
        }
    }

    pub fn leave(&mut self, at: usize, handle: Handle, id: i64) {
        match self.shards[at].core.leave(id, handle) {
            Ok(Some(r)) => {
                let msg = Mesh::Report {
                    key: r.key,
                    from: at,
                    present: false,
                    ack: None,
                };
                self.send(at, r.to, msg);
            }
            Ok(None) => {}
            Err(_) => self.broken += 1,
        }
    }

    fn evict(&mut self, at: usize, handle: Handle, id: i64) {
        if !self.holds(at, handle, id) {
            self.broken += 1;
            self.leave(at, handle, id);
        } else if handle.is_udp() {
            self.udp_remove(at, handle.index());
        } else {
            self.ws_close(at, handle.slot);
        }
    }

    fn holds(&self, at: usize, h: Handle, id: i64) -> bool {
        let shard = &self.shards[at];
        if h.is_udp() {
            let s = shard.udp.get_gen(h.index(), h.generation);
            s.is_some_and(|s| s.device == id)
        } else {
            let c = shard.ws.get_gen(h.slot, h.generation);
            c.is_some_and(|c| c.id == id && c.terminal.logged_in())
        }
    }

    pub fn live_holders(&mut self, at: usize, id: i64) -> Vec<Handle> {
        let all = self.shards[at].core.sessions.holders(id).to_vec();
        let (live, stale): (Vec<Handle>, Vec<Handle>) =
            all.into_iter().partition(|&h| self.holds(at, h, id));
        for h in stale {
            self.broken += 1;
            self.leave(at, h, id);
        }
        live
    }

    // ---- WebSocket connections ----

    pub fn ws_open(&mut self, at: usize) -> Handle {
        let ws = Ws {
            id: 0,
            terminal: Terminal::accepted(self.now, &TIMEOUTS),
            scheduled: 0,
            bound: Box::new([]),
        };
        let (slot, generation) = self.shards[at].ws.insert(ws);
        self.schedule(at, slot);
        Handle::ws(slot, generation)
    }

    /// Puts a connection's deadline on the wheel when it moved earlier (mirrors the
    /// shell's `schedule`).
    fn schedule(&mut self, at: usize, slot: u32) {
        let shard = &mut self.shards[at];
        let generation = shard.ws.generation(slot);
        let Some(ws) = shard.ws.get_mut(slot) else {
            return;
        };
        let due = ws.terminal.deadline();
        let entry = Entry { slot, generation };
        shard.wheel.schedule(&mut ws.scheduled, due, entry);
    }

    /// The upgrade request arrived. False unless it was waiting for one.
    pub fn ws_upgrade(&mut self, at: usize, slot: u32) -> bool {
        let now = self.now;
        let Some(ws) = self.shards[at].ws.get_mut(slot) else {
            return false;
        };
        let upgraded = ws.terminal.upgraded(now, &TIMEOUTS);
        self.schedule(at, slot);
        upgraded
    }

    /// A login string asking for heartbeat period `period`, granted as `id` (mirrors
    /// `ws::on_login` and `on_login_done`). False unless it was waiting for a login.
    pub fn ws_login(&mut self, at: usize, slot: u32, id: i64, period: u64) -> bool {
        let Some(ws) = self.shards[at].ws.get_mut(slot) else {
            return false;
        };
        if ws.terminal.state() != State::Login {
            return false;
        }
        ws.terminal.login_requested(period);
        ws.terminal.granted();
        ws.id = id;
        ws.bound = granted_bound(&self.bindings, id);
        let handle = Handle::ws(slot, self.shards[at].ws.generation(slot));
        let reachable = self.join(at, handle, id);
        if reachable && let Some(ws) = self.shards[at].ws.get_mut(slot) {
            ws.terminal.joined(self.now);
            self.schedule(at, slot);
        }
        true
    }

    /// A data frame arrived on a connection.
    pub fn ws_frame(&mut self, at: usize, slot: u32) {
        let now = self.now;
        if let Some(ws) = self.shards[at].ws.get_mut(slot) {
            ws.terminal.heard(now);
        }
    }

    pub fn ws_close(&mut self, at: usize, slot: u32) {
        let generation = self.shards[at].ws.generation(slot);
        let Some(ws) = self.shards[at].ws.get(slot) else {
            return;
        };
        if ws.terminal.logged_in() {
            let id = ws.id;
            self.leave(at, Handle::ws(slot, generation), id);
        }
        self.shards[at].ws.remove(slot);
    }

    // ---- UDP sessions ----

    pub fn udp_open(&mut self, at: usize, from: SocketAddr) -> (Handle, Sid) {
        self.sids += 1;
        let mut sid = [0u8; 16];
        sid[..8].copy_from_slice(&self.sids.to_le_bytes());
        sid[15] = at as u8;
        let deadline = self.now + UTO + 1;
        let shard = &mut self.shards[at];
        let (slot, generation) = shard.udp.open(Sid(sid), from, deadline).expect("room");
        let entry = Entry {
            slot: slot | UDP_BIT,
            generation,
        };
        shard.wheel.insert(deadline, entry);
        (Handle::udp(slot, generation), Sid(sid))
    }

    /// A device login (`0xE2`) granted as `id` (mirrors `on_udp_login_done`).
    pub fn udp_login(&mut self, at: usize, slot: u32, id: i64) {
        let generation = self.shards[at].udp.generation(slot);
        let Some(s) = self.shards[at].udp.get_mut(slot) else {
            return;
        };
        let previous = s.device;
        self.shards[at].udp.set_device(slot, 0);
        let handle = Handle::udp(slot, generation);
        if previous != 0 {
            self.leave(at, handle, previous);
        }
        let bound = granted_bound(&self.bindings, id);
        if self.join(at, handle, id)
            && let Some(s) = self.shards[at].udp.get_mut(slot)
        {
            s.bound = bound;
            self.shards[at].udp.set_device(slot, id);
        }
    }

    pub fn udp_remove(&mut self, at: usize, slot: u32) {
        let generation = self.shards[at].udp.generation(slot);
        let Some(s) = self.shards[at].udp.get(slot) else {
            return;
        };
        if s.device != 0 {
            let id = s.device;
            self.leave(at, Handle::udp(slot, generation), id);
        }
        self.shards[at].udp.remove(slot);
    }

    /// A packet with `sid` reaches shard `at`'s socket (the kernel's choice after NAT).
    pub fn packet(&mut self, at: usize, sid: [u8; 16], seq: u16, from: SocketAddr) {
        let n = self.shards.len();
        let deadline = self.now + UTO + 1;
        match self.shards[at]
            .udp
            .accept((at, n), &sid, seq, from, deadline)
        {
            Accept::Handover(owner) => self.send(at, owner, Mesh::Datagram { sid, seq, from }),
            Accept::Mine { .. } | Accept::Unknown | Accept::StaleSeq => {}
        }
    }

    /// Time passes: deadlines on every shard's wheel (mirrors `expire_due` and
    /// `on_udp_due`).
    pub fn tick(&mut self, secs: u32) {
        self.now += secs;
        for at in 0..self.shards.len() {
            let mut due = Vec::new();
            self.shards[at].wheel.advance(self.now, &mut due);
            for entry in due {
                if entry.slot & UDP_BIT != 0 {
                    self.udp_due(at, entry);
                } else {
                    self.ws_due(at, entry);
                }
            }
        }
    }

    fn udp_due(&mut self, at: usize, entry: Entry) {
        let shard = &mut self.shards[at];
        let slot = entry.slot & !UDP_BIT;
        match shard.udp.due(slot, self.now) {
            Due::Stale => {}
            Due::Again {
                at: due,
                generation,
            } => {
                let entry = Entry {
                    slot: entry.slot,
                    generation,
                };
                shard.wheel.insert(due, entry);
            }
            Due::Expired => self.udp_remove(at, slot),
        }
    }

    fn ws_due(&mut self, at: usize, entry: Entry) {
        let now = self.now;
        let shard = &mut self.shards[at];
        let Some(ws) = shard.ws.get_gen_mut(entry.slot, entry.generation) else {
            return;
        };
        if ws.terminal.expired(now).is_some() {
            ws.scheduled = 0;
            self.ws_close(at, entry.slot);
        } else {
            let due = ws.terminal.deadline();
            ws.scheduled = due;
            shard.wheel.insert(due, entry);
        }
    }

    // ---- relays and queries ----

    /// A message for `id` sent from shard `at` (mirrors `route` → `resolve` → `deliver`).
    pub fn route(&mut self, at: usize, id: i64) {
        let dir = self.shards[at].core.dir_shard(route_key(id));
        if dir == at {
            self.resolve(at, id);
        } else {
            self.send(at, dir, Mesh::Route { id });
        }
    }

    fn resolve(&mut self, at: usize, id: i64) {
        let holders: Vec<usize> = self.shards[at].core.holders_of_key(route_key(id)).collect();
        for s in holders {
            if s == at {
                self.deliver(at, id);
            } else {
                self.send(at, s, Mesh::Deliver { id });
            }
        }
    }

    fn deliver(&mut self, at: usize, id: i64) {
        for h in self.live_holders(at, id) {
            self.delivered.push((at, h));
        }
    }

    /// `udpaddr` on one shard: its newest live UDP session of `id`.
    pub fn device_addr(&mut self, at: usize, id: i64) -> Option<SocketAddr> {
        let live = self.live_holders(at, id);
        let shard = &self.shards[at];
        live.iter()
            .rev()
            .filter(|h| h.is_udp())
            .find_map(|h| shard.udp.get(h.index()).map(|s| s.addr.socket()))
    }

    // ---- bindings, sends by the destination rules, pushes ----

    /// `/admin/bind` or `unbind`: the bus's table changes and every shard hears of it
    /// (mirrors `route::on_binding`).
    pub fn bind(&mut self, device: i64, user: i64, bound: bool) {
        if bound {
            self.bindings.insert((device, user));
        } else {
            self.bindings.remove(&(device, user));
        }
        for at in 0..self.shards.len() {
            for mobile in edge_proto::id::mobile_ids(user) {
                for h in self.live_holders(at, mobile) {
                    update_bound(self.bound_mut(at, h), device, bound);
                }
            }
            for h in self.live_holders(at, device) {
                update_bound(self.bound_mut(at, h), user, bound);
            }
        }
    }

    fn bound_mut(&mut self, at: usize, h: Handle) -> &mut Box<[i64]> {
        let shard = &mut self.shards[at];
        if h.is_udp() {
            &mut shard.udp.get_mut(h.index()).expect("live").bound
        } else {
            &mut shard.ws.get_mut(h.slot).expect("live").bound
        }
    }

    /// A logged-in session's bound list.
    pub fn bound(&self, at: usize, h: Handle) -> Vec<i64> {
        let shard = &self.shards[at];
        let list = if h.is_udp() {
            shard.udp.get(h.index()).map(|s| s.bound.to_vec())
        } else {
            shard.ws.get(h.slot).map(|c| c.bound.to_vec())
        };
        list.unwrap_or_default()
    }

    /// The session `h` (logged in as `id`) sends to `dst`: destinations by its rules
    /// and its bound list (mirrors `route::on_message` / `udp::on_forward`).
    pub fn terminal_send(&mut self, at: usize, h: Handle, id: i64, dst: i64) {
        let bound = self.bound(at, h);
        let mut ids = Vec::new();
        if id < 0 {
            edge_proto::id::device_destinations(dst, &bound, &mut ids);
        } else {
            edge_proto::id::phone_destinations(dst, &bound, &mut ids);
        }
        for id in ids {
            self.route(at, id);
        }
    }

    /// `/admin/push`: every shard delivers to what it holds of `ids`.
    pub fn push(&mut self, ids: &[i64]) {
        for at in 0..self.shards.len() {
            for &id in ids {
                self.deliver(at, id);
            }
        }
    }
}

/// What the bus grants a login of `id`: a device's users, a phone's user's devices.
pub fn granted_bound(bindings: &BTreeSet<(i64, i64)>, id: i64) -> Box<[i64]> {
    let list: Vec<i64> = if id < 0 {
        bindings.iter().filter(|b| b.0 == id).map(|b| b.1).collect()
    } else {
        let user = route_key(id);
        bindings
            .iter()
            .filter(|b| b.1 == user)
            .map(|b| b.0)
            .collect()
    };
    list.into_boxed_slice()
}
