//! Two comets, one msgbus, real Redis, RabbitMQ and ZooKeeper (from `scripts/test`): a phone
//! on comet A and devices (WebSocket and UDP) on comet B exchange messages both ways; device
//! online status reaches the user; Redis pushes arrive exactly once; an upload is confirmed
//! by the broker and acked; a restarted msgbus is found again.

mod cluster_support;
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_support::{bind, comet, msgbus, redis, registered_msgbus, testenv, unique};
use support::*;
use tungstenite::Message;

/// Logs in with retries while the comet's msgbus links and Redis come up.
fn login_when_ready(addr: std::net::SocketAddr, id: i64) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ws, reply) = login(addr, id);
        if reply.first() == Some(&0) {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "login of {id} keeps failing: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `m` from `from` until `to` receives it (links to the msgbus may still be dialling).
fn relay_until(from: &mut Ws, to: &mut Ws, m: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        from.send(Message::binary(m.to_vec())).unwrap();
        to.get_mut()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        loop {
            match to.read() {
                Ok(Message::Binary(b)) if b.as_ref() == m => {
                    to.get_mut()
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    return;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        assert!(Instant::now() < deadline, "message never relayed");
    }
}

/// The next message that is not a status and not one of `probes`: `relay_until` resends
/// its probe until one arrives, and a copy sent before a comet's link was up reaches it
/// late (the msgbus holds frames for a comet that has not linked yet).
fn next_except(ws: &mut Ws, probes: &[&[u8]]) -> Option<Vec<u8>> {
    loop {
        let m = next_not_status(ws)?;
        if !probes.contains(&m.as_slice()) {
            return Some(m);
        }
    }
}

#[test]
fn two_comets_relay_push_and_upload_through_one_msgbus() {
    let (bus, registration, root) = registered_msgbus("cs-msgbus", None);
    let n = unique() % 200 + 20;
    let (ip_a, ip_b) = (format!("127.0.{n}.2"), format!("127.0.{n}.3"));
    let a = comet(&ip_a, &root, &format!("cs-comets-{n}"));
    let b = comet(&ip_b, &root, &format!("cs-comets-{n}"));

    let mut con = redis();
    let user = 16 * (unique() % 100_000_000 + 1);
    let ws_device = -(unique() % 100_000_000 + 1);
    bind(&mut con, ws_device, user);
    let mac = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, (n % 250) as u8, 7];
    let udp_device = edge::platform::builtin_device_id(&mac);
    bind(&mut con, udp_device, user);

    // Phone on A, WebSocket device on B: relay both ways (retried while the comets' msgbus
    // links come up), then the device's offline and online status through the msgbus.
    let mut phone = login_when_ready(a.ws_addrs[0], user);
    let mut device = login_when_ready(b.ws_addrs[0], ws_device);
    let probe = message(3, ws_device, b"phone on A -> device on B");
    relay_until(&mut phone, &mut device, &probe);
    relay_until(
        &mut device,
        &mut phone,
        &message(3, 0, b"device on B -> phone on A"),
    );
    drop(device);
    let offline = next_status(&mut phone, 10).expect("device offline status through the msgbus");
    assert_eq!(
        i64::from_le_bytes(offline[37..45].try_into().unwrap()),
        ws_device
    );
    let mut device = login_when_ready(b.ws_addrs[0], ws_device);
    let online = next_status(&mut phone, 9).expect("device online status through the msgbus");
    assert_eq!(
        i64::from_le_bytes(online[37..45].try_into().unwrap()),
        ws_device
    );

    // A Redis push reaches the phone exactly once (every comet subscribes).
    let mut body = vec![5u8];
    body.extend_from_slice(&987_654_321i64.to_le_bytes());
    body.push(0);
    let mut payload = format!("{user}|").into_bytes();
    payload.extend_from_slice(&body);
    redis::cmd("PUBLISH")
        .arg("PubCommonMsg:0x36")
        .arg(payload)
        .query::<i64>(&mut con)
        .unwrap();
    // (The pushed body is a status body of type 5, "invited".)
    let pushed = next_status(&mut phone, 5).expect("push");
    assert_eq!(&pushed[36..], &body[..]);
    phone
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(next_status(&mut phone, 5).is_none(), "pushed exactly once");
    phone
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    // An upload from the WebSocket device: published with confirms, then acked.
    let mut upload = vec![0u8; 36];
    upload[0] = 0x82;
    upload[16..24].copy_from_slice(&ws_device.to_le_bytes());
    upload[28..30].copy_from_slice(&0x30u16.to_le_bytes());
    edge_proto::frame::seal(&mut upload).unwrap();
    device.send(Message::binary(upload.clone())).unwrap();
    let ack = next_except(&mut device, &[&probe]).expect("upload ack");
    assert_eq!(ack[24] & 0x40, 0x40, "ACK flag");
    assert!(bus.metrics().msgs_to_mq.load(Ordering::Relaxed) >= 1);

    // A UDP device on B logs in and exchanges forward packets with the phone on A.
    let mut udp = support::udp::Device::new(b.udp_addr.unwrap(), mac);
    assert_eq!(
        udp.online(),
        udp_device,
        "UDP login through the builtin platform"
    );
    let sid = udp.sid.0;
    let online = next_status(&mut phone, 9).expect("UDP device online status");
    assert_eq!(
        i64::from_le_bytes(online[37..45].try_into().unwrap()),
        udp_device
    );
    let to_udp = {
        let mut m = message(3, udp_device, &[0u8; 52]);
        m[40] = 0x82;
        m.extend_from_slice(b"to the UDP device");
        m
    };
    phone.send(Message::binary(to_udp)).unwrap();
    let mut buf = [0u8; 512];
    let mut relayed = false;
    for _ in 0..5 {
        let got = udp
            .socket
            .recv(&mut buf)
            .expect("relayed to the UDP device");
        if buf[..got].ends_with(b"to the UDP device") {
            assert_eq!(&buf[24..40], &sid[..]);
            relayed = true;
            break;
        }
        eprintln!("the UDP device also got {got} bytes: {:02x?}", &buf[..got]);
    }
    assert!(relayed, "relayed to the UDP device");

    drop(registration);
    a.shutdown();
    b.shutdown();
    bus.shutdown();
}

#[test]
fn comets_find_a_restarted_msgbus() {
    let tmp = std::path::PathBuf::from(testenv::service_addr(testenv::TMP));
    let root = format!("cs-msgbus-{}", unique());
    let first = msgbus("127.0.0.1:0", &tmp);
    let addr = first.local_addr();
    let zk = keeper::zk::ZkConfig::new(testenv::service_addr(testenv::ZK));
    let registration = keeper::zk::Registration::spawn(
        zk,
        vec![keeper::zk::NodeSpec::fixed(
            root.clone(),
            addr.to_string().into_bytes(),
        )],
    )
    .unwrap();
    let n = unique() % 200 + 20;
    let a = comet(&format!("127.1.{n}.2"), &root, &format!("cs-comets-r{n}"));
    let b = comet(&format!("127.1.{n}.3"), &root, &format!("cs-comets-r{n}"));
    let mut con = redis();
    let user = 16 * (unique() % 100_000_000 + 1);
    let device_id = -(unique() % 100_000_000 + 1);
    bind(&mut con, device_id, user);
    let mut phone = login_when_ready(a.ws_addrs[0], user);
    let mut device = login_when_ready(b.ws_addrs[0], device_id);
    let before = message(3, 0, b"before");
    relay_until(&mut device, &mut phone, &before);

    first.shutdown();
    let links_down = |node: &edge::node::Node| {
        let cluster = node.metrics.cluster.as_ref().expect("cluster metrics");
        cluster.links_up.load(std::sync::atomic::Ordering::Relaxed) == 0
    };
    assert!(
        eventually(|| links_down(&a) && links_down(&b)),
        "the comets saw the msgbus go"
    );
    // Sent while no msgbus is up: held by the comet (bounded) and relayed once one is back.
    let held = message(3, 0, b"sent while the msgbus was away");
    device.send(Message::binary(held.clone())).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = msgbus(&addr.to_string(), &tmp);
    assert_eq!(
        next_except(&mut phone, &[&before]).expect("held message"),
        held
    );
    let back = Instant::now();
    relay_until(
        &mut device,
        &mut phone,
        &message(3, 0, b"after the restart"),
    );
    assert!(
        back.elapsed() < Duration::from_secs(2) + Duration::from_millis(500),
        "relaying again {:?} after the msgbus returned",
        back.elapsed()
    );

    drop(registration);
    a.shutdown();
    b.shutdown();
    second.shutdown();
}
