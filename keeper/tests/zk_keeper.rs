//! The keeper against the real ZooKeeper (and RabbitMQ) that `scripts/test` starts:
//! registration (one node, refreshed, exactly one again after a session loss), discovery
//! (a node appears and disappears), and rmqkeeper (healthy broker registered, dead
//! management API never registered). Every test uses its own root and removes it.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "../../bus/tests/support/testenv.rs"]
mod testenv;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keeper::{Discovery, NodeSpec, Registration, RmqConfig, RmqKeeper, ZkConfig};
use zookeeper::{Acl, CreateMode, WatchedEvent, ZooKeeper};

/// Short sessions so expiries happen within a test (the server's minimum is 1 s).
const SESSION: Duration = Duration::from_secs(2);

fn observer(addr: &str) -> ZooKeeper {
    ZooKeeper::connect(addr, Duration::from_secs(10), |_: WatchedEvent| {}).expect("connect")
}

/// `(path, data, ephemeral_owner)` of every child of `/<root>` (none when it is missing).
fn children(zk: &ZooKeeper, root: &str) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    let mut names = zk
        .get_children(&format!("/{root}"), false)
        .unwrap_or_default();
    names.sort();
    for name in names {
        let path = format!("/{root}/{name}");
        if let Ok((data, stat)) = zk.get_data(&path, false) {
            out.push((
                path,
                String::from_utf8_lossy(&data).into_owned(),
                stat.ephemeral_owner,
            ));
        }
    }
    out
}

fn remove_root(zk: &ZooKeeper, root: &str) {
    for (path, _, _) in children(zk, root) {
        let _ = zk.delete(&path, None);
    }
    let _ = zk.delete(&format!("/{root}"), None);
}

fn config(servers: &str) -> ZkConfig {
    let mut config = ZkConfig::new(servers).with_session_timeout(SESSION);
    config.refresh = Duration::from_millis(200);
    config.resync = Duration::from_secs(2);
    config
}

#[test]
fn registration_creates_one_node_and_refreshes_it() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(Duration::from_secs(20), "registration", move || {
        let root = testenv::unique_name("cs-test");
        let zk = observer(&addr);
        let online = Arc::new(AtomicU64::new(1));
        let counter = online.clone();
        let node = NodeSpec::sampled(format!("/{root}/"), move || {
            format!(
                "ws://10.0.0.1:1234/ws,0.000000,0,0,{}",
                counter.load(Ordering::SeqCst)
            )
            .into_bytes()
        });
        let registration = Registration::spawn(config(&addr), vec![node]).expect("spawn");
        let path = testenv::wait_for(Duration::from_secs(10), "the node", || {
            registration.paths()[0].clone()
        });
        let seq = path
            .strip_prefix(&format!("/{root}/{}", keeper::zk::CHILD_PREFIX))
            .expect("under the root");
        assert!(
            seq.len() == 10 && seq.bytes().all(|b| b.is_ascii_digit()),
            "{path}"
        );
        let nodes = children(&zk, &root);
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes[0].1, "ws://10.0.0.1:1234/ws,0.000000,0,0,1");
        assert_ne!(nodes[0].2, 0, "ephemeral");

        online.store(42, Ordering::SeqCst);
        testenv::wait_for(Duration::from_secs(5), "the refreshed data", || {
            let (data, _) = zk.get_data(&path, false).ok()?;
            (data == b"ws://10.0.0.1:1234/ws,0.000000,0,0,42").then_some(())
        });
        assert_eq!(children(&zk, &root).len(), 1);

        registration.stop();
        assert_eq!(children(&zk, &root), [], "stop closes the session");
        remove_root(&zk, &root);
    });
}

/// The client loses ZooKeeper twice: briefly (its session survives on the server, but
/// the 0.8 client gives up on it and a fresh client must delete the old node) and for
/// longer than the session (the server expires it). Each time exactly one node remains.
#[test]
fn session_loss_leaves_exactly_one_node() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(Duration::from_secs(30), "session loss", move || {
        let root = testenv::unique_name("cs-test");
        let zk = observer(&addr);
        let proxy = proxy::Proxy::start(&addr);
        let node = NodeSpec::fixed(root.clone(), b"10.0.0.2:9923".to_vec());
        let registration = Registration::spawn(config(&proxy.addr), vec![node]).expect("spawn");
        let first = testenv::wait_for(Duration::from_secs(10), "the node", || {
            registration.paths()[0].clone()
        });

        for outage in [Duration::from_millis(300), SESSION * 3] {
            proxy.cut();
            std::thread::sleep(outage);
            proxy.restore();
            // Back on the session it had, or registered again: one node either way.
            testenv::wait_for(Duration::from_secs(10), "one node again", || {
                let path = registration.paths()[0].clone()?;
                let nodes = children(&zk, &root);
                (nodes.len() == 1 && nodes[0].0 == path).then_some(())
            });
        }
        // And it stays one (no late duplicate from an old session).
        std::thread::sleep(SESSION * 2);
        let nodes = children(&zk, &root);
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes[0].1, "10.0.0.2:9923");
        assert_ne!(
            nodes[0].0, first,
            "the long outage expired the first session"
        );
        registration.stop();
        remove_root(&zk, &root);
    });
}

