//! The upload thread (docs/protocol.md §7.3, with publisher confirms and a spool).
//!
//! Takes [`Upload`]s from the router's bounded queue in batches. With the spool empty, a
//! batch is published round-robin ([`Brokers`]) and each confirmed upload's ACK goes back
//! to the router; what no broker confirms is appended to the on-disk [`Spool`] (fsync'd
//! per batch) and acknowledged then. While the spool holds anything, new uploads are
//! appended behind it, so order is kept, and it is replayed oldest first whenever a broker
//! is connected; records are removed once confirmed. A device gets its ACK only after a
//! confirm or a spool write; a full or failing spool drops the upload with no ACK
//! (counted; the device retries).
//!
//! Does **not** route ACKs (the router does) or discover brokers (it takes address lists).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use tracing::{error, info, warn};

use super::Event;
use super::broker::Brokers;
use super::route::Upload;
use super::spool::Spool;
use super::stats::Metrics;
use crate::throttle::Throttle;

/// Uploads taken per batch.
const BATCH_MAX: usize = 256;
/// Longest wait for new uploads while idle (broker retries are checked this often).
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// What the upload thread owns.
pub(crate) struct Uploader {
    pub jobs: Receiver<Upload>,
    pub broker_lists: Receiver<Vec<String>>,
    pub events: Sender<Event>,
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
    pub brokers: Brokers,
    pub stop: Arc<AtomicBool>,
    /// What the operator was last told about the spool.
    pub spool_log: SpoolLog,
}

/// Spool state changes worth a log line: spooling begins, the spool doubles (from 1 000
/// records), replay begins and ends, and the spool is full (one line a second).
#[derive(Debug, Default)]
pub(crate) struct SpoolLog {
    /// Records at which the next growth line is due (0: spooling has not begun).
    next_growth: u64,
    replaying: bool,
    full: Throttle,
}

impl SpoolLog {
    fn appended(&mut self, records: u64) {
        if self.next_growth == 0 {
            warn!(records, "no broker confirms: uploads go to the spool");
            self.next_growth = 1000;
        }
        if records >= self.next_growth {
            warn!(records, "the spool is growing");
            self.next_growth = records.saturating_mul(2);
        }
    }

    fn replayed(&mut self, left: u64) {
        if !std::mem::replace(&mut self.replaying, true) {
            info!(
                records = left,
                "a broker confirms again: replaying the spool"
            );
        }
        if left == 0 {
            info!("spool replayed");
            *self = SpoolLog::default();
        }
    }

