//! Core lists: the `--cores` syntax (`0-3`, `0,2,4-7`, `all`) and the set of CPUs a process may use.
//!
//! Owns parsing and printing core lists ([`CoreList`], [`CoreSpec`]), planning where shards and
//! sidecars run ([`plan`]) and pinning the calling thread ([`pin_current_thread`]). It does not start
//! executors or threads: the edge hands the [`Placement`] to glommio and to its sidecar threads.

mod affinity;
mod placement;

pub use affinity::{pin_current_thread, pin_current_thread_to};
pub use placement::{Placement, PlanError, plan};

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The largest CPU number `--cores` accepts: anything above it is a typo, not a machine.
pub const CORE_MAX: usize = 4096;

/// Why a `--cores` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreListError {
    /// The whole list is empty (or only spaces).
    #[error("empty core list")]
    Empty,
    /// An item between commas is empty, as in `0,,2` or `0,`.
    #[error("empty item {position} in core list (items count from 1)")]
    EmptyItem {
        /// 1-based index of the empty item.
        position: usize,
    },
    /// An item is neither a number nor a `start-end` range.
    #[error("{item:?} is not a core number or range (like 3 or 0-3)")]
    Invalid {
        /// The offending item, trimmed.
        item: String,
    },
    /// A range whose end is below its start, as in `3-1`.
    #[error("reversed range {start}-{end}: did you mean {end}-{start}?")]
    Reversed {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
    },
    /// A core appears twice, directly or through overlapping ranges.
    #[error("core {core} is listed twice")]
    Duplicate {
        /// The repeated core.
        core: usize,
    },
    /// A core number above [`CORE_MAX`].
    #[error("core {item} is above the limit of {CORE_MAX}")]
    TooLarge {
        /// The offending number as written.
        item: String,
    },
}

/// A sorted set of CPU numbers, without repeats. Prints in `--cores` syntax (`0-3,5`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreList {
    cores: BTreeSet<usize>,
}

/// What `--cores` asked for: every core this process may use, or an explicit list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSpec {
    /// `all`: resolved against [`CoreList::online`] at start.
    All,
    /// An explicit list such as `0,2,4-7`.
    List(CoreList),
}

// === CoreList ===

impl CoreList {
    /// Whether `core` is in the list.
    pub fn contains(&self, core: usize) -> bool {
        self.cores.contains(&core)
    }

    /// The cores in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.cores.iter().copied()
    }

    /// How many cores the list holds.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Whether the list holds no core.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

impl FromIterator<usize> for CoreList {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        CoreList {
            cores: iter.into_iter().collect(),
        }
    }
}

impl FromStr for CoreList {
    type Err = CoreListError;

    /// Parses `0-3`, `0,2,4-7`, ` 1 , 3 ` (spaces trimmed). `all` is a [`CoreSpec`], not a list.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().is_empty() {
            return Err(CoreListError::Empty);
        }
        let mut cores = BTreeSet::new();
        for (index, item) in input.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                return Err(CoreListError::EmptyItem {
                    position: index + 1,
                });
            }
            let (start, end) = parse_item(item)?;
            for core in start..=end {
                if !cores.insert(core) {
                    return Err(CoreListError::Duplicate { core });
                }
            }
        }
        Ok(CoreList { cores })
    }
}

impl fmt::Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut cores = self.iter().peekable();
        while let Some(start) = cores.next() {
            let mut end = start;
            while cores.peek() == Some(&(end + 1)) {
                end += 1;
                cores.next();
            }
            let sep = if first { "" } else { "," };
            first = false;
            match end == start {
                true => write!(f, "{sep}{start}")?,
                false => write!(f, "{sep}{start}-{end}")?,
            }
        }
        Ok(())
    }
}

/// One comma-separated item: `n` or `start-end` (spaces around `-` allowed).
fn parse_item(item: &str) -> Result<(usize, usize), CoreListError> {
    let (start, end) = match item.split_once('-') {
        Some((start, end)) => (
            parse_core(start.trim(), item)?,
            parse_core(end.trim(), item)?,
        ),
        None => {
            let core = parse_core(item, item)?;
            (core, core)
        }
    };
    if end < start {
        return Err(CoreListError::Reversed { start, end });
    }
    Ok((start, end))
}

