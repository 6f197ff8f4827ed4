//! Transport metrics: plain atomics, per peer, for the telemetry crate to read
//! and export later (this crate does not depend on it).
//!
//! The peer id is the only label, so cardinality is bounded by cluster size.
//! Worth alerting on:
//! - `calls_timeout` or `calls_unreachable` rising for one peer while others
//!   are flat: a slow or cut link to that peer (or a slow peer);
//! - `connections_established` rising steadily: a flapping connection;
//! - `rpc_latency` p99 of one peer well above the others' (slow link/node);
//! - `requests_rejected_overload` above zero: a node cannot keep up with a peer;
//! - any `fault_dropped`/`fault_delayed` outside a fault-injection window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one peer. All are monotonic since the transport started.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    /// Frames written to the connection (requests, responses, one-way).
    pub frames_sent: AtomicU64,
    /// Bytes written, length prefix and header included.
    pub bytes_sent: AtomicU64,
    /// Frames read from the connection.
    pub frames_received: AtomicU64,
    /// Bytes read, length prefix and header included.
    pub bytes_received: AtomicU64,
    /// Calls answered with a successful response.
    pub calls_ok: AtomicU64,
    /// Calls whose handler answered with an error.
    pub calls_remote_error: AtomicU64,
    /// Calls that got no answer by their deadline.
    pub calls_timeout: AtomicU64,
    /// Calls that found no connection by their deadline.
    pub calls_unreachable: AtomicU64,
    /// Calls that were in flight when the connection dropped.
    pub calls_connection_lost: AtomicU64,
    /// Connections to this peer that completed the handshake (either side dialed).
    pub connections_established: AtomicU64,
    /// Dial attempts that failed (refused, timed out, rejected hello).
    pub dial_failures: AtomicU64,
    /// Requests from this peer refused with OVERLOADED (or one-way messages
    /// dropped) because too many of its requests were in flight.
    pub requests_rejected_overload: AtomicU64,
    /// Responses that arrived after their call had given up.
    pub late_responses: AtomicU64,
    /// Frames dropped by the fault filter (either direction).
    pub fault_dropped: AtomicU64,
    /// Frames delayed by the fault filter (either direction).
    pub fault_delayed: AtomicU64,
    /// Round-trip time of calls that got an answer (response or remote error).
    pub rpc_latency: LatencyHistogram,
}

impl PeerMetrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A point-in-time copy of every counter.
    pub fn snapshot(&self) -> PeerMetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerMetricsSnapshot {
            frames_sent: r(&self.frames_sent),
            bytes_sent: r(&self.bytes_sent),
            frames_received: r(&self.frames_received),
            bytes_received: r(&self.bytes_received),
            calls_ok: r(&self.calls_ok),
            calls_remote_error: r(&self.calls_remote_error),
            calls_timeout: r(&self.calls_timeout),
            calls_unreachable: r(&self.calls_unreachable),
            calls_connection_lost: r(&self.calls_connection_lost),
            connections_established: r(&self.connections_established),
            dial_failures: r(&self.dial_failures),
            requests_rejected_overload: r(&self.requests_rejected_overload),
            late_responses: r(&self.late_responses),
            fault_dropped: r(&self.fault_dropped),
            fault_delayed: r(&self.fault_delayed),
            rpc_latency: self.rpc_latency.snapshot(),
        }
    }
}

/// Plain copy of [`PeerMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetricsSnapshot {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub calls_ok: u64,
    pub calls_remote_error: u64,
    pub calls_timeout: u64,
    pub calls_unreachable: u64,
    pub calls_connection_lost: u64,
    pub connections_established: u64,
    pub dial_failures: u64,
    pub requests_rejected_overload: u64,
    pub late_responses: u64,
    pub fault_dropped: u64,
    pub fault_delayed: u64,
    pub rpc_latency: LatencySnapshot,
}

/// Number of latency buckets: bucket `i` counts latencies in
/// `[2^i, 2^(i+1))` µs (bucket 0 also takes 0 µs); the last one is open-ended.
/// 2^35 µs ≈ 9.5 hours, far beyond any deadline.
pub const LATENCY_BUCKETS: usize = 36;

/// A lock-free log2 histogram of durations in microseconds. Coarse (a factor
/// of two per bucket) but mergeable and cheap: one atomic add per record.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let idx = (u64::BITS - us.leading_zeros()).saturating_sub(1) as usize;
        self.buckets[idx.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// Plain copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Counts per bucket, see [`LATENCY_BUCKETS`].
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl LatencySnapshot {
    /// Upper bound of the bucket holding quantile `q` (0..=1); `None` if empty.
    ///
    /// Example: 90 calls of 100 µs (bucket 6, `[64, 128)`) and 10 of 3 ms
    /// (bucket 11, `[2048, 4096)`): `quantile(0.5)` = 128 µs,
    /// `quantile(0.99)` = 4096 µs — within a factor of two of the truth.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        // Rank of the quantile, 1-based, at least 1.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(1u64 << (i + 1)));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_latencies_when_taking_quantiles_then_bucket_upper_bounds() {
        let h = LatencyHistogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(3));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.max_us, 3000);
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(128)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_micros(4096)));
        assert_eq!(LatencySnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn given_zero_and_huge_durations_when_recording_then_no_panic() {
        let h = LatencyHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(u64::MAX));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[LATENCY_BUCKETS - 1], 1);
    }
}
