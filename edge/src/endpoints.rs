//! The thread the node's HTTP endpoints run on: the status and admin endpoint and, when
//! serving UDP, the `udpaddr` endpoint, as glommio tasks on an executor of their own.
//! No shard carries them, so a shard's loop can park in its own `epoll_wait`
//! (`shard::run`), and a slow status client never shares a turn with relays.
//!
//! What they serve is `status`'s; `node` starts the thread and stops it at shutdown, and
//! dropping [`Endpoints`] stops it too (a start that fails after spawning it), also while
//! it still waits for the gate. Like the shards, they start serving once the node's gate
//! opens: during an upgrade the old process answers on the shared listeners until the new
//! one's shards run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::node::Gate;
use crate::status::{StatusServer, UdpAddrServer};

/// How often the thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The running endpoints.
pub struct Endpoints {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Starts the endpoints on a new thread (with the caller's CPU affinity), serving once
/// `gate` is open.
pub fn spawn(
    status: StatusServer,
    udpaddr: Option<UdpAddrServer>,
    gate: Arc<Gate>,
) -> anyhow::Result<Endpoints> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("endpoints")
        .io_memory(1 << 16)
        .spawn(move || async move {
            // Nothing else runs on this thread: blocking here delays only the endpoints.
            if !gate.wait_unless(&flag, STOP_POLL) {
                return;
            }
            // Each server is a task of its own, and this one wakes only for its own
            // timer: polling a pending glommio timer again on every accept leaks a
            // reference to the task's waker each time (glommio 0.9 panics at 32 767).
            let mut servers = vec![glommio::spawn_local(status.serve())];
            servers.extend(udpaddr.map(|server| glommio::spawn_local(server.serve())));
            stopped(flag).await;
            for server in servers {
                server.cancel().await;
            }
        })
        .map_err(|e| anyhow::anyhow!("HTTP endpoints thread: {e}"))?;
    let thread = std::thread::spawn(move || {
        if let Err(e) = handle.join() {
            tracing::error!("the HTTP endpoints ended with an error: {e:?}");
        }
    });
    Ok(Endpoints {
        thread: Some(thread),
        stop,
    })
}

/// Ready once `flag` is set.
async fn stopped(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Acquire) {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

impl Endpoints {
    /// Stops serving (requests in progress are cut) and waits for the thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start that fails before the gate opens drops its endpoints: the thread ends and
    /// the status listener closes, instead of both waiting for a gate that never opens.
    #[test]
    fn dropped_before_the_gate_opens_the_thread_ends() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (admin, _requests) = crossbeam_channel::bounded(1);
        let status = StatusServer {
            listener: listener.into(),
            metrics: crate::metrics::NodeMetrics::new(1),
            admin,
            admin_token: None,
        };
        let endpoints = spawn(status, None, crate::node::Gate::new(false)).unwrap();
        let started = std::time::Instant::now();
        drop(endpoints);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "listener still open"
        );
    }
}
