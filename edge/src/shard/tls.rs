//! TLS on the shard's WebSocket connections (`wss://`), on rustls's unbuffered API: the
//! shard reads ciphertext into a shared buffer and rustls decrypts it in place into the
//! shard's read buffer, where the WebSocket layer parses it as for a plain connection;
//! frames are queued in the connection's pooled outbox as plaintext and sealed (encrypted
//! in place, at the outbox's tail) just before a flush. So an idle `wss` connection holds
//! its rustls state and nothing else: no plaintext or ciphertext buffer (a partial record
//! between reads is the exception, kept until the rest arrives).
//!
//! The handshake runs inside the connection's existing upgrade deadline (10 s from the
//! accept) and inside the per-turn budget for newcomers, so a storm of handshakes cannot
//! stretch turns for live traffic. Does **not** parse WebSocket (`ws`) or decide anything
//! about terminals.

use std::time::Instant;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{HandshakeKind, ProtocolVersion};

use super::Shard;
use crate::metrics::bump;

/// One connection's TLS state.
pub(super) struct TlsConn {
    conn: UnbufferedServerConnection,
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
            conn,
            held: Vec::new(),
            sealed: 0,
            started: Some(Instant::now()),
        }
    }
}

/// What a read of ciphertext came to.
pub enum TlsRead {
    /// This many plaintext bytes were written (possibly 0: handshake records only).
    Plain(usize),
    /// The peer closed the TLS session.
    Closed,
    /// Not TLS, or a protocol error: the connection must be closed.
    Failed,
}

/// Runs `f` on the unfilled tail of `out` (at least `hint` bytes), growing it while `f`
/// says how many bytes it needs (`Err(Some(size))`); `Err(None)` or a fourth try fails.
fn append_with(
    out: &mut Vec<u8>,
    hint: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> bool {
    let start = out.len();
    let mut want = hint.max(4096);
    for _ in 0..4 {
        out.resize(start + want, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return true;
            }
            Err(Some(size)) if size > want => want = size,
            Err(_) => break,
        }
    }
    out.truncate(start);
    false
}

/// What feeding ciphertext to a session came to.
pub struct Fed {
    /// Plaintext produced, the peer's close, or a failure.
    pub outcome: TlsRead,
    /// Bytes of the input used up; the rest is a partial record to keep for the next read.
    pub consumed: usize,
    /// Handshake records were appended to the outbox and must be sent now.
    pub transmit: bool,
    /// Anything was appended to the outbox (all of it ciphertext).
    pub sealed_handshake: bool,
}

/// Runs rustls over `incoming` (ciphertext): application data is copied into `plain`
/// (which must be at least as long as `incoming`), handshake records to send are appended
/// to `outbox`. Pure — no socket, no shard — so it is fuzzed as it is (`fuzz`'s
/// `tls_records` target).
pub fn feed(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    plain: &mut [u8],
    outbox: &mut Vec<u8>,
) -> Fed {
    let (mut at, mut produced, mut transmit, mut appended) = (0, 0, false, false);
    let outcome = loop {
        let status = conn.process_tls_records(&mut incoming[at..]);
        let discard = status.discard;
        let step = match status.state {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut failed = false;
                while let Some(record) = traffic.next_record() {
                    let Ok(record) = record else {
                        failed = true;
                        break;
                    };
                    let n = record.payload.len().min(plain.len() - produced);
                    plain[produced..produced + n].copy_from_slice(&record.payload[..n]);
                    produced += n;
                }
                failed.then_some(TlsRead::Failed)
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                appended = true;
                let ok = append_with(outbox, 4096, |out| match encode.encode(out) {
                    Ok(n) => Ok(n),
                    Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
                    Err(_) => Err(None),
                });
                (!ok).then_some(TlsRead::Failed)
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                transmit = true;
                None
            }
            Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                Some(TlsRead::Plain(produced))
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Some(TlsRead::Closed),
            Ok(_) | Err(_) => Some(TlsRead::Failed),
        };
        at += discard;
        if let Some(outcome) = step {
            break outcome;
        }
    };
    Fed {
        outcome,
        consumed: at.min(incoming.len()),
        transmit,
        sealed_handshake: appended,
    }
}

impl Shard {
    /// Whether `slot` is a TLS connection.
    pub(super) fn is_tls(&self, slot: u32) -> bool {
        !self.tls_conns.is_empty() && self.tls_conns.contains_key(&slot)
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
        let fed = feed(&mut tls.conn, &mut incoming, plain, &mut outbox);
        if fed.sealed_handshake {
            tls.sealed = outbox.len();
        }
        if outbox.is_empty() {
            // Nothing to send: the buffer goes back to the pool (an idle connection holds none).
            if outbox.capacity() > 0 && self.buffers.len() < super::write::POOLED_BUFFERS {
                self.buffers.push(outbox);
            }
        } else {
            conn.outbox = Some(outbox);
        }
        let (at, transmit, outcome) = (fed.consumed, fed.transmit, fed.outcome);
        if at < incoming.len() {
            tls.held = incoming[at..].to_vec();
        }
        self.tls_incoming = incoming;
        self.account_handshake(slot, matches!(outcome, TlsRead::Failed));
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
            bump(&self.metrics.tls_handshake_errors);
            return;
        }
        if tls.conn.is_handshaking() {
            return;
        }
        tls.started = None;
        self.metrics.tls_handshake_time.record(started.elapsed());
        match tls.conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => bump(&self.metrics.tls_handshakes_tls12),
            _ => bump(&self.metrics.tls_handshakes_tls13),
        }
        if tls.conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            bump(&self.metrics.tls_resumptions);
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
        let status = tls.conn.process_tls_records(&mut []);
        let ok = match status.state {
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
        let space = (buf.len() - len).min(64 * 1024);
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
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_per_connection_record_sizes() {
        let conn = std::mem::size_of::<rustls::server::UnbufferedServerConnection>();
        let record = std::mem::size_of::<super::TlsConn>();
        eprintln!("UnbufferedServerConnection {conn} B inline, TlsConn {record} B");
        assert!(record < 4096, "{record}");
    }
}
