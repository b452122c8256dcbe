//! `keeper`: ZooKeeper registration and discovery, and the RabbitMQ keeper.
//!
//! A sidecar thread behind channels in the comet and msgbus, or the standalone
//! `cloudsocket rmqkeeper`. It does not route messages (the bus does) and holds no
//! terminal state (the edge does).
//!
//! Map: [`core`] is pure (registration and children-watch state machines, sans-IO, fake
//! clock in tests); [`zk`] runs them on threads against the `zookeeper` 0.8 client
//! ([`Registration`], [`Discovery`]); [`rmq`] is rmqkeeper ([`RmqKeeper`]); [`load`] reads
//! `/proc` for comet node data; [`http`] is the management API's tiny HTTP client;
//! [`duration`] parses Go durations for the original's flags.
//!
//! ```no_run
//! use keeper::{NodeSpec, Registration, ZkConfig};
//!
//! let zk = ZkConfig::new("127.0.0.1:2181");
//! let node = NodeSpec::fixed("MsgBusServers", b"10.0.0.1:9923".to_vec());
//! let registration = Registration::spawn(zk.clone(), vec![node])?;
//! let discovery = keeper::Discovery::spawn(zk, "MsgBusServers")?;
//! let members: Vec<String> = discovery.members.recv()?; // ["10.0.0.1:9923"]
//! registration.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod core;
pub mod duration;
pub mod http;
pub mod load;
pub mod rmq;
pub mod zk;

pub use rmq::{RmqConfig, RmqKeeper};
pub use zk::{Discovery, Error, NodeSpec, Registration, ZkConfig};
