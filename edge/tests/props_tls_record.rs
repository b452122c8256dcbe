//! The keys-only record layer (`edge::tls_record`) against rustls's client as the reference:
//! a handshake in memory (the shard's own `feed` glue on the server side), the keys taken
//! over as the shard takes them, then random sequences of writes on either side and
//! deliveries of random lengths (records split anywhere, partial records carried as the
//! shard carries them). The model is deliberately naive: each direction is a byte string,
//! and what each side has read must always be a prefix of what the other wrote, and all of
//! it once everything is delivered. Every cipher suite of both TLS versions is drawn.

mod support;

use std::io::{Read, Write};
use std::path::Path;

use edge::shard::tls::feed;
use edge::tls_record::{Opened, RecordLayer};
use proptest::prelude::*;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::server::UnbufferedServerConnection;

/// A rustls client and the server's record layer after a handshake in memory.
fn established(case: usize) -> (ClientConnection, RecordLayer) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (cert, key) = (
        data.join("tls-p256-cert.pem"),
        data.join("tls-p256-key-sec1.pem"),
    );
    let server_tls = edge::tls::ServerTls::load(&cert, &key).expect("the test certificate");
    let mut server = UnbufferedServerConnection::new(server_tls.config()).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).expect("the certificate");
    let (version, suite) = support::tls::cipher_suites()[case];
    let config = support::tls::client_config_with(&der, &[version], Some(suite));
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(config, name).unwrap();
    for _ in 0..8 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let (mut plain, mut out) = (vec![0u8; wire.len()], Vec::new());
        let fed = feed(&mut server, &mut wire, &mut plain, &mut out);
        assert_eq!(fed.consumed, wire.len(), "whole handshake records");
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        if wire.is_empty() && out.is_empty() && !server.is_handshaking() && !client.is_handshaking()
        {
            break;
        }
    }
    let version = server.protocol_version().unwrap();
    #[allow(deprecated, reason = "the shard's route (tls_record's notes)")]
    let secrets = server.dangerous_extract_secrets().expect("keys");
    (
        client,
        RecordLayer::new(version, secrets).expect("a record layer"),
    )
}

#[derive(Clone, Debug)]
enum Op {
    ClientWrites(Vec<u8>),
    ServerWrites(Vec<u8>),
    /// Delivers this share (per 256) of the bytes in flight to the server.
    ToServer(u8),
    /// Delivers this share (per 256) of the bytes in flight to the client.
    ToClient(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let data = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => proptest::collection::vec(any::<u8>(), 0..40_000),
    ];
    prop_oneof![
        data.clone().prop_map(Op::ClientWrites),
        data.prop_map(Op::ServerWrites),
        any::<u8>().prop_map(Op::ToServer),
        any::<u8>().prop_map(Op::ToClient),
    ]
}

/// Both directions: what was written, what is in flight, what was read.
#[derive(Default)]
struct Streams {
    c2s_written: Vec<u8>,
    c2s_wire: Vec<u8>,
    c2s_read: Vec<u8>,
    s2c_written: Vec<u8>,
    s2c_wire: Vec<u8>,
    s2c_read: Vec<u8>,
}

fn to_server(layer: &mut RecordLayer, s: &mut Streams, share: usize) -> Result<(), TestCaseError> {
    // `c2s_wire` holds what the shard would: a held partial record, then the new bytes.
    let n = s.c2s_wire.len() * share / 256;
    let mut incoming = s.c2s_wire[..n].to_vec();
    let mut plain = vec![0u8; incoming.len()];
    let (opened, consumed) = layer.open(&mut incoming, &mut plain);
    let Opened::Plain(produced) = opened else {
        return Err(TestCaseError::fail(format!("{opened:?}")));
    };
    s.c2s_read.extend_from_slice(&plain[..produced]);
    s.c2s_wire.drain(..consumed);
    Ok(())
}

fn to_client(client: &mut ClientConnection, s: &mut Streams, share: usize) {
    let n = s.s2c_wire.len() * share / 256;
    let mut wire = &s.s2c_wire[..n];
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(got) = client.reader().read(&mut buf) {
            if got == 0 {
                break;
            }
            s.s2c_read.extend_from_slice(&buf[..got]);
        }
    }
    s.s2c_wire.drain(..n);
}

fn run(case: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut client, mut layer) = established(case);
    let mut s = Streams::default();
    for op in ops {
        match op {
            Op::ClientWrites(d) => {
                client.writer().write_all(d).unwrap();
                client.write_tls(&mut s.c2s_wire).unwrap();
                s.c2s_written.extend_from_slice(d);
            }
            Op::ServerWrites(d) => {
                prop_assert!(layer.seal(d, &mut s.s2c_wire));
                s.s2c_written.extend_from_slice(d);
            }
            Op::ToServer(share) => to_server(&mut layer, &mut s, usize::from(*share))?,
            Op::ToClient(share) => to_client(&mut client, &mut s, usize::from(*share)),
        }
        prop_assert!(s.c2s_written.starts_with(&s.c2s_read));
        prop_assert!(s.s2c_written.starts_with(&s.s2c_read));
    }
    to_server(&mut layer, &mut s, 256)?;
    to_client(&mut client, &mut s, 256);
    prop_assert_eq!(&s.c2s_read, &s.c2s_written);
    prop_assert_eq!(&s.s2c_read, &s.s2c_written);
    prop_assert!(
        s.c2s_wire.is_empty(),
        "a partial record left: {}",
        s.c2s_wire.len()
    );
    // The server's close_notify ends the client's stream cleanly.
    let mut out = Vec::new();
    prop_assert!(layer.seal_close_notify(&mut out));
    client.read_tls(&mut &out[..]).unwrap();
    let state = client.process_new_packets().unwrap();
    prop_assert!(state.peer_has_closed());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_record_layer_carries_both_streams_as_rustls_does(
        case in 0usize..6,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(case, &ops)?;
    }
}

#[test]
fn a_tampered_record_fails_and_a_client_close_notify_closes() {
    for case in 0..6 {
        let (mut client, mut layer) = established(case);
        client.writer().write_all(b"hello").unwrap();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let mut tampered = wire.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut plain = vec![0u8; wire.len()];
        assert_eq!(
            layer.open(&mut tampered, &mut plain).0,
            Opened::Failed,
            "case {case}"
        );
        let (mut client, mut layer) = established(case);
        client.send_close_notify();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let mut plain = vec![0u8; wire.len()];
        assert_eq!(
            layer.open(&mut wire, &mut plain).0,
            Opened::Closed,
            "case {case}"
        );
    }
}
