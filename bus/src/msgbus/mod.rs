//! The cluster msgbus (`cloudsocket msgbus`): routes frames between comets, follows the
//! online state in Redis, and publishes device uploads to RabbitMQ (docs/protocol.md §8, §9).
//!
//! Threads, all talking by value over **bounded** crossbeam channels:
//!
//! ```text
//!  comets ──tcp──▶ link rx (1/comet) ─┐                      ┌─▶ link tx (1/comet, bounded queue)
//!  Redis PubKey ─▶ online ────────────┼─▶ router (owns Router)┤
//!  --sh HTTP ───▶ status ─────────────┤     events 65 536     └─▶ upload (lapin, spool) ─┐
//!                 upload ACKs ◀───────┴───────────────────────────────────────────────────┘
//! ```
//!
//! The router thread owns the pure [`route::Router`] and never blocks on anything but its
//! inbox: it `try_send`s into comet queues and the upload queue and counts what does not
//! fit, so a slow comet or broker cannot stall routing (the original held its table locks
//! across socket writes, docs/protocol.md §10.5). The other threads may block sending to the router:
//! that is back-pressure on their own source only.
//!
//! Brokers arrive as address lists on a channel ([`Msgbus::broker_feed`]); `--amqp` gives
//! one list at start, ZooKeeper discovery (the keeper) can feed later ones. Registering this
//! msgbus in ZooKeeper is the caller's job, with [`Msgbus::local_addr`].
//!
//! Does **not** hold terminal connections (the comets do) or write to Redis.

mod parked;
pub mod route;
pub mod spool;
pub mod stats;
pub mod usermap;

mod broker;
mod link;
mod online;
mod status;
mod upload;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use edge_proto::link::{CometKind, MSGBUS_MAX_PAYLOAD};
use thiserror::Error;

pub use broker::amqp_uri;
use route::{Input, LinkId, Output, Router, RouterConfig, Upload};
use stats::{Metrics, bump};
use status::Query;

use crate::frames::Frames;
use crate::redis_target::RedisTarget;

/// Depth of the router's inbox.
pub const EVENTS_MAX: usize = 65_536;

/// Msgbus settings (validated by the caller from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where comets connect (`--addr`).
    pub listen: String,
    /// Status HTTP address (`--sh`); `None`: no endpoint.
    pub status: Option<String>,
    /// Redis (`--rh`); `None`: the user map is fed by nothing but tests.
    pub redis: Option<RedisTarget>,
    /// Brokers to start with (`--amqp`); more lists may come on [`Msgbus::broker_feed`].
    pub brokers: Vec<String>,
    /// Exchange name (`MsgTopic`).
    pub exchange: String,
    /// Spool directory (`--spool-dir`).
    pub spool_dir: PathBuf,
    /// Spool bound.
    pub spool_max_bytes: u64,
    /// Frames queued per comet before drops.
    pub comet_queue_frames: usize,
    /// Largest upstream payload accepted (larger ones are skipped).
    pub max_payload: usize,
    /// A comet write blocked this long closes the link.
    pub write_timeout: Duration,
    /// Uploads queued before drops.
    pub upload_queue: usize,
    /// Longest wait for a broker's confirm.
    pub confirm_timeout: Duration,
    /// Routing options.
    pub router: RouterConfig,
    /// The secret comets prove they know (`--link-secret`); `None`: the original's open
    /// opening.
    pub link_secret: Option<Vec<u8>>,
    /// Most comet links served at once.
    pub max_links: usize,
    /// The bearer token `/usermap` needs; `None`: open (keep `status` on loopback then).
    pub status_token: Option<String>,
}

impl Config {
    /// The defaults, listening on `listen` and spooling under `spool_dir`.
    pub fn new(listen: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: listen.into(),
            status: None,
            redis: None,
            brokers: Vec::new(),
            exchange: edge_proto::zk::DEFAULT_EXCHANGE.to_owned(),
            spool_dir: spool_dir.into(),
            spool_max_bytes: 1 << 30,
            comet_queue_frames: 8192,
            max_payload: MSGBUS_MAX_PAYLOAD,
            write_timeout: Duration::from_secs(30),
            upload_queue: 16_384,
            confirm_timeout: Duration::from_secs(5),
            router: RouterConfig {
                udp_fallback: true,
                names_max: 4096,
                park_ms: 5_000,
                park_max: 65_536,
                park_max_bytes: 64 << 20,
            },
            link_secret: None,
            max_links: 512,
            status_token: None,
        }
    }
}

