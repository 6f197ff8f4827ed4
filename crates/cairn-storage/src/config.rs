//! Per-log and per-data-directory settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cairn_types::Durability;

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size.
    pub segment_bytes: u64,
    /// Roll once the active segment has been open this long (checked on
    /// append and on retention runs). Restarts count from reopening.
    pub segment_ms: Option<u64>,
    /// Delete sealed segments whose newest entry is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    pub durability: Durability,
    /// Bytes of batches between two sparse index points.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            segment_ms: Some(60 * 60 * 1000),
            retention_ms: None,
            retention_bytes: None,
            durability: Durability::Fsync,
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    /// Checks the settings, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        // Index positions are u32; a batch may overshoot the roll size by at
        // most MAX_BATCH_LEN, so 2 GiB keeps every position in range.
        if self.segment_bytes < 4096 || self.segment_bytes > 1 << 31 {
            return Err(format!(
                "segment_bytes must be between 4096 and {} (got {})",
                1u64 << 31,
                self.segment_bytes
            ));
        }
        if self.segment_ms == Some(0) {
            return Err("segment_ms must be positive".into());
        }
        if self.retention_ms == Some(0) {
            return Err("retention_ms must be positive".into());
        }
        if self.retention_bytes == Some(0) {
            return Err("retention_bytes must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        Ok(())
    }
}

/// The default free-space reserve: room for compaction, metadata and
/// repair after client writes stop.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// Sync threads of a data directory by default: see `docs/design/group-commit.md`
/// for the measurements behind the number.
pub const DEFAULT_SYNC_THREADS: usize = 7;

/// Settings of a data directory and its group-commit writer.
#[derive(Debug, Clone)]
pub struct DataDirOptions {
    /// How often logs with [`Durability::Interval`] are synced.
    pub sync_interval: Duration,
    /// The active segment grows in preallocated chunks of this size, so that
    /// appends do not change the file size and `fdatasync` need not commit
    /// file-system metadata (about 2x faster on ext4). 0 disables it.
    pub preallocate_bytes: u64,
    /// A commit group stops taking new appends past this many bytes.
    pub max_group_bytes: usize,
    /// Client writes are refused while the filesystem has less free space
    /// than this (see [`crate::space`]); 0 turns the reserve off.
    pub min_free_bytes: u64,
    /// Threads that run a commit group's `fdatasync`s beside the writer
    /// thread (which runs one itself), and seal rolled segments off its
    /// path. 0 syncs every log one after another on the writer thread and
    /// seals inline, as before issue 15 (kept for comparison and for
    /// devices that serialise flushes anyway).
    pub sync_threads: usize,
}

impl Default for DataDirOptions {
    fn default() -> Self {
        DataDirOptions {
            sync_interval: Duration::from_millis(100),
            preallocate_bytes: 4 << 20,
            max_group_bytes: 16 << 20,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            sync_threads: DEFAULT_SYNC_THREADS,
        }
    }
}
