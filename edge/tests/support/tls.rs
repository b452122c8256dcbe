//! TLS for the `wss` tests: a self-signed certificate made with rcgen, a node serving it,
//! and rustls clients (any version or cipher suite) carrying tungstenite.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

use super::{login_string, node_with};

/// A TLS client carrying a WebSocket.
pub type Wss = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A self-signed certificate for `localhost`, written as PEM files; the certificate.
pub fn make_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    // Written to a temp name and renamed: the reload thread never sees half a file.
    for (name, pem) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert.der().clone()
}

pub fn tls_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cs-wss-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn tls_node(dir: &std::path::Path) -> edge::node::Node {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    node_with(|c| {
        c.tls_addrs = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls_files = Some((cert, key));
    })
}

pub fn client_config(cert: &CertificateDer<'static>, tls12_only: bool) -> Arc<ClientConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    client_config_with(cert, versions, None)
}

/// A client trusting `cert`, on ring as the server is, with X25519 first as phones' TLS
/// stacks have it (ring's default list starts with P-384); `suite` alone if given.
pub fn client_config_with(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suite: Option<rustls::SupportedCipherSuite>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    #[allow(
        deprecated,
        reason = "the server's provider: ring, without post-quantum groups"
    )]
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection and WebSocket upgrade to `addr`.
pub fn wss(addr: SocketAddr, config: &Arc<ClientConfig>) -> Wss {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(config.clone(), name).unwrap();
    let stream = StreamOwned::new(tls, tcp);
    let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("upgrade over TLS");
    ws
}

pub fn wss_login(addr: SocketAddr, config: &Arc<ClientConfig>, id: i64) -> (Wss, Vec<u8>) {
    let mut ws = wss(addr, config);
    ws.send(Message::text(login_string(id))).unwrap();
    loop {
        match ws.read().expect("login reply") {
            Message::Binary(b) => return (ws, b.to_vec()),
            Message::Text(t) => return (ws, t.as_bytes().to_vec()),
            _ => {}
        }
    }
}

/// Every cipher suite the node negotiates (ring's; ECDSA for TLS 1.2, as `make_cert`'s key),
/// with its protocol version.
pub fn cipher_suites() -> [(
    &'static rustls::SupportedProtocolVersion,
    rustls::SupportedCipherSuite,
); 6] {
    use rustls::crypto::ring::cipher_suite as suites;
    use rustls::version::{TLS12, TLS13};
    [
        (&TLS13, suites::TLS13_AES_128_GCM_SHA256),
        (&TLS13, suites::TLS13_AES_256_GCM_SHA384),
        (&TLS13, suites::TLS13_CHACHA20_POLY1305_SHA256),
        (&TLS12, suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        (&TLS12, suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        (
            &TLS12,
            suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}
