//! Comparing secrets, and reading them off the wire: constant-time equality (login
//! signatures, bearer tokens) and the token of an `Authorization: Bearer` header value.
//! Pure; used by the login check, the node's admin endpoint and the msgbus's `/usermap`.

/// Whether `given` equals `expected`, without an early exit: the time taken depends only
/// on the lengths, never on where the bytes differ.
#[must_use]
pub fn eq(expected: &[u8], given: &[u8]) -> bool {
    let length_differs = u8::from(given.len() != expected.len());
    let mut diff = 0u8;
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff | length_differs) == 0
}

/// The token of an `Authorization` header value of the `Bearer` scheme (the scheme name
/// in any case, surrounding blanks trimmed); `None` for any other scheme.
#[must_use]
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| value[7..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_and_lengths() {
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"ab"));
        assert!(!eq(b"abc", b"abcd"));
        assert!(eq(b"", b""));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(" Bearer  t0k "), Some("t0k"));
        assert_eq!(bearer("bearer t0k"), Some("t0k"));
        assert_eq!(bearer("Basic czNjcmV0"), None);
        assert_eq!(bearer("Bear"), None);
    }
}
