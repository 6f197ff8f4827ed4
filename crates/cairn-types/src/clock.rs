//! Wall-clock time as the wire and the logs carry it: since the Unix
//! epoch, in whole microseconds (entry timestamps, lag ages) or
//! milliseconds (snapshots, findings, fault deadlines). A clock set before
//! 1970 reads 0; one past the integer's range saturates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    }
}
