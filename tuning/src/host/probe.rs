//! Probes: where the host checks read their facts from.
//!
//! Owns the [`Probe`] trait, the real [`HostProbe`] (procfs, sysfs, `getrlimit`) and the
//! [`FixtureProbe`] that tests fill with path → content pairs. Probes only read: a missing or
//! unreadable file is `None`, a finding for the checks, never an error or a panic. Writing is
//! [`super::apply`]'s job.

use std::collections::HashMap;

use crate::limits::{self, Limit, Resource, UNLIMITED};

/// Read-only access to the host facts the checks need.
pub trait Probe {
    /// The contents of the file at `path`, or `None` when it is missing or unreadable.
    fn read(&self, path: &str) -> Option<String>;
    /// The entry names in directory `dir`, sorted; empty when it is missing.
    fn list(&self, dir: &str) -> Vec<String>;
    /// This process's limit for `resource`, or `None` when it cannot be read.
    fn limit(&self, resource: Resource) -> Option<Limit>;
}

/// The real host: `/proc`, `/sys` and `getrlimit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostProbe;

/// Canned host facts for tests: file path → content. Process limits live under the pseudo paths
/// `rlimit/nofile` and `rlimit/memlock` as `"SOFT HARD"` (`unlimited` allowed).
#[derive(Debug, Clone, Default)]
pub struct FixtureProbe<'a> {
    files: HashMap<&'a str, &'a str>,
}

// === HostProbe ===

impl Probe for HostProbe {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    fn limit(&self, resource: Resource) -> Option<Limit> {
        limits::current(resource).ok()
    }
}

// === FixtureProbe ===

impl<'a> From<HashMap<&'a str, &'a str>> for FixtureProbe<'a> {
    fn from(files: HashMap<&'a str, &'a str>) -> Self {
        FixtureProbe { files }
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for FixtureProbe<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        FixtureProbe {
            files: pairs.into_iter().collect(),
        }
    }
}

impl Probe for FixtureProbe<'_> {
    fn read(&self, path: &str) -> Option<String> {
        self.files.get(path).map(|content| content.to_string())
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn limit(&self, resource: Resource) -> Option<Limit> {
        let text = self
            .files
            .get(format!("rlimit/{}", resource.name()).as_str())?;
        let mut values = text.split_whitespace().map(|value| match value {
            "unlimited" => Some(UNLIMITED),
            number => number.parse().ok(),
        });
        let (soft, hard) = (values.next()??, values.next()??);
        Some(Limit { soft, hard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_reads_lists_and_limits() {
        let probe: FixtureProbe<'_> = [
            ("/sys/devices/system/node/node0/cpulist", "0-1\n"),
            ("/sys/devices/system/node/node1/cpulist", "2-3\n"),
            ("/sys/devices/system/node/possible", "0-1\n"),
            ("rlimit/nofile", "1024 20000"),
            ("rlimit/memlock", "unlimited unlimited"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            probe.read("/sys/devices/system/node/possible").as_deref(),
            Some("0-1\n")
        );
        assert_eq!(probe.read("/missing"), None);
        assert_eq!(
            probe.list("/sys/devices/system/node"),
            ["node0", "node1", "possible"]
        );
        assert_eq!(
            probe.list("/sys/devices/system/node/"),
            ["node0", "node1", "possible"]
        );
        assert!(probe.list("/nowhere").is_empty());
        let nofile = Limit {
            soft: 1024,
            hard: 20000,
        };
        assert_eq!(probe.limit(Resource::Nofile), Some(nofile));
        let memlock = Limit {
            soft: UNLIMITED,
            hard: UNLIMITED,
        };
        assert_eq!(probe.limit(Resource::Memlock), Some(memlock));
    }

    #[test]
    fn host_probe_finds_missing_files_without_failing() {
        assert_eq!(HostProbe.read("/proc/sys/no/such/setting"), None);
        assert!(HostProbe.list("/no/such/dir").is_empty());
        assert!(HostProbe.limit(Resource::Nofile).is_some());
    }
}
