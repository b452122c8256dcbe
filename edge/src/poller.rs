//! Readiness for every socket of a shard, with no task and no buffer per socket.
//!
//! Each shard owns one **edge-triggered epoll set** holding all its sockets (listeners,
//! the UDP socket, every terminal connection; token = the socket's slab reference), and a
//! tiny private `io_uring` whose only job is a one-shot `POLL_ADD` on the epoll fd. That
//! ring signals a registered `eventfd`, which the shard's glommio task awaits (a read
//! through glommio's own ring). On wake the shard calls [`Poller::drain`]: one
//! `epoll_wait(0)` returns each ready socket once, however many packets arrived — so a
//! flood costs one event per socket per batch, and nothing can overflow. Other threads
//! wake the shard through the same `eventfd` ([`Waker`]).
//!
//! Why not a glommio task per connection: a parked task plus its armed read costs
//! ~1.8 KB per idle connection (see `shared/design/conn-memory.md`); an epoll item costs
//! user space nothing but the 8-byte token (the kernel ~128 B).
//!
//! Edge-triggered: the owner must read (or accept) until `EAGAIN`, or remember the socket
//! and come back, since no new event comes for data already there.
//!
//! This module does not read or write sockets: it only reports which token is ready.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, types};

/// What one `epoll_wait` said about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token given at registration.
    pub token: u64,
    /// Data, a peer close or an error can be read.
    pub readable: bool,
    /// The socket can take more bytes.
    pub writable: bool,
}

/// The ring's user data for the epoll-fd poll.
const EPOLL_POLL: u64 = 1;
/// Events per `epoll_wait` call.
const BATCH: usize = 1024;

/// A shard's readiness set.
pub struct Poller {
    epoll: OwnedFd,
    ring: IoUring,
    eventfd: OwnedFd,
    waker: Arc<WakerInner>,
    /// The one-shot poll on the epoll fd is in the ring.
    armed: bool,
    events: Vec<libc::epoll_event>,
}

struct WakerInner {
    eventfd: RawFd,
    /// True while the shard is (about to be) parked on the eventfd: only then do
    /// other threads pay for the `write(2)`.
    parked: AtomicBool,
    _owner: OwnedFd,
}

/// A cheap, `Send` handle that wakes the shard from any thread.
#[derive(Clone)]
pub struct Waker(Arc<WakerInner>);

impl Waker {
    /// Wakes the shard if it is parked (coalesced: no syscall while it runs).
    pub fn wake(&self) {
        if self.0.parked.swap(false, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd we keep open.
            unsafe { libc::write(self.0.eventfd, (&one as *const u64).cast(), 8) };
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
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain descriptor-creating syscalls.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let eventfd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let ring = IoUring::builder().build(8)?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let dup = owned(unsafe { libc::dup(eventfd.as_raw_fd()) })?;
        let waker = Arc::new(WakerInner {
            eventfd: dup.as_raw_fd(),
            parked: AtomicBool::new(false),
            _owner: dup,
        });
        let events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
        Ok(Poller {
            epoll,
            ring,
            eventfd,
            waker,
            armed: false,
            events,
        })
    }

    /// A handle other threads use to wake this shard.
    pub fn waker(&self) -> Waker {
        Waker(self.waker.clone())
    }

    /// A new descriptor for the eventfd, for the glommio task that waits on it.
    pub fn eventfd_dup(&self) -> io::Result<OwnedFd> {
        self.eventfd.try_clone()
    }

    /// Tells wakers the shard is about to park (or runs again). Before parking, call
    /// [`Poller::arm`], then drain everything once more: a wake may have raced the flag.
    pub fn set_parked(&self, parked: bool) {
        self.waker.parked.store(parked, Ordering::Release);
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

    /// Makes sure the eventfd fires when a watched socket becomes ready: a one-shot poll
    /// on the epoll fd (completes at once if something is ready already).
    pub fn arm(&mut self) -> io::Result<()> {
        self.reap_ring();
        if self.armed {
            return Ok(());
        }
        let entry = opcode::PollAdd::new(types::Fd(self.epoll.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(EPOLL_POLL);
        // SAFETY: the entry references no user memory.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("readiness ring full"))?;
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// Consumes the ring's completions (they only say "the epoll set is ready").
    fn reap_ring(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if cqe.user_data() == EPOLL_POLL {
                self.armed = false;
            }
        }
    }

    /// Moves every ready socket into `out` (cleared first), each once.
    pub fn drain(&mut self, out: &mut Vec<Readiness>) {
        out.clear();
        self.reap_ring();
        for _ in 0..4 {
            // SAFETY: events has BATCH valid slots.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    BATCH as i32,
                    0,
                )
            };
            if n <= 0 {
                return;
            }
            for event in &self.events[..n as usize] {
                let bits = event.events;
                let read =
                    (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
                out.push(Readiness {
                    token: event.u64,
                    readable: bits & read != 0,
                    writable: bits & libc::EPOLLOUT as u32 != 0,
                });
            }
            if (n as usize) < BATCH {
                return;
            }
        }
    }
}
