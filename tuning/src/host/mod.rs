//! Host checks: the `cloudsocket tune` report and its `--apply`.
//!
//! Owns turning host facts (read through a [`Probe`]) into [`Check`]s, each with the value found,
//! the value recommended for N connections and the exact command to set it; rendering them as a
//! table or JSON; and [`apply`], which writes what it may and says what it could not. The logic
//! from facts to recommendations is pure and tested against [`FixtureProbe`]s. It does not raise
//! this process's own limits (see [`crate::limits`]) and does not parse the command line.

mod apply;
mod irq;
mod probe;
mod render;
mod rlimit;
mod sysctl;
mod topology;

pub use apply::{ApplyResult, Outcome, apply, apply_with};
pub use probe::{FixtureProbe, HostProbe, Probe};
pub use render::{render_apply, render_apply_json, render_json, render_table};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked: a sysctl key (`net.core.somaxconn`), `nofile`, `irq 38 virtio2-input.0`...
    pub name: String,
    /// The value found on the host, or why there is none (`missing: /proc/sys/...`).
    pub found: String,
    /// The value recommended for the requested connections, with a short note where useful.
    pub recommended: String,
    /// The exact command that sets the recommended value (`-` when there is nothing to do).
    pub command: String,
    /// Whether the found value already meets the recommendation.
    pub ok: bool,
    /// A nice-to-have (busy polling, IRQ pinning...): shown, but [`apply`] skips it unless asked.
    pub optional: bool,
    /// How [`apply`] sets it.
    pub fix: Fix,
}

/// How a check's recommendation is put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Write `value` to the file at `path` (a `/proc/sys` or `/proc/irq` file).
    Write {
        /// The file to write.
        path: String,
        /// The value to write.
        value: String,
    },
    /// Not settable by this process (a process limit, kernel command line, core choice): the
    /// check's `command` says what to do.
    Manual,
}

/// Checks the real host for `connections` concurrent connections (all shards together).
pub fn report(connections: u64) -> Vec<Check> {
    report_with(&HostProbe, connections)
}

/// Checks the host seen through `probe`: pure given the probe, so tests pass a [`FixtureProbe`].
pub fn report_with(probe: &dyn Probe, connections: u64) -> Vec<Check> {
    let online = topology::online(probe);
    let shards = online.len().max(1);
    let mut checks = topology::checks(probe, &online);
    checks.extend(rlimit::checks(probe, connections, shards));
    checks.extend(sysctl::checks(probe, connections));
    checks.extend(irq::checks(probe, &online));
    checks.push(ktls(probe));
    checks
}

/// Whether the kernel offers kernel TLS (the `tls` ULP): informational. `wss://` runs its
/// record layer in user space today; on a kernel with kTLS the record layer could move to
/// the kernel after the handshake (rustls hands its keys over for that), a later step.
fn ktls(probe: &dyn Probe) -> Check {
    const ULPS: &str = "/proc/sys/net/ipv4/tcp_available_ulp";
    let found = probe.read(ULPS).map(|text| normalize(&text));
    let ok = found
        .as_deref()
        .is_some_and(|ulps| ulps.split(' ').any(|u| u == "tls"));
    Check {
        name: "kTLS (tls ULP)".into(),
        found: match found {
            Some(ulps) if ulps.is_empty() => "no ULP".into(),
            Some(ulps) => ulps,
            None => format!("missing: {ULPS}"),
        },
        recommended: "tls (wss:// works without it, in user space)".into(),
        command: if ok {
            "-".into()
        } else {
            "modprobe tls".into()
        },
        ok,
        optional: true,
        fix: Fix::Manual,
    }
}

/// Collapses runs of whitespace (tabs in `tcp_rmem`, trailing newlines) into single spaces.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktls_is_reported_from_the_available_ulps() {
        let with: FixtureProbe<'_> = [("/proc/sys/net/ipv4/tcp_available_ulp", "mptcp tls\n")]
            .into_iter()
            .collect();
        assert!(ktls(&with).ok);
        let without: FixtureProbe<'_> = [("/proc/sys/net/ipv4/tcp_available_ulp", "mptcp\n")]
            .into_iter()
            .collect();
        let check = ktls(&without);
        assert!(!check.ok && check.optional);
        assert_eq!(check.command, "modprobe tls");
        assert!(ktls(&FixtureProbe::default()).found.starts_with("missing"));
    }

    /// A small two-core VM, like the one this crate was written on.
    pub(super) fn vm() -> FixtureProbe<'static> {
        [
            ("/sys/devices/system/cpu/online", "0-1\n"),
            ("/sys/devices/system/cpu/isolated", "\n"),
            (
                "/sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
                "0\n",
            ),
            (
                "/sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
                "1\n",
            ),
            ("/sys/devices/system/node/node0/cpulist", "0-1\n"),
            ("rlimit/nofile", "20000 20000"),
            ("rlimit/memlock", "8388608 8388608"),
            ("/proc/sys/fs/file-max", "2466174\n"),
            ("/proc/sys/fs/nr_open", "1048576\n"),
            ("/proc/sys/net/core/somaxconn", "4096\n"),
            ("/proc/sys/net/ipv4/tcp_max_syn_backlog", "2048\n"),
            ("/proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t33554432\n"),
            ("/proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n"),
            ("/proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n"),
            ("/proc/sys/net/core/rmem_max", "4194304\n"),
            ("/proc/sys/net/core/wmem_max", "4194304\n"),
            ("/proc/sys/net/core/rmem_default", "212992\n"),
            ("/proc/sys/net/core/wmem_default", "212992\n"),
            ("/proc/sys/net/core/busy_poll", "0\n"),
            ("/proc/sys/net/core/busy_read", "0\n"),
            ("/proc/sys/kernel/io_uring_disabled", "0\n"),
            (
                "/proc/interrupts",
                "           CPU0       CPU1\n 26:  0  10  IO-APIC   4-edge      ttyS0\n \
                 38:  0  2850  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
                 39:  2366  0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
                 NMI:  0  0   Non-maskable interrupts\n",
            ),
            ("/proc/irq/38/smp_affinity_list", "1\n"),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn report_covers_every_area() {
        let checks = report_with(&vm(), 100_000);
        let names: Vec<&str> = checks.iter().map(|check| check.name.as_str()).collect();
        let expected = [
            "cores",
            "smt siblings",
            "numa nodes",
            "isolated cores",
            "nofile",
            "memlock",
            "fs.file-max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.ip_local_port_range",
            "net.core.rmem_default",
            "net.core.busy_read",
            "kernel.io_uring_disabled",
            "irq 38 virtio2-input.0",
        ];
        for name in expected {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn an_empty_host_is_findings_not_panics() {
        let checks = report_with(&FixtureProbe::default(), 100_000);
        assert!(checks.len() > 10);
        let somaxconn = checks
            .iter()
            .find(|check| check.name == "net.core.somaxconn");
        let somaxconn = somaxconn.expect("somaxconn is always checked");
        assert_eq!(somaxconn.found, "missing: /proc/sys/net/core/somaxconn");
        assert!(!somaxconn.ok);
    }
}
