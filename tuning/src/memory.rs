//! What the kernel holds for connections, as benchmarks read it (issue 13 §4): the memory
//! of every slab cache (objects × object size, `/proc/slabinfo`, readable as root) plus
//! TCP's buffer pages (`/proc/net/sockstat`). System-wide: a delta between two samples is
//! the cost of what changed in between. Reads only; `None` where a file is unreadable.

/// Slab caches plus TCP buffer pages, bytes.
pub fn kernel_bytes() -> Option<u64> {
    let slab = slab_bytes(&std::fs::read_to_string("/proc/slabinfo").ok()?);
    let tcp_pages = tcp_pages(&std::fs::read_to_string("/proc/net/sockstat").ok()?)?;
    Some(slab + tcp_pages * 4096)
}

fn slab_bytes(slabinfo: &str) -> u64 {
    slabinfo
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(f.get(2)?.parse::<u64>().ok()? * f.get(3)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn tcp_pages(sockstat: &str) -> Option<u64> {
    sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slabinfo_and_sockstat() {
        let slabinfo = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n\
                        TCP 10 12 2304 14 8 : tunables\nkmalloc-64 100 128 64 64 1 : tunables\n";
        assert_eq!(slab_bytes(slabinfo), 12 * 2304 + 128 * 64);
        let sockstat =
            "sockets: used 300\nTCP: inuse 20 orphan 0 tw 3 alloc 25 mem 7\nUDP: inuse 4 mem 1\n";
        assert_eq!(tcp_pages(sockstat), Some(7));
        assert_eq!(tcp_pages("UDP: inuse 1"), None);
    }
}
