//! Mutations of golden vectors shared by the property tests of the text, WebSocket and
//! link codecs: bit flips, byte sets, truncations, extensions, removals and length edits.
#![allow(dead_code)]

use proptest::prelude::*;

// --- mutations of golden vectors (bit flips, truncations, extensions, length edits) ---

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Remove(usize),
    SetU16(usize, u16),
    SetU32(usize, u32),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let edge_u32 = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 0u32..300, any::<u32>()];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Mutation::Set(at, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        any::<usize>().prop_map(Mutation::Remove),
        (
            any::<usize>(),
            prop_oneof![Just(0u16), Just(1), Just(u16::MAX), 0u16..40]
        )
            .prop_map(|(at, v)| Mutation::SetU16(at, v)),
        (prop_oneof![Just(0usize), any::<usize>()], edge_u32)
            .prop_map(|(at, v)| Mutation::SetU32(at, v)),
    ]
}

pub fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len().max(1);
    match mutation {
        Mutation::Flip(at, bit) => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set(at, v) => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *v;
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % (n + 1)),
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::Remove(at) => {
            if !bytes.is_empty() {
                bytes.remove(at % n);
            }
        }
        Mutation::SetU16(at, v) => {
            let at = at % n;
            for (i, b) in v.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        Mutation::SetU32(at, v) => {
            let at = at % n;
            for (i, b) in v.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
    }
}

pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..4),
    )
        .prop_map(|(mut bytes, muts)| {
            for m in &muts {
                apply(&mut bytes, m);
            }
            bytes
        })
}

pub fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        mutated(seeds)
    ]
}
