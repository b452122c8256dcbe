//! CPU topology checks: online cores, SMT siblings, NUMA nodes and isolated cores.
//!
//! Owns reading `/sys/devices/system/cpu` and `/sys/devices/system/node` through a [`Probe`] and
//! advising where shards go. These are facts and advice, never written: every fix is
//! [`Fix::Manual`] (a `--cores` choice or a kernel command line). Placement itself is
//! [`crate::cores::plan`].

use super::{Check, Fix, Probe, normalize};
use crate::cores::CoreList;

const CPU: &str = "/sys/devices/system/cpu";
const NODE: &str = "/sys/devices/system/node";

/// The host's online CPUs (`/sys/devices/system/cpu/online`); empty when unreadable.
pub(super) fn online(probe: &dyn Probe) -> CoreList {
    read_list(probe, &format!("{CPU}/online")).unwrap_or_default()
}

pub(super) fn checks(probe: &dyn Probe, online: &CoreList) -> Vec<Check> {
    vec![
        cores(online),
        siblings(probe, online),
        numa(probe),
        isolated(probe, online),
    ]
}

fn read_list(probe: &dyn Probe, path: &str) -> Option<CoreList> {
    probe.read(path)?.trim().parse().ok()
}

fn info(name: &str, found: String, recommended: String, command: String) -> Check {
    Check {
        name: name.to_string(),
        found,
        recommended,
        command,
        ok: true,
        optional: false,
        fix: Fix::Manual,
    }
}

fn cores(online: &CoreList) -> Check {
    if online.is_empty() {
        let found = format!("unreadable: {CPU}/online");
        return info(
            "cores",
            found,
            "--cores all".to_string(),
            "cloudsocket --cores all".to_string(),
        );
    }
    let found = format!("{online} ({} online)", online.len());
    let recommended = format!("one shard per core: --cores {online}");
    info(
        "cores",
        found,
        recommended,
        format!("cloudsocket --cores {online}"),
    )
}

/// Groups of hyper-threads; with SMT, one shard per physical core (the first sibling of each).
fn siblings(probe: &dyn Probe, online: &CoreList) -> Check {
    let mut groups: Vec<CoreList> = Vec::new();
    for core in online.iter() {
        let path = format!("{CPU}/cpu{core}/topology/thread_siblings_list");
        if let Some(group) = read_list(probe, &path)
            && !groups.contains(&group)
        {
            groups.push(group);
        }
    }
    let firsts: CoreList = groups
        .iter()
        .filter_map(|group| group.iter().next())
        .collect();
    let smt = groups.iter().any(|group| group.len() > 1);
    let (found, recommended) = match (groups.is_empty(), smt) {
        (true, _) => (
            "unreadable".to_string(),
            "one shard per physical core".to_string(),
        ),
        (false, false) => (
            "none (one thread per core)".to_string(),
            "one shard per core".to_string(),
        ),
        (false, true) => {
            let groups: Vec<String> = groups.iter().map(CoreList::to_string).collect();
            (
                groups.join(" "),
                format!("one shard per physical core: --cores {firsts}"),
            )
        }
    };
    let command = match smt {
        true => format!("cloudsocket --cores {firsts}"),
        false => "-".to_string(),
    };
    info("smt siblings", found, recommended, command)
}

/// NUMA nodes and their CPUs; on several nodes, keep shards and NIC IRQs on the NIC's node.
fn numa(probe: &dyn Probe) -> Check {
    let nodes: Vec<(String, CoreList)> = probe
        .list(NODE)
        .into_iter()
        .filter(|name| name.strip_prefix("node").is_some_and(is_number))
        .filter_map(|name| {
            let cpus = read_list(probe, &format!("{NODE}/{name}/cpulist"))?;
            Some((name, cpus))
        })
        .collect();
    let found = match nodes.is_empty() {
        true => format!("no {NODE}: one node"),
        false => {
            let nodes: Vec<String> = nodes
                .iter()
                .map(|(name, cpus)| format!("{name}: {cpus}"))
                .collect();
            nodes.join("; ")
        }
    };
    let (recommended, command) = match nodes.as_slice() {
        [] | [_] => ("one node: nothing to do".to_string(), "-".to_string()),
        [(name, cpus), ..] => (
            format!("keep shards and NIC IRQs on the NIC's node (e.g. {name})"),
            format!("cloudsocket --cores {cpus}  # cat /sys/class/net/IFACE/device/numa_node"),
        ),
    };
    info("numa nodes", found, recommended, command)
}

