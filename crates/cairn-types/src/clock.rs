//! Wall-clock time as the wire and the logs carry it: since the Unix
//! epoch, in whole microseconds (entry timestamps, lag ages) or
//! milliseconds (snapshots, findings, fault deadlines). A clock set before
//! 1970 reads 0; one past the integer's range saturates.
//!
//! The free functions read the system clock. Code whose stamps tests need
//! to control takes a [`Clock`] instead — one `now` — with
//! [`SystemClock`] in production and [`ManualClock`] in tests, which moves
//! only when told. Only wall-clock stamps go through it; timers, deadlines
//! and elapsed times use tokio's monotonic clock, which tests control with
//! `tokio::time::pause`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, since the Unix epoch.
    fn now(&self) -> Duration;

    /// [`Clock::now`] in microseconds (saturating).
    fn unix_us(&self) -> i64 {
        i64::try_from(self.now().as_micros()).unwrap_or(i64::MAX)
    }

    /// [`Clock::now`] in milliseconds (saturating).
    fn unix_ms(&self) -> u64 {
        u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The system's clock (what the free functions read).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        since_epoch()
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until set or advanced; clones share it.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now` (since the Unix epoch).
    pub fn new(now: Duration) -> Self {
        let c = Self::default();
        c.set(now);
        c
    }

    pub fn set(&self, now: Duration) {
        let us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        self.micros.store(us, Ordering::Relaxed);
    }

    pub fn advance(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(us, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Microseconds since the Unix epoch, now.
pub fn unix_us() -> i64 {
    i64::try_from(since_epoch().as_micros()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    unix_ms_in(Duration::ZERO)
}

/// Milliseconds since the Unix epoch, `after` from now.
pub fn unix_ms_in(after: Duration) -> u64 {
    u64::try_from((since_epoch() + after).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let (us, ms) = (unix_us(), unix_ms());
        assert!((us / 1000 - ms as i64).abs() < 1000, "{us} µs vs {ms} ms");
        assert!(unix_ms_in(Duration::from_secs(10)) >= ms + 10_000);
        let system = SystemClock.unix_ms();
        assert!(system >= ms && system < ms + 1000, "{system} vs {ms}");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::new(Duration::from_secs(1_000));
        let shared: Arc<dyn Clock> = Arc::new(c.clone());
        assert_eq!(shared.unix_ms(), 1_000_000);
        c.advance(Duration::from_micros(1_500));
        assert_eq!(shared.unix_us(), 1_000_001_500);
        assert_eq!(shared.unix_ms(), 1_000_001);
        c.set(Duration::ZERO);
        assert_eq!(shared.now(), Duration::ZERO);
    }
}
