//! The handshake half of the shard's TLS: rustls's unbuffered server fed ciphertext from
//! the shard's read buffer, application data copied into the shard's read buffer, handshake
//! records appended to the connection's outbox. Pure — no socket, no shard — so it is
//! fuzzed as it is (`fuzz`'s `tls_records` target). Once a handshake is done the shard
//! takes the keys out ([`crate::tls_record`]) and this glue is no longer used for that
//! connection.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError};

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
pub(super) fn append_with(
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
