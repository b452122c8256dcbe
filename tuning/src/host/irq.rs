//! NIC IRQ affinity checks: which cores take the network interrupts.
//!
//! Owns finding NIC queue IRQs in `/proc/interrupts` (names matching `eth`, `ens`, `enp`, `mlx`,
//! `virtio…input` or `…-TxRx`) and recommending one queue per shard core, round robin, so each
//! shard's `SO_REUSEPORT` socket is fed by its own core's softirq. Pinning is optional (irqbalance
//! may move IRQs back); it does not stop irqbalance. Finding no NIC IRQ is a finding, not an error.

use super::{Check, Fix, Probe, normalize};
use crate::cores::CoreList;

pub(super) fn checks(probe: &dyn Probe, online: &CoreList) -> Vec<Check> {
    let irqs = probe.read("/proc/interrupts").map(|text| nic_irqs(&text));
    let Some(irqs) = irqs.filter(|irqs| !irqs.is_empty()) else {
        return vec![none_found(probe)];
    };
    let cores: Vec<usize> = online.iter().collect();
    irqs.iter()
        .enumerate()
        .map(|(index, (irq, name))| {
            let core = cores.get(index % cores.len().max(1)).copied().unwrap_or(0);
            pin(probe, *irq, name, core)
        })
        .collect()
}

/// `(irq, name)` of the NIC IRQs in `/proc/interrupts`, by IRQ number, each once.
fn nic_irqs(interrupts: &str) -> Vec<(u32, String)> {
    let mut irqs: Vec<(u32, String)> = interrupts
        .lines()
        .filter_map(|line| {
            let (irq, rest) = line.split_once(':')?;
            let irq = irq.trim().parse().ok()?;
            let name = rest.split_whitespace().last()?;
            is_nic(name).then(|| (irq, name.to_string()))
        })
        .collect();
    irqs.sort();
    irqs.dedup_by_key(|(irq, _)| *irq);
    irqs
}

/// The name pattern `eth|ens|enp|mlx|virtio.*input|.*-TxRx`, unanchored.
fn is_nic(name: &str) -> bool {
    ["eth", "ens", "enp", "mlx", "-TxRx"]
        .iter()
        .any(|part| name.contains(part))
        || name
            .find("virtio")
            .is_some_and(|at| name[at..].contains("input"))
}

fn pin(probe: &dyn Probe, irq: u32, name: &str, core: usize) -> Check {
    let path = format!("/proc/irq/{irq}/smp_affinity_list");
    let found = probe.read(&path).map(|text| normalize(&text));
    let ok = found
        .as_deref()
        .and_then(|text| text.parse::<CoreList>().ok())
        == Some(CoreList::from_iter([core]));
    Check {
        name: format!("irq {irq} {name}"),
        found: found.unwrap_or_else(|| format!("missing: {path}")),
        recommended: format!("{core} (optional: one queue per shard core)"),
        command: format!("echo {core} > {path}"),
        ok,
        optional: true,
        fix: Fix::Write {
            path,
            value: core.to_string(),
        },
    }
}

fn none_found(probe: &dyn Probe) -> Check {
    let found = match probe.read("/proc/interrupts") {
        Some(_) => "no NIC IRQ found in /proc/interrupts",
        None => "unreadable: /proc/interrupts",
    };
    Check {
        name: "nic irqs".to_string(),
        found: found.to_string(),
        recommended: "-".to_string(),
        command: "-".to_string(),
        ok: true,
        optional: true,
        fix: Fix::Manual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixtureProbe;

    #[test]
    fn names() {
        let cases: &[(&str, bool)] = &[
            ("eth0", true),
            ("eth0-TxRx-3", true),
            ("ens5-Tx-Rx-0", true),
            ("enp3s0f0-rx-1", true),
            ("mlx5_comp7@pci:0000:3b:00.0", true),
            ("i40e-em1-TxRx-2", true),
            ("virtio2-input.0", true),
            ("virtio4-input", true),
            ("virtio2-output.0", false),
            ("virtio1-req.0", false),
            ("ttyS0", false),
            ("nvme0q1", false),
            ("ACPI:Ged", false),
        ];
        for (name, nic) in cases {
            assert_eq!(is_nic(name), *nic, "{name}");
        }
    }

    #[test]
    fn parses_proc_interrupts() {
        let text = "           CPU0       CPU1\n\
             26:   0   10  IO-APIC   4-edge      ttyS0\n\
             38:   0 2850  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
             38:   0 2850  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
             34:  20    0  PCI-MSIX-0000:00:05.0   1-edge      virtio4-input\n\
            NMI:   0    0   Non-maskable interrupts\n\
            ERR:   0\n";
        let irqs = nic_irqs(text);
        let expect = [
            (34, "virtio4-input".to_string()),
            (38, "virtio2-input.0".to_string()),
        ];
        assert_eq!(irqs, expect);
    }

    /// (name, found, ok, command) per check.
    fn check(files: &[(&str, &str)], online: &str, expect: &[(&str, &str, bool, &str)]) {
        let probe: FixtureProbe<'_> = files.iter().copied().collect();
        let online: CoreList = online.parse().expect("valid list");
        let checks = checks(&probe, &online);
        let got: Vec<(&str, &str, bool, &str)> = checks
            .iter()
            .map(|c| (c.name.as_str(), c.found.as_str(), c.ok, c.command.as_str()))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn spreads_queues_over_cores() {
        let interrupts =
            " 40: 0 0 PCI eth0-TxRx-0\n 41: 0 0 PCI eth0-TxRx-1\n 42: 0 0 PCI eth0-TxRx-2\n";
        check(
            &[
                ("/proc/interrupts", interrupts),
                ("/proc/irq/40/smp_affinity_list", "0-1\n"),
                ("/proc/irq/41/smp_affinity_list", "1\n"),
            ],
            "0-1",
            &[
                (
                    "irq 40 eth0-TxRx-0",
                    "0-1",
                    false,
                    "echo 0 > /proc/irq/40/smp_affinity_list",
                ),
                (
                    "irq 41 eth0-TxRx-1",
                    "1",
                    true,
                    "echo 1 > /proc/irq/41/smp_affinity_list",
                ),
                (
                    "irq 42 eth0-TxRx-2",
                    "missing: /proc/irq/42/smp_affinity_list",
                    false,
                    "echo 0 > /proc/irq/42/smp_affinity_list",
                ),
            ],
        );
    }

    #[test]
    fn no_nic_is_a_finding() {
        let found = "no NIC IRQ found in /proc/interrupts";
        check(
            &[("/proc/interrupts", " 26: 0 10 IO-APIC ttyS0\n")],
            "0-1",
            &[("nic irqs", found, true, "-")],
        );
        check(
            &[],
            "0-1",
            &[("nic irqs", "unreadable: /proc/interrupts", true, "-")],
        );
    }
}
