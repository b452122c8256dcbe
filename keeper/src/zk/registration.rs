//! The registration sidecar: keeps our ephemeral-sequential nodes registered, refreshed
//! and unique, on its own thread, by driving `core::registration::Registrar`.
//!
//! Owns: the thread, the data closures (sampled every `refresh`), the mapping of core
//! actions to `zookeeper` calls, and the [`Registration`] handle (enable/disable a node,
//! read where it is registered, stop). Does **not** own: the decisions (the core) or the
//! client lifecycle (`client`).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use zookeeper::{Acl, CreateMode, ZkError, ZooKeeper};

use super::client::{Client, SessionEvent, classify};
use super::{Error, ZkConfig, clean_root, connect_addrs};
use crate::core::Failure;
use crate::core::registration::{Action, Event, NodeConfig, NodeId, PROBE_ROOT, Registrar, Reply};

/// The child name before the 10-digit sequence. The original created `/<root>/` so the
/// name was the bare sequence, but the 0.8 client refuses any path that ends in `/`
/// (`validate_path`, client side). Readers list children and read their data, so the
/// name does not matter to them; a patched client would let this be empty again.
pub const CHILD_PREFIX: &str = "node-";

/// The data closure of a node: called once at start and then every `refresh`.
pub type DataFn = Box<dyn FnMut() -> Vec<u8> + Send>;

/// One node to own: `/<root>/node-<seq>` with the data the closure returns.
pub struct NodeSpec {
    /// The root, e.g. `CometServers` (slashes at the ends are ignored).
    pub root: String,
    /// Called every refresh; the node is written when the result changed.
    pub data: DataFn,
    /// Whether to register at once (otherwise wait for [`Registration::set_enabled`]).
    pub enabled: bool,
}

/// Handle of a running registration sidecar. Dropping it stops the sidecar too.
pub struct Registration {
    commands: Sender<Command>,
    paths: Arc<Mutex<Vec<Option<String>>>>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    Enable(usize, bool),
    Stop,
}

/// How long [`Registration::stop`] waits for the session to close.
const STOP_WAIT: Duration = Duration::from_secs(5);

// === NodeSpec ===

impl NodeSpec {
    /// A node under `root` with fixed data, enabled.
    pub fn fixed(root: impl Into<String>, data: Vec<u8>) -> Self {
        Self::sampled(root, move || data.clone())
    }

    /// A node under `root` whose data `data` returns, enabled.
    pub fn sampled(
        root: impl Into<String>,
        data: impl FnMut() -> Vec<u8> + Send + 'static,
    ) -> Self {
        Self {
            root: root.into(),
            data: Box::new(data),
            enabled: true,
        }
    }
}

// === Registration ===

impl Registration {
    /// Starts the sidecar thread; it connects (and reconnects) on its own.
    pub fn spawn(config: ZkConfig, nodes: Vec<NodeSpec>) -> Result<Self, Error> {
        let addrs = connect_addrs(&config.servers)?;
        let roots = nodes
            .iter()
            .map(|n| clean_root(&n.root))
            .collect::<Result<Vec<_>, _>>()?;
        let (commands, command_rx) = crossbeam_channel::bounded(64);
        let paths = Arc::new(Mutex::new(vec![None; nodes.len()]));
        let sidecar = Sidecar {
            config,
            command_rx,
            paths: paths.clone(),
            data: nodes.into_iter().map(|n| (n.data, n.enabled)).collect(),
        };
        let thread = std::thread::Builder::new()
            .name("zk-register".into())
            .spawn(move || sidecar.run(addrs, roots))?;
        Ok(Self {
            commands,
            paths,
            thread: Some(thread),
        })
    }

    /// Registers (`true`) or deletes (`false`) node `index` (in the order given to spawn).
    pub fn set_enabled(&self, index: usize, enabled: bool) {
        let _ = self.commands.send(Command::Enable(index, enabled));
    }

