//! Comet links: the TCP server on `--addr` (docs/protocol.md §8).
//!
//! One acceptor thread; per comet, a reader thread (handshake, then `u32` LE framed
//! payloads up to `max_payload`, larger ones skipped without dropping the link) and a
//! writer thread draining that comet's **bounded** queue. The router only ever
//! `try_send`s into a queue, so a dead or slow comet costs a counted drop, never a stall
//! of the others, and no lock is held across a socket write (there is no lock). A write
//! that fails or times out closes the link; a closed link is reported as
//! [`Event::LinkDown`] and leaves the router's tables.
//!
//! The opening must finish within 5 s. With a link secret, only the authenticated
//! opening (`edge_proto::link_auth`) is accepted; without one, only the original's. A
//! refused opening is counted and closed. At most `max_links` links live at once (each
//! costs two threads); beyond, new connections are closed and counted. Accept errors
//! (EMFILE and the like) back off instead of spinning. Every link socket gets keepalive
//! and `TCP_USER_TIMEOUT` ([`crate::net::set_liveness`]), so a silent partition ends it
//! within about 5 s. On an authenticated link both ends are ours: each pings (an empty
//! frame) after a second without writing and gives the link up after 5 s without reading.
//!
//! Threads rather than async: comets are few (tens), blocking reads and writes with
//! deadlines are the simplest correct shape, and the router thread owns all state.
//! Does **not** route or interpret payloads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use edge_proto::link::{CometKind, LinkDecoder, LinkItem};
use edge_proto::link_auth::{self, NONCE_LEN, Opening, PROOF_LEN};
use tracing::{info, warn};

use super::Event;
use super::route::LinkId;
use super::stats::{Metrics, bump};
use crate::frames::Frames;
use crate::net::{
    LinkWriter, SAMPLE_EVERY, SILENCE_LIMIT, read_exact_by, set_liveness, write_all_by,
};
use crate::throttle::Throttle;

/// Time for a comet's whole opening, authenticated or not.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS…) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// What every link thread needs.
#[derive(Debug, Clone)]
pub(crate) struct LinkContext {
    pub events: Sender<Event>,
    pub metrics: Arc<Metrics>,
    pub stop: Arc<AtomicBool>,
    pub queue_frames: usize,
    pub max_payload: usize,
    pub write_timeout: Duration,
    pub next_id: Arc<AtomicU64>,
    /// The shared link secret; `None`: the original's unauthenticated opening.
    pub secret: Option<Arc<[u8]>>,
    /// Most links served at once.
    pub max_links: usize,
    /// Links being served now (opening included).
    pub live: Arc<AtomicUsize>,
    /// Refusals and accept errors a stranger can repeat: one line a second.
    pub refusal_log: Arc<Mutex<Throttle>>,
}

/// Why an opening was refused.
enum Refused {
    /// Not a link opening, or the peer went away.
    Malformed,
    /// No secret, a wrong one, or an opening of the other kind.
    Unauthenticated,
    /// Not done within [`HANDSHAKE_DEADLINE`].
    Timeout,
}

/// Accepts comets until `stop` is set (the shutdown wakes it with a connection).
pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    ctx: LinkContext,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("msgbus-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if ctx.stop.load(Ordering::Acquire) {
                    break;
                }
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(error) => {
                        bump(&ctx.metrics.accept_errors);
                        ctx.refused(format_args!("accept failed: {error}"));
                        std::thread::sleep(ACCEPT_BACKOFF);
                        continue;
                    }
                };
                if ctx.live.fetch_add(1, Ordering::AcqRel) >= ctx.max_links {
                    ctx.live.fetch_sub(1, Ordering::AcqRel);
                    bump(&ctx.metrics.links_refused);
                    ctx.refused(format_args!(
                        "link refused: {} links (--max-links)",
                        ctx.max_links
                    ));
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let link_ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("msgbus-link-rx".into())
                    .spawn(move || {
                        serve(stream, &link_ctx);
                        link_ctx.live.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    ctx.live.fetch_sub(1, Ordering::AcqRel);
                    bump(&ctx.metrics.links_refused);
                }
            }
        })
}

