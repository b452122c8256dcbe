//! CRC-8 of the application message format (docs/protocol.md §2.4).
//!
//! Polynomial 0x31 (x⁸+x⁵+x⁴+1, written 0x131 in the device protocol), initial value 0,
//! processed MSB first, no reflection, no final XOR. The table is built at compile time.
//!
//! This module only computes checksums; which bytes a header or body check covers is
//! decided by [`crate::frame`].

/// The generator polynomial without its x⁸ term.
pub const POLY: u8 = 0x31;

/// 256-entry lookup table: `TABLE[b]` is the register after feeding byte `b` into a zero register.
pub const TABLE: [u8; 256] = build_table();

const fn build_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut byte = 0usize;
    while byte < 256 {
        let mut reg = byte as u8;
        let mut bit = 0;
        while bit < 8 {
            reg = if reg & 0x80 != 0 {
                (reg << 1) ^ POLY
            } else {
                reg << 1
            };
            bit += 1;
        }
        table[byte] = reg;
        byte += 1;
    }
    table
}

/// The CRC-8 of `data` in one call.
#[must_use]
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc = Crc8::new();
    crc.update(data);
    crc.finish()
}

/// Incremental CRC-8: feed several slices, then [`Crc8::finish`].
///
/// `Crc8::new().update(a).update(b).finish() == crc8(&[a, b].concat())`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc8 {
    reg: u8,
}

impl Crc8 {
    /// A register at the initial value 0.
    #[must_use]
    pub const fn new() -> Self {
        Self { reg: 0 }
    }

    /// Feeds `data` into the register; returns `self` so calls can be chained.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        for &byte in data {
            self.reg = TABLE[usize::from(self.reg ^ byte)];
        }
        self
    }

    /// The checksum of everything fed so far (the register is left unchanged).
    #[must_use]
    pub const fn finish(&self) -> u8 {
        self.reg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent bit-by-bit reference, straight from the spec's prose.
    fn reference(data: &[u8]) -> u8 {
        let mut reg: u8 = 0;
        for &byte in data {
            reg ^= byte;
            for _ in 0..8 {
                let out = reg & 0x80;
                reg <<= 1;
                if out != 0 {
                    reg ^= 0x31;
                }
            }
        }
        reg
    }

    /// Deterministic byte generator (xorshift) so the test needs no randomness crate.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn matches_bitwise_reference_on_many_inputs() {
        for seed in 0..2_000u64 {
            let data = bytes(seed, (seed % 300) as usize);
            assert_eq!(crc8(&data), reference(&data), "seed {seed}");
        }
    }

    #[test]
    fn every_single_byte_matches_reference() {
        for b in 0..=255u8 {
            assert_eq!(crc8(&[b]), reference(&[b]));
            assert_eq!(TABLE[usize::from(b)], reference(&[b]));
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data = bytes(7, 500);
        for split in [0, 1, 31, 250, 499, 500] {
            let (a, b) = data.split_at(split);
            let mut crc = Crc8::new();
            crc.update(a).update(b);
            assert_eq!(crc.finish(), crc8(&data), "split {split}");
        }
    }

    #[test]
    fn known_values() {
        let check = |data: &[u8], expect: u8| assert_eq!(crc8(data), expect, "{data:02x?}");
        check(b"", 0);
        check(&[0], 0);
        check(&[1], 0x31);
        // The CRC-8/0x31 (init 0, no xorout) check value of "123456789".
        check(b"123456789", reference(b"123456789"));
        // Header of the captured 0xE0 request: crc8 of bytes 0..32 is 0x35.
        let hdr = [
            0x02, 0x00, 0x01, 0x00, 0x4e, 0x81, 0x05, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x18, 0x00,
        ];
        check(&hdr, 0x35);
    }
}
