//! The TLS record layer of an established `wss` connection, keys only: once rustls has
//! finished a handshake, the shard takes the traffic keys and sequence numbers out of it
//! (`dangerous_extract_secrets`, the route kTLS takes) and drops the rest of rustls's
//! state — about 3.6 KiB of key schedule, buffers and bookkeeping a connection would keep
//! for its whole life. What is left is two AEAD keys, two IVs and two sequence numbers:
//! the same state the kernel would hold under kTLS, and what an upgrade can hand over.
//!
//! Seals and opens TLS 1.3 records (RFC 8446 §5.2) and TLS 1.2 AEAD records (AES-GCM with
//! its explicit nonce, RFC 5288; ChaCha20-Poly1305, RFC 7905), on ring's AEADs — the
//! ciphers rustls negotiates on its `ring` provider. Pure: bytes in, bytes out, no socket.
//!
//! What it does **not** do: a TLS 1.3 `KeyUpdate` or a TLS 1.2 renegotiation from the
//! client ends the connection ([`Opened::Unsupported`], counted by the shard). rustls's
//! own kernel hand-off keeps its key schedule for `KeyUpdate`; we do not keep it, because
//! phones' TLS stacks do not send `KeyUpdate` on connections of this size and a client
//! that does reconnects and resumes.

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce,
    UnboundKey,
};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};

/// The largest plaintext a record carries.
pub const MAX_PLAINTEXT: usize = 16_384;
/// The largest record body accepted: TLS 1.2's bound (RFC 5246 §6.2.3) and TLS 1.3's
/// (RFC 8446 §5.2).
const MAX_BODY_12: usize = MAX_PLAINTEXT + 2048;
const MAX_BODY_13: usize = MAX_PLAINTEXT + 256;
/// Records one key may protect before the connection is closed: under AES-GCM's limit of
/// 2^24.5 records (RFC 8446 §5.5; ChaCha20-Poly1305's is far higher). The client
/// reconnects and resumes: keys are never updated in place (no `KeyUpdate`).
const MAX_RECORDS: u64 = 1 << 24;
const HEADER: usize = 5;
const TAG: usize = 16;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;

/// The record protection a connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// TLS 1.3 (any AEAD): inner content type, nonce = IV ⊕ sequence.
    Tls13,
    /// TLS 1.2 AES-GCM: a 4-byte salt and an 8-byte explicit nonce in each record.
    Tls12Gcm,
    /// TLS 1.2 ChaCha20-Poly1305: nonce = IV ⊕ sequence, no explicit nonce.
    Tls12Chacha,
}

impl Protection {
    /// Its number in a handover stream.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The protection numbered `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        [
            Protection::Tls13,
            Protection::Tls12Gcm,
            Protection::Tls12Chacha,
        ]
        .get(usize::from(n))
        .copied()
    }
}

/// Why keys could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A protocol version other than TLS 1.2 or 1.3.
    #[error("protocol version {0:?} has no keys-only record layer")]
    Version(ProtocolVersion),
    /// ring refused the key (a wrong length).
    #[error("the traffic key does not fit its cipher")]
    Key,
    /// The two directions use different ciphers, or the cipher does not fit the protection.
    #[error("the ciphers do not fit the record protection")]
    Mixed,
}

/// The AEAD a connection negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl Cipher {
    /// Its number in a handover stream.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The cipher numbered `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        [
            Cipher::Aes128Gcm,
            Cipher::Aes256Gcm,
            Cipher::Chacha20Poly1305,
        ]
        .get(usize::from(n))
        .copied()
    }

    fn algorithm(self) -> &'static Algorithm {
        match self {
            Cipher::Aes128Gcm => &AES_128_GCM,
            Cipher::Aes256Gcm => &AES_256_GCM,
            Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
        }
    }

    fn of(secrets: &ConnectionTrafficSecrets) -> Option<(Cipher, &[u8], &[u8])> {
        Some(match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (Cipher::Aes128Gcm, key.as_ref(), iv.as_ref())
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (Cipher::Aes256Gcm, key.as_ref(), iv.as_ref())
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key.as_ref(), iv.as_ref())
            }
            _ => return None,
        })
    }
}

