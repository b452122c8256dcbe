//! `wss://` (issue 14): a two-shard node with a TLS listener on a self-signed certificate
//! (made here with rcgen), spoken to by a real TLS client (rustls) carrying tungstenite:
//! login, heartbeat and relay between a `wss` phone and a plain `ws` device; a TLS 1.2
//! client; a resumed session; a plaintext client and garbage on the TLS port, refused
//! cleanly and counted; a stalled handshake closed by the upgrade deadline; and a
//! certificate reload seen by a new handshake while an old connection keeps flowing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};
use support::tls::*;
use support::*;
use tungstenite::Message;

#[test]
fn login_heartbeat_and_relay_over_wss_with_a_plain_ws_peer() {
    let dir = tls_dir("relay");
    let cert = make_cert(&dir);
    let node = tls_node(&dir);
    let addr = node.wss_addrs[0];
    let config = client_config(&cert, false);
    let (code, _) = http(
        node.status_addr,
        "POST",
        "/admin/bind?device=-71&user=1136",
        b"",
    );
    assert_eq!(code, 200);
    let (mut phone, reply) = wss_login(addr, &config, 1136);
    assert_eq!(reply.first(), Some(&0), "phone logged in over wss");
    let (mut device, reply) = login(node.ws_addrs[0], -71);
    assert_eq!(reply, vec![0], "device logged in over plain ws");
    // A heartbeat ("p" → "P"); then phone → device and device → phone.
    phone.send(Message::text("p")).unwrap();
    let pong = loop {
        match phone.read().expect("heartbeat answer") {
            Message::Text(t) => break t.as_bytes().to_vec(),
            Message::Binary(b) if b.len() == 1 => break b.to_vec(),
            _ => {}
        }
    };
    assert_eq!(pong, b"P");
    let to_device = message(3, -71, b"phone->device");
    phone.send(Message::binary(to_device.clone())).unwrap();
    let got = loop {
        let b = next_data(&mut device).expect("relayed to the device");
        if b.ends_with(b"phone->device") {
            break b;
        }
    };
    assert_eq!(got, to_device);
    let to_phone = message(3, 0, b"device->phone");
    device.send(Message::binary(to_phone.clone())).unwrap();
    let back = loop {
        match phone.read().expect("relayed to the phone") {
            Message::Binary(b) if b.ends_with(b"device->phone") => break b.to_vec(),
            _ => {}
        }
    };
    assert_eq!(back, to_phone);
    assert!(counter(&node, |m| &m.tls_handshakes_tls13) >= 1);
    node.shutdown();
}

#[test]
fn tls12_clients_and_resumed_sessions_are_served_and_counted() {
    let dir = tls_dir("versions");
    let cert = make_cert(&dir);
    let node = tls_node(&dir);
    let addr = node.wss_addrs[0];
    let (_ws, reply) = wss_login(addr, &client_config(&cert, true), 1152);
    assert_eq!(reply.first(), Some(&0));
    assert!(counter(&node, |m| &m.tls_handshakes_tls12) >= 1);
    // The same client config keeps the tickets it was given: the next connection resumes.
    let config = client_config(&cert, false);
    let (first, reply) = wss_login(addr, &config, 1168);
    assert_eq!(reply.first(), Some(&0));
    drop(first);
    let (_second, reply) = wss_login(addr, &config, 1184);
    assert_eq!(reply.first(), Some(&0));
    assert!(eventually(|| counter(&node, |m| &m.tls_resumptions) >= 1));
    node.shutdown();
}

/// Sends `bytes` to the TLS port; true when the node closed the connection without a byte.
fn refused_cleanly(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn plaintext_and_garbage_on_the_tls_port_are_refused_and_counted() {
    let dir = tls_dir("garbage");
    make_cert(&dir);
    let node = tls_node(&dir);
    let addr = node.wss_addrs[0];
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(refused_cleanly(addr, upgrade), "a plaintext client");
    assert!(
        refused_cleanly(addr, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]),
        "a broken hello"
    );
    assert!(refused_cleanly(addr, &[0xff; 300]), "garbage");
    assert!(eventually(
        || counter(&node, |m| &m.tls_handshake_errors) >= 3
    ));
    node.shutdown();
}

#[test]
fn a_stalled_handshake_is_closed_by_the_upgrade_deadline() {
    let dir = tls_dir("stall");
    make_cert(&dir);
    let node = tls_node(&dir);
    let mut s = TcpStream::connect(node.wss_addrs[0]).unwrap();
    // Half a ClientHello record header, then nothing.
    s.write_all(&[0x16, 0x03]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(13),
        "closed after {took:?}"
    );
    node.shutdown();
}

#[test]
fn a_new_certificate_is_served_to_new_handshakes_while_old_connections_flow() {
    let dir = tls_dir("reload");
    let old = make_cert(&dir);
    let node = tls_node(&dir);
    let addr = node.wss_addrs[0];
    let (code, _) = http(
        node.status_addr,
        "POST",
        "/admin/bind?device=-72&user=1200",
        b"",
    );
    assert_eq!(code, 200);
    let (mut kept, reply) = wss_login(addr, &client_config(&old, false), 1200);
    assert_eq!(reply.first(), Some(&0));
    let (mut device, reply) = login(node.ws_addrs[0], -72);
    assert_eq!(reply, vec![0]);
    std::thread::sleep(Duration::from_millis(1100)); // a later modification time
    let new = make_cert(&dir);
    assert_ne!(old, new);
    let deadline = Instant::now() + Duration::from_secs(10);
    let config = client_config(&new, false);
    while !serves(addr, &config, &new) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The connection made under the old certificate still flows, both ways.
    device
        .send(Message::binary(message(3, 0, b"after-reload")))
        .unwrap();
    loop {
        match kept.read().expect("the old connection still flows") {
            Message::Binary(b) if b.ends_with(b"after-reload") => break,
            _ => {}
        }
    }
    node.shutdown();
}

/// Whether a handshake with `config` completes and presents `cert`.
fn serves(addr: SocketAddr, config: &Arc<ClientConfig>, cert: &CertificateDer<'static>) -> bool {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = ClientConnection::new(config.clone(), name).unwrap();
    let done = tls.complete_io(&mut tcp).is_ok() && !tls.is_handshaking();
    done && tls.peer_certificates().and_then(|c| c.first()) == Some(cert)
}

/// A certificate and key from `edge/tests/data` (see its README), copied to a fresh
/// directory as `cert.pem` and `key.pem`; the certificate.
fn fixed_cert(dir: &std::path::Path, cert: &str, key: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    std::fs::copy(data.join(cert), dir.join("cert.pem")).unwrap();
    std::fs::copy(data.join(key), dir.join("key.pem")).unwrap();
    CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()
}

#[test]
fn rsa_2048_with_a_pkcs1_key_and_p256_with_a_sec1_key_both_serve() {
    for (name, cert, key) in [
        ("rsa", "tls-rsa2048-cert.pem", "tls-rsa2048-key-pkcs1.pem"),
        ("sec1", "tls-p256-cert.pem", "tls-p256-key-sec1.pem"),
    ] {
        let dir = tls_dir(name);
        let der = fixed_cert(&dir, cert, key);
        let node = tls_node(&dir);
        for tls12 in [false, true] {
            let config = client_config(&der, tls12);
            let (_ws, reply) = wss_login(node.wss_addrs[0], &config, 1216 + 16 * i64::from(tls12));
            assert_eq!(reply.first(), Some(&0), "{name}, TLS 1.2 only: {tls12}");
        }
        node.shutdown();
    }
}
