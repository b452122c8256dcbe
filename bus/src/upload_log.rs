//! The embedded node's upload sink: one line per upload,
//! `<unix-seconds> <device-id> <message id> <hex bytes>`, appended by the sidecar thread.
//!
//! Group commit: the uploads of one batch (whatever queued while the previous batch was
//! being written) go out in one `write` and are made durable with one `fdatasync` before
//! their ACKs are sent — so the fsync interval is one batch, and the fsync rate is bounded
//! by the disk, not by the upload rate. A write that fails (a full disk) is cut back to
//! the last whole line, so the log never holds half a line, and the batch is not acked
//! (the devices retry).
//!
//! Does not decide what is acked (the sidecar does).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Where the log's bytes go: a file, or a test's disk that fills up.
pub trait Sink {
    /// Writes all of `bytes` at the end (may write part of them, then fail).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the sink back to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes what was written durable.
    fn sync_data(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// The upload log.
pub struct UploadLog<S: Sink = File> {
    sink: S,
    /// Bytes of whole lines in the sink.
    len: u64,
    /// Lines of the batch being built.
    pending: Vec<u8>,
}

impl UploadLog<File> {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self::with_sink(file, len))
    }
}

impl<S: Sink> UploadLog<S> {
    /// A log over `sink`, which already holds `len` bytes of whole lines.
    pub fn with_sink(sink: S, len: u64) -> Self {
        UploadLog {
            sink,
            len,
            pending: Vec::new(),
        }
    }

    /// Adds one upload to the batch (nothing is written yet).
    pub fn append(&mut self, unix_secs: u64, src: i64, message: &[u8]) {
        let msg_id = message
            .get(28..30)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let _ = write!(self.pending, "{unix_secs} {src} {msg_id} ");
        for b in message {
            let _ = write!(self.pending, "{b:02x}");
        }
        self.pending.push(b'\n');
    }

    /// Writes the batch and makes it durable. On an error nothing of the batch stays in
    /// the log and the caller must not ack it.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self
            .sink
            .write_all(&self.pending)
            .and_then(|()| self.sink.sync_data());
        let result = match written {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut whatever part of the batch reached the disk: no half line.
                let _ = self.sink.set_len(self.len);
                Err(e)
            }
        };
        self.pending.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk with room for `room` bytes: a write past it stores what fits, then fails.
    struct SmallDisk {
        bytes: Vec<u8>,
        room: usize,
        syncs: usize,
    }

    impl Sink for SmallDisk {
        fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
            let fits = bytes.len().min(self.room - self.bytes.len());
            self.bytes.extend_from_slice(&bytes[..fits]);
            if fits < bytes.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.bytes.truncate(len as usize);
            Ok(())
        }
        fn sync_data(&mut self) -> io::Result<()> {
            self.syncs += 1;
            Ok(())
        }
    }

    fn message() -> Vec<u8> {
        let mut msg = vec![0u8; 36];
        msg[28] = 0x30;
        msg
    }

    #[test]
    fn lines_are_written_per_batch_with_one_sync() {
        let disk = SmallDisk {
            bytes: Vec::new(),
            room: 1 << 20,
            syncs: 0,
        };
        let mut log = UploadLog::with_sink(disk, 0);
        log.append(7, -1, &message());
        log.append(8, -2, &message());
        assert!(
            log.sink.bytes.is_empty(),
            "nothing written before the flush"
        );
        log.flush().unwrap();
        let text = String::from_utf8(log.sink.bytes.clone()).unwrap();
        assert!(text.starts_with("7 -1 48 0000"), "{text}");
        assert_eq!(text.lines().count(), 2);
        assert_eq!(log.sink.syncs, 1, "one fsync per batch");
    }

    #[test]
    fn a_full_disk_leaves_no_half_line() {
        let line_len = {
            let mut probe = UploadLog::with_sink(
                SmallDisk {
                    bytes: Vec::new(),
                    room: 1 << 20,
                    syncs: 0,
                },
                0,
            );
            probe.append(7, -1, &message());
            probe.flush().unwrap();
            probe.sink.bytes.len()
        };
        let disk = SmallDisk {
            bytes: Vec::new(),
            room: line_len * 2 + line_len / 2,
            syncs: 0,
        };
        let mut log = UploadLog::with_sink(disk, 0);
        log.append(7, -1, &message());
        log.flush().unwrap();
        log.append(8, -1, &message());
        log.append(9, -1, &message());
        assert!(log.flush().is_err(), "the disk filled up mid-batch");
        assert_eq!(
            log.sink.bytes.len(),
            line_len,
            "the failed batch is cut away whole"
        );
        assert!(log.sink.bytes.ends_with(b"\n"));
        // Room again (the operator freed some): the next batch lands after the whole lines.
        log.sink.room = 1 << 20;
        log.append(10, -1, &message());
        log.flush().unwrap();
        let text = String::from_utf8(log.sink.bytes.clone()).unwrap();
        let firsts: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(firsts, ["7", "10"]);
    }
}
