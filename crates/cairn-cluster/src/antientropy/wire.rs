//! The messages of a scan. Every step is an [`AeRequest`] to one replica
//! (frame kind `ANTI_ENTROPY`, postcard-encoded), answered with an
//! [`AeResponse`]; a leader asks its own replica the same way, in-process
//! (`replica::ask`), so it is compared and repaired like any other.

use std::ops::Range;

use bytes::Bytes;
use cairn_storage::{Digest, DigestMode};
use serde::{Deserialize, Serialize};

use super::{ScanReport, ScanTrigger};

/// One step of a scan, asked of one replica.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AeRequest {
    /// The replica's readable log indexes and whether it is quarantined.
    Bounds,
    /// The Merkle nodes at `level`, `positions` of the replica's tree over
    /// `range`, plus the damage it found itself.
    Nodes {
        range: Range<u64>,
        mode: DigestMode,
        level: u32,
        positions: Vec<u64>,
    },
    /// Batches from `range.start` on (up to `max_bytes`), concatenated.
    Fetch { range: Range<u64>, max_bytes: u64 },
    /// Overwrite the batches these (concatenated, contiguous) batches hold.
    Repair { batches: Bytes },
    /// Stop (`Some(reason)`) or resume (`None`) serving reads.
    Quarantine { reason: Option<String> },
    /// Scan this partition now (sent to its leader).
    Scan { deep: bool, trigger: ScanTrigger },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AeResponse {
    Bounds {
        first: u64,
        next: u64,
        quarantined: bool,
    },
    Nodes {
        hashes: Vec<Digest>,
        damaged: Vec<Range<u64>>,
        bytes_read: u64,
    },
    Batches(Bytes),
    Repaired {
        batches: u64,
        bytes: u64,
    },
    Done,
    Scanned(Box<ScanReport>),
}
