//! Unit tests of `core::udp` (beside it so `udp.rs` stays short).

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sid(n: u8, shard: u8) -> Sid {
    let mut s = [n; 16];
    s[15] = shard;
    Sid(s)
}

#[test]
fn accept_checks_owner_sequence_and_address() {
    let mut table = UdpTable::new(8);
    let (slot, _) = table.open(sid(1, 0), addr(1), 10).unwrap();
    let here = (0, 2);
    assert_eq!(
        table.accept(here, &sid(1, 0).0, 1, addr(1), 20),
        Accept::Mine { slot, moved: false }
    );
    assert_eq!(
        table.accept(here, &sid(1, 0).0, 1, addr(1), 20),
        Accept::StaleSeq
    );
    assert_eq!(
        table.accept(here, &sid(1, 0).0, 2, addr(2), 30),
        Accept::Mine { slot, moved: true }
    );
    assert_eq!(table.get(slot).unwrap().deadline, 30);
    assert_eq!(
        table.accept(here, &sid(1, 1).0, 3, addr(2), 30),
        Accept::Handover(1)
    );
    assert_eq!(
        table.accept(here, &sid(1, 9).0, 3, addr(2), 30),
        Accept::Unknown
    );
    assert_eq!(
        table.accept(here, &sid(2, 0).0, 3, addr(2), 30),
        Accept::Unknown
    );
}

#[test]
fn removal_frees_the_sid_and_moves_the_generation() {
    let mut table = UdpTable::new(1);
    let (slot, generation) = table.open(sid(1, 0), addr(1), 10).unwrap();
    assert_eq!(table.open(sid(2, 0), addr(1), 10), Err(Full));
    table.remove(slot).unwrap();
    let (again, next) = table.open(sid(2, 0), addr(1), 10).unwrap();
    assert_eq!(again, slot);
    assert_ne!(next, generation);
    assert!(table.get_gen(slot, generation).is_none());
    assert_eq!(
        table.accept((0, 1), &sid(1, 0).0, 5, addr(1), 10),
        Accept::Unknown
    );
}

#[test]
fn anonymous_sessions_leave_headroom_and_the_oldest_idle_one_makes_room() {
    let mut table = UdpTable::new(8);
    let mut opened: Vec<u32> = (0..5)
        .map(|n| table.open(sid(n, 0), addr(1), 10).unwrap().0)
        .collect();
    assert_eq!(table.make_room(), None, "room left");
    table.set_device(opened[1], -7);
    opened.push(table.open(sid(5, 0), addr(1), 10).unwrap().0);
    table.open(sid(6, 0), addr(1), 10).unwrap();
    assert_eq!(table.anonymous(), 6, "the quota: 8 - 8/4");
    assert_eq!(table.open(sid(7, 0), addr(1), 10), Err(Full));
    // The oldest anonymous one goes first; one with a request pending is skipped.
    table.get_mut(opened[0]).unwrap().pending = Some(Box::new(Pending {
        header: [0; 36],
        mac: [0; 8],
    }));
    assert_eq!(table.make_room(), Some(opened[2]));
    table.remove(opened[2]).unwrap();
    assert_eq!(table.make_room(), None);
    table.open(sid(7, 0), addr(1), 10).unwrap();
    // Logged-in sessions may use the headroom.
    table.set_device(opened[3], -8);
    table.set_device(opened[4], -9);
    table.open(sid(8, 0), addr(1), 10).unwrap();
    assert_eq!(table.len(), 8);
    assert_eq!(table.make_room(), Some(opened[5]));
    assert_eq!(table.anonymous(), 5);
}

#[test]
fn the_open_order_stays_bounded() {
    let mut table = UdpTable::new(100_000);
    for n in 0..10_000u32 {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&n.to_le_bytes());
        let (slot, _) = table.open(Sid(s), addr(1), 10).unwrap();
        table.remove(slot).unwrap();
    }
    assert!(table.opened.len() <= 2 * 64 + 1, "{}", table.opened.len());
    assert_eq!(table.anonymous(), 0);
}

#[test]
fn session_record_is_small() {
    let size = std::mem::size_of::<(u32, Option<UdpSession>)>();
    assert!(size <= 128, "{size}");
}
