//! Sysctl checks: file and socket limits, TCP buffer sizes, UDP buffers, busy polling, io_uring.
//!
//! Owns the recommended `/proc/sys` values for a dense edge with N connections and the
//! `sysctl -w` command for each. Pure given the [`Probe`]; it does not write (see [`super::apply`]).

use super::{Check, Fix, Probe, normalize};

/// From this many connections on, idle-socket memory matters and small TCP buffers are advised.
const DENSE_CONNECTIONS: u64 = 10_000;

/// The largest value the kernel accepts for `fs.nr_open`.
const NR_OPEN_MAX: u64 = 1_073_741_816;

const MIB: u64 = 1 << 20;

/// Small min/default TCP buffers for many mostly idle sockets; the max still allows bursts.
const TCP_BUFFERS: [u64; 3] = [4096, 16384, 4 * MIB];

pub(super) fn checks(probe: &dyn Probe, connections: u64) -> Vec<Check> {
    let files = connections
        .saturating_mul(2)
        .max(connections.saturating_add(1024));
    let sparse = connections < DENSE_CONNECTIONS;
    vec![
        at_least(probe, "fs.file-max", files, false),
        at_least(probe, "fs.nr_open", files.min(NR_OPEN_MAX), false),
        at_least(probe, "net.core.somaxconn", 4096, false),
        at_least(probe, "net.ipv4.tcp_max_syn_backlog", 4096, false),
        tcp_buffers(probe, "net.ipv4.tcp_rmem", sparse),
        tcp_buffers(probe, "net.ipv4.tcp_wmem", sparse),
        port_range(probe),
        at_least(probe, "net.core.rmem_max", 8 * MIB, false),
        at_least(probe, "net.core.wmem_max", 8 * MIB, false),
        at_least(probe, "net.core.rmem_default", MIB, true),
        at_least(probe, "net.core.wmem_default", MIB, true),
        at_least(probe, "net.core.busy_poll", 50, true),
        at_least(probe, "net.core.busy_read", 50, true),
        io_uring(probe),
    ]
}

/// `net.core.somaxconn` → `/proc/sys/net/core/somaxconn`.
fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// The found value (whitespace normalized), or the `missing: PATH` finding.
fn read(probe: &dyn Probe, key: &str) -> Result<String, String> {
    let path = path(key);
    probe
        .read(&path)
        .map(|text| normalize(&text))
        .ok_or(format!("missing: {path}"))
}

fn numbers(text: &str) -> Option<Vec<u64>> {
    text.split_whitespace()
        .map(|number| number.parse().ok())
        .collect()
}

fn command(key: &str, value: &str) -> String {
    match value.contains(' ') {
        true => format!("sysctl -w {key}=\"{value}\""),
        false => format!("sysctl -w {key}={value}"),
    }
}

fn check(
    key: &str,
    found: Result<String, String>,
    want: String,
    ok: bool,
    optional: bool,
) -> Check {
    let recommended = match optional {
        true => format!("{want} (optional)"),
        false => want.clone(),
    };
    Check {
        name: key.to_string(),
        found: found.unwrap_or_else(|missing| missing),
        recommended,
        command: command(key, &want),
        ok,
        optional,
        fix: Fix::Write {
            path: path(key),
            value: want,
        },
    }
}

/// A single number that should be at least `min`.
fn at_least(probe: &dyn Probe, key: &str, min: u64, optional: bool) -> Check {
    let found = read(probe, key);
    let ok = found
        .as_deref()
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .is_some_and(|v| v >= min);
    let mut check = check(key, found, min.to_string(), ok, optional);
    check.recommended = format!(">= {}", check.recommended);
    check
}

/// `min default max`: min and default small, max at least [`TCP_BUFFERS`]' (a larger max is kept).
fn tcp_buffers(probe: &dyn Probe, key: &str, sparse: bool) -> Check {
    let found = read(probe, key);
    let values = found
        .as_deref()
        .ok()
        .and_then(numbers)
        .filter(|values| values.len() == 3);
    let [min, default, max] = TCP_BUFFERS;
    let (ok, max) = match values.as_deref() {
        Some(&[found_min, found_default, found_max]) => (
            found_min <= min && found_default <= default && found_max >= max,
            found_max.max(max),
        ),
        _ => (false, max),
    };
    let want = format!("{min} {default} {max}");
    let mut check = check(key, found, want.clone(), ok, sparse);
    if sparse {
        check.recommended = format!("{want} (optional below {DENSE_CONNECTIONS} connections)");
    }
    check
}

/// Wide ephemeral ports: only matters when this host also dials out a lot (load generator).
fn port_range(probe: &dyn Probe) -> Check {
    let key = "net.ipv4.ip_local_port_range";
    let found = read(probe, key);
    let ok = found.as_deref().ok().and_then(numbers).is_some_and(
        |values| matches!(values.as_slice(), &[low, high] if low <= 1024 && high >= 65535),
    );
    let mut check = check(key, found, "1024 65535".to_string(), ok, true);
    check.recommended = "1024 65535 (optional: client-heavy hosts)".to_string();
    check
}

