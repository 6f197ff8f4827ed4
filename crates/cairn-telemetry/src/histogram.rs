//! Latency histograms: lock-free on the hot path, mergeable, log-spaced.
//!
//! Recording is one atomic increment into a log-linear bucket array (the
//! `histogram` crate's `AtomicHistogram`: buckets grow geometrically with a
//! few linear sub-buckets each, so the relative error is bounded at
//! 2^-GROUPING_POWER ≈ 3% everywhere from 1 ns to 68 s) plus one atomic add
//! for the exact sum. Percentiles of an interval come from the difference of
//! two snapshots, never from averaging percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use histogram::{AtomicHistogram, Histogram};

const GROUPING_POWER: u8 = 5;
/// 2^36 ns ≈ 68.7 s: anything slower is clamped into the top bucket.
const MAX_VALUE_POWER: u8 = 36;
const MAX_VALUE_NS: u64 = (1 << MAX_VALUE_POWER) - 1;

/// A latency histogram in nanoseconds.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: AtomicHistogram,
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        LatencyHistogram {
            buckets: AtomicHistogram::new(GROUPING_POWER, MAX_VALUE_POWER)
                .expect("valid histogram config"),
            sum_ns: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_ns(d.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    #[inline]
    pub fn record_ns(&self, ns: u64) {
        let ns = ns.min(MAX_VALUE_NS);
        // Cannot fail: the value is clamped into range.
        let _ = self.buckets.increment(ns);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records `d` as `n` samples at the cost of one (e.g. one batch's
    /// time for each of the `n` requests it carries).
    #[inline]
    pub fn record_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = (d.as_nanos().min(u128::from(MAX_VALUE_NS))) as u64;
        // Cannot fail: the value is clamped into range.
        let _ = self.buckets.add(ns, n);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.load(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Bytes of memory the histogram holds (for the overhead budget).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.config().total_buckets() * std::mem::size_of::<u64>()
            + std::mem::size_of::<Self>()
    }
}

/// A point-in-time copy of a [`LatencyHistogram`]; cumulative since start
/// unless produced by [`HistogramSnapshot::since`].
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    buckets: Histogram,
    sum_ns: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            buckets: Histogram::new(GROUPING_POWER, MAX_VALUE_POWER)
                .expect("valid histogram config"),
            sum_ns: 0,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.as_slice().iter().sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// What was recorded between `earlier` and `self`. If a counter went
    /// backwards (the histogram was recreated), `self` is the whole interval.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        match self.buckets.checked_sub(&earlier.buckets) {
            Ok(buckets) if self.sum_ns >= earlier.sum_ns => HistogramSnapshot {
                buckets,
                sum_ns: self.sum_ns - earlier.sum_ns,
            },
            _ => self.clone(),
        }
    }

    /// Adds another histogram (e.g. another node's) into this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if let Ok(sum) = self.buckets.wrapping_add(&other.buckets) {
            self.buckets = sum;
            self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
        }
    }

    /// The `q`-quantile (0..=1), as the upper edge of its bucket (so it is
    /// never understated by more than the bucket width, ~3%). `None` when
    /// nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let q = q.clamp(0.0, 1.0);
        let bucket = self.buckets.quantile_bucket(q).ok()??;
        Some(Duration::from_nanos(bucket.end()))
    }

    /// Cumulative counts at each upper bound (in ns), for Prometheus `le`
    /// buckets. A bucket of ours counts towards a bound when it ends at or
    /// below it, so counts are exact at our bucket edges and conservative
    /// (never over-counted) in between.
    pub fn cumulative_counts(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds_ns.len()];
        for bucket in self.buckets.iter() {
            if bucket.count() == 0 {
                continue;
            }
            let first = bounds_ns.partition_point(|&b| b < bucket.end());
            for slot in &mut out[first..] {
                *slot += bucket.count();
            }
        }
        out
    }
}

/// Percentiles of one interval, in microseconds, for JSON snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
}

impl LatencySummary {
    pub fn of(h: &HistogramSnapshot) -> Self {
        let us = |q: f64| h.quantile(q).map(|d| d.as_secs_f64() * 1e6);
        let count = h.count();
        LatencySummary {
            count,
            mean_us: (count > 0).then(|| h.sum().as_secs_f64() * 1e6 / count as f64),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: us(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: Duration, expected_us: f64) -> bool {
        let a = actual.as_secs_f64() * 1e6;
        (a - expected_us).abs() <= expected_us * 0.04
    }

    #[test]
    fn percentiles_are_within_bucket_error() {
        let h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        assert!(
            within(s.quantile(0.5).unwrap(), 500.0),
            "{:?}",
            s.quantile(0.5)
        );
        assert!(
            within(s.quantile(0.99).unwrap(), 990.0),
            "{:?}",
            s.quantile(0.99)
        );
        assert!(within(s.quantile(1.0).unwrap(), 1000.0));
        assert_eq!(s.sum(), Duration::from_micros(500_500));
    }

    #[test]
    fn a_weighted_sample_counts_as_that_many() {
        let h = LatencyHistogram::new();
        h.record_n(Duration::from_micros(100), 9);
        h.record_n(Duration::from_micros(5), 0);
        h.record(Duration::from_millis(10));
        let s = h.snapshot();
        assert_eq!(s.count(), 10);
        assert_eq!(s.sum(), Duration::from_micros(900 + 10_000));
        assert!(within(s.quantile(0.9).unwrap(), 100.0));
        assert!(within(s.quantile(1.0).unwrap(), 10_000.0));
    }

    #[test]
    fn empty_interval_has_no_percentiles() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_millis(3));
        let a = h.snapshot();
        let b = h.snapshot();
        let delta = b.since(&a);
        assert_eq!(delta.count(), 0);
        assert_eq!(delta.quantile(0.99), None);
        assert_eq!(LatencySummary::of(&delta).mean_us, None);
    }

    #[test]
    fn interval_percentiles_ignore_earlier_samples() {
        let h = LatencyHistogram::new();
        for _ in 0..1000 {
            h.record(Duration::from_micros(10));
        }
        let before = h.snapshot();
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        let interval = h.snapshot().since(&before);
        assert_eq!(interval.count(), 10);
        assert!(within(interval.quantile(0.5).unwrap(), 50_000.0));
    }

    #[test]
    fn a_reset_histogram_yields_the_new_counts_not_garbage() {
        let old = LatencyHistogram::new();
        for _ in 0..5 {
            old.record(Duration::from_micros(100));
        }
        let earlier = old.snapshot();
        let fresh = LatencyHistogram::new();
        fresh.record(Duration::from_micros(7));
        let delta = fresh.snapshot().since(&earlier);
        assert_eq!(delta.count(), 1);
    }

    #[test]
    fn merging_two_nodes_gives_the_percentile_of_the_union() {
        let a = LatencyHistogram::new();
        let b = LatencyHistogram::new();
        for _ in 0..90 {
            a.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            b.record(Duration::from_millis(10));
        }
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 100);
        // p95 lands in b's slow samples: an average of the two p95s would not.
        assert!(within(merged.quantile(0.95).unwrap(), 10_000.0));
    }

    #[test]
    fn cumulative_counts_are_monotone_and_complete() {
        let h = LatencyHistogram::new();
        for us in [5u64, 50, 500, 5000] {
            h.record(Duration::from_micros(us));
        }
        let bounds = [10_000, 100_000, 1_000_000, 10_000_000, u64::MAX];
        let c = h.snapshot().cumulative_counts(&bounds);
        assert_eq!(c, vec![1, 2, 3, 4, 4]);
    }
}