/// One direction's raw keys: what a handover carries.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    /// The AEAD key (16 or 32 bytes).
    pub key: &'a [u8],
    /// The static IV.
    pub iv: [u8; NONCE_LEN],
    /// The next record's sequence number.
    pub seq: u64,
}

/// One direction's key, IV and next sequence number.
struct Direction {
    key: LessSafeKey,
    /// The raw key (its first 16 or 32 bytes), kept so that an upgrade can hand the
    /// connection over: ring's expanded key cannot be read back.
    raw: [u8; 32],
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(cipher: Cipher, keys: Keys<'_>) -> Result<Self, KeysError> {
        let key = UnboundKey::new(cipher.algorithm(), keys.key).map_err(|_| KeysError::Key)?;
        let mut raw = [0u8; 32];
        raw.get_mut(..keys.key.len())
            .ok_or(KeysError::Key)?
            .copy_from_slice(keys.key);
        Ok(Direction {
            key: LessSafeKey::new(key),
            raw,
            iv: keys.iv,
            seq: keys.seq,
        })
    }

    fn keys(&self, cipher: Cipher) -> Keys<'_> {
        let len = if cipher == Cipher::Aes128Gcm { 16 } else { 32 };
        Keys {
            key: &self.raw[..len],
            iv: self.iv,
            seq: self.seq,
        }
    }

    /// IV ⊕ the sequence number, then counts the record.
    fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.wrapping_add(1);
        nonce
    }
}

/// A connection's record layer: both directions' keys.
pub struct RecordLayer {
    protection: Protection,
    cipher: Cipher,
    rx: Direction,
    tx: Direction,
}

/// What opening the complete records at the front of the input came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Every complete record was opened; this many plaintext bytes were written.
    Plain(usize),
    /// The peer sent `close_notify`.
    Closed,
    /// A `KeyUpdate` or a renegotiation: the connection must close.
    Unsupported,
    /// A record that does not decrypt or parse: the connection must close.
    Failed,
}

