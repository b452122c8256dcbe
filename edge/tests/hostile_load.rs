//! Hostile input *in volume* against a running two-shard node over real sockets: thousands
//! of logins with bad signatures while a legitimate pair relays, frames split into single
//! bytes, unmasked, fragmented and oversized frames, a flood of garbage datagrams, replayed
//! UDP sequence numbers, and a few hundred phones that never read. Every test asserts that
//! the bad input is counted, nothing crashes, and legitimate traffic still flows; none
//! asserts a duration (latency figures under load are in `benches/RESULTS.md`).

mod support;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches_free::*;
use edge_proto::ws::OpCode;
use support::udp::{Device, forward_packet};
use support::*;
use tungstenite::Message;

/// Small helpers local to this file (no dependency on the benches crate).
mod benches_free {
    /// splitmix64, for reproducible garbage.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }
}

fn bind(node: &edge::node::Node, device: i64, user: i64) {
    let (code, text) = http(
        node.status_addr,
        "POST",
        &format!("/admin/bind?device={device}&user={user}"),
        b"",
    );
    assert_eq!(code, 200, "{text}");
}

/// A login string for `id` whose signature is wrong (a valid shape, fresh timestamp).
fn bad_signature(id: i64, n: u64) -> String {
    let good = login_string(id);
    let (head, sig) = good.rsplit_once('|').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[(n % 20) as usize] = if sig[(n % 20) as usize] == b'A' {
        b'B'
    } else {
        b'A'
    };
    format!("{head}|{}", String::from_utf8(sig).unwrap())
}

#[test]
fn bad_signature_logins_are_refused_while_legit_traffic_flows() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 500;
    let node = node();
    let ws = node.ws_addrs[0];
    bind(&node, -1, 16);
    let (mut phone, reply) = login(ws, 16);
    assert_eq!(reply, vec![0, 1]);
    let (mut dev, reply) = login(ws, -1);
    assert_eq!(reply, vec![0]);
    next_status(&mut phone, 9).expect("online status");

    let done = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..THREADS)
        .map(|t| {
            let done = done.clone();
            let addr = node.ws_addrs[(t % 2) as usize % node.ws_addrs.len()];
            std::thread::spawn(move || {
                let mut refused = 0;
                for i in 0..PER_THREAD {
                    let id = 16 * (1000 + t as i64 * PER_THREAD as i64 + i as i64);
                    let mut raw = Raw::connect(addr);
                    raw.send_masked(OpCode::Text, bad_signature(id, i).as_bytes());
                    assert_eq!(raw.next_data(), Some(vec![6]), "wrong-signature reply");
                    refused += 1;
                }
                done.store(true, Ordering::Relaxed);
                refused
            })
        })
        .collect();
    // Legitimate traffic while the attack runs: every message arrives, in order.
    let mut relayed = 0;
    while !done.load(Ordering::Relaxed) || relayed < 20 {
        let m = message(3, -1, format!("legit {relayed}").as_bytes());
        phone.send(Message::binary(m.clone())).unwrap();
        assert_eq!(next_data(&mut dev).unwrap(), m, "legit message {relayed}");
        relayed += 1;
        assert!(relayed < 1_000_000);
    }
    let refused: u64 = attackers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(refused, THREADS * PER_THREAD);
    assert!(eventually(
        || counter(&node, |s| &s.login_wrong_md5) == THREADS * PER_THREAD
    ));
    assert_eq!(counter(&node, |s| &s.login_ok), 2, "no bad login got in");
    // And every refused connection is gone again.
    assert!(eventually(|| node
        .metrics
        .shards
        .iter()
        .map(|s| s.ws_open.load(Ordering::Relaxed))
        .sum::<i64>()
        == 2));
    assert_node_serves(&node, 32, -2);
    node.shutdown();
}

