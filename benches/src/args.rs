//! Command-line pieces shared by every `loadgen` scenario.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where to send load and how to report it.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// WebSocket listeners of the target (comma-separated; connections alternate).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:1234,127.0.0.1:1235"
    )]
    pub target: Vec<SocketAddr>,
    /// The target's status/admin endpoint.
    #[arg(long, default_value = "127.0.0.1:29999")]
    pub admin: SocketAddr,
    /// Login salt.
    #[arg(long, default_value = edge_proto::login::DEFAULT_SALT)]
    pub salt: String,
    /// First id index: users are 16·(base+i), devices −(base+i+1).
    #[arg(long, default_value_t = 1000)]
    pub base_id: i64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the HDR percentile distribution here.
    #[arg(long)]
    pub hdr_out: Option<PathBuf>,
    /// Write a latency plot (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The server's pid (or pids, comma-separated: a comet, its msgbus and Redis): their
    /// CPU time (`/proc/<pid>/stat`) over the measured window is reported per message.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// With `--server-pid`: count its system calls over the window (`perf stat`).
    #[arg(long)]
    pub syscalls: bool,
    /// Speak `wss://` to `--target`, trusting the PEM certificate(s) in this file (the
    /// server's name must be `localhost`).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl Common {
    /// The TLS client settings for `--tls-ca`, if given (X25519 offered first, as phones do).
    pub fn tls_config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        use rustls::pki_types::pem::PemObject;
        let Some(path) = &self.tls_ca else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)? {
            roots.add(cert?)?;
        }
        #[allow(deprecated, reason = "the server's provider: ring")]
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .kx_groups
            .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(std::sync::Arc::new(config)))
    }

    /// The user id of pair `i`.
    pub fn user(&self, i: usize) -> i64 {
        16 * (self.base_id + i as i64)
    }

    /// The device id of pair `i`.
    pub fn device(&self, i: usize) -> i64 {
        -(self.base_id + i as i64 + 1)
    }
}

/// Splits `total` into `parts` near-equal ranges.
pub fn split(total: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    (0..parts)
        .map(|p| (total * p / parts)..(total * (p + 1) / parts))
        .collect()
}

/// An increasing list of counts (`1000,3000,6000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps(pub Vec<usize>);

/// Parses `1000,3000,6000` style lists of counts.
pub fn parse_steps(s: &str) -> Result<Steps, String> {
    let v: Result<Vec<usize>, _> = s.split(',').map(|x| x.trim().parse::<usize>()).collect();
    match v {
        Ok(v) if !v.is_empty() && v.windows(2).all(|w| w[0] < w[1]) => Ok(Steps(v)),
        Ok(_) => Err("steps must be increasing".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_everything() {
        let r = split(10, 3);
        assert_eq!(r, vec![0..3, 3..6, 6..10]);
        assert_eq!(split(5, 0), vec![0..5]);
        assert_eq!(split(0, 2), vec![0..0, 0..0]);
    }

    #[test]
    fn steps() {
        assert_eq!(
            parse_steps("1000, 3000,9000"),
            Ok(Steps(vec![1000, 3000, 9000]))
        );
        assert!(parse_steps("3,1").is_err());
        assert!(parse_steps("x").is_err());
        assert!(parse_steps("").is_err());
    }
}
