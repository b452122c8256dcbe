//! Shared by every integration test that talks to a live Redis, RabbitMQ or ZooKeeper.
//!
//! This is not a crate: it is one file that each test target includes with
//!
//! ```ignore
//! #[path = "support/testenv.rs"] (bus tests; keeper's use "../../bus/tests/support/testenv.rs")
//! mod testenv;
//! ```
//!
//! so the lookup and its error message exist once, without putting test-only code into a
//! library's public API or adding a crate to the workspace. (A workspace root `tests/`
//! directory is not a Cargo target in a virtual workspace, so nothing compiles it on its own.)
//!
//! `scripts/test` starts private servers on free loopback ports and exports the variables
//! below; a developer can also set them to point at services of their own.
#![allow(dead_code, reason = "each test target uses only some of these helpers")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `host:port` of a Redis server.
pub const REDIS: &str = "CLOUDSOCKET_TEST_REDIS";
/// AMQP URI of a RabbitMQ broker, e.g. `amqp://guest:guest@127.0.0.1:5673/%2f`.
pub const AMQP: &str = "CLOUDSOCKET_TEST_AMQP";
/// Base URL (with credentials) of the same broker's management HTTP API.
pub const RABBIT_HTTP: &str = "CLOUDSOCKET_TEST_RABBIT_HTTP";
/// `host:port` of a ZooKeeper server.
pub const ZK: &str = "CLOUDSOCKET_TEST_ZK";
/// A scratch directory that lives as long as the `scripts/test` run.
pub const TMP: &str = "CLOUDSOCKET_TEST_TMP";

/// The value of `var`, or a panic that says how to run the tests.
///
/// Tests that need a service fail rather than skip when it is missing: a skipped test
/// looks green in CI while proving nothing.
#[track_caller]
pub fn service_addr(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => panic!(
            "{var} is not set: run the tests with scripts/test, which starts private Redis, \
             RabbitMQ and ZooKeeper (or set {var} to a service of your own)"
        ),
    }
}

/// A name no other test process or earlier test in this one uses: `prefix-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Runs `f` on its own thread and panics if it takes longer than `limit`, so a dead or
/// wedged service fails the test instead of hanging CI. A panic inside `f` is passed on.
///
/// On timeout the thread is left behind; the test binary exits when its tests are done.
#[track_caller]
#[allow(clippy::disallowed_methods, reason = "test harness, not pure code")]
pub fn within<T, F>(limit: Duration, what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}: is the service up and reachable?")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
#[track_caller]
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