/// Handshake, then read until the link ends.
fn serve(stream: TcpStream, ctx: &LinkContext) {
    let (kind, name) = match handshake(&stream, ctx) {
        Ok(opened) => opened,
        Err(refused) => {
            let (counter, why) = match refused {
                Refused::Malformed => (&ctx.metrics.bad_handshake, "not a link opening"),
                Refused::Unauthenticated => (&ctx.metrics.unauthenticated, "unauthenticated"),
                Refused::Timeout => (&ctx.metrics.handshake_timeouts, "opening not done in 5 s"),
            };
            bump(counter);
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            ctx.refused(format_args!("link from {peer} refused: {why}"));
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let link = LinkId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let (queue, frames) = bounded(ctx.queue_frames);
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let _ = writer.set_write_timeout(Some(ctx.write_timeout));
    let metrics = ctx.metrics.clone();
    // Both ends are ours on an authenticated link: ping, and give up on silence.
    let pings = ctx.secret.is_some();
    if pings {
        let _ = stream.set_read_timeout(Some(SILENCE_LIMIT));
    }
    let spawned = std::thread::Builder::new()
        .name("msgbus-link-tx".into())
        .spawn(move || write_loop(writer, frames, &metrics, pings));
    if spawned.is_err() {
        return;
    }
    let up = Event::LinkUp {
        link,
        name,
        kind,
        queue,
    };
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if ctx.events.send(up).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    info!(comet = %peer, ?kind, link = link.0, "comet link up");
    let since = Instant::now();
    read_loop(&stream, link, ctx);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = ctx.events.send(Event::LinkDown { link });
    if !ctx.stop.load(Ordering::Acquire) {
        let up_for = since.elapsed();
        warn!(comet = %peer, ?kind, link = link.0, ?up_for, "comet link down");
    }
}

impl LinkContext {
    /// Logs a refusal, at most one line a second (with how many were held back).
    fn refused(&self, what: std::fmt::Arguments<'_>) {
        let admitted = self
            .refusal_log
            .lock()
            .map_or(None, |mut log| log.admit(Instant::now()));
        if let Some(held_back) = admitted {
            warn!(held_back, "{what}");
        }
    }
}

fn handshake(stream: &TcpStream, ctx: &LinkContext) -> Result<(CometKind, String), Refused> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let name = stream
        .peer_addr()
        .map_err(refusal)?
        .ip()
        .to_canonical()
        .to_string();
    let _ = stream.set_nodelay(true);
    let _ = set_liveness(stream);
    let mut first = [0u8; 1];
    read_exact_by(stream, &mut first, deadline).map_err(refusal)?;
    let kind = match (link_auth::opening(first[0]), &ctx.secret) {
        (Ok(Opening::Plain(kind)), None) => {
            write_all_by(stream, &first, deadline).map_err(refusal)?;
            bump(&ctx.metrics.plain_links);
            kind
        }
        (Ok(Opening::Authenticated(kind)), Some(secret)) => {
            authenticate(stream, kind, secret, deadline)?;
            kind
        }
        (Ok(_), _) => return Err(Refused::Unauthenticated),
        (Err(_), _) => return Err(Refused::Malformed),
    };
    stream.set_read_timeout(None).map_err(refusal)?;
    stream
        .set_write_timeout(Some(ctx.write_timeout))
        .map_err(refusal)?;
    Ok((kind, name))
}

/// Why a socket error ends an opening.
fn refusal(e: std::io::Error) -> Refused {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Refused::Timeout,
        _ => Refused::Malformed,
    }
}

