//! Process-limit checks: open files per connection and locked memory per shard.
//!
//! Owns the recommendations for `RLIMIT_NOFILE` and `RLIMIT_MEMLOCK`. These are per-process limits
//! set by whoever launches `cloudsocket` (shell, systemd), so they are [`Fix::Manual`]; the binary
//! itself only raises soft to hard at start ([`crate::limits`]).

use super::{Check, Fix, Probe};
use crate::limits::{Limit, Resource, UNLIMITED};

/// Spare descriptors per process beyond one per connection: listeners, rings, sidecars, logs.
const NOFILE_SPARE: u64 = 1024;

/// Locked memory each shard's io_uring rings and registered buffers want.
const MEMLOCK_PER_SHARD_BYTES: u64 = 8 << 20;

pub(super) fn checks(probe: &dyn Probe, connections: u64, shards: usize) -> Vec<Check> {
    let nofile = connections.saturating_add(NOFILE_SPARE);
    let memlock = MEMLOCK_PER_SHARD_BYTES.saturating_mul(shards as u64);
    vec![
        check(
            probe,
            Resource::Nofile,
            nofile,
            format!(">= {nofile} (connections + {NOFILE_SPARE})"),
            format!("ulimit -n {nofile} (systemd: LimitNOFILE={nofile}; needs fs.nr_open >= it)"),
        ),
        check(
            probe,
            Resource::Memlock,
            memlock,
            format!(
                ">= {} (8 MiB x {shards} shards)",
                Resource::Memlock.format(memlock)
            ),
            format!(
                "ulimit -l {} (systemd: LimitMEMLOCK={memlock})",
                memlock / 1024
            ),
        ),
    ]
}

/// The hard limit decides: the binary raises soft to hard at start.
fn check(
    probe: &dyn Probe,
    resource: Resource,
    need: u64,
    recommended: String,
    command: String,
) -> Check {
    let limit = probe.limit(resource);
    let found = match limit {
        Some(Limit { soft, hard }) => {
            format!(
                "soft {}, hard {}",
                resource.format(soft),
                resource.format(hard)
            )
        }
        None => "unreadable".to_string(),
    };
    Check {
        name: resource.name().to_string(),
        found,
        recommended,
        command,
        ok: limit.is_some_and(|limit| limit.hard == UNLIMITED || limit.hard >= need),
        optional: false,
        fix: Fix::Manual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixtureProbe;

    #[test]
    fn limits_scale_with_connections_and_shards() {
        // (nofile, memlock, connections, shards, expect ok nofile, ok memlock)
        let cases: &[(&str, &str, u64, usize, bool, bool)] = &[
            ("1024 20000", "8388608 8388608", 9_000, 1, true, true),
            ("1024 20000", "8388608 8388608", 100_000, 2, false, false),
            (
                "1024 unlimited",
                "unlimited unlimited",
                1_000_000,
                64,
                true,
                true,
            ),
            ("1024 1024", "65536 65536", 0, 1, true, false),
        ];
        for (nofile, memlock, connections, shards, ok_nofile, ok_memlock) in cases {
            let probe: FixtureProbe<'_> =
                [("rlimit/nofile", *nofile), ("rlimit/memlock", *memlock)]
                    .into_iter()
                    .collect();
            let checks = checks(&probe, *connections, *shards);
            let ok: Vec<bool> = checks.iter().map(|check| check.ok).collect();
            assert_eq!(
                ok,
                [*ok_nofile, *ok_memlock],
                "{nofile} {memlock} {connections} {shards}"
            );
        }
    }

    #[test]
    fn renders_values_and_commands() {
        let probe: FixtureProbe<'_> = [
            ("rlimit/nofile", "20000 20000"),
            ("rlimit/memlock", "8388608 8388608"),
        ]
        .into_iter()
        .collect();
        let checks = checks(&probe, 100_000, 2);
        assert_eq!(checks[0].found, "soft 20000, hard 20000");
        assert_eq!(checks[0].recommended, ">= 101024 (connections + 1024)");
        assert!(checks[0].command.starts_with("ulimit -n 101024"));
        assert_eq!(checks[1].found, "soft 8 MiB, hard 8 MiB");
        assert_eq!(checks[1].recommended, ">= 16 MiB (8 MiB x 2 shards)");
        assert!(checks[1].command.starts_with("ulimit -l 16384"));
        let missing = super::checks(&FixtureProbe::default(), 1, 1);
        assert_eq!(missing[0].found, "unreadable");
        assert!(!missing[0].ok);
    }
}