    /// Where each node is registered now (confirmed on the current session), by index.
    pub fn paths(&self) -> Vec<Option<String>> {
        match self.paths.lock() {
            Ok(paths) => paths.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Closes the session (deleting our nodes) and joins the thread, waiting at most 5 s.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Sidecar {
    config: ZkConfig,
    command_rx: Receiver<Command>,
    paths: Arc<Mutex<Vec<Option<String>>>>,
    data: Vec<(DataFn, bool)>,
}

// === Sidecar ===

impl Sidecar {
    fn run(mut self, addrs: Vec<String>, roots: Vec<String>) {
        let now = Instant::now();
        let nodes = roots
            .into_iter()
            .zip(self.data.iter_mut())
            .map(|(root, (data, enabled))| NodeConfig {
                root,
                data: data(),
                enabled: *enabled,
            })
            .collect();
        let mut core = Registrar::new(nodes);
        let secure = self.config.auth.is_some();
        let mut client = Client::new(
            addrs,
            self.config.session_timeout,
            self.config.auth.clone(),
            now,
        );
        let mut next_sample = now + self.config.refresh;
        let mut events = Vec::new();
        loop {
            let now = Instant::now();
            client.maintain(now, &mut events);
            feed_session(&mut core, &mut events, now);
            if now >= next_sample {
                for (i, (data, _)) in self.data.iter_mut().enumerate() {
                    let event = Event::Data {
                        node: NodeId(i),
                        data: data(),
                    };
                    core.handle_event(event, now);
                }
                next_sample = now + self.config.refresh;
            }
            core.handle_timeout(now);
            while let Some(action) = core.poll_action() {
                let reply = client
                    .zk()
                    .map_or(Reply::Failed(Failure::Connection), |zk| {
                        execute(zk, &action, secure)
                    });
                let now = Instant::now();
                core.handle_event(Event::Reply(reply), now);
                while let Ok(wake) = client.wakes().try_recv() {
                    client.handle_wake(wake, now, &mut events);
                }
                feed_session(&mut core, &mut events, now);
            }
            self.publish(&core);
            let deadline = [
                core.poll_timeout(),
                client.poll_timeout(),
                Some(next_sample),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_sample);
            let wait = deadline.saturating_duration_since(Instant::now());
            let wakes = client.wakes().clone();
            select! {
                recv(self.command_rx) -> command => match command {
                    Ok(Command::Enable(i, enabled)) => {
                        core.handle_event(Event::Enabled { node: NodeId(i), enabled }, Instant::now());
                    }
                    Ok(Command::Stop) | Err(_) => break,
                },
                recv(wakes) -> wake => {
                    if let Ok(wake) = wake {
                        client.handle_wake(wake, Instant::now(), &mut events);
                    }
                },
                default(wait) => {}
            }
        }
        client.close();
        self.paths_mut().iter_mut().for_each(|p| *p = None);
    }

    fn publish(&self, core: &Registrar) {
        let mut paths = self.paths_mut();
        for (i, slot) in paths.iter_mut().enumerate() {
            let now = core.registered(NodeId(i));
            if slot.as_deref() != now {
                match (slot.as_deref(), now) {
                    (_, Some(path)) => tracing::info!(path, "registered in ZooKeeper"),
                    (Some(path), None) => {
                        tracing::info!(path, "ZooKeeper node gone; re-registering when possible")
                    }
                    (None, None) => {}
                }
                *slot = now.map(str::to_owned);
            }
        }
    }

    fn paths_mut(&self) -> std::sync::MutexGuard<'_, Vec<Option<String>>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn feed_session(core: &mut Registrar, events: &mut Vec<SessionEvent>, now: Instant) {
    for event in events.drain(..) {
        let event = match event {
            SessionEvent::Connected { fresh } => Event::Connected { fresh },
            SessionEvent::Disconnected => Event::Disconnected,
            SessionEvent::Expired => Event::Expired,
        };
        core.handle_event(event, now);
    }
}

/// Makes one call for the core. Never panics on a server error: every error is a reply.
fn execute(zk: &ZooKeeper, action: &Action, secure: bool) -> Reply {
    let acl = if secure {
        Acl::creator_all()
    } else {
        Acl::open_unsafe()
    };
    let result = match action {
        Action::EnsureRoot { root } => ensure_root(zk, root, acl).map(|()| Reply::Done),
        Action::Create { root, data } => create(zk, root, data, acl),
        Action::Check { path } => zk
            .exists(path, false)
            .map(|stat| Reply::Exists(stat.map(|s| s.ephemeral_owner))),
        Action::SetData { path, data } => {
            zk.set_data(path, data.clone(), None).map(|_| Reply::Done)
        }
        Action::Delete { path } => match zk.delete(path, None) {
            Ok(()) | Err(ZkError::NoNode) => Ok(Reply::Done),
            Err(e) => Err(e),
        },
        Action::Sweep { root } => sweep(zk, root),
        Action::Probe => {
            ensure_root(zk, PROBE_ROOT, acl).and_then(|()| create(zk, PROBE_ROOT, &[], acl))
        }
    };
    result.unwrap_or_else(failure)
}

/// The reply for a failed call.
fn failure(error: ZkError) -> Reply {
    classify(error).map_or(Reply::NoNode, Reply::Failed)
}

/// Creates `/<root>` and its parents as persistent empty nodes with `acl`; existing ones
/// are fine.
fn ensure_root(zk: &ZooKeeper, root: &str, acl: &[Acl]) -> Result<(), ZkError> {
    let mut path = String::with_capacity(root.len() + 1);
    for part in root.split('/') {
        path.push('/');
        path.push_str(part);
        match zk.create(&path, Vec::new(), acl.to_vec(), CreateMode::Persistent) {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn create(zk: &ZooKeeper, root: &str, data: &[u8], acl: &[Acl]) -> Result<Reply, ZkError> {
    let prefix = format!("/{root}/{CHILD_PREFIX}");
    let mode = CreateMode::EphemeralSequential;
    let path = zk.create(&prefix, data.to_vec(), acl.to_vec(), mode)?;
    // The 0.8 client has no create2: the owner (our session id) comes from a stat.
    match zk.exists(&path, false) {
        Ok(Some(stat)) => Ok(Reply::Created {
            path,
            owner: stat.ephemeral_owner,
        }),
        // Gone at once (the session ended): the outcome is as unknown as a lost reply.
        Ok(None) => Ok(Reply::Failed(Failure::Connection)),
        Err(ZkError::NoNode) => Ok(Reply::Failed(Failure::Connection)),
        Err(e) => Err(e),
    }
}

fn sweep(zk: &ZooKeeper, root: &str) -> Result<Reply, ZkError> {
    let root_path = format!("/{root}");
    let mut children = Vec::new();
    for name in zk.get_children(&root_path, false)? {
        let path = format!("{root_path}/{name}");
        if let Some(stat) = zk.exists(&path, false)? {
            children.push((path, stat.ephemeral_owner));
        }
    }
    Ok(Reply::Children(children))
}
