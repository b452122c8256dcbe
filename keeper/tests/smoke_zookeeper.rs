//! Smoke test: the ZooKeeper that `scripts/test` starts (or `CLOUDSOCKET_TEST_ZK` names)
//! keeps an ephemeral-sequential node for exactly as long as the session that made it.

#[path = "../../bus/tests/support/testenv.rs"]
mod testenv;

use std::time::Duration;

use zookeeper::{Acl, CreateMode, WatchedEvent, ZkError, ZkResult, ZooKeeper};

/// Session timeout: short, so nothing a failed run leaves behind outlives it by much.
const SESSION: Duration = Duration::from_secs(5);

#[test]
fn zookeeper_ephemeral_sequential_lives_with_its_session() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(
        Duration::from_secs(30),
        "the ZooKeeper smoke test",
        move || ephemeral_round_trip(&addr),
    )
    .expect("ZooKeeper error");
}

fn connect(addr: &str) -> ZkResult<ZooKeeper> {
    ZooKeeper::connect(addr, SESSION, |_: WatchedEvent| {})
}

fn ephemeral_round_trip(addr: &str) -> ZkResult<()> {
    let parent = format!("/cloudsocket-smoke-{}", std::process::id());
    let prefix = format!("{parent}/node-");

    let zk = connect(addr)?;
    match zk.create(
        &parent,
        Vec::new(),
        Acl::open_unsafe().clone(),
        CreateMode::Persistent,
    ) {
        Ok(_) | Err(ZkError::NodeExists) => {}
        Err(e) => return Err(e),
    }
    let child = zk.create(
        &prefix,
        b"x".to_vec(),
        Acl::open_unsafe().clone(),
        CreateMode::EphemeralSequential,
    )?;
    let sequence = child
        .strip_prefix(&prefix)
        .expect("the child is named after the prefix");
    assert_eq!(
        sequence.len(),
        10,
        "a 10-digit sequence suffix, got {child}"
    );
    assert!(sequence.bytes().all(|b| b.is_ascii_digit()), "got {child}");

    let (data, stat) = zk.get_data(&child, false)?;
    assert_eq!(data, b"x");
    assert_ne!(stat.ephemeral_owner, 0, "{child} is not ephemeral");
    zk.close()?;
    drop(zk);

    // Closing the session deletes its ephemerals before the close is answered.
    let zk = connect(addr)?;
    assert!(
        zk.exists(&child, false)?.is_none(),
        "{child} outlived its session"
    );
    zk.delete(&parent, None)?;
    zk.close()?;
    Ok(())
}
