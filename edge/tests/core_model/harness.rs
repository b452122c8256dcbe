//! The test's side of a run: applies each operation to the simulation and to the naive
//! model, tracks what the model needs to know of each UDP session and connection (its
//! sequence, address, expiry, stage and deadline), and checks every invariant after
//! every step.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use edge::core::sessions::Handle;

use super::model::Model;
use super::sim::{self, Sim, UTO};
use super::{IDS, Op};

/// Heartbeat periods a login may ask for (0: the default 150 s; 400: capped at 300 s).
const PERIODS: [u64; 5] = [0, 1, 2, 5, 400];

/// A connection's life as the naive model sees it.
#[derive(Debug, Clone, Copy)]
struct Life {
    stage: Stage,
    /// When it is closed if nothing happens.
    deadline: u32,
    /// Seconds of silence allowed once online.
    window: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Upgrading,
    LoggingIn,
    Online,
}

/// Destinations a message may name: all, devices, users, mobile ids.
const DSTS: [i64; 9] = [0, -1, -2, -3, 16, 17, 18, 32, 33];

fn addr(port: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(port)))
}

/// The simulation, the model, and what the test tracks per UDP session.
pub struct Run {
    sim: Sim,
    model: Model,
    /// (shard, handle) → (last sequence sent, address, expiry) of each live UDP session.
    devices: std::collections::BTreeMap<(usize, Handle), (u16, SocketAddr, u32)>,
    /// The bindings (device, user) as the test made them.
    bindings: BTreeSet<(i64, i64)>,
    /// Each live connection's life.
    lives: std::collections::BTreeMap<(usize, Handle), Life>,
    seed: u64,
}

pub static OPS: AtomicU64 = AtomicU64::new(0);

impl Run {
    pub fn new(shards: usize, cap: usize, seed: u64) -> Self {
        Run {
            sim: Sim::new(shards, cap),
            model: Model::default(),
            devices: Default::default(),
            bindings: BTreeSet::new(),
            lives: Default::default(),
            seed,
        }
    }

    fn n(&self) -> usize {
        self.sim.shards.len()
    }

    pub fn drain(&mut self) {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.sim.drain(self.seed | 1);
    }

    fn pick(&self, udp: bool, sel: u8) -> Option<(usize, Handle)> {
        let live = self.model.live(udp);
        (!live.is_empty()).then(|| live[sel as usize % live.len()])
    }

    /// Applies `op` to both sides, then checks every invariant.
    pub fn apply(&mut self, op: &Op) {
        OPS.fetch_add(1, Ordering::Relaxed);
        let n = self.n();
        match *op {
            Op::WsOpen { shard } => {
                let at = shard as usize % n;
                let h = self.sim.ws_open(at);
                self.model.open(at, h);
                let life = Life {
                    stage: Stage::Upgrading,
                    deadline: self.sim.now + 11,
                    window: 0,
                };
                self.lives.insert((at, h), life);
            }
            Op::WsUpgrade { sel } => {
                let Some((at, h)) = self.pick(false, sel) else {
                    return;
                };
                let life = self.lives.get_mut(&(at, h)).expect("a live connection");
                let expected = life.stage == Stage::Upgrading;
                if expected {
                    *life = Life {
                        stage: Stage::LoggingIn,
                        deadline: self.sim.now + 61,
                        window: 0,
                    };
                }
                assert_eq!(
                    self.sim.ws_upgrade(at, h.slot),
                    expected,
                    "upgrade accepted"
                );
            }
            Op::WsLogin { sel, id, period } => self.ws_login(sel, id, period),
            Op::WsFrame { sel } => {
                let Some((at, h)) = self.pick(false, sel) else {
                    return;
                };
                self.sim.ws_frame(at, h.slot);
                let now = self.sim.now;
                let life = self.lives.get_mut(&(at, h)).expect("a live connection");
                if life.stage == Stage::Online {
                    life.deadline = now + life.window + 1;
                }
            }
            Op::WsClose { sel } => {
                let Some((at, h)) = self.pick(false, sel) else {
                    return;
                };
                self.sim.ws_close(at, h.slot);
                self.model.close(at, h);
                self.lives.remove(&(at, h));
            }
            Op::UdpOpen { shard, port } => {
                let at = shard as usize % n;
                let (h, _) = self.sim.udp_open(at, addr(port));
                self.model.open(at, h);
                self.devices
                    .insert((at, h), (0, addr(port), self.sim.now + UTO + 1));
            }
            Op::UdpLogin { sel, id } => {
                let Some((at, h)) = self.pick(true, sel) else {
                    return;
                };
                let id = IDS[id as usize % 3];
                self.sim.udp_login(at, h.index(), id);
                self.login_model(at, h, id);
            }
            Op::UdpPacket {
                sel,
                shard,
                port,
                replay,
            } => self.packet(sel, shard, port, replay),
            Op::Tick { secs } => self.tick(u32::from(secs)),
            Op::Step { pick } => {
                self.sim.step(pick as usize);
            }
            Op::Relay { shard, id } => self.relay(shard as usize % n, IDS[id as usize % IDS.len()]),
            Op::UdpAddr { id } => self.udpaddr(IDS[id as usize % 3]),
            Op::Bind {
                device,
                user,
                bound,
            } => {
                let (device, user) = (IDS[device as usize % 3], [16, 32][user as usize % 2]);
                self.sim.bind(device, user, bound);
                if bound {
                    self.bindings.insert((device, user));
                } else {
                    self.bindings.remove(&(device, user));
                }
            }
            Op::Send { sel, udp, dst } => self.send(sel, udp, DSTS[dst as usize % DSTS.len()]),
            Op::Push { id } => {
                let id = IDS[id as usize % IDS.len()];
                self.drain();
                self.sim.delivered.clear();
                self.sim.push(&[id]);
                self.expect_delivered(&[id], &format!("a push to {id}"));
            }
        }
        self.check();
    }

