//! The compact JSON summary of the last interval, served at
//! `GET /v1/telemetry/snapshot` and read by the cluster monitor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencySummary;
use crate::replication::ReplicationSummary;
use crate::resources::ResourceSnapshot;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySnapshot {
    pub node: String,
    /// When the interval ended, ms since the Unix epoch.
    pub unix_ms: u64,
    pub uptime_seconds: f64,
    pub interval_seconds: f64,
    /// Whether per-stage timing was on (off: stage summaries are empty).
    pub stage_timing: bool,
    pub throughput: Throughput,
    pub streams: BTreeMap<String, StreamThroughput>,
    /// Per write stage (`queue`, `append`, `fsync`, …, `total`).
    pub write_stages: BTreeMap<String, LatencySummary>,
    pub read_stages: BTreeMap<String, LatencySummary>,
    /// `None` for the first interval after start.
    pub resources: Option<ResourceSnapshot>,
    pub probes: Vec<ProbeSummary>,
    /// Partition roles, per-partition replication state and per-peer
    /// replication RPC latency; absent until the cluster runtime registers
    /// as the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSummary>,
    pub overhead: Overhead,
    /// Per data directory: its filesystem's free space (statvfs), so the
    /// monitor can see a disk filling and forecast when it is full.
    #[serde(default)]
    pub data_dirs: Vec<DataDirSpace>,
    /// Faults injected into this node right now (the fault-injection API),
    /// so the monitor can name an injected cause.
    #[serde(default)]
    pub faults: Vec<InjectedFault>,
    /// Client writes accepted and not yet answered when the interval ended.
    #[serde(default)]
    pub writes_in_flight: u64,
}

/// Space on the filesystem that holds one data directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataDirSpace {
    pub path: String,
    /// Bytes an unprivileged writer can still use.
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

/// One fault injected into a node, as shown to the monitor and operators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InjectedFault {
    /// `disk`, `cpu` or `network`.
    pub kind: String,
    /// The peer a network fault applies to, if only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    /// Human-readable settings, e.g. `fsync_delay_ms=50`.
    pub detail: String,
    /// When it lifts by itself, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub entries_per_second: f64,
    pub bytes_per_second: f64,
    /// Keyed `api.operation`, e.g. `http.append`.
    pub requests_per_second: BTreeMap<String, f64>,
    /// Failed requests per second, keyed by error code (e.g. `invalid_entry`).
    pub errors_per_second: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamThroughput {
    pub entries_per_second: f64,
    pub bytes_per_second: f64,
    pub requests_per_second: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub kind: String,
    pub target: String,
    /// 1 (healthy) ..= 100 (unusable).
    pub slow_score: f64,
    pub timeout_ms: f64,
    pub last_us: Option<f64>,
    /// Probe latencies in this interval.
    pub interval: LatencySummary,
    pub timeouts_total: u64,
    pub failures_total: u64,
    /// How long the probe now running has been waiting, if one is.
    pub in_flight_ms: Option<f64>,
    pub last_error: Option<String>,
}

/// What telemetry itself costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// CPU time of the sampler and probe threads and of `/metrics` encoding.
    pub cpu_seconds_total: f64,
    /// The same over the last interval, in cores.
    pub cpu_cores: f64,
    /// Bytes held by histograms, counters and sampler state.
    pub memory_bytes: u64,
}
