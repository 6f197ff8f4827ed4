//! Cairn's storage engine: durable, segmented, checksummed partition logs.
//!
//! # Layout
//! A [`DataDir`] holds any number of partition logs, one directory each. A
//! log is a run of segments `{base_index:020}-{base_offset:020}.log`, each a
//! sequence of [`cairn_types::RecordBatch`]es; sealed segments carry a sparse
//! index (`.index`, by log index and offset) and time index (`.timeindex`)
//! beside them.
//!
//! # Raft
//! Every batch is one Raft log entry (log index and term in its header), so
//! a partition's Raft log is its data log: [`PartitionLog::append_entry`]
//! appends at a given index, [`PartitionLog::truncate`] and
//! [`PartitionLog::purge`] implement Raft's conflict truncation and log
//! compaction, and [`PartitionLog::read_index_range`] reads by index. The
//! purged id is kept in `purged.json`. Single-node callers use
//! [`PartitionLog::append`], which takes the next index with term 0.
//!
//! # Durability
//! One writer thread per data directory does group commit (see `writer`):
//! appends from many logs that arrive together share one write per log and
//! one `fdatasync` per log. An append is acknowledged — and visible to
//! readers — only once its log's [`Durability`] policy is met. Segments are
//! preallocated in chunks so a sync does not have to commit file-size
//! metadata.
//!
//! # Recovery
//! On open, the active segment is read in full and every batch verified
//! (length, CRC-32C, offset and index sequence); the log is cut at the first batch that
//! fails, which is where a crash tore a write. Sealed segments load their
//! index files, or rebuild them when missing or stale. A checksum failure on
//! read is returned as [`StorageError::Corruption`]; corrupt bytes are never
//! served.
//!
//! # Anti-entropy
//! [`PartitionLog::leaf_digests`] hashes a range of log indexes into Merkle
//! leaves built from the stored per-batch CRCs, equal on replicas that hold
//! the same entries however their segments are split, and lists what this
//! replica should hold but cannot vouch for (corrupt, cut short, deleted
//! behind its back); per-segment partial sums are cached, so a periodic
//! comparison reads only what is new or changed. [`PartitionLog::repair`]
//! splices byte-identical batches from a healthy replica back in. Reads
//! never skip damage: a gap between segments fails with
//! [`StorageError::Missing`] ([`StorageError::is_damage`]). See `digest`.
//!
//! # Retention
//! Whole segments are deleted from the start of the log by age (newest entry
//! older than `retention_ms`) and by total size (`retention_bytes`).
//!
//! # Fault injection
//! [`DataDir::faults`] holds an injected [`DiskFault`] (write and fsync
//! delays, with a time to live) that the writer applies; see `fault`.
//!
//! # Inspection
//! [`inspect_path`] verifies a data directory or one log read-only (no lock,
//! no repair), for `cairn inspect`.
//!
//! Small metadata files (such as stream configs) are written with
//! [`atomic_write`]: temp file, fsync, rename, fsync directory.
//!
//! # Modules, bottom up
//! `segment` (one segment file and its indexes) holds a `leaf`
//! digest cache; `state` is a log's shared state and the steps that change
//! it on disk (roll, create, delete, drop purged) and the requests sent to
//! the writer; above it `log` (the [`PartitionLog`] handle), `digest`
//! (leaf digests and repair) and `writer` (the [`DataDir`] and its thread),
//! none of which imports another except through `log`'s handle. `recover`
//! loads a log directory (on open and after `install`, which moves a
//! snapshot's staged segments into a log); `retention` plans or deletes
//! whole segments; both run on the writer thread. `trash` deletes removed
//! log directories off the writer thread.

mod config;
mod digest;
mod error;
pub mod fault;
pub mod fsutil;
mod inspect;
mod install;
mod leaf;
mod log;
mod recover;
mod repair;
mod retention;
mod segment;
pub mod space;
mod state;
mod syncpool;
mod trash;
mod writer;

pub use config::{
    DEFAULT_MIN_FREE_BYTES, DEFAULT_SYNC_THREADS, DataDirOptions, Durability, LogConfig,
};
pub use digest::{Digest, DigestMode, LEAF_SPAN, LeafDigests, RepairOutcome};
pub use error::{Result, StorageError};
pub use fault::{ActiveDiskFault, DiskFault, DiskFaults};
pub use fsutil::{atomic_write, create_dir_durable, fsync_dir};
pub use inspect::{
    IndexFilesReport, InspectReport, LogReport, ProblemKind, RAFT_META_FILE, RaftMetaReport,
    SegmentProblem, SegmentReport, inspect_data_dir, inspect_log_dir, inspect_path,
};
pub use log::{
    AppendCallback, AppendInfo, AppendTimings, EntryId, InstallMode, LogStats, PartitionLog,
    Pending, RetentionOutcome, ScanStats,
};
pub use space::{InsufficientStorage, SpaceGuard};
pub use writer::DataDir;
