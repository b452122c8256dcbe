//! Process limits raised at start: open files (`RLIMIT_NOFILE`) and locked memory (`RLIMIT_MEMLOCK`).
//!
//! Owns reading and raising this process's rlimits and reporting what happened in one line. It never
//! panics and never fails: a limit it cannot raise is reported, and the binary decides whether that
//! is fatal. It does not change host-wide settings (see [`crate::host`]).

use std::fmt;
use std::io;

/// glommio refuses to start an executor below this much locked memory (`MemLockLimit`).
pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;

/// `RLIM_INFINITY`: the limit is unlimited.
pub const UNLIMITED: u64 = libc::RLIM_INFINITY;

/// A process resource limit this crate manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors (one per connection, plus listeners and rings).
    Nofile,
    /// `RLIMIT_MEMLOCK`: bytes of locked memory (io_uring rings and registered buffers).
    Memlock,
}

/// A soft/hard limit pair; [`UNLIMITED`] means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The limit in force.
    pub soft: u64,
    /// The ceiling the soft limit may be raised to without privilege.
    pub hard: u64,
}

/// What raising one limit did: the binary prints it as one line (its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReport {
    /// Which limit.
    pub resource: Resource,
    /// The limit before, `None` if it could not be read.
    pub before: Option<Limit>,
    /// The limit after, `None` if it could not be read.
    pub after: Option<Limit>,
    /// The soft limit the process needs (0 when any is fine).
    pub wanted: u64,
    /// Why the limit could not be raised, if it could not.
    pub problem: Option<String>,
}

// === Resource ===

impl Resource {
    /// The name used in reports (`nofile`, `memlock`, as in `ulimit`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Nofile => "nofile",
            Resource::Memlock => "memlock",
        }
    }

    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
        }
    }

    /// Formats a value of this resource: a count for files, bytes in KiB/MiB for memory.
    pub fn format(self, value: u64) -> String {
        match (value, self) {
            (UNLIMITED, _) => "unlimited".to_string(),
            (_, Resource::Nofile) => value.to_string(),
            (_, Resource::Memlock) => format_bytes(value),
        }
    }
}

/// Reads the current limit of `resource` for this process.
pub fn current(resource: Resource) -> io::Result<Limit> {
    let mut raw = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `raw` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource.raw(), &mut raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit {
        soft: raw.rlim_cur,
        hard: raw.rlim_max,
    })
}

fn set(resource: Resource, limit: Limit) -> io::Result<()> {
    let raw = libc::rlimit {
        rlim_cur: limit.soft,
        rlim_max: limit.hard,
    };
    // SAFETY: `raw` is a valid rlimit.
    if unsafe { libc::setrlimit(resource.raw(), &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard limit (capped by `fs.nr_open` when the hard limit
/// is unlimited). Needs no privilege.
pub fn raise_nofile() -> LimitReport {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20);
    raise(Resource::Nofile, 0, nr_open)
}

/// Raises the soft locked-memory limit to the hard limit, and the hard limit to `min_bytes` when
/// it is below (needs `CAP_SYS_RESOURCE`, which root has). Pass at least
/// [`GLOMMIO_MEMLOCK_MIN_BYTES`]; the report says when the result is still below `min_bytes`.
pub fn raise_memlock(min_bytes: u64) -> LimitReport {
    raise(Resource::Memlock, min_bytes, UNLIMITED)
}

fn raise(resource: Resource, wanted: u64, cap: u64) -> LimitReport {
    let mut report = LimitReport {
        resource,
        before: None,
        after: None,
        wanted,
        problem: None,
    };
    let before = match current(resource) {
        Ok(before) => before,
        Err(error) => {
            report.problem = Some(format!("could not read: {error}"));
            return report;
        }
    };
    report.before = Some(before);
    if let Some(target) = raise_target(before, wanted, cap)
        && let Err(error) = set(resource, target)
    {
        report.problem = Some(format!("could not raise: {error}"));
        // Without privilege the hard limit stays: still take the soft limit up to it.
        if let Some(fallback) = raise_target(before, 0, cap) {
            let _ = set(resource, fallback);
        }
    }
    report.after = current(resource).ok();
    report
}

/// The limit to set so that soft = hard ≥ `wanted` (the soft limit never above `cap`), or `None`
/// when the soft limit is already there. Pure, so the policy is unit-tested.
fn raise_target(before: Limit, wanted: u64, cap: u64) -> Option<Limit> {
    let hard = before.hard.max(wanted);
    let soft = hard.min(cap).max(before.soft);
    let target = Limit { soft, hard };
    (target != before).then_some(target)
}

/// `512 KiB`, `8 MiB`, `1.5 GiB`: exact when it divides, otherwise one decimal.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return match bytes % size {
                0 => format!("{} {unit}", bytes / size),
                _ => format!("{:.1} {unit}", bytes as f64 / size as f64),
            };
        }
    }
    format!("{bytes} B")
}

// === LimitReport ===

