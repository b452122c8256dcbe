//! Thread affinity: the CPUs this process may run on and pinning the calling thread.
//!
//! Owns the `sched_getaffinity`/`sched_setaffinity` calls. It does not decide placement (see
//! [`super::plan`]). Sets are `cpu_set_t`, so CPUs at or above `libc::CPU_SETSIZE` (1024) are
//! refused with `InvalidInput`.

use std::io;
use std::mem;

use super::CoreList;

// === CoreList ===

impl CoreList {
    /// The CPUs the calling thread may run on now (`sched_getaffinity`): the `online` list for
    /// [`super::plan`]. Honours cgroup cpusets and `taskset`, unlike `/sys/.../cpu/online`.
    pub fn online() -> io::Result<CoreList> {
        // SAFETY: cpu_set_t is plain bytes; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the pointer and size describe `set`.
        let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let cores = (0..set_size())
            // SAFETY: `core` is below CPU_SETSIZE, inside `set`.
            .filter(|&core| unsafe { libc::CPU_ISSET(core, &set) })
            .collect();
        Ok(cores)
    }
}

/// Pins the calling thread to one CPU (what each shard does on its core).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    pin_current_thread_to(&CoreList::from_iter([core]))
}

/// Pins the calling thread to a set of CPUs (what sidecars do with [`super::Placement::sidecars`]).
pub fn pin_current_thread_to(cores: &CoreList) -> io::Result<()> {
    if cores.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty core set",
        ));
    }
    // SAFETY: cpu_set_t is plain bytes; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    for core in cores.iter() {
        if core >= set_size() {
            let message = format!("core {core} is beyond CPU_SETSIZE {}", set_size());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        // SAFETY: `core` is below CPU_SETSIZE, inside `set`.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_size() -> usize {
    usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_is_not_empty() {
        let online = CoreList::online().expect("sched_getaffinity works for the calling thread");
        assert!(!online.is_empty());
    }

    #[test]
    fn pin_and_restore() {
        let online = CoreList::online().expect("sched_getaffinity");
        let last = online.iter().last().expect("at least one core");
        pin_current_thread(last).expect("pin to an online core");
        assert_eq!(
            CoreList::online()
                .expect("affinity")
                .iter()
                .collect::<Vec<_>>(),
            [last]
        );
        pin_current_thread_to(&online).expect("restore");
        assert_eq!(CoreList::online().expect("affinity"), online);
    }

    #[test]
    fn refuses_bad_sets() {
        let cases: &[CoreList] = &[CoreList::default(), CoreList::from_iter([4096])];
        for cores in cases {
            let error = pin_current_thread_to(cores).expect_err("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{cores}");
        }
    }
}
