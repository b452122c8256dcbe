//! TLS on the shard's WebSocket connections (`wss://`). The handshake runs on rustls's
//! unbuffered API (`tls_feed`): the shard reads ciphertext into a shared buffer and rustls
//! decrypts it into the shard's read buffer, where the WebSocket layer parses it as for a
//! plain connection. When the handshake is done the shard takes the traffic keys out of
//! rustls and drops the rest of its state: from then on [`RecordLayer`] opens records into
//! the read buffer and seals frames in the connection's pooled outbox just before a flush.
//! So an idle `wss` connection holds two AEAD keys, two IVs and two sequence numbers, and
//! no buffer (a partial record between reads is the exception, kept until the rest arrives).
//!
//! The handshake runs inside the connection's existing upgrade deadline (10 s from the
//! accept) and inside the per-turn budget for newcomers, so a storm of handshakes cannot
//! stretch turns for live traffic. Does **not** parse WebSocket (`ws`) or decide anything
//! about terminals.

use std::time::Instant;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncryptError};
use rustls::{HandshakeKind, ProtocolVersion};

use super::Shard;
use super::tls_feed::append_with;
pub use super::tls_feed::{Fed, TlsRead, feed};
use crate::metrics::bump_own;
use crate::tls_record::{Opened, RecordLayer};

/// Where a connection's TLS stands.
enum Stage {
    /// Handshaking: rustls's whole state.
    Handshake(Box<UnbufferedServerConnection>),
    /// Established: the traffic keys only.
    Records(Box<RecordLayer>),
    /// The keys could not be taken over (the connection is closing).
    Gone,
}

/// One connection's TLS state.
pub(super) struct TlsConn {
    stage: Stage,
    /// A partial record kept between reads (no allocation otherwise).
    held: Vec<u8>,
    /// Bytes at the front of the outbox that are already ciphertext.
    pub(super) sealed: usize,
    /// When the handshake began; `None` once it is done.
    started: Option<Instant>,
}

impl TlsConn {
    pub(super) fn new(conn: UnbufferedServerConnection) -> Self {
        TlsConn {
            stage: Stage::Handshake(Box::new(conn)),
            held: Vec::new(),
            sealed: 0,
            started: Some(Instant::now()),
        }
    }
}

/// Takes the traffic keys out of a finished handshake; `None` if rustls refuses.
fn take_keys(conn: UnbufferedServerConnection) -> Option<RecordLayer> {
    let version = conn.protocol_version()?;
    #[allow(
        deprecated,
        reason = "the kernel-connection route keeps rustls's key schedule, the memory this drops; \
                  KeyUpdate is refused instead (tls_record's notes)"
    )]
    let secrets = conn.dangerous_extract_secrets().ok()?;
    RecordLayer::new(version, secrets).ok()
}

impl Shard {
    /// Whether `slot` is a TLS connection.
    pub(super) fn is_tls(&self, slot: u32) -> bool {
        !self.tls_conns.is_empty() && self.tls_conns.contains_key(&slot)
    }

    /// Opens `incoming` with `slot`'s TLS state: rustls while handshaking (handshake records
    /// to send go to `outbox`), the record layer after. Takes the keys over when a handshake
    /// has just finished. Returns what came of it and the bytes used up.
    fn tls_open(
        &mut self,
        slot: u32,
        incoming: &mut [u8],
        plain: &mut [u8],
        outbox: &mut Vec<u8>,
    ) -> (TlsRead, usize, bool) {
        let Some(tls) = self.tls_conns.get_mut(&slot) else {
            return (TlsRead::Failed, 0, false);
        };
        let conn = match &mut tls.stage {
            Stage::Records(layer) => {
                let (opened, consumed) = layer.open(incoming, plain);
                let outcome = match opened {
                    Opened::Plain(n) => TlsRead::Plain(n),
                    Opened::Closed => TlsRead::Closed,
                    Opened::Unsupported => {
                        bump_own(&self.metrics.tls_key_updates_refused);
                        TlsRead::Failed
                    }
                    Opened::Failed => {
                        bump_own(&self.metrics.tls_record_errors);
                        TlsRead::Failed
                    }
                };
                return (outcome, consumed, false);
            }
            Stage::Handshake(conn) => conn,
            Stage::Gone => return (TlsRead::Failed, 0, false),
        };
        let fed = feed(conn, incoming, plain, outbox);
        if fed.sealed_handshake {
            tls.sealed = outbox.len();
        }
        let failed = matches!(fed.outcome, TlsRead::Failed);
        self.account_handshake(slot, failed);
        let mut outcome = fed.outcome;
        if let Some(tls) = self.tls_conns.get_mut(&slot)
            && matches!(&tls.stage, Stage::Handshake(c) if !c.is_handshaking())
            && !failed
        {
            let Stage::Handshake(conn) = std::mem::replace(&mut tls.stage, Stage::Gone) else {
                unreachable!("matched above")
            };
            match take_keys(*conn) {
                Some(layer) => tls.stage = Stage::Records(Box::new(layer)),
                None => {
                    bump_own(&self.metrics.tls_record_errors);
                    outcome = TlsRead::Failed;
                }
            }
        }
        (outcome, fed.consumed, fed.transmit)
    }

