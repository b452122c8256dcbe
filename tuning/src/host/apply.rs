//! `cloudsocket tune --apply`: put recommendations in place where this process may.
//!
//! Owns writing [`Fix::Write`] values (sysctl and IRQ files, written directly: no `sysctl` binary
//! needed), reading them back, and saying for every check that is not ok what was done or why it
//! could not be. It does not persist anything across reboots (`/etc/sysctl.d` is the operator's)
//! and does not touch process limits or the kernel command line ([`Fix::Manual`]).

use std::fmt;
use std::io;

use super::{Check, Fix, HostProbe, Probe, normalize};

/// What [`apply`] did for one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// The check's name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The result of applying one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The value was written and reads back as written.
    Applied {
        /// The value now in place.
        value: String,
    },
    /// Not attempted: optional and optional checks were not asked for.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Could not be set: not root, a read-only `/proc/sys`, a manual step...
    Failed {
        /// Why, ending with what to do where there is something.
        reason: String,
    },
}

/// Applies every check that is not ok on the real host (optional ones only when
/// `include_optional`). Writing needs root; without it every write is reported as failed.
pub fn apply(checks: &[Check], include_optional: bool) -> Vec<ApplyResult> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut write = |path: &str, value: &str| std::fs::write(path, format!("{value}\n"));
    apply_with(checks, include_optional, root, &HostProbe, &mut write)
}

/// [`apply`] with the host injected: `probe` reads values back, `write` writes a file.
pub fn apply_with(
    checks: &[Check],
    include_optional: bool,
    root: bool,
    probe: &dyn Probe,
    write: &mut dyn FnMut(&str, &str) -> io::Result<()>,
) -> Vec<ApplyResult> {
    let pending = checks.iter().filter(|check| !check.ok);
    pending
        .map(|check| ApplyResult {
            name: check.name.clone(),
            outcome: apply_one(check, include_optional, root, probe, write),
        })
        .collect()
}

fn apply_one(
    check: &Check,
    include_optional: bool,
    root: bool,
    probe: &dyn Probe,
    write: &mut dyn FnMut(&str, &str) -> io::Result<()>,
) -> Outcome {
    let failed = |reason: String| Outcome::Failed { reason };
    if check.optional && !include_optional {
        return Outcome::Skipped {
            reason: "optional".to_string(),
        };
    }
    let Fix::Write { path, value } = &check.fix else {
        return failed(format!("not settable from here: {}", check.command));
    };
    if !root {
        return failed(format!("not root: {}", check.command));
    }
    if let Err(error) = write(path, value) {
        return failed(describe(&error));
    }
    match probe.read(path).map(|text| normalize(&text)) {
        Some(now) if now == normalize(value) => Outcome::Applied { value: now },
        Some(now) => failed(format!("wrote {value}, kernel reads back {now}")),
        None => failed(format!("wrote {value}, cannot read {path} back")),
    }
}

/// The reasons a `/proc` write fails, in words an operator acts on.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EROFS) => "read-only /proc/sys in this sandbox".to_string(),
        Some(libc::EACCES | libc::EPERM) => {
            "permission denied (a sysctl this container or network namespace may not set)"
                .to_string()
        }
        Some(libc::ENOENT) => "not present on this kernel".to_string(),
        Some(libc::EINVAL) => "the kernel rejected the value".to_string(),
        _ => error.to_string(),
    }
}

// === ApplyResult ===

impl fmt::Display for ApplyResult {
    /// `net.core.rmem_max: set to 8388608`, `busy_poll: skipped (optional)`,
    /// `nofile: could not: not settable from here: ulimit -n 101024 ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Applied { value } => write!(f, "{}: set to {value}", self.name),
            Outcome::Skipped { reason } => write!(f, "{}: skipped ({reason})", self.name),
            Outcome::Failed { reason } => write!(f, "{}: could not: {reason}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixtureProbe;

    fn sysctl(name: &str, ok: bool, optional: bool) -> Check {
        Check {
            name: name.to_string(),
            found: "1".to_string(),
            recommended: ">= 2".to_string(),
            command: format!("sysctl -w {name}=2"),
            ok,
            optional,
            fix: Fix::Write {
                path: format!("/proc/sys/{name}"),
                value: "2".to_string(),
            },
        }
    }

    fn run(
        checks: &[Check],
        include_optional: bool,
        root: bool,
        error: Option<i32>,
    ) -> Vec<String> {
        // The fixture already holds what a successful write leaves behind.
        let probe: FixtureProbe<'_> = [("/proc/sys/a", "2\n"), ("/proc/sys/clamped", "1\n")]
            .into_iter()
            .collect();
        let mut writes = Vec::new();
        let mut write = |path: &str, value: &str| {
            writes.push(format!("{path}={value}"));
            error.map_or(Ok(()), |code| Err(io::Error::from_raw_os_error(code)))
        };
        let results = apply_with(checks, include_optional, root, &probe, &mut write);
        results.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn outcomes() {
        let mut manual = sysctl("nofile", false, false);
        manual.fix = Fix::Manual;
        manual.command = "ulimit -n 101024".to_string();
        let checks = [
            sysctl("a", false, false),
            sysctl("done", true, false),
            sysctl("busy", false, true),
            sysctl("clamped", false, false),
            sysctl("gone", false, false),
            manual,
        ];
        let expect = [
            "a: set to 2",
            "busy: skipped (optional)",
            "clamped: could not: wrote 2, kernel reads back 1",
            "gone: could not: wrote 2, cannot read /proc/sys/gone back",
            "nofile: could not: not settable from here: ulimit -n 101024",
        ];
        assert_eq!(run(&checks, false, true, None), expect);
        let optional = run(&checks[2..3], true, true, Some(libc::EROFS));
        assert_eq!(
            optional,
            ["busy: could not: read-only /proc/sys in this sandbox"]
        );
        let user = run(&checks[..1], false, false, None);
        assert_eq!(user, ["a: could not: not root: sysctl -w a=2"]);
    }

    #[test]
    fn describes_errors() {
        let cases: &[(i32, &str)] = &[
            (libc::EROFS, "read-only /proc/sys in this sandbox"),
            (
                libc::EACCES,
                "permission denied (a sysctl this container or network namespace may not set)",
            ),
            (libc::ENOENT, "not present on this kernel"),
            (libc::EINVAL, "the kernel rejected the value"),
        ];
        for (code, text) in cases {
            assert_eq!(describe(&io::Error::from_raw_os_error(*code)), *text);
        }
    }
}