#[test]
fn split_unmasked_fragmented_and_oversized_frames() {
    let node = node_with(|c| c.max_message = 4096);
    let ws = node.ws_addrs[0];
    bind(&node, -1, 16);
    let mut phone = Raw::connect(ws);
    assert_eq!(phone.login(16), vec![0, 1]);
    let (mut dev, reply) = login(ws, -1);
    assert_eq!(reply, vec![0]);

    // A frame written one byte per segment arrives whole.
    phone.stream.set_nodelay(true).unwrap();
    let m = message(3, -1, &[0x42; 300]);
    let mut frame = Vec::new();
    edge_proto::ws::write_client_frame(&mut frame, OpCode::Binary, &m, [9, 8, 7, 6]);
    for byte in &frame {
        phone.stream.write_all(std::slice::from_ref(byte)).unwrap();
        phone.stream.flush().unwrap();
    }
    assert_eq!(next_data(&mut dev).unwrap(), m);

    // Unmasked: tolerated.
    let m = message(3, -1, b"unmasked");
    phone.send_unmasked(OpCode::Binary, &m);
    assert_eq!(next_data(&mut dev).unwrap(), m);

    // Fragmented (FIN clear, then a continuation): not reassembled, each frame is a message.
    let first = message(3, -1, b"part one");
    let second = message(3, -1, b"part two");
    let mut bytes = Vec::new();
    edge_proto::ws::write_client_frame(&mut bytes, OpCode::Binary, &first, [1, 2, 3, 4]);
    bytes[0] &= 0x7f;
    edge_proto::ws::write_client_frame(&mut bytes, OpCode::Continuation, &second, [5, 6, 7, 8]);
    phone.send_raw(&bytes);
    assert_eq!(next_data(&mut dev).unwrap(), first);
    assert_eq!(next_data(&mut dev).unwrap(), second);

    // Many frames in one write, some of them unmasked.
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        let m = message(3, -1, &i.to_le_bytes());
        if i % 3 == 0 {
            edge_proto::ws::write_frame(&mut bytes, OpCode::Binary, &m);
        } else {
            edge_proto::ws::write_client_frame(&mut bytes, OpCode::Binary, &m, i.to_be_bytes());
        }
    }
    phone.send_raw(&bytes);
    for i in 0..200u32 {
        assert_eq!(
            next_data(&mut dev).unwrap(),
            message(3, -1, &i.to_le_bytes()),
            "frame {i}"
        );
    }

    // Oversized, announced in each length form, refused from the head alone with 1009.
    let oversized: [&[u8]; 3] = [
        &[0x82, 0x7e, 0xff, 0xff],             // 16-bit: 65 535
        &[0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0], // 64-bit: 4 GiB
        &[
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ], // masked 2^63 - 1
    ];
    for (i, head) in oversized.iter().enumerate() {
        let mut raw = Raw::connect(ws);
        assert_eq!(raw.login(32 + 16 * i as i64), vec![0, 1]);
        raw.send_raw(head);
        assert_eq!(raw.close_code(), Some(1009), "oversized head {i}");
    }
    assert_eq!(counter(&node, |s| &s.oversized_frames), 3);
    // A 64-bit length with the top bit set: protocol error.
    let mut raw = Raw::connect(ws);
    raw.send_raw(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(raw.close_code(), Some(1002));
    // A ping longer than 125 bytes: protocol error.
    let mut raw = Raw::connect(ws);
    raw.send_raw(&[0x89, 126, 0, 200]);
    assert_eq!(raw.close_code(), Some(1002));
    assert!(counter(&node, |s| &s.malformed_frames) >= 2);

    // The first phone kept its session through all of it.
    let m = message(3, -1, b"still here");
    phone.send_masked(OpCode::Binary, &m);
    assert_eq!(next_data(&mut dev).unwrap(), m);
    assert_node_serves(&node, 96, -3);
    node.shutdown();
}

// === UDP ===

const MAC: [u8; 8] = [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x00, 0x02];

fn udp_drops(node: &edge::node::Node) -> u64 {
    counter(node, |m| &m.udp_drop_malformed)
        + counter(node, |m| &m.udp_drop_unknown_session)
        + counter(node, |m| &m.udp_drop_stale_seq)
        + counter(node, |m| &m.udp_drop_not_logged_in)
}

