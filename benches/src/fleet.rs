//! A fleet: many [`Client`]s on one thread and one epoll set. Opens connections (with a
//! bound on how many are mid-handshake), pumps reads and writes, and reports frames to the
//! scenario by token (the index of the client in the fleet).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_proto::ws::OpCode;

use crate::poller::{Poller, READ, WRITE};
use crate::wsclient::{Client, Phase};

/// One connection slot.
struct Slot {
    client: Client,
    interest: u32,
    ready: bool,
}

/// Many clients on one epoll set.
pub struct Fleet {
    poller: Poller,
    slots: Vec<Option<Slot>>,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
    /// Clients logged in.
    pub ready: usize,
    /// Clients that failed or were closed.
    pub failed: usize,
    /// The first few failure reasons.
    pub errors: Vec<String>,
    /// Clients not yet logged in and not failed.
    pub pending: usize,
    /// Receive buffer of sockets opened from now on (`None`: the kernel's default).
    pub recv_buffer: Option<usize>,
    /// TLS for connections opened from now on (`wss://` targets).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            poller: Poller::new(1024)?,
            slots: Vec::new(),
            dirty: Vec::new(),
            scratch: vec![0; 256 * 1024],
            ready: 0,
            failed: 0,
            errors: Vec::new(),
            pending: 0,
            recv_buffer: None,
            tls: None,
        })
    }

    /// Starts a connection that logs in as `id`; returns its token.
    pub fn open(&mut self, addr: SocketAddr, id: i64, salt: &[u8], heartbeat_s: u64) -> usize {
        let token = self.slots.len();
        let login = crate::wsclient::login_string(id, heartbeat_s, salt);
        let client = Client::connect_with(addr, login, self.recv_buffer);
        let client = match &self.tls {
            Some(config) => client.and_then(|c| c.with_tls(config)),
            None => client,
        };
        match client {
            Ok(client) => {
                let ok = self.poller.add(client.fd(), token as u64, READ | WRITE);
                self.slots.push(Some(Slot {
                    client,
                    interest: READ | WRITE,
                    ready: false,
                }));
                self.pending += 1;
                if let Err(e) = ok {
                    self.fail(token, format!("epoll: {e}"));
                }
            }
            Err(e) => {
                self.slots.push(None);
                self.failed += 1;
                self.note(format!("connect: {e}"));
            }
        }
        token
    }

    /// Number of tokens handed out.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no token was handed out.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `token` is still open (connecting, logging in or logged in).
    pub fn is_open(&self, token: usize) -> bool {
        matches!(self.slots.get(token), Some(Some(_)))
    }

    /// Closes `token` (RST) without counting it as a failure.
    pub fn close(&mut self, token: usize) {
        if let Some(slot) = self.slots.get_mut(token).and_then(Option::take) {
            self.poller.delete(slot.client.fd());
            if slot.ready {
                self.ready -= 1;
            } else {
                self.pending -= 1;
            }
        }
    }

    /// Whether `token` is logged in and open.
    pub fn is_ready(&self, token: usize) -> bool {
        matches!(self.slots.get(token), Some(Some(s)) if s.ready)
    }

    fn note(&mut self, why: String) {
        if self.errors.len() < 5 {
            self.errors.push(why);
        }
    }

    fn fail(&mut self, token: usize, why: String) {
        if let Some(slot) = self.slots.get_mut(token).and_then(Option::take) {
            self.poller.delete(slot.client.fd());
            if slot.ready {
                self.ready -= 1;
            } else {
                self.pending -= 1;
            }
            self.failed += 1;
            self.note(why);
        }
    }

    /// Queues a data frame on `token` (sent by [`Fleet::flush`]). Ignored if not ready.
    pub fn queue(&mut self, token: usize, opcode: OpCode, payload: &[u8]) -> bool {
        match self.slots.get_mut(token) {
            Some(Some(slot)) if slot.ready => {
                if slot.client.codec.wbuf.is_empty() {
                    self.dirty.push(token);
                }
                slot.client.codec.send(opcode, payload);
                true
            }
            _ => false,
        }
    }

    /// Bytes queued on `token` and not yet written.
    pub fn backlog(&self, token: usize) -> usize {
        match self.slots.get(token) {
            Some(Some(slot)) => slot.client.codec.wbuf.len(),
            _ => 0,
        }
    }

    /// Writes queued frames; sockets that do not take everything wait for writability.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            self.flush_one(token);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn flush_one(&mut self, token: usize) {
        let Some(Some(slot)) = self.slots.get_mut(token) else {
            return;
        };
        match slot.client.flush() {
            Ok(done) => {
                let want = if done { READ } else { READ | WRITE };
                if want != slot.interest {
                    slot.interest = want;
                    let _ = self.poller.modify(slot.client.fd(), token as u64, want);
                }
            }
            Err(e) => self.fail(token, format!("write: {e}")),
        }
    }

    /// Closes every client (RST, no TIME_WAIT) and forgets them.
    pub fn close_all(&mut self) {
        for slot in self.slots.drain(..).flatten() {
            self.poller.delete(slot.client.fd());
        }
        self.ready = 0;
        self.pending = 0;
        self.dirty.clear();
    }

    /// Waits up to `timeout_ms` for readiness and handles it; `on_message(token, op, payload)`
    /// sees every data frame of logged-in clients; `on_ready(token)` each new login.
    pub fn poll(
        &mut self,
        timeout_ms: i32,
        mut on_message: impl FnMut(usize, OpCode, &[u8]),
        mut on_ready: impl FnMut(usize),
    ) -> anyhow::Result<()> {
        let events = self.poller.wait(timeout_ms)?;
        for ev in events {
            let token = ev.token as usize;
            let Some(Some(slot)) = self.slots.get_mut(token) else {
                continue;
            };
            if ev.writable
                && let Err(e) = slot.client.on_writable("127.0.0.1")
            {
                self.fail(token, format!("connect: {e}"));
                continue;
            }
            if ev.readable {
                let Some(Some(slot)) = self.slots.get_mut(token) else {
                    continue;
                };
                match slot
                    .client
                    .on_readable(&mut self.scratch, |op, p| on_message(token, op, p))
                {
                    Ok(true) => {}
                    Ok(false) => {
                        let why = match &slot.client.codec.phase {
                            Phase::Closed(why) => why.clone(),
                            _ => "closed by server".to_string(),
                        };
                        self.fail(token, why);
                        continue;
                    }
                    Err(e) => {
                        self.fail(token, format!("read: {e}"));
                        continue;
                    }
                }
            }
            let Some(Some(slot)) = self.slots.get_mut(token) else {
                continue;
            };
            match &slot.client.codec.phase {
                Phase::Closed(why) => {
                    let why = why.clone();
                    self.fail(token, why);
                    continue;
                }
                Phase::Ready if !slot.ready => {
                    slot.ready = true;
                    self.ready += 1;
                    self.pending -= 1;
                    on_ready(token);
                }
                _ => {}
            }
            if !slot.client.codec.wbuf.is_empty() || slot.client.wants_write() {
                self.flush_one(token);
            } else if slot.interest != READ && slot.client.codec.phase != Phase::Connecting {
                slot.interest = READ;
                let _ = self.poller.modify(slot.client.fd(), token as u64, READ);
            }
        }
        Ok(())
    }

    /// Polls until nothing is pending or `timeout` passes; frames are ignored.
    pub fn settle(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        while self.pending > 0 && Instant::now() < end {
            self.poll(10, |_, _, _| {}, |_| {})?;
        }
        Ok(())
    }
}

/// Opens `ids` in order keeping at most `window` mid-handshake, alternating over `addrs`;
/// returns when all are settled or `timeout` passes. Returns the token of each id.
pub fn open_all(
    fleet: &mut Fleet,
    addrs: &[SocketAddr],
    ids: &[i64],
    salt: &[u8],
    window: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<usize>> {
    let end = Instant::now() + timeout;
    let mut tokens = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        while fleet.pending >= window.max(1) && Instant::now() < end {
            fleet.poll(10, |_, _, _| {}, |_| {})?;
        }
        tokens.push(fleet.open(addrs[i % addrs.len()], id, salt, 300));
    }
    fleet.settle(end.saturating_duration_since(Instant::now()))?;
    Ok(tokens)
}
