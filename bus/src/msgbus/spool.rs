//! The on-disk upload spool: where uploads wait while no broker confirms them.
//!
//! Append-only segment files `seg-<16 digits>.spool` in one directory. A record is
//! `0xA5 | len u32 | fnv1a32 u32 | unix_ms u64 | msg_id u16 | message`, little-endian, the
//! checksum over everything after it. [`Spool::append`] writes a batch and fsyncs it once
//! before returning (the device ACK goes out after that); [`Spool::peek`] reads from the
//! oldest record; [`Spool::consume`] advances past confirmed records and deletes a segment
//! once all of it is confirmed. At open, segments are scanned: a torn tail (a crash
//! mid-append) is cut off, and a corrupt record in the middle (a bad sector, a stray
//! write) is skipped — the scan resynchronises on the next valid record, and the segment
//! is rewritten without the damage — so the acknowledged records after it are kept.
//! Skipped bytes are counted ([`Spool::corrupt_bytes`]).
//!
//! Bounded by `max_bytes`: an append that does not fit is refused. Delivery is
//! at-least-once: records of a segment partly replayed before a crash are replayed again.
//! Does **not** talk to RabbitMQ or decide when to replay (`upload` does).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

const MAGIC: u8 = 0xA5;
const HEADER: usize = 1 + 4 + 4;
const FIXED: usize = 8 + 2;
/// Largest message a record holds (the link accepts 32 KiB payloads).
pub const RECORD_MESSAGE_MAX: usize = 1 << 20;
/// A segment is closed for appends past this size.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// A spool failure.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// Filesystem error.
    #[error("spool io: {0}")]
    Io(#[from] std::io::Error),
    /// The batch does not fit under the size bound.
    #[error("spool full ({bytes} bytes of {max})")]
    Full {
        /// Bytes held.
        bytes: u64,
        /// The bound.
        max: u64,
    },
}

/// One spooled upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was spooled (unix ms).
    pub unix_ms: u64,
    /// Routing key.
    pub msg_id: u16,
    /// The message.
    pub message: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    len: u64,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    head_offset: u64,
    next_seq: u64,
    writer: Option<File>,
    bytes: u64,
    records: u64,
    oldest_ms: Option<u64>,
    corrupt_bytes: u64,
}

// === records ===

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Appends one encoded record.
pub fn encode_record(out: &mut Vec<u8>, unix_ms: u64, msg_id: u16, message: &[u8]) {
    let start = out.len();
    out.push(MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&unix_ms.to_le_bytes());
    out.extend_from_slice(&msg_id.to_le_bytes());
    out.extend_from_slice(message);
    let body = start + HEADER;
    let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
    let sum = fnv1a(&out[body..]);
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
    out[start + 5..start + 9].copy_from_slice(&sum.to_le_bytes());
}

/// Decodes the record at the start of `buf`: `Some((record, used))`, `None` if `buf` holds
/// no whole valid record there (torn or corrupt).
pub fn decode_record(buf: &[u8]) -> Option<(Record, usize)> {
    let (&[magic, l0, l1, l2, l3, s0, s1, s2, s3], rest) = buf.split_first_chunk::<HEADER>()?;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if magic != MAGIC || !(FIXED..=FIXED + RECORD_MESSAGE_MAX).contains(&len) {
        return None;
    }
    let body = rest.get(..len)?;
    if fnv1a(body) != u32::from_le_bytes([s0, s1, s2, s3]) {
        return None;
    }
    let (ms, rest) = body.split_first_chunk::<8>()?;
    let (id, message) = rest.split_first_chunk::<2>()?;
    let record = Record {
        unix_ms: u64::from_le_bytes(*ms),
        msg_id: u16::from_le_bytes(*id),
        message: message.to_vec(),
    };
    Some((record, HEADER + len))
}

/// What a segment holds: its valid records' byte ranges, and the corrupt bytes between
/// them (a torn tail, with no valid record after it, is neither).
fn scan(data: &[u8]) -> (Vec<std::ops::Range<usize>>, usize) {
    let (mut records, mut corrupt, mut at) = (Vec::new(), 0, 0);
    while at < data.len() {
        if let Some((_, used)) = decode_record(&data[at..]) {
            records.push(at..at + used);
            at += used;
            continue;
        }
        // Resynchronise on the next valid record, if any; none: a torn tail.
        let next =
            (at + 1..data.len()).find(|&j| data[j] == MAGIC && decode_record(&data[j..]).is_some());
        let Some(next) = next else { break };
        corrupt += next - at;
        at = next;
    }
    (records, corrupt)
}