#[test]
fn discovery_sees_a_node_appear_and_disappear() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(Duration::from_secs(20), "discovery", move || {
        let root = testenv::unique_name("cs-test");
        let zk = observer(&addr);
        let discovery = Discovery::spawn(config(&addr), &root).expect("spawn");
        let recv = |what: &str| {
            discovery
                .members
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("no member list: {what}"))
        };
        assert_eq!(recv("missing root"), Vec::<String>::new());

        let acl = || Acl::open_unsafe().clone();
        zk.create(&format!("/{root}"), vec![], acl(), CreateMode::Persistent)
            .expect("root");
        let mut made = Vec::new();
        for _ in 0..2 {
            // The same data twice is one member (string-equality dedupe).
            let path = zk
                .create(
                    &format!("/{root}/node-"),
                    b"10.0.0.3:9923".to_vec(),
                    acl(),
                    CreateMode::EphemeralSequential,
                )
                .expect("child");
            made.push(path);
        }
        let list = testenv::wait_for(Duration::from_secs(5), "the member", || {
            let list = recv("appear");
            (!list.is_empty()).then_some(list)
        });
        assert_eq!(list, ["10.0.0.3:9923"]);
        for path in &made {
            zk.delete(path, None).expect("delete");
        }
        testenv::wait_for(Duration::from_secs(5), "the member to go", || {
            recv("disappear").is_empty().then_some(())
        });
        discovery.stop();
        remove_root(&zk, &root);
    });
}

fn rmq_config(zk: &str, root: &str, url: String) -> RmqConfig {
    let mut config = RmqConfig::new(config(zk));
    config.management_url = url;
    config.interval = Duration::from_millis(300);
    config.root = root.to_owned();
    config
}

#[test]
fn rmqkeeper_registers_a_healthy_broker() {
    let addr = testenv::service_addr(testenv::ZK);
    let http = testenv::service_addr(testenv::RABBIT_HTTP);
    let amqp = testenv::service_addr(testenv::AMQP);
    testenv::within(Duration::from_secs(20), "rmqkeeper healthy", move || {
        let root = testenv::unique_name("cs-test");
        let zk = observer(&addr);
        // amqp://guest:guest@127.0.0.1:<port>/%2f → 127.0.0.1:<port>
        let host_port = amqp
            .rsplit_once('@')
            .map_or(amqp.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let mut config = rmq_config(&addr, &root, http);
        config.amqp_addr = host_port.clone();
        let keeper = RmqKeeper::spawn(config).expect("spawn");
        let nodes = testenv::wait_for(Duration::from_secs(10), "the broker node", || {
            let nodes = children(&zk, &root);
            (!nodes.is_empty()).then_some(nodes)
        });
        std::thread::sleep(Duration::from_secs(1)); // a few more checks: still one node
        assert_eq!(children(&zk, &root), nodes);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].1, format!("{host_port},MsgTopic"));
        keeper.stop();
        assert_eq!(children(&zk, &root), []);
        remove_root(&zk, &root);
    });
}

#[test]
fn rmqkeeper_never_registers_without_a_management_api() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(Duration::from_secs(20), "rmqkeeper dead", move || {
        let root = testenv::unique_name("cs-test");
        let zk = observer(&addr);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = listener.local_addr().expect("addr");
        drop(listener);
        let keeper = RmqKeeper::spawn(rmq_config(
            &addr,
            &root,
            format!("http://guest:guest@{dead}"),
        ))
        .expect("spawn");
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(children(&zk, &root), []);
        keeper.stop();
        remove_root(&zk, &root);
    });
}

#[test]
fn with_zk_auth_our_nodes_are_closed_to_other_identities() {
    let addr = testenv::service_addr(testenv::ZK);
    testenv::within(
        Duration::from_secs(30),
        "digest-protected nodes",
        move || {
            let root = testenv::unique_name("cs-auth");
            let auth = Some("cloudsocket:s3cret".to_owned());
            let registration = Registration::spawn(
                config(&addr).with_auth(auth.clone()),
                vec![NodeSpec::fixed(root.clone(), b"10.0.0.7:9923".to_vec())],
            )
            .expect("spawn");
            // The same identity finds it (discovery adds the credentials to its session).
            let discovery = Discovery::spawn(config(&addr).with_auth(auth), &root).expect("spawn");
            testenv::wait_for(Duration::from_secs(10), "the member", || {
                let list = discovery
                    .members
                    .recv_timeout(Duration::from_secs(5))
                    .ok()?;
                (list == ["10.0.0.7:9923"]).then_some(())
            });
            // Anyone else can neither list the root nor read the node.
            let stranger = observer(&addr);
            assert!(matches!(
                stranger.get_children(&format!("/{root}"), false),
                Err(zookeeper::ZkError::NoAuth)
            ));
            let guest = observer(&addr);
            guest
                .add_auth("digest", b"cloudsocket:guess".to_vec())
                .unwrap();
            assert!(matches!(
                guest.get_children(&format!("/{root}"), false),
                Err(zookeeper::ZkError::NoAuth)
            ));
            discovery.stop();
            registration.stop();
            let owner = observer(&addr);
            owner
                .add_auth("digest", b"cloudsocket:s3cret".to_vec())
                .unwrap();
            remove_root(&owner, &root);
        },
    );
}
