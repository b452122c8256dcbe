//! Readiness for every socket of a shard, with no task and no buffer per socket, and the
//! place a shard parks.
//!
//! Each shard owns one **edge-triggered epoll set** holding all its sockets (listeners,
//! the UDP socket, every terminal connection; token = the socket's slab reference) and an
//! `eventfd` other threads write to wake it ([`Waker`]). The shard calls [`Poller::drain`]
//! each turn: one `epoll_wait(0)` returns each ready socket once, however many packets
//! arrived, so a flood costs one event per socket per batch and nothing can overflow.
//! With nothing left to do it parks in [`Poller::wait`], a blocking `epoll_wait` on the
//! same set; what that call returns is the next drain's, so a wake costs one system call.
//!
//! Why not glommio's own wake-ups: a wake went socket → a poll on a private ring → an
//! eventfd → glommio's rings → the task, and parking submitted two rings: at 20 k
//! messages a second that cost twice the server CPU per message of a tokio server's
//! `epoll_wait` (benches/RESULTS.md, "Light load"). Why not a glommio task per
//! connection: a parked task plus its armed read costs ~1.8 KB per idle connection (see
//! `shared/design/conn-memory.md`); an epoll item costs user space nothing but the 8-byte
//! token (the kernel ~128 B).
//!
//! Edge-triggered: the owner must read (or accept) until `EAGAIN`, or remember the socket
//! and come back, since no new event comes for data already there.
//!
//! This module does not read or write sockets: it only reports which token is ready.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What one `epoll_wait` said about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token given at registration.
    pub token: u64,
    /// Data, a peer close or an error can be read.
    pub readable: bool,
    /// The socket can take more bytes.
    pub writable: bool,
    /// The peer closed (or the socket failed): read on to the end of the stream even
    /// after a short read, since no further edge will come for it.
    pub hangup: bool,
}

/// The token of the wake eventfd in the epoll set (no socket's token has every bit set).
const WAKE: u64 = u64::MAX;
/// Events per `epoll_wait` call.
const BATCH: usize = 1024;

/// A shard's readiness set.
pub struct Poller {
    epoll: OwnedFd,
    waker: Arc<WakerInner>,
    events: Vec<libc::epoll_event>,
    /// What the last [`Poller::wait`] returned, for the next [`Poller::drain`].
    waited: Vec<Readiness>,
}

struct WakerInner {
    eventfd: OwnedFd,
    /// True while the shard is (about to be) parked: only then do other threads pay for
    /// the `write(2)`.
    parked: AtomicBool,
}

/// A cheap, `Send` handle that wakes the shard from any thread.
#[derive(Clone)]
pub struct Waker(Arc<WakerInner>);

