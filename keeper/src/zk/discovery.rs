//! The discovery sidecar: watches `/<root>`'s children on its own thread (driving
//! `core::children::ChildrenTracker`) and sends the member list on a bounded channel.
//!
//! Owns: the thread, the children watch, reading child data, and the [`Discovery`]
//! handle. Every change (and the first listing, even when empty) sends the whole current
//! list of distinct data strings, so a consumer that misses a message loses nothing: when
//! the channel is full the newest list waits and replaces older unsent ones.
//! Does **not** own: parsing the data (the consumer), connecting to what it names.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use zookeeper::{ZkError, ZooKeeper};

use super::client::{Client, SessionEvent, Wake, classify};
use super::{Error, ZkConfig, clean_root, connect_addrs};
use crate::core::Failure;
use crate::core::children::{Action, ChildrenTracker, Event, Reply};

/// Depth of the member-list channel.
const CHANNEL_CAPACITY: usize = 16;
/// How often an unsent list is offered again while the channel is full.
const RESEND: Duration = Duration::from_millis(100);

/// A running discovery sidecar. Dropping it stops the sidecar.
pub struct Discovery {
    /// The member lists, one per change.
    pub members: Receiver<Vec<String>>,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

// === Discovery ===

impl Discovery {
    /// Starts watching `/<root>`.
    pub fn spawn(config: ZkConfig, root: &str) -> Result<Self, Error> {
        let addrs = connect_addrs(&config.servers)?;
        let root = clean_root(root)?;
        let (members_tx, members) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("zk-discover".into())
            .spawn(move || run(config, addrs, &root, &members_tx, &stop_rx))?;
        Ok(Self {
            members,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the sidecar and joins it (at most a few seconds when ZooKeeper hangs).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.try_send(());
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    config: ZkConfig,
    addrs: Vec<String>,
    root: &str,
    members_tx: &Sender<Vec<String>>,
    stop_rx: &Receiver<()>,
) {
    let mut core = ChildrenTracker::new(root, config.resync);
    let mut client = Client::new(
        addrs,
        config.session_timeout,
        config.auth.clone(),
        Instant::now(),
    );
    let mut events = Vec::new();
    let mut unsent: Option<Vec<String>> = None;
    let mut announced = false;
    loop {
        let now = Instant::now();
        client.maintain(now, &mut events);
        feed_session(&mut core, &mut events, now);
        core.handle_timeout(now);
        while let Some(action) = core.poll_action() {
            let reply = match client.zk() {
                Some(zk) => execute(zk, &action, &client),
                None => Reply::Failed(Failure::Connection),
            };
            let now = Instant::now();
            core.handle_event(Event::Reply(reply), now);
            while let Ok(wake) = client.wakes().try_recv() {
                on_wake(&mut core, &mut client, wake, &mut events, now);
            }
            feed_session(&mut core, &mut events, now);
        }
        let mut changed = false;
        while core.poll_change().is_some() {
            changed = true;
        }
        if changed || (core.is_listed() && !announced) {
            announced = true;
            unsent = Some(core.members().to_vec());
        }
        if let Some(list) = unsent.take() {
            match members_tx.try_send(list) {
                Ok(()) => {}
                Err(TrySendError::Full(list)) => unsent = Some(list),
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        let resend = unsent.as_ref().map(|_| Instant::now() + RESEND);
        let deadline = [core.poll_timeout(), client.poll_timeout(), resend]
            .into_iter()
            .flatten()
            .min();
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let wakes = client.wakes().clone();
        select! {
            recv(stop_rx) -> _ => break,
            recv(wakes) -> wake => {
                if let Ok(wake) = wake {
                    on_wake(&mut core, &mut client, wake, &mut events, Instant::now());
                }
            },
            default(wait) => {}
        }
    }
    client.close();
}

fn on_wake(
    core: &mut ChildrenTracker,
    client: &mut Client,
    wake: Wake,
    events: &mut Vec<SessionEvent>,
    now: Instant,
) {
    if client.handle_wake(wake, now, events) {
        core.handle_event(Event::Changed, now);
    }
}

fn feed_session(core: &mut ChildrenTracker, events: &mut Vec<SessionEvent>, now: Instant) {
    for event in events.drain(..) {
        let event = match event {
            SessionEvent::Connected { .. } => Event::Connected,
            SessionEvent::Disconnected | SessionEvent::Expired => Event::Disconnected,
        };
        core.handle_event(event, now);
    }
}

fn execute(zk: &ZooKeeper, action: &Action, client: &Client) -> Reply {
    let result = match action {
        Action::List { path } => zk
            .get_children_w(path, client.watcher())
            .map(Reply::Children),
        Action::Read { path } => zk.get_data(path, false).map(|(data, _)| Reply::Data(data)),
    };
    result.unwrap_or_else(failure)
}

fn failure(error: ZkError) -> Reply {
    classify(error).map_or(Reply::NoNode, Reply::Failed)
}
