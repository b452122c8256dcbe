//! The msgbus routing core, sans-IO: comet links, the user map, and what to do with each
//! upstream frame (docs/protocol.md §8.4, §7.3), with the original's bugs fixed.
//!
//! Feed it [`Input`]s with [`Router::handle_input`], then drain [`Router::poll_output`]
//! until `None`. It owns the user map (from `PubKey` events and `Host:*` reloads), the
//! comet links by name (the comet's IP) and kind, and the routing decision:
//!
//! * positive ids are grouped per comet holding them: one frame per comet carrying only
//!   its ids (docs/protocol.md §8.4);
//! * negative ids (devices) go to the comet(s) holding the device, with the ids written
//!   (the original sent them to a random UDP comet with zeroed ids); only a device no
//!   comet is known to hold falls back to one UDP comet, chosen by the id so it is stable
//!   (UDP sessions live in Redis, any UDP comet can deliver), if enabled;
//! * ids whose holder has no link right now (the msgbus just restarted and that comet has
//!   not dialled back yet) are parked for it, bounded (frames and bytes), and sent when its
//!   link comes up, or
//!   dropped after [`RouterConfig::park_ms`] (the original dropped them at once);
//! * an upload (`src < 0`, not a forward packet) becomes an [`Upload`] carrying the
//!   resealed ACK, which comes back as [`Input::Uploaded`] once a broker confirmed it or
//!   it was spooled, and is then routed to the comet holding the device.
//!
//! Does **not** do IO, read the clock ([`Input::Tick`] brings the time), lock or spawn; it
//! never blocks. It does not know sockets (links are opaque [`LinkId`]s), Redis, RabbitMQ,
//! or queue depths: the shell counts what it could not deliver.

use edge_proto::frame::{DIRECT_DATA_OFFSET, DIRECT_MIN_LEN, DataHeader, seal};
use edge_proto::link::{CometKind, Downstream, Upstream};
use edge_proto::pubsub::PubKeyEvent;
use std::collections::{HashMap, VecDeque};

use super::parked::Parked;
use super::stats::{DropReason, RouteStats};
use super::usermap::{NameId, Names, UserMap};

