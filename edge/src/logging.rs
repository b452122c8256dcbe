//! Logs: every program of the binary logs through `tracing` to stderr, as text (the
//! default) or one JSON object per line (`--log-format json`, for collectors). The level
//! comes from `--log-level`, else `RUST_LOG`, else `info`. Repeated warnings from a hot
//! place go through [`Throttle`]: at most one a second, with the count left out.
//!
//! Owns the subscriber's setup only; what is worth a line is decided where it happens.

use std::time::{Duration, Instant};

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

/// Lets a repeated warning through at most once per second; counts the ones held back.
#[derive(Debug)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// Nothing logged yet.
    pub const fn new() -> Self {
        Throttle {
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when a line may be logged now.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_held_back() {
        let mut t = Throttle::new();
        let start = Instant::now();
        assert_eq!(t.admit(start), Some(0));
        assert_eq!(t.admit(start + Duration::from_millis(10)), None);
        assert_eq!(t.admit(start + Duration::from_millis(20)), None);
        assert_eq!(t.admit(start + Duration::from_secs(2)), Some(2));
    }
}
