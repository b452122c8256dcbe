//! The comet ↔ msgbus TCP link (docs/protocol.md §8): the one-byte type handshake, `u32` LE
//! length framing, and the upstream (`src | count | ids | message`) and downstream
//! (`count | ids | message`) payloads.
//!
//! Owns: incremental framing over bytes the caller holds, skipping oversize frames without
//! buffering them (the link stays up, as in the original), zero-copy id lists, and encoders
//! that write the length prefix too. Every decoder refuses short or inconsistent input
//! (the original comet crashed on a payload shorter than 2 bytes).
//!
//! A frame with an empty payload is a ping (on authenticated links, where both ends are
//! ours): it carries nothing and is never routed.
//!
//! Does **not** own: sockets, link selection (round-robin), reconnects or routing; the size
//! limit is the caller's (`max_payload`), the constants below only name the original's.

use thiserror::Error;

/// Largest payload the original msgbus accepted from a comet.
pub const MSGBUS_MAX_PAYLOAD: usize = 32 * 1024;
/// Largest payload the original comet accepted from msgbus (too small: docs/protocol.md §10.4).
pub const ORIGINAL_COMET_MAX_PAYLOAD: usize = 1024;
/// Our default limit, both ways.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Which kind of comet opened the link (the handshake byte, echoed by msgbus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CometKind {
    /// WebSocket comet.
    Ws = 0,
    /// UDP comet.
    Udp = 1,
}

/// A malformed handshake or payload, or a payload too large to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LinkError {
    /// Handshake byte other than 0 or 1 (msgbus closes the link).
    #[error("unknown comet type {0}")]
    Handshake(u8),
    /// The payload is shorter than its fixed fields.
    #[error("payload too short")]
    Truncated,
    /// The id count runs past the end of the payload.
    #[error("id count {count} exceeds the payload")]
    Count {
        /// The announced count.
        count: u16,
    },
    /// More than 65535 ids, or a frame longer than `u32::MAX`.
    #[error("payload too large to encode")]
    TooLarge,
    /// The authenticated opening failed: wrong secret, or not the answer to our nonce.
    #[error("link authentication failed")]
    Unauthenticated,
}

/// Incremental framing: remembers only how much of a skipped frame is left to discard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDecoder {
    max_payload: usize,
    discard_left: u64,
}

/// What [`LinkDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkItem<'a> {
    /// A whole payload (without its length prefix).
    Frame(&'a [u8]),
    /// The head of an oversize frame: its `len` payload bytes are being discarded.
    Skipped {
        /// The announced payload length.
        len: u32,
    },
    /// More bytes of a skipped frame were discarded.
    Discarded,
}

/// A zero-copy view of `count × i64 LE` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids<'a> {
    raw: &'a [u8],
}

/// Comet → msgbus payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream<'a> {
    /// Sender's session id (0 for UDP state sync).
    pub src: i64,
    /// Destination ids.
    pub ids: Ids<'a>,
    /// The application message, unmodified.
    pub message: &'a [u8],
}

/// Msgbus → comet payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downstream<'a> {
    /// Destination ids held by the receiving comet.
    pub ids: Ids<'a>,
    /// The application message, unmodified.
    pub message: &'a [u8],
}

// === CometKind ===

impl CometKind {
    /// Decodes the handshake byte.
    pub fn from_handshake_byte(byte: u8) -> Result<Self, LinkError> {
        match byte {
            0 => Ok(Self::Ws),
            1 => Ok(Self::Udp),
            other => Err(LinkError::Handshake(other)),
        }
    }

    /// The handshake byte.
    pub fn handshake_byte(self) -> u8 {
        self as u8
    }
}

// === LinkDecoder ===

