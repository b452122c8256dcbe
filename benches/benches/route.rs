//! criterion micro-benchmark of the msgbus routing core (`bus::msgbus::route`): one
//! upstream frame from a device to its phone (and the reverse) through a router whose user
//! map holds a fleet (100 000 phones and 100 000 devices on two comets), outputs drained.
//! This is the router thread's share of the cluster path's cost per message
//! (`benches/cluster-path`), without the sockets and the noise of a loaded box.

use std::hint::black_box;

use bus::msgbus::route::{Input, LinkId, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use edge_proto::link::{CometKind, Upstream};

const PHONES: LinkId = LinkId(1);
const DEVICES: LinkId = LinkId(2);
const FLEET: i64 = 100_000;

fn fleet_router() -> Router {
    // The msgbus's own settings (`cloudsocket msgbus` defaults).
    let mut r = Router::new(bus::msgbus::Config::new("", "").router);
    for (link, name) in [(PHONES, "10.0.0.1"), (DEVICES, "10.0.0.2")] {
        let kind = CometKind::Ws;
        r.handle_input(Input::CometUp { link, name, kind });
    }
    for i in 1..=FLEET {
        let phone = format!("{}|10.0.0.1|1", 16 * i);
        let device = format!("{}|10.0.0.2|1", -i);
        r.handle_input(Input::PubKey(phone.as_bytes()));
        r.handle_input(Input::PubKey(device.as_bytes()));
    }
    r
}

/// Upstream payloads (length prefix stripped) from 200 sources to their peers.
fn frames(device_to_phone: bool) -> Vec<Vec<u8>> {
    let message = [0x03u8; 76];
    (1..=200i64)
        .map(|i| {
            let (src, dst) = if device_to_phone {
                (-i * 397, 16 * i * 397)
            } else {
                (16 * i * 397, -i * 397)
            };
            let mut frame = Vec::new();
            Upstream::write(&mut frame, src, &[dst], &message).expect("small frame");
            frame.split_off(4)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut r = fleet_router();
    for (name, d2p, link) in [("route_d2p", true, DEVICES), ("route_p2d", false, PHONES)] {
        let frames = frames(d2p);
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % frames.len();
                let payload = black_box(&frames[next][..]);
                r.handle_input(Input::Upstream { link, payload });
                while let Some(out) = r.poll_output() {
                    black_box(out);
                }
            })
        });
    }
}

criterion_group!(route, benches);
criterion_main!(route);