    fn login_model(&mut self, at: usize, h: Handle, id: i64) {
        if let Some(old) = self.model.login(at, h, id, self.sim.cap) {
            self.devices.remove(&(at, old));
            self.lives.remove(&(at, old));
        }
    }

    fn ws_login(&mut self, sel: u8, id: u8, period: u8) {
        let Some((at, h)) = self.pick(false, sel) else {
            return;
        };
        let id = IDS[id as usize % IDS.len()];
        let period = PERIODS[period as usize % PERIODS.len()];
        let expected = self.lives[&(at, h)].stage == Stage::LoggingIn;
        assert_eq!(
            self.sim.ws_login(at, h.slot, id, period),
            expected,
            "login taken"
        );
        if !expected {
            return;
        }
        self.drain(); // the login waits for its directory acknowledgement
        let window = 3 * match period {
            0 => 150,
            p => p.min(300) as u32,
        };
        let life = Life {
            stage: Stage::Online,
            deadline: self.sim.now + window + 1,
            window,
        };
        self.lives.insert((at, h), life);
        self.login_model(at, h, id);
    }

    fn packet(&mut self, sel: u8, shard: u8, port: u8, replay: bool) {
        let Some((owner, h)) = self.pick(true, sel) else {
            return;
        };
        let at = shard as usize % self.n();
        let sid = self.sim.shards[owner]
            .udp
            .get(h.index())
            .expect("live")
            .sid
            .0;
        let (last, _, _) = self.devices[&(owner, h)];
        let seq = if replay { last } else { last + 1 };
        self.sim.packet(at, sid, seq, addr(port));
        self.drain(); // a handed-over packet reaches its owner
        if !replay {
            let deadline = self.sim.now + UTO + 1;
            self.devices.insert((owner, h), (seq, addr(port), deadline));
        }
    }

