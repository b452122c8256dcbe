//! What the tokio peer's threads share: the commands one thread sends another ([`Cmd`]),
//! each thread's counters, and [`Shared`] (the salt, the inboxes, the mobile-id slots — the
//! one mutex, taken on login only). One thread's own state is [`super::Hub`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use tokio::sync::{mpsc, oneshot};

/// A map keyed by ids or addresses clients choose: keyed hash (as cloudsocket's).
pub type Map<K, V> = HashMap<K, V, RandomState>;

/// What one thread sends another.
#[derive(Debug)]
pub enum Cmd {
    /// Deliver a message to this thread's sessions of `id`.
    Deliver {
        /// Session key.
        id: i64,
        /// The message (shared by every thread it goes to).
        payload: Arc<[u8]>,
    },
    /// Deliver a message to a UDP device (thread 0 only).
    Udp {
        /// Device id.
        device: i64,
        /// The message.
        payload: Arc<[u8]>,
    },
    /// Thread `from` holds a session of `id` now; acknowledge once applied.
    Join {
        /// Session key.
        id: i64,
        /// The joining thread.
        from: usize,
        /// Answered once the directory knows.
        ack: oneshot::Sender<()>,
    },
    /// Thread `from` holds no session of `id` any more.
    Leave {
        /// Session key.
        id: i64,
        /// The thread.
        from: usize,
    },
    /// A UDP device logged in on thread 0.
    UdpJoin {
        /// Device id.
        id: i64,
    },
    /// Bind (`on`) or unbind a device and a user; acknowledge once applied.
    Bind {
        /// Device id.
        device: i64,
        /// User id.
        user: i64,
        /// Bind or unbind.
        on: bool,
        /// Answered once applied.
        ack: oneshot::Sender<()>,
    },
}

/// One thread's counters, summed only when `/stat` reads them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// WebSocket sessions logged in.
    pub online: AtomicU64,
    /// Messages in.
    pub msgs_in: AtomicU64,
    /// Messages out.
    pub msgs_out: AtomicU64,
    /// Messages dropped (full outbox or inbox).
    pub dropped: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What every thread shares: configuration, the inboxes, the counters and the mobile slots.
#[derive(Debug)]
pub struct Shared {
    /// Login salt.
    pub salt: Vec<u8>,
    /// Every thread's inbox, by thread index.
    pub inboxes: Vec<mpsc::Sender<Cmd>>,
    /// Every thread's counters, by thread index.
    pub counters: Vec<Counters>,
    mobiles: Mutex<Map<i64, u16>>,
}

impl Shared {
    /// Shared state for `inboxes.len()` threads.
    pub fn new(salt: Vec<u8>, inboxes: Vec<mpsc::Sender<Cmd>>) -> Self {
        Self {
            salt,
            counters: inboxes.iter().map(|_| Counters::default()).collect(),
            inboxes,
            mobiles: Mutex::default(),
        }
    }

    /// Takes a free mobile slot k (1..=15) of `user` (on login only).
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

    /// A counter summed over the threads.
    pub fn sum(&self, pick: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.counters
            .iter()
            .map(|c| pick(c).load(Ordering::Relaxed))
            .sum()
    }
}
