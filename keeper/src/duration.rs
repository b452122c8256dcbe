//! Go's `time.ParseDuration` syntax, for the original's `-d 10s` style flags.
//!
//! Owns: [`parse_go_duration`] — a sequence of decimal numbers (with an optional fraction)
//! each followed by a unit `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`; `0` alone is allowed.
//! Does **not** accept negative durations (no flag here means "negative"), nor anything
//! beyond `Duration`'s range.

use std::time::Duration;

use thiserror::Error;

/// A duration string that is not Go syntax.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid duration {0:?} (Go syntax, e.g. 10s, 500ms, 1m30s)")]
pub struct DurationError(pub String);

/// Parses `10s`, `500ms`, `1m30s`, `1.5h`, `0`.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let error = || DurationError(text.to_owned());
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(error());
    }
    let mut rest = s;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(error)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(error()),
        };
        total_ns = total_ns
            .checked_add(scaled(number, unit_ns).ok_or_else(error)?)
            .ok_or_else(error)?;
        rest = tail;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| error())?;
    // The remainder is below 10^9, so it fits.
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits, optionally `.` and digits; at least one digit) times `unit_ns`,
/// the fraction truncated to whole nanoseconds like Go.
fn scaled(number: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(unit_ns)?;
    let mut scale = unit_ns;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        value = value.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Option<Duration>) {
        assert_eq!(parse_go_duration(text).ok(), expect, "{text:?}");
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        check("10s", Some(ms(10_000)));
        check("500ms", Some(ms(500)));
        check("1m", Some(ms(60_000)));
        check("1h30m", Some(ms(5_400_000)));
        check("1.5s", Some(ms(1500)));
        check(".5s", Some(ms(500)));
        check("1.s", Some(ms(1000)));
        check("2us", Some(Duration::from_micros(2)));
        check("2µs", Some(Duration::from_micros(2)));
        check("3ns", Some(Duration::from_nanos(3)));
        check("1m0.5s", Some(ms(60_500)));
        check("0", Some(Duration::ZERO));
        check("+5s", Some(ms(5000)));
        check(" 5s ", Some(ms(5000)));
        check("1.0000000001s", Some(Duration::new(1, 0)));
    }

    #[test]
    fn not_go_durations() {
        for bad in [
            "",
            "10",
            "s",
            "-1s",
            "1x",
            "1.2.3s",
            ".s",
            "1sm",
            "5 s",
            "1d",
            "99999999999999999999h",
        ] {
            check(bad, None);
        }
    }
}
