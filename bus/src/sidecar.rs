//! The bus sidecar thread of a node: it owns the bus state and answers the shards.
//!
//! Shards log in and out through the shared [`Logins`] themselves; they send the rest
//! ([`ToBus`]: uploads) on one bounded channel; the admin endpoints send [`AdminRequest`]s
//! on another. The thread blocks in `select!` on both (no spinning),
//! answers each shard through its [`ShardInbox`] and wakes it. Uploads are appended to the
//! log and flushed before their acks go out.
//!
//! It never touches shard state: everything it knows came in a message.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, select};

use crate::embedded::{Logins, UploadLog};
use crate::messages::{Admin, AdminRequest, Payload, ShardInbox, ToBus, ToShard};

/// The embedded sidecar's inputs and outputs.
pub struct Embedded {
    /// One inbox per shard, by shard index.
    pub shards: Vec<ShardInbox>,
    /// Requests from the shards.
    pub requests: Receiver<ToBus>,
    /// Requests from the admin endpoints.
    pub admin: Receiver<AdminRequest>,
    /// Where uploads go.
    pub uploads: UploadLog,
    /// Closed (dropped) by the node to end the thread.
    pub stop: Receiver<()>,
    /// An upgrade asks for the state here (issue 15).
    pub export: Receiver<crossbeam_channel::Sender<crate::embedded::Snapshot>>,
    /// The login tables the shards share (restored from an upgrade's snapshot, if this
    /// process is the new one).
    pub logins: std::sync::Arc<Logins>,
}

/// Starts the embedded sidecar thread; it ends when `stop` closes or every request
/// sender is gone.
pub fn spawn_embedded(side: Embedded) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bus-sidecar".into())
        .spawn(move || run(side))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn run(mut side: Embedded) {
    let logins = side.logins.clone();
    let mut acks: Vec<(usize, ToShard)> = Vec::new();
    loop {
        select! {
            recv(side.requests) -> msg => match msg {
                Ok(msg) => {
                    handle(&logins, &mut side, msg, &mut acks);
                    // Batch: take what is already queued before flushing uploads.
                    while let Ok(msg) = side.requests.try_recv() {
                        handle(&logins, &mut side, msg, &mut acks);
                    }
                    flush_uploads(&mut side, &mut acks);
                }
                Err(_) => return,
            },
            recv(side.admin) -> req => match req {
                Ok(req) => {
                    let answer = admin(&logins, &side.shards, req.admin);
                    let _ = req.reply.try_send(answer);
                }
                Err(_) => side.admin = crossbeam_channel::never(),
            },
            recv(side.export) -> req => match req {
                Ok(reply) => {
                    let _ = reply.try_send(logins.snapshot());
                }
                Err(_) => side.export = crossbeam_channel::never(),
            },
            recv(side.stop) -> _ => return,
        }
    }
}

fn handle(logins: &Logins, side: &mut Embedded, msg: ToBus, acks: &mut Vec<(usize, ToShard)>) {
    match msg {
        // Shards log in through `Logins` themselves; a request sent here is answered the
        // same way.
        ToBus::Login { conn, id } => {
            let result = logins.login(id);
            if let Some(shard) = side.shards.get(conn.shard as usize)
                && let Err(ToShard::LoginDone {
                    result: Ok(grant), ..
                }) = shard.send(ToShard::LoginDone { conn, result })
            {
                // The shard could not take the answer: give the mobile id back.
                logins.logout(grant.session);
            }
        }
        ToBus::Logout { session } => logins.logout(session),
        // The embedded node routes between its shards itself and keeps UDP sessions only
        // in the shards: there is no msgbus and no Redis to write to.
        ToBus::Relay { .. } | ToBus::UdpSession(_) | ToBus::UdpSessionGone { .. } => {}
        ToBus::Upload {
            conn,
            src,
            mut message,
        } => {
            side.uploads.append(unix_now(), src, &message);
            if let Some(flags) = message.get_mut(24) {
                *flags |= 0x40;
            }
            if edge_proto::frame::seal(&mut message).is_err() {
                // Not a well-formed packet: stored, but there is nothing to ack.
                return;
            }
            acks.push((
                conn.shard as usize,
                ToShard::UploadAck { conn, ack: message },
            ));
        }
    }
}

fn flush_uploads(side: &mut Embedded, acks: &mut Vec<(usize, ToShard)>) {
    if acks.is_empty() {
        return;
    }
    if side.uploads.flush().is_err() {
        // Not durable: no ack, the device retries.
        acks.clear();
        return;
    }
    for (shard, ack) in acks.drain(..) {
        if let Some(inbox) = side.shards.get(shard) {
            let _ = inbox.send(ack);
        }
    }
}

/// Expands push ids as docs/protocol.md §7.1, with the original's gap fixed: a concrete mobile id is a
/// valid target.
pub fn expand_push_ids(ids: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if id > 0 && id % 16 == 0 {
            out.extend((1..16).map(|k| id + k));
        } else if id != 0 {
            out.push(id);
        }
    }
    out
}

fn admin(state: &Logins, shards: &[ShardInbox], admin: Admin) -> Result<String, String> {
    let broadcast = |msg: &dyn Fn() -> ToShard| {
        let mut missed = 0;
        for shard in shards {
            if shard.send(msg()).is_err() {
                missed += 1;
            }
        }
        missed
    };
    match admin {
        Admin::Bind { device, user } | Admin::Unbind { device, user }
            if device >= 0 || user <= 0 || user % 16 != 0 =>
        {
            Err(format!(
                "device must be negative and user a positive multiple of 16 (got {device}, {user})"
            ))
        }
        Admin::Bind { device, user } => {
            if !state.bind(device, user) {
                return Ok(format!("device {device} already bound to user {user}"));
            }
            broadcast(&|| ToShard::Binding {
                device,
                user,
                bound: true,
            });
            Ok(format!("bound device {device} to user {user}"))
        }
        Admin::Unbind { device, user } => {
            if !state.unbind(device, user) {
                return Err(format!("device {device} is not bound to user {user}"));
            }
            broadcast(&|| ToShard::Binding {
                device,
                user,
                bound: false,
            });
            Ok(format!("unbound device {device} from user {user}"))
        }
        Admin::Push { ids, msg_id, body } => {
            let ids: Arc<[i64]> = expand_push_ids(&ids).into();
            if ids.is_empty() {
                return Err("no valid destination id".into());
            }
            let body: Arc<[u8]> = body.into();
            let missed = broadcast(&|| ToShard::Deliver {
                ids: ids.clone(),
                payload: Payload::Push {
                    msg_id,
                    body: body.clone(),
                },
            });
            if missed > 0 {
                return Err(format!(
                    "{missed} shard inbox(es) full: push not delivered everywhere"
                ));
            }
            Ok(format!(
                "push of message {msg_id:#x} to {} id(s) queued",
                ids.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ids_expand() {
        assert_eq!(expand_push_ids(&[-5, 17, 0]), vec![-5, 17]);
        assert_eq!(expand_push_ids(&[16]).len(), 15);
    }
}