    fn tick(&mut self, secs: u32) {
        self.sim.tick(secs);
        let now = self.sim.now;
        let silent: Vec<(usize, Handle)> = self
            .lives
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(&k, _)| k)
            .collect();
        for (at, h) in silent {
            self.lives.remove(&(at, h));
            self.model.close(at, h);
        }
        let expired: Vec<(usize, Handle)> = self
            .devices
            .iter()
            .filter(|&(_, &(_, _, deadline))| deadline <= now)
            .map(|(&k, _)| k)
            .collect();
        for (at, h) in expired {
            self.devices.remove(&(at, h));
            self.model.close(at, h);
        }
    }

    fn relay(&mut self, from: usize, id: i64) {
        self.drain();
        self.sim.delivered.clear();
        self.sim.route(from, id);
        self.drain();
        self.expect_delivered(&[id], &format!("a message for {id} from shard {from}"));
    }

    fn send(&mut self, sel: u8, udp: bool, dst: i64) {
        let Some((at, h)) = self.pick(udp, sel) else {
            return;
        };
        let Some(id) = self.model.get(at, h).and_then(|r| r.id) else {
            return;
        };
        self.drain();
        self.sim.delivered.clear();
        self.sim.terminal_send(at, h, id, dst);
        self.drain();
        // The naive view: the sender's bound list is whatever the bindings say now.
        let bound = sim::granted_bound(&self.bindings, id);
        let mut ids = Vec::new();
        if id < 0 {
            edge_proto::id::device_destinations(dst, &bound, &mut ids);
        } else {
            edge_proto::id::phone_destinations(dst, &bound, &mut ids);
        }
        self.expect_delivered(&ids, &format!("{id} sending to {dst}"));
    }

    /// What the last relay, send or push reached is exactly every session of `ids`.
    fn expect_delivered(&self, ids: &[i64], what: &str) {
        let mut got = self.sim.delivered.clone();
        got.sort();
        let mut want: Vec<(usize, Handle)> = ids
            .iter()
            .flat_map(|&id| self.model.sessions_of(id))
            .collect();
        want.sort();
        assert_eq!(got, want, "{what} reached the wrong sessions");
    }

    fn udpaddr(&mut self, id: i64) {
        self.drain();
        let live: BTreeSet<SocketAddr> = self
            .model
            .sessions_of(id)
            .iter()
            .filter(|(_, h)| h.is_udp())
            .map(|k| self.devices[k].1)
            .collect();
        let answers: Vec<SocketAddr> = (0..self.n())
            .filter_map(|at| self.sim.device_addr(at, id))
            .collect();
        assert_eq!(
            answers.is_empty(),
            live.is_empty(),
            "udpaddr {id}: {answers:?} vs {live:?}"
        );
        for a in answers {
            assert!(
                live.contains(&a),
                "udpaddr {id} answered {a}, not a live session's address"
            );
        }
    }

    /// Every invariant, after every step.
    pub fn check(&mut self) {
        assert_eq!(self.sim.broken, 0, "the shell found the core inconsistent");
        for (at, shard) in self.sim.shards.iter().enumerate() {
            shard
                .core
                .sessions
                .check()
                .unwrap_or_else(|e| panic!("shard {at}: {e}"));
            shard
                .udp
                .check()
                .unwrap_or_else(|e| panic!("shard {at} UDP table: {e}"));
            let mut index: std::collections::BTreeMap<i64, BTreeSet<Handle>> = Default::default();
            for (id, holders) in shard.core.sessions.iter() {
                assert!(
                    holders.len() <= self.sim.cap,
                    "shard {at}: id {id} over the cap"
                );
                index.insert(id, holders.iter().copied().collect());
            }
            assert_eq!(
                index,
                self.model.index_of(at),
                "shard {at}: index differs from the model"
            );
            let (udp, ws) = (self.model.live_on(true, at), self.model.live_on(false, at));
            assert_eq!(shard.udp.len(), udp, "shard {at}: UDP sessions");
            assert_eq!(shard.ws.len(), ws, "shard {at}: connections");
        }
        for r in &self.model.records {
            let Some(id) = r.id else { continue };
            let mut have = self.sim.bound(r.shard, r.handle);
            have.sort();
            let want = sim::granted_bound(&self.bindings, id).to_vec();
            assert_eq!(have, want, "{:?} logged in as {id}: bound list", r.handle);
        }
        if self.sim.queues.iter().all(|q| q.is_empty()) {
            let mut masks = std::collections::BTreeMap::new();
            for shard in &self.sim.shards {
                for (key, mask) in shard.core.directory.iter() {
                    assert_eq!(
                        shard.core.dir_shard(key),
                        shard.core.index(),
                        "misplaced entry"
                    );
                    masks.insert(key, mask);
                }
            }
            assert_eq!(
                masks,
                self.model.masks(),
                "directory differs from the model"
            );
        }
    }
}