impl Waker {
    /// Wakes the shard if it is parked (coalesced: no syscall while it runs). Call it
    /// after the message is queued: the swap orders the two.
    pub fn wake(&self) {
        if self.0.parked.swap(false, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd we keep open.
            unsafe { libc::write(self.0.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

fn owned(fd: i32) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Poller {
    /// An empty set (holding only the wake eventfd).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain descriptor-creating syscalls.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let eventfd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let poller = Poller {
            epoll,
            waker: Arc::new(WakerInner {
                eventfd,
                parked: AtomicBool::new(false),
            }),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
            waited: Vec::new(),
        };
        let fd = poller.waker.eventfd.as_raw_fd();
        poller.ctl(libc::EPOLL_CTL_ADD, fd, Self::READ, WAKE)?;
        Ok(poller)
    }

    /// A handle other threads use to wake this shard.
    pub fn waker(&self) -> Waker {
        Waker(self.waker.clone())
    }

    /// Tells wakers the shard is about to park (or runs again). After announcing a park,
    /// look at every queue a waker guards once more before [`Poller::wait`]: a message
    /// queued before the announcement found the flag down and wrote nothing.
    pub fn set_parked(&self, parked: bool) {
        // Sequentially consistent throughout (free on x86 for the swaps): a swap, not a
        // store, orders the flag before the queue checks that follow (a store may pass a
        // later load), pairing with the swap in [`Waker::wake`]; and no store in between
        // may break the chain from one waker's swap to the next park's.
        if parked {
            self.waker.parked.swap(true, Ordering::SeqCst);
        } else {
            self.waker.parked.store(false, Ordering::SeqCst);
        }
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: a valid epoll fd and event struct.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

    /// Adds `fd` for read readiness (edge-triggered); events carry `token`.
    pub fn watch(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, Self::READ, token)
    }

    /// Also asks for write readiness of a watched `fd` (a blocked write), or stops asking.
    pub fn watch_writable(&mut self, fd: RawFd, token: u64, writable: bool) -> io::Result<()> {
        let events = if writable {
            Self::READ | libc::EPOLLOUT as u32
        } else {
            Self::READ
        };
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Removes `fd`; it may be closed right after.
    pub fn unwatch(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Moves every ready socket into `out` (cleared first), each once: what the last
    /// [`Poller::wait`] returned if it returned sockets, or else one `epoll_wait(0)`.
    pub fn drain(&mut self, out: &mut Vec<Readiness>) {
        out.clear();
        if !self.waited.is_empty() {
            std::mem::swap(out, &mut self.waited);
            return;
        }
        self.collect(out, 0);
    }

    /// Parks until a watched socket is ready, a [`Waker`] wakes the shard, or `timeout`
    /// passes; false when the time ran out with nothing ready. Ready sockets are kept
    /// for the next [`Poller::drain`].
    pub fn wait(&mut self, timeout: Duration) -> bool {
        // Rounded up, so a wait for the next tick does not come back just before it.
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let mut waited = std::mem::take(&mut self.waited);
        let woken = self.collect(&mut waited, ms);
        self.waited = waited;
        woken
    }

    /// `epoll_wait`s into `out`: the first call waits up to `first_ms`, then (while
    /// batches come back full) up to three more that do not wait. A wake of the eventfd
    /// is consumed here, not reported. True when anything was ready or woke the shard.
    fn collect(&mut self, out: &mut Vec<Readiness>, first_ms: i32) -> bool {
        let mut timeout = first_ms;
        let mut any = false;
        for _ in 0..4 {
            // SAFETY: events has BATCH valid slots.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    BATCH as i32,
                    timeout,
                )
            };
            if n <= 0 {
                // A signal (EINTR) reads as a wake: the caller's loop looks again.
                return any || n < 0;
            }
            any = true;
            for event in &self.events[..n as usize] {
                if event.u64 == WAKE {
                    self.consume_wake();
                    continue;
                }
                let bits = event.events;
                let hangup = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
                out.push(Readiness {
                    token: event.u64,
                    readable: bits & (hangup | libc::EPOLLIN as u32) != 0,
                    writable: bits & libc::EPOLLOUT as u32 != 0,
                    hangup: bits & hangup != 0,
                });
            }
            if (n as usize) < BATCH {
                break;
            }
            timeout = 0;
        }
        true
    }

    /// Resets the eventfd's counter (edge-triggered, every write makes a new event, so
    /// this only keeps the counter from growing).
    fn consume_wake(&self) {
        let mut count: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from an eventfd we own.
        unsafe {
            libc::read(
                self.waker.eventfd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                8,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_wait_times_out_when_nothing_happens() {
        let mut poller = Poller::new().unwrap();
        assert!(!poller.wait(Duration::from_millis(1)));
    }

    #[test]
    fn what_a_wait_returns_is_the_next_drain_and_only_once() {
        let mut poller = Poller::new().unwrap();
        let (a, b) = UnixDatagram::pair().unwrap();
        poller.watch(a.as_raw_fd(), 7).unwrap();
        b.send(b"x").unwrap();
        assert!(poller.wait(Duration::from_secs(30)));
        let mut ready = Vec::new();
        poller.drain(&mut ready);
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].token, ready[0].readable), (7, true));
        assert!(!ready[0].hangup);
        // Edge-triggered: the unread datagram makes no second event.
        poller.drain(&mut ready);
        assert!(ready.is_empty());
    }

    #[test]
    fn a_waker_on_another_thread_ends_a_park_and_a_running_shard_costs_it_nothing() {
        let mut poller = Poller::new().unwrap();
        let waker = poller.waker();
        // Not parked: the wake writes nothing, so a wait would time out.
        waker.wake();
        assert!(!poller.wait(Duration::from_millis(1)));
        poller.set_parked(true);
        let thread = std::thread::spawn(move || waker.wake());
        assert!(poller.wait(Duration::from_secs(30)));
        thread.join().unwrap();
        let mut ready = Vec::new();
        poller.drain(&mut ready);
        assert!(ready.is_empty(), "the wake is consumed, not reported");
    }
}
