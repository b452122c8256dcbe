//! The messages between the edge's shards and the bus sidecar, over bounded
//! `crossbeam-channel`s: owned data moved by value, no shared mutable state. The enums
//! are closed: a new kind of work is a new variant, handled where the compiler points.
//!
//! The sidecar wakes a shard through [`Wake`] after each send (the shard parks on one
//! eventfd and never polls a channel in a loop).

use std::sync::Arc;

pub use crate::frames::RouteBatch;

/// Names a connection across threads: shard, slot and the slot's generation (a reply for
/// a connection that has since closed finds a different generation and is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The shard that owns the connection.
    pub shard: u16,
    /// Slot index in that shard's connection slab.
    pub slot: u32,
    /// The slot's generation when the reference was made.
    pub generation: u32,
}

/// What a message delivered to terminals carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes relayed unchanged (terminal → terminal, server-built status messages).
    Raw(Vec<u8>),
    /// A push (docs/protocol.md §7.1): a direct message with this message id, built per destination id
    /// (the destination field is the id it is delivered to).
    Push {
        /// Message id of the built direct message.
        msg_id: u16,
        /// The body, shared by every destination.
        body: Arc<[u8]>,
    },
}

/// What the bus granted a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginGrant {
    /// The session id: the mobile id (user + k) for phones, the device id for devices.
    pub session: i64,
    /// Phones: the mobile sub-id k (1..=15) allocated; devices: 0.
    pub mobile: u8,
    /// Phones: the devices of the user; devices: the users (base ids) of the device.
    pub bound: Vec<i64>,
}

/// Shard → bus sidecar.
#[derive(Debug)]
pub enum ToBus {
    /// Allocate what a login needs (mobile id, bound list) for terminal `id`.
    Login {
        /// The connection waiting for the answer.
        conn: ConnRef,
        /// The login id (user id for phones, device id for devices).
        id: i64,
    },
    /// A session ended: release what its login took.
    Logout {
        /// The session id (mobile id for phones, device id for devices).
        session: i64,
    },
    /// Cluster mode: relay a message through a msgbus (docs/protocol.md §8.4), as the
    /// upstream frame the shard wrote (`Upstream::write`: length prefix, `src`, the ids,
    /// already filtered by the sender's rules, and the message unchanged). One buffer from
    /// the shard to the link's socket.
    Relay {
        /// The sender's session id (also in the frame).
        src: i64,
        /// The whole upstream frame.
        frame: Vec<u8>,
    },
    /// Cluster mode: a UDP session changed; write it behind to Redis (`sess:dev:*`),
    /// coalesced per sid.
    UdpSession(UdpSessionState),
    /// Cluster mode: a UDP session ended (expired): its keys may be deleted.
    UdpSessionGone {
        /// The session id text key material (16 raw bytes).
        sid: [u8; 16],
        /// The device id (0 if it never logged in).
        device: i64,
    },
    /// A device message for the data consumers (docs/protocol.md §7.3): store it, then ack the device.
    Upload {
        /// The device's connection (its ack goes there).
        conn: ConnRef,
        /// The device id.
        src: i64,
        /// The message, unchanged.
        message: Vec<u8>,
    },
}

impl ToBus {
    /// A [`ToBus::Relay`] of `message` from `src` to `ids`, its upstream frame written;
    /// `None` when it does not encode (over 65 535 ids).
    pub fn relay(src: i64, ids: &[i64], message: &[u8]) -> Option<ToBus> {
        let frame = upstream_frame(src, ids, message)?;
        Some(ToBus::Relay { src, frame })
    }
}

/// The upstream link frame (length prefix included) of `message` from `src` to `ids`;
/// `None` when it does not encode (over 65 535 ids).
pub(crate) fn upstream_frame(src: i64, ids: &[i64], message: &[u8]) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    edge_proto::link::Upstream::write(&mut frame, src, ids, message).ok()?;
    Some(frame)
}

