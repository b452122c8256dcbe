//! Rate-limited warnings: a place that may warn over and over (a refusal a stranger can
//! trigger, a slow turn) asks a [`Throttle`] first and logs at most one line a second,
//! carrying how many were held back. Pure: time comes in as an argument.
//!
//! Owns nothing else; what is worth a line is decided where it happens.

use std::time::{Duration, Instant};

/// Lets a repeated warning through at most once per second; counts the ones held back.
#[derive(Debug)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// Nothing logged yet.
    pub const fn new() -> Self {
        Throttle {
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when a line may be logged now.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_held_back() {
        let mut t = Throttle::new();
        let start = Instant::now();
        assert_eq!(t.admit(start), Some(0));
        assert_eq!(t.admit(start + Duration::from_millis(10)), None);
        assert_eq!(t.admit(start + Duration::from_millis(20)), None);
        assert_eq!(t.admit(start + Duration::from_secs(2)), Some(2));
    }
}