#[test]
fn garbage_datagram_flood_is_counted_and_never_answered() {
    const FLOOD: usize = 20_000;
    let node = node();
    let udp = node.udp_addr.unwrap();
    let golden: Vec<Vec<u8>> = {
        let text = include_str!("../proto/tests/data/vectors.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        json["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["transport"] == "udp" && v["direction"] == "client->server")
            .map(|v| {
                let hex = v["hex"].as_str().unwrap();
                (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    };
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    flooder.set_nonblocking(true).unwrap();
    let mut rng = Rng(0x5eed);
    let mut sent = 0u64;
    let mut answers = 0u64;
    let mut scratch = [0u8; 2048];
    for i in 0..FLOOD {
        let datagram: Vec<u8> = match i % 3 {
            // Random bytes of random length.
            0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
            // A golden request with bytes flipped (then its checks made wrong on purpose).
            1 => {
                let mut d = golden[rng.below(golden.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(d.len());
                    d[at] ^= 1 << rng.below(8);
                }
                if edge_proto::device::Request::parse_datagram(&d).is_ok() {
                    d[32] ^= 0x01;
                }
                d
            }
            // A golden request truncated or extended (its declared length now wrong).
            _ => {
                let mut d = golden[rng.below(golden.len())].clone();
                if rng.below(2) == 0 {
                    d.truncate(rng.below(d.len()));
                } else {
                    d.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8));
                }
                d
            }
        };
        match flooder.send_to(&datagram, udp) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("send: {e}"),
        }
        while flooder.recv(&mut scratch).is_ok() {
            answers += 1;
        }
        if i % 1000 == 999 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Everything that reached the node is counted as a drop; nothing is answered.
    let mut last = u64::MAX;
    assert!(eventually(|| {
        let now = counter(&node, |m| &m.udp_datagrams_in);
        let settled = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(50));
        settled
    }));
    let arrived = counter(&node, |m| &m.udp_datagrams_in);
    assert!(arrived > sent / 2, "only {arrived} of {sent} arrived");
    assert_eq!(
        udp_drops(&node),
        arrived,
        "every garbage datagram counted as a drop"
    );
    assert_eq!(counter(&node, |m| &m.udp_sent), 0, "no replies sent");
    std::thread::sleep(Duration::from_millis(200));
    while flooder.recv(&mut scratch).is_ok() {
        answers += 1;
    }
    assert_eq!(answers, 0);
    // A real device still gets its session.
    let mut device = Device::new(udp, MAC);
    assert!(device.online() < 0);
    assert_node_serves(&node, 16, -1);
    node.shutdown();
}

#[test]
fn replayed_sequence_numbers_are_dropped() {
    let node = node();
    let udp = node.udp_addr.unwrap();
    let mut device = Device::new(udp, MAC);
    let device_id = device.online();
    bind(&node, device_id, 16);
    let (mut phone, reply) = login(node.ws_addrs[0], 16);
    assert_eq!(reply, vec![0, 1]);
    let stale_before = counter(&node, |m| &m.udp_drop_stale_seq);
    let first = forward_packet(100, 0, 0, &device.sid.0, b"seq 100");
    device.socket.send_to(&first, udp).unwrap();
    assert_eq!(&next_not_status(&mut phone).unwrap()[76..], b"seq 100");
    // The same datagram again, an older sequence, and the same sequence with a new body.
    device.socket.send_to(&first, udp).unwrap();
    device
        .socket
        .send_to(&forward_packet(50, 0, 0, &device.sid.0, b"seq 50"), udp)
        .unwrap();
    device
        .socket
        .send_to(
            &forward_packet(100, 0, 0, &device.sid.0, b"seq 100 again"),
            udp,
        )
        .unwrap();
    assert!(eventually(
        || counter(&node, |m| &m.udp_drop_stale_seq) == stale_before + 3
    ));
    // The next sequence flows, and it is the next thing the phone sees.
    device
        .socket
        .send_to(&forward_packet(101, 0, 0, &device.sid.0, b"seq 101"), udp)
        .unwrap();
    assert_eq!(&next_not_status(&mut phone).unwrap()[76..], b"seq 101");
    node.shutdown();
}

// === phones that never read ===

#[test]
fn phones_that_never_read_are_closed_and_memory_stays_bounded() {
    let (own, budget) = never_reading_phones(64 * 1024, 64 << 20);
    assert_eq!((own, budget), (200, 0), "each closed for its own bound");
}

#[test]
fn the_shard_budget_bounds_many_slow_readers_together() {
    // 200 × 64 KiB would be 12.5 MiB queued; the shards may hold 2 × 256 KiB.
    let (own, budget) = never_reading_phones(64 * 1024, 256 * 1024);
    assert!(
        budget > 0,
        "the budget closed some ({own} by their own bound)"
    );
}

/// 200 phones that never read (4 KiB receive buffers), pushed 32 KiB messages until all
/// are closed; the queued bytes never pass the bounds. Returns how many were closed for
/// their own bound and how many for the shard's budget.
fn never_reading_phones(max_outbound: usize, max_outbound_shard: usize) -> (u64, u64) {
    const PHONES: i64 = 200;
    const SHARDS: i64 = 2;
    const BODY: usize = 32 * 1024;
    let node = node_with(|c| {
        c.max_outbound = max_outbound;
        c.max_outbound_shard = max_outbound_shard;
        c.max_message = 64 * 1024;
    });
    let ws = node.ws_addrs[0];
    let mut phones = Vec::new();
    for k in 1..=PHONES {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&ws.into()).unwrap();
        let mut raw = Raw::upgrade(TcpStream::from(sock));
        assert_eq!(raw.login(16 * k), vec![0, 1]);
        phones.push(raw);
    }
    let ids: Vec<String> = (1..=PHONES).map(|k| (16 * k).to_string()).collect();
    let target = format!("/admin/push?ids={}&msgid=0x36", ids.join(","));
    let body = vec![0x5au8; BODY];
    let frame = BODY as i64 + 64;
    let bound =
        (PHONES * (max_outbound as i64 + frame)).min(SHARDS * (max_outbound_shard as i64 + frame));
    let started = Instant::now();
    let mut pushes = 0;
    let mut peak = 0i64;
    let closed = || {
        (
            counter(&node, |s| &s.slow_reader_closed),
            counter(&node, |s| &s.outbound_budget_closed),
        )
    };
    while closed().0 + closed().1 < PHONES as u64 {
        assert!(
            pushes < 2000 && started.elapsed() < Duration::from_secs(120),
            "only {:?} of {PHONES} closed after {pushes} pushes",
            closed()
        );
        // One push at a time: the answer only says it is queued, and several taken in
        // one turn would take a phone from empty to closed before any sample.
        let (out, shut) = (counter(&node, |s| &s.msgs_out), closed());
        let open = PHONES as u64 - shut.0 - shut.1;
        let (code, text) = http(node.status_addr, "POST", &target, &body);
        assert_eq!(code, 200, "{text}");
        pushes += 1;
        assert!(
            eventually(|| {
                let now = closed();
                counter(&node, |s| &s.msgs_out) - out + (now.0 + now.1 - shut.0 - shut.1) >= open
            }),
            "push {pushes} was not taken by every open phone's shard"
        );
        let queued: i64 = node
            .metrics
            .shards
            .iter()
            .map(|s| s.outbound_queued_bytes.load(Ordering::Relaxed))
            .sum();
        peak = peak.max(queued);
        assert!(
            queued <= bound,
            "outbound queues hold {queued} bytes (bound {bound})"
        );
    }
    assert!(peak > 0, "the queues were exercised");
    // Each phone got whole frames and then a 1008 close or the end of the stream.
    for (i, phone) in phones.iter_mut().enumerate() {
        let end = loop {
            match phone.next() {
                Got::Frame(2, payload) => {
                    assert_eq!(payload.len(), 36 + BODY, "phone {i}: whole frame")
                }
                Got::Frame(..) => {}
                other => break other,
            }
        };
        assert!(
            matches!(end, Got::Close(Some(1008)) | Got::End),
            "phone {i}: {end:?}"
        );
    }
    // Nothing stays queued or open.
    assert!(eventually(|| {
        node.metrics
            .shards
            .iter()
            .map(|s| {
                s.outbound_queued_bytes.load(Ordering::Relaxed) + s.ws_open.load(Ordering::Relaxed)
            })
            .sum::<i64>()
            == 0
    }));
    assert_node_serves(&node, 16 * (PHONES + 1), -1);
    let counts = closed();
    node.shutdown();
    counts
}