/// What arrives in a shard's inbox: from the bus sidecar, the platform workers, the
/// status endpoints and the node itself (shutdown). (Shard → shard goes over the mesh.)
#[derive(Debug)]
pub enum ToShard {
    /// The answer to a [`ToBus::Login`].
    LoginDone {
        /// The connection that asked.
        conn: ConnRef,
        /// The grant, or the reply code to refuse with.
        result: Result<LoginGrant, u8>,
    },
    /// The upload was stored: send this ack to the device.
    UploadAck {
        /// The device's connection.
        conn: ConnRef,
        /// The ack bytes (the message with the ACK flag set).
        ack: Vec<u8>,
    },
    /// A binding changed: update live sessions; the status goes out from shard 0 only.
    Binding {
        /// The device.
        device: i64,
        /// The (base) user.
        user: i64,
        /// Bound (true) or unbound (false).
        bound: bool,
    },
    /// Deliver to every local session of these ids (pushes are broadcast to all shards,
    /// each delivers what it holds).
    Deliver {
        /// Destination ids (already expanded).
        ids: Arc<[i64]>,
        /// What to deliver.
        payload: Payload,
    },
    /// The device platform answered a UDP session's call.
    Platform {
        /// The UDP session that asked.
        conn: ConnRef,
        /// The answer.
        answer: PlatformAnswer,
    },
    /// Cluster mode: the frames of one msgbus read whose directory keys this shard holds
    /// (see [`route_key`], [`dir_shard`]): for each, find the local sessions of its ids
    /// on every shard and deliver. One buffer per read, not per frame.
    Routes(RouteBatch),
    /// Password changed (`PubModifiedPasswdUser`): send status 13 to the user's phones on
    /// this shard and close them.
    Kick {
        /// The base user id.
        user: i64,
    },
    /// `udpaddr`: where is this device's UDP session? The shard answers from its own
    /// session table (`None` when it holds none).
    AddrQuery {
        /// The device id.
        device: i64,
        /// Where the answer goes.
        reply: crossbeam_channel::Sender<Option<std::net::SocketAddr>>,
    },
    /// Stop accepting, close terminals with 1001, flush, and end the shard.
    Shutdown,
    /// A step of a zero-downtime upgrade (issue 15).
    Upgrade(Upgrade),
}

/// A shard's state as an upgrade wrote it.
#[derive(Debug, Default)]
pub struct Frozen {
    /// The handover stream (`edge_proto::handover`).
    pub stream: Vec<u8>,
    /// The raw descriptors its records name by index (still the shard's).
    pub fds: Vec<i32>,
    /// WebSocket connections in it.
    pub connections: usize,
    /// UDP sessions in it.
    pub udp_sessions: usize,
}

/// An upgrade's requests to a shard, in order: quiesce, freeze, then (only if the new
/// process failed) resume.
#[derive(Debug)]
pub enum Upgrade {
    /// Stop reading sockets and accepting; keep taking the inbox and the mesh (answers
    /// and relays already on their way). Answers once done.
    Quiesce {
        /// Told when the shard is quiet.
        done: crossbeam_channel::Sender<()>,
    },
    /// Write the handover stream (`edge_proto::handover`) and the descriptors its
    /// records name by index; then touch nothing until resumed or ended.
    Freeze {
        /// Gets the stream and the raw descriptors (still owned by the shard).
        reply: crossbeam_channel::Sender<Frozen>,
    },
    /// The new process confirmed: write the messages held since the freeze that it can
    /// deliver (kept, for a resume should the upgrade still fail).
    Release {
        /// Whether pushes the bus sent each shard are forwarded (embedded mode); in
        /// cluster mode the new process subscribed to them itself.
        pushes: bool,
        /// Gets them.
        reply: crossbeam_channel::Sender<Released>,
    },
    /// The new process failed: serve again, reading every socket for what arrived.
    Resume,
}

/// The messages a frozen shard held, as an upgrade forwards them.
#[derive(Debug, Default)]
pub struct Released {
    /// A handover stream of `Relay` records.
    pub stream: Vec<u8>,
    /// Messages in it.
    pub forwarded: usize,
    /// Messages held that are not forwarded (answers to what was closed at the freeze, a
    /// push the new process gets itself, datagrams): counted, not delivered.
    pub dropped: usize,
}