impl LinkDecoder {
    /// A decoder that skips payloads longer than `max_payload`.
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            discard_left: 0,
        }
    }

    /// True while the rest of an oversize frame is being discarded.
    pub fn is_skipping(&self) -> bool {
        self.discard_left > 0
    }

    /// Decodes the next item at the start of `buf`, with how many bytes it used (always > 0).
    /// `None`: more bytes are needed (nothing was used). Call again after dropping `used`
    /// bytes until it returns `None`.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Option<(LinkItem<'a>, usize)> {
        if self.discard_left > 0 {
            let used =
                usize::try_from(self.discard_left).map_or(buf.len(), |left| left.min(buf.len()));
            if used == 0 {
                return None;
            }
            self.discard_left -= used as u64;
            return Some((LinkItem::Discarded, used));
        }
        let [a, b, c, d, rest @ ..] = buf else {
            return None;
        };
        let len = u32::from_le_bytes([*a, *b, *c, *d]);
        let wanted = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.max_payload);
        let Some(wanted) = wanted else {
            let now = usize::try_from(len).map_or(rest.len(), |len| len.min(rest.len()));
            self.discard_left = u64::from(len) - now as u64;
            return Some((LinkItem::Skipped { len }, LENGTH_PREFIX + now));
        };
        let payload = rest.get(..wanted)?;
        Some((LinkItem::Frame(payload), LENGTH_PREFIX + wanted))
    }
}

impl Default for LinkDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

// === Ids ===

impl<'a> Ids<'a> {
    /// A view of `raw`, `None` unless it holds a whole number of ids (at most 65535).
    pub fn from_bytes(raw: &'a [u8]) -> Option<Self> {
        let whole = raw.len().is_multiple_of(8) && raw.len() / 8 <= usize::from(u16::MAX);
        whole.then_some(Self { raw })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.raw.len() / 8
    }

    /// No ids.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The `index`th id.
    pub fn get(&self, index: usize) -> Option<i64> {
        let start = index.checked_mul(8)?;
        self.raw.get(start..start.checked_add(8)?).map(read_i64)
    }

    /// The ids in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = i64> + 'a {
        self.raw.chunks_exact(8).map(read_i64)
    }

    /// The raw little-endian bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Splits `count` ids off the front of `bytes`.
    fn split(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), LinkError> {
        let [lo, hi, rest @ ..] = bytes else {
            return Err(LinkError::Truncated);
        };
        let count = u16::from_le_bytes([*lo, *hi]);
        let raw_len = usize::from(count) * 8;
        match (rest.get(..raw_len), rest.get(raw_len..)) {
            (Some(raw), Some(message)) => Ok((Self { raw }, message)),
            _ => Err(LinkError::Count { count }),
        }
    }
}

fn read_i64(chunk: &[u8]) -> i64 {
    let mut word = [0u8; 8];
    if let Some(bytes) = chunk.get(..8) {
        word.copy_from_slice(bytes);
    }
    i64::from_le_bytes(word)
}

/// Appends `length | [src] | count | ids | message`; nothing is written on error.
fn write_payload<I>(
    out: &mut Vec<u8>,
    src: Option<i64>,
    ids: I,
    message: &[u8],
) -> Result<(), LinkError>
where
    I: ExactSizeIterator<Item = i64>,
{
    let count = u16::try_from(ids.len()).map_err(|_| LinkError::TooLarge)?;
    let src_len = if src.is_some() { 8 } else { 0 };
    let total = src_len + 2 + usize::from(count) * 8 + message.len();
    let total = u32::try_from(total).map_err(|_| LinkError::TooLarge)?;
    out.reserve(LENGTH_PREFIX + total as usize);
    out.extend_from_slice(&total.to_le_bytes());
    if let Some(src) = src {
        out.extend_from_slice(&src.to_le_bytes());
    }
    out.extend_from_slice(&count.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(message);
    Ok(())
}

// === Upstream / Downstream ===

impl<'a> Upstream<'a> {
    /// Decodes a comet → msgbus payload (without its length prefix).
    pub fn decode(payload: &'a [u8]) -> Result<Self, LinkError> {
        let (src, rest) = payload
            .split_first_chunk::<8>()
            .ok_or(LinkError::Truncated)?;
        let (ids, message) = Ids::split(rest)?;
        Ok(Self {
            src: i64::from_le_bytes(*src),
            ids,
            message,
        })
    }

    /// Appends a whole frame (length prefix included) for `src`, `ids` and `message`.
    pub fn write(
        out: &mut Vec<u8>,
        src: i64,
        ids: &[i64],
        message: &[u8],
    ) -> Result<(), LinkError> {
        write_payload(out, Some(src), ids.iter().copied(), message)
    }

    /// Re-encodes this payload as a whole frame.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        write_payload(out, Some(self.src), self.ids.iter(), self.message)
    }
}

