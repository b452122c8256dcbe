//! The device session id: 16 raw bytes on the wire (request bodies, the forward packet's
//! sid slot), canonical lowercase 8-4-4-4-12 text in Redis keys (`sess:dev:<sid>`).
//! Generating sids (randomness) is the shell's job, not this module's.

use core::fmt;
use core::str::FromStr;

/// A device session id: 16 raw bytes on the wire, canonical lowercase 8-4-4-4-12 text in
/// Redis keys. The original's sids are random bytes printed as a UUID (not strictly v4),
/// so no version or variant bits are checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sid(pub [u8; 16]);

/// Length of a sid's text form.
pub const SID_TEXT_LEN: usize = 36;

/// Why text is not a sid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SidParseError {
    /// Not 36 bytes long.
    #[error("sid text must be 36 bytes, got {0}")]
    Length(usize),
    /// Byte `0` is not the expected `-` or hex digit.
    #[error("invalid sid text at byte {0}")]
    Invalid(usize),
}

/// A sid's text, on the stack (for building Redis keys without allocating).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SidText([u8; SID_TEXT_LEN]);

impl SidText {
    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for SidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

const fn is_hyphen_at(i: usize) -> bool {
    matches!(i, 8 | 13 | 18 | 23)
}

impl Sid {
    /// The sid in the first 16 bytes of `bytes`, if there are that many.
    #[must_use]
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        bytes.first_chunk::<16>().map(|b| Self(*b))
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The canonical lowercase text `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    #[must_use]
    pub fn text(&self) -> SidText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; SID_TEXT_LEN];
        let mut nibbles = self.0.iter().flat_map(|b| [b >> 4, b & 0x0f]);
        for (i, slot) in out.iter_mut().enumerate() {
            if !is_hyphen_at(i) {
                let nibble = nibbles.next().unwrap_or_default();
                *slot = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        SidText(out)
    }

    /// Parses the 36-byte 8-4-4-4-12 text (hex digits of either case).
    pub fn parse_text(text: &str) -> Result<Self, SidParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != SID_TEXT_LEN {
            return Err(SidParseError::Length(bytes.len()));
        }
        let mut out = [0u8; 16];
        let mut digits = 0usize;
        for (i, &c) in bytes.iter().enumerate() {
            if is_hyphen_at(i) {
                if c != b'-' {
                    return Err(SidParseError::Invalid(i));
                }
                continue;
            }
            let nibble = char::from(c)
                .to_digit(16)
                .ok_or(SidParseError::Invalid(i))?;
            if let Some(byte) = out.get_mut(digits / 2) {
                *byte = (*byte << 4) | nibble as u8;
            }
            digits += 1;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

impl FromStr for Sid {
    type Err = SidParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_text(text)
    }
}