/// A comet link, named by the shell (unique for the process's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// Router settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    /// Send a device no comet is known to hold to one UDP comet (original UDP comets do
    /// not publish device online events).
    pub udp_fallback: bool,
    /// Most comet names remembered.
    pub names_max: usize,
    /// How long frames wait for a comet that holds their ids but has no link, ms.
    pub park_ms: u64,
    /// Most frames parked in all.
    pub park_max: usize,
    /// Most bytes parked in all.
    pub park_max_bytes: usize,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// A comet finished its handshake on `link`, from address `name`.
    CometUp {
        /// The link.
        link: LinkId,
        /// The comet's remote IP.
        name: &'a str,
        /// Its handshake kind.
        kind: CometKind,
    },
    /// The link closed.
    CometDown {
        /// The link.
        link: LinkId,
    },
    /// A payload (without length prefix) from a comet.
    Upstream {
        /// The link it came on.
        link: LinkId,
        /// The payload.
        payload: &'a [u8],
    },
    /// A `PubKey` payload.
    PubKey(&'a [u8]),
    /// The whole online state from `Host:*`: `(comet name, ids)`; replaces the user map.
    Reload(&'a [(String, Vec<i64>)]),
    /// An upload was confirmed (or spooled): send its ACK to the device.
    Uploaded {
        /// The device.
        src: i64,
        /// The link the upload came on (used when no comet is known to hold the device).
        origin: LinkId,
        /// The ACK message.
        ack: &'a [u8],
    },
    /// The time (monotonic, ms): parked frames older than `park_ms` are dropped.
    Tick {
        /// Now.
        now_ms: u64,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue a whole downstream frame (length prefix included) on `link`.
    Send {
        /// The comet link.
        link: LinkId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Publish an upload to RabbitMQ.
    Upload(Upload),
}

/// A device message for RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Message id (u16 at byte 28): the routing key, in decimal.
    pub msg_id: u16,
    /// The message, from the frame header on.
    pub message: Vec<u8>,
    /// The device.
    pub src: i64,
    /// The link it came on.
    pub origin: LinkId,
    /// The ACK for the device (data-header ACK bit set, checks resealed), if it seals.
    pub ack: Option<Vec<u8>>,
}

/// One comet name's links, newest last (a comet that reconnects before its old link is
/// noticed dead has two for a while).
#[derive(Debug, Clone, Default)]
struct NameLinks {
    ws: Vec<LinkId>,
    udp: Vec<LinkId>,
}

/// The routing state machine.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    names: Names,
    users: UserMap,
    by_name: Vec<NameLinks>,
    links: HashMap<LinkId, (NameId, CometKind)>,
    udp_links: Vec<LinkId>,
    groups: Vec<(LinkId, Vec<i64>)>,
    /// Ids of the frame being routed whose holder has no link, by holder (emptied by
    /// `emit_groups`).
    waiting: Vec<(NameId, Vec<i64>)>,
    parked: Parked,
    now_ms: u64,
    out: VecDeque<Output>,
    stats: RouteStats,
}

// === Router ===

impl Router {
    /// An empty router.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            names: Names::new(config.names_max),
            users: UserMap::default(),
            by_name: Vec::new(),
            links: HashMap::new(),
            udp_links: Vec::new(),
            groups: Vec::new(),
            waiting: Vec::new(),
            parked: Parked::new(config.park_max, config.park_max_bytes),
            now_ms: 0,
            out: VecDeque::new(),
            stats: RouteStats::default(),
        }
    }

    /// Applies one input; then drain [`Router::poll_output`].
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::CometUp { link, name, kind } => self.on_comet_up(link, name, kind),
            Input::CometDown { link } => self.on_comet_down(link),
            Input::Upstream { link, payload } => self.on_upstream(link, payload),
            Input::PubKey(payload) => self.on_pubkey(payload),
            Input::Reload(snapshot) => self.on_reload(snapshot),
            Input::Uploaded { src, origin, ack } => self.on_uploaded(src, origin, ack),
            Input::Tick { now_ms } => self.on_tick(now_ms),
        }
        self.stats.parked = self.parked.len() as u64;
        self.stats.parked_bytes = self.parked.bytes() as u64;
        self.debug_assert_invariants();
    }

    /// The next thing to do; call after every [`Router::handle_input`] until `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The counters.
    pub fn stats(&self) -> &RouteStats {
        &self.stats
    }

    /// Live links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The user map (ids → comet names).
    pub fn user_map(&self) -> impl Iterator<Item = (i64, Vec<&str>)> + '_ {
        self.users.iter().map(|(id, holders)| {
            let names = holders.iter().filter_map(|n| self.names.name(*n)).collect();
            (id, names)
        })
    }

    /// Number of ids in the user map.
    pub fn user_map_len(&self) -> usize {
        self.users.len()
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let expired = self
            .parked
            .expire(now_ms.saturating_sub(self.config.park_ms));
        self.stats.drop_n(DropReason::CometNotLinked, expired);
    }

    fn on_comet_up(&mut self, link: LinkId, name: &str, kind: CometKind) {
        let Some(name_id) = self.intern(name) else {
            return;
        };
        self.on_comet_down(link);
        self.links.insert(link, (name_id, kind));
        let slot = &mut self.by_name[name_id as usize];
        match kind {
            CometKind::Ws => slot.ws.push(link),
            CometKind::Udp => {
                slot.udp.push(link);
                if let Err(at) = self.udp_links.binary_search(&link) {
                    self.udp_links.insert(at, link);
                }
            }
        }
        for frame in self.parked.take(name_id) {
            self.stats.downstream_queued += 1;
            self.out.push_back(Output::Send { link, frame });
        }
    }

    fn on_comet_down(&mut self, link: LinkId) {
        let Some((name, _)) = self.links.remove(&link) else {
            return;
        };
        if let Some(slot) = self.by_name.get_mut(name as usize) {
            slot.ws.retain(|l| *l != link);
            slot.udp.retain(|l| *l != link);
        }
        self.udp_links.retain(|l| *l != link);
    }

    fn on_pubkey(&mut self, payload: &[u8]) {
        let Ok(event) = PubKeyEvent::parse(payload) else {
            self.stats.drop(DropReason::BadPubKey);
            return;
        };
        self.stats.pubkey_events += 1;
        if event.is_reset() {
            if let Some(name) = self.names.get(event.comet) {
                self.users.reset(name);
                self.collect_names();
            }
            return;
        }
        if event.online {
            if let Some(name) = self.intern(event.comet) {
                self.users.online(event.id, name);
            }
        } else if let Some(name) = self.names.get(event.comet) {
            self.users.offline(event.id, name);
        }
    }

    fn on_reload(&mut self, snapshot: &[(String, Vec<i64>)]) {
        self.stats.reloads += 1;
        self.users.clear();
        self.collect_names();
        for (comet, ids) in snapshot {
            let Some(name) = self.intern(comet) else {
                continue;
            };
            for id in ids {
                self.users.online(*id, name);
            }
        }
    }

    fn on_upstream(&mut self, link: LinkId, payload: &[u8]) {
        self.stats.upstream_in += 1;
        let Ok(up) = Upstream::decode(payload) else {
            self.stats.drop(DropReason::BadPayload);
            return;
        };
        for group in &mut self.groups {
            group.1.clear();
        }
        for id in up.ids.iter() {
            self.place(id);
        }
        self.emit_groups(up.message);
        if up.src < 0 && up.message.first().is_some_and(|b| b & 7 != 3) {
            self.on_upload(link, up.src, up.message);
        }
    }

    fn on_upload(&mut self, origin: LinkId, src: i64, message: &[u8]) {
        if message.len() < DIRECT_MIN_LEN {
            self.stats.drop(DropReason::UploadTooShort);
            return;
        }
        let Ok(data) = DataHeader::decode(&message[DIRECT_DATA_OFFSET..]) else {
            self.stats.drop(DropReason::UploadTooShort);
            return;
        };
        let ack = device_ack(message);
        if ack.is_none() {
            self.stats.drop(DropReason::AckUnsealable);
        }
        self.stats.uploads += 1;
        self.out.push_back(Output::Upload(Upload {
            msg_id: data.msg_id,
            message: message.to_vec(),
            src,
            origin,
            ack,
        }));
    }

    fn on_uploaded(&mut self, src: i64, origin: LinkId, ack: &[u8]) {
        for group in &mut self.groups {
            group.1.clear();
        }
        let placed = self.place_quiet(src);
        if !placed {
            if self.links.contains_key(&origin) {
                self.add_to_group(origin, src);
            } else {
                self.stats.drop(DropReason::AckUnroutable);
                return;
            }
        }
        self.emit_groups(ack);
    }

    /// Adds `id` to the group of every link that should get it, counting a drop if none.
    fn place(&mut self, id: i64) {
        if id == 0 {
            self.stats.drop(DropReason::ZeroId);
            return;
        }
        let (placed, parked) = self.group_id(id, true);
        if !placed && !parked {
            self.stats.drop(DropReason::NoHolder);
        }
    }

    /// Adds `id` to its links' groups; false if there is none.
    fn place_quiet(&mut self, id: i64) -> bool {
        self.group_id(id, false).0
    }

    /// Adds `id` to the group of the link of each comet holding it (a holder with no link
    /// to `waiting`, when `park`); a device no comet holds, to one UDP link (the fallback).
    /// Returns (grouped, parked). One lookup in the user map: this runs per id per frame.
    fn group_id(&mut self, id: i64, park: bool) -> (bool, bool) {
        let holders = self.users.holders(id);
        let (mut placed, mut parked) = (false, false);
        for &name in holders {
            match link_for(&self.by_name, name, id) {
                Some(link) => {
                    push_grouped(&mut self.groups, link, id);
                    placed = true;
                }
                None if park => {
                    push_grouped(&mut self.waiting, name, id);
                    parked = true;
                }
                None => {}
            }
        }
        if holders.is_empty() && id < 0 && self.config.udp_fallback && !self.udp_links.is_empty() {
            let at = (id.unsigned_abs() % self.udp_links.len() as u64) as usize;
            push_grouped(&mut self.groups, self.udp_links[at], id);
            self.stats.udp_fallback += 1;
            placed = true;
        }
        (placed, parked)
    }

    fn add_to_group(&mut self, link: LinkId, id: i64) {
        push_grouped(&mut self.groups, link, id);
    }

    fn emit_groups(&mut self, message: &[u8]) {
        for (link, ids) in &mut self.groups {
            if let Some(frame) = downstream_frame(ids, message) {
                self.stats.downstream_queued += 1;
                self.out.push_back(Output::Send { link: *link, frame });
            }
        }
        for (name, ids) in &mut self.waiting {
            if let Some(frame) = downstream_frame(ids, message) {
                let dropped = self.parked.park(*name, self.now_ms, frame);
                self.stats.drop_n(DropReason::CometNotLinked, dropped);
            }
            ids.clear();
        }
        // Keep the group lists short: links and names come and go.
        self.groups
            .retain(|(link, _)| self.links.contains_key(link));
        self.groups.truncate(64);
        self.waiting.truncate(64);
    }

    fn intern(&mut self, name: &str) -> Option<NameId> {
        let id = self.names.intern(name).or_else(|| {
            self.collect_names();
            self.names.intern(name)
        });
        let Some(id) = id else {
            self.stats.drop(DropReason::TooManyComets);
            return None;
        };
        if self.by_name.len() <= id as usize {
            self.by_name
                .resize_with(id as usize + 1, NameLinks::default);
        }
        Some(id)
    }

    /// Forgets names that no id and no link refers to.
    fn collect_names(&mut self) {
        let mut used = vec![false; self.names.capacity()];
        self.users.mark_names(&mut used);
        self.parked.mark_names(&mut used);
        for (name, _) in self.links.values() {
            if let Some(flag) = used.get_mut(*name as usize) {
                *flag = true;
            }
        }
        self.names
            .retain(|id| used.get(id as usize).copied().unwrap_or(false));
    }

    fn debug_assert_invariants(&self) {
        debug_assert!(self.names.len() <= self.config.names_max);
        debug_assert_eq!(
            self.udp_links.len(),
            self.links
                .values()
                .filter(|(_, k)| *k == CometKind::Udp)
                .count()
        );
        debug_assert!(self.users.iter().all(|(_, h)| !h.is_empty()));
    }
}