/// A msgbus that could not start.
#[derive(Debug, Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] spool::SpoolError),
    /// A thread could not be started.
    #[error("thread: {0}")]
    Thread(std::io::Error),
}

/// Everything the router thread receives.
pub(crate) enum Event {
    LinkUp {
        link: LinkId,
        name: String,
        kind: CometKind,
        queue: Sender<Vec<u8>>,
    },
    LinkDown {
        link: LinkId,
    },
    /// The whole frames of one read from a comet, as they came (length prefix, payload;
    /// pings left out; at most [`link::FRAMES_BATCH_BYTES`] and one frame): one event and
    /// one buffer per read, not per frame.
    Frames {
        link: LinkId,
        frames: Frames,
    },
    PubKey(Vec<u8>),
    Reload(Vec<(String, Vec<i64>)>),
    Uploaded {
        src: i64,
        origin: LinkId,
        ack: Vec<u8>,
    },
    Status {
        query: Query,
        reply: Sender<String>,
    },
    Stop,
}

/// A running msgbus.
pub struct Msgbus {
    local_addr: SocketAddr,
    status_addr: Option<SocketAddr>,
    events: Sender<Event>,
    broker_lists: Sender<Vec<String>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    threads: Vec<JoinHandle<()>>,
}

fn bind(addr: &str) -> Result<TcpListener, Error> {
    // The original's `:29998` form means every interface.
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    TcpListener::bind(&full).map_err(|source| Error::Bind {
        addr: addr.to_owned(),
        source,
    })
}

