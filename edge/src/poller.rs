//! Readiness for every socket of a shard, with no task and no buffer per socket.
//!
//! Each shard owns one private `io_uring` used only for readiness: one **multishot
//! `POLL_ADD`** per socket (listeners, the UDP socket, every terminal connection), and
//! one-shot `POLLOUT` polls for connections whose writes are blocked. The ring signals a
//! registered `eventfd` whenever it posts completions; the shard's glommio task awaits a
//! read of that `eventfd` (through glommio's own ring), then drains the completions in a
//! batch. Sidecars and other threads wake the shard through the same `eventfd`
//! ([`Waker`]), so the shard has exactly one thing to wait on.
//!
//! Why not a glommio task per connection: a parked task plus its armed read costs
//! ~1.8 KB per idle connection (see `shared/design/conn-memory.md`); a multishot poll
//! costs user space nothing but the 8-byte token, and the kernel one `io_kiocb`.
//!
//! This module does not read or write sockets: it only reports which token is ready.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, types};

/// What a poll completion says about its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token given at registration.
    pub token: u64,
    /// `POLLIN`, `POLLHUP` or `POLLERR` was seen (for a write poll: `POLLOUT`).
    pub events: u32,
    /// The poll is still armed (multishot); when false the caller must re-arm.
    pub still_armed: bool,
    /// The completion is for a one-shot write poll.
    pub write: bool,
}

/// Marks a token as a write-readiness poll (the top bit is ours).
const WRITE_BIT: u64 = 1 << 63;

/// A shard's private readiness ring.
pub struct Poller {
    ring: IoUring,
    eventfd: OwnedFd,
    waker: Arc<WakerInner>,
    pending: usize,
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

impl Poller {
    /// A ring with room for `entries` submissions per batch.
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder().build(entries)?;
        // SAFETY: eventfd(2) returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        // SAFETY: dup(2) of a valid descriptor.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        let waker = Arc::new(WakerInner {
            eventfd: dup,
            parked: AtomicBool::new(false),
            // SAFETY: dup is a fresh descriptor we own.
            _owner: unsafe { OwnedFd::from_raw_fd(dup) },
        });
        Ok(Poller {
            ring,
            eventfd,
            waker,
            pending: 0,
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

    /// Tells wakers the shard is about to park; call before awaiting the eventfd, then
    /// drain everything once more (a wake may have raced the flag).
    pub fn set_parked(&self, parked: bool) {
        self.waker.parked.store(parked, Ordering::Release);
    }

    /// Arms a multishot read poll on `fd`; completions carry `token` (top bit reserved).
    pub fn watch(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        debug_assert!(token & WRITE_BIT == 0);
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(token);
        self.push(entry)
    }

    /// Arms a one-shot write poll on `fd`.
    pub fn watch_writable(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(token | WRITE_BIT);
        self.push(entry)
    }

    /// Disarms the polls of `token` (read and write). Must be submitted (see
    /// [`Poller::submit`]) before the descriptor is closed, or the kernel keeps the
    /// file alive for the armed poll.
    pub fn unwatch(&mut self, token: u64, write_armed: bool) -> io::Result<()> {
        self.push(opcode::PollRemove::new(token).build().user_data(u64::MAX))?;
        if write_armed {
            self.push(
                opcode::PollRemove::new(token | WRITE_BIT)
                    .build()
                    .user_data(u64::MAX),
            )?;
        }
        Ok(())
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: poll entries reference no user memory.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.submit()?;
            // SAFETY: as above; the queue was just flushed.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("readiness ring full after submit"))?;
        }
        self.pending += 1;
        Ok(())
    }

    /// Hands queued registrations to the kernel.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.pending > 0 {
            self.ring.submit()?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Moves every posted completion into `out` (cleared first). Completions of
    /// `unwatch` requests are dropped here.
    pub fn drain(&mut self, out: &mut Vec<Readiness>) {
        out.clear();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let data = cqe.user_data();
            if data == u64::MAX {
                continue;
            }
            let result = cqe.result();
            out.push(Readiness {
                token: data & !WRITE_BIT,
                // A negative result (e.g. -ECANCELED) means the poll ended: report it as an
                // error event so the owner re-arms or closes.
                events: if result < 0 {
                    libc::POLLERR as u32
                } else {
                    result as u32
                },
                still_armed: io_uring::cqueue::more(cqe.flags()),
                write: data & WRITE_BIT != 0,
            });
        }
    }
}
