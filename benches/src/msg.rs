//! Load messages: forward packets carrying a send timestamp, a magic and a pair index, so
//! receivers can tell load messages from status pushes and compute end-to-end latency.
//!
//! Two layouts, told apart by where the magic is:
//! - **valid** (76 bytes and more, issue 13's workload): a forward packet with correct
//!   checks — outer header, sid slot (zero; a node patches it for a UDP device), inner
//!   header carrying the stamp (`send ns u64 @40 | "CSLG" @48 | pair u32 @52 | seq u32
//!   @56 | flag @60`), data header (message id 0x10, body length, both CRC-8 checks,
//!   resealed at every stamp) and a zero body;
//! - **short** (40–75 bytes, the older figures): `0x83, 0, seq u16, ts u32, dst i64 @8,
//!   src i64 @16 | send ns u64 @24 | "CSLG" @32 | pair u32 @36 | seq u32 @40 | flag @44`,
//!   no data header.

use std::sync::OnceLock;
use std::time::Instant;

/// Forward opcode byte (FIN + opcode 3): relayed, never uploaded.
pub const FORWARD_BYTE0: u8 = 0x83;
/// Marks a load message.
pub const MAGIC: &[u8; 4] = b"CSLG";
/// Smallest load message.
pub const MIN_LEN: usize = 40;
/// Smallest load message that carries a sequence number and flag.
pub const SEQ_LEN: usize = 45;
/// Smallest load message in the valid layout (a forward packet with no body).
pub const VALID_LEN: usize = edge_proto::frame::FORWARD_MIN_LEN;

/// Where the stamp (send ns, magic, pair, seq, flag) starts in `frame`: after the inner
/// header's start for the valid layout, after the outer header for the short one.
fn stamp_at(frame: &[u8]) -> Option<usize> {
    if frame.len() >= VALID_LEN && frame.get(48..52) == Some(MAGIC) {
        Some(40)
    } else if frame.get(32..36) == Some(MAGIC) {
        Some(24)
    } else {
        None
    }
}

/// Reseals a valid-layout message's checks after its stamp changed.
fn reseal(msg: &mut [u8]) {
    if msg.len() >= VALID_LEN && msg.get(48..52) == Some(MAGIC) {
        let _ = edge_proto::frame::seal(msg);
    }
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since this process's benchmark epoch (shared by all its threads).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Writes a load message of `len` (≥ [`MIN_LEN`]) bytes into `out` (cleared first): the
/// valid layout from [`VALID_LEN`] bytes, the short one below.
pub fn build(out: &mut Vec<u8>, dst: i64, src: i64, pair: u32, sent_ns: u64, len: usize) {
    out.clear();
    out.resize(len.max(MIN_LEN), 0);
    out[0] = FORWARD_BYTE0;
    out[8..16].copy_from_slice(&dst.to_le_bytes());
    out[16..24].copy_from_slice(&src.to_le_bytes());
    let at = if len >= VALID_LEN {
        use edge_proto::frame::{BODY_LEN_IN_DATA, FORWARD_DATA_OFFSET, MSG_ID_IN_DATA};
        let body_len = (len - VALID_LEN) as u16;
        let data = FORWARD_DATA_OFFSET;
        out[data] = 0x80;
        out[data + MSG_ID_IN_DATA..][..2].copy_from_slice(&0x10u16.to_le_bytes());
        out[data + BODY_LEN_IN_DATA..][..2].copy_from_slice(&body_len.to_le_bytes());
        40
    } else {
        24
    };
    out[at + 8..at + 12].copy_from_slice(MAGIC);
    out[at + 12..at + 16].copy_from_slice(&pair.to_le_bytes());
    stamp(out, sent_ns);
}

/// Rewrites the send time of a message built by [`build`].
pub fn stamp(msg: &mut [u8], sent_ns: u64) {
    if let Some(at) = stamp_at(msg) {
        msg[at..at + 8].copy_from_slice(&sent_ns.to_le_bytes());
        reseal(msg);
    }
}

/// Writes the per-pair sequence number and the flag byte (message ≥ [`SEQ_LEN`]).
pub fn set_seq(msg: &mut [u8], seq: u32, flag: u8) {
    if let Some(at) = stamp_at(msg).filter(|&at| msg.len() >= at + 21) {
        msg[at + 16..at + 20].copy_from_slice(&seq.to_le_bytes());
        msg[at + 20] = flag;
        reseal(msg);
    }
}

/// (sequence, flag) of a relayed load message long enough to carry them.
pub fn seq_of(frame: &[u8]) -> Option<(u32, u8)> {
    let at = stamp_at(frame)?;
    let s = frame.get(at + 16..at + 21)?;
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
    parse_at(frame, stamp_at(frame)?)
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

    #[test]
    fn the_valid_layout_is_a_sealed_forward_packet() {
        for len in [VALID_LEN, 256, 1024] {
            let mut m = Vec::new();
            build(&mut m, -5, 16, 7, 123_456, len);
            assert_eq!(m.len(), len);
            let check = |m: &[u8]| edge_proto::frame::verify_forward(m).map(|_| ());
            assert_eq!(check(&m), Ok(()), "{len}");
            assert_eq!(parse(&m), Some((123_456, 7)));
            stamp(&mut m, 99);
            set_seq(&mut m, 41, 1);
            assert_eq!(check(&m), Ok(()), "resealed");
            assert_eq!((parse(&m), seq_of(&m)), (Some((99, 7)), Some((41, 1))));
            // A UDP device's node patches the sid slot: the stamp is elsewhere.
            edge_proto::frame::patch_for_device(&mut m, 3, &[9; 16]).unwrap();
            assert_eq!((check(&m), parse(&m)), (Ok(()), Some((99, 7))));
        }
    }
}