/// The 1.2 additional data: sequence, type, version, plaintext length.
fn aad12(seq: u64, kind: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = kind;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

impl RecordLayer {
    /// Takes over the keys rustls extracted at the end of a handshake of `version`.
    pub fn new(version: ProtocolVersion, secrets: ExtractedSecrets) -> Result<Self, KeysError> {
        let (rx_cipher, rx_key, rx_iv) = Cipher::of(&secrets.rx.1).ok_or(KeysError::Key)?;
        let (tx_cipher, tx_key, tx_iv) = Cipher::of(&secrets.tx.1).ok_or(KeysError::Key)?;
        if rx_cipher != tx_cipher {
            return Err(KeysError::Mixed);
        }
        let protection = match (version, rx_cipher) {
            (ProtocolVersion::TLSv1_3, _) => Protection::Tls13,
            (ProtocolVersion::TLSv1_2, Cipher::Chacha20Poly1305) => Protection::Tls12Chacha,
            (ProtocolVersion::TLSv1_2, _) => Protection::Tls12Gcm,
            (other, _) => return Err(KeysError::Version(other)),
        };
        let iv = |iv: &[u8]| <[u8; NONCE_LEN]>::try_from(iv).map_err(|_| KeysError::Key);
        let rx = Keys {
            key: rx_key,
            iv: iv(rx_iv)?,
            seq: secrets.rx.0,
        };
        let tx = Keys {
            key: tx_key,
            iv: iv(tx_iv)?,
            seq: secrets.tx.0,
        };
        Self::from_keys(protection, rx_cipher, rx, tx)
    }

    /// A record layer from raw keys (as a handover carries them).
    pub fn from_keys(
        protection: Protection,
        cipher: Cipher,
        rx: Keys<'_>,
        tx: Keys<'_>,
    ) -> Result<Self, KeysError> {
        let chacha = cipher == Cipher::Chacha20Poly1305;
        let fits = match protection {
            Protection::Tls13 => true,
            Protection::Tls12Gcm => !chacha,
            Protection::Tls12Chacha => chacha,
        };
        if !fits {
            return Err(KeysError::Mixed);
        }
        Ok(RecordLayer {
            protection,
            cipher,
            rx: Direction::new(cipher, rx)?,
            tx: Direction::new(cipher, tx)?,
        })
    }

    /// The record protection in use.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The AEAD in use.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Everything an upgrade needs to rebuild this layer in another process
    /// ([`RecordLayer::from_keys`]): the protection, the cipher, and each direction's raw
    /// key, IV and next sequence number (received, then sent).
    pub fn export(&self) -> (Protection, Cipher, Keys<'_>, Keys<'_>) {
        (
            self.protection,
            self.cipher,
            self.rx.keys(self.cipher),
            self.tx.keys(self.cipher),
        )
    }

    /// The next sequence numbers (received, sent).
    pub fn sequences(&self) -> (u64, u64) {
        (self.rx.seq, self.tx.seq)
    }

    /// Opens every complete record at the front of `input` (in place), copying application
    /// data into `plain`, which must be at least as long as `input`. Returns the outcome
    /// and the bytes of `input` used up: the rest is a partial record to keep.
    pub fn open(&mut self, input: &mut [u8], plain: &mut [u8]) -> (Opened, usize) {
        let (mut at, mut produced) = (0, 0);
        let max_body = if self.protection == Protection::Tls13 {
            MAX_BODY_13
        } else {
            MAX_BODY_12
        };
        while input.len() - at >= HEADER {
            let header: [u8; HEADER] = input[at..at + HEADER].try_into().unwrap_or_default();
            let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[1] != 3 || body > max_body || self.rx.seq >= MAX_RECORDS {
                return (Opened::Failed, at);
            }
            // A record waits for the rest of its bytes, or, when its plaintext might not fit
            // what is left of `plain`, for the next read (it is opened whole or not at all).
            if input.len() - at - HEADER < body || produced + body > plain.len() {
                break;
            }
            let record = &mut input[at + HEADER..at + HEADER + body];
            at += HEADER + body;
            let (kind, data) = match self.open_record(header, record) {
                Some(opened) => opened,
                None => return (Opened::Failed, at),
            };
            match (kind, data.len()) {
                (_, n) if n > MAX_PLAINTEXT => return (Opened::Failed, at),
                (APPLICATION_DATA, n) => {
                    plain[produced..produced + n].copy_from_slice(data);
                    produced += n;
                }
                (ALERT, 2) if data[1] == 0 => return (Opened::Closed, at),
                (HANDSHAKE, _) => return (Opened::Unsupported, at),
                _ => return (Opened::Failed, at),
            }
        }
        (Opened::Plain(produced), at)
    }

    /// Decrypts one record's body in place: its content type and plaintext.
    fn open_record<'a>(
        &mut self,
        header: [u8; HEADER],
        body: &'a mut [u8],
    ) -> Option<(u8, &'a [u8])> {
        match self.protection {
            Protection::Tls13 => {
                if header[0] != APPLICATION_DATA || body.len() < TAG + 1 {
                    return None;
                }
                let nonce = Nonce::assume_unique_for_key(self.rx.next_nonce());
                let inner = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(header), body)
                    .ok()?;
                // The content type is the last non-zero byte; zeros after it are padding.
                let end = inner.iter().rposition(|&b| b != 0)?;
                Some((inner[end], &inner[..end]))
            }
            Protection::Tls12Gcm => {
                let len = body.len().checked_sub(8 + TAG)?;
                let mut nonce = self.rx.iv;
                nonce[4..].copy_from_slice(&body[..8]);
                let aad = aad12(self.rx.seq, header[0], len);
                self.rx.seq = self.rx.seq.wrapping_add(1);
                let nonce = Nonce::assume_unique_for_key(nonce);
                let data = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(aad), &mut body[8..])
                    .ok()?;
                Some((header[0], data))
            }
            Protection::Tls12Chacha => {
                let len = body.len().checked_sub(TAG)?;
                let aad = aad12(self.rx.seq, header[0], len);
                let nonce = Nonce::assume_unique_for_key(self.rx.next_nonce());
                let data = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(aad), body)
                    .ok()?;
                Some((header[0], data))
            }
        }
    }

    /// Appends `plain` to `out` as application-data records of at most 16 KiB each; false
    /// if a record could not be sealed (then the connection must close: its stream has a gap).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        out.reserve(plain.len() + (plain.len() / MAX_PLAINTEXT + 1) * (HEADER + 8 + 1 + TAG));
        plain
            .chunks(MAX_PLAINTEXT)
            .all(|chunk| self.seal_record(APPLICATION_DATA, chunk, out))
    }

    /// Appends a `close_notify` alert to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> bool {
        self.seal_record(ALERT, &[1, 0], out)
    }

    fn seal_record(&mut self, kind: u8, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        if self.tx.seq >= MAX_RECORDS {
            return false;
        }
        let start = out.len();
        let (outer, explicit, inner) = match self.protection {
            Protection::Tls13 => (APPLICATION_DATA, 0, 1),
            Protection::Tls12Gcm => (kind, 8, 0),
            Protection::Tls12Chacha => (kind, 0, 0),
        };
        let body = explicit + chunk.len() + inner + TAG;
        let header = [outer, 3, 3, (body >> 8) as u8, body as u8];
        let aad12 = aad12(self.tx.seq, kind, chunk.len());
        let nonce = self.tx.next_nonce();
        out.extend_from_slice(&header);
        if explicit > 0 {
            out.extend_from_slice(&nonce[4..]);
        }
        out.extend_from_slice(chunk);
        if inner > 0 {
            out.push(kind);
        }
        let sealed = &mut out[start + HEADER + explicit..];
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = match self.protection {
            Protection::Tls13 => {
                self.tx
                    .key
                    .seal_in_place_separate_tag(nonce, Aad::from(header), sealed)
            }
            _ => self
                .tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(aad12), sealed),
        };
        // ring refuses only past its per-record block limit, which 16 KiB never reaches.
        match tag {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                true
            }
            Err(_) => {
                out.truncate(start);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer and its mirror (the mirror's sealed records open on the layer).
    fn pair(protection: Protection, cipher: Cipher) -> (RecordLayer, RecordLayer) {
        let len = if cipher == Cipher::Aes128Gcm { 16 } else { 32 };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        fn keys(k: &[u8; 32], len: usize) -> Keys<'_> {
            Keys {
                key: &k[..len],
                iv: [k[0]; 12],
                seq: 0,
            }
        }
        let layer =
            RecordLayer::from_keys(protection, cipher, keys(&a, len), keys(&b, len)).unwrap();
        let mirror =
            RecordLayer::from_keys(protection, cipher, keys(&b, len), keys(&a, len)).unwrap();
        (layer, mirror)
    }

    #[test]
    fn records_whose_plaintext_may_not_fit_wait_for_the_next_read() {
        for (protection, cipher) in [
            (Protection::Tls13, Cipher::Aes128Gcm),
            (Protection::Tls12Gcm, Cipher::Aes256Gcm),
            (Protection::Tls12Chacha, Cipher::Chacha20Poly1305),
        ] {
            let (mut layer, mut mirror) = pair(protection, cipher);
            let sent: Vec<u8> = (0..80_000u32).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            assert!(mirror.seal(&sent, &mut wire));
            // Less room than the records' plaintext: whole records only, never a panic.
            let mut plain = vec![0u8; 40_000];
            let (opened, consumed) = layer.open(&mut wire, &mut plain);
            let Opened::Plain(n) = opened else {
                panic!("{opened:?}")
            };
            assert!(n <= plain.len() && n % MAX_PLAINTEXT == 0 && n > 0, "{n}");
            let mut got = plain[..n].to_vec();
            let mut rest = wire[consumed..].to_vec();
            let mut plain = vec![0u8; rest.len()];
            let (opened, consumed) = layer.open(&mut rest, &mut plain);
            assert_eq!(consumed, rest.len());
            let Opened::Plain(m) = opened else {
                panic!("{opened:?}")
            };
            got.extend_from_slice(&plain[..m]);
            assert_eq!(got, sent, "{protection:?}");
        }
    }

    #[test]
    fn an_oversized_tls13_record_fails() {
        let (mut layer, _) = pair(Protection::Tls13, Cipher::Aes128Gcm);
        let body = MAX_BODY_13 + 1;
        let mut wire = vec![APPLICATION_DATA, 3, 3, (body >> 8) as u8, body as u8];
        wire.resize(HEADER + body, 0);
        let mut plain = vec![0u8; wire.len()];
        assert_eq!(layer.open(&mut wire, &mut plain).0, Opened::Failed);
    }
}
