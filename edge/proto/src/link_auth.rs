//! The authenticated opening of a comet ↔ msgbus link (`--link-secret`): a mutual
//! challenge–response with HMAC-SHA256 over a fresh nonce from each side, before any
//! frame is accepted. Pure: the caller brings the nonces (from the OS's random source),
//! the bytes and the deadlines.
//!
//! ```text
//!   comet  → msgbus   HELLO      0xA0|kind · Nc (16)                          17 bytes
//!   msgbus → comet    CHALLENGE  0xA0|kind · Nm (16) · HMAC(k, "msgbus"·kind·Nc·Nm)  49
//!   comet  → msgbus   PROOF      HMAC(k, "comet"·kind·Nc·Nm)                   32 bytes
//! ```
//!
//! Each side proves it knows the secret over both nonces, so a recorded opening replays
//! nowhere, and the labels differ by direction, so neither tag can be reflected back. The
//! original's opening (one byte, 0 or 1, echoed) stays as it is for links without a
//! secret; its first byte never has the 0xA0 bits, so the two cannot be confused.
//!
//! Does **not** authenticate the frames that follow (the link is neither encrypted nor
//! MACed per frame: an attacker who can rewrite the TCP stream itself can still inject).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::link::{CometKind, LinkError};

/// Bits of the first byte that ask for the authenticated opening (low bit: the kind).
pub const AUTH_BITS: u8 = 0xA0;
/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes of the comet's hello.
pub const HELLO_LEN: usize = 1 + NONCE_LEN;
/// Bytes of the msgbus's challenge.
pub const CHALLENGE_LEN: usize = 1 + NONCE_LEN + TAG_LEN;
/// Bytes of the comet's proof.
pub const PROOF_LEN: usize = TAG_LEN;

const MSGBUS_LABEL: &[u8] = b"cloudsocket link v1 msgbus";
const COMET_LABEL: &[u8] = b"cloudsocket link v1 comet";

/// How a link opened, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The original's one-byte opening: no secret.
    Plain(CometKind),
    /// The authenticated opening: a nonce follows.
    Authenticated(CometKind),
}

/// Reads the first byte of a link.
pub fn opening(first: u8) -> Result<Opening, LinkError> {
    if first & !1 == AUTH_BITS {
        return Ok(Opening::Authenticated(CometKind::from_handshake_byte(
            first & 1,
        )?));
    }
    CometKind::from_handshake_byte(first).map(Opening::Plain)
}

/// The comet's hello.
pub fn hello(kind: CometKind, comet_nonce: &[u8; NONCE_LEN]) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[0] = AUTH_BITS | kind.handshake_byte();
    out[1..].copy_from_slice(comet_nonce);
    out
}

fn tag(secret: &[u8], label: &[u8], kind: CometKind, nc: &[u8], nm: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(&[kind.handshake_byte()]);
    mac.update(nc);
    mac.update(nm);
    mac
}

/// The msgbus's challenge to a hello (`hello` is the comet's nonce, after the first byte).
pub fn challenge(
    secret: &[u8],
    kind: CometKind,
    comet_nonce: &[u8; NONCE_LEN],
    bus_nonce: &[u8; NONCE_LEN],
) -> [u8; CHALLENGE_LEN] {
    let mut out = [0u8; CHALLENGE_LEN];
    out[0] = AUTH_BITS | kind.handshake_byte();
    out[1..=NONCE_LEN].copy_from_slice(bus_nonce);
    let mac = tag(secret, MSGBUS_LABEL, kind, comet_nonce, bus_nonce);
    out[1 + NONCE_LEN..].copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The comet checks the msgbus's challenge; its proof, or [`LinkError::Unauthenticated`].
pub fn answer(
    secret: &[u8],
    kind: CometKind,
    comet_nonce: &[u8; NONCE_LEN],
    challenge: &[u8; CHALLENGE_LEN],
) -> Result<[u8; PROOF_LEN], LinkError> {
    if challenge[0] != AUTH_BITS | kind.handshake_byte() {
        return Err(LinkError::Unauthenticated);
    }
    let bus_nonce = &challenge[1..=NONCE_LEN];
    tag(secret, MSGBUS_LABEL, kind, comet_nonce, bus_nonce)
        .verify_slice(&challenge[1 + NONCE_LEN..])
        .map_err(|_| LinkError::Unauthenticated)?;
    let mac = tag(secret, COMET_LABEL, kind, comet_nonce, bus_nonce);
    Ok(mac.finalize().into_bytes().into())
}

/// The msgbus checks the comet's proof (in constant time).
pub fn verify_proof(
    secret: &[u8],
    kind: CometKind,
    comet_nonce: &[u8; NONCE_LEN],
    bus_nonce: &[u8; NONCE_LEN],
    proof: &[u8; PROOF_LEN],
) -> Result<(), LinkError> {
    tag(secret, COMET_LABEL, kind, comet_nonce, bus_nonce)
        .verify_slice(proof)
        .map_err(|_| LinkError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NC: [u8; NONCE_LEN] = [1; NONCE_LEN];
    const NM: [u8; NONCE_LEN] = [2; NONCE_LEN];

    #[test]
    fn both_sides_with_the_secret_agree() {
        for kind in [CometKind::Ws, CometKind::Udp] {
            let h = hello(kind, &NC);
            assert_eq!(opening(h[0]), Ok(Opening::Authenticated(kind)));
            let c = challenge(b"secret", kind, &NC, &NM);
            let proof = answer(b"secret", kind, &NC, &c).unwrap();
            assert_eq!(verify_proof(b"secret", kind, &NC, &NM, &proof), Ok(()));
        }
    }

    #[test]
    fn a_wrong_secret_kind_nonce_or_reflection_fails() {
        let c = challenge(b"secret", CometKind::Ws, &NC, &NM);
        let bad = Err(LinkError::Unauthenticated);
        assert_eq!(answer(b"other", CometKind::Ws, &NC, &c), bad);
        assert_eq!(answer(b"secret", CometKind::Udp, &NC, &c), bad);
        assert_eq!(answer(b"secret", CometKind::Ws, &NM, &c), bad);
        let proof = answer(b"secret", CometKind::Ws, &NC, &c).unwrap();
        let refused = Err(LinkError::Unauthenticated);
        assert_eq!(
            verify_proof(b"other", CometKind::Ws, &NC, &NM, &proof),
            refused
        );
        assert_eq!(
            verify_proof(b"secret", CometKind::Ws, &NC, &NC, &proof),
            refused
        );
        // The msgbus's own tag is not a comet proof.
        let reflected: [u8; TAG_LEN] = c[1 + NONCE_LEN..].try_into().unwrap();
        assert_eq!(
            verify_proof(b"secret", CometKind::Ws, &NC, &NM, &reflected),
            refused
        );
    }

    #[test]
    fn plain_and_unknown_openings() {
        assert_eq!(opening(0), Ok(Opening::Plain(CometKind::Ws)));
        assert_eq!(opening(1), Ok(Opening::Plain(CometKind::Udp)));
        assert_eq!(opening(2), Err(LinkError::Handshake(2)));
        assert_eq!(opening(0xA2), Err(LinkError::Handshake(0xA2)));
    }
}
