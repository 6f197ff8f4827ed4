//! Read-only verification of logs on disk, for `cairn inspect`.
//!
//! Unlike [`crate::PartitionLog`]'s recovery, nothing here writes: files are
//! opened read-only, the data directory's `LOCK` is not taken, torn tails
//! are reported rather than cut and missing indexes are reported rather than
//! rebuilt. Every segment is read from its start and every batch's length,
//! magic, CRC-32C and offset/index sequence checked.
//!
//! What a failure means depends on where it is:
//! - zeros after the last batch: the preallocated tail of the active
//!   segment (or of a sealed segment a crash kept from being trimmed). Normal.
//! - a failing batch in the last (active) segment with no valid batch after
//!   it: a torn tail, the write a crash interrupted. Recovery cuts it on the
//!   next open; only unacknowledged data (under `fsync`) is lost.
//! - anything else (a failing batch followed by valid ones, or one in a
//!   sealed segment): corruption.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cairn_types::RecordBatch;
use cairn_types::batch::{BatchHeader, HEADER_LEN};
use serde::Serialize;

use crate::error::{IoContext, Result, StorageError};
use crate::segment::{
    BatchCursor, CursorError, index_paths, is_v1_segment_name, load_index_files,
    parse_segment_name, tail_is_zero,
};
use crate::state::{EntryId, read_purged};

/// The Raft metadata file kept beside a replica's log.
pub const RAFT_META_FILE: &str = "raft.json";

/// Everything inspected below one path: a data directory's logs, or one log.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    /// True when `path` was a node's data directory (not a single log).
    pub data_dir: bool,
    pub logs: Vec<LogReport>,
}

impl InspectReport {
    /// True when no log has a problem.
    pub fn is_clean(&self) -> bool {
        self.logs.iter().all(LogReport::is_clean)
    }
}

/// One partition (or controller) log.
#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    pub path: PathBuf,
    pub segments: Vec<SegmentReport>,
    /// `raft.json`, when present.
    pub raft: Option<RaftMetaReport>,
    /// `purged.json`: the last purged entry, when present.
    pub purged: Option<EntryId>,
    /// Problems of the log as a whole (gaps between segments, unreadable
    /// metadata, segments of an unsupported format).
    pub problems: Vec<String>,
}

impl LogReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.segments.iter().all(|s| s.problem.is_none())
    }

    /// Batches in all segments' verified prefixes.
    pub fn batches(&self) -> u64 {
        self.segments.iter().map(|s| s.batches).sum()
    }
}

/// The parts of `raft.json` an operator looks at, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RaftMetaReport {
    pub vote: Option<serde_json::Value>,
    pub committed: Option<serde_json::Value>,
    pub last_applied: Option<serde_json::Value>,
}