/// The msgbus's half of the challenge–response: nonce in, challenge out, proof in.
fn authenticate(
    stream: &TcpStream,
    kind: CometKind,
    secret: &[u8],
    deadline: Instant,
) -> Result<(), Refused> {
    let mut comet_nonce = [0u8; NONCE_LEN];
    read_exact_by(stream, &mut comet_nonce, deadline).map_err(refusal)?;
    let bus_nonce = crate::net::nonce().map_err(refusal)?;
    let challenge = link_auth::challenge(secret, kind, &comet_nonce, &bus_nonce);
    write_all_by(stream, &challenge, deadline).map_err(refusal)?;
    let mut proof = [0u8; PROOF_LEN];
    // A comet that hangs up on the challenge could not answer it: it lacks the secret.
    read_exact_by(stream, &mut proof, deadline).map_err(|e| match refusal(e) {
        Refused::Malformed => Refused::Unauthenticated,
        other => other,
    })?;
    link_auth::verify_proof(secret, kind, &comet_nonce, &bus_nonce, &proof)
        .map_err(|_| Refused::Unauthenticated)
}

fn read_loop(mut stream: &TcpStream, link: LinkId, ctx: &LinkContext) {
    let mut decoder = LinkDecoder::new(ctx.max_payload);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut frames = Frames::default();
        while let Some((item, used)) = decoder.decode(&buf[at..]) {
            at += used;
            match item {
                LinkItem::Frame([]) => {} // a ping: it only proves the comet is there
                LinkItem::Frame(payload) => {
                    frames.push(payload);
                    if frames.byte_len() >= FRAMES_BATCH_BYTES
                        && !send_frames(ctx, link, &mut frames)
                    {
                        return;
                    }
                }
                LinkItem::Skipped { .. } => bump(&ctx.metrics.oversize),
                LinkItem::Discarded => {}
            }
        }
        if !frames.is_empty() && !send_frames(ctx, link, &mut frames) {
            return;
        }
        buf.drain(..at);
    }
}

/// Most bytes of frames one [`Event::Frames`] carries before another is started: the
/// events queue holds [`super::EVENTS_MAX`] events, so its bytes stay bounded as they
/// were with one frame (of up to 64 KiB) per event.
pub(super) const FRAMES_BATCH_BYTES: usize = 64 * 1024;

/// Hands the batch to the router (blocking: the comet waits on its socket meanwhile);
/// false once the router is gone.
fn send_frames(ctx: &LinkContext, link: LinkId, frames: &mut Frames) -> bool {
    let frames = std::mem::take(frames);
    ctx.events.send(Event::Frames { link, frames }).is_ok()
}

/// Writes queued frames in batches until the queue's sender is dropped or a write fails.
/// With `pings`, an idle link gets a ping every second (`crate::net::PING_EVERY`).
fn write_loop(mut stream: TcpStream, frames: Receiver<Vec<u8>>, metrics: &Metrics, pings: bool) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut writer = LinkWriter::new(pings);
    loop {
        let first = match frames.recv_timeout(SAMPLE_EVERY) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                if writer.idle(&stream).is_err() {
                    break;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.clear();
        batch.extend_from_slice(&first);
        let mut count = 1u64;
        while batch.len() < WRITE_BATCH_BYTES {
            match frames.try_recv() {
                Ok(frame) => {
                    batch.extend_from_slice(&frame);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        if stream.write_all(&batch).is_err() {
            metrics.write_failed.fetch_add(count, Ordering::Relaxed);
            break;
        }
        writer.wrote(&stream, batch.len(), count);
        metrics.downstream_out.fetch_add(count, Ordering::Relaxed);
    }
    // Written, but not acknowledged by the comet's TCP when last sampled: lost.
    let lost = writer.unacked_frames();
    metrics.unacked_lost.fetch_add(lost, Ordering::Relaxed);
    // Wakes the reader, which reports the link down.
    let _ = stream.shutdown(Shutdown::Both);
}
