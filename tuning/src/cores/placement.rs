//! Placement: which cores the shards take and where the sidecar threads (bus, keeper) may run.
//!
//! Pure: takes the requested and the online core lists, returns a [`Placement`]. It does not read
//! the host (see [`CoreList::online`]) and does not pin anything (see [`super::pin_current_thread`]).

use super::CoreList;

/// Where shards and sidecars run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One shard (glommio executor) per entry, pinned to that core, ascending.
    pub shards: Vec<usize>,
    /// Cores the sidecar threads share: the online cores no shard uses. `None` means the
    /// sidecars float (unpinned), because every online core has a shard or there are no sidecars.
    pub sidecars: Option<Vec<usize>>,
}

/// Why a placement cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No core was requested.
    #[error("no cores requested for shards")]
    NoShards,
    /// Some requested cores are not online (or this process may not run on them).
    #[error("core(s) {missing} are not available to this process (online: {online})")]
    NotOnline {
        /// The requested cores that are not online.
        missing: CoreList,
        /// The cores this process may run on.
        online: CoreList,
    },
}

/// Places one shard on each `requested` core and the `sidecar_threads` sidecars on the rest.
///
/// Every requested core must be online. Sidecars get the online cores without a shard when there
/// are any; otherwise (or when `sidecar_threads` is 0) `sidecars` is `None` and they float.
pub fn plan(
    requested: &CoreList,
    online: &CoreList,
    sidecar_threads: usize,
) -> Result<Placement, PlanError> {
    if requested.is_empty() {
        return Err(PlanError::NoShards);
    }
    let missing: CoreList = requested
        .iter()
        .filter(|&core| !online.contains(core))
        .collect();
    if !missing.is_empty() {
        return Err(PlanError::NotOnline {
            missing,
            online: online.clone(),
        });
    }
    let free: Vec<usize> = online
        .iter()
        .filter(|&core| !requested.contains(core))
        .collect();
    let sidecars = (sidecar_threads > 0 && !free.is_empty()).then_some(free);
    Ok(Placement {
        shards: requested.iter().collect(),
        sidecars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> CoreList {
        if text.is_empty() {
            return CoreList::default();
        }
        text.parse().expect("test lists are valid")
    }

    /// `expect`: `Ok((shards, sidecars))` with `"-"` for floating sidecars, or `Err(missing)`.
    fn check(requested: &str, online: &str, sidecars: usize, expect: Result<(&str, &str), &str>) {
        let got = plan(&list(requested), &list(online), sidecars);
        let got = match &got {
            Ok(placement) => {
                let shards: CoreList = placement.shards.iter().copied().collect();
                let sidecars = match &placement.sidecars {
                    Some(cores) => cores.iter().copied().collect::<CoreList>().to_string(),
                    None => "-".to_string(),
                };
                Ok((shards.to_string(), sidecars))
            }
            Err(PlanError::NotOnline { missing, .. }) => Err(missing.to_string()),
            Err(PlanError::NoShards) => Err("none".to_string()),
        };
        let expect = expect
            .map(|(shards, sidecars)| (shards.to_string(), sidecars.to_string()))
            .map_err(str::to_string);
        assert_eq!(got, expect, "plan({requested:?}, {online:?}, {sidecars})");
    }

    #[test]
    fn plans() {
        type Case<'a> = (&'a str, &'a str, usize, Result<(&'a str, &'a str), &'a str>);
        let cases: &[Case<'_>] = &[
            // Every online core has a shard: sidecars float.
            ("0-1", "0-1", 2, Ok(("0-1", "-"))),
            ("0-7", "0-7", 1, Ok(("0-7", "-"))),
            // Free cores take the sidecars.
            ("1", "0-1", 2, Ok(("1", "0"))),
            ("0-5", "0-7", 2, Ok(("0-5", "6-7"))),
            ("0,2", "0-3", 1, Ok(("0,2", "1,3"))),
            // No sidecars: nothing to place.
            ("0", "0-3", 0, Ok(("0", "-"))),
            // Online sets with holes (cgroup cpusets, offline CPUs).
            ("2,4", "2,4,6", 2, Ok(("2,4", "6"))),
            // Requested cores that are not online are named.
            ("0-3", "0-1", 2, Err("2-3")),
            ("5", "0-3", 2, Err("5")),
            ("1,9", "2-4", 2, Err("1,9")),
            ("", "0-1", 2, Err("none")),
        ];
        for (requested, online, sidecars, expect) in cases {
            check(requested, online, *sidecars, *expect);
        }
    }

    #[test]
    fn error_names_the_core() {
        let error = plan(&list("0,3"), &list("0-1"), 1).expect_err("3 is offline");
        assert_eq!(
            error.to_string(),
            "core(s) 3 are not available to this process (online: 0-1)"
        );
    }
}
