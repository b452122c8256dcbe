//! Load messages: a ≥ 24-byte forward-shaped payload whose bytes after the 24-byte header
//! carry a send timestamp, a magic and a pair index, so receivers can tell load messages
//! from status pushes and compute end-to-end latency.
//!
//! Layout: `0x83, 0, seq u16, ts u32, dst i64 @8, src i64 @16 | send ns u64 @24 |
//! "CSLG" @32 | pair u32 @36 | padding`.

use std::sync::OnceLock;
use std::time::Instant;

/// Forward opcode byte (FIN + opcode 3): relayed, never uploaded.
pub const FORWARD_BYTE0: u8 = 0x83;
/// Marks a load message.
pub const MAGIC: &[u8; 4] = b"CSLG";
/// Smallest load message.
pub const MIN_LEN: usize = 40;
/// Where the per-pair sequence number (u32) sits, when the message is long enough.
pub const SEQ_AT: usize = 40;
/// Where the "device was logged in when sent" flag byte sits.
pub const FLAG_AT: usize = 44;
/// Smallest load message that carries a sequence number and flag.
pub const SEQ_LEN: usize = 45;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since this process's benchmark epoch (shared by all its threads).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Writes a load message of `len` (≥ [`MIN_LEN`]) bytes into `out` (cleared first).
pub fn build(out: &mut Vec<u8>, dst: i64, src: i64, pair: u32, sent_ns: u64, len: usize) {
    out.clear();
    out.resize(len.max(MIN_LEN), 0);
    out[0] = FORWARD_BYTE0;
    out[8..16].copy_from_slice(&dst.to_le_bytes());
    out[16..24].copy_from_slice(&src.to_le_bytes());
    stamp(out, sent_ns);
    out[32..36].copy_from_slice(MAGIC);
    out[36..40].copy_from_slice(&pair.to_le_bytes());
}

/// Rewrites the send time of a message built by [`build`].
pub fn stamp(msg: &mut [u8], sent_ns: u64) {
    msg[24..32].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Writes the per-pair sequence number and the flag byte (message ≥ [`SEQ_LEN`]).
pub fn set_seq(msg: &mut [u8], seq: u32, flag: u8) {
    msg[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq.to_le_bytes());
    msg[FLAG_AT] = flag;
}

/// (sequence, flag) of a relayed load message long enough to carry them.
pub fn seq_of(frame: &[u8]) -> Option<(u32, u8)> {
    let s = frame.get(SEQ_AT..SEQ_LEN)?;
    Some((u32::from_le_bytes(s[..4].try_into().ok()?), s[4]))
}

/// (send ns, pair) of a load message found at `offset` in `frame`; `None` for anything else.
pub fn parse_at(frame: &[u8], offset: usize) -> Option<(u64, u32)> {
    let m = frame.get(offset..offset + 16)?;
    if &m[8..12] != MAGIC {
        return None;
    }
    Some((
        u64::from_le_bytes(m[..8].try_into().ok()?),
        u32::from_le_bytes(m[12..16].try_into().ok()?),
    ))
}

/// (send ns, pair) of a relayed load message.
pub fn parse(frame: &[u8]) -> Option<(u64, u32)> {
    if frame.first() != Some(&FORWARD_BYTE0) {
        return None;
    }
    parse_at(frame, 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Vec::new();
        build(&mut m, -5, 16, 7, 123_456, 10);
        assert_eq!(m.len(), MIN_LEN);
        assert_eq!(i64::from_le_bytes(m[8..16].try_into().unwrap()), -5);
        assert_eq!(parse(&m), Some((123_456, 7)));
        stamp(&mut m, 9);
        assert_eq!(parse(&m), Some((9, 7)));
        m[0] = 0x82;
        assert_eq!(parse(&m), None, "status pushes are not load messages");
        assert_eq!(parse(&[0x83; 30]), None);
        assert!(now_ns() <= now_ns());
        assert_eq!(seq_of(&m), None, "40 bytes carry no sequence");
        build(&mut m, -5, 16, 7, 1, 48);
        set_seq(&mut m, 0xdead_beef, 1);
        assert_eq!(seq_of(&m), Some((0xdead_beef, 1)));
        assert_eq!(parse(&m), Some((1, 7)));
    }
}