fn parse_core(number: &str, item: &str) -> Result<usize, CoreListError> {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CoreListError::Invalid {
            item: item.to_string(),
        });
    }
    match number.parse::<usize>() {
        Ok(core) if core <= CORE_MAX => Ok(core),
        _ => Err(CoreListError::TooLarge {
            item: number.to_string(),
        }),
    }
}

// === CoreSpec ===

impl CoreSpec {
    /// The concrete cores: `all` becomes `online`, a list stays as written (checked by [`plan`]).
    pub fn resolve(&self, online: &CoreList) -> CoreList {
        match self {
            CoreSpec::All => online.clone(),
            CoreSpec::List(list) => list.clone(),
        }
    }
}

impl FromStr for CoreSpec {
    type Err = CoreListError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().eq_ignore_ascii_case("all") {
            return Ok(CoreSpec::All);
        }
        input.parse().map(CoreSpec::List)
    }
}

impl fmt::Display for CoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreSpec::All => f.write_str("all"),
            CoreSpec::List(list) => list.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&[usize], CoreListError>) {
        let got = input
            .parse::<CoreList>()
            .map(|list| list.iter().collect::<Vec<_>>());
        assert_eq!(got, expect.map(<[usize]>::to_vec), "input {input:?}");
    }

    #[test]
    fn parses_lists() {
        let ok: &[(&str, &[usize])] = &[
            ("0", &[0]),
            ("0-3", &[0, 1, 2, 3]),
            ("0,2,4-7", &[0, 2, 4, 5, 6, 7]),
            (" 1 , 3 ", &[1, 3]),
            ("2 - 4", &[2, 3, 4]),
            ("5,1", &[1, 5]),
            ("3-3", &[3]),
            ("4096", &[4096]),
        ];
        for (input, cores) in ok {
            check(input, Ok(cores));
        }
    }

    #[test]
    fn rejects_bad_lists() {
        use CoreListError::*;
        let invalid = |item: &str| Invalid {
            item: item.to_string(),
        };
        let large = |item: &str| TooLarge {
            item: item.to_string(),
        };
        let bad: &[(&str, CoreListError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("0,,2", EmptyItem { position: 2 }),
            ("0,", EmptyItem { position: 2 }),
            (",1", EmptyItem { position: 1 }),
            ("3-1", Reversed { start: 3, end: 1 }),
            ("1,1", Duplicate { core: 1 }),
            ("0-3,2", Duplicate { core: 2 }),
            ("0-2,1-4", Duplicate { core: 1 }),
            ("4097", large("4097")),
            (
                "0-99999999999999999999999",
                large("99999999999999999999999"),
            ),
            ("all", invalid("all")),
            ("x", invalid("x")),
            ("-3", invalid("-3")),
            ("3-", invalid("3-")),
            ("1-2-3", invalid("1-2-3")),
            ("+1", invalid("+1")),
            ("0x1", invalid("0x1")),
            ("1 2", invalid("1 2")),
        ];
        for (input, error) in bad {
            check(input, Err(error.clone()));
        }
    }

    #[test]
    fn prints_in_cores_syntax() {
        let cases: &[(&[usize], &str)] = &[
            (&[], ""),
            (&[0], "0"),
            (&[0, 1], "0-1"),
            (&[0, 1, 2, 3], "0-3"),
            (&[0, 2, 4, 5, 6, 7], "0,2,4-7"),
            (&[1, 3, 4, 9, 10, 11, 12], "1,3-4,9-12"),
        ];
        for (cores, text) in cases {
            let list: CoreList = cores.iter().copied().collect();
            assert_eq!(list.to_string(), *text);
            if !text.is_empty() {
                assert_eq!(
                    text.parse::<CoreList>().as_ref(),
                    Ok(&list),
                    "round trip {text}"
                );
            }
        }
    }

    #[test]
    fn spec_all_resolves_to_online() {
        let online: CoreList = "0-3".parse().expect("valid list");
        let cases: &[(&str, &str)] = &[("all", "0-3"), (" ALL ", "0-3"), ("1,5", "1,5")];
        for (input, resolved) in cases {
            let spec: CoreSpec = input.parse().expect("valid spec");
            assert_eq!(
                spec.resolve(&online).to_string(),
                *resolved,
                "input {input:?}"
            );
        }
        assert_eq!("".parse::<CoreSpec>(), Err(CoreListError::Empty));
    }
}
