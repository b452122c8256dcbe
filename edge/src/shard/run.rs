//! A shard's executor loop: joining the mesh, taking its parts, arming its sockets, then
//! turning whenever readiness, the inbox, a peer shard or the one-second tick wakes it,
//! and parking on the readiness eventfd when nothing is left. Shard 0 also runs the
//! status and `udpaddr` endpoints. The state it turns is [`Shard`]'s; this file only waits.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::io::BufferedFile;

use super::{KIND_SHIFT, KIND_UDP, Shard, ShardParts, listener_token, udp};
use crate::msg::PeerMsg;

/// What every shard thread is handed: the parts of all shards, taken by mesh position
/// (glommio numbers mesh peers itself), and what only shard 0 runs.
pub struct Startup {
    /// `parts[i]` is taken by the shard that becomes mesh peer `i`.
    pub parts: Mutex<Vec<Option<ShardParts>>>,
    /// The status server, run by shard 0.
    pub status: Mutex<Option<crate::status::StatusServer>>,
    /// The `udpaddr` endpoint, run by shard 0.
    pub udpaddr: Mutex<Option<crate::status::UdpAddrServer>>,
    /// Every shard waits here before its first turn (shut while an upgrade's old process
    /// still serves).
    pub gate: Arc<crate::node::Gate>,
}

/// Runs a shard until shutdown: joins the mesh, takes its parts, arms the listeners, loops.
pub async fn run(startup: Arc<Startup>, mesh: MeshBuilder<PeerMsg, Full>) {
    let (senders, receivers): (Senders<PeerMsg>, Receivers<PeerMsg>) = match mesh.join().await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("cannot join the shard mesh: {e:?}");
            return;
        }
    };
    let index = senders.peer_id();
    let parts = startup
        .parts
        .lock()
        .ok()
        .and_then(|mut p| p.get_mut(index).and_then(Option::take));
    let Some(mut parts) = parts else {
        tracing::error!(shard = index, "no parts");
        return;
    };
    let mut tasks = Vec::new();
    if index == 0
        && let Some(status) = startup.status.lock().ok().and_then(|mut s| s.take())
    {
        tasks.push(glommio::spawn_local(status.serve()));
    }
    if index == 0
        && let Some(server) = startup.udpaddr.lock().ok().and_then(|mut s| s.take())
    {
        tasks.push(glommio::spawn_local(server.serve()));
    }
    let handover = parts.handover.take();
    let mut shard = Shard::new(parts);
    shard.peers = Some(senders);
    if let Some((records, mut fds)) = handover {
        shard.read_clock();
        shard.import(records, &mut fds);
    }
    for i in 0..shard.listeners.len() {
        let fd = shard.listeners[i].as_raw_fd();
        if let Err(e) = shard.poller.watch(fd, listener_token(i)) {
            tracing::error!(shard = shard.index, "cannot watch listener: {e}");
        }
    }
    if let Some(fd) = shard.udp.as_ref().map(udp::UdpSide::raw_fd)
        && let Err(e) = shard.poller.watch(fd, KIND_UDP << KIND_SHIFT)
    {
        tracing::error!(shard = shard.index, "cannot watch the UDP socket: {e}");
    }
    shard.flush_registrations();
    startup.gate.wait();
    // What the old process of an upgrade held since its freeze goes first.
    for msg in startup.gate.take_released(shard.index) {
        shard.read_clock();
        shard.on_bus(msg);
    }
    let eventfd = match shard.poller.eventfd_dup() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(shard = shard.index, "{e}");
            return;
        }
    };
    // SAFETY: a fresh descriptor we own, handed to glommio which closes it.
    let wake_file = unsafe { BufferedFile::from_raw_fd(into_raw(eventfd)) };
    let shard = Rc::new(RefCell::new(shard));
    tasks.extend(spawn_peer_receivers(&shard, receivers));
    tasks.push({
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                let mut s = shard.borrow_mut();
                if s.done {
                    break;
                }
                s.on_tick();
            }
        })
    });
    loop {
        let busy = {
            let mut s = shard.borrow_mut();
            s.turn();
            if s.done {
                break;
            }
            if !s.has_backlog() {
                s.poller.set_parked(true);
                if let Err(e) = s.poller.arm() {
                    tracing::error!(shard = s.index, "cannot arm the readiness ring: {e}");
                }
                s.turn();
                if s.done {
                    break;
                }
            }
            s.has_backlog()
        };
        if busy {
            // Reads left over: let the other tasks run, then come straight back.
            futures_lite::future::yield_now().await;
            continue;
        }
        if let Err(e) = wake_file.read_at(0, 8).await {
            tracing::error!(shard = shard.borrow().index, "wait failed: {e}");
            break;
        }
        shard.borrow().poller.set_parked(false);
    }
    if let Some(peers) = shard.borrow().peers.as_ref() {
        peers.close();
    }
    // Cancelling drops the tasks' futures, and with them their handles on the shard, so
    // the shard (its ring, sockets and channel ends) is dropped here.
    for task in tasks {
        task.cancel().await;
    }
}

fn into_raw(fd: OwnedFd) -> RawFd {
    use std::os::fd::IntoRawFd;
    fd.into_raw_fd()
}

fn spawn_peer_receivers(
    shard: &Rc<RefCell<Shard>>,
    mut receivers: Receivers<PeerMsg>,
) -> Vec<glommio::Task<()>> {
    let mut tasks = Vec::new();
    for (_, rx) in receivers.streams() {
        let shard = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                let mut s = shard.borrow_mut();
                if s.frozen {
                    s.held_peer_while_frozen.push(msg);
                    continue;
                }
                let started = Instant::now();
                s.read_clock();
                s.on_peer(msg);
                // Drain what else is queued before registering changes.
                s.flush_registrations();
                s.account_turn(started, "mesh message");
            }
        }));
    }
    tasks
}
