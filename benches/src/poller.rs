//! A thin epoll wrapper: one readiness set per load-generator thread, tokens are slot
//! indices. Level-triggered, so a handler that stops early is called again.
//!
//! Deliberately minimal: no timers, no wakers; callers pass a timeout to [`Poller::wait`].

use std::io;
use std::os::fd::RawFd;

/// Interest: readable.
pub const READ: u32 = libc::EPOLLIN as u32;
/// Interest: writable.
pub const WRITE: u32 = libc::EPOLLOUT as u32;

/// One epoll instance and its event buffer.
pub struct Poller {
    epfd: RawFd,
    events: Vec<libc::epoll_event>,
}

/// A readiness event: token and flags.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Readable (or hang-up / error: the read will tell).
    pub readable: bool,
    /// Writable.
    pub writable: bool,
}

impl Poller {
    /// A new epoll set that returns up to `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall, no pointers.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Self {
            epfd,
            events: vec![empty; capacity.max(1)],
        })
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; epfd is ours.
        let rc = unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Registers `fd` with `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes the interest of `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Removes `fd` (errors ignored: closing the fd removes it anyway).
    pub fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout_ms` (0 = poll) and returns the ready events.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<Vec<Event>> {
        let cap = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: the buffer holds `cap` events.
        let n = unsafe { libc::epoll_wait(self.epfd, self.events.as_mut_ptr(), cap, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(err)
            };
        }
        let hup = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
        Ok(self.events[..n as usize]
            .iter()
            .map(|e| Event {
                token: e.u64,
                readable: e.events & (READ | hup) != 0,
                writable: e.events & WRITE != 0,
            })
            .collect())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: we own epfd.
        unsafe { libc::close(self.epfd) };
    }
}
