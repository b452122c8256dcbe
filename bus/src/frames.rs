//! Whole link frames (docs/protocol.md §8: a 4-byte little-endian length, then the
//! payload) packed in one buffer, so the frames of one socket read move between threads
//! as one allocation, not one per frame: [`Frames`], and [`RouteBatch`], the downstream
//! frames one msgbus read brought for one directory shard of a comet.
//!
//! Does not own framing on the wire (`edge_proto::link` decodes and writes it), the
//! routing decision (`crate::cluster::links` picks the shard per key) or delivery (the
//! shard's `resolve`, the msgbus router).

use edge_proto::link::{Downstream, LinkError};

/// Link frames in arrival order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frames {
    bytes: Vec<u8>,
    count: usize,
}

impl Frames {
    /// Appends a frame of `payload`.
    pub fn push(&mut self, payload: &[u8]) {
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.count += 1;
    }

    /// Appends the whole frame (length prefix included) that `write` appends to the buffer;
    /// on its error nothing is kept.
    pub fn push_written<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = self.bytes.len();
        match write(&mut self.bytes) {
            Ok(()) => {
                self.count += 1;
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(at);
                Err(e)
            }
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held, length prefixes included.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The payloads, in order. Only the `push` methods write the buffer, so every frame is
    /// whole; a torn one would end the walk, never panic.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (payload, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            rest = tail;
            Some(payload)
        })
    }
}

/// Downstream frames for one shard, each with ids under one directory key, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteBatch(Frames);

impl RouteBatch {
    /// Appends a frame for `ids` (all under one directory key) and `message`.
    pub fn push(&mut self, ids: &[i64], message: &[u8]) -> Result<(), LinkError> {
        self.0
            .push_written(|bytes| Downstream::write(bytes, ids, message))
    }

    /// Appends a downstream `payload` as it came from the msgbus (its ids under one key).
    pub fn push_payload(&mut self, payload: &[u8]) {
        self.0.push(payload);
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frames, decoded, in order (every one decodes: only the `push` methods wrote
    /// them; one that did not would end the walk).
    pub fn iter(&self) -> impl Iterator<Item = Downstream<'_>> + '_ {
        self.0.payloads().map_while(|p| Downstream::decode(p).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_give_back_their_payloads_in_order_and_stop_at_a_torn_one() {
        let mut frames = Frames::default();
        for payload in [&b"first"[..], b"", b"third one"] {
            frames.push(payload);
        }
        let whole: Vec<&[u8]> = frames.payloads().collect();
        assert_eq!(whole, [&b"first"[..], b"", b"third one"]);
        // Only the push methods write a buffer, so a torn one is a bug: it ends, it never
        // panics.
        let torn = |len: usize| Frames {
            bytes: frames.bytes[..len].to_vec(),
            count: 0,
        };
        let cut = torn(frames.byte_len() - 1);
        assert_eq!(cut.payloads().collect::<Vec<_>>(), [&b"first"[..], b""]);
        assert_eq!(torn(2).payloads().count(), 0);
    }

    #[test]
    fn a_frame_that_does_not_encode_leaves_nothing() {
        let mut frames = Frames::default();
        frames.push(b"kept");
        let failed: Result<(), ()> = frames.push_written(|bytes| {
            bytes.extend_from_slice(b"half");
            Err(())
        });
        assert!(failed.is_err());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames.payloads().collect::<Vec<_>>(), [&b"kept"[..]]);
    }

    #[test]
    fn frames_come_back_in_order_whichever_way_they_went_in() {
        let mut batch = RouteBatch::default();
        batch.push(&[33, 34], b"two").unwrap();
        let mut frame = Vec::new();
        Downstream::write(&mut frame, &[-5], b"as sent").unwrap();
        batch.push_payload(&frame[4..]);
        assert_eq!(batch.len(), 2);
        let got: Vec<(Vec<i64>, &[u8])> = batch
            .iter()
            .map(|d| (d.ids.iter().collect(), d.message))
            .collect();
        assert_eq!(
            got,
            [(vec![33, 34], &b"two"[..]), (vec![-5], &b"as sent"[..])]
        );
    }
}