/// glommio needs io_uring: `kernel.io_uring_disabled` must be 0 (absent before Linux 6.6 = allowed).
fn io_uring(probe: &dyn Probe) -> Check {
    let key = "kernel.io_uring_disabled";
    let found = read(probe, key);
    let (found, ok) = match found {
        Ok(text) => {
            let ok = text == "0";
            (text, ok)
        }
        Err(_) => ("absent (io_uring allowed)".to_string(), true),
    };
    check(key, Ok(found), "0".to_string(), ok, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixtureProbe;

    /// One case: `key | file content ("-" = missing, "\t" allowed) | connections | found | ok |
    /// recommended`. The command is always `sysctl -w key=<recommended value>`.
    fn check_one(case: &str) {
        let fields: Vec<&str> = case.split(" | ").collect();
        let [key, content, connections, found, ok, recommended] = fields[..] else {
            panic!("bad case {case:?}");
        };
        let content = content.replace("\\t", "\t");
        let path = path(key);
        let file = (content != "-").then_some((path.as_str(), content.as_str()));
        let probe: FixtureProbe<'_> = file.into_iter().collect();
        let connections = connections.parse().expect("number");
        let checks = checks(&probe, connections);
        let check = checks
            .iter()
            .find(|check| check.name == key)
            .expect("key is checked");
        let Fix::Write { value, .. } = &check.fix else {
            panic!("{key} is written");
        };
        let got = (check.found.as_str(), check.ok, check.recommended.as_str());
        assert_eq!(got, (found, ok == "yes", recommended), "{case}");
        assert_eq!(check.command, command(key, value));
    }

    #[test]
    fn recommendations() {
        let cases = [
            "fs.file-max | 2466174\n | 100000 | 2466174 | yes | >= 200000",
            "fs.file-max | 100000\n | 100000 | 100000 | no | >= 200000",
            "fs.nr_open | 1048576 | 100 | 1048576 | yes | >= 1124",
            "fs.nr_open | 1048576 | 18446744073709551615 | 1048576 | no | >= 1073741816",
            "net.core.somaxconn | 4096\n | 100000 | 4096 | yes | >= 4096",
            "net.core.somaxconn | 128\n | 1 | 128 | no | >= 4096",
            "net.core.somaxconn | - | 1 | missing: /proc/sys/net/core/somaxconn | no | >= 4096",
            "net.core.somaxconn | garbage | 1 | garbage | no | >= 4096",
            "net.ipv4.tcp_max_syn_backlog | 2048 | 1 | 2048 | no | >= 4096",
            "net.ipv4.tcp_rmem | 4096\\t131072\\t33554432\n | 100000 | 4096 131072 33554432 | no | 4096 16384 33554432",
            "net.ipv4.tcp_wmem | 4096\\t16384\\t4194304\n | 100000 | 4096 16384 4194304 | yes | 4096 16384 4194304",
            "net.ipv4.tcp_rmem | 4096 131072 6291456 | 1000 | 4096 131072 6291456 | no | 4096 16384 6291456 (optional below 10000 connections)",
            "net.ipv4.tcp_rmem | 4096 131072 | 100000 | 4096 131072 | no | 4096 16384 4194304",
            "net.ipv4.ip_local_port_range | 32768\\t60999\n | 1 | 32768 60999 | no | 1024 65535 (optional: client-heavy hosts)",
            "net.ipv4.ip_local_port_range | 1024 65535 | 1 | 1024 65535 | yes | 1024 65535 (optional: client-heavy hosts)",
            "net.core.rmem_max | 4194304 | 1 | 4194304 | no | >= 8388608",
            "net.core.wmem_max | 16777216 | 1 | 16777216 | yes | >= 8388608",
            "net.core.rmem_default | 212992 | 1 | 212992 | no | >= 1048576 (optional)",
            "net.core.busy_poll | 0 | 1 | 0 | no | >= 50 (optional)",
            "net.core.busy_read | 50 | 1 | 50 | yes | >= 50 (optional)",
            "kernel.io_uring_disabled | 0\n | 1 | 0 | yes | 0",
            "kernel.io_uring_disabled | 2\n | 1 | 2 | no | 0",
            "kernel.io_uring_disabled | - | 1 | absent (io_uring allowed) | yes | 0",
        ];
        for case in cases {
            check_one(case);
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            command("net.core.somaxconn", "4096"),
            "sysctl -w net.core.somaxconn=4096"
        );
        let quoted = "sysctl -w net.ipv4.tcp_rmem=\"4096 16384 4194304\"";
        assert_eq!(command("net.ipv4.tcp_rmem", "4096 16384 4194304"), quoted);
    }

    #[test]
    fn fixes_write_the_sysctl_file() {
        let checks = checks(&FixtureProbe::default(), 100_000);
        let rmem = checks
            .iter()
            .find(|check| check.name == "net.ipv4.tcp_rmem")
            .expect("checked");
        let fix = Fix::Write {
            path: "/proc/sys/net/ipv4/tcp_rmem".to_string(),
            value: "4096 16384 4194304".to_string(),
        };
        assert_eq!(rmem.fix, fix);
        let optional: Vec<&str> = checks
            .iter()
            .filter(|check| check.optional)
            .map(|check| check.name.as_str())
            .collect();
        let expected = [
            "net.ipv4.ip_local_port_range",
            "net.core.rmem_default",
            "net.core.wmem_default",
            "net.core.busy_poll",
            "net.core.busy_read",
        ];
        assert_eq!(optional, expected);
    }
}
