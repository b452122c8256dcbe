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
fn anonymous_sessions_leave_headroom_and_the_stalest_idle_one_makes_room() {
    let mut table = UdpTable::new(8).seeded(7);
    // Deadlines 10, 11, … tell the stalest.
    let mut opened: Vec<u32> = (0..5)
        .map(|n| table.open(sid(n, 0), addr(1), 10 + u32::from(n)).unwrap().0)
        .collect();
    assert_eq!(table.make_room(), None, "room left");
    table.set_device(opened[1], -7);
    opened.push(table.open(sid(5, 0), addr(1), 15).unwrap().0);
    table.open(sid(6, 0), addr(1), 16).unwrap();
    assert_eq!(table.anonymous(), 6, "the quota: 8 - 8/4");
    assert_eq!(table.open(sid(7, 0), addr(1), 17), Err(Full));
    // The stalest anonymous one goes; one with a request pending, or logged in, is skipped.
    table.get_mut(opened[0]).unwrap().pending = Some(Box::new(Pending {
        header: [0; 36],
        mac: [0; 8],
    }));
    assert_eq!(table.make_room(), Some(opened[2]));
    table.remove(opened[2]).unwrap();
    assert_eq!(table.make_room(), None);
    table.open(sid(7, 0), addr(1), 17).unwrap();
    // Logged-in sessions may use the headroom.
    table.set_device(opened[3], -8);
    table.set_device(opened[4], -9);
    table.open(sid(8, 0), addr(1), 18).unwrap();
    assert_eq!(table.len(), 8);
    assert_eq!(table.make_room(), Some(opened[5]));
    assert_eq!(table.anonymous(), 5);
    table.check().unwrap();
}

#[test]
fn a_session_being_set_up_goes_after_those_never_heard_from() {
    let mut table = UdpTable::new(4).seeded(3);
    let (busy, _) = table.open(sid(1, 0), addr(1), 10).unwrap();
    table.accept((0, 1), &sid(1, 0).0, 1, addr(1), 10); // its register came in
    let (junk, _) = table.open(sid(2, 0), addr(2), 12).unwrap();
    table.open(sid(3, 0), addr(3), 12).unwrap();
    assert_ne!(table.make_room(), None);
    assert_ne!(
        table.make_room(),
        Some(busy),
        "older, but a device is setting it up"
    );
    assert!([junk, 2].contains(&table.make_room().unwrap()));
}

#[test]
fn nothing_to_end_when_every_session_logged_in() {
    let mut table = UdpTable::new(4);
    for n in 0..4 {
        let (slot, _) = table.open(sid(n, 0), addr(1), 10).unwrap();
        table.set_device(slot, -1 - i64::from(n));
    }
    assert_eq!(table.make_room(), None);
    assert_eq!(table.open(sid(9, 0), addr(1), 10), Err(Full));
}

#[test]
fn a_due_entry_is_decided_by_the_slots_session() {
    let mut table = UdpTable::new(8);
    let (slot, _) = table.open(sid(1, 0), addr(1), 10).unwrap();
    assert_eq!(table.due(slot, 9), Due::Stale, "not yet: it waits on 10");
    table.accept((0, 1), &sid(1, 0).0, 1, addr(1), 20);
    let generation = table.generation(slot);
    assert_eq!(table.due(slot, 10), Due::Again { at: 20, generation });
    assert_eq!(
        table.due(slot, 10),
        Due::Stale,
        "a second entry due at once is dropped"
    );
    assert_eq!(table.due(slot, 20), Due::Expired);
    table.remove(slot).unwrap();
    assert_eq!(table.due(slot, 30), Due::Stale, "no session");
}

#[test]
fn a_session_in_an_evicted_slot_takes_over_its_entry() {
    let mut table = UdpTable::new(8);
    let (slot, _) = table.open(sid(1, 0), addr(1), 10).unwrap();
    let scheduled = table.get(slot).unwrap().scheduled;
    table.remove(slot).unwrap();
    let (again, generation) = table.open(sid(2, 0), addr(1), 30).unwrap();
    assert_eq!(again, slot, "last in, first out");
    assert!(table.inherit(slot, scheduled));
    // The old entry, due at 10, now serves the new session: it comes back at 30.
    assert_eq!(table.due(slot, 10), Due::Again { at: 30, generation });
    assert_eq!(table.due(slot, 30), Due::Expired);
    assert!(
        !table.inherit(slot, 0),
        "nothing pending: the caller adds an entry"
    );
}

#[test]
fn session_record_is_small() {
    // 104 bytes with its generation since the address is a 24-byte `DeviceAddr`.
    let size = std::mem::size_of::<(u32, Option<UdpSession>)>();
    assert!(size <= 104, "{size}");
}
