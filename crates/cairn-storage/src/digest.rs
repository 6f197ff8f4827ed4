//! Merkle leaf digests over log-index ranges, and repair of damaged ranges.
//! (API stub: the implementation is in progress.)

use std::ops::Range;

use cairn_types::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::log::{PartitionLog, Pending};

/// Log indexes per Merkle leaf: leaf `k` covers `[k * LEAF_SPAN, (k + 1) * LEAF_SPAN)`.
pub const LEAF_SPAN: u64 = 256;

/// A blake3 hash.
pub type Digest = [u8; 32];

/// How much of the log a digest request re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DigestMode {
    /// Reuse per-segment digests cached from an earlier request while the
    /// segment file is unchanged; read only what is new or changed.
    #[default]
    Cached,
    /// Re-read and verify every batch in the range.
    Deep,
}

/// The Merkle leaves of one replica over a range of log indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafDigests {
    /// Leaf number of `leaves[0]` (`range.start / LEAF_SPAN`).
    pub first_leaf: u64,
    /// One digest per leaf overlapping the range, over that leaf's batches
    /// whose log indexes lie inside the range.
    pub leaves: Vec<Digest>,
    /// Log index ranges inside the range that this replica should hold but
    /// whose batches are corrupt, missing or unreadable; ascending, merged.
    pub damaged: Vec<Range<u64>>,
    /// Bytes read from segment files to answer.
    pub bytes_read: u64,
}

/// What a repair wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairOutcome {
    pub batches: u64,
    pub bytes_written: u64,
    pub segments_rewritten: u32,
}

impl PartitionLog {
    /// See the module docs.
    pub fn leaf_digests(
        &self,
        _range: Range<u64>,
        _mode: DigestMode,
        _throttle: &mut dyn FnMut(u64),
    ) -> Result<LeafDigests> {
        unimplemented!("leaf digests")
    }

    /// See the module docs.
    pub fn repair(&self, _batches: Vec<RecordBatch>) -> Pending<RepairOutcome> {
        unimplemented!("repair")
    }
}