/// What Redis keeps of a UDP session (docs/protocol.md §9.3, `sess:dev:<sid>` JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSessionState {
    /// The 16 raw sid bytes.
    pub sid: [u8; 16],
    /// The device id (0 before login).
    pub device: i64,
    /// The device's address.
    pub addr: std::net::SocketAddr,
    /// Unix time of the last accepted packet, nanoseconds.
    pub last_heartbeat_unix_nanos: u128,
    /// Last sequence number sent to the device.
    pub sidx: u16,
    /// Last sequence number accepted from the device.
    pub ridx: u16,
    /// Users bound to the device.
    pub bound: Vec<i64>,
}

/// The directory key of a terminal id: phones are found through their user (base id),
/// devices by their own id.
pub fn route_key(id: i64) -> i64 {
    if id > 0 { id - id % 16 } else { id }
}

/// The shard that owns the directory entry of `key`, among `count` shards.
pub fn dir_shard(key: i64, count: usize) -> usize {
    (((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % count.max(1) as u64) as usize
}

/// A call to the device platform for a UDP session (docs/protocol.md §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformCall {
    /// `0xE1` register.
    Register {
        /// Device MAC.
        mac: [u8; 8],
        /// Device type.
        device_type: u16,
        /// Production time.
        production_time: u32,
        /// Serial number.
        sn: [u8; 16],
        /// Device name.
        name: Vec<u8>,
    },
    /// `0xE2` login.
    Login {
        /// Device MAC.
        mac: [u8; 8],
        /// The cookie from register.
        cookie: Vec<u8>,
    },
    /// `0xE3` rename.
    Rename {
        /// Device MAC.
        mac: [u8; 8],
        /// The new name.
        name: Vec<u8>,
    },
}

/// A platform call and who asked.
#[derive(Debug)]
pub struct PlatformRequest {
    /// The UDP session waiting for the answer.
    pub conn: ConnRef,
    /// The call.
    pub call: PlatformCall,
}

/// The platform's answer; `status` is the reply status (0 ok, 1000 HTTP error, 1001 server
/// error, or the platform's own number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformAnswer {
    /// Register: the cookie `<deviceId>|...` (empty on failure).
    Register {
        /// Reply status.
        status: i32,
        /// The cookie.
        cookie: Vec<u8>,
    },
    /// Login: the device id taken from the cookie when `status` is 0.
    Login {
        /// Reply status.
        status: i32,
        /// The device id.
        device: i64,
    },
    /// Rename.
    Rename {
        /// Reply status.
        status: i32,
    },
}

/// Wakes a shard after something was put in its inbox.
pub trait Wake: Send + Sync {
    /// Wakes the shard if it is parked; cheap when it is not.
    fn wake(&self);
}

/// The way into one shard: its bounded inbox and its waker.
#[derive(Clone)]
pub struct ShardInbox {
    /// The shard's bounded inbox.
    pub tx: crossbeam_channel::Sender<ToShard>,
    /// Wakes the shard after a send.
    pub waker: Arc<dyn Wake>,
}

impl ShardInbox {
    /// Puts `msg` in the inbox and wakes the shard; gives the message back when the inbox
    /// is full (the caller counts the drop or retries).
    pub fn send(&self, msg: ToShard) -> Result<(), ToShard> {
        let result = self.tx.try_send(msg).map_err(|e| e.into_inner());
        self.waker.wake();
        result
    }
}

/// A request from the admin endpoints (`/admin/bind`, `/admin/unbind`, `/admin/push`).
#[derive(Debug)]
pub enum Admin {
    /// Bind a device to a user.
    Bind {
        /// The device (negative id).
        device: i64,
        /// The user (positive multiple of 16).
        user: i64,
    },
    /// Unbind a device from a user.
    Unbind {
        /// The device.
        device: i64,
        /// The user.
        user: i64,
    },
    /// Push a direct message with `msg_id` and `body` to `ids` (docs/protocol.md §7.1).
    Push {
        /// Destination ids as given (users are expanded to their mobile ids).
        ids: Vec<i64>,
        /// Message id of the pushed message.
        msg_id: u16,
        /// The body.
        body: Vec<u8>,
    },
}

/// An admin request and where to send its one-line answer.
#[derive(Debug)]
pub struct AdminRequest {
    /// What to do.
    pub admin: Admin,
    /// Receives `Ok(summary)` or `Err(reason)`.
    pub reply: crossbeam_channel::Sender<Result<String, String>>,
}
