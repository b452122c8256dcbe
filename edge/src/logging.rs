//! Logs: every program of the binary logs through `tracing` to stderr, as text (the
//! default) or one JSON object per line (`--log-format json`, for collectors). The level
//! comes from `--log-level`, else `RUST_LOG`, else `info`. Repeated warnings from a hot
//! place go through [`Throttle`] (`bus::throttle`): at most one a second, with the count
//! held back.
//!
//! Owns the subscriber's setup only; what is worth a line is decided where it happens.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's subscriber. A second call (tests starting several nodes) is a
/// no-op.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub use bus::throttle::Throttle;
