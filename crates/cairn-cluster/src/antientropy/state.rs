//! What a node keeps of anti-entropy between scans: the rate limiter all
//! its digest reads share, one scan at a time, the last report of each
//! partition it scanned, the counters `/metrics` shows, and the debounce of
//! read-triggered scans. The scans themselves are in `scan`, the replica's
//! side in `replica`, the schedule in `scheduler`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_telemetry::antientropy::{AntiEntropyFigures, PartitionScanFigures, ScanCount};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::throttle::RateLimiter;
use super::{AntiEntropyConfig, ScanOutcome, ScanReport, ScanTrigger};

/// A read that hits damage triggers at most one scan per partition per
/// this long.
const READ_TRIGGER_DEBOUNCE: Duration = Duration::from_secs(5);

/// Counters since the node started, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Totals {
    scans: Mutex<BTreeMap<(ScanTrigger, ScanOutcome), u64>>,
    ranges_compared: AtomicU64,
    divergent_ranges: AtomicU64,
    repaired_ranges: AtomicU64,
    repaired_bytes: AtomicU64,
    pub(super) bytes_read: Arc<AtomicU64>,
    failures: AtomicU64,
}

/// A node's anti-entropy state.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    pub config: AntiEntropyConfig,
    pub(super) limiter: Arc<RateLimiter>,
    /// The last scan of each partition this node ran, by group.
    last: Mutex<HashMap<u64, ScanReport>>,
    /// The last of those scans that found replicas differing, by group.
    last_divergent: Mutex<HashMap<u64, ScanReport>>,
    pub(super) totals: Totals,
    /// One scan at a time per node: scans share the disk and the rate.
    pub(super) scan_lock: tokio::sync::Mutex<()>,
    read_triggers: Mutex<HashMap<u64, Instant>>,
}

impl AntiEntropy {
    pub fn new(config: AntiEntropyConfig) -> Self {
        AntiEntropy {
            limiter: Arc::new(RateLimiter::new(config.rate_bytes_per_sec)),
            config,
            last: Mutex::new(HashMap::new()),
            last_divergent: Mutex::new(HashMap::new()),
            totals: Totals::default(),
            scan_lock: tokio::sync::Mutex::new(()),
            read_triggers: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn record(&self, report: &ScanReport) {
        let t = &self.totals;
        *t.scans
            .lock()
            .entry((report.trigger, report.outcome))
            .or_default() += 1;
        t.ranges_compared
            .fetch_add(report.ranges_compared, Ordering::Relaxed);
        t.divergent_ranges
            .fetch_add(report.divergent.len() as u64, Ordering::Relaxed);
        t.repaired_ranges
            .fetch_add(report.repaired_ranges, Ordering::Relaxed);
        t.repaired_bytes
            .fetch_add(report.bytes_repaired, Ordering::Relaxed);
        t.failures
            .fetch_add(report.failures.len() as u64, Ordering::Relaxed);
        self.last.lock().insert(report.group, report.clone());
        if !report.divergent.is_empty() {
            self.last_divergent
                .lock()
                .insert(report.group, report.clone());
        }
    }

    /// The last scan of every partition this node ran, by stream and partition.
    pub fn reports(&self) -> Vec<ScanReport> {
        sorted(&self.last.lock())
    }

    /// The last scan of every partition this node ran that found
    /// divergence (whether or not it was repaired).
    pub fn divergent_reports(&self) -> Vec<ScanReport> {
        sorted(&self.last_divergent.lock())
    }

    pub fn figures(&self, quarantined_replicas: u64) -> AntiEntropyFigures {
        let t = &self.totals;
        let scans = t
            .scans
            .lock()
            .iter()
            .map(|((trigger, outcome), count)| ScanCount {
                trigger: trigger.as_str().into(),
                outcome: outcome.as_str().into(),
                count: *count,
            })
            .collect();
        let partitions = self
            .reports()
            .into_iter()
            .map(|r| PartitionScanFigures {
                stream: r.stream,
                partition: r.partition,
                last_scan_unix_seconds: r.started_at_unix_ms as f64 / 1e3,
                last_scan_duration_seconds: r.duration_ms / 1e3,
                last_divergent_ranges: r.divergent.len() as u64,
                last_ok: r.outcome != ScanOutcome::Failed,
            })
            .collect();
        AntiEntropyFigures {
            scans,
            ranges_compared: t.ranges_compared.load(Ordering::Relaxed),
            divergent_ranges: t.divergent_ranges.load(Ordering::Relaxed),
            repaired_ranges: t.repaired_ranges.load(Ordering::Relaxed),
            repaired_bytes: t.repaired_bytes.load(Ordering::Relaxed),
            bytes_read: t.bytes_read.load(Ordering::Relaxed),
            failures: t.failures.load(Ordering::Relaxed),
            quarantined_replicas,
            partitions,
        }
    }

    /// True if a read-triggered scan of `group` may start now.
    pub(super) fn read_trigger_due(&self, group: u64) -> bool {
        let now = Instant::now();
        let mut triggers = self.read_triggers.lock();
        match triggers.get(&group) {
            Some(at) if now.duration_since(*at) < READ_TRIGGER_DEBOUNCE => false,
            _ => {
                triggers.insert(group, now);
                true
            }
        }
    }
}

fn sorted(reports: &HashMap<u64, ScanReport>) -> Vec<ScanReport> {
    let mut all: Vec<ScanReport> = reports.values().cloned().collect();
    all.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
    all
}