/// One segment file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub file_name: String,
    /// First Raft log index, from the file name.
    pub base_index: u64,
    /// First entry offset, from the file name.
    pub base_offset: u64,
    /// File size, preallocated tail included.
    pub size_bytes: u64,
    /// Bytes of verified batches from the start.
    pub data_bytes: u64,
    /// Zero bytes after the last batch (preallocation; normal).
    pub zero_tail_bytes: u64,
    /// Every segment but the last is sealed.
    pub sealed: bool,
    /// Verified batches, of which control batches, and their entries.
    pub batches: u64,
    pub control_batches: u64,
    pub entries: u64,
    /// Log index range of the verified batches, inclusive; `None` if empty.
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    /// Entry offset range `[base_offset, end_offset)`.
    pub end_offset: u64,
    /// Entry timestamp range (µs); `None` without entries.
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    /// Index files of a sealed segment; `None` for the active one.
    pub index_files: Option<IndexFilesReport>,
    /// The first bad position, if any.
    pub problem: Option<SegmentProblem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexFilesReport {
    /// `.index` exists.
    pub index: bool,
    /// `.timeindex` exists.
    pub timeindex: bool,
    /// Both are intact and describe the segment as it is (otherwise the
    /// node rebuilds them on open).
    pub current: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A partial write at the end of the active segment (cut on next open).
    TornTail,
    /// Bad bytes where valid batches were expected.
    Corruption,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentProblem {
    pub kind: ProblemKind,
    /// Byte position in the segment file of the first bad batch.
    pub position: u64,
    pub reason: String,
    /// Where the next valid batch starts after the bad one, if any does.
    pub next_valid_at: Option<u64>,
}

fn is_data_dir(path: &Path) -> bool {
    path.join("LOCK").is_file() || path.join("controller").is_dir() || path.join("groups").is_dir()
}

/// Inspects `path`: a node's data directory (its controller log and every
/// partition log under `groups/`) or a single log directory.
pub fn inspect_path(path: impl AsRef<Path>) -> Result<InspectReport> {
    let path = path.as_ref();
    let meta = fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Err(StorageError::InvalidRequest {
            path: path.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if is_data_dir(path) {
        return inspect_data_dir(path);
    }
    Ok(InspectReport {
        path: path.to_path_buf(),
        data_dir: false,
        logs: vec![inspect_log_dir(path)?],
    })
}

/// Inspects a node's data directory: `controller/log` and `groups/*`.
pub fn inspect_data_dir(path: impl AsRef<Path>) -> Result<InspectReport> {
    let path = path.as_ref();
    let mut logs = Vec::new();
    let controller = path.join("controller").join("log");
    if controller.is_dir() {
        logs.push(inspect_log_dir(&controller)?);
    }
    let groups = path.join("groups");
    if groups.is_dir() {
        let mut dirs = Vec::new();
        for item in fs::read_dir(&groups).ctx(|| format!("list {}", groups.display()))? {
            let item = item.ctx(|| format!("list {}", groups.display()))?;
            if item.path().is_dir() {
                dirs.push(item.path());
            }
        }
        dirs.sort();
        for dir in dirs {
            logs.push(inspect_log_dir(&dir)?);
        }
    }
    Ok(InspectReport {
        path: path.to_path_buf(),
        data_dir: true,
        logs,
    })
}

/// Verifies one log directory without modifying it.
pub fn inspect_log_dir(path: impl AsRef<Path>) -> Result<LogReport> {
    let dir = path.as_ref();
    let mut problems = Vec::new();
    let mut bases = Vec::new();
    for item in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let item = item.ctx(|| format!("list {}", dir.display()))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if let Some((index, offset)) = parse_segment_name(&name) {
            bases.push((index, offset, name.into_owned()));
        } else if is_v1_segment_name(&name) {
            problems.push(format!(
                "{name}: segment of the unsupported version 1 format"
            ));
        }
    }
    bases.sort_unstable();

    let purged = match read_purged(dir) {
        Ok(p) => p,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let raft = match read_raft_meta(dir) {
        Ok(r) => r,
        Err(e) => {
            problems.push(e);
            None
        }
    };

    let mut segments = Vec::with_capacity(bases.len());
    let last = bases.len().saturating_sub(1);
    for (i, (base_index, base_offset, name)) in bases.into_iter().enumerate() {
        let report = inspect_segment(dir, name, base_index, base_offset, i < last)?;
        segments.push(report);
    }
    for pair in segments.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.problem.is_some() {
            continue;
        }
        let next_index = a.last_index.map_or(a.base_index, |i| i + 1);
        if (next_index, a.end_offset) != (b.base_index, b.base_offset) {
            problems.push(format!(
                "gap: {} ends before index {next_index} / offset {}, but {} starts at index {} / offset {}",
                a.file_name, a.end_offset, b.file_name, b.base_index, b.base_offset
            ));
        }
    }
    Ok(LogReport {
        path: dir.to_path_buf(),
        segments,
        raft,
        purged,
        problems,
    })
}

fn read_raft_meta(dir: &Path) -> Result<Option<RaftMetaReport>, String> {
    let path = dir.join(RAFT_META_FILE);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| format!("parse {}: {e}", path.display()))?;
    let field = |k: &str| value.get(k).filter(|v| !v.is_null()).cloned();
    Ok(Some(RaftMetaReport {
        vote: field("vote"),
        committed: field("committed"),
        last_applied: field("last_applied"),
    }))
}

fn inspect_segment(
    dir: &Path,
    file_name: String,
    base_index: u64,
    base_offset: u64,
    sealed: bool,
) -> Result<SegmentReport> {
    let path = dir.join(&file_name);
    let file = File::open(&path).ctx(|| format!("open {}", path.display()))?;
    let size = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let mut report = SegmentReport {
        file_name,
        base_index,
        base_offset,
        size_bytes: size,
        data_bytes: 0,
        zero_tail_bytes: 0,
        sealed,
        batches: 0,
        control_batches: 0,
        entries: 0,
        first_index: None,
        last_index: None,
        end_offset: base_offset,
        min_ts: None,
        max_ts: None,
        index_files: None,
        problem: None,
    };
    let mut cursor = BatchCursor::new(&file, 0, size).expect_sequence_from(base_offset, base_index);
    let mut stopped = None;
    while let Some(item) = cursor.next_batch() {
        match item {
            Ok(batch) => {
                report.batches += 1;
                if batch.header().is_control() {
                    report.control_batches += 1;
                }
                report.entries += u64::from(batch.count());
                report.first_index.get_or_insert(batch.log_index());
                report.last_index = Some(batch.log_index());
                report.end_offset = batch.next_offset();
                if batch.count() > 0 {
                    let h = batch.header();
                    report.min_ts = Some(report.min_ts.map_or(h.min_ts, |t| t.min(h.min_ts)));
                    report.max_ts = Some(report.max_ts.map_or(h.max_ts, |t| t.max(h.max_ts)));
                }
                report.data_bytes = cursor.position();
            }
            Err(CursorError::Io { source: e, .. }) => {
                return Err(e).ctx(|| format!("read {}", path.display()));
            }
            Err(CursorError::Batch { position, error }) => {
                stopped = Some((position, error.to_string()));
                break;
            }
        }
    }
    if let Some((position, reason)) = stopped {
        if tail_is_zero(&file, position, size)? {
            report.zero_tail_bytes = size - position;
        } else {
            let next_valid_at = find_valid_batch(&file, position + 1, size)
                .ctx(|| format!("read {}", path.display()))?;
            let kind = if !sealed && next_valid_at.is_none() {
                ProblemKind::TornTail
            } else {
                ProblemKind::Corruption
            };
            report.problem = Some(SegmentProblem {
                kind,
                position,
                reason,
                next_valid_at,
            });
        }
    }
    if sealed {
        let (index, timeindex) = index_paths(&path);
        report.index_files = Some(IndexFilesReport {
            index: index.is_file(),
            timeindex: timeindex.is_file(),
            current: load_index_files(&path, size).is_some(),
        });
    }
    Ok(report)
}

/// The first position in `[from, end)` where a whole batch with a valid CRC
/// starts (ignoring its offsets), found by trying every byte.
fn find_valid_batch(file: &File, from: u64, end: u64) -> std::io::Result<Option<u64>> {
    if from >= end {
        return Ok(None);
    }
    let mut buf = vec![0u8; (end - from) as usize];
    file.read_exact_at(&mut buf, from)?;
    let buf = Bytes::from(buf);
    for at in 0..buf.len().saturating_sub(HEADER_LEN - 1) {
        let Ok(header) = BatchHeader::parse(&buf[at..]) else {
            continue;
        };
        let stop = at + header.batch_len as usize;
        if stop <= buf.len() && RecordBatch::from_bytes(buf.slice(at..stop)).is_ok() {
            return Ok(Some(from + at as u64));
        }
    }
    Ok(None)
}
