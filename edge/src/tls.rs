//! The node's TLS server settings (`--tls-ports`, `--tls-cert`, `--tls-key`): the
//! certificate chain and key read from PEM files (a PKCS#8, SEC1 or RSA key), TLS 1.3 and
//! 1.2 on rustls's `ring` provider (it builds with a C compiler alone, as the README's two
//! commands need; `aws-lc-rs` would need cmake), session resumption by tickets with
//! rotating keys (and a session cache for TLS 1.2 ids), and reload: a thread looks at the
//! files' modification times every two seconds and, when they change, builds a new
//! configuration that new connections use — a bad new file keeps the old one and is logged.
//!
//! Owns the current `rustls::ServerConfig`; the record layer itself runs in the shards
//! (`shard::tls`), on rustls's unbuffered API.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::ring as provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// How often the certificate and key files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why the TLS settings could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the certificate and key together (a key that does not match…).
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current server configuration, shared by every shard (read once per accepted
/// connection, never on the message path).
#[derive(Debug)]
pub struct ServerTls {
    current: Mutex<Arc<ServerConfig>>,
    cert: PathBuf,
    key: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ServerTls {
    /// Reads `cert` and `key`; fails with a line that names the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerTls>, TlsError> {
        let config = build(cert, key)?;
        Ok(Arc::new(ServerTls {
            current: Mutex::new(config),
            cert: cert.to_owned(),
            key: key.to_owned(),
            stop: Arc::default(),
        }))
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// Starts the thread that reloads the files when they change; it ends with [`Self::stop`].
    pub fn watch(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let tls = self.clone();
        std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || {
                let mut seen = stamps(&tls.cert, &tls.key);
                while !tls.stop.load(Ordering::Acquire) {
                    std::thread::sleep(RELOAD_EVERY);
                    let now = stamps(&tls.cert, &tls.key);
                    if now != seen {
                        seen = now;
                        tls.reload();
                    }
                }
            })
    }

    /// Builds a configuration from the files again; keeps the old one if that fails.
    pub fn reload(&self) -> bool {
        match build(&self.cert, &self.key) {
            Ok(config) => {
                if let Ok(mut current) = self.current.lock() {
                    *current = config;
                }
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not reloaded: keeping the old one");
                false
            }
        }
    }

    /// Ends the reload thread (within [`RELOAD_EVERY`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn build(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let file_error = |path: &Path, why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    #[allow(
        deprecated,
        reason = "ring has no post-quantum key exchange; aws-lc-rs, which has, needs cmake"
    )]
    let mut provider = provider::default_provider();
    // X25519 first: ring's default list puts P-384 first, and ring's P-384 is generic
    // bignum code (about 1 ms of CPU per key exchange here); phones' TLS stacks offer X25519.
    provider.kx_groups = vec![
        provider::kx_group::X25519,
        provider::kx_group::SECP256R1,
        provider::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // Resumption: TLS 1.3 tickets (and 1.2 tickets) under rotating keys; 1.2 session ids
    // from the default in-memory cache.
    config.ticketer = provider::Ticketer::new()?;
    config.send_tls13_tickets = 2;
    // A finished handshake hands its traffic keys to the shard's record layer
    // (`tls_record`), which keeps them and nothing else.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
