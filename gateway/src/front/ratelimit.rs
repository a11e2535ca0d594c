//! Request rate limits per registration and per API key: a token bucket per key (refilled at
//! `rate` per second, holding at most `burst`), so one noisy caller or customer cannot take the
//! gateway from the others. Only authenticated identities get a bucket, so the map is bounded
//! by the registrations and keys in the store.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One family of buckets (per registration, or per API key).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`; a rate of 0 admits everything.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Take one token for `key`, or say how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        // The guard is dropped before returning; nothing awaits while holding it.
        let mut b = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.duration_since(b.last).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_burst_then_refuses_and_keys_are_independent() {
        let l = RateLimiter::new(1.0, 3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(l.check("b").is_ok(), "another key has its own bucket");
        assert!(RateLimiter::new(0.0, 1).check("a").is_ok());
    }
}
