//! Comet links: the TCP server on `--addr` (original spec §9).
//!
//! One acceptor thread; per comet, a reader thread (handshake, then `u32` LE framed
//! payloads up to `max_payload`, larger ones skipped without dropping the link) and a
//! writer thread draining that comet's **bounded** queue. The router only ever
//! `try_send`s into a queue, so a dead or slow comet costs a counted drop, never a stall
//! of the others, and no lock is held across a socket write (there is no lock). A write
//! that fails or times out closes the link; a closed link is reported as
//! [`Event::LinkDown`] and leaves the router's tables.
//!
//! Threads rather than async: comets are few (tens), blocking reads and writes with
//! deadlines are the simplest correct shape, and the router thread owns all state.
//! Does **not** route or interpret payloads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use edge_proto::link::{CometKind, LinkDecoder, LinkItem};

use super::Event;
use super::route::LinkId;
use super::stats::{Metrics, bump};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
                let Ok(stream) = stream else { continue };
                let link_ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("msgbus-link-rx".into())
                    .spawn(move || serve(stream, link_ctx));
                if spawned.is_err() {
                    bump(&ctx.metrics.bad_handshake);
                }
            }
        })
}

/// Handshake, then read until the link ends.
fn serve(stream: TcpStream, ctx: LinkContext) {
    let Some((kind, name)) = handshake(&stream, &ctx) else {
        bump(&ctx.metrics.bad_handshake);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    let link = LinkId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let (queue, frames) = bounded(ctx.queue_frames);
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let _ = writer.set_write_timeout(Some(ctx.write_timeout));
    let metrics = ctx.metrics.clone();
    let spawned = std::thread::Builder::new()
        .name("msgbus-link-tx".into())
        .spawn(move || write_loop(writer, frames, &metrics));
    if spawned.is_err() {
        return;
    }
    let up = Event::LinkUp {
        link,
        name,
        kind,
        queue,
    };
    if ctx.events.send(up).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    read_loop(&stream, link, &ctx);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = ctx.events.send(Event::LinkDown { link });
}

fn handshake(mut stream: &TcpStream, ctx: &LinkContext) -> Option<(CometKind, String)> {
    let name = stream.peer_addr().ok()?.ip().to_canonical().to_string();
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok()?;
    let _ = stream.set_nodelay(true);
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).ok()?;
    let kind = CometKind::from_handshake_byte(byte[0]).ok()?;
    stream.set_write_timeout(Some(ctx.write_timeout)).ok()?;
    stream.write_all(&byte).ok()?;
    stream.set_read_timeout(None).ok()?;
    Some((kind, name))
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
        while let Some((item, used)) = decoder.decode(&buf[at..]) {
            at += used;
            match item {
                LinkItem::Frame(payload) => {
                    let event = Event::Frame {
                        link,
                        payload: payload.to_vec(),
                    };
                    if ctx.events.send(event).is_err() {
                        return;
                    }
                }
                LinkItem::Skipped { .. } => bump(&ctx.metrics.oversize),
                LinkItem::Discarded => {}
            }
        }
        buf.drain(..at);
    }
}

/// Writes queued frames in batches until the queue's sender is dropped or a write fails.
fn write_loop(mut stream: TcpStream, frames: Receiver<Vec<u8>>, metrics: &Metrics) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Ok(first) = frames.recv() {
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
        metrics.downstream_out.fetch_add(count, Ordering::Relaxed);
    }
    // Wakes the reader, which reports the link down.
    let _ = stream.shutdown(Shutdown::Both);
}
