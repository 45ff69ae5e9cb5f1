//! Raw events (opt-in): which kinds, and how many per second (a token
//! bucket whose burst is one second's worth).

use std::time::Instant;

/// Kinds and rate of `export.otlp.raw_events`.
#[derive(Debug)]
pub struct RawFilter {
    /// Event kinds (fdr.v1 numbers) exported; empty: all.
    kinds: Vec<i32>,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl RawFilter {
    /// `kinds` by number (names resolved by the caller).
    pub fn new(kinds: Vec<i32>, per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        RawFilter {
            kinds,
            per_second,
            tokens: per_second,
            at: Instant::now(),
        }
    }

    /// Whether events of `kind` are exported at all.
    pub fn wants(&self, kind: i32) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// Takes a token: false when the rate is exceeded.
    pub fn admit(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kinds_and_rate() {
        let mut f = RawFilter::new(vec![2], 10);
        assert!(f.wants(2) && !f.wants(3));
        assert!(RawFilter::new(vec![], 1).wants(7));
        let t = Instant::now();
        let burst = (0..100).filter(|_| f.admit(t)).count();
        assert_eq!(burst, 10, "a burst of one second's worth");
        assert!(!f.admit(t));
        assert!(f.admit(t + Duration::from_millis(150)), "refilled at 10/s");
    }
}
