//! The keys-only record layer of established `wss` connections (`edge::tls_record`), against
//! rustls's client: every cipher suite the node negotiates, in both TLS versions, relays
//! both ways with messages that span several records; the node ends a connection with
//! `close_notify`; a client's TLS 1.3 `KeyUpdate` closes its connection and is counted.

mod support;

use std::io::Read;

use rustls::version::TLS13;
use support::tls::*;
use support::*;
use tungstenite::Message;

/// Reads until a binary message ending in `tail` arrives.
fn read_until(ws: &mut Wss, tail: &[u8]) -> Vec<u8> {
    loop {
        match ws.read().expect("a message") {
            Message::Binary(b) if b.ends_with(tail) => return b.to_vec(),
            _ => {}
        }
    }
}

#[test]
fn every_cipher_suite_relays_both_ways_in_both_versions() {
    let dir = tls_dir("suites");
    let cert = make_cert(&dir);
    let node = tls_node(&dir);
    let (addr, plain) = (node.wss_addrs[0], node.ws_addrs[0]);
    let cases = cipher_suites();
    for (i, (version, suite)) in cases.into_iter().enumerate() {
        let (user, device_id) = (2000 + 16 * i as i64, -(100 + i as i64));
        let (code, _) = http(
            node.status_addr,
            "POST",
            &format!("/admin/bind?device={device_id}&user={user}"),
            b"",
        );
        assert_eq!(code, 200);
        let config = client_config_with(&cert, &[version], Some(suite));
        let (mut phone, reply) = wss_login(addr, &config, user);
        assert_eq!(reply.first(), Some(&0), "{suite:?}: phone logged in");
        let (mut device, reply) = login(plain, device_id);
        assert_eq!(reply, vec![0]);
        // Sizes inside one record, across two, and across four (16 KiB records).
        for (j, size) in [60usize, 1000, 20_000, 60_000].into_iter().enumerate() {
            let tail = format!("|{i}.{j}|");
            let mut body = vec![b'x'; size];
            body.extend_from_slice(tail.as_bytes());
            let to_device = message(3, device_id, &body);
            phone.send(Message::binary(to_device.clone())).unwrap();
            let got = loop {
                let b = next_data(&mut device).expect("relayed to the device");
                if b.ends_with(tail.as_bytes()) {
                    break b;
                }
            };
            assert_eq!(got, to_device, "{suite:?}, {size} B phone -> device");
            let to_phone = message(3, 0, &body);
            device.send(Message::binary(to_phone.clone())).unwrap();
            let back = read_until(&mut phone, tail.as_bytes());
            assert_eq!(back, to_phone, "{suite:?}, {size} B device -> phone");
        }
    }
    node.shutdown();
}

#[test]
fn the_node_ends_a_connection_with_close_notify() {
    let dir = tls_dir("close");
    let cert = make_cert(&dir);
    let node = tls_node(&dir);
    for tls12 in [false, true] {
        let id = 2304 + 16 * i64::from(tls12);
        let (mut phone, reply) = wss_login(node.wss_addrs[0], &client_config(&cert, tls12), id);
        assert_eq!(reply.first(), Some(&0));
        phone.close(None).unwrap();
        // The node answers the close frame and closes; rustls reports a clean end (0 bytes)
        // only after close_notify, an error otherwise.
        let error = loop {
            if let Err(e) = phone.read() {
                break e;
            }
        };
        assert!(
            matches!(error, tungstenite::Error::ConnectionClosed),
            "TLS 1.2 only: {tls12}: {error:?}"
        );
        let mut rest = [0u8; 16];
        let end = phone.get_mut().read(&mut rest);
        assert!(matches!(end, Ok(0)), "TLS 1.2 only: {tls12}: {end:?}");
    }
    node.shutdown();
}

#[test]
fn a_key_update_from_the_client_closes_its_connection_and_is_counted() {
    let dir = tls_dir("keyupdate");
    let cert = make_cert(&dir);
    let node = tls_node(&dir);
    let config = client_config_with(&cert, &[&TLS13], None);
    let (mut phone, reply) = wss_login(node.wss_addrs[0], &config, 2400);
    assert_eq!(reply.first(), Some(&0));
    phone.get_mut().conn.refresh_traffic_keys().unwrap();
    // The KeyUpdate goes out with the next write.
    let _ = phone.send(Message::text("p"));
    let closed = loop {
        match phone.read() {
            Ok(_) => {}
            Err(_) => break true,
        }
    };
    assert!(closed);
    assert!(eventually(|| counter(&node, |m| &m
        .tls_key_updates_refused)
        >= 1));
    // Other connections are untouched.
    let (_other, reply) = wss_login(node.wss_addrs[0], &config, 2416);
    assert_eq!(reply.first(), Some(&0));
    node.shutdown();
}
