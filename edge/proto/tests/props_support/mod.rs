//! Input strategies shared by the `props_*` property tests: arbitrary bytes and mutations
//! of the golden packets (bit flips, byte sets, truncation, extension, body-length edits,
//! optionally re-sealed so a mutation gets past the checks and reaches deeper code).
#![allow(dead_code)]

use std::sync::OnceLock;

use edge_proto::crc::crc8;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::common;

/// Cases per decoder property.
pub const DECODER_CASES: u32 = 100_000;
/// Cases per round-trip property.
pub const ROUND_TRIP_CASES: u32 = 20_000;

/// Every captured application packet: UDP datagrams (both runs) and the WS payloads of
/// the relayed and server-built messages.
pub fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut out = Vec::new();
        for v in common::all() {
            let runs = std::iter::once(&v.bytes).chain(v.other_run.as_ref());
            if v.transport == "udp" {
                out.extend(runs.filter(|b| !b.is_empty()).cloned());
            } else if v.name.starts_with("relay_") || v.name.starts_with("push_") {
                out.extend(runs.map(|b| common::ws_payload(b)));
            }
        }
        assert!(out.len() >= 20, "too few seeds: {}", out.len());
        out
    })
}

/// One edit of a packet.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Set the body length field to an edge or random value.
    BodyLen(BodyLenEdit),
}

/// Body-length values worth trying.
#[derive(Debug, Clone, Copy)]
pub enum BodyLenEdit {
    Zero,
    Actual,
    Plus(u8),
    Minus(u8),
    Max,
    Value(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let body_len = prop_oneof![
        Just(BodyLenEdit::Zero),
        Just(BodyLenEdit::Actual),
        any::<u8>().prop_map(BodyLenEdit::Plus),
        any::<u8>().prop_map(BodyLenEdit::Minus),
        Just(BodyLenEdit::Max),
        any::<u16>().prop_map(BodyLenEdit::Value),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        2 => body_len.prop_map(Mutation::BodyLen),
    ]
}

/// Data-header offset the bytes claim (forward if opcode 3, else direct).
pub fn data_offset(buf: &[u8]) -> usize {
    if buf.first().is_some_and(|b| b & 7 == 3) {
        64
    } else {
        24
    }
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip(i, bit) if !buf.is_empty() => {
            let at = i.index(buf.len());
            buf[at] ^= 1 << bit;
        }
        Mutation::Set(i, v) if !buf.is_empty() => {
            let at = i.index(buf.len());
            buf[at] = *v;
        }
        Mutation::Truncate(i) => buf.truncate(i.index(buf.len() + 1)),
        Mutation::Extend(more) => buf.extend_from_slice(more),
        Mutation::BodyLen(edit) => {
            let at = data_offset(buf) + 6;
            if buf.len() < at + 2 {
                return;
            }
            let actual = buf.len().saturating_sub(at + 6) as u16;
            let value = match edit {
                BodyLenEdit::Zero => 0,
                BodyLenEdit::Actual => actual,
                BodyLenEdit::Plus(d) => actual.wrapping_add(u16::from(*d)),
                BodyLenEdit::Minus(d) => actual.wrapping_sub(u16::from(*d)),
                BodyLenEdit::Max => u16::MAX,
                BodyLenEdit::Value(v) => *v,
            };
            buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
        _ => {}
    }
}

/// Recomputes the header check, and the body check over the *declared* body clamped to
/// the bytes present, so that length edits reach the length checks.
pub fn reseal(buf: &mut [u8]) {
    let off = data_offset(buf);
    if buf.len() < off + 12 {
        return;
    }
    buf[off + 8] = crc8(&buf[..off + 8]);
    let declared = usize::from(u16::from_le_bytes([buf[off + 6], buf[off + 7]]));
    let end = (off + 12 + declared).min(buf.len());
    buf[off + 9] = crc8(&buf[off + 10..end]);
}

/// A golden packet after 0–4 mutations, re-sealed half of the time.
pub fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (any::<Index>(), vec(mutation(), 0..5), any::<bool>()).prop_map(|(seed, muts, seal)| {
        let seeds = seeds();
        let mut buf = seeds[seed.index(seeds.len())].clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        if seal {
            reseal(&mut buf);
        }
        buf
    })
}

/// Arbitrary bytes (one in four) or a mutated golden packet.
pub fn packet_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => vec(any::<u8>(), 0..120), 3 => mutated()]
}
