//! Fuzz targets of the shard's TLS:
//! - `tls_records`: the handshake glue (`edge::shard::tls::feed`), rustls's unbuffered server
//!   fed arbitrary bytes as ciphertext — whole, and split in two reads with the partial
//!   record carried over, as the shard does. A fresh session per input, on a fixed test
//!   certificate (`edge/tests/data`).
//! - `tls_established`: the keys-only record layer (`edge::tls_record`) of each protection
//!   (TLS 1.3, 1.2 AES-GCM, 1.2 ChaCha20) on fixed keys, fed arbitrary bytes the same two
//!   ways; seeds are real records sealed by a mirror layer, so mutations reach decryption.

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

/// A record layer of each protection and cipher (six pairs) on fixed keys: `mirror` swaps
/// the directions, so a mirror's sealed records open on the other.
fn fixed_layer(pick: u8, mirror: bool) -> edge::tls_record::RecordLayer {
    use edge::tls_record::{Cipher, Keys, Protection, RecordLayer};
    let (protection, cipher) = [
        (Protection::Tls13, Cipher::Aes128Gcm),
        (Protection::Tls13, Cipher::Aes256Gcm),
        (Protection::Tls13, Cipher::Chacha20Poly1305),
        (Protection::Tls12Gcm, Cipher::Aes128Gcm),
        (Protection::Tls12Gcm, Cipher::Aes256Gcm),
        (Protection::Tls12Chacha, Cipher::Chacha20Poly1305),
    ][usize::from(pick % 6)];
    let len = if cipher == Cipher::Aes128Gcm { 16 } else { 32 };
    let keys = |k: &'static [u8; 32]| Keys {
        key: &k[..len],
        iv: [k[0] ^ 0x5a; 12],
        seq: 0,
    };
    static A: [u8; 32] = [1; 32];
    static B: [u8; 32] = [2; 32];
    let (rx, tx) = if mirror {
        (keys(&B), keys(&A))
    } else {
        (keys(&A), keys(&B))
    };
    RecordLayer::from_keys(protection, cipher, rx, tx).expect("fixed keys")
}

pub(super) fn seeds_tls_established() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for protection in 0..6u8 {
        let mut sealer = fixed_layer(protection, true);
        let mut records = vec![protection];
        sealer.seal(b"\x82\x05hello", &mut records);
        sealer.seal(&[7u8; 20_000], &mut records);
        sealer.seal_close_notify(&mut records);
        seeds.push(records);
    }
    seeds.push(vec![0, 0x17, 0x03, 0x03, 0x00, 0x10]);
    seeds
}

/// The first byte picks the protection (and the split point); the rest is ciphertext.
pub(super) fn check_tls_established(data: &[u8]) -> Outcome {
    use edge::tls_record::Opened;
    let Some((&pick, input)) = data.split_first() else {
        return Ok(0);
    };
    let split = usize::from(pick) % (input.len() + 1);
    let mut outcomes = Vec::new();
    for split in [0, split] {
        let mut layer = fixed_layer(pick, false);
        let (mut held, mut produced, mut last) = (Vec::new(), 0usize, Opened::Plain(0));
        for part in [&input[..split], &input[split..]] {
            let mut incoming = [&held[..], part].concat();
            let mut plain = vec![0u8; incoming.len()];
            let (opened, consumed) = layer.open(&mut incoming, &mut plain);
            ensure!(
                consumed <= incoming.len(),
                "consumed {consumed} of {}",
                incoming.len()
            );
            if let Opened::Plain(n) = opened {
                ensure!(
                    n <= consumed,
                    "{n} plaintext bytes from {consumed} of ciphertext"
                );
                produced += n;
            }
            held = incoming[consumed..].to_vec();
            last = opened;
            if !matches!(last, Opened::Plain(_)) {
                break;
            }
        }
        let kind = match last {
            Opened::Plain(_) => 0u8,
            Opened::Closed => 1,
            Opened::Unsupported => 2,
            Opened::Failed => 3,
        };
        outcomes.push((kind, produced));
    }
    // Records are opened whole, so where a read ends changes nothing: the same outcome, and
    // where both succeeded, the same plaintext. (A failure's plaintext is not compared:
    // the connection closes and drops it.)
    let (whole, parts) = (&outcomes[0], &outcomes[1]);
    ensure!(
        whole.0 == parts.0,
        "outcome {} whole, {} split",
        whole.0,
        parts.0
    );
    ensure!(
        whole.0 != 0 || whole.1 == parts.1,
        "{} plaintext bytes whole, {} split",
        whole.1,
        parts.1
    );
    Ok(feature_of(&(pick % 6, whole.0, parts.0, whole.1 > 0)))
}
