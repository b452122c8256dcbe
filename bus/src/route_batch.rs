//! [`RouteBatch`]: the downstream frames one msgbus read brought for one directory shard,
//! moved to that shard as one buffer (cluster mode). Each entry is a msgbus → comet
//! frame (`edge_proto::link::Downstream`: length prefix, ids, message) whose ids share
//! one directory key; the reader thread writes them, the shard walks them.
//!
//! Does not own the routing decision (`crate::cluster::links` picks the shard per key)
//! or delivery (the shard's `resolve`).

use edge_proto::link::{Downstream, LinkError};

/// Downstream frames for one shard, in arrival order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteBatch {
    bytes: Vec<u8>,
    frames: usize,
}

impl RouteBatch {
    /// Appends a frame for `ids` (all under one directory key) and `message`.
    pub fn push(&mut self, ids: &[i64], message: &[u8]) -> Result<(), LinkError> {
        Downstream::write(&mut self.bytes, ids, message)?;
        self.frames += 1;
        Ok(())
    }

    /// Appends a downstream `payload` as it came from the msgbus (its ids under one key).
    pub fn push_payload(&mut self, payload: &[u8]) {
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.frames += 1;
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames
    }

    /// No frames.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The frames, decoded, in order. Only `push` and `push_payload` write the buffer, so
    /// every entry decodes; a torn one would end the walk, never panic.
    pub fn iter(&self) -> impl Iterator<Item = Downstream<'_>> + '_ {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (payload, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            rest = tail;
            Downstream::decode(payload).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
