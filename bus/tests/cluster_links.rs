//! Cluster sidecar msgbus links against a fake msgbus (a `TcpListener` speaking docs/protocol.md §8):
//! the handshake from `--lip`, upstream relays and uploads, downstream frames routed to
//! the directory shard per id group, a WS and a UDP link on a node serving both, the
//! link coming back within 2 s when the msgbus restarts on the same port, and the
//! msgbus list followed (new address linked, removed one closed).

mod cluster_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::cluster::MsgbusSource;
use bus::messages::{ToBus, ToShard, dir_shard, route_key};
use cluster_support::{Harness, WAIT, config, eventually, unique_ip};
use edge_proto::link::{Downstream, LinkDecoder, LinkItem, Upstream};

/// One accepted comet link.
struct Peer {
    stream: TcpStream,
    kind: u8,
    from: SocketAddr,
    decoder: LinkDecoder,
    buf: Vec<u8>,
}

fn accept(listener: &TcpListener, within: Duration) -> Peer {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + within;
    let (mut stream, from) = loop {
        match listener.accept() {
            Ok(pair) => break pair,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no link within {within:?}: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut kind = [0u8];
    stream.read_exact(&mut kind).unwrap();
    stream.write_all(&kind).unwrap();
    Peer {
        stream,
        kind: kind[0],
        from,
        decoder: LinkDecoder::new(1 << 20),
        buf: Vec::new(),
    }
}

impl Peer {
    /// The next upstream frame as (src, ids, message).
    fn recv(&mut self) -> (i64, Vec<i64>, Vec<u8>) {
        loop {
            if let Some((LinkItem::Frame(payload), used)) = self.decoder.decode(&self.buf) {
                let up = Upstream::decode(payload).unwrap();
                let out = (up.src, up.ids.iter().collect(), up.message.to_vec());
                self.buf.drain(..used);
                return out;
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("an upstream frame in time");
            assert!(n > 0, "link closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, ids: &[i64], message: &[u8]) {
        let mut frame = Vec::new();
        Downstream::write(&mut frame, ids, message).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    /// True once the comet closed the link.
    fn closed(&mut self) -> bool {
        let mut byte = [0u8];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}

/// The frames, as sorted `(ids, message)`, of the next `Routes` holding a frame under one
/// of `keys` on each of those keys' shards (2 shards): one msgbus read's frames for a
/// shard come as one batch.
fn routed(node: &Harness, keys: &[i64]) -> Vec<(Vec<i64>, Vec<u8>)> {
    let mut shards: Vec<usize> = keys.iter().map(|&k| dir_shard(k, 2)).collect();
    shards.sort_unstable();
    shards.dedup();
    let ours = |m: &ToShard| match m {
        ToShard::Routes(batch) => batch
            .iter()
            .any(|f| f.ids.iter().any(|id| keys.contains(&route_key(id)))),
        _ => false,
    };
    let mut frames = Vec::new();
    for shard in shards {
        if let ToShard::Routes(batch) = node.next(shard, ours) {
            frames.extend(
                batch
                    .iter()
                    .map(|f| (f.ids.iter().collect(), f.message.to_vec())),
            );
        }
    }
    frames.sort();
    frames
}

#[test]
fn relays_go_up_and_downstream_frames_come_back_as_routes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lip = unique_ip();
    let mut cfg = config(&lip);
    cfg.msgbus = MsgbusSource::Static(vec![addr.to_string()]);
    let node = Harness::start(cfg, 2);
    let mut peer = accept(&listener, WAIT);
    assert_eq!(peer.kind, 0, "a WS node opens a WS link");
    assert_eq!(peer.from.ip().to_string(), lip, "bound to --lip");
    eventually("link up", || {
        node.metrics.links_up.load(Ordering::Relaxed) == 1
    });

    let relay = ToBus::relay(17, &[-5, -6], b"hello").unwrap();
    node.requests.send(relay).unwrap();
    assert_eq!(peer.recv(), (17, vec![-5, -6], b"hello".to_vec()));
    let upload = ToBus::Upload {
        conn: Harness::conn(1, 3),
        src: -5,
        message: b"upload".to_vec(),
    };
    node.requests.send(upload).unwrap();
    assert_eq!(peer.recv(), (-5, vec![], b"upload".to_vec()));

    peer.send(&[33, -5, 34], b"down");
    assert_eq!(
        routed(&node, &[32, -5]),
        [
            (vec![-5], b"down".to_vec()),
            (vec![33, 34], b"down".to_vec())
        ]
    );
    // Garbage downstream does not break the link.
    peer.stream.write_all(&[1, 0, 0, 0, 9]).unwrap();
    peer.send(&[-7], b"after");
    assert_eq!(routed(&node, &[-7]), [(vec![-7], b"after".to_vec())]);
    assert_eq!(node.metrics.downstream_bad.load(Ordering::Relaxed), 1);
}

#[test]
fn a_node_serving_both_kinds_opens_two_links() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(&unique_ip());
    cfg.udp = true;
    cfg.msgbus = MsgbusSource::Static(vec![listener.local_addr().unwrap().to_string()]);
    let node = Harness::start(cfg, 1);
    let mut first = accept(&listener, WAIT);
    let mut second = accept(&listener, WAIT);
    if first.kind == 1 {
        std::mem::swap(&mut first, &mut second);
    }
    assert_eq!((first.kind, second.kind), (0, 1));
    eventually("links up", || {
        node.metrics.links_up.load(Ordering::Relaxed) == 2
    });
    for (src, message) in [(17, b"phone"), (-3, b"devce")] {
        let relay = ToBus::relay(src, &[1], message).unwrap();
        node.requests.send(relay).unwrap();
    }
    assert_eq!(first.recv().0, 17, "phone traffic on the WS link");
    assert_eq!(second.recv().0, -3, "device traffic on the UDP link");
}

#[test]
fn the_link_comes_back_when_the_msgbus_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(&unique_ip());
    cfg.msgbus = MsgbusSource::Static(vec![addr.to_string()]);
    let node = Harness::start(cfg, 1);
    let peer = accept(&listener, WAIT);
    eventually("link up", || {
        node.metrics.link_connects.load(Ordering::Relaxed) == 1
    });
    // The msgbus dies, and comes back on the same port a moment later.
    drop(peer);
    drop(listener);
    std::thread::sleep(Duration::from_millis(300));
    let listener = TcpListener::bind(addr).unwrap();
    let restarted = Instant::now();
    let mut peer = accept(&listener, Duration::from_secs(2));
    assert!(restarted.elapsed() < Duration::from_secs(2));
    eventually("link up again", || {
        node.metrics.link_connects.load(Ordering::Relaxed) == 2
    });
    let relay = ToBus::relay(33, &[-1], b"again").unwrap();
    node.requests.send(relay).unwrap();
    assert_eq!(peer.recv().2, b"again");
    assert!(node.metrics.link_drops.load(Ordering::Relaxed) >= 1);
}

#[test]
fn the_msgbus_list_is_followed() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (list_tx, list_rx) = crossbeam_channel::bounded(4);
    let mut cfg = config(&unique_ip());
    cfg.msgbus = MsgbusSource::Watch(list_rx);
    let node = Harness::start(cfg, 1);
    list_tx
        .send(vec![a.local_addr().unwrap().to_string()])
        .unwrap();
    let mut on_a = accept(&a, WAIT);
    list_tx
        .send(vec![b.local_addr().unwrap().to_string()])
        .unwrap();
    let mut on_b = accept(&b, WAIT);
    assert!(on_a.closed(), "the removed msgbus's link is closed");
    eventually("one link up", || {
        node.metrics.links_up.load(Ordering::Relaxed) == 1
    });
    let relay = ToBus::relay(49, &[], b"to b").unwrap();
    node.requests.send(relay).unwrap();
    assert_eq!(on_b.recv().2, b"to b");
}

#[test]
fn frames_queued_on_a_link_that_drops_are_sent_on_the_next_one() {
    const FRAMES: u32 = 12_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(&unique_ip());
    cfg.msgbus = MsgbusSource::Static(vec![addr.to_string()]);
    let node = Harness::start(cfg, 1);
    // A msgbus that stops reading: the socket fills, then the link's queue.
    let stalled = accept(&listener, WAIT);
    eventually("link up", || {
        node.metrics.links_up.load(Ordering::Relaxed) == 1
    });
    let relay = |seq: u32| {
        let mut message = seq.to_le_bytes().to_vec();
        message.resize(1024, 0x5a);
        ToBus::relay(33, &[-1], &message).unwrap()
    };
    for seq in 0..FRAMES {
        node.requests.send(relay(seq)).unwrap();
    }
    eventually("the link's queue full", || {
        node.metrics.relay_queue_full.load(Ordering::Relaxed) > 0
    });
    // The msgbus dies with all that unread, and comes back on the same port.
    drop(stalled);
    drop(listener);
    eventually("link down", || {
        node.metrics.link_drops.load(Ordering::Relaxed) == 1
    });
    eventually("the queued frames taken back", || {
        node.metrics.relay_reclaimed.load(Ordering::Relaxed) > 0
    });
    let listener = TcpListener::bind(addr).unwrap();
    let mut peer = accept(&listener, Duration::from_secs(2));
    let mut got = Vec::new();
    while got.last() != Some(&(FRAMES - 1)) {
        let (_, _, message) = peer.recv();
        got.push(u32::from_le_bytes(message[..4].try_into().unwrap()));
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    let first = got[0];
    assert_eq!(
        got.len() as u32,
        FRAMES - first,
        "everything from the first frame after the restart on arrives"
    );
    // What is missing was in the dead msgbus's socket or in the batch being written.
    let dropped = node.metrics.relay_dropped.load(Ordering::Relaxed);
    assert!(
        dropped <= u64::from(first),
        "{dropped} counted, {first} missing"
    );
    assert_eq!(node.metrics.relay_no_link.load(Ordering::Relaxed), 0);
}

#[test]
fn without_a_msgbus_ids_held_here_are_delivered_here_and_the_rest_waits() {
    // The msgbus is down from the start (its port refuses), and comes up later.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(&unique_ip());
    cfg.msgbus = MsgbusSource::Static(vec![addr.to_string()]);
    let node = Harness::start(cfg, 2);
    let here = -cluster_support::unique_user();
    let away = here - 1;
    assert!(node.login(here).is_ok());
    let relay = ToBus::relay(33, &[here, away], b"now").unwrap();
    node.requests.send(relay).unwrap();
    assert_eq!(
        routed(&node, &[route_key(here)]),
        [(vec![here], b"now".to_vec())]
    );
    assert_eq!(node.metrics.relay_local.load(Ordering::Relaxed), 1);
    // The msgbus comes up: only the id held elsewhere goes there.
    let listener = TcpListener::bind(addr).unwrap();
    let mut peer = accept(&listener, Duration::from_secs(3));
    assert_eq!(peer.recv(), (33, vec![away], b"now".to_vec()));
    // With a link up, everything goes through the msgbus again (as the original).
    eventually("link up", || {
        node.metrics.links_up.load(Ordering::Relaxed) == 1
    });
    let relay = ToBus::relay(33, &[here], b"via").unwrap();
    node.requests.send(relay).unwrap();
    assert_eq!(peer.recv(), (33, vec![here], b"via".to_vec()));
    assert_eq!(node.metrics.relay_local.load(Ordering::Relaxed), 1);
}
