//! Fuzz target: the shard's TLS record glue (`edge::shard::tls::feed`), rustls's unbuffered
//! server fed arbitrary bytes as ciphertext — whole, and split in two reads with the partial
//! record carried over, as the shard does. A fresh session per input, on a fixed test
//! certificate (`edge/tests/data`).

use std::sync::{Arc, OnceLock};

use edge::shard::tls::{TlsRead, feed};
use rustls::server::UnbufferedServerConnection;

use super::*;

fn server_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<edge::tls::ServerTls>> = OnceLock::new();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/data");
    CONFIG
        .get_or_init(|| {
            edge::tls::ServerTls::load(
                &data.join("tls-p256-cert.pem"),
                &data.join("tls-p256-key-sec1.pem"),
            )
            .expect("the test certificate")
        })
        .config()
}

/// A real ClientHello (from rustls's client), as a record.
fn client_hello() -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/tests/data");
    let pem = std::fs::read(data.join("tls-p256-cert.pem")).unwrap_or_default();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    let _ = client.write_tls(&mut out);
    out
}

pub(super) fn seeds_tls() -> Vec<Vec<u8>> {
    let hello = client_hello();
    vec![
        hello.clone(),
        hello[..hello.len() / 2].to_vec(),
        [&hello[..], &hello[..]].concat(),
        b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
        vec![0x17, 0x03, 0x03, 0x00, 0x10],
    ]
}

/// Feeds `input` to a fresh session in one read or, `split` > 0, in two (the unconsumed
/// tail of the first kept in front of the second, as the shard keeps a partial record).
fn run(input: &[u8], split: usize) -> Result<(TlsRead, bool), String> {
    let mut conn = UnbufferedServerConnection::new(server_config()).map_err(|e| e.to_string())?;
    let mut outbox = Vec::new();
    let mut plain = vec![0u8; input.len()];
    let (mut held, mut last) = (Vec::new(), TlsRead::Plain(0));
    for part in [&input[..split], &input[split..]] {
        let mut incoming = [&held[..], part].concat();
        let fed = feed(&mut conn, &mut incoming, &mut plain, &mut outbox);
        ensure!(
            fed.consumed <= incoming.len(),
            "consumed {} of {}",
            fed.consumed,
            incoming.len()
        );
        if let TlsRead::Plain(n) = fed.outcome {
            ensure!(
                n <= incoming.len(),
                "{n} plaintext bytes from {} of ciphertext",
                incoming.len()
            );
        }
        held = incoming[fed.consumed..].to_vec();
        last = fed.outcome;
        if !matches!(last, TlsRead::Plain(_)) {
            break;
        }
    }
    Ok((last, !outbox.is_empty()))
}

pub(super) fn check_tls(data: &[u8]) -> Outcome {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let (whole, answered) = run(data, 0)?;
    let (parts, _) = run(data, split)?;
    let kind = |r: &TlsRead| match r {
        TlsRead::Plain(0) => 0u8,
        TlsRead::Plain(_) => 1,
        TlsRead::Closed => 2,
        TlsRead::Failed => 3,
    };
    // A split read may stop earlier (a partial record waits), never succeed where the
    // whole input failed.
    ensure!(
        !(kind(&whole) == 3 && kind(&parts) == 1),
        "the whole input failed but split reads produced plaintext"
    );
    Ok(feature_of(&(kind(&whole), kind(&parts), answered)))
}
