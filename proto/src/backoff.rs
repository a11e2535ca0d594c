//! Jittered exponential backoff for reconnects ("full jitter" over a doubling ceiling), reset
//! after a session that stayed up long enough.

use std::time::Duration;

use rand::Rng;

/// Reconnect pacing state.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Start at `initial`, never exceed `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniformly random in `[ceiling/2, ceiling]`, where the
    /// ceiling doubles each attempt up to `max`. Half the ceiling is kept as a floor so delays
    /// visibly grow while a fleet of agents still spreads out.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let lo = ceiling.as_millis() as u64 / 2;
        let hi = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(lo..=hi.max(lo)))
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert!(d[0] >= 50 && d[0] <= 100, "{d:?}");
        assert!(d[3] >= 400 && d[3] <= 800, "{d:?}");
        assert!(d[7] >= 500 && d[7] <= 1000, "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
        let samples: std::collections::HashSet<u128> = (0..50)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(10));
                b.next_delay().as_millis()
            })
            .collect();
        assert!(samples.len() > 10, "delays must be jittered: {samples:?}");
    }
}