impl<'a> Downstream<'a> {
    /// Decodes a msgbus → comet payload (without its length prefix).
    pub fn decode(payload: &'a [u8]) -> Result<Self, LinkError> {
        let (ids, message) = Ids::split(payload)?;
        Ok(Self { ids, message })
    }

    /// Appends a whole frame (length prefix included) for `ids` and `message`.
    pub fn write(out: &mut Vec<u8>, ids: &[i64], message: &[u8]) -> Result<(), LinkError> {
        write_payload(out, None, ids.iter().copied(), message)
    }

    /// Re-encodes this payload as a whole frame.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), LinkError> {
        write_payload(out, None, self.ids.iter(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut LinkDecoder, wire: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some((item, used)) = decoder.decode(&wire[at..]) {
            assert!(used > 0);
            at += used;
            seen.push(format!("{item:?}"));
        }
        seen
    }

    #[test]
    fn framing_and_skipping() {
        let mut wire = Vec::new();
        Downstream::write(&mut wire, &[17], b"hi").unwrap();
        wire.extend_from_slice(&[13, 0, 0, 0, 1, 2, 3]);
        let mut decoder = LinkDecoder::new(12);
        assert_eq!(
            drain(&mut decoder, &wire),
            [
                "Frame([1, 0, 17, 0, 0, 0, 0, 0, 0, 0, 104, 105])",
                "Skipped { len: 13 }"
            ]
        );
        assert!(decoder.is_skipping());
        assert_eq!(
            drain(
                &mut decoder,
                &[4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 1, 0, 0, 0]
            ),
            ["Discarded"]
        );
        assert!(!decoder.is_skipping());
        assert_eq!(
            drain(&mut decoder, &[1, 0, 0, 0, 1, 0, 0, 0]),
            ["Frame([1])"]
        );
        assert_eq!(decoder.decode(&[0, 0, 0]), None);
    }

    fn check_down(payload: &[u8], expect: Result<(Vec<i64>, &[u8]), LinkError>) {
        let got =
            Downstream::decode(payload).map(|d| (d.ids.iter().collect::<Vec<_>>(), d.message));
        assert_eq!(got, expect, "{payload:02x?}");
    }

    #[test]
    fn downstream_cases() {
        check_down(&[], Err(LinkError::Truncated));
        check_down(&[0], Err(LinkError::Truncated));
        check_down(&[0, 0], Ok((vec![], b"")));
        check_down(
            &[1, 0, 1, 0, 0, 0, 0, 0, 0],
            Err(LinkError::Count { count: 1 }),
        );
        check_down(
            &[1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'm'],
            Ok((vec![-1], b"m")),
        );
    }

    #[test]
    fn upstream_round_trip() {
        let mut out = Vec::new();
        Upstream::write(&mut out, -1, &[17, 18], b"msg").unwrap();
        let up = Upstream::decode(&out[4..]).unwrap();
        assert_eq!(
            (up.src, up.ids.get(1), up.ids.get(2), up.message),
            (-1, Some(18), None, &b"msg"[..])
        );
        assert_eq!(Upstream::decode(&out[4..11]), Err(LinkError::Truncated));
        let mut again = Vec::new();
        up.write_to(&mut again).unwrap();
        assert_eq!(again, out);
        assert_eq!(
            Upstream::write(&mut again, 0, &[0; 65536], b""),
            Err(LinkError::TooLarge)
        );
        assert_eq!(
            CometKind::from_handshake_byte(2),
            Err(LinkError::Handshake(2))
        );
    }
}