    /// Decrypts `cipher` (after any partial record held from before) into `plain`, which
    /// is at least as long as `cipher`; handshake records to send go to the outbox and are
    /// flushed.
    pub(super) fn tls_read(&mut self, slot: u32, cipher: &[u8], plain: &mut [u8]) -> TlsRead {
        // Frames queued but not sealed yet go first: handshake records rustls may append
        // (a key update, tickets) must follow ciphertext, never plaintext.
        if !self.tls_seal(slot) {
            return TlsRead::Failed;
        }
        let Some(tls) = self.tls_conns.get_mut(&slot) else {
            return TlsRead::Failed;
        };
        let mut incoming = std::mem::take(&mut self.tls_incoming);
        incoming.clear();
        incoming.extend_from_slice(&tls.held);
        incoming.extend_from_slice(cipher);
        tls.held = Vec::new();
        let Some(conn) = self.conns.get_mut(slot) else {
            self.tls_incoming = incoming;
            return TlsRead::Failed;
        };
        let mut outbox = conn
            .outbox
            .take()
            .unwrap_or_else(|| self.buffers.pop().unwrap_or_default());
        let (outcome, at, transmit) = self.tls_open(slot, &mut incoming, plain, &mut outbox);
        if outbox.is_empty() {
            // Nothing to send: the buffer goes back to the pool (an idle connection holds none).
            if outbox.capacity() > 0 && self.buffers.len() < super::write::POOLED_BUFFERS {
                self.buffers.push(outbox);
            }
        } else if let Some(conn) = self.conns.get_mut(slot) {
            conn.outbox = Some(outbox);
        }
        if at < incoming.len()
            && let Some(tls) = self.tls_conns.get_mut(&slot)
        {
            tls.held = incoming[at..].to_vec();
        }
        self.tls_incoming = incoming;
        if transmit {
            self.flush_conn(slot);
        }
        outcome
    }

    /// Counts a handshake that just finished (by version, and resumptions) or failed.
    fn account_handshake(&mut self, slot: u32, failed: bool) {
        let Some(tls) = self.tls_conns.get_mut(&slot) else {
            return;
        };
        let Some(started) = tls.started else {
            return;
        };
        if failed {
            tls.started = None;
            bump_own(&self.metrics.tls_handshake_errors);
            return;
        }
        let Stage::Handshake(conn) = &tls.stage else {
            return;
        };
        if conn.is_handshaking() {
            return;
        }
        tls.started = None;
        self.metrics.tls_handshake_time.record(started.elapsed());
        match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => bump_own(&self.metrics.tls_handshakes_tls12),
            _ => bump_own(&self.metrics.tls_handshakes_tls13),
        }
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            bump_own(&self.metrics.tls_resumptions);
        }
    }

    /// Encrypts the plaintext at the tail of `slot`'s outbox in place; false if it cannot
    /// be (the handshake is not done, or rustls refused): the connection must close.
    pub(super) fn tls_seal(&mut self, slot: u32) -> bool {
        let Some(tls) = self.tls_conns.get_mut(&slot) else {
            return true;
        };
        let Some(outbox) = self.conns.get_mut(slot).and_then(|c| c.outbox.as_mut()) else {
            return true;
        };
        if outbox.len() <= tls.sealed {
            return true;
        }
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        plain.extend_from_slice(&outbox[tls.sealed..]);
        outbox.truncate(tls.sealed);
        let ok = match &mut tls.stage {
            Stage::Records(layer) => layer.seal(&plain, outbox),
            Stage::Handshake(conn) => match conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    // Records of at most 16 KiB, each with a few dozen bytes of overhead.
                    let hint = plain.len() + (plain.len() / 16_384 + 1) * 64;
                    append_with(outbox, hint, |out| match traffic.encrypt(&plain, out) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(e)) => Err(Some(e.required_size)),
                        Err(_) => Err(None),
                    })
                }
                _ => false,
            },
            Stage::Gone => false,
        };
        tls.sealed = outbox.len();
        self.tls_plain = plain;
        ok
    }

    /// One read of a TLS connection into `buf[len..]` (after `len` carried plaintext bytes),
    /// and the WebSocket processing of what it decrypts. Returns (alive, read again).
    pub(super) fn read_tls(
        &mut self,
        slot: u32,
        fd: std::os::fd::RawFd,
        buf: &mut [u8],
        len: usize,
    ) -> (bool, bool) {
        // At most 64 KiB of ciphertext a read (four full records): the buffer is sized once
        // and reused, never cleared.
        // What is read, after a partial record held from before, must fit in `buf[len..]`
        // as plaintext (the record layer's bound: plaintext is never longer).
        let held = self.tls_conns.get(&slot).map_or(0, |t| t.held.len());
        let space = (buf.len() - len).min(64 * 1024).saturating_sub(held);
        if space == 0 {
            self.close(slot, None);
            return (false, false);
        }
        let mut cipher = std::mem::take(&mut self.tls_cipher);
        if cipher.len() < space {
            cipher.resize(space, 0);
        }
        let received = super::net::recv(fd, &mut cipher[..space]);
        let outcome = match received {
            Ok(0) => None,
            Ok(n) => Some((self.tls_read(slot, &cipher[..n], &mut buf[len..]), n)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                self.tls_cipher = cipher;
                if len > 0 {
                    self.keep_carry(slot, &buf[..len]);
                }
                return (true, false);
            }
            Err(_) => None,
        };
        self.tls_cipher = cipher;
        match outcome {
            Some((TlsRead::Plain(0), n)) => {
                if len > 0 {
                    self.keep_carry(slot, &buf[..len]);
                }
                (true, n == space)
            }
            Some((TlsRead::Plain(plain), n)) => {
                let alive = self.process(slot, buf, len, len + plain);
                (alive, alive && n == space)
            }
            Some((TlsRead::Closed | TlsRead::Failed, _)) | None => {
                self.close(slot, None);
                (false, false)
            }
        }
    }

    /// For a TLS connection, a close frame has to be sealed like any frame: queues it in
    /// the outbox and seals it, and returns `None` so that `close` does not also write it
    /// in the clear. Other connections keep `code`.
    pub(super) fn tls_close_frame(&mut self, slot: u32, code: Option<u16>) -> Option<u16> {
        if !self.is_tls(slot) {
            return code;
        }
        let handshaking = self.state(slot) == Some(super::conn::State::Handshake);
        if let (Some(code), false) = (code, handshaking) {
            let mut frame = Vec::with_capacity(4);
            edge_proto::ws::write_close(&mut frame, code);
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.outbox
                    .get_or_insert_with(Default::default)
                    .extend_from_slice(&frame);
            }
            let _ = self.tls_seal(slot);
        }
        // An established connection also says close_notify, so the client's TLS stack sees
        // a clean end rather than a truncation.
        if let Some(TlsConn {
            stage: Stage::Records(layer),
            sealed,
            ..
        }) = self.tls_conns.get_mut(&slot)
            && let Some(outbox) = self
                .conns
                .get_mut(slot)
                .map(|c| c.outbox.get_or_insert_with(Default::default))
            && outbox.len() == *sealed
            && layer.seal_close_notify(outbox)
        {
            *sealed = outbox.len();
        }
        None
    }
}

