//! Injected disk faults: a shared handle the writer thread (and its sync
//! threads) consult before each write and each `fdatasync`, for testing
//! the monitor's detectors.
//!
//! One [`DiskFaults`] belongs to a [`DataDir`](crate::DataDir)
//! ([`DataDir::faults`](crate::DataDir::faults)); at most one fault is in
//! force at a time and a new one replaces it. A fault always has a time to
//! live and lifts by itself once it passes, so a forgotten fault heals.
//!
//! Delays are plain sleeps *inside* the timed regions — on the writer
//! thread before each write, on whichever thread runs an `fdatasync` (the
//! writer or one of its sync threads) before each sync — so appends wait
//! for them exactly as for a slow device, and the write and sync timings
//! they report include them.
//! Nothing about the bytes written changes: a delay cannot corrupt data.
//!
//! `error_rate` is only *held* here; the writer never fails a write because
//! of it. A failed write poisons a log (see `writer`), and a failed append
//! under a partition's Raft log is fatal to that Raft group, so injecting
//! errors at this level would turn a test fault into lasting damage. The
//! node instead refuses that fraction of client appends before anything is
//! written, using [`DiskFaults::roll_error`].
//!
//! The hot path (no fault) is one atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Longest delay accepted for one write or one sync.
pub const MAX_DISK_DELAY: Duration = Duration::from_secs(10);
/// Longest time to live of a fault.
pub const MAX_FAULT_TTL: Duration = Duration::from_secs(3600);

/// What a disk fault does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskFault {
    /// Slept before every `fdatasync` of the writer.
    pub fsync_delay: Duration,
    /// Slept before every write of the writer.
    pub write_delay: Duration,
    /// Fraction (0..=1) of client appends the node refuses; see the module
    /// docs for why storage itself never fails on it.
    pub error_rate: f64,
}

impl DiskFault {
    /// Checks the limits: delays at most [`MAX_DISK_DELAY`], a rate within
    /// 0..=1, and at least one effect.
    pub fn validate(&self) -> Result<(), String> {
        if self.fsync_delay > MAX_DISK_DELAY || self.write_delay > MAX_DISK_DELAY {
            return Err(format!(
                "delays must be at most {} ms",
                MAX_DISK_DELAY.as_millis()
            ));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("error_rate must be within 0..=1".into());
        }
        if self.fsync_delay.is_zero() && self.write_delay.is_zero() && self.error_rate == 0.0 {
            return Err("a disk fault needs fsync_delay_ms, write_delay_ms or error_rate".into());
        }
        Ok(())
    }
}

/// A fault in force, with when it lifts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveDiskFault {
    pub fault: DiskFault,
    pub expires_at: Instant,
    /// The same moment on the wall clock, for people and the monitor.
    pub expires_unix_ms: u64,
}

/// The disk fault of one data directory. See the module docs.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// True while a fault may be in force; lets the writer skip the lock.
    armed: AtomicBool,
    current: Mutex<Option<ActiveDiskFault>>,
    /// State of the xorshift generator behind [`DiskFaults::roll_error`].
    rng: AtomicU64,
}

impl DiskFaults {
    pub fn new() -> DiskFaults {
        DiskFaults::default()
    }

    /// Installs `fault` for `ttl` (capped at [`MAX_FAULT_TTL`]), replacing
    /// any fault in force. The caller validates `fault`.
    pub fn set(&self, fault: DiskFault, ttl: Duration) -> ActiveDiskFault {
        let ttl = ttl.min(MAX_FAULT_TTL);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let active = ActiveDiskFault {
            fault,
            expires_at: Instant::now() + ttl,
            expires_unix_ms: u64::try_from((unix_now + ttl).as_millis()).unwrap_or(u64::MAX),
        };
        *self.current.lock() = Some(active);
        self.armed.store(true, Ordering::Release);
        active
    }

    /// Lifts the fault in force, if any; true if there was one.
    pub fn clear(&self) -> bool {
        let had = self.current.lock().take().is_some();
        self.armed.store(false, Ordering::Release);
        had
    }

    /// The fault in force now; an expired one is lifted first.
    pub fn current(&self) -> Option<ActiveDiskFault> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut current = self.current.lock();
        if current.is_some_and(|f| f.expires_at <= Instant::now()) {
            *current = None;
            self.armed.store(false, Ordering::Release);
        }
        *current
    }

    /// How long to wait before the next `fdatasync`.
    pub fn fsync_delay(&self) -> Duration {
        self.current()
            .map_or(Duration::ZERO, |f| f.fault.fsync_delay)
    }

    /// How long to wait before the next write.
    pub fn write_delay(&self) -> Duration {
        self.current()
            .map_or(Duration::ZERO, |f| f.fault.write_delay)
    }

    /// Tosses a coin with the fault's `error_rate`: true means "fail this
    /// append". A cheap xorshift is enough for a test fault and spares the
    /// storage crate a random-number dependency.
    pub fn roll_error(&self) -> bool {
        let Some(f) = self.current() else {
            return false;
        };
        if f.fault.error_rate <= 0.0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        // The top 53 bits as a uniform float in 0..1.
        let coin = (x >> 11) as f64 / (1u64 << 53) as f64;
        coin < f.fault.error_rate
    }
}

/// Sleeps `d` if it is not zero.
pub(crate) fn pause(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(ms: u64) -> DiskFault {
        DiskFault {
            fsync_delay: Duration::from_millis(ms),
            ..DiskFault::default()
        }
    }

    #[test]
    fn validation_needs_an_effect_and_keeps_limits() {
        assert!(DiskFault::default().validate().is_err());
        assert!(delay(5).validate().is_ok());
        assert!(delay(10_001).validate().is_err());
        let rate = |r| DiskFault {
            error_rate: r,
            ..DiskFault::default()
        };
        assert!(rate(0.5).validate().is_ok());
        assert!(rate(1.5).validate().is_err());
        assert!(rate(f64::NAN).validate().is_err());
    }

    #[test]
    fn set_clear_and_ttl() {
        let f = DiskFaults::new();
        assert_eq!(f.fsync_delay(), Duration::ZERO);
        f.set(delay(7), Duration::from_secs(60));
        assert_eq!(f.fsync_delay(), Duration::from_millis(7));
        assert!(f.clear());
        assert_eq!(f.current(), None);
        f.set(delay(7), Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(f.current(), None, "lifted by its TTL");
        assert!(!f.clear());
    }

    #[test]
    fn error_coin_follows_the_rate() {
        let f = DiskFaults::new();
        assert!(!f.roll_error());
        let rate = |r| DiskFault {
            error_rate: r,
            ..DiskFault::default()
        };
        f.set(rate(1.0), Duration::from_secs(60));
        assert!((0..100).all(|_| f.roll_error()));
        f.set(rate(0.3), Duration::from_secs(60));
        let hits = (0..10_000).filter(|_| f.roll_error()).count();
        assert!((2000..4000).contains(&hits), "hits {hits}");
    }
}
