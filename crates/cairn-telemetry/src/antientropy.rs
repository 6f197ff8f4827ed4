//! Anti-entropy figures a node exports: what its scans compared, found and
//! repaired. The cluster layer fills them in (as part of the
//! [`crate::replication::ReplicationReport`]); this crate only exports them.

use serde::{Deserialize, Serialize};

/// Scans this node ran (as partition leader) with one trigger and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCount {
    pub trigger: String,
    pub outcome: String,
    pub count: u64,
}

/// The last scan of one partition this node ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionScanFigures {
    pub stream: String,
    pub partition: u32,
    pub last_scan_unix_seconds: f64,
    pub last_scan_duration_seconds: f64,
    pub last_divergent_ranges: u64,
    /// False when the last scan failed (something not compared or repaired).
    pub last_ok: bool,
}

/// Counters are totals since the node started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropyFigures {
    pub scans: Vec<ScanCount>,
    /// Merkle tree nodes compared with followers.
    pub ranges_compared: u64,
    /// Index ranges on which a replica differed from the majority.
    pub divergent_ranges: u64,
    pub repaired_ranges: u64,
    /// Bytes of batches copied onto damaged replicas.
    pub repaired_bytes: u64,
    /// Bytes of segment files this node read to build digests.
    pub bytes_read: u64,
    /// Things a scan could not compare or repair.
    pub failures: u64,
    /// Replicas on this node that are quarantined (serve no reads).
    pub quarantined_replicas: u64,
    pub partitions: Vec<PartitionScanFigures>,
}