/// The newest link of comet `name` for `id`: phones prefer WS, devices UDP.
fn link_for(by_name: &[NameLinks], name: NameId, id: i64) -> Option<LinkId> {
    let slot = by_name.get(name as usize)?;
    let (first, second) = if id < 0 {
        (&slot.udp, &slot.ws)
    } else {
        (&slot.ws, &slot.udp)
    };
    first.last().or(second.last()).copied()
}

/// Adds `id` to the group of `key`, starting one if there is none.
fn push_grouped<K: PartialEq>(groups: &mut Vec<(K, Vec<i64>)>, key: K, id: i64) {
    match groups.iter_mut().find(|(k, _)| *k == key) {
        Some((_, ids)) => ids.push(id),
        None => groups.push((key, vec![id])),
    }
}

/// The downstream frame of `message` for `ids` (sorted, deduplicated); `None` when there
/// are none or it does not encode.
fn downstream_frame(ids: &mut Vec<i64>, message: &[u8]) -> Option<Vec<u8>> {
    if ids.is_empty() {
        return None;
    }
    ids.sort_unstable();
    ids.dedup();
    let mut frame = Vec::new();
    Downstream::write(&mut frame, ids, message).ok()?;
    Some(frame)
}

/// The ACK for an uploaded direct packet: data-header byte 0 (message byte 24) gets the
/// ACK bit and both checks are recomputed; `None` if the message does not seal.
pub fn device_ack(message: &[u8]) -> Option<Vec<u8>> {
    let mut ack = message.to_vec();
    *ack.get_mut(DIRECT_DATA_OFFSET)? |= edge_proto::frame::DATA_ACK;
    seal(&mut ack).ok()?;
    Some(ack)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