/// Isolated cores (`isolcpus=`): optional, for the lowest jitter on shard cores.
fn isolated(probe: &dyn Probe, online: &CoreList) -> Check {
    let path = format!("{CPU}/isolated");
    let found = match probe.read(&path).map(|text| normalize(&text)) {
        None => format!("unreadable: {path}"),
        Some(text) if text.is_empty() => "none".to_string(),
        Some(text) => text,
    };
    // Leave the first core for the kernel, sidecars and IRQ housekeeping.
    let shard_cores: CoreList = online.iter().skip(1).collect();
    let command = match shard_cores.is_empty() {
        true => "-".to_string(),
        false => format!("kernel cmdline: isolcpus={shard_cores} nohz_full={shard_cores} (reboot)"),
    };
    let recommended = "optional: isolate shard cores for the lowest jitter".to_string();
    info("isolated cores", found, recommended, command)
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixtureProbe;

    /// Runs the topology checks on `files`; returns (name, found, recommended, command) per check.
    fn check(files: &[(&str, &str)], expect: &[(&str, &str, &str, &str)]) {
        let probe: FixtureProbe<'_> = files.iter().copied().collect();
        let checks = checks(&probe, &online(&probe));
        let got: Vec<(&str, &str, &str, &str)> = checks
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.found.as_str(),
                    c.recommended.as_str(),
                    c.command.as_str(),
                )
            })
            .collect();
        assert_eq!(got, expect);
        assert!(
            checks
                .iter()
                .all(|check| check.ok && check.fix == Fix::Manual)
        );
    }

    #[test]
    fn two_core_vm() {
        check(
            &[
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
                ("/sys/devices/system/node/possible", "0\n"),
            ],
            &[
                (
                    "cores",
                    "0-1 (2 online)",
                    "one shard per core: --cores 0-1",
                    "cloudsocket --cores 0-1",
                ),
                (
                    "smt siblings",
                    "none (one thread per core)",
                    "one shard per core",
                    "-",
                ),
                ("numa nodes", "node0: 0-1", "one node: nothing to do", "-"),
                (
                    "isolated cores",
                    "none",
                    "optional: isolate shard cores for the lowest jitter",
                    "kernel cmdline: isolcpus=1 nohz_full=1 (reboot)",
                ),
            ],
        );
    }

    #[test]
    fn two_socket_smt_host() {
        let mut files = vec![
            ("/sys/devices/system/cpu/online", "0-7"),
            ("/sys/devices/system/cpu/isolated", "2-3,6-7\n"),
            ("/sys/devices/system/node/node0/cpulist", "0-1,4-5\n"),
            ("/sys/devices/system/node/node1/cpulist", "2-3,6-7\n"),
        ];
        let siblings = [
            ("0", "0,4"),
            ("1", "1,5"),
            ("2", "2,6"),
            ("3", "3,7"),
            ("4", "0,4"),
            ("5", "1,5"),
            ("6", "2,6"),
            ("7", "3,7"),
        ];
        let paths: Vec<String> = siblings
            .iter()
            .map(|(core, _)| {
                format!("/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list")
            })
            .collect();
        files.extend(
            paths
                .iter()
                .map(String::as_str)
                .zip(siblings.iter().map(|(_, list)| *list)),
        );
        check(
            &files,
            &[
                (
                    "cores",
                    "0-7 (8 online)",
                    "one shard per core: --cores 0-7",
                    "cloudsocket --cores 0-7",
                ),
                (
                    "smt siblings",
                    "0,4 1,5 2,6 3,7",
                    "one shard per physical core: --cores 0-3",
                    "cloudsocket --cores 0-3",
                ),
                (
                    "numa nodes",
                    "node0: 0-1,4-5; node1: 2-3,6-7",
                    "keep shards and NIC IRQs on the NIC's node (e.g. node0)",
                    "cloudsocket --cores 0-1,4-5  # cat /sys/class/net/IFACE/device/numa_node",
                ),
                (
                    "isolated cores",
                    "2-3,6-7",
                    "optional: isolate shard cores for the lowest jitter",
                    "kernel cmdline: isolcpus=1-7 nohz_full=1-7 (reboot)",
                ),
            ],
        );
    }

    #[test]
    fn nothing_readable() {
        check(
            &[],
            &[
                (
                    "cores",
                    "unreadable: /sys/devices/system/cpu/online",
                    "--cores all",
                    "cloudsocket --cores all",
                ),
                (
                    "smt siblings",
                    "unreadable",
                    "one shard per physical core",
                    "-",
                ),
                (
                    "numa nodes",
                    "no /sys/devices/system/node: one node",
                    "one node: nothing to do",
                    "-",
                ),
                (
                    "isolated cores",
                    "unreadable: /sys/devices/system/cpu/isolated",
                    "optional: isolate shard cores for the lowest jitter",
                    "-",
                ),
            ],
        );
    }
}
