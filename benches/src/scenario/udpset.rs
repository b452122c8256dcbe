//! A set of UDP device sessions spread over a few sockets: established with
//! 0xE0 → 0xE1 → 0xE2 (retrying lost datagrams), then driven by heartbeats or forwards.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::udpdev::{self, Reply};

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Setup step: 0 new session, 1 register, 2 login, 3 ready.
    pub step: u8,
    /// Session id.
    pub sid: [u8; 16],
    /// Device id from the register reply.
    pub device: i64,
    /// Cookie from the register reply.
    pub cookie: Vec<u8>,
    /// Last sequence number used.
    pub seq: u16,
    /// When the last request left (ns, `msg::now_ns`).
    pub sent_ns: u64,
    /// Requests in flight (heartbeats).
    pub inflight: u32,
    /// Unanswered tries of the current setup step.
    pub tries: u8,
}

/// Unanswered tries of a register or login before a device starts over with a new
/// session (0xE0), as devices in the field do (the original's reference client: 5 tries);
/// its session may have expired or been ended to make room.
const TRIES_BEFORE_RESTART: u8 = 5;

/// Sessions and their sockets; session `i` uses socket `i % sockets`.
pub struct UdpSet {
    /// Sockets (non-blocking, connected to the target).
    pub sockets: Vec<UdpSocket>,
    /// Sessions by index.
    pub sessions: Vec<Session>,
    /// Index of session 0 in request source ids.
    pub base: i64,
    /// The first few failures.
    pub notes: Vec<String>,
    /// Devices that started over with a new session during setup.
    pub restarts: u64,
}

impl UdpSet {
    /// `count` sessions over `sockets` sockets to `target`.
    pub fn new(
        target: SocketAddr,
        count: usize,
        sockets: usize,
        base: i64,
    ) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        for _ in 0..sockets.clamp(1, count.max(1)) {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(target)?;
            s.set_nonblocking(true)?;
            socks.push(s);
        }
        let s = Session {
            step: 0,
            sid: [0; 16],
            device: 0,
            cookie: Vec::new(),
            seq: 0,
            sent_ns: 0,
            inflight: 0,
            tries: 0,
        };
        Ok(Self {
            sockets: socks,
            sessions: vec![s; count],
            base,
            notes: Vec::new(),
            restarts: 0,
        })
    }

    /// Sends datagram `buf` for session `i` (errors counted as losses).
    pub fn send(&self, i: usize, buf: &[u8]) -> bool {
        self.sockets[i % self.sockets.len()].send(buf).is_ok()
    }

    /// Next sequence number of session `i` (never 0 after a wrap).
    pub fn next_seq(&mut self, i: usize) -> u16 {
        let s = &mut self.sessions[i];
        s.seq = if s.seq == u16::MAX { 1 } else { s.seq + 1 };
        s.seq
    }

    /// Drains every socket, calling `f(session index, reply or raw datagram)`.
    pub fn drain(
        &mut self,
        buf: &mut [u8],
        mut f: impl FnMut(&mut Self, Option<usize>, Option<Reply>, &[u8]),
    ) -> usize {
        let mut n = 0;
        for k in 0..self.sockets.len() {
            while let Ok(len) = self.sockets[k].recv(buf) {
                n += 1;
                let data = &buf[..len];
                let reply = udpdev::parse_reply(data);
                let idx = reply
                    .as_ref()
                    .and_then(|r| usize::try_from(r.index - self.base).ok())
                    .filter(|i| *i < self.sessions.len());
                f(self, idx, reply, data);
            }
        }
        n
    }

    /// Runs setup for every session until all are ready or `timeout`; returns how many are.
    pub fn establish(&mut self, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let retry_ns = 300_000_000;
        while Instant::now() < end {
            let now = crate::msg::now_ns();
            let mut waiting = 0;
            let mut sent = 0;
            for i in 0..self.sessions.len() {
                let s = &self.sessions[i];
                if s.step >= 3 {
                    continue;
                }
                waiting += 1;
                if (s.sent_ns != 0 && now - s.sent_ns < retry_ns) || sent >= 512 {
                    continue;
                }
                let idx = self.base + i as i64;
                let mac = udpdev::mac(idx as u64);
                if s.step > 0 && s.tries >= TRIES_BEFORE_RESTART {
                    self.sessions[i].step = 0;
                    self.restarts += 1;
                }
                self.sessions[i].tries += 1;
                let s = &self.sessions[i];
                match s.step {
                    0 => udpdev::new_session(&mut out, idx, mac),
                    1 => {
                        let (sid, seq) = (s.sid, self.next_seq(i));
                        udpdev::register(&mut out, idx, seq, &sid, mac);
                    }
                    _ => {
                        let (sid, cookie, seq) = (s.sid, s.cookie.clone(), self.next_seq(i));
                        udpdev::login(&mut out, idx, seq, &sid, mac, &cookie);
                    }
                }
                self.send(i, &out);
                self.sessions[i].sent_ns = now.max(1);
                sent += 1;
            }
            if waiting == 0 {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
            self.drain(&mut buf, |set, idx, reply, _| {
                let (Some(i), Some(r)) = (idx, reply) else {
                    return;
                };
                let s = &mut set.sessions[i];
                if r.status != 0 {
                    if set.notes.len() < 5 {
                        set.notes
                            .push(format!("command {:#x} status {}", r.msg_id, r.status));
                    }
                    return;
                }
                match (s.step, r.msg_id) {
                    (0, 0xE0) => s.sid = r.sid,
                    (1, 0xE1) => match udpdev::register_result(&r.body) {
                        Some((id, cookie)) => (s.device, s.cookie) = (id, cookie),
                        None => return,
                    },
                    (2, 0xE2) => {}
                    _ => return,
                }
                s.step += 1;
                s.tries = 0;
                s.sent_ns = 0;
            });
        }
        self.sessions.iter().filter(|s| s.step >= 3).count()
    }

    /// Sends one heartbeat for every ready session (keeps idle sessions alive).
    pub fn heartbeat_all(&mut self) {
        let mut out = Vec::new();
        for i in 0..self.sessions.len() {
            if self.sessions[i].step < 3 {
                continue;
            }
            let (sid, dev, seq) = (
                self.sessions[i].sid,
                self.sessions[i].device,
                self.next_seq(i),
            );
            udpdev::heartbeat(&mut out, self.base + i as i64, seq, &sid, dev);
            self.send(i, &out);
        }
        let mut buf = vec![0u8; 2048];
        std::thread::sleep(Duration::from_millis(50));
        self.drain(&mut buf, |_, _, _, _| {});
    }
}