    fn full(&mut self, dropped: u64, error: &super::spool::SpoolError) {
        if let Some(held_back) = self.full.admit(Instant::now()) {
            error!(dropped, held_back, %error, "the spool cannot take uploads: dropped, unacked");
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the thread; it ends when the router drops the job queue.
pub(crate) fn spawn(uploader: Uploader) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("msgbus-upload".into())
        .spawn(move || uploader.run())
}

impl Uploader {
    fn run(mut self) {
        self.publish_spool_metrics();
        loop {
            self.take_broker_lists();
            self.brokers.reconnect_due();
            let connected = self.brokers.connected();
            self.metrics
                .brokers
                .store(connected as u64, Ordering::Relaxed);
            let replaying = !self.spool.is_empty() && connected > 0;
            if replaying {
                self.replay();
            }
            let Some(batch) = self.next_batch(replaying) else {
                break;
            };
            if !batch.is_empty() {
                self.deliver(batch);
            }
            if self.stop.load(Ordering::Acquire) && self.jobs.is_empty() {
                break;
            }
        }
        self.brokers.close_all();
    }

    fn take_broker_lists(&mut self) {
        let mut latest = None;
        while let Ok(list) = self.broker_lists.try_recv() {
            latest = Some(list);
        }
        if let Some(list) = latest {
            self.brokers.set_list(&list);
        }
    }

    /// The next uploads: without waiting while replaying, else up to [`IDLE_WAIT`] (or
    /// until a broker retry is due). `None` once the router is gone and all is taken.
    fn next_batch(&mut self, replaying: bool) -> Option<Vec<Upload>> {
        let mut batch = Vec::new();
        if !replaying {
            let wait = self.brokers.next_retry().map_or(IDLE_WAIT, |at| {
                at.saturating_duration_since(Instant::now()).min(IDLE_WAIT)
            });
            match self.jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => return Some(batch),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        while batch.len() < BATCH_MAX {
            match self.jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if batch.is_empty() => return None,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        Some(batch)
    }

    fn deliver(&mut self, batch: Vec<Upload>) {
        if !self.spool.is_empty() || self.brokers.connected() == 0 {
            self.spool_and_ack(batch);
            return;
        }
        let items: Vec<(u16, &[u8])> = batch.iter().map(|u| (u.msg_id, &u.message[..])).collect();
        let mut confirmed = self.brokers.publish(&items);
        // One retry of the unconfirmed on the brokers still up, then the spool.
        if confirmed.contains(&false) && self.brokers.connected() > 0 {
            let retry: Vec<usize> = (0..items.len()).filter(|i| !confirmed[*i]).collect();
            let again: Vec<(u16, &[u8])> = retry.iter().map(|i| items[*i]).collect();
            for (at, ok) in retry.into_iter().zip(self.brokers.publish(&again)) {
                confirmed[at] = ok;
            }
        }
        drop(items);
        let mut unconfirmed = Vec::new();
        for (upload, ok) in batch.into_iter().zip(confirmed) {
            if ok {
                self.metrics.msgs_to_mq.fetch_add(1, Ordering::Relaxed);
                self.ack(upload);
            } else {
                unconfirmed.push(upload);
            }
        }
        if !unconfirmed.is_empty() {
            self.spool_and_ack(unconfirmed);
        }
    }

    fn spool_and_ack(&mut self, batch: Vec<Upload>) {
        let items: Vec<(u16, &[u8])> = batch.iter().map(|u| (u.msg_id, &u.message[..])).collect();
        let written = self.spool.append(&items, unix_ms());
        drop(items);
        let n = batch.len() as u64;
        match written {
            Ok(()) => {
                // Counters first: whoever sees the ack sees the spool that holds it.
                self.metrics.spooled.fetch_add(n, Ordering::Relaxed);
                self.publish_spool_metrics();
                self.spool_log.appended(self.spool.records());
                for upload in batch {
                    self.ack(upload);
                }
            }
            Err(error) => {
                self.spool_log.full(n, &error);
                self.metrics.spool_full.fetch_add(n, Ordering::Relaxed);
                self.publish_spool_metrics();
            }
        }
    }

    /// Publishes the oldest spooled records; removes the confirmed prefix.
    fn replay(&mut self) {
        let Ok(records) = self.spool.peek(BATCH_MAX) else {
            return;
        };
        let items: Vec<(u16, &[u8])> = records.iter().map(|r| (r.msg_id, &r.message[..])).collect();
        let confirmed = self.brokers.publish(&items);
        let prefix = confirmed.iter().take_while(|ok| **ok).count();
        if prefix > 0 && self.spool.consume(prefix).is_ok() {
            let n = prefix as u64;
            self.metrics.replayed.fetch_add(n, Ordering::Relaxed);
            self.metrics.msgs_to_mq.fetch_add(n, Ordering::Relaxed);
            self.spool_log.replayed(self.spool.records());
        }
        self.publish_spool_metrics();
    }

    fn ack(&self, upload: Upload) {
        if let Some(ack) = upload.ack {
            let _ = self.events.send(Event::Uploaded {
                src: upload.src,
                origin: upload.origin,
                ack,
            });
        }
    }

    fn publish_spool_metrics(&self) {
        let m = &self.metrics;
        m.spool_records
            .store(self.spool.records(), Ordering::Relaxed);
        m.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
        m.spool_oldest_ms
            .store(self.spool.oldest_ms().unwrap_or(0), Ordering::Relaxed);
    }
}