/// Writes `data` over `path` atomically (a temporary file, fsync, rename, directory fsync).
fn rewrite(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("spool.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

// === Spool ===

impl Spool {
    /// Opens (creating) `dir`, scanning what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segments: VecDeque::new(),
            head_offset: 0,
            next_seq: 0,
            writer: None,
            bytes: 0,
            records: 0,
            oldest_ms: None,
            corrupt_bytes: 0,
        };
        for seq in seqs {
            let path = spool.path(seq);
            let data = fs::read(&path)?;
            let (records, corrupt) = scan(&data);
            let count = records.len() as u64;
            if let Some(first) = records
                .first()
                .and_then(|r| decode_record(&data[r.clone()]))
            {
                spool.oldest_ms.get_or_insert(first.0.unix_ms);
            }
            let at = if corrupt > 0 {
                spool.corrupt_bytes += corrupt as u64;
                let kept: Vec<u8> = records
                    .iter()
                    .flat_map(|r| &data[r.clone()])
                    .copied()
                    .collect();
                rewrite(dir, &path, &kept)?;
                kept.len()
            } else {
                let end = records.last().map_or(0, |r| r.end);
                if end < data.len() {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(end as u64)?;
                }
                end
            };
            if count == 0 {
                fs::remove_file(&path)?;
                continue;
            }
            spool.next_seq = seq + 1;
            spool.bytes += at as u64;
            spool.records += count;
            spool.segments.push_back(Segment {
                seq,
                len: at as u64,
            });
        }
        Ok(spool)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("seg-{seq:016}.spool"))
    }

    /// Records waiting.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the oldest waiting record was spooled (unix ms).
    pub fn oldest_ms(&self) -> Option<u64> {
        self.oldest_ms
    }

    /// Corrupt bytes skipped in the middle of segments when the spool was opened.
    pub fn corrupt_bytes(&self) -> u64 {
        self.corrupt_bytes
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends `(msg_id, message)` records and fsyncs them; all or nothing is counted
    /// (a refused or failed batch is not acknowledged by the caller).
    pub fn append(&mut self, batch: &[(u16, &[u8])], unix_ms: u64) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for (msg_id, message) in batch {
            encode_record(&mut buf, unix_ms, *msg_id, message);
        }
        if self.bytes + buf.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let tail_full = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if self.writer.is_none() || tail_full {
            let seq = match self.segments.back() {
                Some(tail) if !tail_full => tail.seq,
                _ => self.next_seq,
            };
            self.next_seq = self.next_seq.max(seq + 1);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(seq))?;
            File::open(&self.dir)?.sync_all()?;
            if tail_full {
                self.segments.push_back(Segment { seq, len: 0 });
            }
            self.writer = Some(file);
        }
        let (Some(file), Some(tail)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(SpoolError::Io(std::io::Error::other("no tail segment")));
        };
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // Cut a partial write so the segment stays parseable.
            let _ = file.set_len(tail.len);
            return Err(e.into());
        }
        tail.len += buf.len() as u64;
        self.bytes += buf.len() as u64;
        self.records += batch.len() as u64;
        self.oldest_ms.get_or_insert(unix_ms);
        Ok(())
    }

    /// Up to `max` records from the oldest, without removing them.
    pub fn peek(&self, max: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        let mut offset = self.head_offset;
        for segment in &self.segments {
            if out.len() >= max {
                break;
            }
            let mut file = File::open(self.path(segment.seq))?;
            file.seek(SeekFrom::Start(offset))?;
            let mut data = Vec::new();
            file.take(segment.len.saturating_sub(offset))
                .read_to_end(&mut data)?;
            let mut at = 0;
            while out.len() < max {
                let Some((record, used)) = decode_record(&data[at..]) else {
                    break;
                };
                out.push(record);
                at += used;
            }
            offset = 0;
        }
        Ok(out)
    }

    /// Forgets the `n` oldest records (confirmed), deleting segments emptied.
    pub fn consume(&mut self, n: usize) -> Result<(), SpoolError> {
        let records = self.peek(n)?;
        for record in &records {
            let size = (HEADER + FIXED + record.message.len()) as u64;
            self.head_offset += size;
            self.bytes = self.bytes.saturating_sub(size);
            self.records = self.records.saturating_sub(1);
            let Some(head) = self.segments.front() else {
                break;
            };
            if self.head_offset >= head.len {
                let seq = head.seq;
                let is_tail = self.segments.len() == 1;
                if is_tail {
                    self.writer = None;
                }
                fs::remove_file(self.path(seq))?;
                self.segments.pop_front();
                self.head_offset = 0;
            }
        }
        self.oldest_ms = self.peek(1)?.first().map(|r| r.unix_ms);
        Ok(())
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
