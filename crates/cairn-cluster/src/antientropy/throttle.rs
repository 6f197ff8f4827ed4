//! A node-wide byte-rate limit for anti-entropy reads, so a scan of a large
//! log cannot starve the writes and reads sharing the disk.
//!
//! Debt-based: a caller takes the bytes it is about to read and sleeps for
//! as long as the bucket is in debt. Every scan and every digest request
//! this node answers draws on the same bucket, so the node's total
//! anti-entropy reading stays under the rate whatever runs concurrently.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: u64,
    /// Tokens available (negative: debt) as of the instant.
    state: Mutex<(f64, Instant)>,
}

/// At most this much reading is allowed in a burst after an idle period.
const BURST: Duration = Duration::from_millis(100);

impl RateLimiter {
    /// `bytes_per_sec == 0` means unlimited.
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            bytes_per_sec,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// How long the caller must wait before reading `bytes` (taking them
    /// from the bucket now).
    pub fn take(&self, bytes: u64) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_sec as f64;
        let mut state = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * rate;
        state.0 = (state.0 + refill).min(rate * BURST.as_secs_f64()) - bytes as f64;
        state.1 = now;
        if state.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.0 / rate)
        }
    }

    /// [`RateLimiter::take`] and sleep the thread for the wait. Only for
    /// blocking threads.
    pub fn take_blocking(&self, bytes: u64) {
        let wait = self.take(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let r = RateLimiter::new(0);
        assert_eq!(r.take(u64::MAX / 2), Duration::ZERO);
    }

    #[test]
    fn debt_turns_into_a_proportional_wait() {
        let r = RateLimiter::new(1_000_000);
        // A fresh bucket holds nothing: 500 kB at 1 MB/s is about 0.5 s.
        let wait = r.take(500_000);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // More debt adds to the wait.
        let more = r.take(500_000);
        assert!(more > Duration::from_millis(900), "{more:?}");
    }
}