impl Shard {
    /// Whether `slot`'s TLS handshake is done (its keys alone are left).
    pub(super) fn tls_established(&self, slot: u32) -> bool {
        matches!(
            self.tls_conns.get(&slot),
            Some(TlsConn {
                stage: Stage::Records(_),
                ..
            })
        )
    }

    /// An upgrade: seals what is queued in `slot`'s outbox (so that it is all ciphertext)
    /// and exports its record layer; `None` if it is not established or cannot seal.
    pub(super) fn tls_export(&mut self, slot: u32) -> Option<Box<edge_proto::handover::TlsKeys>> {
        if !self.tls_seal(slot) {
            return None;
        }
        let tls = self.tls_conns.get(&slot)?;
        let Stage::Records(layer) = &tls.stage else {
            return None;
        };
        let (protection, cipher, rx, tx) = layer.export();
        Some(Box::new(edge_proto::handover::TlsKeys {
            protection: protection.number(),
            cipher: cipher.number(),
            rx: (rx.key.to_vec(), rx.iv, rx.seq),
            tx: (tx.key.to_vec(), tx.iv, tx.seq),
            held: tls.held.clone(),
        }))
    }
}

impl TlsConn {
    /// An upgrade: the TLS state of a handed-over connection whose outbox (all ciphertext)
    /// holds `sealed` bytes; `None` if the keys do not make a record layer.
    pub(super) fn restored(keys: &edge_proto::handover::TlsKeys, sealed: usize) -> Option<Self> {
        use crate::tls_record::{Cipher, Keys, Protection};
        fn direction(d: &(Vec<u8>, [u8; 12], u64)) -> Keys<'_> {
            Keys {
                key: d.0.as_slice(),
                iv: d.1,
                seq: d.2,
            }
        }
        let protection = Protection::from_number(keys.protection)?;
        let cipher = Cipher::from_number(keys.cipher)?;
        let layer =
            RecordLayer::from_keys(protection, cipher, direction(&keys.rx), direction(&keys.tx))
                .ok()?;
        Some(TlsConn {
            stage: Stage::Records(Box::new(layer)),
            held: keys.held.clone(),
            sealed,
            started: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_per_connection_record_sizes() {
        let conn = std::mem::size_of::<rustls::server::UnbufferedServerConnection>();
        let record = std::mem::size_of::<super::TlsConn>();
        let layer = std::mem::size_of::<crate::tls_record::RecordLayer>();
        eprintln!(
            "UnbufferedServerConnection {conn} B inline, TlsConn {record} B, RecordLayer {layer} B"
        );
        assert!(record <= 64, "{record}");
        assert!(layer < 1536, "{layer}");
    }
}
