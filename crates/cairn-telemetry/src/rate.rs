//! Rate math over cumulative counters.

/// Per-second rate of a cumulative counter between two readings.
///
/// A counter that went backwards was reset (a process restart, a device
/// that reappeared): like Prometheus' `rate()`, the new reading is taken as
/// the increase since the reset. An empty or negative interval has no rate.
pub fn counter_rate(previous: u64, current: u64, seconds: f64) -> Option<f64> {
    if seconds <= 0.0 || !seconds.is_finite() {
        return None;
    }
    Some(counter_delta(previous, current) as f64 / seconds)
}

/// Increase of a cumulative counter, treating a decrease as a reset.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        current
    }
}

/// Replication lag of one follower.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lag {
    /// Entries the leader has that the follower does not.
    pub entries: u64,
    /// Age of the oldest entry the follower does not have; 0 when caught up.
    pub seconds: f64,
}

/// Lag of a follower that holds everything below `follower_end` when the
/// leader holds everything below `leader_end`. `oldest_missing_appended_us`
/// is when the leader appended entry `follower_end` (the first one missing).
///
/// Lag in seconds is what an operator feels: a follower 10,000 entries behind
/// on a busy stream may be 5 ms stale, one 3 entries behind on a quiet stream
/// may be an hour stale.
///
/// ```
/// use cairn_telemetry::rate::{replication_lag, Lag};
/// // Follower has offsets < 90, leader < 100; offset 90 was appended 2.5 s ago.
/// let lag = replication_lag(100, 90, Some(7_500_000), 10_000_000);
/// assert_eq!(lag, Lag { entries: 10, seconds: 2.5 });
/// ```
pub fn replication_lag(
    leader_end: u64,
    follower_end: u64,
    oldest_missing_appended_us: Option<i64>,
    now_us: i64,
) -> Lag {
    let entries = leader_end.saturating_sub(follower_end);
    let seconds = match (entries, oldest_missing_appended_us) {
        (0, _) | (_, None) => 0.0,
        (_, Some(t)) => (now_us.saturating_sub(t)).max(0) as f64 / 1e6,
    };
    Lag { entries, seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_of_a_growing_counter() {
        assert_eq!(counter_rate(100, 300, 2.0), Some(100.0));
    }

    #[test]
    fn rate_after_a_reset_counts_from_zero() {
        assert_eq!(counter_rate(1_000, 40, 1.0), Some(40.0));
    }

    #[test]
    fn empty_interval_has_no_rate() {
        assert_eq!(counter_rate(1, 2, 0.0), None);
        assert_eq!(counter_rate(1, 2, f64::NAN), None);
    }

    #[test]
    fn caught_up_follower_has_no_lag_even_with_a_stale_timestamp() {
        assert_eq!(
            replication_lag(50, 50, Some(0), 1_000_000),
            Lag {
                entries: 0,
                seconds: 0.0
            }
        );
    }

    #[test]
    fn follower_ahead_of_a_new_leader_reports_zero_entries() {
        assert_eq!(replication_lag(50, 60, Some(0), 1_000_000).entries, 0);
    }

    #[test]
    fn clock_skew_never_gives_negative_lag() {
        assert_eq!(
            replication_lag(10, 5, Some(2_000_000), 1_000_000).seconds,
            0.0
        );
    }
}
