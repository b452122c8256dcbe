//! Spool tests in a scratch directory under the system temp dir.

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("msgbus-spool-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn record_round_trip_and_corruption() {
    let mut buf = Vec::new();
    encode_record(&mut buf, 42, 54, b"hello");
    let (record, used) = decode_record(&buf).unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(
        (record.unix_ms, record.msg_id, &record.message[..]),
        (42, 54, &b"hello"[..])
    );
    for cut in 0..buf.len() {
        assert_eq!(decode_record(&buf[..cut]), None, "torn at {cut}");
    }
    let mut flipped = buf.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(decode_record(&flipped), None);
}

#[test]
fn append_peek_consume_in_order_and_reopen() {
    let dir = scratch("order");
    let mut spool = Spool::open(&dir, 1 << 20).unwrap();
    spool.append(&[(1, b"a"), (2, b"bb")], 10).unwrap();
    spool.append(&[(3, b"ccc")], 20).unwrap();
    assert_eq!((spool.records(), spool.oldest_ms()), (3, Some(10)));
    let ids: Vec<u16> = spool.peek(10).unwrap().iter().map(|r| r.msg_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    spool.consume(1).unwrap();
    drop(spool);

    // A torn tail from a crash mid-append is cut at reopen.
    let seg = dir.join("seg-0000000000000000.spool");
    let mut file = OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&[MAGIC, 50, 0, 0]).unwrap();
    drop(file);
    let mut spool = Spool::open(&dir, 1 << 20).unwrap();
    // Replay is at-least-once: the consumed head comes back after a restart.
    assert_eq!(spool.records(), 3);
    spool.consume(3).unwrap();
    assert!(spool.is_empty());
    assert_eq!((spool.bytes(), spool.oldest_ms()), (0, None));
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "emptied segments are deleted"
    );
    spool.append(&[(4, b"d")], 30).unwrap();
    assert_eq!(spool.peek(5).unwrap()[0].msg_id, 4);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bounded_and_rolls_segments() {
    let dir = scratch("bound");
    let big = vec![7u8; 1 << 20];
    let mut spool = Spool::open(&dir, 6 << 20).unwrap();
    for _ in 0..5 {
        spool.append(&[(9, &big[..])], 1).unwrap();
    }
    assert!(matches!(
        spool.append(&[(9, &big[..])], 1),
        Err(SpoolError::Full { .. })
    ));
    assert!(
        fs::read_dir(&dir).unwrap().count() >= 2,
        "segments roll at 4 MiB"
    );
    spool.consume(5).unwrap();
    assert!(spool.is_empty());
    spool.append(&[(9, b"x")], 1).unwrap();
    assert_eq!(spool.records(), 1);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_record_in_the_middle_keeps_the_records_after_it() {
    let dir = scratch("corrupt");
    let mut spool = Spool::open(&dir, 1 << 20).unwrap();
    spool
        .append(&[(1, b"first"), (2, b"second"), (3, b"third")], 10)
        .unwrap();
    drop(spool);
    let path = dir.join(format!("seg-{:016}.spool", 0));
    let mut data = fs::read(&path).unwrap();
    // Flip a byte inside the second record's message, and leave a torn tail.
    let first_len = HEADER + FIXED + 5;
    data[first_len + HEADER + FIXED + 2] ^= 0xff;
    data.extend_from_slice(&[MAGIC, 9, 0]);
    fs::write(&path, &data).unwrap();
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    let kept: Vec<u16> = spool.peek(10).unwrap().iter().map(|r| r.msg_id).collect();
    assert_eq!(kept, [1, 3], "the record after the damage is kept");
    assert_eq!(spool.records(), 2);
    assert_eq!(spool.corrupt_bytes(), (HEADER + FIXED + 6) as u64);
    drop(spool);
    // Rewritten: a second open finds nothing corrupt.
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    assert_eq!((spool.records(), spool.corrupt_bytes()), (2, 0));
}