impl LimitReport {
    /// Whether the soft limit now meets `wanted`.
    pub fn ok(&self) -> bool {
        self.after.is_some_and(|after| after.soft >= self.wanted)
    }
}

impl fmt::Display for LimitReport {
    /// `nofile: soft 1024 -> 20000, hard 20000 (ok)` or
    /// `memlock: soft 64 KiB, hard 64 KiB; need >= 512 KiB: could not raise: ... (LOW)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource;
        let show = |value| resource.format(value);
        write!(f, "{}:", resource.name())?;
        match (self.before, self.after) {
            (Some(before), Some(after)) if before.soft != after.soft => {
                write!(f, " soft {} -> {}", show(before.soft), show(after.soft))?;
            }
            (_, Some(after)) | (Some(after), None) => write!(f, " soft {}", show(after.soft))?,
            (None, None) => f.write_str(" unknown")?,
        }
        if let Some(after) = self.after.or(self.before) {
            write!(f, ", hard {}", show(after.hard))?;
        }
        if self.wanted > 0 {
            write!(f, "; need >= {}", show(self.wanted))?;
        }
        if let Some(problem) = &self.problem {
            write!(f, "; {problem}")?;
        }
        f.write_str(if self.ok() { " (ok)" } else { " (LOW)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limit(soft: u64, hard: u64) -> Limit {
        Limit { soft, hard }
    }

    #[test]
    fn raise_targets() {
        let cases: &[(Limit, u64, u64, Option<Limit>)] = &[
            // nofile: soft up to hard.
            (limit(1024, 20000), 0, 1 << 20, Some(limit(20000, 20000))),
            (limit(20000, 20000), 0, 1 << 20, None),
            // nofile with an unlimited hard limit: soft capped by nr_open.
            (
                limit(1024, UNLIMITED),
                0,
                1 << 20,
                Some(limit(1 << 20, UNLIMITED)),
            ),
            // memlock: soft up to hard, hard up to what glommio needs.
            (
                limit(64 << 10, 8 * MIB),
                512 << 10,
                UNLIMITED,
                Some(limit(8 * MIB, 8 * MIB)),
            ),
            (
                limit(64 << 10, 64 << 10),
                512 << 10,
                UNLIMITED,
                Some(limit(512 << 10, 512 << 10)),
            ),
            (limit(8 * MIB, 8 * MIB), 512 << 10, UNLIMITED, None),
            (limit(UNLIMITED, UNLIMITED), 512 << 10, UNLIMITED, None),
            // Never lowers a soft limit that is above the cap.
            (limit(2 << 20, UNLIMITED), 0, 1 << 20, None),
        ];
        for (before, wanted, cap, expect) in cases {
            assert_eq!(
                raise_target(*before, *wanted, *cap),
                *expect,
                "{before:?} {wanted} {cap}"
            );
        }
    }

    #[test]
    fn formats_bytes() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1000, "1000 B"),
            (512 << 10, "512 KiB"),
            (8 * MIB, "8 MiB"),
            (3 * MIB / 2, "1.5 MiB"),
            (1 << 30, "1 GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(format_bytes(*bytes), *text);
        }
    }

    /// A report whose limit went from `before` to `after` (`None`: unreadable).
    fn line(
        resource: Resource,
        limits: Option<(u64, u64)>,
        wanted: u64,
        problem: Option<&str>,
    ) -> String {
        let (before, after) = limits
            .map(|(before, after)| (limit(before, after), limit(after, after)))
            .unzip();
        let problem = problem.map(str::to_string);
        LimitReport {
            resource,
            before,
            after,
            wanted,
            problem,
        }
        .to_string()
    }

    #[test]
    fn reports_in_one_line() {
        use Resource::{Memlock, Nofile};
        let eperm = Some("could not raise: Operation not permitted (os error 1)");
        let cases = [
            (
                line(Nofile, Some((1024, 20000)), 0, None),
                "nofile: soft 1024 -> 20000, hard 20000 (ok)",
            ),
            (
                line(Memlock, Some((8 * MIB, 8 * MIB)), 512 << 10, None),
                "memlock: soft 8 MiB, hard 8 MiB; need >= 512 KiB (ok)",
            ),
            (
                line(Memlock, Some((256 << 10, 256 << 10)), 512 << 10, eperm),
                "memlock: soft 256 KiB, hard 256 KiB; need >= 512 KiB; \
                 could not raise: Operation not permitted (os error 1) (LOW)",
            ),
            (
                line(Memlock, Some((UNLIMITED, UNLIMITED)), 512 << 10, None),
                "memlock: soft unlimited, hard unlimited; need >= 512 KiB (ok)",
            ),
            (
                line(Nofile, None, 0, Some("could not read: x")),
                "nofile: unknown; could not read: x (LOW)",
            ),
        ];
        for (got, expect) in cases {
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn raising_on_this_host_never_fails() {
        let nofile = raise_nofile();
        assert!(nofile.after.is_some(), "{nofile}");
        let memlock = raise_memlock(GLOMMIO_MEMLOCK_MIN_BYTES);
        assert!(memlock.after.is_some(), "{memlock}");
    }
}