impl Msgbus {
    /// Binds, opens the spool and starts every thread.
    pub fn start(config: Config) -> Result<Self, Error> {
        let listener = bind(&config.listen)?;
        let local_addr = listener.local_addr().map_err(Error::Thread)?;
        let status_listener = config.status.as_deref().map(bind).transpose()?;
        let status_addr = match &status_listener {
            Some(l) => Some(l.local_addr().map_err(Error::Thread)?),
            None => None,
        };
        let spool = spool::Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let (events, inbox) = bounded(EVENTS_MAX);
        let (upload_tx, upload_rx) = bounded(config.upload_queue);
        let (broker_lists, broker_rx) = bounded(16);
        let _ = broker_lists.try_send(config.brokers.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let mut threads = Vec::new();
        let router = Router::new(config.router);
        let router_metrics = metrics.clone();
        threads.push(
            std::thread::Builder::new()
                .name("msgbus-router".into())
                .spawn(move || run_router(router, &inbox, &upload_tx, &router_metrics))
                .map_err(Error::Thread)?,
        );
        let uploader = upload::Uploader {
            jobs: upload_rx,
            broker_lists: broker_rx,
            events: events.clone(),
            metrics: metrics.clone(),
            spool,
            brokers: broker::Brokers::new(config.exchange.clone(), config.confirm_timeout),
            stop: stop.clone(),
            spool_log: upload::SpoolLog::default(),
        };
        threads.push(upload::spawn(uploader).map_err(Error::Thread)?);
        let ctx = link::LinkContext {
            events: events.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            queue_frames: config.comet_queue_frames.max(1),
            max_payload: config.max_payload,
            write_timeout: config.write_timeout,
            next_id: Arc::new(AtomicU64::new(1)),
            secret: config.link_secret.as_deref().map(Arc::from),
            max_links: config.max_links.max(1),
            live: Arc::default(),
            refusal_log: Arc::default(),
        };
        metrics
            .link_secret
            .store(u64::from(config.link_secret.is_some()), Ordering::Relaxed);
        threads.push(link::spawn_acceptor(listener, ctx).map_err(Error::Thread)?);
        if let Some(l) = status_listener {
            let ctx = status::StatusContext {
                events: events.clone(),
                stop: stop.clone(),
                metrics: metrics.clone(),
                token: config.status_token.as_deref().map(Arc::from),
                live: Arc::default(),
            };
            threads.push(status::spawn(l, ctx).map_err(Error::Thread)?);
        }
        if let Some(redis) = config.redis.clone() {
            let t = online::spawn(redis, events.clone(), metrics.clone(), stop.clone());
            threads.push(t.map_err(Error::Thread)?);
        }
        Ok(Self {
            local_addr,
            status_addr,
            events,
            broker_lists,
            stop,
            metrics,
            threads,
        })
    }

    /// Where comets connect (the address to register in ZooKeeper).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the status endpoint listens.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// Sends whole broker address lists here to change the broker set (each list replaces
    /// the previous one).
    pub fn broker_feed(&self) -> Sender<Vec<String>> {
        self.broker_lists.clone()
    }

    /// The shell counters (the router's are in the status reports).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops every thread and waits for them (comet links are closed; uploads still
    /// queued are published or spooled first).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.events.send(Event::Stop);
        for addr in [Some(self.local_addr), self.status_addr]
            .into_iter()
            .flatten()
        {
            let _ = TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often the router hears the time (parked frames expire on it).
const TICK: Duration = Duration::from_millis(100);

/// The router thread: one event in, every output out, never blocking on an output.
fn run_router(
    mut router: Router,
    inbox: &Receiver<Event>,
    uploads: &Sender<Upload>,
    metrics: &Metrics,
) {
    let mut queues: Queues = HashMap::default();
    let start = Instant::now();
    let mut next_tick = start;
    loop {
        let event = match inbox.recv_deadline(next_tick) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            router.handle_input(Input::Tick { now_ms });
        }
        match event {
            None => {}
            Some(Event::LinkUp {
                link,
                name,
                kind,
                queue,
            }) => {
                queues.insert(link, queue);
                router.handle_input(Input::CometUp {
                    link,
                    name: &name,
                    kind,
                });
            }
            Some(Event::LinkDown { link }) => {
                queues.remove(&link);
                router.handle_input(Input::CometDown { link });
            }
            Some(Event::Frames { link, frames }) => {
                for payload in frames.payloads() {
                    router.handle_input(Input::Upstream { link, payload });
                }
            }
            Some(Event::PubKey(payload)) => router.handle_input(Input::PubKey(&payload)),
            Some(Event::Reload(snapshot)) => router.handle_input(Input::Reload(&snapshot)),
            Some(Event::Uploaded { src, origin, ack }) => {
                router.handle_input(Input::Uploaded {
                    src,
                    origin,
                    ack: &ack,
                });
            }
            Some(Event::Status { query, reply }) => {
                let _ = reply.try_send(report(&router, metrics, query));
            }
            Some(Event::Stop) => break,
        }
        metrics
            .comets
            .store(router.link_count() as u64, Ordering::Relaxed);
        while let Some(output) = router.poll_output() {
            dispatch(output, &queues, uploads, metrics);
        }
    }
}

/// Each comet link's write queue, looked up per routed frame (keyed foldhash, as the
/// user map).
type Queues = HashMap<LinkId, Sender<Vec<u8>>, foldhash::fast::RandomState>;

fn dispatch(output: Output, queues: &Queues, uploads: &Sender<Upload>, metrics: &Metrics) {
    match output {
        Output::Send { link, frame } => match queues.get(&link).map(|q| q.try_send(frame)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => bump(&metrics.queue_full),
            Some(Err(TrySendError::Disconnected(_))) | None => bump(&metrics.write_failed),
        },
        Output::Upload(upload) => {
            if uploads.try_send(upload).is_err() {
                bump(&metrics.upload_queue_full);
            }
        }
    }
}

fn report(router: &Router, metrics: &Metrics, query: Query) -> String {
    match query {
        Query::UserMap => {
            let mut out = String::from("{");
            for (i, (id, names)) in router.user_map().enumerate() {
                let _ = write!(out, "{}\"{id}\":[", if i == 0 { "" } else { "," });
                for (j, name) in names.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    status::json_string(&mut out, name);
                }
                out.push(']');
            }
            out.push('}');
            out
        }
        Query::App => stats::render_app_json(&stats::counters(router.stats(), metrics, unix_ms())),
        Query::Metrics => stats::render_prometheus(
            &stats::counters(router.stats(), metrics, unix_ms()),
            router.user_map_len(),
        ),
    }
}
